#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Peer for benchmarks/bench_distill.cpp: torchdistill's distillation losses (and mdistiller's DKD formula),
forward and backward in PyTorch, at 1 and 2 threads.

Usage: [KSHOT_TORCHDISTILL_SRC=DIR] /usr/bin/python3 benchmarks/peers/torchdistill_losses.py OUT.json [FILTER]

Cases (the same shapes and float32 data layout as bench_distill.cpp; the values are seeded standard normals):
  distill_kd_f32_n256_c1000   KDLoss(temperature=4, alpha=0.9, reduction='batchmean') with targets
  distill_dkd_f32_n256_c1000  mdistiller's dkd_loss(alpha=1, beta=8, temperature=4) (torchdistill has no DKD)
  distill_rkd_f32_n256_d128   RKDLoss(dist_factor=1, angle_factor=2, reduction='mean')
  distill_sp_f32_n256_d128    SPKDLoss(reduction='batchmean')
  distill_pkt_f32_n256_d128   PKTLoss(eps=1e-7)
Per call: student.grad = None; loss = loss_fn(...); loss.backward() (the teacher does not require gradients).

Which implementation runs, recorded as "peer" in each row:
- "torchdistill.<Class>": KSHOT_TORCHDISTILL_SRC names a directory holding torchdistill's source (the directory
  that contains `torchdistill/`, i.e. a checkout of https://github.com/yoshitomo-matsubara/torchdistill). Only
  torchdistill.losses.mid_level and what it imports (torchdistill.losses.registry, torchdistill.common.{constant,
  misc_util}) are loaded; the packages' __init__.py files are not run (torchdistill/__init__.py imports the
  datasets and models, which need torchvision). Nothing is installed, built or copied.
- "torch (torchdistill formula)": otherwise, the same formula written here in plain PyTorch, following
  torchdistill's code line by line.
