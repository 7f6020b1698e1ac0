"""Checkpoint I/O in the Hugging Face layout: config.json + model.safetensors (or a sharded
model.safetensors.index.json). Parameter names are HF's, so loading is an identity copy plus checks.

Memory: the model is built on the meta device (no storage), then each tensor is read from the file,
cast, and assigned in place of its meta parameter, so at most one copy of the weights (plus one tensor
in flight) exists.
"""
import json
import os
import re
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from nanor1 import lora
from nanor1.checkpoint import MANIFEST, verify_checkpoint
from nanor1.config import ModelConfig
from nanor1.tokenizer import read_json

SUPPORTED = ("qwen2", "qwen3")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
FLOAT_FILE_DTYPES = ("F32", "BF16", "F16", "F64")  # safetensors dtypes a weight may have; cast to the load dtype


def load_config(path) -> ModelConfig:
    """Parse config.json in either layout found in the wild: the older one (top-level `rope_theta`,
    `torch_dtype`) and the one transformers 5 writes (`rope_parameters`, `dtype`, `layer_types`).
    Every size must be a positive int and every scale a positive finite number; a bad value names its key."""
    file = Path(path) / "config.json"
    if not Path(path).is_dir():
        raise FileNotFoundError(f"model folder not found: {path}")
    if not file.is_file():
        raise FileNotFoundError(f"no config.json in model folder {path}")
    raw = read_json(file)
    mt = raw.get("model_type")
    if mt not in SUPPORTED:
        raise ValueError(f"unknown model_type {mt!r} in {file}: nanoR1 implements {', '.join(SUPPORTED)}")
    # Settings we do not implement fail loudly instead of computing something else.
    if raw.get("use_sliding_window", False):
        raise NotImplementedError(f"{file}: use_sliding_window=true is not implemented")
    if "sliding_attention" in _typed(raw, "layer_types", list, file, []):
        raise NotImplementedError(f"{file}: layer_types has 'sliding_attention', which is not implemented")
    rope = _typed(raw, "rope_parameters", dict, file, {})
    for where, params in (("rope_parameters", rope), ("rope_scaling", _typed(raw, "rope_scaling", dict, file, {}))):
        kind = params.get("rope_type", params.get("type", "default"))
        if kind != "default":
            raise NotImplementedError(f"{file}: {where} rope_type {kind!r} is not implemented (only 'default')")
    C, H = _size(raw, "hidden_size", file), _size(raw, "num_attention_heads", file)
    K = _size(raw, "num_key_value_heads", file, default=H)
    if H % K:
        raise ValueError(f"{file}: num_attention_heads {H} is not a multiple of num_key_value_heads {K}")
    if raw.get("head_dim") is not None:
        head_dim = _size(raw, "head_dim", file)
    elif mt == "qwen3":
        raise ValueError(f"{file}: qwen3 config without head_dim")
    elif C % H:  # Qwen2 configs carry no head_dim: it is C / H by definition
        raise ValueError(f"{file}: hidden_size {C} is not a multiple of num_attention_heads {H}")
    else:
        head_dim = C // H
    if head_dim % 2:
        raise ValueError(f"{file}: head_dim {head_dim} is odd; rope rotates pairs of channels")
    if raw.get("hidden_act", "silu") != "silu":
        raise NotImplementedError(f"{file}: hidden_act {raw['hidden_act']!r} is not implemented (only silu)")
    theta = rope.get("rope_theta", raw.get("rope_theta", 10000.0))
    return ModelConfig(
        model_type=mt, vocab_size=_size(raw, "vocab_size", file), hidden_size=C,
        intermediate_size=_size(raw, "intermediate_size", file),
        num_hidden_layers=_size(raw, "num_hidden_layers", file),
        num_attention_heads=H, num_key_value_heads=K, head_dim=head_dim,
        rms_norm_eps=_scale(raw.get("rms_norm_eps", 1e-6), "rms_norm_eps", file),
        rope_theta=_scale(theta, "rope_theta", file),
        max_position_embeddings=_size(raw, "max_position_embeddings", file, default=32768),
        tie_word_embeddings=_typed(raw, "tie_word_embeddings", bool, file, False),
        attention_bias=True if mt == "qwen2" else _typed(raw, "attention_bias", bool, file, False),
        qk_norm=(mt == "qwen3"), raw=raw)


def _size(raw, key, file, default=None):
    """A positive int from config.json (JSON true is not a size, nor is 64.0)."""
    v = raw.get(key, default)
    if v is None:
        raise ValueError(f"{file}: missing required key {key!r}")
    if type(v) is not int or v < 1:
        raise ValueError(f"{file}: {key} must be a positive integer, got {v!r}")
    return v


def _scale(v, key, file):
    """A positive finite number from config.json: rope_theta <= 0 or NaN makes every rope angle NaN."""
    if type(v) not in (int, float) or not 0 < v < float("inf"):
        raise ValueError(f"{file}: {key} must be a positive finite number, got {v!r}")
    return float(v)


def _typed(raw, key, kind, file, default):
    v = raw.get(key)
    if v is None:
        return default
    if not isinstance(v, kind):
        raise ValueError(f"{file}: {key} must be a JSON {kind.__name__}, got {v!r}")
    return v


