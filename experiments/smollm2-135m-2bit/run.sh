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
qat_row qat_seq2_act8 --set quant.act_int8=true   # SEQ-2, CE + CAKLD, int8 per-token activations in training
# Wind tunnel: weight lr x CAKLD weight at 8,192 tokens per run, ranked by validation loss.
$qat sweep configs/sweeps/smollm2_windtunnel.toml --quiet > /dev/null
python3 - $out <<'PY'
# The results table, every cell read from the files above.
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
rows = [("SmolLM2-135M-Instruct as shipped (Q4_1, dequantized)", "fp", None, None),
        ("RTN INT4 per channel", "rtn_int4", "runs/smollm2-135m-2bit/rtn_int4", None),
        ("RTN INT2 {-2,-1,0,1}", "rtn_int2", "runs/smollm2-135m-2bit/rtn_int2", None),
        ("RTN SEQ-2", "rtn_seq2", "runs/smollm2-135m-2bit/rtn_seq2", None),
        ("RTN ternary", "rtn_ternary2", "runs/smollm2-135m-2bit/rtn_ternary2", None),
        ("QAT SEQ-2 (CE)", "qat_seq2_ce", "runs/smollm2_qat_seq2_ce/final", "runs/smollm2_qat_seq2_ce"),
        ("QAT SEQ-2 (CE + CAKLD)", "qat_seq2", "runs/smollm2_qat_seq2/final", "runs/smollm2_qat_seq2"),
        ("QAT INT2-asym {-2,-1,0,1} (CE)", "qat_int2", "runs/smollm2_qat_int2/final", "runs/smollm2_qat_int2"),
        ("QAT ternary (CE)", "qat_ternary", "runs/smollm2_qat_ternary/final", "runs/smollm2_qat_ternary"),
        ("QAT SEQ-2 (CE + CAKLD), int8 activations in training", "qat_seq2_act8", "runs/smollm2_qat_seq2_act8/final", "runs/smollm2_qat_seq2_act8")]
print("| model | wikitext-2 ppl | HellaSwag acc_norm | MMLU acc | bits/weight (linears) | GGUF bytes (bits/weight, all params) | training tokens | wall time |")
print("|---|---|---|---|---|---|---|---|")
for label, name, model_dir, run in rows:
    ev = json.loads((out / f"{name}.eval.json").read_text())
    ppl = next(e["perplexity"] for e in ev if "perplexity" in e)
    hs = next(e["acc_norm"] for e in ev if e.get("benchmark") == "hellaswag")
    mm = next(e["acc"] for e in ev if e.get("benchmark") == "mmlu")
    bits = json.loads((pathlib.Path(model_dir) / "qat_quant.json").read_text())["bits_per_weight_quantized"] if model_dir else 16
    export = out / f"{name}.export.json"
    size = "—"
    if export.exists():
        r = json.loads(export.read_text())
        size = f"{r['file_bytes']:,} ({r['bits_per_weight']:.2f})"
    tokens, wall = "0", "—"
    if run:
        summary = json.loads((pathlib.Path(run) / "summary.json").read_text())
        tokens, wall = f"{summary['tokens']:,}", f"{summary['wall_seconds'] / 60:.1f} min"
    print(f"| {label} | {ppl:.4g} | {hs:.3f} | {mm:.3f} | {bits:.2f} | {size} | {tokens} | {wall} |")
PY
