#!/usr/bin/env python3
"""Markdown report of scripts/gpu_check.sh's results.jsonl.

  gpu_report.py RESULTS.jsonl "CPU_LOSSES"   (CPU_LOSSES: space-separated, or PENDING)

Throughput: tokens/s of qat (Burn Vulkan, bf16 autocast) and PyTorch eager (CUDA, bf16
autocast, sdpa attention) per mode and shape, their ratio, model FLOP/s as MFU against 989
TFLOP/s (H100/H200 SXM dense bf16), peak GPU memory: the allocator's reserve as each framework
reports it and the whole GPU's `memory.used` peak from nvidia-smi (same meter for both).
A `qat-composed` row (`qat bench --fake-quant composed`) is the QAT step with fake quantization
composed from tensor operations instead of the fused operation, on the same GPU.
Loss tracking: the GPU runs' per-step losses beside the CPU run's.
"""
import json
import sys

PEAK_BF16 = 989e12


def main():
    rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
    cpu = None if sys.argv[2] == "PENDING" else [float(x) for x in sys.argv[2].split()]
    bench = {}
    for r in rows:
        if "result" in r:
            res = r["result"]
            bench[(r["model"], res["batch"], res["seq_len"], res["mode"], r["who"])] = (res, r.get("smi_peak_mib"))
    keys = sorted({k[:4] for k in bench}, key=lambda k: (k[0], k[1] * k[2], ["forward", "plain", "qat", "kd"].index(k[3])))
    print("| model | batch | mode | qat tokens/s | PyTorch tokens/s | qat / PyTorch | qat MFU | PyTorch MFU | qat peak MiB (allocator / nvidia-smi) | PyTorch peak MiB (reserved / nvidia-smi) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    tps = {}
    for k in keys:
        cells = []
        for who in ["qat", "torch"]:
            res, smi = bench.get(k + (who,), ({"error": "not run"}, None))
            if "error" in res:
                cells.append(("failed: " + " ".join(str(res["error"]).split())[-160:], "", ""))
                continue
            tps[k + (who,)] = res["tokens_per_second"]
            mem = f"{res.get('peak_device_mib') or 0:.0f} / {smi if smi is not None else '—'}"
            cells.append((f"{res['tokens_per_second']:.0f}", f"{100 * res['model_gflops'] * 1e9 / PEAK_BF16:.1f}%", mem))
        q, p = tps.get(k + ("qat",)), tps.get(k + ("torch",))
        ratio = f"{q / p:.2f}×" if q and p else "—"
        print(f"| {k[0]} | {k[1]}×{k[2]} | {k[3]} | {cells[0][0]} | {cells[1][0]} | {ratio} | {cells[0][1]} | {cells[1][1]} | {cells[0][2]} | {cells[1][2]} |")
    print()
    for (model, b, t) in sorted({k[:3] for k in keys}):
        for who, name in [("qat", "qat"), ("torch", "PyTorch")]:
            plain, qat = tps.get((model, b, t, "plain", who)), tps.get((model, b, t, "qat", who))
            if plain and qat:
                print(f"- {model} {b}×{t}, {name}: QAT step / plain step time = {plain / qat:.2f}×")
    for k in keys:
        composed, fused = bench.get(k + ("qat-composed",)), tps.get(k + ("qat",))
        if composed:
            res = composed[0]
            if "error" in res:
                print(f"- {k[0]} {k[1]}×{k[2]} {k[3]}, qat with composed fake quantization: failed: {' '.join(str(res['error']).split())[-160:]}")
            else:
                ratio = f", fused / composed = {fused / res['tokens_per_second']:.2f}×" if fused else ""
                print(f"- {k[0]} {k[1]}×{k[2]} {k[3]}, qat with composed fake quantization (`--fake-quant composed`): {res['tokens_per_second']:.0f} tokens/s, {res['seconds_per_iter'] * 1e3:.0f} ms/step, peak {res.get('peak_device_mib') or 0:.0f} MiB{ratio}")
    for r in rows:
        if "result" in r and r["who"].startswith("qat") and "stages" in r["result"]:
            res = r["result"]
            parts = ", ".join(f"{s['stage']} {s['seconds'] * 1e3:.0f} ms" for s in res["stages"])
            print(f"- {r['who']} {r['model']} {res['mode']} {res['batch']}×{res['seq_len']}: {res['seconds_per_iter'] * 1e3:.0f} ms/step = {parts}")
    tracks = {r["track"]: r for r in rows if "track" in r}
    if tracks:
        print()
        names = list(tracks)
        print("| step | CPU f32 | " + " | ".join(f"GPU {n}" for n in names) + " | " + " | ".join(f"GPU {n} − CPU" for n in names) + " |")
        print("|---|---|" + "---|" * (2 * len(names)))
        curves = [tracks[n].get("losses", []) for n in names]
        fmt = lambda v: f"{v:.4f}" if v is not None else "—"
        at = lambda xs, i: xs[i] if xs is not None and i < len(xs) else None
        diff = lambda a, b: f"{a - b:+.4f}" if a is not None and b is not None else "—"
        for i in range(max([len(c) for c in curves] + [len(cpu or [])])):
            c, gs = at(cpu, i), [at(x, i) for x in curves]
            print(f"| {i + 1} | {fmt(c)} | " + " | ".join(fmt(g) for g in gs) + " | " + " | ".join(diff(g, c) for g in gs) + " |")
        for name, tr in tracks.items():
            tp = tr.get("tokens_per_second", [])
            if tp:
                print(f"\nGPU {name}: training tokens/s over the last 10 steps {sum(tp[-10:]) / len(tp[-10:]):.0f}; val loss {tr.get('val_loss')}")


if __name__ == "__main__":
    main()
