"""Does rotating SmolLM2's residual stream help weight-only INT4/INT3 per group of 32?

QuaRot / SpinQuant ("R1", "R2") rotate a Llama's residual stream by an orthogonal matrix Q
after folding every RMSNorm's weight into the linears that read it: RMSNorm(x·Q) = RMSNorm(x)·Q,
so the rotated model computes the same function, and all of it merges into the weights
(embeddings E·Q; q, k, v, gate, up W·diag(g)·Q; o, down Qᵀ·W; an untied head E·diag(g)·Q) — a stock
Llama that llama.cpp runs. R2 rotates each value head by a 64×64 orthogonal matrix, undone in
o_proj's input. The rotation spreads SmolLM2's massive-activation channels and the weights'
outliers over all channels, which is what the 576-wide matrices' groups of 32 may need.

This compares wikitext-2 perplexity (first 4,096 test tokens, eight non-overlapping windows of
512; the reference probes' protocol) of every decoder linear quantized per group of 32 (Q4_0's
grid: levels -8..7, or INT3 -4..3, one MSE-searched scale per group), by round-to-nearest and by
GPTQ (act-order, damping 0.01, static groups, calibrated layer by layer on the first 64×256
tokens of corpus_en.txt), with and without the rotation.

    python scripts/probe_rotation.py [MODEL_DIR] [--bits 4 3] [--rotations none hadamard random]
"""
import argparse
import math
import os

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from probe_common import perplexity, wikitext_ids

cli = argparse.ArgumentParser()
cli.add_argument("model", nargs="?", default="models/smollm2-135m-instruct")
cli.add_argument("--gguf", help="load MODEL_DIR/GGUF (transformers dequantizes it) instead of safetensors")
cli.add_argument("--bits", type=int, nargs="+", default=[4])
cli.add_argument("--rotations", nargs="+", default=["none", "hadamard"])
cli.add_argument("--methods", nargs="+", default=["rtn", "gptq"])
cli.add_argument("--group", type=int, default=32)
cli.add_argument("--rows", type=int, default=64)
cli.add_argument("--threads", type=int, default=2)
args = cli.parse_args()
torch.set_num_threads(args.threads)
shared = os.environ.get("QAT_SHARED", "../shared")
extra = {"gguf_file": args.gguf} if args.gguf else {}
tok = AutoTokenizer.from_pretrained(args.model, **extra)
ids = wikitext_ids(tok)
cal = tok(open(os.path.join(shared, "data/text/corpus_en.txt")).read(), return_tensors="pt").input_ids[0]
cal = cal[: args.rows * 256].reshape(args.rows, 256)


def ppl(model):
    return perplexity(model, ids)


def hadamard(n, gen):
    """A random Hadamard matrix H·diag(±1)/√n; n = 2^k·12^j (576 = 4·12·12)."""
    h = torch.ones(1, 1, dtype=torch.float64)
    h2 = torch.tensor([[1.0, 1.0], [1.0, -1.0]], dtype=torch.float64)
    # Paley I for q = 11: S = [[0, 1ᵀ], [-1, Jacobsthal]], H12 = I + S.
    q = 11
    squares = {(i * i) % q for i in range(1, q)}
    jac = torch.tensor([[0.0 if i == j else (1.0 if (j - i) % q in squares else -1.0) for j in range(q)] for i in range(q)], dtype=torch.float64)
    s = torch.zeros(12, 12, dtype=torch.float64)
    s[0, 1:] = 1.0
    s[1:, 0] = -1.0
    s[1:, 1:] = jac
    h12 = torch.eye(12, dtype=torch.float64) + s
    m = n
    while m % 12 == 0 and m > 1:
        h = torch.kron(h, h12)
        m //= 12
    while m % 2 == 0:
        h = torch.kron(h, h2)
        m //= 2
    assert m == 1, n
    assert torch.allclose(h @ h.T, n * torch.eye(n, dtype=torch.float64))
    signs = torch.randint(0, 2, (n,), generator=gen, dtype=torch.float64) * 2 - 1
    return h * signs[None, :] / math.sqrt(n)


def random_orthogonal(n, gen):
    q, r = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r))[None, :]


def rotate(model, kind, seed=0):
    """Fold the norms, untie the head, rotate the residual stream by Q and each value head by R2."""
    gen = torch.Generator().manual_seed(seed)
    make = hadamard if kind == "hadamard" else random_orthogonal
    d = model.config.hidden_size
    hd = getattr(model.config, "head_dim", None) or d // model.config.num_attention_heads
    rq, r2 = make(d, gen), make(hd, gen)
    m = model.model
    head = (m.embed_tokens.weight.data.double() * m.norm.weight.data.double()[None, :])
    m.norm.weight.data.fill_(1.0)
    model.lm_head.weight = torch.nn.Parameter((head @ rq).float())
    model.config.tie_word_embeddings = False
    m.embed_tokens.weight = torch.nn.Parameter((m.embed_tokens.weight.data.double() @ rq).float())
    for layer in m.layers:
        a, f = layer.self_attn, layer.mlp
        for norm, lins in ((layer.input_layernorm, (a.q_proj, a.k_proj, a.v_proj)), (layer.post_attention_layernorm, (f.gate_proj, f.up_proj))):
            for lin in lins:
                lin.weight.data = ((lin.weight.data.double() * norm.weight.data.double()[None, :]) @ rq).float()
            norm.weight.data.fill_(1.0)
        for lin in (a.o_proj, f.down_proj):
            lin.weight.data = (rq.T @ lin.weight.data.double()).float()
        v = a.v_proj.weight.data.double().reshape(-1, hd, d)
        a.v_proj.weight.data = torch.einsum("ji,hjk->hik", r2, v).reshape(-1, d).float()
        o = a.o_proj.weight.data.double().reshape(d, -1, hd)
        a.o_proj.weight.data = torch.einsum("dhj,jk->dhk", o, r2).reshape(d, -1).float()


