#!/usr/bin/env python3
"""PyTorch reference for qat's AdamW (crates/qat-train/tests/adamw_reference.rs): two parameter
groups (weights: lr 1e-2, weight decay 0.1; scales: lr 3e-3, no decay), betas (0.9, 0.95),
eps 1e-8, six steps with fixed gradients, a learning-rate factor per step (the schedule) and a
gradient factor per step (global-norm clipping), run by torch.optim.AdamW itself.

  python3 scripts/make_adamw_fixture.py > crates/qat-train/tests/fixtures/adamw_reference.json
"""
import json

import torch

torch.manual_seed(0)
w = torch.randn(3, 4, dtype=torch.float64).requires_grad_()
s = (torch.rand(3, 1, dtype=torch.float64) + 0.5).requires_grad_()
base = {"weights": 1e-2, "scales": 3e-3}
opt = torch.optim.AdamW(
    [{"params": [w], "lr": base["weights"], "weight_decay": 0.1}, {"params": [s], "lr": base["scales"], "weight_decay": 0.0}],
    betas=(0.9, 0.95), eps=1e-8)
lr_factors = [1.0, 1.0, 0.5, 0.25, 1.0, 0.1]
grad_factors = [1.0, 0.5, 1.0, 1.0, 0.3, 1.0]
out = {"w0": w.detach().flatten().tolist(), "s0": s.detach().flatten().tolist(), "lr": base,
       "weight_decay": 0.1, "betas": [0.9, 0.95], "eps": 1e-8, "torch": torch.__version__, "steps": []}
for lf, gf in zip(lr_factors, grad_factors):
    gw, gs = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 1, dtype=torch.float64)
    for group, name in zip(opt.param_groups, ["weights", "scales"]):
        group["lr"] = base[name] * lf
    w.grad, s.grad = gw * gf, gs * gf
    opt.step()
    out["steps"].append({"lr_factor": lf, "grad_factor": gf, "grad_w": gw.flatten().tolist(), "grad_s": gs.flatten().tolist(),
                         "w": w.detach().flatten().tolist(), "s": s.detach().flatten().tolist()})
print(json.dumps(out))
