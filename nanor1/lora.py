"""LoRA (Hu et al. 2021): train a low-rank update of chosen Linear layers; the base stays frozen.

    y = x W^T + b + s * (drop(x) A^T) B^T,     s = alpha / r
    W (out, in), b: the base, frozen, in the compute dtype (bf16 on a GPU: 2 bytes per parameter)
    A (r, in), B (out, r): the adapters, fp32, the only parameters AdamW sees (16 bytes each with its moments)
    A ~ U(-1/sqrt(in), 1/sqrt(in)) (Kaiming-uniform with a = sqrt(5), as nn.Linear and PEFT initialise it),
    B = 0: at step 0 the model *is* the base, and the first step moves B only (dL/dA = s B^T ... = 0).

Where the pieces go (what the training loop does with them):
- `apply_lora(model, ...)` after loading and before `distributed.shard` and the optimiser; AdamW over
  `trainable(model)`. FSDP2 then shards the frozen base and the adapters alike; only the adapters get
  gradients, so only they are reduce-scattered.
- Rollouts run on the live low-rank path, the very forward the trainer differentiates (see "Rollouts").
- The KL reference for free: the reference log-probs are the policy's with `adapters_disabled(model)`, i.e.
  the base, so with beta > 0 no second model is loaded (`BaseView(model)` stands where a reference model would).
- Checkpoints hold the adapters only, in PEFT's layout, so `peft.PeftModel.from_pretrained(hf_model, CKPT)`
  loads them; `Transformer.from_pretrained(CKPT)` sees adapter_config.json and loads base + adapters.

    CKPT/adapter_config.json         {"peft_type": "LORA", "r", "lora_alpha", "lora_dropout", "target_modules",
                                      "base_model_name_or_path": the --model given, "task_type": "CAUSAL_LM"}
    CKPT/adapter_model.safetensors   base_model.model.<our name>.lora_A.weight (r, in), ....lora_B.weight (out, r)

Parameter names: a LoRA layer *is* an nn.Linear with two extra sub-layers, so the base weight keeps its HF
name (`model.layers.0.self_attn.q_proj.weight`) and the adapters sit beside it (`...q_proj.lora_A.weight`).
PEFT's names are ours behind the prefix `base_model.model.` (PEFT wraps the HF model twice).

Rollouts, live or merged (bench/bench_lora.py measures both; figures in BENCHMARKS.md). Merging W' = W + s B A
for sampling saves two small ops per adapted layer and token: on the tiny demo model, where decoding is bound by
the number of ops, the live path samples about a quarter fewer tokens per CPU-second than the base and the merged
one as many; on the 0.5B shape (fp32, CPU), bound by the weights' bytes, all three are within 5%. But in
bf16 the merge rounds the update: bf16(W + s B A) lies on W's bf16 grid (steps of 2^-8 to 2^-7 of |W|), so an
update smaller than half a step vanishes and a larger one is off by up to half a step: the sampler draws from a
neighbour of the trained policy; measured on data/tiny in bf16, the sampler-trainer mismatch was 1.5-3x
its no-LoRA level with merging and stayed at it on the live path, which computes exactly the trainer's
x W^T + s x A^T B^T. So rollouts run live. `merged(model)` stays for measurement and export; it writes W' into a
separate tensor, never into W (add-then-subtract in bf16 would drift W by a rounding error per round trip).

Dropout acts on the adapters' input only when a gradient is being computed (training mode and grad enabled):
it regularises the update; rollouts and the no-grad old / reference log-probs see the whole adapter, the
distribution the sampler draws from.
"""
import json
import math
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import SafetensorError

from nanor1.tokenizer import read_json

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
PEFT_PREFIX = "base_model.model."  # PeftModel(LoraModel(Qwen2ForCausalLM)): two wrappers in front of HF's names
# adapter_config.json fields PEFT may set to something this file does not implement: (field, the value we do).
UNSUPPORTED = (("use_dora", False), ("use_rslora", False), ("bias", "none"), ("lora_bias", False),
               ("fan_in_fan_out", False), ("modules_to_save", None), ("layers_to_transform", None),
               ("rank_pattern", {}), ("alpha_pattern", {}), ("target_parameters", None),
               ("trainable_token_indices", None), ("layer_replication", None))


