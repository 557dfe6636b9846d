#!/usr/bin/env python3
"""PyTorch's matrix-product throughput at the shapes of crates/qat-train/examples/matmul_shapes.rs
(same thread count: --threads, default torch's)."""
import sys
import time

import torch

if len(sys.argv) > 1:
    torch.set_num_threads(int(sys.argv[1]))
print("threads", torch.get_num_threads())
tokens = 512
for name, out, inp in [("q/o_proj", 576, 576), ("k/v_proj", 192, 576), ("gate/up_proj", 1536, 576), ("down_proj", 576, 1536), ("lm_head", 49152, 576)]:
    x, w, g = torch.rand(tokens, inp), torch.rand(out, inp), torch.rand(tokens, out)
    line = f"{name:<14} [{tokens}x{inp}]x[{inp}x{out}]"
    for what, f in [("x·Wᵀ", lambda: x @ w.T), ("g·W", lambda: g @ w), ("gᵀ·x", lambda: g.T @ x)]:
        f()
        t = time.perf_counter()
        for _ in range(5):
            f()
        s = (time.perf_counter() - t) / 5
        line += f"  {what} {2 * tokens * inp * out / s / 1e9:.1f}"
    print(line + "  GFLOP/s")
