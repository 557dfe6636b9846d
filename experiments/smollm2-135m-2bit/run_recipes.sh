#!/usr/bin/env bash
# Calibrated recipes on SmolLM2-135M-Instruct (experiments/smollm2-135m-2bit/README.md,
# "Calibrated recipes"): round-to-nearest and GPTQ at INT4 per group of 32, and the Q2_K
# deployment format (quant.format = "q2_k") as round-to-nearest, GPTQ, GPTQ + block-wise
# reconstruction, and that followed by end-to-end CE + CAKLD training. Every stage is evaluated
# on the run's validation rows and wikitext-2 (first 4,096 test tokens, windows of 512, stride
# 256: the same numbers as `qat eval` in run.sh). Needs scripts/setup.sh (model) and ../shared.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=runs/recipes
train_flags=() export_flags=()
source experiments/smollm2-135m-2bit/rows.sh
q2k='quant={format="q2_k",init="mse"}'
# GPTQ -> block-wise reconstruction -> 10 steps of 8x256 tokens of CE + CAKLD from the
# original model: one run, each stage evaluated before the next. Block-wise settings from the
# probes in the README (16 rows, 3 epochs: scale_lr 1e-3 made blocks worse, 1e-5 better; weight
# lr 5e-4 beat 1e-4 and 1e-5; token_relative beat mse).
row q2k_recipe --set "$q2k" --set 'calibration={method="gptq",rows=64}' \
  --set 'blockwise={rows=32,val_rows=8,epochs=4,lr=5e-4,scale_lr=1e-5,batch_size=4,loss="token_relative"}' \
  --set train.max_steps=10 --set train.lr=1e-4 --set train.scale_lr=1e-5 --set train.warmup_fraction=0.1
# The deployable mix: the same recipe with the tied embeddings INT4 per group of 32 (Q4_0).
row q2k_mix_recipe --set "$q2k" --set 'quant.rules=[{match="embed_tokens",format="none",scheme="int",bits=4,granularity="group",group_size=32}]' \
  --set 'calibration={method="gptq",rows=64}' \
  --set 'blockwise={rows=32,val_rows=8,epochs=4,lr=5e-4,scale_lr=1e-5,batch_size=4,loss="token_relative"}' \
  --set train.max_steps=10 --set train.lr=1e-4 --set train.scale_lr=1e-5 --set train.warmup_fraction=0.1
# The recipe with Q2_K as ggml's own quantizer fills it: asymmetric INT2 with scale and min
# nibbles per group of 16 on down_proj, asymmetric INT2 per group of 32 (stored as Q4_1) on the
# 576-wide matrices. Asymmetric values are exact in f32: scales rounded for an f32 export.
export_flags=(--hf-dtype f32)
row q2k_asym_recipe --set 'quant={format="q2_k_asym",init="mse",round_scales="f32"}' --set 'calibration={method="gptq",rows=64}' \
  --set 'blockwise={rows=32,val_rows=8,epochs=4,lr=5e-4,scale_lr=1e-5,batch_size=4,loss="token_relative"}' \
  --set train.max_steps=10 --set train.lr=1e-4 --set train.scale_lr=1e-5 --set train.warmup_fraction=0.1
# The same recipe's curve: 150 steps (307,200 tokens) of CE + CAKLD after block-wise, the
# wikitext-2 perplexity every 25 steps (metrics.jsonl), checkpoints every 25 (resumable).
row q2k_asym_curve --set 'quant={format="q2_k_asym",init="mse",round_scales="f32"}' --set 'calibration={method="gptq",rows=64}' \
  --set 'blockwise={rows=32,val_rows=8,epochs=4,lr=5e-4,scale_lr=1e-5,batch_size=4,loss="token_relative"}' \
  --set train.max_steps=150 --set train.lr=1e-4 --set train.scale_lr=1e-5 --set train.warmup_fraction=0.05 \
  --set eval.every=25 --set checkpoint.every=25
