"""lm-evaluation-harness (0.4.13) on the benchmark files of ../shared/data/eval, with lm-eval's
own task definitions: the official YAMLs of arc_easy, arc_challenge, piqa, winogrande,
hellaswag, mmlu_abstract_algebra and lambada_openai are included unchanged, only their dataset
pointed at local JSONL files, into which llm-foundry's layouts are turned back into each
dataset's original fields. Used by scripts/make_mc_fixture.py (the parity fixture) and
scripts/lm_eval_tasks.py (whole-task accuracies of a real model).

    /work/venv/bin/pip install lm_eval==0.4.13
"""
import csv
import json
from pathlib import Path

import lm_eval
from lm_eval.tasks import TaskManager

TASKS_DIR = Path(lm_eval.__file__).parent / "tasks"


def head_jsonl(path, n=None):
    rows = [json.loads(l) for l in open(path) if l.strip()]
    return rows if n is None else rows[:n]


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


def arc_doc(d):
    labels = "ABCDE"[: len(d["choices"])]
    return {"question": strip_question(d["query"]), "choices": {"text": d["choices"], "label": labels}, "answerKey": labels[d["gold"]]}


def piqa_doc(d):
    return {"goal": strip_question(d["query"]), "sol1": d["choices"][0], "sol2": d["choices"][1], "label": d["gold"]}


# task name -> (official yaml under lm_eval/tasks, file under data/eval, converter, split)
TASKS = {
    "arc_easy": ("arc/arc_easy.yaml", "mc/arc_easy.jsonl", arc_doc, "validation"),
    "arc_challenge": ("arc/arc_challenge.yaml", "mc/arc_challenge.jsonl", arc_doc, "validation"),
    "piqa": ("piqa/piqa.yaml", "mc/piqa.jsonl", piqa_doc, "validation"),
    "winogrande": ("winogrande/default.yaml", "mc/winogrande.jsonl", winogrande_doc, "validation"),
    "hellaswag": ("hellaswag/hellaswag.yaml", "hellaswag_val_1000.jsonl", lambda d: d, "validation"),
}


def write_task(tmp, name, yaml, docs, split):
    """A task `<name>_local` that includes lm-eval's `yaml` with its data replaced by `docs`."""
    data = Path(tmp) / f"{name}.jsonl"
    data.write_text("".join(json.dumps(d) + "\n" for d in docs))
    (Path(tmp) / f"{name}_local.yaml").write_text(
        f"include: {TASKS_DIR / yaml}\ntask: {name}_local\ntag: []\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    {split}: {data}\ntraining_split: null\nvalidation_split: {'validation' if split == 'validation' else 'null'}\n"
        f"test_split: {'test' if split == 'test' else 'null'}\nfewshot_split: null\n")
    return f"{name}_local"


def shared_task(tmp, shared, name, n=None):
    yaml, source, convert, split = TASKS[name]
    return write_task(tmp, name, yaml, [convert(d) for d in head_jsonl(Path(shared) / "data/eval" / source, n)], split)


def mmlu_task(tmp, shared, subject, n=None):
    rows = list(csv.reader(open(Path(shared) / f"data/eval/mmlu/test/{subject}_test.csv")))[:n]
    docs = [{"question": r[0], "choices": r[1:5], "answer": "ABCD".index(r[5])} for r in rows]
    return write_task(tmp, f"mmlu_{subject}", f"mmlu/default/mmlu_{subject}.yaml", docs, "test")


def lambada_task(tmp, name, texts):
    return write_task(tmp, name, "lambada/lambada_openai.yaml", [{"text": t} for t in texts], "test")


def evaluate(model, names, tmp, batch_size=1, log_samples=False):
    """lm-eval's simple_evaluate with HFLM in float32 on the CPU, zero-shot."""
    return lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={model},dtype=float32", tasks=names, num_fewshot=0, device="cpu",
        batch_size=batch_size, log_samples=log_samples, task_manager=TaskManager(include_path=str(tmp)))
