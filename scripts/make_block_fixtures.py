#!/usr/bin/env python3
"""Q2_K blocks with arbitrary scale and min nibbles, dequantized by gguf-py (the reference
Python implementation of ggml's block formats), for the Rust test
`q2_k_blocks_match_gguf_py` in crates/qat-gguf. The k-quant export of qat writes per-group
sub-scales (not the constant 0x32 byte of per-channel SEQ-2), so the reader must follow ggml's
layout for every nibble; these blocks exercise all of them.

    python3 -m venv .venv && .venv/bin/pip install gguf numpy
    .venv/bin/python scripts/make_block_fixtures.py

Also blocks of every other quantized type qat reads or writes (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0,
Q3_K, Q4_K, Q5_K, Q6_K, TQ2_0) with arbitrary bytes, for `block_types_match_gguf_py`.

Writes crates/qat-gguf/tests/fixtures/q2_k_gguf_py.json and blocks_gguf_py.json.
"""
import json
import pathlib

import numpy as np
from gguf import GGMLQuantizationType
from gguf.quants import dequantize

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "crates/qat-gguf/tests/fixtures"
OUT = FIXTURES / "q2_k_gguf_py.json"


def main():
    rng = np.random.default_rng(0)
    blocks = []
    for b in range(8):
        scales = rng.integers(0, 256, 16, dtype=np.uint8)
        qs = rng.integers(0, 256, 64, dtype=np.uint8)
        d = np.array([rng.uniform(1e-4, 0.05)], dtype=np.float16)
        dmin = np.array([rng.uniform(1e-4, 0.05)], dtype=np.float16)
        blocks.append(np.concatenate([scales, qs, d.view(np.uint8), dmin.view(np.uint8)]))
    raw = np.concatenate(blocks)
    values = dequantize(raw, GGMLQuantizationType.Q2_K).astype(np.float32)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"source": "gguf-py gguf.quants.dequantize, Q2_K", "bytes": raw.tobytes().hex(), "values": [float(f"{v:.9g}") for v in values.tolist()]}))
    print(f"wrote {OUT}")

    # 32-weight blocks: f16 d (and m), then arbitrary code bytes (qh and nibbles).
    types = {}
    for name, ty, code_bytes, has_min in [("Q4_1", GGMLQuantizationType.Q4_1, 16, True), ("Q5_0", GGMLQuantizationType.Q5_0, 20, False), ("Q5_1", GGMLQuantizationType.Q5_1, 20, True)]:
        blocks = []
        for b in range(8):
            head = [np.array([rng.uniform(1e-4, 0.05)], dtype=np.float16)]
            if has_min:
                head.append(np.array([rng.uniform(-0.2, 0.1)], dtype=np.float16))
            blocks.append(np.concatenate([h.view(np.uint8) for h in head] + [rng.integers(0, 256, code_bytes, dtype=np.uint8)]))
        raw = np.concatenate(blocks)
        values = dequantize(raw, ty).astype(np.float32)
        types[name] = {"bytes": raw.tobytes().hex(), "values": [float(f"{v:.9g}") for v in values.tolist()]}
    # Q4_0 / Q8_0: f16 d first; Q6_K / TQ2_0: f16 d last.
    for name, ty, code_bytes, d_first in [("Q4_0", GGMLQuantizationType.Q4_0, 16, True), ("Q8_0", GGMLQuantizationType.Q8_0, 32, True),
                                          ("Q6_K", GGMLQuantizationType.Q6_K, 208, False), ("TQ2_0", GGMLQuantizationType.TQ2_0, 64, False)]:
        blocks = []
        for b in range(8):
            d = np.array([rng.uniform(1e-4, 0.05)], dtype=np.float16).view(np.uint8)
            codes = rng.integers(0, 256, code_bytes, dtype=np.uint8)
            blocks.append(np.concatenate([d, codes] if d_first else [codes, d]))
        raw = np.concatenate(blocks)
        values = dequantize(raw, ty).astype(np.float32)
        types[name] = {"bytes": raw.tobytes().hex(), "values": [float(f"{v:.9g}") for v in values.tolist()]}
    # Q3_K: arbitrary hmask, codes and packed 6-bit scales (108 bytes), then f16 d.
    blocks = [np.concatenate([rng.integers(0, 256, 108, dtype=np.uint8), np.array([rng.uniform(1e-4, 0.05)], dtype=np.float16).view(np.uint8)]) for _ in range(8)]
    raw = np.concatenate(blocks)
    values = dequantize(raw, GGMLQuantizationType.Q3_K).astype(np.float32)
    types["Q3_K"] = {"bytes": raw.tobytes().hex(), "values": [float(f"{v:.9g}") for v in values.tolist()]}
    # Q4_K / Q5_K: f16 d and dmin, then arbitrary packed 6-bit scales and mins, (qh,) nibbles.
    for name, ty, code_bytes in [("Q4_K", GGMLQuantizationType.Q4_K, 140), ("Q5_K", GGMLQuantizationType.Q5_K, 172)]:
        blocks = [np.concatenate([np.array([rng.uniform(1e-4, 0.05), rng.uniform(1e-4, 0.05)], dtype=np.float16).view(np.uint8),
                                  rng.integers(0, 256, code_bytes, dtype=np.uint8)]) for _ in range(8)]
        raw = np.concatenate(blocks)
        values = dequantize(raw, ty).astype(np.float32)
        types[name] = {"bytes": raw.tobytes().hex(), "values": [float(f"{v:.9g}") for v in values.tolist()]}
    out = FIXTURES / "blocks_gguf_py.json"
    out.write_text(json.dumps({"source": "gguf-py gguf.quants.dequantize", "types": types}))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
