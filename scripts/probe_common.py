"""The reference probes' evaluation: wikitext-2 test perplexity over the first 4,096 tokens in
eight non-overlapping windows of 512 (mean NLL of every predicted token, exponentiated)."""
import math
import os

import torch


def wikitext_ids(tok, n=4096):
    shared = os.environ.get("QAT_SHARED", "../shared")
    text = open(os.path.join(shared, "data/text/wikitext2_test.raw")).read()
    return tok(text, return_tensors="pt").input_ids[0][:n]


def perplexity(model, ids, window=512):
    nll, n = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(ids), window):
            x = ids[s:s + window][None]
            nll += model(x, labels=x).loss.item() * (x.shape[1] - 1)
            n += x.shape[1] - 1
    return math.exp(nll / n)
