#!/usr/bin/env bash
# qat vs PyTorch eager on this machine, in one run: forward (evaluation), plain training step,
# QAT (SEQ-2) training step and the distillation step (QAT + CE + CAKLD from the frozen model),
# at batch 1x512 and 8x256, both at the same thread count; the QAT step at 1 thread (scaling);
# where qat's step time goes; then the loss of the first 50 QAT steps of both on the same data.
# Prints a Markdown report (docs/benchmarks.md holds one).
#   bash scripts/bench_vs_pytorch.sh [MODEL_DIR]
# THREADS (default: all cores) sets both sides' thread count; WARMUP (default 2) the untimed
# iterations before each timing, on both sides: a process's first steps fault in the memory its
# later steps reuse, so steady-state training speed needs more than one; PYTHON a Python with
# torch and transformers (default .venv/bin/python, created here with both when missing);
# ROUNDS (default 3) how often each measurement is repeated, qat and PyTorch alternating, so that
# the tables show medians and the spread of the ratio on a machine shared with other work.
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-models/smollm2-135m-instruct}
threads=${THREADS:-$(nproc)}
warmup=${WARMUP:-2}
rounds=${ROUNDS:-3}
py=${PYTHON:-.venv/bin/python}
if [ ! -x "$py" ]; then
  python3 -m venv .venv >&2
  .venv/bin/pip install --quiet torch transformers >&2
  py=.venv/bin/python
fi
cargo build --release -q -p qat-cli
qat=target/release/qat
torch_info=$($py -c "import torch; torch.set_num_threads($threads); print(torch.__version__, torch.get_num_threads())")
echo "## qat vs PyTorch eager: $(basename "$model"), $(nproc) CPU cores ($(lscpu | sed -n 's/^Model name: *//p')), $threads threads each"
echo
echo "PyTorch ${torch_info% *} (torch.get_num_threads() = ${torch_info#* }), float32, eager attention. qat: Burn 0.22.1 flex, \`--threads $threads\`."
for shape in "1 512" "8 256"; do
  set -- $shape
  iters=$([ "$1" = 1 ] && echo 3 || echo 2)
  echo
  echo "### Batch $1x$2 ($iters timed iterations after $warmup warm-up, median of $rounds rounds)"
  # Rounds outermost: the modes of one round run back to back, so that ratios between modes
  # (the fake-quantization overhead) compare measurements minutes apart, not a quarter hour.
  for _ in $(seq "$rounds"); do
    for mode in forward plain qat kd; do
      q=$($qat --threads "$threads" bench "$model" --mode $mode --batch "$1" --seq-len "$2" --warmup "$warmup" --iters "$iters" --json)
      p=$($py scripts/pytorch_reference.py "$model" --mode $mode --batch "$1" --seq-len "$2" --warmup "$warmup" --iters "$iters" --threads "$threads" 2>/dev/null)
      printf '%s\t%s\t%s\n' "$mode" "$q" "$p"
    done
  done | $py scripts/bench_report.py
done
echo
echo "### Thread scaling: QAT training step, batch 1x512 (median of $rounds rounds)"
echo
echo "| threads | qat tokens/s | PyTorch tokens/s |"
echo "|---|---|---|"
# Rounds outermost here too: each round measures both thread counts on both sides back to back,
# so that the speed-up compares measurements seconds apart, not minutes (the machine's speed
# drifts by up to 20% within a script run).
tsv=$(mktemp)
trap 'rm -f "$tsv"' EXIT
for _ in $(seq "$rounds"); do
  for n in 1 "$threads"; do
    printf 'qat\t%s\t%s\n' "$n" "$($qat --threads "$n" bench "$model" --mode qat --batch 1 --seq-len 512 --warmup "$warmup" --iters 3 --json)"
    printf 'torch\t%s\t%s\n' "$n" "$($py scripts/pytorch_reference.py "$model" --mode qat --batch 1 --seq-len 512 --warmup "$warmup" --iters 3 --threads "$n" 2>/dev/null)"
  done
done > "$tsv"
$py - "$tsv" 1 "$threads" <<'PY'
import json, statistics, sys
path, one, many = sys.argv[1:]
runs = [line.rstrip("\n").split("\t") for line in open(path)]
med = {(side, n): statistics.median(json.loads(j)["tokens_per_second"] for s, k, j in runs if (s, k) == (side, n))
       for side in ("qat", "torch") for n in (one, many)}
for n in (one, many):
    print(f"| {n} | {med['qat', n]:.1f} | {med['torch', n]:.1f} |")
print()
print(f"Speed-up from 1 to {many} threads: qat {med['qat', many] / med['qat', one]:.2f}x, PyTorch {med['torch', many] / med['torch', one]:.2f}x.")
PY
echo
echo "### Loss of the first 50 SEQ-2 QAT steps on the same data (batch 1x128, AdamW lr 1e-4 constant)"
shakespeare=${QAT_SHARED:-../shared}/data/text/tinyshakespeare.txt
if [ ! -f "$shakespeare" ]; then
  echo
  echo "(skipped: $shakespeare not found; set QAT_SHARED to the shared reference directory)"
  exit 0
fi
rm -rf runs/track_pytorch
$qat --threads "$threads" train configs/reference/smollm2_track_pytorch.toml --quiet > /dev/null
ref=$($py scripts/pytorch_reference.py "$model" --mode qat --batch 1 --seq-len 128 --track-steps 50 --lr 1e-4 --threads "$threads" --text "$shakespeare" 2>/dev/null)
$py - "$ref" <<'PY'
import json, sys
ref = json.loads(sys.argv[1])["losses"]
ours = [json.loads(l)["loss"] for l in open("runs/track_pytorch/metrics.jsonl") if '"train"' in l]
print()
print("| step | qat | PyTorch | difference |")
print("|---|---|---|---|")
for s in [0, 1, 2, 4, 9, 19, 29, 39, 49]:
    if s < len(ours):
        print(f"| {s+1} | {ours[s]:.4f} | {ref[s]:.4f} | {ours[s]-ref[s]:+.4f} |")
m = min(len(ours), len(ref))
print()
print(f"mean |difference| over {m} steps: {sum(abs(a-b) for a,b in zip(ours, ref))/m:.4f}; first-step difference {abs(ours[0]-ref[0]):.2e}")
PY
