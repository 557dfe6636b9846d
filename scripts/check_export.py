#!/usr/bin/env python3
"""External checks of a qat export with tools nobody here wrote.

  1. gguf-py (llama.cpp's Python package) reads the GGUF and dequantizes every tensor; the
     values must equal the bf16 safetensors export exactly (after undoing llama's q/k permute).
  2. transformers loads the HF export; its logits on a token sequence must match `qat logits`
     within 1e-3.
  3. llama-cpp-python (optional, --llama-cpp) loads the GGUF, answers a chat prompt, and its
     perplexity over wikitext-2 windows must agree with `qat eval` of the HF export within 1%.

    .venv/bin/python scripts/check_export.py HF_DIR GGUF --qat target/release/qat \
        [--wikitext ../shared/data/text/wikitext2_test.raw] [--llama-cpp]
"""
import argparse
import json
import math
import pathlib
import subprocess
import sys
import tempfile

import numpy as np


def undo_permute(w, n_head):
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def check_gguf(hf_dir, gguf_path):
    import gguf
    from safetensors.numpy import load_file
    import torch
    from safetensors.torch import load_file as load_torch

    cfg = json.loads((hf_dir / "config.json").read_text())
    st = {k: v.float().numpy() for k, v in load_torch(hf_dir / "model.safetensors").items()}
    reader = gguf.GGUFReader(str(gguf_path))
    names = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
    layer = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
             "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
             "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
             "attn_q_norm": "self_attn.q_norm", "attn_k_norm": "self_attn.k_norm"}
    counts, bad = {}, 0
    for t in reader.tensors:
        stem, kind = t.name.rsplit(".", 1)
        if stem in names:
            hf = names[stem] + "." + kind
        else:
            _, n, suffix = stem.split(".", 2)
            hf = f"model.layers.{n}.{layer[suffix]}.{kind}"
        values = gguf.quants.dequantize(t.data, t.tensor_type).reshape(st[hf].shape).astype(np.float32)
        if cfg["model_type"] == "llama" and (hf.endswith("q_proj.weight") or hf.endswith("k_proj.weight")):
            heads = cfg["num_attention_heads"] if "q_proj" in hf else cfg["num_key_value_heads"]
            values = undo_permute(values, heads)
        same = np.array_equal(values.view(np.uint32), st[hf].view(np.uint32))
        ty = t.tensor_type.name
        counts.setdefault(ty, [0, 0])
        counts[ty][0] += 1
        if not same:
            counts[ty][1] += 1
            bad += 1
            print(f"  MISMATCH {t.name} ({ty}): max |d| {np.abs(values - st[hf]).max():.3e}")
    for ty, (n, b) in sorted(counts.items()):
        print(f"  gguf-py {ty}: {n} tensors, {b} differ from the safetensors export")
    return bad == 0


def check_transformers(hf_dir, qat):
    import torch
    from transformers import AutoModelForCausalLM

    ids = [1, 504, 3458, 314, 260, 1042, 30, 2] + list(range(100, 140))
    with tempfile.TemporaryDirectory() as tmp:
        out = pathlib.Path(tmp) / "logits.json"
        subprocess.run([qat, "logits", str(hf_dir), "--tokens", ",".join(map(str, ids)), "--out", str(out)], check=True)
        ours = np.array(json.loads(out.read_text()), dtype=np.float32)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        ref = model(torch.tensor([ids])).logits[0].numpy()
    d = float(np.abs(ref - ours).max())
    print(f"  transformers vs qat logits: max |d| = {d:.2e} over {ref.shape[0]}x{ref.shape[1]}")
    return d <= 1e-3


def check_llama_cpp(hf_dir, gguf_path, qat, wikitext, n_windows, window):
    from llama_cpp import Llama
    from transformers import AutoTokenizer

    llm = Llama(model_path=str(gguf_path), n_ctx=window, logits_all=True, verbose=False, n_threads=2)
    msg = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
    reply = llm.create_chat_completion(messages=msg, max_tokens=40, temperature=0.0)["choices"][0]["message"]["content"]
    print(f"  llama.cpp chat reply: {reply!r}")
    tok = AutoTokenizer.from_pretrained(hf_dir)
    # Bytes as they are: read_text() would turn the file's CRLF line ends into LF and give
    # llama.cpp a different token stream from the one `qat eval` reads.
    text = pathlib.Path(wikitext).read_bytes().decode("utf-8")
    ids = tok(text, add_special_tokens=False)["input_ids"][: n_windows * window]
    nll, n = 0.0, 0
    for w in range(n_windows):
        chunk = ids[w * window:(w + 1) * window]
        llm.reset()
        llm.eval(chunk)
        logits = np.array(llm.scores[: len(chunk)], dtype=np.float64)
        lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
        nll += float(sum(lse[j] - logits[j, chunk[j + 1]] for j in range(len(chunk) - 1)))
        n += len(chunk) - 1
    ppl_llama = math.exp(nll / n)
    out = subprocess.run([qat, "eval", str(hf_dir), "--text", wikitext, "--window", str(window), "--stride", str(window),
                          "--max-tokens", str(n_windows * window), "--json"], check=True, capture_output=True, text=True).stdout
    ppl_qat = json.loads(out)[0]["perplexity"]
    rel = abs(ppl_llama - ppl_qat) / ppl_qat
    print(f"  wikitext-2 perplexity ({n} tokens, windows of {window}): llama.cpp {ppl_llama:.4f}, qat {ppl_qat:.4f}, relative difference {rel:.2e}")
    return rel <= 0.01


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("hf_dir", type=pathlib.Path)
    ap.add_argument("gguf", type=pathlib.Path)
    ap.add_argument("--qat", default="target/release/qat")
    ap.add_argument("--wikitext", default="../shared/data/text/wikitext2_test.raw")
    ap.add_argument("--llama-cpp", action="store_true")
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--window", type=int, default=512)
    a = ap.parse_args()
    results = {"gguf-py": check_gguf(a.hf_dir, a.gguf), "transformers": check_transformers(a.hf_dir, a.qat)}
    if a.llama_cpp:
        results["llama.cpp"] = check_llama_cpp(a.hf_dir, a.gguf, a.qat, a.wikitext, a.windows, a.window)
    for k, v in results.items():
        print(f"{k}: {'PASS' if v else 'FAIL'}")
    sys.exit(0 if all(results.values()) else 1)


if __name__ == "__main__":
    main()
