#!/usr/bin/env bash
# Quality of the default job (README) against the model as shipped, on the same evaluations:
# wikitext-2 test perplexity (first 4,096 tokens, windows of 512, stride 256) and HellaSwag
# acc_norm on the 1,000 validation items of ../shared (zero-shot, ~9 minutes per model on 2
# cores). Run after scripts/setup.sh; needs ../shared. Prints one JSON object per model and the
# ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
qat=./target/release/qat
shared=${QAT_SHARED:-../shared}
run=runs/smollm2_135m_int4
out=$run/quality.json
for m in models/smollm2-135m-instruct $run/export-hf; do
  ppl=$($qat eval "$m" --json --text "$shared/data/text/wikitext2_test.raw" --max-tokens 4096 --window 512 --stride 256 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["perplexity"])')
  hs=$($qat eval "$m" --json --hellaswag "$shared/data/eval/hellaswag_val_1000.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["acc_norm"])')
  echo "{\"model\": \"$m\", \"wikitext2_ppl\": $ppl, \"hellaswag_acc_norm\": $hs}"
done | tee "$out.tmp"
mv "$out.tmp" "$out"
python3 - "$out" <<'PY'
import json, sys
base, ours = [json.loads(l) for l in open(sys.argv[1])]
print(f"wikitext-2 perplexity {ours['wikitext2_ppl']:.2f} vs {base['wikitext2_ppl']:.2f} ({ours['wikitext2_ppl'] / base['wikitext2_ppl']:.3f}x); "
      f"HellaSwag acc_norm {ours['hellaswag_acc_norm']:.3f} vs {base['hellaswag_acc_norm']:.3f} ({100 * (ours['hellaswag_acc_norm'] - base['hellaswag_acc_norm']):+.1f} points)")
PY