# The issue's budget: the same recipe with twice the calibration rows (GPTQ 128, block-wise 64),
# then 2,400 steps (4.9M tokens) of CE + CAKLD under one cosine schedule, the wikitext-2
# perplexity every 100 steps, checkpoints every 25: ~11 hours here (`qat train --resume
# runs/recipes/q2k_asym_5m`, or this row again, continues it exactly where runs/ persists; it
# did not between this project's sessions, and the run was lost at KD step 242).
row q2k_asym_5m --set 'quant={format="q2_k_asym",init="mse",round_scales="f32"}' --set 'calibration={method="gptq",rows=128}' \
  --set 'blockwise={rows=64,val_rows=8,epochs=4,lr=5e-4,scale_lr=1e-5,batch_size=4,loss="token_relative"}' \
  --set train.max_steps=2400 --set train.lr=1e-4 --set train.scale_lr=1e-5 --set train.warmup_fraction=0.02 \
  --set eval.every=100 --set checkpoint.every=25
# The budget that fits one session (run directories do not outlive a session here, so the
# 2,400-step row above never finished): the same calibration, then 400 steps (819,200 tokens)
# of CE + CAKLD at twice the learning rate under a cosine schedule that ends inside the run;
# wikitext-2 every 50 steps.
row q2k_asym_1m --set 'quant={format="q2_k_asym",init="mse",round_scales="f32"}' --set 'calibration={method="gptq",rows=128}' \
  --set 'blockwise={rows=64,val_rows=8,epochs=4,lr=5e-4,scale_lr=1e-5,batch_size=4,loss="token_relative"}' \
  --set train.max_steps=400 --set train.lr=2e-4 --set train.scale_lr=1e-5 --set train.warmup_fraction=0.05 \
  --set eval.every=50 --set checkpoint.every=25
# Distillation without a dataset (LLM-QAT): the same calibration and learning rate, with half of
# every stage's rows drawn from 1,024 documents of up to 256 tokens that the original model
# sampled itself (`qat synthesize`: a random first token, 4 argmax tokens, then temperature 1),
# the other half the mix at its own proportions; 300 KD steps (614,400 tokens) under a cosine
# schedule that ends at step 300, wikitext-2 every 50.
samples=datasets/generated/smollm2_samples.jsonl
if [ -z "${TABLE_ONLY:-}" ] && [ ! -f $samples ] && { [ "$only" = "  " ] || [[ "$only" == *" q2k_asym_selfgen "* ]]; }; then
  $qat synthesize models/smollm2-135m-instruct --out $samples --documents 1024 --tokens 256 --batch 512 --seed 0
fi
row q2k_asym_selfgen --set 'quant={format="q2_k_asym",init="mse",round_scales="f32"}' --set 'calibration={method="gptq",rows=128}' \
  --set 'blockwise={rows=64,val_rows=8,epochs=4,lr=5e-4,scale_lr=1e-5,batch_size=4,loss="token_relative"}' \
  --set "data.sources.6={path=\"../$samples\",format=\"jsonl\",category=\"generated\"}" \
  --set 'data.mix={chat=0.25,math=0.125,code=0.05,text=0.075,generated=0.5}' \
  --set train.max_steps=300 --set train.lr=2e-4 --set train.scale_lr=1e-5 --set train.warmup_fraction=0.05 \
  --set eval.every=50 --set checkpoint.every=25
export_flags=()
row q2k_rtn --set "$q2k"
int4='quant={scheme="int",bits=4,granularity="group",group_size=32,init="mse"}'
# The INT4 recipes' block-wise stage (lr 1e-4, scale lr 2e-6 on 32 rows).
int4_blockwise='blockwise={rows=32,val_rows=8,epochs=4,lr=1e-4,scale_lr=2e-6,batch_size=4,loss="token_relative"}'
row int4g32_rtn --set "$int4"
row int4g32_gptq --set "$int4" --set 'calibration={method="gptq",rows=64}'
# INT4 g32 through all three stages: GPTQ (128 rows, act-order) -> block-wise -> 20 steps of
# CE + CAKLD, learning rates a fifth of the 2-bit recipe's (the INT4 weights start close).
row int4g32_recipe --set "$int4" --set 'calibration={method="gptq",rows=128,act_order=true}' \
  --set "$int4_blockwise" \
  --set train.max_steps=20 --set train.lr=2e-5 --set train.scale_lr=2e-6 --set train.warmup_fraction=0.1
