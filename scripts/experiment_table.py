#!/usr/bin/env python3
"""Markdown table of finished qat runs, read from their run directories (summary.json,
config.toml, final/qat_quant.json, and optional export reports).

    python3 scripts/experiment_table.py [--fp-label="starting model"] LABEL=RUN_DIR [LABEL=RUN_DIR ...]

The first run's full-precision evaluation gives the FP row. Columns: evaluation keys present in
the summaries (val loss → perplexity, wikitext perplexity, HellaSwag, MMLU), average bits per
weight, GGUF size when RUN_DIR/export.gguf exists, training tokens, wall time.
"""
import json
import math
import pathlib
import sys
import tomllib


def fmt(v, digits=3):
    return "—" if v is None else f"{v:.{digits}f}"


def row(label, ev, bits, gguf, tokens, wall, keys):
    cells = [label]
    for k in keys:
        v = ev.get(k)
        if k == "val_loss" and v is not None:
            v = math.exp(v)
        cells.append(fmt(v, 3 if "acc" in k else 2))
    cells += [fmt(bits, 2) if bits else "16", gguf or "—", tokens, wall]
    return "| " + " | ".join(str(c) for c in cells) + " |"


def main():
    fp_label = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--fp-label=")), "starting model")
    args = [a for a in sys.argv[1:] if "=" in a and not a.startswith("--")]
    runs = [(a.split("=", 1)[0], pathlib.Path(a.split("=", 1)[1])) for a in args]
    summaries = [(label, d, json.loads((d / "summary.json").read_text())) for label, d in runs]
    keys = [k for k in ["val_loss", "ppl/wikitext2_test", "hellaswag/acc_norm", "mmlu/acc"] if any(k in s["final_eval"] for _, _, s in summaries)]
    names = {"val_loss": "val ppl", "ppl/wikitext2_test": "wikitext-2 ppl", "hellaswag/acc_norm": "HellaSwag acc_norm", "mmlu/acc": "MMLU acc"}
    print("| model | " + " | ".join(names[k] for k in keys) + " | bits/weight (linears) | GGUF bytes | training tokens | wall s |")
    print("|---|" + "---|" * (len(keys) + 4))
    fp = summaries[0][2]["fp_eval"]
    print(row(fp_label, fp, None, None, 0, 0, keys))
    for label, d, s in summaries:
        q = json.loads((d / "final" / "qat_quant.json").read_text())
        gguf = d / "export.gguf"
        size = f"{gguf.stat().st_size:,}" if gguf.exists() else None
        print(row(label, s["final_eval"], q.get("bits_per_weight_quantized"), size, s["tokens"], f"{s['wall_seconds']:.0f}", keys))


if __name__ == "__main__":
    main()
