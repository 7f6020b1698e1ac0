"""Checkpoint I/O in the Hugging Face layout: config.json + model.safetensors (or a sharded
model.safetensors.index.json). Parameter names are HF's, so loading is an identity copy plus checks.

Memory: the model is built on the meta device (no storage), then each tensor is read from the file,
cast, and assigned in place of its meta parameter, so at most one copy of the weights (plus one tensor
in flight) exists.
"""
import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from nanor1.config import ModelConfig

SUPPORTED = ("qwen2", "qwen3")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_config(path) -> ModelConfig:
    """Parse config.json in either layout found in the wild: the older one (top-level `rope_theta`,
    `torch_dtype`) and the one transformers 5 writes (`rope_parameters`, `dtype`, `layer_types`)."""
    file = Path(path) / "config.json"
    if not Path(path).is_dir():
        raise FileNotFoundError(f"model folder not found: {path}")
    if not file.is_file():
        raise FileNotFoundError(f"no config.json in model folder {path}")
    raw = json.loads(file.read_text())
    mt = raw.get("model_type")
    if mt not in SUPPORTED:
        raise ValueError(f"unknown model_type {mt!r} in {file}: nanoR1 implements {', '.join(SUPPORTED)}")
    # Settings we do not implement fail loudly instead of computing something else.
    if raw.get("use_sliding_window", False):
        raise NotImplementedError(f"{file}: use_sliding_window=true is not implemented")
    if "sliding_attention" in (raw.get("layer_types") or []):
        raise NotImplementedError(f"{file}: layer_types has 'sliding_attention', which is not implemented")
    rope = raw.get("rope_parameters") or {}
    scaling = raw.get("rope_scaling") or {}
    for where, params in (("rope_parameters", rope), ("rope_scaling", scaling)):
        kind = params.get("rope_type", params.get("type", "default"))
        if kind != "default":
            raise NotImplementedError(f"{file}: {where} rope_type {kind!r} is not implemented (only 'default')")
    theta = rope.get("rope_theta", raw.get("rope_theta", 10000.0))
    H = raw["num_attention_heads"]
    head_dim = raw.get("head_dim")
    if head_dim is None:
        if mt == "qwen3":
            raise ValueError(f"{file}: qwen3 config without head_dim")
        head_dim = raw["hidden_size"] // H  # Qwen2 configs carry no head_dim: it is C / H by definition
    K = raw.get("num_key_value_heads", H)
    if H % K:
        raise ValueError(f"{file}: num_attention_heads {H} is not a multiple of num_key_value_heads {K}")
    if raw.get("hidden_act", "silu") != "silu":
        raise NotImplementedError(f"{file}: hidden_act {raw['hidden_act']!r} is not implemented (only silu)")
    return ModelConfig(
        model_type=mt, vocab_size=raw["vocab_size"], hidden_size=raw["hidden_size"],
        intermediate_size=raw["intermediate_size"], num_hidden_layers=raw["num_hidden_layers"],
        num_attention_heads=H, num_key_value_heads=K, head_dim=head_dim,
        rms_norm_eps=raw.get("rms_norm_eps", 1e-6), rope_theta=float(theta),
        max_position_embeddings=raw.get("max_position_embeddings", 32768),
        tie_word_embeddings=raw.get("tie_word_embeddings", False),
        attention_bias=True if mt == "qwen2" else raw.get("attention_bias", False),
        qk_norm=(mt == "qwen3"), raw=raw)


def weight_files(path: Path):
    """Map each tensor name to the safetensors file holding it."""
    index = path / "model.safetensors.index.json"
    single = path / "model.safetensors"
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        for f in set(weight_map.values()):
            if not (path / f).is_file():
                raise FileNotFoundError(f"{index} names shard {f}, which is missing")
        return {k: path / f for k, f in weight_map.items()}
    if single.is_file():
        with safe_open(single, framework="pt") as f:
            return {k: single for k in f.keys()}
    raise FileNotFoundError(f"no model.safetensors or model.safetensors.index.json in {path}")