# GPTQ INT4 calibrated on the model's own samples (the q2k_asym_selfgen row's file): half of the
# 128 rows sampled, half the mix; all 128 rows sampled; half of 256 rows sampled.
selfgen_source="data.sources.6={path=\"../$samples\",format=\"jsonl\",category=\"generated\"}"
row int4g32_gptq_selfgen --set "$int4" --set 'calibration={method="gptq",rows=128,act_order=true}' --set "$selfgen_source" \
  --set 'data.mix={chat=0.25,math=0.125,code=0.05,text=0.075,generated=0.5}'
row int4g32_gptq_selfgen_only --set "$int4" --set 'calibration={method="gptq",rows=128,act_order=true}' \
  --set "data.sources=[{path=\"../$samples\",format=\"jsonl\",category=\"generated\"}]" --set 'data.mix={generated=1.0}'
row int4g32_gptq_selfgen_256 --set "$int4" --set 'calibration={method="gptq",rows=256,act_order=true}' --set "$selfgen_source" \
  --set 'data.mix={chat=0.25,math=0.125,code=0.05,text=0.075,generated=0.5}'
# The first of these with each row's scales refitted to GPTQ's levels (calibration.refit_scales).
row int4g32_gptq_selfgen_refit --set "$int4" --set 'calibration={method="gptq",rows=128,act_order=true,refit_scales=true}' --set "$selfgen_source" \
  --set 'data.mix={chat=0.25,math=0.125,code=0.05,text=0.075,generated=0.5}'
# INT4 g32 and Q3_K through all three stages on the half-sampled mix: GPTQ (128 rows, act-order)
# -> block-wise (32 rows) -> CE + CAKLD under a cosine schedule ending at the last step: INT4 100
# steps (204,800 tokens), wikitext-2 every 25; Q3_K 60 steps (122,880 tokens), wikitext-2 every
# 20, learning rates between the INT4 and 2-bit recipes'.
halfgen=(--set "$selfgen_source" --set 'data.mix={chat=0.25,math=0.125,code=0.05,text=0.075,generated=0.5}'
  --set eval.every=25 --set checkpoint.every=25 --set train.max_steps=100 --set train.warmup_fraction=0.05)
row int4g32_selfgen_recipe --set "$int4" --set 'calibration={method="gptq",rows=128,act_order=true}' "${halfgen[@]}" \
  --set "$int4_blockwise" \
  --set train.lr=3e-5 --set train.scale_lr=2e-6
# The INT4 recipe with distillation alone (loss.ce_weight = 0): the KD stage of the row above
# fitted the mix's sources below the original's CE instead of following the original.
row int4g32_selfgen_kdonly --set "$int4" --set 'calibration={method="gptq",rows=128,act_order=true}' "${halfgen[@]}" \
  --set "$int4_blockwise" \
  --set train.lr=3e-5 --set train.scale_lr=2e-6 --set loss.ce_weight=0
export_flags=(--hf-dtype f32)
row q3k_selfgen_recipe --set 'quant={format="q3_k",init="mse",round_scales="f32"}' --set 'calibration={method="gptq",rows=128,act_order=true}' "${halfgen[@]}" \
  --set 'blockwise={rows=32,val_rows=8,epochs=4,lr=2e-4,scale_lr=5e-6,batch_size=4,loss="token_relative"}' \
  --set train.max_steps=60 --set eval.every=20 --set train.lr=1e-4 --set train.scale_lr=5e-6
# Where the Q3_K row's loss comes from, GPTQ stage only, same data and rows: Q3_K on down_proj
# (the only tensors whose rows allow it) with every other linear left as shipped, and INT3 g32
# (Q4_0 storage) on the 576-wide matrices with down_proj left as shipped.
q3k_gptq=(--set 'calibration={method="gptq",rows=128,act_order=true}' --set "$selfgen_source"
  --set 'data.mix={chat=0.25,math=0.125,code=0.05,text=0.075,generated=0.5}')
