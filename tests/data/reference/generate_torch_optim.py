#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Writes torch_optim.json: PyTorch's own optimizers, learning-rate schedulers and gradient clipping on small
fixed inputs, the reference that tests/nn/test_optimizers.cpp checks kshot's optimizers against.

Usage: /usr/bin/python3 tests/data/reference/generate_torch_optim.py [OUT_FILE]
(default OUT_FILE: torch_optim.json beside this script). Needs only PyTorch (Debian's python3-torch, 1.13).

Layout:
  "meta":       torch version, dtype, step count, notes.
  "optimizers": one entry per case: "optimizer" (SGD, Adam or AdamW), "hyper" (every hyperparameter, torch's
                names), "initial" (n parameters), "grads" (one gradient per step, fixed in advance: they do not
                depend on the parameters), "params" (the parameters after each step, float64) and
                "params_float32" (the same run in float32, stored as doubles), "lr_scale" (null, or per-entry
                factors of lr: the case then runs one parameter group per entry with lr * lr_scale[i]).
                The single-tensor path runs (foreach=False): torch's default on CPU.
  "schedules":  "type" (StepLR, CosineAnnealingLR, LinearLR, or SequentialLR of LinearLR then an inner
                scheduler at milestone W), "params", "lrs" (get_last_lr() after t scheduler steps, for
                t = 0, 1, ...: the rate of the (t + 1)-th optimizer step) and, where torch has one,
                "closed_form" (_get_closed_form_lr() at each t).
  "clipping":   "kind" (norm or value), "max_norm"/"clip_value", "norm_type" (a number, or the string "inf"),
                "grads", "total_norm" (norm kinds) and "clipped" (the gradient afterwards), float64.
"""
import json
import math
import os
import sys
import warnings

import torch

STEPS = 5
N = 7


def gradient_sequence(seed, n=N, steps=STEPS):
    """Standard-normal gradients scaled by a factor that rises and falls, so that AMSGrad's maximum matters."""
    gen = torch.Generator().manual_seed(seed)
    factors = [1.0, 2.0, 0.5, 0.25, 1.5, 0.1, 0.05][:steps]
    return [(torch.randn(n, generator=gen, dtype=torch.float64) * f).tolist() for f in factors]


def initial_params(seed, n=N):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=gen, dtype=torch.float64).tolist()


def make_optimizer(kind, params, hyper):
    if kind == "SGD":
        return torch.optim.SGD(params, lr=hyper["lr"], momentum=hyper["momentum"], dampening=hyper["dampening"],
                               weight_decay=hyper["weight_decay"], nesterov=hyper["nesterov"], foreach=False)
    cls = torch.optim.Adam if kind == "Adam" else torch.optim.AdamW
    return cls(params, lr=hyper["lr"], betas=(hyper["beta1"], hyper["beta2"]), eps=hyper["eps"],
               weight_decay=hyper["weight_decay"], amsgrad=hyper["amsgrad"], foreach=False)


def run_optimizer(kind, hyper, initial, grads, lr_scale, dtype):
    """The parameters after each step, as lists of Python floats."""
    if lr_scale is None:
        p = torch.tensor(initial, dtype=dtype, requires_grad=True)
        opt = make_optimizer(kind, [p], hyper)
        history = []
        for g in grads:
            p.grad = torch.tensor(g, dtype=dtype)
            opt.step()
            history.append([float(x) for x in p.detach().tolist()])
        return history
    # One parameter group per entry, each with its own learning rate lr * lr_scale[i].
    ps = [torch.tensor([x], dtype=dtype, requires_grad=True) for x in initial]
    groups = [{"params": [ps[i]], "lr": hyper["lr"] * lr_scale[i]} for i in range(len(ps))]
    opt = make_optimizer(kind, groups, hyper)
    history = []
    for g in grads:
        for i, pi in enumerate(ps):
            pi.grad = torch.tensor([g[i]], dtype=dtype)
        opt.step()
        history.append([float(pi.detach()[0]) for pi in ps])
    return history


