#!/usr/bin/env bash
# qat vs PyTorch eager on this machine, in one run: forward, plain training step and QAT (SEQ-2)
# training step throughput and peak memory for the same model and batch shape, then the loss
# of the first 50 QAT steps of both on the same data. Prints a Markdown report.
#   bash scripts/bench_vs_pytorch.sh [MODEL_DIR] [BATCH] [SEQ_LEN]
set -euo pipefail
cd "$(dirname "$0")/.."
model=${1:-models/smollm2-135m-instruct}
batch=${2:-1}
seq=${3:-512}
qat=target/release/qat
py=.venv/bin/python
cargo build --release -q -p qat-cli
echo "## qat vs PyTorch eager: $(basename "$model"), batch ${batch}x${seq}, $(nproc) CPU cores"
echo
echo "| mode | qat tokens/s | PyTorch tokens/s | qat / PyTorch | qat peak RSS MiB | PyTorch peak RSS MiB |"
echo "|---|---|---|---|---|---|"
declare -A q p
for mode in forward plain qat; do
  q[$mode]=$($qat bench "$model" --mode $mode --batch "$batch" --seq-len "$seq" --iters 3 --json)
  p[$mode]=$($py scripts/pytorch_reference.py "$model" --mode $mode --batch "$batch" --seq-len "$seq" --iters 3 2>/dev/null)
  $py - "$mode" "${q[$mode]}" "${p[$mode]}" <<'PY'
import json, sys
mode, q, p = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
print(f"| {mode} | {q['tokens_per_second']:.1f} | {p['tokens_per_second']:.1f} | {q['tokens_per_second']/p['tokens_per_second']:.2f} | {q['peak_rss_mib']:.0f} | {p['peak_rss_mib']:.0f} |")
PY
done
$py - "${q[plain]}" "${q[qat]}" "${p[plain]}" "${p[qat]}" <<'PY'
import json, sys
qp, qq, pp, pq = (json.loads(x) for x in sys.argv[1:])
print()
print(f"QAT step / plain step time: qat {pp and qp['tokens_per_second']/qq['tokens_per_second']:.3f}x, PyTorch {pp['tokens_per_second']/pq['tokens_per_second']:.3f}x")
PY
echo
echo "### Loss of the first 50 SEQ-2 QAT steps on the same data (batch 1x128, AdamW lr 1e-4 constant)"
rm -rf runs/track_pytorch
$qat train configs/reference/smollm2_track_pytorch.toml --quiet > /dev/null
ref=$($py scripts/pytorch_reference.py "$model" --mode qat --batch 1 --seq-len 128 --track-steps 50 --lr 1e-4 --text ../shared/data/text/tinyshakespeare.txt 2>/dev/null)
$py - "$ref" <<'PY'
import json, sys
ref = json.loads(sys.argv[1])["losses"]
ours = [json.loads(l)["loss"] for l in open("runs/track_pytorch/metrics.jsonl") if '"train"' in l]
print("| step | qat | PyTorch | difference |")
print("|---|---|---|---|")
for s in [0, 1, 2, 4, 9, 19, 29, 39, 49]:
    if s < len(ours):
        print(f"| {s+1} | {ours[s]:.4f} | {ref[s]:.4f} | {ours[s]-ref[s]:+.4f} |")
m = min(len(ours), len(ref))
print()
print(f"mean |difference| over {m} steps: {sum(abs(a-b) for a,b in zip(ours, ref))/m:.4f}; first-step difference {abs(ours[0]-ref[0]):.2e}")
PY