row q3k_down_only_gptq --set 'quant={scheme="none",round_scales="f32"}' \
  --set 'quant.rules=[{match="layers.*.mlp.down_proj",scheme="int",format="q3_k",init="mse"}]' "${q3k_gptq[@]}"
row q3k_wide_only_gptq --set 'quant={format="q3_k",init="mse",round_scales="f32"}' \
  --set 'quant.rules=[{match="layers.*.mlp.down_proj",format="none",scheme="none"}]' "${q3k_gptq[@]}"
# The q3_k format with the 576-wide matrices asymmetric INT3 per group of 32 (stored as Q4_1,
# as q2_k_asym stores its INT2) instead of symmetric INT3 in Q4_0.
row q3k_asym_wide_gptq --set 'quant={format="q3_k",init="mse",round_scales="f32"}' \
  --set 'quant.rules=[{match="layers.*.{self_attn.*,mlp.gate_proj,mlp.up_proj}",format="none",scheme="asym",bits=3,granularity="group",group_size=32,init="mse"}]' "${q3k_gptq[@]}"
# Asymmetric calibration (GPTAQ, calibration.asymmetric): each linear aims at the original
# model's output at strength 1 (the full correction), 0.5 (best on stories260K) and 0.25 (the
# reference implementation's default), GPTQ only, otherwise the rows int4g32_gptq_selfgen and
# q3k_selfgen_recipe's first stage.
row q3k_gptaq --set 'quant={format="q3_k",init="mse",round_scales="f32"}' \
  --set 'calibration={method="gptq",rows=128,act_order=true,asymmetric=1.0}' --set "$selfgen_source" --set 'data.mix={chat=0.25,math=0.125,code=0.05,text=0.075,generated=0.5}'
row q3k_gptaq_half --set 'quant={format="q3_k",init="mse",round_scales="f32"}' \
  --set 'calibration={method="gptq",rows=128,act_order=true,asymmetric=0.5}' --set "$selfgen_source" --set 'data.mix={chat=0.25,math=0.125,code=0.05,text=0.075,generated=0.5}'
row q3k_gptaq_quarter --set 'quant={format="q3_k",init="mse",round_scales="f32"}' \
  --set 'calibration={method="gptq",rows=128,act_order=true,asymmetric=0.25}' --set "$selfgen_source" --set 'data.mix={chat=0.25,math=0.125,code=0.05,text=0.075,generated=0.5}'
export_flags=()
row int4g32_gptaq --set "$int4" --set 'calibration={method="gptq",rows=128,act_order=true,asymmetric=1.0}' --set "$selfgen_source" \
  --set 'data.mix={chat=0.25,math=0.125,code=0.05,text=0.075,generated=0.5}'
row int4g32_gptaq_half --set "$int4" --set 'calibration={method="gptq",rows=128,act_order=true,asymmetric=0.5}' --set "$selfgen_source" \
  --set 'data.mix={chat=0.25,math=0.125,code=0.05,text=0.075,generated=0.5}'
row int4g32_gptaq_quarter --set "$int4" --set 'calibration={method="gptq",rows=128,act_order=true,asymmetric=0.25}' --set "$selfgen_source" \
  --set 'data.mix={chat=0.25,math=0.125,code=0.05,text=0.075,generated=0.5}'
# The INT4 recipe of int4g32_selfgen_recipe (block-wise, then 100 steps of CE + CAKLD) after
# asymmetric calibration at 0.25.
row int4g32_gptaq_recipe --set "$int4" --set 'calibration={method="gptq",rows=128,act_order=true,asymmetric=0.25}' "${halfgen[@]}" \
  --set "$int4_blockwise" \
  --set train.lr=3e-5 --set train.scale_lr=2e-6
# The same with distillation alone (no CE term, which memorised ShareGPT at lr 3e-5) at a
# learning rate 3.3 times higher and a 5 times higher scale rate: the lr-3e-5 curves flattened
# after 50 steps.
row int4g32_gptaq_kd_fast --set "$int4" --set 'calibration={method="gptq",rows=128,act_order=true,asymmetric=0.25}' "${halfgen[@]}" \
  --set "$int4_blockwise" \
  --set train.lr=1e-4 --set train.scale_lr=1e-5 --set loss.ce_weight=0
