"""The benchmark that issue 13's GPU figure comes from still runs (tiny shape, one CPU process, one step)."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_train_step_bench_prints_its_table():
    p = subprocess.run([sys.executable, "bench/bench_train_step.py", "--model", "tiny", "--steps", "1",
                        "--grad_checkpointing"], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert p.returncode == 0, p.stderr[-2000:]
    row = p.stdout.strip().splitlines()[-1].split("|")
    assert float(row[1]) > 0 and "GiB" in row[3], p.stdout


def test_profile_step_prints_its_phase_table():
    """bench/profile_step.py on a small step of the demo: the table's phases add up to the step."""
    p = subprocess.run([sys.executable, "bench/profile_step.py", "--steps", "1", "--warmup", "0", "--",
                        "--prompts_per_step", "2", "--group_size", "2", "--max_completion_len", "8"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert p.returncode == 0, p.stderr[-2000:]
    rows = {r.split("|")[1].strip(): [float(x) for x in r.split("|")[2:4]] for r in p.stdout.splitlines()
            if r.startswith("| ") and r.split("|")[2].strip()[:1].isdigit()}
    top = [rows[k] for k in ("**collect**", "**score**", "**update**")]
    assert rows["**step**"][1] > 0 and abs(sum(c for _, c in top) - rows["**step**"][1]) < 2e-3, p.stdout


def test_gpu_script_plan_checks_out():
    """bench/gpu.sh --dry: every test id it runs on the GPU still collects, every flag is one its script takes,
    and the time limits fit the GPU session, so a rename here cannot silently drop a step from the GPU run."""
    root = Path(__file__).resolve().parents[1]
    p = subprocess.run(["bash", "bench/gpu.sh", "--dry"], cwd=root, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHON": sys.executable})
    assert p.returncode == 0 and "plan OK" in p.stdout, p.stdout + p.stderr