@dataclass
class AdapterConfig:
    """What adapter_config.json holds (the fields nanoR1 uses)."""
    rank: int  # r
    alpha: float  # lora_alpha; the update is scaled by alpha / r
    dropout: float  # lora_dropout, on the adapters' input
    targets: tuple  # target_modules: names matched against the end of each Linear layer's module name
    base: str  # base_model_name_or_path: the --model the adapters were trained on


def check_options(rank, alpha, dropout, targets):
    """The --lora_* options (alpha 0 = 2 x rank). One clear error per bad combination."""
    if rank < 0:
        raise ValueError(f"--lora_rank must be >= 0 (0 = LoRA off), got {rank}")
    if rank == 0:
        set_ = [f"--{k}" for k, v, default in (("lora_alpha", alpha, 0), ("lora_dropout", dropout, 0),
                                               ("lora_targets", targets, ",".join(DEFAULT_TARGETS)))
                if v != default]
        if set_:
            raise ValueError(f"{', '.join(set_)} given but --lora_rank is 0 (LoRA off): set --lora_rank > 0")
        return
    if alpha < 0:
        raise ValueError(f"--lora_alpha must be > 0 (0 = 2 x --lora_rank), got {alpha}")
    if not 0 <= dropout < 1:
        raise ValueError(f"--lora_dropout must be in [0, 1), got {dropout}")
    if not _names(targets):
        raise ValueError("--lora_targets is empty: name the Linear layers to adapt, e.g. q_proj,v_proj")


def _names(targets):
    return tuple(t.strip() for t in targets.split(",") if t.strip()) if isinstance(targets, str) else tuple(targets)


class LoRALinear(nn.Linear):
    """An nn.Linear whose `weight` and `bias` are the base layer's own tensors (frozen, not copied), plus
    lora_A (r, in) and lora_B (out, r) in fp32."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float, dropout: float):
        super().__init__(base.in_features, base.out_features, bias=base.bias is not None, device="meta")
        self.weight, self.bias = base.weight, base.bias  # the same Parameters: nothing allocated
        dev = base.weight.device
        self.lora_A = nn.Linear(base.in_features, rank, bias=False, device=dev, dtype=torch.float32)
        self.lora_B = nn.Linear(rank, base.out_features, bias=False, device=dev, dtype=torch.float32)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))  # bound 1/sqrt(in), as PEFT
        nn.init.zeros_(self.lora_B.weight)
        self.scaling = alpha / rank
        self.dropout = dropout
        self.disabled = False  # adapters_disabled(): the base layer alone
        self.merged_weight = None  # merged(): W + s B A, a separate tensor in W's dtype

    def forward(self, x):
        if self.disabled:
            return F.linear(x, self.weight, self.bias)
        if self.merged_weight is not None:
            return F.linear(x, self.merged_weight, self.bias)
        y = F.linear(x, self.weight, self.bias)  # (..., out)
        A, B = self.lora_A.weight, self.lora_B.weight
        # Without autocast the adapters run in their own dtype (fp32, as PEFT does); under autocast (and under
        # FSDP's bf16 parameters) in the compute dtype, where the matmuls would cast x anyway.
        h = x if torch.is_autocast_enabled(x.device.type) else x.to(A.dtype)
        if self.dropout and self.training and torch.is_grad_enabled():  # see the module docstring
            h = F.dropout(h, self.dropout)
        z = F.linear(h, A).to(y.dtype)  # (..., r)
        # y + s z B^T in one addmm: two extra ops per layer, not four (decoding small batches is bound by the
        # number of ops launched, not by the r (in + out) multiply-adds per row this path adds).
        out = torch.addmm(y.flatten(0, -2), z.flatten(0, -2), B.t().to(y.dtype), alpha=self.scaling)
        return out.view(y.shape)


def lora_layers(model):
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


def trainable(model):
    """The parameters the optimiser updates: the adapters under LoRA, every parameter otherwise."""
    return [p for p in model.parameters() if p.requires_grad]


def apply_lora(model, rank, alpha=0, dropout=0.0, targets=DEFAULT_TARGETS, base=None):
    """Swap every Linear layer whose module name ends in one of `targets` (a list or "a,b,c") for a LoRALinear,
    freeze everything else; sets model.lora (an AdapterConfig). alpha 0 = 2 x rank. `base` is recorded as
    base_model_name_or_path. Call it on the whole model (before distributed.shard) after torch.manual_seed:
    A's initialisation draws from the RNG, and every rank must draw the same A."""
    if getattr(model, "lora", None) is not None:
        raise ValueError("LoRA is already applied to this model")
    names = _names(targets)
    check_options(rank, alpha, dropout, ",".join(names))
    if rank <= 0:
        raise ValueError(f"LoRA needs rank > 0, got {rank}")
    # PEFT's rule: a target matches a module whose name is the target or ends in "." + target. Only the blocks'
    # layers: lm_head feeds the fused log-prob kernel as a bare weight, and is tied to the embedding in Qwen2.5.
    blocks = model.model.layers
    hits = [(n, m) for n, m in blocks.named_modules(prefix="model.layers")
            if any(n == t or n.endswith("." + t) for t in names)]
    linears = ", ".join(sorted({n.rsplit(".", 1)[-1] for n, m in blocks.named_modules() if isinstance(m, nn.Linear)}))
    for t in names:
        mine = [(n, m) for n, m in hits if n == t or n.endswith("." + t)]
        if not mine:
            raise ValueError(f"LoRA target {t!r} matches no layer of the model's blocks (its Linear layers: {linears})")
        bad = [n for n, m in mine if type(m) is not nn.Linear]
        if bad:
            raise ValueError(f"LoRA target {t!r} matches {bad[0]!r}, which is not a Linear layer (the Linear "
                             f"layers: {linears})")
    model.requires_grad_(False)
    for name, module in hits:  # module order: the RNG draws A for layer 0 first, as PEFT does
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent), attr, LoRALinear(module, rank, alpha or 2 * rank, dropout))
    model.lora = AdapterConfig(rank, float(alpha or 2 * rank), float(dropout), names, base)
    return model