# The row above with a block-wise stage six times longer: 32 rows x 4 epochs gave each block 32
# Adam steps at lr 1e-4, too few to move an INT4 weight by half a step, and every block kept its
# last epoch. Here 128 rows x 6 epochs (192 steps per block) at lr 2e-4, 16 held-out rows,
# patience 2.
row int4g32_gptaq_bw_long --set "$int4" --set 'calibration={method="gptq",rows=128,act_order=true,asymmetric=0.25}' "${halfgen[@]}" \
  --set 'blockwise={rows=128,val_rows=16,epochs=6,lr=2e-4,scale_lr=5e-6,batch_size=4,patience=2,loss="token_relative"}' \
  --set train.lr=1e-4 --set train.scale_lr=1e-5 --set loss.ce_weight=0
# Rotated rows: the model with its residual stream and value heads rotated by random-signed
# Hadamard matrices, merged into the weights (`qat rotate`, seed 0: the same function, wikitext-2
# 24.4507 like the original), then rows above unchanged: GPTQ alone at INT4 g32 (Q4_0, Q4_1) and
# q3_k, and the INT4 recipes through all three stages.
rot=models/smollm2-135m-instruct-rot
[ -n "${TABLE_ONLY:-}" ] || [ -d $rot ] || $qat rotate models/smollm2-135m-instruct --out $rot --rotation hadamard --seed 0
rotated=(--set "model.path=\"../$rot\"")
export_flags=(--hf-dtype f32)
row int4g32_rot_gptaq_quarter "${rotated[@]}" --set "$int4" --set 'calibration={method="gptq",rows=128,act_order=true,asymmetric=0.25}' --set "$selfgen_source" \
  --set 'data.mix={chat=0.25,math=0.125,code=0.05,text=0.075,generated=0.5}'
# int4g32_gptaq_kd_fast's recipe (GPTQ at 0.25, block-wise, 100 steps of KD alone at lr 1e-4)
# on the rotated model.
row int4g32_rot_kd_fast "${rotated[@]}" --set "$int4" --set 'calibration={method="gptq",rows=128,act_order=true,asymmetric=0.25}' "${halfgen[@]}" \
  --set "$int4_blockwise" \
  --set train.lr=1e-4 --set train.scale_lr=1e-5 --set loss.ce_weight=0
# Asymmetric INT4 per group of 32 (Q4_1, 5 bits/weight) on the rotated model. On the original
# model Q4_1 is the shipped grid (round-to-nearest reproduces it exactly, 24.4507); the rotation
# mixes every row or column with all others, so no grid survives (round-to-nearest 1.386x).
row q4_1_rot_gptaq_quarter "${rotated[@]}" --set 'quant={format="q4_1",init="mse",round_scales="f32"}' \
  --set 'calibration={method="gptq",rows=128,act_order=true,asymmetric=0.25}' --set "$selfgen_source" \
  --set 'data.mix={chat=0.25,math=0.125,code=0.05,text=0.075,generated=0.5}'
# int4g32_rot_kd_fast with twice the distillation: 200 steps (409,600 tokens), cosine to 0 at
# step 200, wikitext-2 every 25.
row int4g32_rot_kd_long "${rotated[@]}" --set "$int4" --set 'calibration={method="gptq",rows=128,act_order=true,asymmetric=0.25}' "${halfgen[@]}" \
  --set "$int4_blockwise" --set train.max_steps=200 \
  --set train.lr=1e-4 --set train.scale_lr=1e-5 --set loss.ce_weight=0
# The same recipe as int4g32_rot_kd_fast in Q4_1.
row q4_1_rot_kd_fast "${rotated[@]}" --set 'quant={format="q4_1",init="mse",round_scales="f32"}' \
  --set 'calibration={method="gptq",rows=128,act_order=true,asymmetric=0.25}' "${halfgen[@]}" \
  --set "$int4_blockwise" \
  --set train.lr=1e-4 --set train.scale_lr=1e-5 --set loss.ce_weight=0
