"""Scale check of the loader: a random-weight model with the exact Qwen2.5-0.5B config saved in bf16.

    python bench/bench_load.py [--threads 2]

Measures, in a fresh process each: RSS of the bare interpreter (torch imported), load time, RSS right after
loading (safetensors maps files lazily, so this says little), RSS after one forward of 1 x 128 tokens, and
the forward's time. Bar: RSS above the bare interpreter under 1.5x the weights' bytes.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import json, sys, time, torch
sys.path.insert(0, sys.argv[3])
torch.set_num_threads(int(sys.argv[2]))
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) * 1024
bare = rss()
from nanor1.model import Transformer
t = time.perf_counter()
model = Transformer.from_pretrained(sys.argv[1], dtype=torch.bfloat16)
load = time.perf_counter() - t
after_load = rss()
ids = torch.randint(0, 151643, (1, 128))
with torch.no_grad():
    model(ids)
    t = time.perf_counter()
    model(ids)
    fwd = time.perf_counter() - t
print(json.dumps(dict(bare=bare, load_s=load, after_load=after_load, after_forward=rss(), forward_s=fwd)))
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    sys.path.insert(0, ROOT)
    from bench.bench_rollout import random_model
    model = random_model()
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        del model
        r = json.loads(subprocess.run([sys.executable, "-c", CHILD, d, str(args.threads), ROOT], check=True,
                                      capture_output=True, text=True).stdout)
    gb = 1e9
    print(f"weights {weight_bytes / gb:.3f} GB (bf16, tied)")
    print("| load s | RSS after load above bare GB | RSS after forward above bare GB | ratio to weights | forward 1x128 s |")
    print("|---|---|---|---|---|")
    above = r["after_forward"] - r["bare"]
    print(f"| {r['load_s']:.2f} | {(r['after_load'] - r['bare']) / gb:.3f} | {above / gb:.3f} | "
          f"{above / weight_bytes:.2f}x | {r['forward_s']:.3f} |")


if __name__ == "__main__":
    main()
