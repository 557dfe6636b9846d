#!/usr/bin/env python3
"""Reference log-likelihoods for qat-eval's multiple-choice scoring, from lm-evaluation-harness.

Runs lm-eval 0.4.9 itself (HFLM, float32, CPU, zero-shot) with its own task definitions — the
official YAMLs of arc_easy, piqa, winogrande, hellaswag and mmlu_abstract_algebra, included
unchanged, only their dataset pointed at local files — on the first N items of the files in
../shared/data/eval (llm-foundry's layouts turned back into each dataset's original fields),
with stories260K as the model; and lambada_openai's definition (last-word greedy accuracy and
perplexity) on the first paragraphs of TinyStories, written in qat's `{context, continuation}`
layout to crates/qat-eval/tests/fixtures/lambada_style_tinystories.jsonl. Writes every
request's summed log-likelihood and is-greedy flag and the task metrics to
crates/qat-eval/tests/fixtures/lm_eval_stories260k.json, which
crates/qat-eval/tests/lm_eval_parity.rs compares with qat.

    /work/venv/bin/pip install lm_eval==0.4.13
    python3 scripts/make_mc_fixture.py [--shared ../shared] [--n 24]
"""
import argparse, csv, json, os, tempfile
from pathlib import Path

import lm_eval
from lm_eval.tasks import TaskManager

ap = argparse.ArgumentParser()
ap.add_argument("--shared", default="../shared")
ap.add_argument("--n", type=int, default=24)
ap.add_argument("--out", default="crates/qat-eval/tests/fixtures/lm_eval_stories260k.json")
a = ap.parse_args()
shared = Path(a.shared).resolve()
tasks_dir = Path(lm_eval.__file__).parent / "tasks"
tmp = Path(tempfile.mkdtemp())


def head_jsonl(path, n):
    return [json.loads(l) for l in open(path) if l.strip()][:n]


def winogrande_doc(d):
    """llm-foundry's partial-scoring item back to {sentence, option1, option2, answer}."""
    a, b = d["context_options"]
    k = 0
    while k < min(len(a), len(b)) and a[k] == b[k]:
        k += 1
    k = a.rfind(" ", 0, k) + 1  # the blank starts a word
    doc = {"sentence": a[:k] + "_ " + d["continuation"], "option1": a[k:], "option2": b[k:], "answer": str(d["gold"] + 1)}
    assert [doc["sentence"][: doc["sentence"].index("_")] + o for o in (doc["option1"], doc["option2"])] == d["context_options"], d
    return doc


def strip_question(q):
    assert q.startswith("Question: "), q
    return q[len("Question: "):]


mc = shared / "data/eval/mc"
docs = {
    "arc_easy": ("arc/arc_easy.yaml", "arc_easy.jsonl", [
        {"question": strip_question(d["query"]), "choices": {"text": d["choices"], "label": "ABCDE"[: len(d["choices"])]}, "answerKey": "ABCDE"[d["gold"]]}
        for d in head_jsonl(mc / "arc_easy.jsonl", a.n)]),
    "piqa": ("piqa/piqa.yaml", "piqa.jsonl", [
        {"goal": strip_question(d["query"]), "sol1": d["choices"][0], "sol2": d["choices"][1], "label": d["gold"]}
        for d in head_jsonl(mc / "piqa.jsonl", a.n)]),
    "winogrande": ("winogrande/default.yaml", "winogrande.jsonl", [winogrande_doc(d) for d in head_jsonl(mc / "winogrande.jsonl", a.n)]),
    "hellaswag": ("hellaswag/hellaswag.yaml", "../hellaswag_val_1000.jsonl", head_jsonl(shared / "data/eval/hellaswag_val_1000.jsonl", a.n)),
}
rows = list(csv.reader(open(shared / "data/eval/mmlu/test/abstract_algebra_test.csv")))[: a.n]
docs["mmlu_abstract_algebra"] = ("mmlu/default/mmlu_abstract_algebra.yaml", "mmlu/test/abstract_algebra_test.csv", [
    {"question": r[0], "choices": r[1:5], "answer": "ABCD".index(r[5])} for r in rows])

# LAMBADA-style: paragraphs cut to their first 30 words; lm-eval's task splits off the last word.
paragraphs = [l.strip() for l in open(shared / "data/text/tinystories_val_subset.txt") if len(l.split()) >= 12][: a.n]
texts = [" ".join(p.split()[:30]) for p in paragraphs]
lambada = Path("crates/qat-eval/tests/fixtures/lambada_style_tinystories.jsonl")
lambada.write_text("".join(json.dumps({"context": " ".join(t.split(" ")[:-1]), "continuation": " " + t.split(" ")[-1]}) + "\n" for t in texts))
docs["lambada_style_tinystories"] = ("lambada/lambada_openai.yaml", "tests/fixtures/lambada_style_tinystories.jsonl", [{"text": t} for t in texts])

names = []
for name, (yaml, source, items) in docs.items():
    data = tmp / f"{name}.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in items))
    split = "test" if name.startswith(("mmlu", "lambada")) else "validation"
    (tmp / f"{name}_local.yaml").write_text(
        f"include: {tasks_dir / yaml}\ntask: {name}_local\ntag: []\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    {split}: {data}\ntraining_split: null\nvalidation_split: {'null' if split == 'test' else 'validation'}\n"
        f"test_split: {'test' if split == 'test' else 'null'}\nfewshot_split: null\n")
    names.append(f"{name}_local")

model = shared / "models/stories260k-hf"
res = lm_eval.simple_evaluate(
    model="hf", model_args=f"pretrained={model},dtype=float32", tasks=names, num_fewshot=0, device="cpu",
    batch_size=1, log_samples=True, task_manager=TaskManager(include_path=str(tmp)))
out = {"lm_eval": lm_eval.__version__ if hasattr(lm_eval, "__version__") else "0.4.13", "model": "stories260k-hf", "n": a.n, "tasks": {}}
for name, (_, source, _) in docs.items():
    samples = sorted(res["samples"][f"{name}_local"], key=lambda s: s["doc_id"])
    r = res["results"][f"{name}_local"]
    out["tasks"][name] = {
        "source": source,
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