row q3k_rot_gptaq_half "${rotated[@]}" --set 'quant={format="q3_k",init="mse",round_scales="f32"}' \
  --set 'calibration={method="gptq",rows=128,act_order=true,asymmetric=0.5}' --set "$selfgen_source" \
  --set 'data.mix={chat=0.25,math=0.125,code=0.05,text=0.075,generated=0.5}'
[ "$only" = "  " ] || exit 0
python3 - $out <<'PY'
# The table, every cell read from the runs' files.
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
def load(p):
    return json.loads(p.read_text()) if p.exists() else None
def gguf(name):
    r = load(out / f"{name}.export.json")  # written by qat export beside the GGUF
    return f"{r['file_bytes'] / 1e6:.1f} MB" if r else "—"
print("| model | stage | wikitext-2 ppl | × baseline | val loss | tokens in the stage | stage time | bits/weight (linears) | GGUF |")
print("|---|---|---|---|---|---|---|---|---|")
base = None
for name, label in [("int4g32_rtn", "INT4 g32 (Q4_0-exact)"), ("int4g32_gptq", "INT4 g32 (Q4_0-exact)"), ("int4g32_recipe", "INT4 g32 (Q4_0-exact)"), ("q2k_rtn", "Q2_K format"), ("q2k_recipe", "Q2_K format"), ("q2k_asym_recipe", "Q2_K asymmetric (q2_k_asym)"),
                    ("q2k_mix_recipe", "Q2_K format, embeddings Q4_0"), ("q2k_asym_curve", "Q2_K asymmetric, 150 KD steps"),
                    ("q2k_asym_5m", "Q2_K asymmetric, 2,400 KD steps"), ("q2k_asym_1m", "Q2_K asymmetric, 400 KD steps at lr 2e-4"),
                    ("q2k_asym_selfgen", "Q2_K asymmetric, half the data sampled from the original, 300 KD steps"),
                    ("int4g32_gptq_selfgen", "INT4 g32, half the rows sampled"), ("int4g32_gptq_selfgen_only", "INT4 g32, all rows sampled"),
                    ("int4g32_gptq_selfgen_256", "INT4 g32, half of 256 rows sampled"), ("int4g32_gptq_selfgen_refit", "INT4 g32, half the rows sampled, scales refitted"),
                    ("int4g32_selfgen_recipe", "INT4 g32, half the rows sampled, 100 KD steps"), ("int4g32_selfgen_kdonly", "INT4 g32, half the rows sampled, 100 steps of KD alone"), ("q3k_selfgen_recipe", "format q3_k, half the rows sampled, 60 KD steps"),
                    ("q3k_down_only_gptq", "Q3_K down_proj only (other linears as shipped), half the rows sampled"), ("q3k_wide_only_gptq", "INT3 g32 576-wide matrices only (down_proj as shipped), half the rows sampled"),
                    ("q3k_asym_wide_gptq", "format q3_k with asymmetric INT3 g32 (Q4_1) 576-wide matrices, half the rows sampled"),
                    ("q3k_gptaq", "format q3_k, half the rows sampled, asymmetric calibration 1"), ("q3k_gptaq_half", "format q3_k, half the rows sampled, asymmetric calibration 0.5"), ("q3k_gptaq_quarter", "format q3_k, half the rows sampled, asymmetric calibration 0.25"),
                    ("int4g32_gptaq", "INT4 g32, half the rows sampled, asymmetric calibration 1"), ("int4g32_gptaq_half", "INT4 g32, half the rows sampled, asymmetric calibration 0.5"),
                    ("int4g32_gptaq_quarter", "INT4 g32, half the rows sampled, asymmetric calibration 0.25"),
                    ("int4g32_gptaq_recipe", "INT4 g32, half the rows sampled, asymmetric calibration 0.25, 100 KD steps"),
                    ("int4g32_gptaq_kd_fast", "INT4 g32, half the rows sampled, asymmetric calibration 0.25, 100 steps of KD alone at lr 1e-4"),
                    ("int4g32_rot_gptaq_quarter", "rotated, INT4 g32, asymmetric calibration 0.25"), ("int4g32_rot_kd_fast", "rotated, INT4 g32, 100 steps of KD alone at lr 1e-4"),
                    ("int4g32_rot_kd_long", "rotated, INT4 g32, 200 steps of KD alone at lr 1e-4"), ("q4_1_rot_gptaq_quarter", "rotated, asymmetric INT4 g32 (Q4_1), asymmetric calibration 0.25"),
                    ("q4_1_rot_kd_fast", "rotated, Q4_1, 100 steps of KD alone at lr 1e-4"), ("q3k_rot_gptaq_half", "rotated, format q3_k, asymmetric calibration 0.5"),
                    ("int4g32_gptaq_bw_long", "INT4 g32, as the row above with block-wise on 128 rows x 6 epochs at lr 2e-4")]:
    run = out / name
    s = load(run / "summary.json")
    if s is None:
        print(f"| {label} | {name}: not run or not finished | | | | | | | |")
        continue
    quant = load(run / "final" / "qat_quant.json")  # absent where the final model was deleted to save disk
    bits = f"{quant['bits_per_weight_quantized']:.3f}" if quant else "—"
    if base is None:
        fp = s["fp_eval"]
        base = fp["ppl/wikitext2_test"]
        print(f"| SmolLM2-135M-Instruct as shipped (Q4_1) | — | {base:.2f} | 1.00 | {fp['val_loss']:.3f} | — | — | 16 | — |")
    stages = []
    cal, bw = load(run / "calibration.json"), load(run / "blockwise.json")
    if cal:
        stages.append((f"GPTQ ({cal['rows']} rows)", cal.get("eval", s["first_eval"]), cal["tokens"], cal["seconds"]))
    if bw:
        stages.append((f"+ block-wise ({bw['rows']} rows)", bw.get("eval", s["first_eval"]), bw["tokens"], bw["seconds"]))
    if not stages:
        stages.append(("round-to-nearest", s["first_eval"], 0, 0))
    if s["steps"] > 0:
        stages.append((f"+ CE + CAKLD, {s['steps']} steps", s["final_eval"], s["tokens"], s["wall_seconds"]))
    for i, (stage, ev, tokens, secs) in enumerate(stages):
        ppl = ev["ppl/wikitext2_test"]
        last = i == len(stages) - 1
        took = f"{secs / 60:.1f} min" if secs else "—"
        print(f"| {label} | {stage} | {ppl:.4g} | {ppl / base:.3g} | {ev['val_loss']:.3f} | {tokens:,} | {took} | {bits} | {gguf(name) if last else ''} |")
