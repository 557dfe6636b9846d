#!/usr/bin/env python3
"""Reference log-likelihoods for qat-eval's multiple-choice scoring, from lm-evaluation-harness.

Runs lm-eval 0.4.13 itself (HFLM, float32, CPU, zero-shot) with its own task definitions
(scripts/lm_eval_local.py) on the first N items of arc_easy, piqa, winogrande, hellaswag and
mmlu_abstract_algebra from ../shared/data/eval, and lambada_openai's definition (last-word greedy
accuracy and perplexity) on the first paragraphs of TinyStories, written in qat's
`{context, continuation}` layout to crates/qat-eval/tests/fixtures/lambada_style_tinystories.jsonl;
stories260K is the model. Writes every request's summed log-likelihood and is-greedy flag and
the task metrics to crates/qat-eval/tests/fixtures/lm_eval_stories260k.json, which
crates/qat-eval/tests/lm_eval_parity.rs compares with qat.

    /work/venv/bin/pip install lm_eval==0.4.13
    python3 scripts/make_mc_fixture.py [--shared ../shared] [--n 24]
"""
import argparse, json, sys, tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import lm_eval_local as L  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--shared", default="../shared")
ap.add_argument("--n", type=int, default=24)
ap.add_argument("--out", default="crates/qat-eval/tests/fixtures/lm_eval_stories260k.json")
a = ap.parse_args()
shared = Path(a.shared).resolve()
tmp = Path(tempfile.mkdtemp())

names = {t: L.shared_task(tmp, shared, t, a.n) for t in ["arc_easy", "piqa", "winogrande", "hellaswag"]}
names["mmlu_abstract_algebra"] = L.mmlu_task(tmp, shared, "abstract_algebra", a.n)
# LAMBADA-style: paragraphs cut to their first 30 words; lm-eval's task splits off the last word.
paragraphs = [l.strip() for l in open(shared / "data/text/tinystories_val_subset.txt") if len(l.split()) >= 12][: a.n]
texts = [" ".join(p.split()[:30]) for p in paragraphs]
lambada = Path("crates/qat-eval/tests/fixtures/lambada_style_tinystories.jsonl")
lambada.write_text("".join(json.dumps({"context": " ".join(t.split(" ")[:-1]), "continuation": " " + t.split(" ")[-1]}) + "\n" for t in texts))
names["lambada_style_tinystories"] = L.lambada_task(tmp, "lambada_style_tinystories", texts)

res = L.evaluate(shared / "models/stories260k-hf", list(names.values()), tmp, log_samples=True)
out = {"lm_eval": L.lm_eval.__version__, "model": "stories260k-hf", "n": a.n, "tasks": {}}
for name, task in names.items():
    samples = sorted(res["samples"][task], key=lambda s: s["doc_id"])
    r = res["results"][task]
    out["tasks"][name] = {
        "acc": r["acc,none"],
        "acc_stderr": r["acc_stderr,none"],
        "acc_norm": r.get("acc_norm,none"),
        "perplexity": r.get("perplexity,none"),
        # Winogrande's target is the continuation text; its gold is the option the answer names.
        "items": [{"lls": [x[0][0] for x in s["resps"]], "greedy": [x[0][1] for x in s["resps"]],
                   "gold": s["target"] if isinstance(s["target"], int) else int(s["doc"]["answer"]) - 1 if "answer" in s["doc"] else 0}
                  for s in samples],
    }
    print(name, "acc", r["acc,none"], "acc_norm", r.get("acc_norm,none"), "items", len(samples))
Path(a.out).parent.mkdir(parents=True, exist_ok=True)
Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
print("wrote", a.out)