def load_pretrained(cls, path, dtype=torch.bfloat16, device="cpu"):
    path = Path(path)
    cfg = load_config(path)
    with torch.device("meta"):
        model = cls(cfg)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    if cfg.tie_word_embeddings:
        expected.pop("lm_head.weight")  # optional in the file; the tie supplies it
    files = weight_files(path)
    names = set(files) - {"lm_head.weight"} if cfg.tie_word_embeddings else set(files)
    check_names(path, expected, names)
    assign_weights(model, files, expected, dtype, device)
    if cfg.tie_word_embeddings:  # assignment broke the tie: restore it
        model.lm_head.weight = model.model.embed_tokens.weight
    return model


def check_names(path, expected, names):
    """One clear error when the file's weight names and the model's differ."""
    missing = sorted(set(expected) - set(names))
    unexpected = sorted(set(names) - set(expected))
    if missing:
        raise KeyError(f"checkpoint {path} is missing weight {missing[0]!r} ({len(missing)} missing in all)")
    if unexpected:
        raise KeyError(f"checkpoint {path} has unexpected weight {unexpected[0]!r} ({len(unexpected)} in all)")


def assign_weights(model, files, expected, dtype, device):
    """Read each weight named in `expected` (name -> shape) from its file (`files`: name -> path) and put it in
    place of the model's meta parameter, after checking its shape."""
    by_file = {}
    for name in expected:
        by_file.setdefault(files[name], []).append(name)
    params = dict(model.named_parameters())
    for file, keys in by_file.items():
        with safe_open(file, framework="pt", device="cpu") as f:
            for name in keys:
                t = f.get_tensor(name)
                if tuple(t.shape) != tuple(expected[name]):
                    raise ValueError(f"weight {name!r} in {file} has shape {tuple(t.shape)}, "
                                     f"expected {tuple(expected[name])}")
                # Assign a real parameter in place of the meta one (no second copy, no init).
                module_name, _, attr = name.rpartition(".")
                module = model.get_submodule(module_name)
                setattr(module, attr, torch.nn.Parameter(t.to(device=device, dtype=dtype),
                                                         requires_grad=params[name].requires_grad))


def save_pretrained(model, path, state_dict=None):
    """config.json + model.safetensors. For tied models lm_head.weight is not written (HF does the same)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    sd = state_dict if state_dict is not None else model.state_dict()
    cfg = model.config
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in sd.items()
               if not (cfg.tie_word_embeddings and k == "lm_head.weight")}
    dtype = next(iter(tensors.values())).dtype
    raw = dict(cfg.raw)
    name = {v: k for k, v in DTYPES.items()}[dtype]
    raw["dtype" if "dtype" in raw else "torch_dtype"] = name
    tmp = path / "model.safetensors.tmp"
    save_file(tensors, tmp, metadata={"format": "pt"})
    os.replace(tmp, path / "model.safetensors")
    (path / "config.json").write_text(json.dumps(raw, indent=2) + "\n")


def config_dict(cfg: ModelConfig) -> dict:
    """A config.json (older Qwen2 layout, which transformers 4 and 5 both read) for a config made in code."""
    d = {"architectures": ["Qwen2ForCausalLM" if cfg.model_type == "qwen2" else "Qwen3ForCausalLM"],
         "model_type": cfg.model_type, "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
         "intermediate_size": cfg.intermediate_size, "num_hidden_layers": cfg.num_hidden_layers,
         "num_attention_heads": cfg.num_attention_heads, "num_key_value_heads": cfg.num_key_value_heads,
         "head_dim": cfg.head_dim, "rms_norm_eps": cfg.rms_norm_eps, "rope_theta": cfg.rope_theta,
         "max_position_embeddings": cfg.max_position_embeddings, "tie_word_embeddings": cfg.tie_word_embeddings,
         "hidden_act": "silu", "use_sliding_window": False}
    if cfg.model_type == "qwen3":
        d["attention_bias"] = cfg.attention_bias
    return d
