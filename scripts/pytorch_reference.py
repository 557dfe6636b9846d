#!/usr/bin/env python3
"""PyTorch eager reference for qat's benchmarks: the same Hugging Face model, batch shape and
SEQ 2-bit fake quantizer (ParetoQ's StretchedElasticQuant backward, per-row α initialised to
max|W_row|) on every decoder linear.

  throughput:  pytorch_reference.py MODEL --mode forward|plain|qat|kd --batch B --seq-len T --iters N
               (kd: the qat step with CE + CAKLD distillation from the frozen unquantized model,
               whose no-grad forward pass is part of the step, as `qat bench --mode kd`)
  loss curve:  pytorch_reference.py MODEL --mode qat --track-steps 50 --text FILE --batch B --seq-len T --lr 1e-4

--device cuda runs on the GPU (synchronized before each clock read; peak memory from the CUDA
caching allocator); --dtype bf16 (f16) autocasts the matrix products to bf16 (f16) with f32 parameters and
optimizer state, as qat's `model.compute_dtype = "bf16"`; --attn picks transformers' attention
(eager: the composed softmax(QKᵀ)V; sdpa: PyTorch's fused kernels).

Prints one JSON object. One mode per process, so peak memory (ru_maxrss) is per mode.
"""
import contextlib
import argparse
import json
import math
import resource
import time

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

CLIP = 0.99


class StretchedElastic2(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, alpha):
        ctx.save_for_backward(w, alpha)
        q = (torch.round(torch.clamp(w / alpha, -CLIP, CLIP) * 2 - 0.5) + 0.5) / 2
        return q * alpha

    @staticmethod
    def backward(ctx, g):
        w, alpha = ctx.saved_tensors
        u = w / alpha
        small, big = (u < -CLIP).to(g.dtype), (u > CLIP).to(g.dtype)
        mid = 1 - small - big
        q = (torch.round(torch.clamp(u, -CLIP, CLIP) * 2 - 0.5) + 0.5) / 2
        ga = (-0.75 * small + 0.75 * big + mid * (q - u)) * g / math.sqrt(w.numel())
        return mid * g, ga.sum(-1, keepdim=True)


class SeqLinear(torch.nn.Module):
    def __init__(self, lin):
        super().__init__()
        self.weight = lin.weight
        self.bias = lin.bias
        self.alpha = torch.nn.Parameter(lin.weight.detach().abs().amax(1, keepdim=True).clamp_min(1e-8))

    def forward(self, x):
        return torch.nn.functional.linear(x, StretchedElastic2.apply(self.weight, self.alpha.clamp_min(1e-5)), self.bias)


def quantize(model):
    for layer in model.model.layers:
        for parent, names in [(layer.self_attn, ["q_proj", "k_proj", "v_proj", "o_proj"]), (layer.mlp, ["gate_proj", "up_proj", "down_proj"])]:
            for n in names:
                setattr(parent, n, SeqLinear(getattr(parent, n)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--mode", choices=["forward", "plain", "qat", "kd"], default="qat")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--iters", type=int, default=3)
    ap.add_argument("--track-steps", type=int, default=0)
    ap.add_argument("--text")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=["f32", "bf16", "f16"], default="f32")
    ap.add_argument("--attn", choices=["eager", "sdpa"], default="eager")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    cuda = dev.type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def autocast():
        if a.dtype != "f32":
            return torch.autocast(dev.type, dtype={"bf16": torch.bfloat16, "f16": torch.float16}[a.dtype])
        return contextlib.nullcontext()

    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32, attn_implementation=a.attn).to(dev)
    teacher = None
    if a.mode == "kd":
        teacher = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32, attn_implementation=a.attn).to(dev).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    if a.mode in ("qat", "kd"):
        quantize(model)
    n_params = sum(p.numel() for n, p in model.named_parameters() if not n.endswith("alpha"))
    B, T = a.batch, a.seq_len
    out = {"mode": a.mode, "batch": B, "seq_len": T, "torch": torch.__version__, "threads": torch.get_num_threads(),
           "device": torch.cuda.get_device_name(dev) if cuda else "cpu", "dtype": a.dtype, "attn": a.attn}
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    if a.track_steps:
        tok = AutoTokenizer.from_pretrained(a.model)
        ids = tok(open(a.text).read())["input_ids"]
        losses = []
        for s in range(a.track_steps):
            rows = [ids[(s * B + r) * T:(s * B + r) * T + T + 1] for r in range(B)]
            x = torch.tensor([r[:T] for r in rows], device=dev)
            y = torch.tensor([r[1:] for r in rows], device=dev)
            with autocast():
                logits = model(x).logits.float()
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        out["losses"] = losses
    else:
        vocab = model.config.vocab_size
        x = torch.tensor([[((b * T + t) * 7919 + 13) % vocab for t in range(T)] for b in range(B)], device=dev)
        y = torch.tensor([[((b * T + t) * 104729 + 7) % vocab for t in range(T)] for b in range(B)], device=dev)
        times = []
        for i in range(a.warmup + a.iters):
            sync()
            t0 = time.perf_counter()
            if a.mode == "forward":
                with torch.no_grad(), autocast():
                    model(x).logits.float().sum().item()
            else:
                with autocast():
                    logits = model(x).logits.float()
                loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
                if teacher is not None:
                    with torch.no_grad(), autocast():
                        lp_t = torch.log_softmax(teacher(x).logits.float(), -1)
                    lp_s = torch.log_softmax(logits, -1)
                    conf = lp_t.gather(-1, y.unsqueeze(-1)).squeeze(-1).exp()
                    kl = lambda log_p, log_q: torch.nn.functional.kl_div(log_q, log_p, log_target=True, reduction="none").sum(-1)
                    loss = loss + (conf * kl(lp_s, lp_t) + (1 - conf) * kl(lp_t, lp_s)).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            sync()
            times.append(time.perf_counter() - t0)
        per = sum(times[a.warmup:]) / a.iters
        out.update(seconds_per_iter=per, tokens_per_second=B * T / per,
                   model_gflops={"forward": 2, "kd": 8}.get(a.mode, 6) * n_params * B * T / per / 1e9)
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if cuda:
        out["peak_device_mib"] = torch.cuda.max_memory_reserved(dev) / 2**20
        out["peak_device_allocated_mib"] = torch.cuda.max_memory_allocated(dev) / 2**20
    print(json.dumps(out))


if __name__ == "__main__":
    main()
