"""Does reordering SwiGLU's intermediate channels help Q4_0 on down_proj?

The intermediate channels of a SwiGLU MLP can be permuted without changing the function: permute
the rows of gate_proj and up_proj and the columns of down_proj alike. Q4_0 shares one scale per
32 consecutive columns of a down_proj row, so the order decides which weights share a scale.
On SmolLM2 a few intermediate channels carry massive activations (layer 11: one channel holds
89% of the trace of down_proj's input Hessian) while their weights are small, so in their
original group they round coarsely. This script sorts the channels by their column's largest
weight, which groups small columns with small ones, and compares wikitext-2 perplexity (first
4,096 test tokens, eight non-overlapping windows of 512) of down_proj at Q4_0 round-to-nearest
(gguf-py's reference quantizer: f16 step = signed group maximum / -8, levels -8..7) with and
without the reordering, and checks that the reordering alone leaves the perplexity unchanged.

    python scripts/probe_mlp_permutation.py [MODEL_DIR] [--save OUT_DIR]   (torch, transformers, gguf; QAT_SHARED)

`--save OUT_DIR` also writes the reordered, unquantized model (safetensors, config, tokenizer)
for qat to quantize and evaluate.
"""
import argparse
import os
import shutil

import torch
from gguf import GGMLQuantizationType
from gguf.quants import dequantize, quantize
from transformers import AutoModelForCausalLM, AutoTokenizer

from probe_common import perplexity, wikitext_ids

torch.set_num_threads(1)
cli = argparse.ArgumentParser()
cli.add_argument("model", nargs="?", default="models/smollm2-135m-instruct")
cli.add_argument("--save", help="directory to write the reordered model to")
args = cli.parse_args()
path = args.model
tok = AutoTokenizer.from_pretrained(path)
ids = wikitext_ids(tok)


def ppl(model):
    return perplexity(model, ids)


def q4_0(w):
    """The values llama.cpp stores for `w` as Q4_0 (gguf-py's reference quantizer, round trip)."""
    q = dequantize(quantize(w.numpy(), GGMLQuantizationType.Q4_0), GGMLQuantizationType.Q4_0)
    return torch.from_numpy(q.copy())


def reorder(mlp):
    """Sort the intermediate channels by their down_proj column's largest |weight|."""
    order = torch.argsort(mlp.down_proj.weight.data.abs().amax(0))
    mlp.down_proj.weight.data = mlp.down_proj.weight.data[:, order].contiguous()
    mlp.gate_proj.weight.data = mlp.gate_proj.weight.data[order].contiguous()
    mlp.up_proj.weight.data = mlp.up_proj.weight.data[order].contiguous()


def load():
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


model = load()
n_layers = len(model.model.layers)
# Each down_proj's input on the first 512 tokens: the channel with the largest share of the
# Hessian diagonal's trace, its largest |x|, its weights against its Q4_0 group's, and the
# relative error of its column at Q4_0.
inputs = {}
hooks = [layer.mlp.down_proj.register_forward_hook(lambda mod, inp, out, i=i: inputs.__setitem__(i, inp[0][0].detach()))
         for i, layer in enumerate(model.model.layers)]
with torch.no_grad():
    model(ids[:512][None])
for h in hooks:
    h.remove()
for i in (11, 28):
    x, w = inputs[i], model.model.layers[i].mlp.down_proj.weight.data
    diag = (x * x).sum(0)
    c = int(diag.argmax())
    group = w[:, c // 32 * 32:c // 32 * 32 + 32]
    err = (q4_0(w)[:, c] - w[:, c]).norm() / w[:, c].norm()
    print(f"layer {i}: channel {c} holds {diag[c] / diag.sum():.1%} of the trace, max |x| {x[:, c].abs().max():.0f}, "
          f"mean |w| {w[:, c].abs().mean():.3f} against {group.abs().mean():.3f} in its group, Q4_0 relative error of the column {err:.1%}")
base = ppl(model)
print(f"original: {base:.4f}")
for layer in model.model.layers:
    reorder(layer.mlp)
print(f"every MLP reordered, not quantized: {ppl(model):.4f}")
if args.save:
    model.save_pretrained(args.save, safe_serialization=True)
    for name in os.listdir(path):
        if name.startswith("tokenizer"):
            shutil.copy(os.path.join(path, name), args.save)
    print(f"wrote {args.save}")
for layers, name in [(range(n_layers), "every down_proj"), ((11, 28), "down_proj of layers 11 and 28")]:
    for permute in (False, True):
        model = load()
        for i in layers:
            mlp = model.model.layers[i].mlp
            if permute:
                reorder(mlp)
            mlp.down_proj.weight.data = q4_0(mlp.down_proj.weight.data)
        p = ppl(model)
        print(f"{name} Q4_0 round-to-nearest, {'reordered' if permute else 'original order'}: {p:.4f} ({p / base:.4f}x)")