def sgd(lr=0.1, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    return {"lr": lr, "momentum": momentum, "dampening": dampening, "weight_decay": weight_decay,
            "nesterov": nesterov}


def adam(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, amsgrad=False):
    return {"lr": lr, "beta1": beta1, "beta2": beta2, "eps": eps, "weight_decay": weight_decay, "amsgrad": amsgrad}


OPTIMIZER_CASES = [
    # name, optimizer, hyperparameters, lr_scale
    ("sgd_plain", "SGD", sgd(lr=0.1), None),
    ("sgd_momentum", "SGD", sgd(lr=0.1, momentum=0.9), None),
    ("sgd_dampening", "SGD", sgd(lr=0.05, momentum=0.8, dampening=0.3), None),
    ("sgd_nesterov", "SGD", sgd(lr=0.1, momentum=0.9, nesterov=True), None),
    ("sgd_weight_decay", "SGD", sgd(lr=0.1, weight_decay=0.05), None),
    ("sgd_momentum_weight_decay", "SGD", sgd(lr=0.1, momentum=0.5, dampening=0.1, weight_decay=0.05), None),
    ("sgd_nesterov_weight_decay", "SGD", sgd(lr=0.02, momentum=0.95, weight_decay=0.01, nesterov=True), None),
    ("sgd_lr_scale", "SGD", sgd(lr=0.1, momentum=0.9, weight_decay=0.02), "scale"),
    ("adam_default", "Adam", adam(), None),
    ("adam_lr_betas", "Adam", adam(lr=0.05, beta1=0.8, beta2=0.9, eps=1e-6), None),
    ("adam_weight_decay", "Adam", adam(lr=0.01, weight_decay=0.1), None),
    ("adam_amsgrad", "Adam", adam(lr=0.02, beta2=0.5, amsgrad=True), None),
    ("adam_amsgrad_weight_decay", "Adam", adam(lr=0.02, beta1=0.5, beta2=0.6, weight_decay=0.2, amsgrad=True), None),
    ("adam_lr_scale", "Adam", adam(lr=0.01, weight_decay=0.05), "scale"),
    ("adamw_default", "AdamW", adam(weight_decay=0.01), None),
    ("adamw_weight_decay", "AdamW", adam(lr=0.05, beta1=0.85, beta2=0.95, weight_decay=0.3), None),
    ("adamw_amsgrad", "AdamW", adam(lr=0.02, beta2=0.5, weight_decay=0.1, amsgrad=True), None),
    ("adamw_lr_scale", "AdamW", adam(lr=0.01, weight_decay=0.5), "scale"),
]

LR_SCALE = [1.0, 0.5, 2.0, 0.0, 1.25, 0.1, 3.0]


def optimizer_cases():
    out = []
    for k, (name, kind, hyper, scale) in enumerate(OPTIMIZER_CASES):
        initial = initial_params(100 + k)
        grads = gradient_sequence(200 + k)
        lr_scale = LR_SCALE if scale else None
        out.append({
            "name": name, "optimizer": kind, "hyper": hyper, "lr_scale": lr_scale, "initial": initial,
            "grads": grads,
            "params": run_optimizer(kind, hyper, initial, grads, lr_scale, torch.float64),
            "params_float32": run_optimizer(kind, hyper, initial, grads, lr_scale, torch.float32),
        })
    return out


def record_schedule(make, steps, closed_form=True):
    """get_last_lr() after t scheduler steps for t in [0, steps), and the closed form where torch has one."""
    p = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.1)
    sched = make(opt)
    lrs, closed = [], []
    for t in range(steps):
        if t > 0:
            opt.step()
            sched.step()
        lrs.append(float(sched.get_last_lr()[0]))
        if closed_form:
            closed.append(float(sched._get_closed_form_lr()[0]))
    return lrs, (closed if closed_form else None)