DKD is always "torch (mdistiller formula)". FILTER, when given, is searched (as a regular expression) in
"<case>/omp:<threads>". Timing: _harness.time_per_call (Google-Benchmark-like, median of 5).
"""
import importlib
import json
import os
import platform
import sys
import types

import torch
import torch.nn.functional as F

from _harness import REPETITIONS, openblas, parse_args, time_per_call

BATCH = 256
CLASSES = 1000
DIM = 128
THREADS = [1, 2]
SEED = 20261128


def load_torchdistill():
    """(mid_level module, source directory) from $KSHOT_TORCHDISTILL_SRC, or (None, reason)."""
    src = os.environ.get("KSHOT_TORCHDISTILL_SRC")
    if not src:
        return None, "KSHOT_TORCHDISTILL_SRC is not set"
    pkg = os.path.join(src, "torchdistill")
    if not os.path.isfile(os.path.join(pkg, "losses", "mid_level.py")):
        return None, f"no torchdistill/losses/mid_level.py under {src}"
    try:
        # Register the packages without running their __init__.py (torchdistill's imports torchvision).
        for name, path in (("torchdistill", pkg), ("torchdistill.common", os.path.join(pkg, "common")),
                           ("torchdistill.losses", os.path.join(pkg, "losses"))):
            module = types.ModuleType(name)
            module.__path__ = [path]
            sys.modules[name] = module
        return importlib.import_module("torchdistill.losses.mid_level"), src
    except Exception as e:  # a source tree this script does not understand: fall back, and say why
        for name in [m for m in sys.modules if m == "torchdistill" or m.startswith("torchdistill.")]:
            del sys.modules[name]
        return None, f"importing torchdistill from {src} failed: {type(e).__name__}: {e}"


# ---- the formulas in plain PyTorch (torchdistill's code, and mdistiller's dkd_loss) ------------------------------

def kd_formula(s, t, y, temperature=4.0, alpha=0.9):
    soft = F.kl_div(torch.log_softmax(s / temperature, dim=1), torch.softmax(t / temperature, dim=1),
                    reduction="batchmean")
    return alpha * F.cross_entropy(s, y) + (1 - alpha) * temperature ** 2 * soft


def dkd_formula(s, t, y, alpha=1.0, beta=8.0, temperature=4.0):
    gt = torch.zeros_like(s).scatter_(1, y.unsqueeze(1), 1).bool()
    other = torch.ones_like(s).scatter_(1, y.unsqueeze(1), 0).bool()
    ps, pt = F.softmax(s / temperature, dim=1), F.softmax(t / temperature, dim=1)

    def cat_mask(p):
        return torch.cat([(p * gt).sum(1, keepdims=True), (p * other).sum(1, keepdims=True)], dim=1)

    ps, pt = cat_mask(ps), cat_mask(pt)
    tckd = F.kl_div(torch.log(ps), pt, reduction="sum") * temperature ** 2 / y.shape[0]
    pt2 = F.softmax(t / temperature - 1000.0 * gt, dim=1)
    ls2 = F.log_softmax(s / temperature - 1000.0 * gt, dim=1)
    nckd = F.kl_div(ls2, pt2, reduction="sum") * temperature ** 2 / y.shape[0]
    return alpha * tckd + beta * nckd


def rkd_pdist(e, eps=1e-12):
    e_square = e.pow(2).sum(dim=1)
    prod = e @ e.t()
    res = (e_square.unsqueeze(1) + e_square.unsqueeze(0) - 2 * prod).clamp(min=eps).sqrt().clone()
    res[range(len(e)), range(len(e))] = 0
    return res


def rkd_formula(s, t, dist_factor=1.0, angle_factor=2.0):
    with torch.no_grad():
        t_d = rkd_pdist(t)
        t_d = t_d / t_d[t_d > 0].mean()
    d = rkd_pdist(s)
    d = d / d[d > 0].mean()
    dist = F.smooth_l1_loss(d, t_d, reduction="mean")
    with torch.no_grad():
        td = F.normalize(t.unsqueeze(0) - t.unsqueeze(1), p=2, dim=2)
        t_angle = torch.bmm(td, td.transpose(1, 2)).view(-1)
    sd = F.normalize(s.unsqueeze(0) - s.unsqueeze(1), p=2, dim=2)
    s_angle = torch.bmm(sd, sd.transpose(1, 2)).view(-1)
    return dist_factor * dist + angle_factor * F.smooth_l1_loss(s_angle, t_angle, reduction="mean")


def sp_formula(s, t):
    def gram(z):
        z = torch.flatten(z, 1)
        return F.normalize(torch.matmul(z, torch.t(z)), 1)

    return torch.norm(gram(t) - gram(s)) ** 2 / (s.shape[0] ** 2)


def pkt_formula(s, t, eps=1e-7):
    def probs(x):
        x = x / (torch.sqrt(torch.sum(x ** 2, dim=1, keepdim=True)) + eps)
        k = (torch.mm(x, x.transpose(0, 1)) + 1.0) / 2.0
        return k / torch.sum(k, dim=1, keepdim=True)

    ps, pt = probs(s), probs(t)
    return torch.mean(pt * torch.log((pt + eps) / (ps + eps)))


def make_cases(mid):
    """name -> (peer name, width, callable(s, t, y) -> loss)."""
    def io(x):
        return {"m": {"output": x, "input": x}}

    if mid is not None:
        kd = mid.KDLoss("m", "output", "m", "output", temperature=4.0, alpha=0.9, reduction="batchmean")
        rkd = mid.RKDLoss("m", "m", dist_factor=1.0, angle_factor=2.0, reduction="mean")
        sp = mid.SPKDLoss("m", "m", reduction="batchmean")
        pkt = mid.PKTLoss("m", "input", "m", "input", eps=1e-7)
        return {
            "kd": ("torchdistill.KDLoss", CLASSES, lambda s, t, y: kd(io(s), io(t), y)),
            "dkd": ("torch (mdistiller formula)", CLASSES, dkd_formula),
            "rkd": ("torchdistill.RKDLoss", DIM, lambda s, t, y: rkd(io(s), io(t))),
            "sp": ("torchdistill.SPKDLoss", DIM, lambda s, t, y: sp(io(s), io(t))),
            "pkt": ("torchdistill.PKTLoss", DIM, lambda s, t, y: pkt(io(s), io(t))),
        }
    formula = "torch (torchdistill formula)"
    return {
        "kd": (formula, CLASSES, kd_formula),
        "dkd": ("torch (mdistiller formula)", CLASSES, dkd_formula),
        "rkd": (formula, DIM, lambda s, t, y: rkd_formula(s, t)),
        "sp": (formula, DIM, lambda s, t, y: sp_formula(s, t)),
        "pkt": (formula, DIM, lambda s, t, y: pkt_formula(s, t)),
    }


def main():
    out_path, selected = parse_args("torchdistill_losses.py")
    mid, source = load_torchdistill()
    if mid is None:
        print(f"torchdistill_losses.py: {source}; timing torchdistill's formulas in plain PyTorch instead",
              file=sys.stderr)
    blas = openblas()  # torch.set_num_threads does not reach OpenBLAS's own pool
    rows = []
    for name, (peer, width, fn) in make_cases(mid).items():
        size = f"c{width}" if width == CLASSES else f"d{width}"
        case = f"distill_{name}_f32_n{BATCH}_{size}"
        gen = torch.Generator().manual_seed(SEED + width)
        student = torch.randn(BATCH, width, generator=gen, dtype=torch.float32).requires_grad_(True)
        teacher = torch.randn(BATCH, width, generator=gen, dtype=torch.float32)
        targets = torch.randint(0, width, (BATCH,), generator=gen)
        # Validate the peer against the formula in float64 once.
        s64 = student.detach().double().requires_grad_(True)
        ref = make_cases(None)[name][2](s64, teacher.double(), targets)
        ref.backward()
        for threads in THREADS:
            if not selected(f"{case}/omp:{threads}"):
                continue
            torch.set_num_threads(threads)
            if blas is not None:
                blas.openblas_set_num_threads(threads)

            def call():
                student.grad = None
                loss = fn(student, teacher, targets)
                loss.backward()
                return loss

            value = call().item()
            if abs(value - ref.item()) > 1e-3 * abs(ref.item()) + 1e-6:
                sys.exit(f"torchdistill_losses.py: {case}: {peer} gives {value}, the float64 formula {ref.item()}")
            seconds, cpu_per_wall, calls = time_per_call(call)
            rows.append({
                "case": case,
                "peer": peer,
                "peer_seconds": seconds,
                "threads": threads,
                "note": f"forward + backward (student only); source: {source if mid is not None else 'formula'}",
                "peer_loss": value,
                "calls_per_repetition": calls,
                "repetitions": REPETITIONS,
                "cpu_per_wall": round(cpu_per_wall, 3),
                "torch_version": torch.__version__,
                "python": platform.python_version(),
            })
            print(f"{peer} {case} threads={threads}: {seconds * 1e3:.3f} ms (cpu/wall {cpu_per_wall:.2f})",
                  file=sys.stderr)
    with open(out_path, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