def weight_files(path: Path):
    """Map each tensor name to the safetensors file holding it."""
    index = path / "model.safetensors.index.json"
    single = path / "model.safetensors"
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
            raise ValueError(f"{index}: expected a 'weight_map' object of tensor name -> file name")
        for f in set(weight_map.values()):
            if not (path / f).is_file():
                raise FileNotFoundError(f"{index} names shard {f}, which is missing")
        return {k: path / f for k, f in weight_map.items()}
    if single.is_file():
        with _open(single) as f:
            return {k: single for k in f.keys()}
    raise FileNotFoundError(f"no model.safetensors or model.safetensors.index.json in {path}")


def _open(file):
    """safe_open, with a damaged file (truncated, zero-filled, not safetensors) as one error naming it."""
    try:
        return safe_open(file, framework="pt", device="cpu")
    except SafetensorError as e:
        raise ValueError(f"{file}: not a readable safetensors file, damaged or truncated ({e})") from None


def _check_header(cfg, files, path):
    """Compare config.json with the weight files' headers before building anything: a config that claims
    10**7 layers or a huge vocabulary must not get a model built for it. Header reads only, no tensor data."""
    layers = {int(m.group(1)) for k in files if (m := re.match(r"model\.layers\.(\d+)\.", k))}
    if len(layers) != cfg.num_hidden_layers:
        raise ValueError(f"{path}/config.json says num_hidden_layers={cfg.num_hidden_layers}, but the weight "
                         f"files hold {len(layers)} layers")
    name = "model.embed_tokens.weight"
    if name in files:
        with _open(files[name]) as f:
            shape = tuple(f.get_slice(name).get_shape())
        if shape != (cfg.vocab_size, cfg.hidden_size):
            raise ValueError(f"{path}/config.json says vocab_size={cfg.vocab_size}, hidden_size={cfg.hidden_size}, "
                             f"but {name} in {files[name]} has shape {shape}")


def load_pretrained(cls, path, dtype=torch.bfloat16, device="cpu"):
    """Build `cls(config)` on the meta device and assign each tensor from the files (see the module docstring).
    Refused: weights that are not floating point (int64, bool, fp8 without its scales) and weights holding NaN
    or inf (one check per tensor as it is loaded, _all_finite; the first bad tensor is named)."""
    path = Path(path)
    cfg = load_config(path)
    files = weight_files(path)
    if (path / MANIFEST).is_file():  # a nanoR1 checkpoint: its files must match the checksums of the save
        verify_checkpoint(path, ["config.json"] + sorted({f.name for f in files.values()}))
    _check_header(cfg, files, path)
    with torch.device("meta"):
        model = cls(cfg)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    if cfg.tie_word_embeddings:
        expected.pop("lm_head.weight")  # optional in the file; the tie supplies it
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
    """Read each weight named in `expected` (name -> shape) from its file (`files`: name -> path), check its dtype,
    shape and values, and put it in place of the model's meta parameter (no second copy, no init)."""
    by_file = {}
    for name in expected:
        by_file.setdefault(files[name], []).append(name)
    params = dict(model.named_parameters())
    for file, keys in by_file.items():
        with _open(file) as f:
            for name in keys:
                kind = f.get_slice(name).get_dtype()
                if kind not in FLOAT_FILE_DTYPES:
                    raise ValueError(f"weight {name!r} in {file} is {kind}: nanoR1 loads {', '.join(FLOAT_FILE_DTYPES)}"
                                     " weights only (integer and bool tensors are not weights; fp8 needs its scales)")
                try:
                    t = f.get_tensor(name)
                except SafetensorError as e:
                    raise ValueError(f"{file}: weight {name!r} cannot be read ({e})") from None
                if tuple(t.shape) != tuple(expected[name]):
                    raise ValueError(f"weight {name!r} in {file} has shape {tuple(t.shape)}, "
                                     f"expected {tuple(expected[name])}")
                t = t.to(device=device, dtype=dtype)
                if not _all_finite(t):  # NaN in, NaN out: every update would be NaN too
                    raise ValueError(f"weight {name!r} in {file} holds NaN or inf values "
                                     f"(after the cast to {str(dtype).removeprefix('torch.')})")
                module_name, _, attr = name.rpartition(".")
                setattr(model.get_submodule(module_name), attr,
                        torch.nn.Parameter(t, requires_grad=params[name].requires_grad))


def _all_finite(t) -> bool:
    """Whether every element of `t` is finite. A sum is finite only if every term is (NaN and inf propagate),
    so one reduction settles the usual case at memory speed (~20 GB/s on one CPU core, where the elementwise
    isfinite(t).all() runs at ~0.3 GB/s and allocates a bool copy); only a sum that overflows needs it."""
    return bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())


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


def load_adapter_model(cls, path, dtype=torch.bfloat16, device="cpu"):
    """Transformer.from_pretrained on an adapter folder: the base named by base_model_name_or_path (in `dtype`),
    LoRA applied as the folder's config says, then its adapters (fp32)."""
    if (Path(path) / MANIFEST).is_file():  # a nanoR1 checkpoint: its files must match the checksums of the save
        verify_checkpoint(path, ["adapter_config.json", "adapter_model.safetensors"])
    cfg = lora.read_adapter_config(path)
    if not cfg.base or not (Path(cfg.base) / "config.json").is_file():
        raise FileNotFoundError(f"{Path(path) / 'adapter_config.json'}: base model {cfg.base!r} "
                                "(base_model_name_or_path) not found: the adapters need the model they were "
                                "trained on; edit that field to where it lives")
    model = load_pretrained(cls, cfg.base, dtype=dtype, device=device)
    lora.apply_lora(model, cfg.rank, cfg.alpha, cfg.dropout, cfg.targets, base=cfg.base)
    state = lora.read_adapter(model, path)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in state:
                p.copy_(state[name])
    return model
