#!/usr/bin/env python3
"""Builds the embedded default training data from what every machine with Python has: the
documentation (pydoc text) and the source code of the Python standard library. Deterministic
for a given Python installation; writes JSONL with a `text` field into datasets/generated/.

pydoc renders module-level values, among them `os.environ`: the environment is emptied before
rendering, so that neither the caller's variables (tokens, paths, `SHLVL`) leak into the training
data nor does the text (and with it the default job's calibration rows) change from one shell to
the next. Reprs that carry a memory address (`<object object at 0x7f…>`, `<PyDLL …, handle 7f…>`)
have it replaced by `...`, for the same reason: the address changes with every process; and the
user's home directory (in `site.USER_BASE`) is written as `~`.

    python3 scripts/make_default_data.py
"""
import json
import os
import pathlib
import pkgutil
import pydoc
import re
import sys
import sysconfig

OUT = pathlib.Path(__file__).resolve().parent.parent / "datasets" / "generated"
MODULES = sorted(m.name for m in pkgutil.iter_modules([sysconfig.get_paths()["stdlib"]])
                 if not m.name.startswith("_") and m.name not in {"antigravity", "this", "idlelib", "turtledemo", "tkinter", "test"})


def main():
    home = str(pathlib.Path.home())
    os.environ.clear()
    OUT.mkdir(parents=True, exist_ok=True)
    docs, code = [], []
    stdlib = pathlib.Path(sysconfig.get_paths()["stdlib"])
    for name in MODULES:
        try:
            text = pydoc.render_doc(name, renderer=pydoc.plaintext)
            text = re.sub(r"(at 0x|handle )[0-9a-fA-F]{6,}", r"\1...", text)
            if home != "/":
                text = text.replace(home, "~")
        except Exception:  # modules that cannot be imported here
            continue
        # One document per paragraph block of up to ~4000 characters.
        buf = ""
        for para in text.split("\n\n"):
            if len(buf) + len(para) > 4000 and buf:
                docs.append(buf)
                buf = ""
            buf += para + "\n\n"
        if buf.strip():
            docs.append(buf)
        src = stdlib / f"{name}.py"
        if src.exists():
            s = src.read_text(errors="replace")
            code.extend(s[i:i + 6000] for i in range(0, min(len(s), 60000), 6000))
    for fname, items in [("python_docs.jsonl", docs), ("python_code.jsonl", code)]:
        with open(OUT / fname, "w") as f:
            for t in items:
                f.write(json.dumps({"text": t}) + "\n")
        print(f"{OUT / fname}: {len(items)} documents (Python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
