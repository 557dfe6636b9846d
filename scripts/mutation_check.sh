#!/usr/bin/env bash
# Do the reference tests fail for the right reasons? Each line below breaks one thing a
# reference fixture checks (the Q2_K packing as llama.cpp reads and as qat writes it, AdamW's
# bias correction, CAKLD's confidence weights in the composed and the fused loss), runs the
# tests that should catch it, prints which did (or NOT CAUGHT), and restores the file with
# `git checkout` (run it on a clean tree).
set -uo pipefail
cd "$(dirname "$0")/.."
try() {  # file old new -- cargo test args
  local file=$1 old=$2 new=$3; shift 3
  python3 - "$file" "$old" "$new" <<'PY'
import sys
p, old, new = sys.argv[1:4]
s = open(p).read()
assert s.count(old) == 1, (p, old, s.count(old))
open(p, 'w').write(s.replace(old, new))
PY
  if cargo test -q "$@" > /tmp/mutate_out.txt 2>&1; then r="NOT CAUGHT"; else r="caught by: $(grep -E '^    [a-z0-9_:]+$' /tmp/mutate_out.txt | tr -d ' ' | tr '\n' ' ')"; fi
  echo "$file: '$old' -> '$new': $r"
  git checkout -q "$file"
}
try crates/qat-gguf/src/blocks.rs "let q = (qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;" "let q = (qs[32 * (e / 128) + e % 32] >> ((2 * ((e % 128) / 32)) ^ 2)) & 3;" -p qat-gguf --test blocks_reference
try crates/qat-export/src/encode.rs "|= (q as u8) << (2 * ((e % 128) / 32));" "|= (q as u8) << ((2 * ((e % 128) / 32)) ^ 2);" -p qat-export --lib
try crates/qat-train/src/optim.rs "bias1: (1.0 - b1.powi(t)) as f32," "bias1: (1.0 - b1.powi(t + 1)) as f32," -p qat-train --test adamw_reference
try crates/qat-train/src/loss.rs "let conf = lp_t.clone().gather(2, targets.ids.clone()).exp();" "let conf = lp_t.clone().gather(2, targets.ids.clone()).exp().neg() + 1.0;" -p qat-train --test loss_reference
try crates/qat-train/src/fused_loss.rs "(conf, 1.0 - conf)" "(1.0 - conf, conf)" -p qat-train --test loss_reference