@contextmanager
def adapters_disabled(model):
    """The base model: every LoRA layer computes x W^T + b alone (the KL reference)."""
    layers = lora_layers(model)
    for m in layers:
        m.disabled = True
    try:
        yield
    finally:
        for m in layers:
            m.disabled = False


class BaseView:
    """The KL reference for free: calling it calls the LoRA model with its adapters disabled, so it can stand
    where a reference model would (`ref(ids, targets=..., temperature=...)`). It holds no weights."""

    def __init__(self, model):
        self.model = model

    def __call__(self, *args, **kwargs):
        with adapters_disabled(self.model):
            return self.model(*args, **kwargs)


@torch.no_grad()
def merged_weight(m: LoRALinear):
    """W + s B A, computed in fp32 and rounded once to W's dtype."""
    return (m.weight.float() + m.scaling * (m.lora_B.weight.float() @ m.lora_A.weight.float())).to(m.weight.dtype)


@contextmanager
def merged(model):
    """One matmul per layer: each LoRA layer uses a merged copy of its weight (an extra copy of every target
    weight while inside). W is only read, so leaving restores the exact base. Under FSDP, enter it inside
    distributed.gathered (the merge needs the full weights)."""
    layers = lora_layers(model)
    try:
        for m in layers:
            m.merged_weight = merged_weight(m)
        yield
    finally:
        for m in layers:
            m.merged_weight = None


# ----------------------------------------------------------------------------- checkpoints in PEFT's layout

def adapter_keys(model):
    """Our names of the adapter tensors, e.g. model.layers.0.self_attn.q_proj.lora_A.weight."""
    return [n for n, _ in model.named_parameters() if ".lora_A." in n or ".lora_B." in n]


