#!/usr/bin/env python3
"""Reference gradients of the SEQ / ternary / LSQ quantizers from PyTorch, written as
torch.autograd.Functions whose backward is ParetoQ's (`StretchedElasticQuant` and
`LsqBinaryTernaryExtension` in facebookresearch/ParetoQ models/utils_quant.py, per-row scales),
re-expressed from shared/docs/quantization.md; and of the asymmetric LSQ+ quantizer (Bhalgat et
al. 2020: learned step and offset, both gradients scaled by ParetoQ's γ).

Writes crates/qat-quant/tests/fixtures/paretoq_grads.json; the Rust test `paretoq_reference`
compares qat's autodiff gradients with it.

    .venv/bin/python scripts/make_quant_fixtures.py
"""
import json
import math
import pathlib

import torch

OUT = pathlib.Path(__file__).resolve().parent.parent / "crates/qat-quant/tests/fixtures/paretoq_grads.json"
CLIP = 0.99


class StretchedElastic(torch.autograd.Function):
    """bits = 0 means ternary (n_levels 1.5, no shift); 2 and 3 are SEQ."""

    @staticmethod
    def forward(ctx, w, alpha, bits):
        n_levels, shift = (1.5, 0.0) if bits == 0 else (2 ** (bits - 1), 0.5)
        q_int = 1 if bits == 0 else 2 ** (bits - 1) - 1
        ctx.save_for_backward(w, alpha)
        ctx.other = (n_levels, shift, 1.0 / math.sqrt(w.numel() * max(q_int, 1)))
        q = (torch.round(torch.clamp(w / alpha, -CLIP, CLIP) * n_levels - shift) + shift) / n_levels
        return q * alpha

    @staticmethod
    def backward(ctx, g):
        w, alpha = ctx.saved_tensors
        n_levels, shift, gamma = ctx.other
        qp = (n_levels - shift) / n_levels
        u = w / alpha
        small, big = (u < -CLIP).float(), (u > CLIP).float()
        mid = 1.0 - small - big
        q = (torch.round(torch.clamp(u, -CLIP, CLIP) * n_levels - shift) + shift) / n_levels
        ga = ((-qp) * small + qp * big + mid * (q - u)) * g * gamma
        return mid * g, ga.sum(dim=-1, keepdim=True), None


class Lsq(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, alpha, bits):
        qn, qp = 2 ** (bits - 1), 2 ** (bits - 1) - 1
        ctx.save_for_backward(w, alpha)
        ctx.other = (qn, qp, 1.0 / math.sqrt(w.numel() * qp))
        return (w / alpha).round().clamp(-qn, qp) * alpha

    @staticmethod
    def backward(ctx, g):
        w, alpha = ctx.saved_tensors
        qn, qp, gamma = ctx.other
        u = w / alpha
        small, big = (u < -qn).float(), (u > qp).float()
        mid = 1.0 - small - big
        ga = ((-qn) * small + qp * big + mid * (u.round() - u)) * g * gamma
        return mid * g, ga.sum(dim=-1, keepdim=True), None


class LsqPlus(torch.autograd.Function):
    """ŵ = s·clamp(round((w − m)/s), 0, 2^b − 1) + m with per-row (s, m)."""

    @staticmethod
    def forward(ctx, w, s, m, bits):
        qmax = 2**bits - 1
        ctx.save_for_backward(w, s, m)
        ctx.other = (qmax, 1.0 / math.sqrt(w.numel() * qmax))
        return ((w - m) / s).round().clamp(0, qmax) * s + m

    @staticmethod
    def backward(ctx, g):
        w, s, m = ctx.saved_tensors
        qmax, gamma = ctx.other
        u = (w - m) / s
        small, big = (u < 0).float(), (u > qmax).float()
        mid = 1.0 - small - big
        gs = (qmax * big + mid * (u.round() - u)) * g * gamma
        gm = (small + big) * g * gamma
        return mid * g, gs.sum(dim=-1, keepdim=True), gm.sum(dim=-1, keepdim=True), None


def asym_case(w, g, bits):
    lo, hi = w.amin(1, keepdim=True), w.amax(1, keepdim=True)
    s0 = (hi - lo) * 0.8 / (2**bits - 1)
    m0 = lo + (hi - lo) * 0.1
    wv, sv, mv = w.clone().requires_grad_(True), s0.clone().requires_grad_(True), m0.clone().requires_grad_(True)
    out = LsqPlus.apply(wv, sv, mv, bits)
    (out * g).sum().backward()
    pairs = lambda a, b: torch.cat([a, b], dim=1).flatten().tolist()
    return {"alpha": pairs(s0, m0), "w_hat": out.detach().tolist(), "grad_w": wv.grad.tolist(), "grad_alpha": pairs(sv.grad, mv.grad)}


def main():
    gen = torch.Generator().manual_seed(1)
    w = torch.randn(6, 32, generator=gen, dtype=torch.float64) * 0.05
    g = torch.randn(6, 32, generator=gen, dtype=torch.float64)
    cases = {}
    for name, fn, bits, alpha0 in [
        ("seq2", StretchedElastic, 2, w.abs().amax(1, keepdim=True) * 0.8),
        ("seq3", StretchedElastic, 3, w.abs().amax(1, keepdim=True) * 0.7),
        ("ternary", StretchedElastic, 0, w.abs().amax(1, keepdim=True) * 0.6),
        ("int4", Lsq, 4, w.abs().amax(1, keepdim=True) / 7 * 0.8),
        ("int2", Lsq, 2, w.abs().amax(1, keepdim=True) * 0.6),
    ]:
        wv = w.clone().requires_grad_(True)
        av = alpha0.clone().requires_grad_(True)
        out = fn.apply(wv, av, bits)
        (out * g).sum().backward()
        cases[name] = {
            "alpha": av.detach().flatten().tolist(),
            "w_hat": out.detach().tolist(),
            "grad_w": wv.grad.tolist(),
            "grad_alpha": av.grad.flatten().tolist(),
        }
    cases["asym4"] = asym_case(w, g, 4)
    cases["asym2"] = asym_case(w, g, 2)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"torch": torch.__version__, "w": w.tolist(), "g": g.tolist(), "cases": cases}))
    print("wrote", OUT)


if __name__ == "__main__":
    main()
