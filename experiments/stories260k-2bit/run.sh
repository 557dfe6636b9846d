#!/usr/bin/env bash
# Reproduces experiments/stories260k-2bit/README.md (about 15 minutes on 2 CPU cores).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p qat-cli
qat=./target/release/qat
$qat sweep configs/sweeps/stories260k_schemes.toml --quiet
out=runs/stories260k-2bit
mkdir -p $out
[ -f $out/fp_finetune/summary.json ] || $qat train configs/stories260k_2bit.toml --quiet --set quant.scheme=\"none\" --set output.dir=\"../$out/fp_finetune\"
[ -f $out/seq2_kd/summary.json ] || $qat train configs/stories260k_2bit.toml --quiet --set loss.kd=\"cakld\" --set output.dir=\"../$out/seq2_kd\"
$qat sweep configs/sweeps/stories260k_windtunnel.toml --quiet
s=runs/sweeps/stories260k_schemes
python3 scripts/experiment_table.py --fp-label="stories260K (full precision)" \
  "RTN INT4=$s/run-000" "RTN INT2 {-2,-1,0,1}=$s/run-002" "RTN SEQ-2=$s/run-004" "RTN ternary=$s/run-006" \
  "FP fine-tuned, same budget=$out/fp_finetune" \
  "QAT INT4=$s/run-001" "QAT SEQ-2 (CE)=$s/run-005" "QAT SEQ-2 (CE + CAKLD)=$out/seq2_kd" "QAT INT2-asym=$s/run-003" "QAT ternary=$s/run-007"
echo
cat runs/sweeps/stories260k_windtunnel/results.md
