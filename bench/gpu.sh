#!/usr/bin/env bash
# One GPU session, prepared: every CUDA test and every open GPU figure of BENCHMARKS.md, then one table.
# Sized for one H200 (torch 2.11, triton 3.6, no network: nothing downloads): the steps' time limits add up
# to 490 s, about 8 minutes, and a step that runs over its limit is stopped and reported, not waited for.
#
#   bash bench/gpu.sh          run everything (needs CUDA); each step's whole output goes to $LOG/NAME.txt
#   bash bench/gpu.sh --dry    no GPU needed: print the plan and check it (every file exists, every test id
#                              collects, every --flag is one its script's --help lists)
#
# PYTHON: the interpreter (default python3); LOG: the output folder (default $OUT when set, else
# /tmp/nanor1-gpu). BENCHMARKS.md says which figure each step fills in.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LOG=${LOG:-${OUT:-/tmp/nanor1-gpu}}
DRY=0
[ "${1:-}" = "--dry" ] && DRY=1
export PYTHONUNBUFFERED=1 PYTHONPATH=.

# The CUDA tests: the kernel files (compiled Triton on a GPU, the interpreter elsewhere), the Triton model
# head, and the tests that skip without CUDA (the compiled kernels at vocabulary / benchmark shape).
KERNEL_TESTS="tests/test_logprob.py tests/test_decode_attention.py tests/test_sampling.py
 tests/test_model.py::test_model_logprobs_and_grads_through_triton_match_torch"
SYNC_TEST="tests/test_train.py::test_update_waits_for_the_gpu_once_per_optimiser_step"
# Most of the tests' time is Triton compiling each kernel variant once: 8 workers compile side by side (the
# GPU machine's image has pytest-xdist).
XDIST=$($PY -c "import xdist" 2>/dev/null && echo "-n 8")

# name | limit s | command | grep -E pattern of the output lines that go into the table
STEPS=(
  "tests|130|$PY -m pytest -q -p no:cacheprovider -rs $XDIST $(echo $KERNEL_TESTS)|(passed|failed|error)"
  "syncs|30|$PY -m pytest -q -s -p no:cacheprovider $SYNC_TEST|host syncs|passed|failed|error"
  "decode_attention|45|$PY bench/bench_decode_attention.py|copy bandwidth| auto "
  "sampling|60|$PY bench/bench_sampling.py --pivots --splits|bfloat16.*triton \("
  "logprob|45|$PY bench/bench_logprob.py --gpu|^(naive|triton|torch)"
  "rollout|60|$PY bench/bench_rollout.py --device cuda --batches 64 --new 512 --temperature 1|^\| 64 "
  "train_step|60|$PY bench/bench_train_step.py --model 1.5B --seq 1536 --micro 8 --sequences 64 --grad_checkpointing --steps 2|^# |^\| [0-9]"
  "positions|30|$PY bench/bench_positions.py --device cuda --sequences 16|^\| (head|model)"
  "lora|30|$PY bench/bench_lora.py --device cuda --shapes 0.5B --batch 64 --new 128 --reps 2 --skip_mismatch|^\| 0.5B"
)

field() { echo "$1" | cut -d'|' -f"$2"; }

dry() {
  local bad=0 step cmd script flags
  for step in "${STEPS[@]}"; do
    cmd=$(field "$step" 3)
    echo "$(field "$step" 1) ($(field "$step" 2) s): $cmd"
    if [[ $cmd == *"-m pytest"* ]]; then
      # every test id must collect (a renamed test would otherwise vanish from the GPU run unnoticed)
      local ids
      ids=$(echo "$cmd" | tr ' ' '\n' | grep '^tests/')
      if ! $PY -m pytest -q --collect-only -p no:cacheprovider $ids >/dev/null 2>&1; then
        echo "  BAD: these tests do not collect: $ids"; bad=1
      fi
    else
      script=$(echo "$cmd" | awk '{print $2}')
      [ -f "$script" ] || { echo "  BAD: no file $script"; bad=1; continue; }
      local help
      if ! help=$($PY "$script" --help 2>&1); then
        echo "  BAD: $PY $script --help fails: $(tail -1 <<<"$help")"; bad=1; continue
      fi
      for flags in $(echo "$cmd" | tr ' ' '\n' | grep '^--'); do
        grep -q -- "$flags" <<<"$help" || { echo "  BAD: $script has no option $flags"; bad=1; }
      done
    fi
  done
  local total=0
  for step in "${STEPS[@]}"; do total=$((total + $(field "$step" 2))); done
  echo "time limits add up to $total s"
  [ "$total" -le 500 ] || { echo "  BAD: over 8 minutes"; bad=1; }
  [ $bad = 0 ] && echo "plan OK" || echo "plan has problems"
  return $bad
}

if [ $DRY = 1 ]; then
  dry
  exit $?
fi
if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "no CUDA device here: nothing run (bash bench/gpu.sh --dry checks the plan without one)"
  exit 1
fi

mkdir -p "$LOG"
$PY -c "import torch, triton; print(f'{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}')" | tee "$LOG/device.txt"
start=$(date +%s)
rows=()
for step in "${STEPS[@]}"; do
  name=$(field "$step" 1); limit=$(field "$step" 2); cmd=$(field "$step" 3); pattern=$(echo "$step" | cut -d'|' -f4-)
  echo "=== $name (limit $limit s): $cmd"
  t0=$(date +%s)
  timeout --kill-after=5 "$limit" bash -c "$cmd" >"$LOG/$name.txt" 2>&1
  rc=$?
  secs=$(( $(date +%s) - t0 ))
  [ $rc = 124 ] || [ $rc = 137 ] && rc="timeout"
  tail -n 3 "$LOG/$name.txt"
  lines=$(grep -E -- "$pattern" "$LOG/$name.txt" | head -n 12 | sed 's/|/\\|/g' | tr -s ' ' | paste -sd';' -)
  rows+=("| $name | $rc | $secs | ${lines:-(see $LOG/$name.txt)} |")
done

echo
echo "## GPU session, $(cat "$LOG/device.txt"), $(date -u +%Y-%m-%d), $(( $(date +%s) - start )) s in all"
echo "| step | exit | s | result (full output: $LOG/NAME.txt) |"
echo "|---|---|---|---|"
printf '%s\n' "${rows[@]}"
