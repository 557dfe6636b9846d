#!/usr/bin/env python3
"""Formats scripts/bench_vs_pytorch.sh's measurements: reads lines `mode<TAB>qat JSON<TAB>PyTorch
JSON` on stdin, one per round (qat and PyTorch measured one after the other), and prints the
Markdown table, the fake-quantization overhead of both, and qat's distillation step by stage.

Each side's figure is its median over the rounds; "qat / PyTorch" is the ratio of the medians,
with the lowest and highest ratio of one round's pair beside it (the machine is shared, and a
single pair can land on either side of a target). Memory is the median of the peaks; the stage
breakdown is that of qat's median round. The fake-quantization overhead is the median over the
rounds of each round's plain/QAT pair (the script runs a round's modes back to back)."""
import json
import statistics
import sys
from collections import defaultdict

rounds = defaultdict(list)
for line in sys.stdin.read().splitlines():
    if line.strip():
        mode, q, p = line.split("\t")
        rounds[mode].append((json.loads(q), json.loads(p)))


def tps(m):
    return m["tokens_per_second"]


def median_run(runs):
    """The run whose tokens/s is the median (the lower middle one for an even count)."""
    return sorted(runs, key=tps)[(len(runs) - 1) // 2]


n = max(len(r) for r in rounds.values())
print()
print("| mode | qat tokens/s | PyTorch tokens/s | qat / PyTorch | lowest–highest round | qat model GFLOP/s | qat peak RSS MiB | PyTorch peak RSS MiB |")
print("|---|---|---|---|---|---|---|---|")
for mode, pairs in rounds.items():
    qs, ps = [q for q, _ in pairs], [p for _, p in pairs]
    qt, pt = statistics.median(map(tps, qs)), statistics.median(map(tps, ps))
    ratios = [tps(q) / tps(p) for q, p in pairs]
    rss_q = statistics.median(q["peak_rss_mib"] for q in qs)
    rss_p = statistics.median(p["peak_rss_mib"] for p in ps)
    print(f"| {mode} | {qt:.1f} | {pt:.1f} | {qt / pt:.2f} | {min(ratios):.2f}–{max(ratios):.2f} | {median_run(qs)['model_gflops']:.1f} | {rss_q:.0f} | {rss_p:.0f} |")
print()
print(f"{n} rounds per mode; tokens/s are medians over the rounds.")
if "plain" in rounds and "qat" in rounds:
    pairs = list(zip(rounds["plain"], rounds["qat"]))
    q_over = [tps(plain) / tps(qat) for (plain, _), (qat, _) in pairs]
    p_over = [tps(plain) / tps(qat) for (_, plain), (_, qat) in pairs]
    print()
    print(f"Fake-quantization overhead (QAT step time / plain step time of the same round, median over {len(pairs)} rounds): "
          f"qat {statistics.median(q_over):.3f}x ({min(q_over):.3f}–{max(q_over):.3f}), "
          f"PyTorch {statistics.median(p_over):.3f}x ({min(p_over):.3f}–{max(p_over):.3f}).")
if "kd" in rounds:
    q = median_run([q for q, _ in rounds["kd"]])
    stages = ", ".join(f"{s['stage']} {s['seconds']:.2f} s ({100 * s['share']:.0f}%)" for s in q["stages"] if s["seconds"] > 0.0005)
    print()
    print(f"qat distillation step by stage (its median round): {stages}; every fake-quantized weight computed once, standalone: {q['fake_quant_seconds']:.2f} s.")