def group_scales(w, bits, group):
    """One symmetric scale per group (levels -2^(b-1)..2^(b-1)-1), the MSE-best of 40 clippings."""
    lo, hi = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    g = w.reshape(w.shape[0], -1, group)
    amax = g.abs().amax(-1, keepdim=True).clamp_min(1e-8)
    best, best_err = None, None
    for c in torch.linspace(0.5, 1.0, 40):
        s = amax * c / (-lo)
        err = ((torch.clamp(torch.round(g / s), lo, hi) * s - g) ** 2).sum(-1, keepdim=True)
        if best is None:
            best, best_err = s.clone(), err
        else:
            better = err < best_err
            best = torch.where(better, s, best)
            best_err = torch.where(better, err, best_err)
    return best.squeeze(-1), lo, hi  # [rows, groups]


def rtn(w, bits, group):
    s, lo, hi = group_scales(w, bits, group)
    s = s.repeat_interleave(group, 1)
    return torch.clamp(torch.round(w / s), lo, hi) * s


def gptq(w, h, bits, group, damp=0.01):
    """GPTQ with act-order and static groups (scales fitted on the original weights)."""
    w = w.double().clone()
    s, lo, hi = group_scales(w.float(), bits, group)
    s = s.double().repeat_interleave(group, 1)
    h = h.double().clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    perm = torch.argsort(torch.diag(h), descending=True)
    w, s, h = w[:, perm], s[:, perm], h[perm][:, perm]
    h += damp * torch.mean(torch.diag(h)) * torch.eye(h.shape[0], dtype=torch.float64)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    q = torch.zeros_like(w)
    for i in range(w.shape[1]):
        col = w[:, i]
        qc = torch.clamp(torch.round(col / s[:, i]), lo, hi) * s[:, i]
        q[:, i] = qc
        err = (col - qc) / hinv[i, i]
        w[:, i + 1:] -= err[:, None] * hinv[i, i + 1:][None, :]
    return q[:, torch.argsort(perm)].float()


def quantize(model, bits, method):
    layers = model.model.layers
    if method == "rtn":
        for layer in layers:
            for lin in linears(layer):
                lin.weight.data = rtn(lin.weight.data, bits, args.group)
        return
    # Layer by layer: inputs of layer i come from the already-quantized layers before it.
    cache = {}

    class Stop(Exception):
        pass

    def catch(mod, a, kw):
        cache.setdefault("x", []).append(a[0] if a else kw["hidden_states"])
        cache["kw"] = {k: v for k, v in kw.items() if k != "hidden_states"}
        raise Stop

    handle = layers[0].register_forward_pre_hook(catch, with_kwargs=True)
    with torch.no_grad():
        for row in cal:
            try:
                model(row[None], use_cache=False)
            except Stop:
                pass
    handle.remove()
    xs, kw = cache["x"], cache["kw"]
    for layer in layers:
        a, f = layer.self_attn, layer.mlp
        for group in ((a.q_proj, a.k_proj, a.v_proj), (a.o_proj,), (f.gate_proj, f.up_proj), (f.down_proj,)):
            hess = torch.zeros(group[0].in_features, group[0].in_features, dtype=torch.float64)

            def grab(mod, inp):
                x = inp[0].reshape(-1, inp[0].shape[-1]).double()
                hess.add_(x.T @ x)

            hook = group[0].register_forward_pre_hook(grab)
            with torch.no_grad():
                for x in xs:
                    layer(x, **kw)
            hook.remove()
            for lin in group:
                lin.weight.data = gptq(lin.weight.data, hess, bits, args.group)
        with torch.no_grad():
            xs = [first(layer(x, **kw)) for x in xs]


def first(out):
    return out[0] if isinstance(out, tuple) else out


def linears(layer):
    a, f = layer.self_attn, layer.mlp
    return (a.q_proj, a.k_proj, a.v_proj, a.o_proj, f.gate_proj, f.up_proj, f.down_proj)


def load(rotation):
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, **extra)
    if rotation != "none":
        rotate(model, rotation)
    return model


base = ppl(load("none"))
print(f"original: {base:.4f}", flush=True)
for rotation in args.rotations:
    if rotation != "none":
        print(f"{rotation} rotation, not quantized: {ppl(load(rotation)):.4f}", flush=True)
    for bits in args.bits:
        for method in args.methods:
            model = load(rotation)
            quantize(model, bits, method)
            p = ppl(model)
            print(f"INT{bits} g{args.group} {method}, rotation {rotation}: {p:.4f} ({p / base:.4f}x)", flush=True)
