#!/usr/bin/env bash
# llama.cpp formats on SmolLM2-135M-Instruct (experiments/smollm2-135m-2bit/README.md,
# "Formats"): which mix of Q4_0 / Q4_1 / Q3_K gives the best model in a GGUF under 80 MB.
# Each row is `qat train configs/smollm2_135m_2bit_mix.toml` with no training steps: the policy,
# round-to-nearest or GPTQ (64 rows of the mix), wikitext-2 (first 4,096 test tokens, windows
# of 512, stride 256) and the GGUF export. Asymmetric (Q4_1) values are exact in f32, so the
# scales are rounded for an f32 HF export. Needs scripts/setup.sh (model) and ../shared.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=runs/formats
train_flags=(--set quant.round_scales=\"f32\") export_flags=(--hf-dtype f32)
source experiments/smollm2-135m-2bit/rows.sh
gptq='calibration={method="gptq",rows=64}'
emb() {  # the tied embeddings in ggml format $1 with scheme $2
  echo "quant.rules=[{match=\"embed_tokens\",scheme=\"$2\",format=\"$1\"}]"
}
# Q4_1 is the format the model ships in: round-to-nearest with min/max scales gives it back.
row q4_1_rtn --set 'quant={format="q4_1",init="max"}'
row q4_1_emb_q4_1_rtn --set 'quant={format="q4_1",init="max"}' --set "$(emb q4_1 asym)"
row q4_0_gptq --set 'quant={format="q4_0",init="mse"}' --set "$gptq"
row q4_0_gptq_128_act_order --set 'quant={format="q4_0",init="mse"}' --set 'calibration={method="gptq",rows=128,act_order=true}'
row q4_0_emb_q4_0_gptq --set 'quant={format="q4_0",init="mse"}' --set "$(emb q4_0 int)" --set "$gptq"
row q4_0_emb_q4_1_gptq --set 'quant={format="q4_0",init="mse"}' --set "$(emb q4_1 asym)" --set "$gptq"
row q4_1_down_q3_k_emb_q4_0_gptq --set 'quant={format="q4_1",init="max"}' \
  --set 'quant.rules=[{match="layers.*.mlp.down_proj",format="q3_k",init="mse"},{match="embed_tokens",scheme="int",format="q4_0",init="mse"}]' --set "$gptq"
row q3_k_gptq --set 'quant={format="q3_k",init="mse"}' --set "$gptq"
# The asymmetric k-quants: Q4_K on down_proj (Q4_1 on the 576-wide matrices), and Q2_K as
# ggml fills it (asymmetric INT2; Q4_1 elsewhere), round-to-nearest with MSE scales.
row q4_k_rtn --set 'quant={format="q4_k",init="mse"}'
row q2_k_asym_rtn --set 'quant={format="q2_k_asym",init="mse"}'
[ "$only" = "  " ] || exit 0
python3 - $out "$(bash scripts/fetch_smollm2.sh)" <<'PY'
# The table, every cell read from the runs' files.
import json, os, pathlib, sys
out = pathlib.Path(sys.argv[1])
shipped_mb = os.path.getsize(sys.argv[2]) / 1e6
def load(p):
    return json.loads(p.read_text()) if p.exists() else None
rows = [
    ("q4_1_rtn", "linears Q4_1 (the shipped format), embeddings unquantized", "round-to-nearest, min/max"),
    ("q4_1_emb_q4_1_rtn", "linears Q4_1, embeddings Q4_1", "round-to-nearest, min/max"),
    ("q4_0_gptq", "linears Q4_0, embeddings unquantized", "GPTQ (64 rows)"),
    ("q4_0_gptq_128_act_order", "linears Q4_0, embeddings unquantized", "GPTQ (128 rows, act-order)"),
    ("q4_0_emb_q4_0_gptq", "linears Q4_0, embeddings Q4_0", "GPTQ (64 rows)"),
    ("q4_0_emb_q4_1_gptq", "linears Q4_0, embeddings Q4_1", "GPTQ (64 rows)"),
    ("q4_1_down_q3_k_emb_q4_0_gptq", "linears Q4_1, down_proj Q3_K, embeddings Q4_0", "GPTQ (64 rows)"),
    ("q3_k_gptq", "format q3_k: down_proj Q3_K, 576-wide INT3 g32 (Q4_0), embeddings unquantized", "GPTQ (64 rows)"),
    ("q4_k_rtn", "format q4_k: down_proj Q4_K, 576-wide asym INT4 g32 (Q4_1), embeddings unquantized", "round-to-nearest, MSE"),
    ("q2_k_asym_rtn", "format q2_k_asym: down_proj Q2_K (asym INT2), 576-wide asym INT2 g32 (Q4_1), embeddings unquantized", "round-to-nearest, MSE"),
]
print("| model | initialisation | wikitext-2 ppl | × baseline | val loss | bits/weight (linears) | GGUF |")
print("|---|---|---|---|---|---|---|")
base = None
for name, label, init in rows:
    s = load(out / name / "summary.json")
    if s is None:
        print(f"| {label} | {name}: not run | | | | | |")
        continue
    if base is None:
        fp = s["fp_eval"]
        base = fp["ppl/wikitext2_test"]
        print(f"| SmolLM2-135M-Instruct as shipped (Q4_1 linears, Q8_0 embeddings) | — | {base:.2f} | 1.00 | {fp['val_loss']:.3f} | — | {shipped_mb:.1f} MB (the PyPI file) |")
    cal = load(out / name / "calibration.json")
    ev = cal.get("eval", s["first_eval"]) if cal else s["first_eval"]
    bits = json.loads((out / name / "final" / "qat_quant.json").read_text())["bits_per_weight_quantized"]
    g = load(out / f"{name}.export.json")
    size = f"{g['file_bytes'] / 1e6:.1f} MB" if g else "—"
    ppl = ev["ppl/wikitext2_test"]
    print(f"| {label} | {init} | {ppl:.2f} | {ppl / base:.3f} | {ev['val_loss']:.3f} | {bits:.3f} | {size} |")
PY