def save_adapter(model, path, state_dict=None):
    """adapter_config.json + adapter_model.safetensors (fp32). `state_dict`: a gathered one under FSDP (adapter
    keys at least; other keys are ignored)."""
    from safetensors.torch import save_file
    cfg, path = model.lora, Path(path)
    path.mkdir(parents=True, exist_ok=True)
    sd = state_dict if state_dict is not None else model.state_dict()
    keys = adapter_keys(model)
    missing = [k for k in keys if k not in sd]
    if missing:
        raise KeyError(f"state_dict lacks adapter {missing[0]!r} ({len(missing)} missing in all)")
    tensors = {PEFT_PREFIX + k: sd[k].detach().to("cpu", torch.float32).contiguous() for k in keys}
    tmp = path / "adapter_model.safetensors.tmp"
    save_file(tensors, tmp, metadata={"format": "pt"})
    os.replace(tmp, path / "adapter_model.safetensors")
    alpha = int(cfg.alpha) if cfg.alpha == int(cfg.alpha) else cfg.alpha  # PEFT writes an int
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": cfg.rank, "lora_alpha": alpha,
              "lora_dropout": cfg.dropout, "target_modules": list(cfg.targets),
              "base_model_name_or_path": cfg.base, "inference_mode": True, "init_lora_weights": True,
              **dict(UNSUPPORTED)}
    (path / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")


def read_adapter_config(path) -> AdapterConfig:
    """Parse adapter_config.json; a setting nanoR1 does not implement (DoRA, rsLoRA, per-layer ranks, ...) is
    an error, not a silently different model."""
    file = Path(path) / "adapter_config.json"
    raw = read_json(file)
    if raw is None:
        raise FileNotFoundError(f"no adapter_config.json in adapter folder {path}")
    if raw.get("peft_type") != "LORA":
        raise ValueError(f"{file}: peft_type {raw.get('peft_type')!r} is not implemented (only LORA)")
    for key, ours in UNSUPPORTED:
        if raw.get(key) not in (None, ours):
            raise NotImplementedError(f"{file}: {key} = {raw[key]!r} is not implemented (nanoR1: {ours!r})")
    targets = raw.get("target_modules")
    if not isinstance(targets, list) or not targets:
        raise ValueError(f"{file}: target_modules must be a list of module names, got {targets!r} "
                         "(a regex or 'all-linear' is not supported)")
    rank, alpha, dropout = raw.get("r"), raw.get("lora_alpha"), raw.get("lora_dropout", 0.0)
    if type(rank) is not int or rank < 1:
        raise ValueError(f"{file}: r (the adapters' rank) must be a positive integer, got {rank!r}")
    for key, v in (("lora_alpha", alpha), ("lora_dropout", dropout)):
        if type(v) not in (int, float) or not math.isfinite(v) or v < 0:
            raise ValueError(f"{file}: {key} must be a finite number >= 0, got {v!r}")
    base = raw.get("base_model_name_or_path")
    if base is not None and not isinstance(base, str):
        raise ValueError(f"{file}: base_model_name_or_path must be a folder name, got {base!r}")
    if not all(isinstance(t, str) for t in targets):
        raise ValueError(f"{file}: target_modules must hold module names (strings), got {targets!r}")
    return AdapterConfig(rank, float(alpha), float(dropout), tuple(targets), base)


def read_adapter(model, path):
    """The adapter tensors of folder `path` under our names, checked against the model's adapters (names and
    shapes), fp32."""
    from safetensors.torch import load_file
    file = Path(path) / "adapter_model.safetensors"
    if not file.is_file():
        raise FileNotFoundError(f"no adapter_model.safetensors in adapter folder {path}")
    try:
        raw = load_file(file)
    except SafetensorError as e:
        raise ValueError(f"{file}: not a readable safetensors file, damaged or truncated ({e})") from None
    found = {k[len(PEFT_PREFIX):] if k.startswith(PEFT_PREFIX) else k: v for k, v in raw.items()}
    expected = dict(model.named_parameters())
    keys = adapter_keys(model)
    missing, unexpected = sorted(set(keys) - set(found)), sorted(set(found) - set(keys))
    if missing:
        raise KeyError(f"{file} is missing adapter {PEFT_PREFIX + missing[0]!r} ({len(missing)} missing in all)")
    if unexpected:
        raise KeyError(f"{file} has unexpected tensor {PEFT_PREFIX + unexpected[0]!r} ({len(unexpected)} in all)")
    for k in keys:
        if found[k].shape != expected[k].shape:
            raise ValueError(f"{file}: {PEFT_PREFIX + k!r} has shape {tuple(found[k].shape)}, expected "
                             f"{tuple(expected[k].shape)}")
        if not found[k].is_floating_point() or not torch.isfinite(found[k]).all():
            raise ValueError(f"{file}: {PEFT_PREFIX + k!r} is not a finite floating-point tensor")
    return {k: found[k].float() for k in keys}


def merged_state_dict(model, dtype=None):
    """The full HF state dict of base + adapters: target weights W + s B A (fp32 math, rounded once to `dtype`,
    default W's), the other tensors as they are; no adapter keys. What scripts/merge_lora.py writes."""
    merged_by_name = {name + ".weight": merged_weight(m) for name, m in model.named_modules()
                      if isinstance(m, LoRALinear)}
    adapters = set(adapter_keys(model))
    return {k: merged_by_name.get(k, v).detach().to(dtype or v.dtype) for k, v in model.state_dict().items()
            if k not in adapters}
