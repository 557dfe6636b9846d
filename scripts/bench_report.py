#!/usr/bin/env python3
"""Formats scripts/bench_vs_pytorch.sh's measurements: reads lines `mode<TAB>qat JSON<TAB>PyTorch
JSON` on stdin and prints the Markdown table, the fake-quantization overhead of both, and qat's
distillation step by stage."""
import json
import sys

rows = [line.split("\t") for line in sys.stdin.read().splitlines() if line.strip()]
print()
print("| mode | qat tokens/s | PyTorch tokens/s | qat / PyTorch | qat model GFLOP/s | qat peak RSS MiB | PyTorch peak RSS MiB |")
print("|---|---|---|---|---|---|---|")
res = {}
for mode, q, p in rows:
    q, p = json.loads(q), json.loads(p)
    res[mode] = (q, p)
    qt, pt = q["tokens_per_second"], p["tokens_per_second"]
    print(f"| {mode} | {qt:.1f} | {pt:.1f} | {qt / pt:.2f} | {q['model_gflops']:.1f} | {q['peak_rss_mib']:.0f} | {p['peak_rss_mib']:.0f} |")
if "plain" in res and "qat" in res:
    (qp, pp), (qq, pq) = res["plain"], res["qat"]
    print()
    print(f"Fake-quantization overhead (QAT step time / plain step time): qat {qp['tokens_per_second'] / qq['tokens_per_second']:.3f}x, "
          f"PyTorch {pp['tokens_per_second'] / pq['tokens_per_second']:.3f}x.")
if "kd" in res:
    q = res["kd"][0]
    stages = ", ".join(f"{s['stage']} {s['seconds']:.2f} s ({100 * s['share']:.0f}%)" for s in q["stages"] if s["seconds"] > 0.0005)
    print()
    print(f"qat distillation step by stage: {stages}; every fake-quantized weight computed once, standalone: {q['fake_quant_seconds']:.2f} s.")
