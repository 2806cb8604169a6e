#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Peer for benchmarks/bench_fewshot.cpp: easyfsl's PrototypicalNetworks (identity backbone), forward and
backward of the episode loss in PyTorch, one thread.

Usage: [KSHOT_EASYFSL_SRC=DIR] /usr/bin/python3 benchmarks/peers/easyfsl_protonet.py OUT.json [FILTER]

Case fewshot_protonet_loss_grad_5w5s15q_d<D> (D = 64, 640, 1600), threads 1: a seeded 5-way 5-shot 15-query
episode (support 25 x D, query 75 x D, float32 standard normals, rows grouped by label) whose support and query
tensors require gradients; per call

    model = PrototypicalNetworks(nn.Identity())    # made once, outside the timing
    model.process_support_set(support, support_labels)
    loss = F.cross_entropy(model(query), query_labels)
    loss.backward()

(gradients are reset to None before each call, so every call does the same work).

Which implementation runs, recorded as "peer" in each row:
- "easyfsl.PrototypicalNetworks": KSHOT_EASYFSL_SRC names a directory holding easyfsl's source (the `easyfsl`
  package of https://github.com/sicara/easy-few-shot-learning). Only the files PrototypicalNetworks needs are
  imported (easyfsl.methods.{utils, few_shot_classifier, prototypical_networks}); easyfsl/methods/__init__.py is
  not run, because it imports every method and easyfsl.modules, which need torchvision. Nothing is installed or
  built.
- "torch (easyfsl formula)": otherwise, the same computation written here in plain PyTorch, following easyfsl's
  code (prototypes by torch.nonzero / mean per label, scores = -torch.cdist(query, prototypes), cross_entropy).

The evaluation cases (fewshot_eval_*) have no peer here. FILTER, when given, is searched (as a regular
expression) in "<case>/omp:<threads>". Timing: _harness.time_per_call (Google-Benchmark-like, median of 5).
"""
import importlib
import json
import os
import platform
import sys
import types

import torch
import torch.nn.functional as F
from torch import nn

from _harness import REPETITIONS, parse_args, time_per_call

WAYS, SHOTS, QUERIES = 5, 5, 15
DIMS = [64, 640, 1600]
THREADS = 1
SEED = 20240611
TAG = f"{WAYS}w{SHOTS}s{QUERIES}q"


def load_easyfsl():
    """(PrototypicalNetworks class, source directory) from $KSHOT_EASYFSL_SRC, or (None, reason)."""
    src = os.environ.get("KSHOT_EASYFSL_SRC")
    if not src:
        return None, "KSHOT_EASYFSL_SRC is not set"
    pkg = os.path.join(src, "easyfsl")
    methods = os.path.join(pkg, "methods")
    if not os.path.isfile(os.path.join(methods, "prototypical_networks.py")):
        return None, f"no easyfsl/methods/prototypical_networks.py under {src}"
    try:
        # Register the packages without running their __init__.py (easyfsl.methods' imports torchvision).
        for name, path in (("easyfsl", pkg), ("easyfsl.methods", methods)):
            module = types.ModuleType(name)
            module.__path__ = [path]
            sys.modules[name] = module
        module = importlib.import_module("easyfsl.methods.prototypical_networks")
        return module.PrototypicalNetworks, src
    except Exception as e:  # a source tree this script does not understand: fall back, and say why
        for name in [m for m in sys.modules if m == "easyfsl" or m.startswith("easyfsl.")]:
            del sys.modules[name]
        return None, f"importing easyfsl from {src} failed: {type(e).__name__}: {e}"


class EasyfslFormula(nn.Module):
    """easyfsl's PrototypicalNetworks (FewShotClassifier defaults, identity backbone) in plain PyTorch."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone = backbone
        self.prototypes = torch.tensor(())

    def process_support_set(self, support, support_labels):
        features = self.backbone(support) - torch.tensor(0)  # easyfsl's default feature_centering
        n_way = len(torch.unique(support_labels))
        self.prototypes = torch.cat(
            [features[torch.nonzero(support_labels == label)].mean(0) for label in range(n_way)])

    def forward(self, query):
        features = self.backbone(query) - torch.tensor(0)
        return -torch.cdist(features, self.prototypes)


def reference_loss_and_grads(support, support_labels, query, query_labels):
    """The loss and its gradients in float64 by a direct computation (no cdist), to validate the peer."""
    s = support.detach().double().requires_grad_(True)
    q = query.detach().double().requires_grad_(True)
    protos = torch.stack([s[support_labels == c].mean(0) for c in range(WAYS)])
    dist = ((q[:, None, :] - protos[None, :, :]) ** 2).sum(-1).sqrt()
    loss = F.cross_entropy(-dist, query_labels)
    loss.backward()
    return loss.item(), s.grad, q.grad


def main():
    out_path, selected = parse_args("easyfsl_protonet.py")
    cases = [(d, f"fewshot_protonet_loss_grad_{TAG}_d{d}") for d in DIMS]
    cases = [(d, c) for d, c in cases if selected(f"{c}/omp:{THREADS}")]
    rows = []
    if cases:
        model_class, source = load_easyfsl()
        if model_class is None:
            print(f"easyfsl_protonet.py: {source}; timing the same formula in plain PyTorch", file=sys.stderr)
            model_class, peer, source_note = EasyfslFormula, "torch (easyfsl formula)", source
        else:
            peer, source_note = "easyfsl.PrototypicalNetworks", f"easyfsl source: {source}"
        torch.set_num_threads(THREADS)
        gen = torch.Generator().manual_seed(SEED)
        support_labels = torch.arange(WAYS).repeat_interleave(SHOTS)
        query_labels = torch.arange(WAYS).repeat_interleave(QUERIES)
        for d, case in cases:
            support = torch.randn(WAYS * SHOTS, d, generator=gen, dtype=torch.float32).requires_grad_(True)
            query = torch.randn(WAYS * QUERIES, d, generator=gen, dtype=torch.float32).requires_grad_(True)
            model = model_class(nn.Identity())

            def episode():
                support.grad = None
                query.grad = None
                model.process_support_set(support, support_labels)
                loss = F.cross_entropy(model(query), query_labels)
                loss.backward()
                return loss

            loss = episode().item()
            ref, ref_gs, ref_gq = reference_loss_and_grads(support, support_labels, query, query_labels)
            if (abs(loss - ref) > 1e-4 * max(1.0, abs(ref))
                    or not torch.allclose(support.grad.double(), ref_gs, rtol=1e-3, atol=1e-6)
                    or not torch.allclose(query.grad.double(), ref_gq, rtol=1e-3, atol=1e-6)):
                sys.exit(f"easyfsl_protonet.py: {peer} disagrees with the direct float64 computation for {case}")
            seconds, cpu_per_wall, calls = time_per_call(episode)
            rows.append({
                "case": case,
                "peer": peer,
                "peer_seconds": seconds,
                "threads": THREADS,
                "note": f"forward + backward, identity backbone; {source_note}",
                "calls_per_repetition": calls,
                "repetitions": REPETITIONS,
                "cpu_per_wall": round(cpu_per_wall, 3),
                "torch_version": torch.__version__,
                "python": platform.python_version(),
            })
            print(f"{peer} {case} threads={THREADS}: {seconds * 1e3:.3f} ms per episode "
                  f"(cpu/wall {cpu_per_wall:.2f})", file=sys.stderr)
    with open(out_path, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
