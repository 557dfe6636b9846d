#!/usr/bin/env python3
"""External check of `qat export --format gguf` for every architecture it writes, in llama.cpp.

* llama (with Llama 3 RoPE scaling, written as llama.cpp's `rope_freqs` tensor), qwen2, qwen3
  and hunyuan-dense: the tiny transformers checkpoints of crates/qat-model/tests/fixtures
  (made by scripts/make_parity_fixtures.py) are exported unquantized to F32 GGUF and run in
  llama-cpp-python; its logits must match transformers' (the fixture's expected.json) within
  1e-3. The fixtures have no tokenizer, so a 128-token byte-level one is added (llama.cpp needs a
  vocabulary to load; the check feeds token ids).
* SentencePiece vocabulary (llama.cpp's `llama` tokenizer): stories260K is exported the same
  way; llama.cpp must tokenize sample texts exactly like its tokenizer.json and reproduce
  llama2.c's greedy output (expected_greedy_200.txt).

Usage: .venv/bin/python scripts/check_gguf_archs.py [--qat target/release/qat] [--shared ../shared]
"""
import argparse
import json
import pathlib
import shutil
import subprocess
import sys
import tempfile

import numpy as np

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "crates/qat-model/tests/fixtures"
GGML_F32 = 0


def byte_level_tokenizer(n):
    """A byte-level BPE tokenizer.json whose vocabulary is GPT-2's symbols for bytes 0..n-1."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, extra = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    sym = dict(zip(bs, map(chr, cs)))
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [], "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None, "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False, "vocab": {sym[b]: b for b in range(n)}, "merges": []},
    }


def export(qat, src, out):
    r = subprocess.run([qat, "export", str(src), "--scheme", "none", "--hf-dtype", "f32", "--format", "gguf", "--hp-type", "f32",
                        "--out", str(out)], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"qat export {src}: {r.stderr.strip()}")


def load(path, n_ctx):
    from llama_cpp import Llama
    # F32 KV cache: the comparison is of the exported model, not of llama.cpp's f16 cache.
    return Llama(model_path=str(path), n_ctx=n_ctx, logits_all=True, verbose=False, n_threads=2, type_k=GGML_F32, type_v=GGML_F32)


def check_fixture(qat, arch, tmp):
    src = tmp / arch
    shutil.copytree(FIXTURES / arch, src)
    cfg = json.loads((src / "config.json").read_text())
    (src / "tokenizer.json").write_text(json.dumps(byte_level_tokenizer(cfg["vocab_size"])))
    gguf = tmp / f"{arch}.gguf"
    export(qat, src, gguf)
    exp = json.loads((src / "expected.json").read_text())
    worst = 0.0
    for ids, n, logits in zip(exp["input_ids"], exp["lengths"], exp["logits"]):
        llm = load(gguf, cfg["max_position_embeddings"])
        llm.eval(ids[:n])
        got = np.array(llm.scores[:n], dtype=np.float64)
        worst = max(worst, float(np.abs(got - np.array(logits[:n], dtype=np.float64)).max()))
        del llm
    ok = worst <= 1e-3
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    extra = " (with rope_freqs)" if rope.get("rope_type") == "llama3" else ""
    print(f"  {arch}{extra}: llama.cpp vs transformers logits max |d| = {worst:.2e} — {'pass' if ok else 'FAIL'}")
    return ok


def check_sentencepiece(qat, shared, tmp):
    from tokenizers import Tokenizer
    src = shared / "models/stories260k-hf"
    gguf = tmp / "stories260k.gguf"
    export(qat, src, gguf)
    llm = load(gguf, 512)
    # tokenizer.json itself (the `tokenizers` library, as qat reads it): transformers 5 rebuilds
    # Llama tokenizers with a Metaspace pre-tokenizer and splits leading spaces differently.
    tok = Tokenizer.from_file(str(src / "tokenizer.json"))
    texts = ["Once upon a time, there was a little girl named Lily.",
             "  Tom said, \"I can't find my red ball!\" He was sad.\nThen Mom came.",
             "The café was naïve — 123 4567 ☃ emoji 🙂 end"]
    val = shared / "data/text/tinystories_val_subset.txt"
    if val.exists():
        texts += [t for t in val.read_bytes().decode("utf-8").split("\n") if t.strip()][:200]
    same = sum(llm.tokenize(t.encode(), add_bos=False, special=False) == tok.encode(t, add_special_tokens=False).ids for t in texts)
    print(f"  stories260K tokenization: {same} of {len(texts)} texts identical to tokenizer.json — {'pass' if same == len(texts) else 'FAIL'}")
    llm.reset()
    ids = [1]
    llm.eval(ids)
    out = []
    for _ in range(200):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(nxt)
        llm.eval([nxt])
    text = tok.decode(out, skip_special_tokens=True)
    expected = (src / "expected_greedy_200.txt").read_text()
    greedy_ok = text == expected
    print(f"  stories260K greedy 200 tokens in llama.cpp == llama2.c's expected_greedy_200.txt — {'pass' if greedy_ok else 'FAIL'}")
    if not greedy_ok:
        print("    got:", repr(text[:200]))
    return same == len(texts) and greedy_ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--qat", default="target/release/qat")
    ap.add_argument("--shared", type=pathlib.Path, default=pathlib.Path("../shared"))
    a = ap.parse_args()
    ok = True
    with tempfile.TemporaryDirectory() as t:
        tmp = pathlib.Path(t)
        print("architectures (F32 GGUF, llama-cpp-python):")
        for arch in ["llama", "qwen2", "qwen3", "hunyuan_v1_dense"]:
            ok &= check_fixture(a.qat, arch, tmp)
        print("SentencePiece vocabulary:")
        if (a.shared / "models/stories260k-hf").exists():
            ok &= check_sentencepiece(a.qat, a.shared, tmp)
        else:
            print(f"  {a.shared}/models/stories260k-hf not found: skipped")
    print("ALL PASS" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
