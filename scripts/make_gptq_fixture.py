#!/usr/bin/env python3
"""Reference GPTQ results from the original implementation (IST-DASLab/gptq, `gptq.py` and
`quant.py`, unmodified), for the Rust test `gptq_matches_the_reference_implementation`.

The reference's `GPTQ.fasterquant` runs as published; only its quantizer's scale rule is set
to qat's INT4 `max` rule (scale = max|w|/7 per row or group, zero point 8, levels -8..7), so that
both sides round onto the same grid and the comparison checks the algorithm: Hessian
accumulation, dead columns, damping, the inverse Cholesky factor, the lazy block updates,
per-group scales from the updated weights, and act-order. Inputs are fed one token at a time so
that the reference's Hessian is 2/N·XᵀX with N = tokens, qat's normalisation.

    python3 -m venv .venv && .venv/bin/pip install torch numpy
    git clone <IST-DASLab/gptq> /tmp/gptq     # any checkout of the reference repository
    .venv/bin/python scripts/make_gptq_fixture.py /tmp/gptq

Writes crates/qat-quant/tests/fixtures/gptq_reference.json.
"""
import json
import pathlib
import sys
import types

import torch

OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/qat-quant/tests/fixtures/gptq_reference.json"

# gptq.py imports transformers only for its Conv1D type and calls torch.cuda.synchronize().
sys.modules["transformers"] = types.SimpleNamespace(Conv1D=type("Conv1D", (), {}))
torch.cuda.synchronize = lambda: None
sys.path.insert(0, sys.argv[1])
import gptq as ref  # noqa: E402


class QatInt4Max(ref.Quantizer):
    """The reference quantizer with qat's INT4 `max` scale: max|w|/7, levels -8..7."""

    def find_params(self, x, weight=False):
        self.maxq = torch.tensor(15)
        amax = x.abs().amax(dim=1).clamp_min(1e-8)
        self.scale = (amax / 7.0).reshape(-1, 1)
        self.zero = torch.full_like(self.scale, 8.0)


def f32s(t):
    """f32 values with the 9 significant digits that round-trip them."""
    return [float(f"{v:.9g}") for v in t.flatten().tolist()]


def case(name, out, cols, groupsize, actorder, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(out, cols, generator=g) * 0.05
    # Correlated inputs with unequal variances, one dead column, so that order and
    # compensation matter.
    mix = torch.randn(cols, cols, generator=g) / cols**0.5 + torch.eye(cols)
    x = torch.randn(128, cols, generator=g) @ mix * torch.linspace(0.2, 3.0, cols)
    x[:, 5] = 0.0
    layer = torch.nn.Linear(cols, out, bias=False)
    layer.weight.data = w.clone()
    q = ref.GPTQ(layer)
    for row in x:
        q.add_batch(row.reshape(1, cols), None)
    q.quantizer = QatInt4Max()
    q.quantizer.configure(4, perchannel=True, sym=True)
    q.fasterquant(blocksize=16, percdamp=0.01, groupsize=groupsize, actorder=actorder, static_groups=actorder and groupsize != -1)
    return {
        "name": name,
        "group_size": 0 if groupsize == -1 else groupsize,
        "act_order": actorder,
        "block_size": 16,
        "damp": 0.01,
        "out": out,
        "cols": cols,
        "weight": f32s(w),
        "inputs": f32s(x),
        "quantized": f32s(layer.weight.data),
    }


def main():
    cases = [
        case("channel", 12, 48, -1, False, 0),
        case("group16", 12, 48, 16, False, 1),
        case("channel_act_order", 12, 48, -1, True, 2),
        case("group16_act_order_static", 12, 48, 16, True, 3),
        case("group8_inside_blocks", 12, 48, 8, False, 4),
        case("group32_across_blocks", 12, 64, 32, False, 5),
    ]
    OUT.write_text(json.dumps({"source": "IST-DASLab/gptq gptq.py fasterquant (commit 2d65066e), INT4 max|w|/7 scale", "cases": cases}))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
