#!/usr/bin/env bash
# Reproduces experiments/smollm2-135m-2bit/README.md on a CPU: round-to-nearest baselines and
# QAT SEQ-2 (CE + CAKLD) of SmolLM2-135M-Instruct, evaluated on wikitext-2 (first 4096 test
# tokens), HellaSwag (first 100 validation items) and MMLU (100 test questions across the 57
# subjects), with GGUF exports.  Needs scripts/setup.sh (model) and ../shared (data).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p qat-cli
qat=./target/release/qat
m=models/smollm2-135m-instruct
out=runs/smollm2-135m-2bit
shared=../shared/data
mkdir -p $out
evaluate() {  # name dir
  [ -s $out/$1.eval.json ] || $qat eval "$2" --json --text $shared/text/wikitext2_test.raw --max-tokens 4096 --window 512 --stride 256 \
    --hellaswag $shared/eval/hellaswag_val_1000.jsonl --hellaswag-limit 100 --mmlu $shared/eval/mmlu --mmlu-limit 100 > $out/$1.eval.json
}
evaluate fp $m
for q in "int 4" "int 2" "seq 2" "ternary 2"; do
  set -- $q
  [ -d $out/rtn_$1$2 ] || $qat quantize $m --scheme $1 --bits $2 --out $out/rtn_$1$2 > /dev/null
  evaluate rtn_$1$2 $out/rtn_$1$2
  [ -f $out/rtn_$1$2.gguf ] || $qat export $m --scheme $1 --bits $2 --format gguf --out $out/rtn_$1$2.gguf | tail -1
done
# QAT rows: 40 steps of 8x256 tokens each (lr 5e-4, 10% warmup, cosine), same data and seed.
qat_row() {  # name, then --set overrides that make the row
  local name=$1; shift
  local run=runs/smollm2_$name
  [ -f $run/summary.json ] || $qat train configs/smollm2_135m_2bit_mix.toml --quiet --set train.max_steps=40 --set train.lr=5e-4 \
    --set train.scale_lr=5e-4 --set train.warmup_fraction=0.1 --set checkpoint.every=10 "$@" --set output.dir=\"../$run\"
  evaluate $name $run
  [ -f $out/$name.gguf ] || $qat export $run --format gguf --out $out/$name.gguf | tail -1
  [ -d $out/$name-hf ] || $qat export $run --format hf --out $out/$name-hf > /dev/null
  $qat verify-export $out/$name-hf $out/$name.gguf | tail -1
}
qat_row qat_seq2                                  # SEQ-2, CE + CAKLD (the config's loss)
qat_row qat_seq2_ce --set loss.kd=\"none\"         # SEQ-2, CE only
qat_row qat_int2 --set 'quant={scheme="int",bits=2,granularity="channel"}' --set loss.kd=\"none\"
qat_row qat_ternary --set 'quant={scheme="ternary",granularity="channel"}' --set loss.kd=\"none\"
python3 - $out <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
rows = [("SmolLM2-135M-Instruct as shipped (Q4_1, dequantized)", "fp", None), ("RTN INT4 per channel", "rtn_int4", "rtn_int4.gguf"),
        ("RTN INT2 {-2,-1,0,1}", "rtn_int2", "rtn_int2.gguf"), ("RTN SEQ-2", "rtn_seq2", "rtn_seq2.gguf"),
        ("RTN ternary", "rtn_ternary2", "rtn_ternary2.gguf"), ("QAT SEQ-2 (CE + CAKLD), 40 steps", "qat_seq2", "qat_seq2.gguf"),
        ("QAT SEQ-2 (CE), 40 steps", "qat_seq2_ce", "qat_seq2_ce.gguf"), ("QAT INT2-asym (CE), 40 steps", "qat_int2", "qat_int2.gguf"),
        ("QAT ternary (CE), 40 steps", "qat_ternary", "qat_ternary.gguf")]
print("| model | wikitext-2 ppl (4096 tok) | HellaSwag acc_norm (100) | MMLU acc (100) | GGUF bytes |")
print("|---|---|---|---|---|")
for label, name, gguf in rows:
    ev = json.loads((out / f"{name}.eval.json").read_text())
    ppl = next(e["perplexity"] for e in ev if "perplexity" in e)
    hs = next(e["acc_norm"] for e in ev if e.get("benchmark") == "hellaswag")
    mm = next(e["acc"] for e in ev if e.get("benchmark") == "mmlu")
    size = f"{(out / gguf).stat().st_size:,}" if gguf and (out / gguf).exists() else "—"
    print(f"| {label} | {ppl:.2f} | {hs:.3f} | {mm:.3f} | {size} |")
PY
