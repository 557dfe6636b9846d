#!/usr/bin/env python3
"""A Hugging Face checkpoint of a known model's shape with seeded random weights, for
throughput, memory and device-agreement checks where the real weights cannot be had (the GPU
machine reaches no network and takes at most 64 MiB from here).

  make_random_checkpoint.py smollm2-135m OUT [--tokenizer DIR] [--seed 0] [--dtype f32|bf16]
  make_random_checkpoint.py hy-1.8b OUT ...

Shapes: SmolLM2-135M-Instruct's config.json (Llama, 30 layers, hidden 576, GQA 9/3, vocab
49152, tied); HY-1.8B from shared/docs/formats.md §2 (hunyuan_v1_dense, hidden 2048, 32 layers,
16/4 heads of 128, intermediate 6144, vocab 120818, q/k RMSNorm, dynamic-alpha RoPE, tied).
Weights are N(0, 0.02²) (transformers' initializer_range) and norms 1. The numbers come from
numpy's PCG64 with one stream per tensor (seed, tensor index), which is the same on every
machine and numpy version, so a checkpoint made here and one made on the GPU machine are
identical; `--dtype bf16` rounds to nearest even. Parameter names and shapes come from
transformers' own model class, built on the meta device (no memory). --tokenizer copies
tokenizer.json / tokenizer_config.json from a directory. Prints a checksum (sum of |w| per
tensor, in f64) so two machines can confirm they made the same weights.
"""
import argparse
import concurrent.futures
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModelForCausalLM

SHAPES = {
    "smollm2-135m": ("llama", dict(
        hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, head_dim=64, vocab_size=49152, max_position_embeddings=8192,
        rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True, bos_token_id=1,
        eos_token_id=2, pad_token_id=2)),
    "hy-1.8b": ("hunyuan_v1_dense", dict(
        hidden_size=2048, intermediate_size=6144, num_hidden_layers=32, num_attention_heads=16,
        num_key_value_heads=4, head_dim=128, vocab_size=120818, max_position_embeddings=262144,
        rms_norm_eps=1e-5, rope_theta=10000.0, rope_scaling=dict(type="dynamic", alpha=1000.0, factor=1.0),
        use_qk_norm=True, tie_word_embeddings=True, bos_token_id=1, eos_token_id=120020,
        pad_token_id=120002)),
}


def tensor(index, name, shape, seed, dtype):
    """N(0, 0.02²) for matrices, ones for norm weights, from stream (seed, index)."""
    if name.endswith("norm.weight") or "layernorm" in name:
        w = np.ones(shape, dtype=np.float32)
    else:
        w = np.random.default_rng([seed, index]).standard_normal(shape, dtype=np.float32) * np.float32(0.02)
    t = torch.from_numpy(w)
    return t.to(torch.bfloat16) if dtype == "bf16" else t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("shape", choices=sorted(SHAPES))
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    ap.add_argument("--tokenizer")
    a = ap.parse_args()
    model_type, fields = SHAPES[a.shape]
    cfg = AutoConfig.for_model(model_type, **fields)
    cfg.dtype = "float32" if a.dtype == "f32" else "bfloat16"
    with torch.device("meta"):
        params = [(n, tuple(p.shape)) for n, p in AutoModelForCausalLM.from_config(cfg).named_parameters()]
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg.save_pretrained(out)
    # numpy's generators release the GIL: one thread per tensor uses every core.
    with concurrent.futures.ThreadPoolExecutor() as pool:
        tensors = dict(zip([n for n, _ in params], pool.map(lambda ip: tensor(ip[0], ip[1][0], ip[1][1], a.seed, a.dtype), enumerate(params))))
    checksum = sum(t.double().abs().sum().item() for t in tensors.values())
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    if a.tokenizer:
        for f in ["tokenizer.json", "tokenizer_config.json"]:
            if (Path(a.tokenizer) / f).exists():
                shutil.copy(Path(a.tokenizer) / f, out / f)
    n = sum(t.numel() for t in tensors.values())
    print(json.dumps({"shape": a.shape, "parameters": n, "dtype": a.dtype, "seed": a.seed, "checksum": round(checksum, 3)}))


if __name__ == "__main__":
    main()
