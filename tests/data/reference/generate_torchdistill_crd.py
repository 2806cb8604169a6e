#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Writes td_crd_*.json: torchdistill's CRDLoss (losses/mid_level.py) run in float64 on fixed inputs, the reference
cases of tests/distill/test_crd.cpp.

Usage: KSHOT_TORCHDISTILL_SRC=DIR [KSHOT_TORCHDISTILL_COMMIT=SHA] /usr/bin/python3 \
           tests/data/reference/generate_torchdistill_crd.py
(DIR: a torchdistill source tree, imported from there, never copied; Debian's python3-torch. The committed cases
came from commit 3e4373c45214c5c56eebac481d5bfe8b8735aa05.)

Each case: student and teacher embeddings (unit rows, as torchdistill's Normalizer4CRD gives), both memory banks
(torch.rand init of CRDLoss.__init__ at the case's seed), the contrast indices (column 0 the positives), the
parameters; the loss, its gradients to both embeddings, and the memory banks after the momentum update.
"""
import json
import os
import subprocess
import sys

import torch

SRC = os.environ.get("KSHOT_TORCHDISTILL_SRC")
if not SRC:
    sys.exit("generate_torchdistill_crd.py: set KSHOT_TORCHDISTILL_SRC to a torchdistill source tree")
sys.path.insert(0, SRC)
from torchdistill.losses.mid_level import CRDLoss  # noqa: E402

OUT = os.path.dirname(os.path.abspath(__file__))


def tensor(x):
    return {"shape": list(x.shape), "data": [float(v) for v in x.detach().reshape(-1).tolist()]}


def commit():
    """The source tree's commit: KSHOT_TORCHDISTILL_COMMIT, else git's HEAD there, else "unknown"."""
    if os.environ.get("KSHOT_TORCHDISTILL_COMMIT"):
        return os.environ["KSHOT_TORCHDISTILL_COMMIT"]
    try:
        return subprocess.check_output(["git", "-C", SRC, "rev-parse", "HEAD"], text=True,
                                       stderr=subprocess.DEVNULL).strip()
    except Exception:  # a source tree without git metadata (an exported archive)
        return "unknown"


def case(name, seed, batch, dim, memory, negatives, temperature, momentum):
    torch.manual_seed(seed)
    loss = CRDLoss("s_norm", "s_empty", "t_norm", input_size=dim, output_size=memory,
                   num_negative_samples=negatives, num_samples=memory, temperature=temperature,
                   momentum=momentum).double()
    # CRDLoss keeps temperature and momentum in a float32 buffer created before .double(): 0.07 becomes
    # 0.07000000029802322. The cases use the exact values, so that they test the formula at float64 precision.
    loss.params = torch.tensor([negatives, temperature, -1, -1, momentum], dtype=torch.float64)
    memory_v1 = loss.memory_v1.clone()
    memory_v2 = loss.memory_v2.clone()
    student = torch.nn.functional.normalize(torch.randn(batch, dim, dtype=torch.float64), dim=1).requires_grad_(True)
    teacher = torch.nn.functional.normalize(torch.randn(batch, dim, dtype=torch.float64), dim=1).requires_grad_(True)
    pos = torch.randperm(memory)[:batch]
    contrast = torch.randint(0, memory, (batch, negatives + 1))
    contrast[:, 0] = pos
    student_io = {"s_norm": {"output": student}, "s_empty": {"input": {"pos_idx": pos, "contrast_idx": contrast}}}
    teacher_io = {"t_norm": {"output": teacher}}
    value = loss(student_io, teacher_io)
    value.backward()
    out = {
        "case": name,
        "peer": "torchdistill (peer-code)",
        "peer_meta": {"repo": "yoshitomo-matsubara/torchdistill", "commit": commit()},
        "api": "mid_level.CRDLoss(student_norm_module_path, student_empty_module_path, teacher_norm_module_path, "
               "input_size, output_size, num_negative_samples, num_samples, temperature, momentum, eps)",
        "params": {"temperature": temperature, "momentum": momentum, "eps": 1e-7, "num_samples": memory,
                   "num_negative_samples": negatives, "z_v1": -1.0, "z_v2": -1.0},
        "seed": seed,
        "inputs": {"student_embed": tensor(student), "teacher_embed": tensor(teacher),
                   "memory_v1": tensor(memory_v1), "memory_v2": tensor(memory_v2),
                   "contrast_idx": tensor(contrast.double())},
        "loss": float(value.item()),
        "grad": {"student_embed": tensor(student.grad), "teacher_embed": tensor(teacher.grad)},
        "outputs": {"memory_v1": tensor(loss.memory_v1), "memory_v2": tensor(loss.memory_v2),
                    "z_v1": float(loss.params[2].item()), "z_v2": float(loss.params[3].item())},
        "notes": "memory_v1 scores the teacher, memory_v2 the student (torchdistill's naming); Z of each side is set "
                 "by this first call to mean(exp(score / T)) * memory rows; the loss sums both sides' NCE terms over "
                 "the batch and divides by the batch size; memories are updated after scoring. torchdistill stores "
                 "temperature and momentum in a float32 buffer (0.07 becomes 0.07000000029802322); these cases set "
                 "that buffer to the exact float64 values.",
        "dtype": "float64",
        "torch": torch.__version__,
    }
    with open(os.path.join(OUT, name + ".json"), "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"{name}: loss {out['loss']:.12g}")


case("td_crd_t007_m05", 11, batch=6, dim=5, memory=30, negatives=4, temperature=0.07, momentum=0.5)
case("td_crd_t05_m09", 12, batch=4, dim=7, memory=20, negatives=6, temperature=0.5, momentum=0.9)
