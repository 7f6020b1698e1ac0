"""Merge a LoRA checkpoint into its base: a full HF checkpoint that transformers (and vLLM) load as it is.

    python scripts/merge_lora.py out/run/ckpt-100 out/merged [--dtype bfloat16]

CKPT is an adapter folder (adapter_config.json + adapter_model.safetensors, e.g. a LoRA run's ckpt-STEP); its
base is read from base_model_name_or_path. OUT gets config.json, model.safetensors with W + (alpha / r) B A for
every adapted layer (fp32 math, rounded once to --dtype: by default the dtype the base was stored in), and the
tokenizer files (CKPT's, else the base's). OUT must not exist yet, or be empty: nothing is overwritten.
"""
import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from nanor1.lora import merged_state_dict  # noqa: E402
from nanor1.model import Transformer  # noqa: E402
from nanor1.tokenizer import Tokenizer  # noqa: E402
from nanor1.weights import DTYPES, save_pretrained  # noqa: E402


def merge(ckpt, out, dtype=None):
    ckpt, out = Path(ckpt), Path(out)
    if not (ckpt / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{ckpt} is not a LoRA adapter folder (no adapter_config.json)")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"output folder {out} already exists and is not empty: choose a new one")
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    model = Transformer.from_pretrained(ckpt, dtype=torch.float32)  # base + adapters, all in fp32
    stored = model.config.raw.get("dtype", model.config.raw.get("torch_dtype", "float32"))
    sd = merged_state_dict(model, DTYPES.get(dtype or stored, torch.float32))
    save_pretrained(model, out, state_dict=sd)  # writes the base's config.json with the new dtype
    tokenizer_home = ckpt if (ckpt / "tokenizer.json").is_file() else Path(model.lora.base)
    if (tokenizer_home / "tokenizer.json").is_file():
        Tokenizer.from_pretrained(tokenizer_home).save_pretrained(out)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ckpt", help="LoRA adapter folder (adapter_config.json + adapter_model.safetensors)")
    ap.add_argument("out", help="new folder for the merged HF checkpoint")
    ap.add_argument("--dtype", default=None, help="float32 | bfloat16 | float16 (default: the base's)")
    args = ap.parse_args(argv)
    out = merge(args.ckpt, args.out, args.dtype)
    print(f"wrote {out}")


if __name__ == "__main__":
    try:
        main()
    except (ValueError, FileNotFoundError, KeyError, NotImplementedError) as e:
        print(f"error: {e.args[0] if e.args else e}", file=sys.stderr)
        sys.exit(2)
