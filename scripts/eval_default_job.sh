#!/usr/bin/env bash
# Quality of the default job (README) against the model as shipped, on the same evaluations:
# wikitext-2 test perplexity (first 4,096 tokens, windows of 512, stride 256) and zero-shot
# accuracy on HellaSwag (the 1,000 validation items of ../shared), ARC-Easy (2,376) and PIQA
# (1,838), scored as lm-evaluation-harness scores them (crates/qat-eval; ~50 CPU-minutes per
# model on this machine: LIMIT=N scores the first N items of each task instead). The two models
# are evaluated side by side (KEEP_BASE=1: the original's line is kept from the quality.json of
# the last run, and only the new model is evaluated). Run after scripts/setup.sh; needs
# ../shared. Writes one JSON object per model to runs/smollm2_135m_int4/quality.json and prints
# the ratios and differences.
set -euo pipefail
cd "$(dirname "$0")/.."
qat=./target/release/qat
shared=${QAT_SHARED:-../shared}
run=runs/smollm2_135m_int4
out=$run/quality.json
limit=${LIMIT:-0}
one() {  # model, threads → one JSON line
  $qat eval "$1" --threads "$2" --json --text "$shared/data/text/wikitext2_test.raw" --max-tokens 4096 --window 512 --stride 256 \
    --hellaswag "$shared/data/eval/hellaswag_val_1000.jsonl" --hellaswag-limit "$limit" --mc-limit "$limit" \
    --mc "$shared/data/eval/mc/arc_easy.jsonl" --mc "$shared/data/eval/mc/piqa.jsonl" |
    python3 -c '
import json, sys
r = json.load(sys.stdin)
out = {"model": sys.argv[1], "wikitext2_ppl": r[0]["perplexity"]}
for b in r[1:]:
    out[b["benchmark"]] = {k: b[k] for k in ("acc", "acc_stderr", "acc_norm", "acc_norm_stderr", "n")}
print(json.dumps(out))' "$1"
}
if [ -n "${KEEP_BASE:-}" ]; then
  # The model as shipped and the evaluation code unchanged since the last run: keep its line
  # and give both cores to the new model.
  [ -f "$out" ] || { echo "KEEP_BASE: $out (the previous run's results) is missing" >&2; exit 1; }
  head -1 "$out" > "$out.base"
  one $run/export-hf 2 > "$out.ours"
else
  one models/smollm2-135m-instruct 1 > "$out.base" &
  one $run/export-hf 1 > "$out.ours"
  wait $!
fi
cat "$out.base" "$out.ours" | tee "$out.tmp"
rm -f "$out.base" "$out.ours"
mv "$out.tmp" "$out"
python3 - "$out" <<'PY'
import json, sys
base, ours = [json.loads(l) for l in open(sys.argv[1])]
print(f"wikitext-2 perplexity {ours['wikitext2_ppl']:.2f} vs {base['wikitext2_ppl']:.2f} ({ours['wikitext2_ppl'] / base['wikitext2_ppl']:.3f}x)")
for task in ("hellaswag", "arc_easy", "piqa"):
    for metric in ("acc", "acc_norm"):
        o, b = ours[task][metric], base[task][metric]
        print(f"{task} {metric} {o:.3f} ± {ours[task][metric + '_stderr']:.3f} vs {b:.3f} ± {base[task][metric + '_stderr']:.3f} ({100 * (o - b):+.1f} points, {base[task]['n']} items)")
PY