def schedule_cases():
    S = torch.optim.lr_scheduler
    cases = [
        ("step_lr", "StepLR", {"base_lr": 0.1, "step_size": 3, "gamma": 0.5}, 13,
         lambda o: S.StepLR(o, step_size=3, gamma=0.5), True),
        ("step_lr_default_gamma", "StepLR", {"base_lr": 0.1, "step_size": 2, "gamma": 0.1}, 9,
         lambda o: S.StepLR(o, step_size=2), True),
        ("cosine", "CosineAnnealingLR", {"base_lr": 0.1, "T_max": 10, "eta_min": 0.0}, 11,
         lambda o: S.CosineAnnealingLR(o, T_max=10), True),
        ("cosine_eta_min", "CosineAnnealingLR", {"base_lr": 0.1, "T_max": 7, "eta_min": 0.004}, 8,
         lambda o: S.CosineAnnealingLR(o, T_max=7, eta_min=0.004), True),
        ("linear", "LinearLR", {"base_lr": 0.1, "start_factor": 0.25, "total_iters": 4}, 9,
         lambda o: S.LinearLR(o, start_factor=0.25, total_iters=4), True),
        ("warmup_cosine", "SequentialLR",
         {"base_lr": 0.1, "start_factor": 0.1, "warmup": 3, "inner": "CosineAnnealingLR", "T_max": 6,
          "eta_min": 0.01}, 10,
         lambda o: S.SequentialLR(o, [S.LinearLR(o, start_factor=0.1, total_iters=3),
                                      S.CosineAnnealingLR(o, T_max=6, eta_min=0.01)], milestones=[3]), False),
        ("warmup_step", "SequentialLR",
         {"base_lr": 0.1, "start_factor": 0.5, "warmup": 2, "inner": "StepLR", "step_size": 2, "gamma": 0.5}, 9,
         lambda o: S.SequentialLR(o, [S.LinearLR(o, start_factor=0.5, total_iters=2),
                                      S.StepLR(o, step_size=2, gamma=0.5)], milestones=[2]), False),
    ]
    out = []
    for name, kind, params, steps, make, closed in cases:
        lrs, closed_form = record_schedule(make, steps, closed)
        entry = {"name": name, "type": kind, "params": params, "lrs": lrs}
        if closed_form is not None:
            entry["closed_form"] = closed_form
        out.append(entry)
    return out


def clipping_cases():
    gen = torch.Generator().manual_seed(7)
    grads = (torch.randn(9, generator=gen, dtype=torch.float64) * 3.0).tolist()
    out = []
    for name, max_norm, norm_type in [("norm2_clips", 1.0, 2.0), ("norm2_no_clip", 100.0, 2.0),
                                      ("norm_inf", 0.5, math.inf), ("norm1", 2.0, 1.0), ("norm3", 1.5, 3.0),
                                      ("norm2_zero_max", 0.0, 2.0)]:
        p = torch.zeros(len(grads), dtype=torch.float64, requires_grad=True)
        p.grad = torch.tensor(grads, dtype=torch.float64)
        total = torch.nn.utils.clip_grad_norm_([p], max_norm, norm_type=norm_type)
        out.append({"name": name, "kind": "norm", "max_norm": max_norm,
                    "norm_type": "inf" if math.isinf(norm_type) else norm_type, "grads": grads,
                    "total_norm": float(total), "clipped": p.grad.tolist()})
    p = torch.zeros(len(grads), dtype=torch.float64, requires_grad=True)
    p.grad = torch.tensor(grads, dtype=torch.float64)
    torch.nn.utils.clip_grad_value_([p], 2.0)
    out.append({"name": "value", "kind": "value", "clip_value": 2.0, "grads": grads, "clipped": p.grad.tolist()})
    return out


def main():
    out_file = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                                   "torch_optim.json")
    warnings.simplefilter("ignore")  # SequentialLR's step(0) at the milestone warns that epoch is deprecated
    torch.manual_seed(0)
    data = {
        "meta": {
            "peer": f"torch {torch.__version__}",
            "dtype": "float64 (params_float32: float32 runs stored as doubles)",
            "steps": STEPS,
            "notes": "optimizers: torch.optim single-tensor path (foreach=False), fixed gradient sequences; "
                     "lr_scale cases run one parameter group per entry with lr * lr_scale[i]. schedules: "
                     "lrs[t] = get_last_lr() after t scheduler.step() calls. clipping: clip_grad_norm_ / "
                     "clip_grad_value_ on one float64 tensor.",
        },
        "optimizers": optimizer_cases(),
        "schedules": schedule_cases(),
        "clipping": clipping_cases(),
    }
    # One case per line: compact, and a regenerated file diffs case by case.
    with open(out_file, "w") as f:
        f.write("{\n\"meta\": " + json.dumps(data["meta"]))
        for section in ("optimizers", "schedules", "clipping"):
            f.write(",\n\"" + section + "\": [\n")
            f.write(",\n".join(json.dumps(case, separators=(",", ":")) for case in data[section]))
            f.write("\n]")
        f.write("\n}\n")


if __name__ == "__main__":
    main()