# The curves: every evaluation of the q2k_asym_curve, q2k_asym_5m, q2k_asym_1m, q2k_asym_selfgen, int4g32_selfgen_recipe and q3k_selfgen_recipe runs
# (also while one is still running) against the tokens of all stages.
for curve in (out / "q2k_asym_curve", out / "q2k_asym_5m", out / "q2k_asym_1m", out / "q2k_asym_selfgen", out / "int4g32_selfgen_recipe", out / "int4g32_selfgen_kdonly", out / "q3k_selfgen_recipe", out / "int4g32_gptaq_recipe", out / "int4g32_gptaq_kd_fast", out / "int4g32_gptaq_bw_long",
              out / "int4g32_rot_kd_fast", out / "int4g32_rot_kd_long", out / "q4_1_rot_kd_fast"):
  if (curve / "metrics.jsonl").exists() and base:
    before = sum(load(curve / f)["tokens"] for f in ("calibration.json", "blockwise.json") if (curve / f).exists())
    print()
    print(f"{curve.name}:")
    print()
    print("| KD step | KD tokens | tokens of all stages | wikitext-2 ppl | × baseline | val loss |")
    print("|---|---|---|---|---|---|")
    for line in (curve / "metrics.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["type"] == "eval":
            ppl = r["eval"]["ppl/wikitext2_test"]
            print(f"| {r['step']} | {r['tokens']:,} | {before + r['tokens']:,} | {ppl:.2f} | {ppl / base:.2f} | {r['eval']['val_loss']:.3f} |")
PY
