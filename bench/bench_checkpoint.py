"""What a checkpoint's manifest costs: writing the files vs hashing + fsyncing them (write_manifest) vs checking
them again on resume (verify_checkpoint).

    python bench/bench_checkpoint.py [--sizes_mb 64 512 2048] [--dir /tmp]

Each size is one checkpoint folder holding a weights file of that size and an optimiser file of twice it
(AdamW's two moments), written with safetensors and torch.save as save_checkpoint does. The manifest reads
every byte once more (sha256, files in parallel threads) and fsyncs them; verify reads and hashes them again.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from nanor1.checkpoint import verify_checkpoint, write_manifest  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes_mb", type=int, nargs="+", default=[64, 512, 2048])
    ap.add_argument("--dir", default=tempfile.gettempdir(), help="where to write (its disk is what is measured)")
    args = ap.parse_args()
    print("| weights MB | checkpoint MB | write s | manifest (sha256 + fsync) s | verify s | verify GB/s |")
    print("|---|---|---|---|---|---|")
    for mb in args.sizes_mb:
        folder = Path(tempfile.mkdtemp(dir=args.dir)) / "ckpt-1"
        folder.mkdir()
        n = mb * 2**20 // 4  # fp32 elements
        weights, moments = {"w": torch.randn(n)}, {"exp_avg": torch.randn(n), "exp_avg_sq": torch.rand(n)}
        try:
            t0 = time.perf_counter()  # the writes alone (to the page cache; the manifest's fsync flushes them)
            save_file(weights, folder / "model.safetensors")
            with open(folder / "optimizer.pt", "wb") as f:
                torch.save(moments, f)
            t1 = time.perf_counter()
            write_manifest(folder)
            t2 = time.perf_counter()
            verify_checkpoint(folder)
            t3 = time.perf_counter()
            total = sum(p.stat().st_size for p in folder.iterdir())
            print(f"| {mb} | {total / 2**20:.0f} | {t1 - t0:.2f} | {t2 - t1:.2f} | {t3 - t2:.2f} | "
                  f"{total / 1e9 / (t3 - t2):.2f} |", flush=True)
        finally:
            shutil.rmtree(folder.parent)
            del weights, moments


if __name__ == "__main__":
    main()
