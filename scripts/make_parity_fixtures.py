#!/usr/bin/env python3
"""Tiny random checkpoints of every supported architecture plus transformers' logits for them.

Writes crates/qat-model/tests/fixtures/<model_type>/{config.json, model.safetensors, expected.json}.
The Rust test `hf_parity` loads each checkpoint with qat and compares logits (batched with right
padding, and incrementally with the KV cache) against these, which transformers computed.

    python3 -m venv .venv && .venv/bin/pip install torch transformers safetensors
    .venv/bin/python scripts/make_parity_fixtures.py
"""
import json
import pathlib

import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM

OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/qat-model/tests/fixtures"

COMMON = dict(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5,
              max_position_embeddings=64, bos_token_id=1, eos_token_id=2)

CONFIGS = {
    # Untied, Llama 3 RoPE frequency scaling.
    "llama": dict(tie_word_embeddings=False, rope_theta=10000.0,
                  rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                    high_freq_factor=4.0, original_max_position_embeddings=16)),
    # q/k/v biases, tied embeddings.
    "qwen2": dict(tie_word_embeddings=True, rope_theta=1000000.0),
    # q/k RMSNorm before RoPE; head_dim (24) independent of hidden/heads (16).
    "qwen3": dict(tie_word_embeddings=False, head_dim=24, rope_theta=1000000.0),
    # q/k RMSNorm after RoPE, dynamic-alpha RoPE base, tied.
    "hunyuan_v1_dense": dict(tie_word_embeddings=True, rope_theta=10000.0, head_dim=16,
                             rope_scaling=dict(type="dynamic", alpha=1000.0, factor=1.0), use_qk_norm=True),
}


def randomize(model, gen):
    """Weights of a realistic scale (HF init at std 0.02 makes logits nearly constant)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=gen))


def main():
    gen = torch.Generator().manual_seed(0)
    for model_type, extra in CONFIGS.items():
        cfg = AutoConfig.for_model(model_type, **COMMON, **extra)
        cfg._attn_implementation = "eager"
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).eval()
        randomize(model, gen)
        out = OUT / model_type
        out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(out, safe_serialization=True)
        lengths = [9, 6]
        ids = torch.randint(3, COMMON["vocab_size"], (2, max(lengths)), generator=gen)
        mask = torch.zeros_like(ids)
        for b, n in enumerate(lengths):
            mask[b, :n] = 1
            ids[b, n:] = 0
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits
        expected = {
            "transformers_version": transformers.__version__,
            "input_ids": ids.tolist(),
            "lengths": lengths,
            # Only real (unpadded) positions are compared.
            "logits": [logits[b, :n].tolist() for b, n in enumerate(lengths)],
        }
        (out / "expected.json").write_text(json.dumps(expected))
        for f in out.iterdir():
            if f.name not in ("config.json", "model.safetensors", "expected.json"):
                f.unlink()
        print(f"{model_type}: {sum(p.numel() for p in model.parameters())} params -> {out}")


if __name__ == "__main__":
    main()
