#!/usr/bin/env python3
"""Whole-task zero-shot accuracies of an HF model from lm-evaluation-harness 0.4.13 itself, on
the benchmark files of ../shared/data/eval (scripts/lm_eval_local.py), to put beside
`qat eval --tasks …` on the same items. Prints one JSON object: task → acc, acc_stderr,
acc_norm, n.

    python3 scripts/lm_eval_tasks.py MODEL_DIR --tasks arc_easy,arc_challenge,piqa,winogrande [--shared ../shared] [--limit N]
"""
import argparse, json, sys, tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import lm_eval_local as L  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("model")
ap.add_argument("--tasks", required=True)
ap.add_argument("--shared", default="../shared")
ap.add_argument("--limit", type=int, default=None)
ap.add_argument("--batch-size", type=int, default=16)
a = ap.parse_args()
tmp = Path(tempfile.mkdtemp())
names = {t: L.shared_task(tmp, Path(a.shared).resolve(), t, a.limit) for t in a.tasks.split(",")}
res = L.evaluate(Path(a.model).resolve(), list(names.values()), tmp, batch_size=a.batch_size)
out = {}
for name, task in names.items():
    r = res["results"][task]
    out[name] = {"acc": r["acc,none"], "acc_stderr": r["acc_stderr,none"], "acc_norm": r.get("acc_norm,none"), "n": res["n-samples"][task]["effective"]}
print(json.dumps({"lm_eval": L.lm_eval.__version__, "model": a.model, "tasks": out}))
