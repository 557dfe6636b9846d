#!/usr/bin/env python3
"""PyTorch reference for qat's training losses (crates/qat-train/tests/loss_reference.rs):
random student and teacher logits, targets with ignored positions (-1), and for each loss the
sum over target positions and its gradient with respect to the student logits, from PyTorch's
own definitions (cross_entropy, kl_div) — not from qat's formulas.

  python3 scripts/make_loss_fixture.py > crates/qat-train/tests/fixtures/loss_reference.json
"""
import json

import torch
import torch.nn.functional as F

torch.manual_seed(0)
B, T, V = 2, 5, 37
student = (torch.randn(B, T, V, dtype=torch.float64) * 3).requires_grad_(False)
teacher = torch.randn(B, T, V, dtype=torch.float64) * 3
targets = torch.randint(0, V, (B, T))
targets[0, 1] = -1
targets[1, 4] = -1
mask = targets >= 0
safe = targets.clamp_min(0)


def kl(log_p, log_q):
    """KL(p‖q) per token, via PyTorch's kl_div(input=log q, target=log p)."""
    return F.kl_div(log_q, log_p, log_target=True, reduction="none").sum(-1)


def losses(z):
    lp_s = F.log_softmax(z, -1)
    lp_t = F.log_softmax(teacher, -1)
    conf = lp_t.gather(-1, safe.unsqueeze(-1)).squeeze(-1).exp()
    fwd, rev = kl(lp_t, lp_s), kl(lp_s, lp_t)
    m = mask.to(z.dtype)
    return {
        "ce": F.cross_entropy(z.reshape(-1, V), targets.reshape(-1), ignore_index=-1, reduction="sum"),
        "forward_kl": (fwd * m).sum(),
        "reverse_kl": (rev * m).sum(),
        "cakld": ((conf * rev + (1 - conf) * fwd) * m).sum(),
    }


out = {"shape": [B, T, V], "student": student.flatten().tolist(), "teacher": teacher.flatten().tolist(),
       "targets": targets.flatten().tolist(), "torch": torch.__version__, "losses": {}}
for name in ["ce", "forward_kl", "reverse_kl", "cakld"]:
    z = student.clone().requires_grad_(True)
    value = losses(z)[name]
    value.backward()
    out["losses"][name] = {"value": value.item(), "grad": z.grad.flatten().tolist()}
print(json.dumps(out))
