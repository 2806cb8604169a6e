#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Peer for benchmarks/bench_losses.cpp: pytorch-metric-learning's losses (and the batch-hard miner), forward
and backward in PyTorch, at 1 and 2 threads.

Usage: KSHOT_PML_SRC=DIR /usr/bin/python3 benchmarks/peers/pml_losses.py OUT.json [FILTER]

KSHOT_PML_SRC names a directory that holds pytorch-metric-learning's source package (the directory that
contains `pytorch_metric_learning/`, i.e. the `src` directory of a checkout of
https://github.com/KevinMusgrave/pytorch-metric-learning). The package is imported from there: nothing is
installed, built or copied. It needs Debian's python3-torch, python3-numpy, python3-scipy and python3-tqdm
(`scripts/setup --bench` installs them). Without KSHOT_PML_SRC the script writes no rows and says why: the
comparison needs the peer itself.

Cases loss_<name>_f32_n<N>_d128 (N = 256, 1024) at 1 and 2 threads, the same as bench_losses.cpp: a seeded
float32 batch of N standard-normal rows of width 128, labels i // 4 over N / 4 classes (4 rows per class,
rows shuffled with the seed), and per call

    emb.grad = None; loss_fn.zero_grad(set_to_none=True)   # so every call does the same work
    loss = loss_fn(emb, labels[, miner(emb, labels)]); loss.backward()

with PML's defaults (and, for the proxy and large-margin losses, num_classes = N / 4, embedding_size = 128;
their parameters get gradients too). triplet_batchhard runs BatchHardMiner() inside the timed call and passes
its triplets to TripletMarginLoss(margin=0.2). FILTER, when given, is searched (as a regular expression) in
"<case>/omp:<threads>". Timing: _harness.time_per_call (Google-Benchmark-like, median of 5).
"""
import json
import os
import platform
import sys

import torch

from _harness import REPETITIONS, openblas, parse_args, time_per_call

SIZES = [256, 1024]
DIM = 128
PER_CLASS = 4
THREADS = [1, 2]
SEED = 20261128
# NT-Xent and lifted structure build |positive pairs| x |negative pairs| matrices (several bytes per entry):
# at N = 1024 that is 3,072 x 1,044,480 entries, tens of GB. Past this many entries the case is recorded as
# skipped, with the reason, instead of exhausting the machine's memory.
PAIR_MATRIX_LIMIT = 4e8
PAIR_MATRIX_LOSSES = {"ntxent", "lifted"}


def load_pml():
    """(losses module, miners module, version, source directory) or (None, None, None, reason)."""
    src = os.environ.get("KSHOT_PML_SRC")
    if not src:
        return None, None, None, "KSHOT_PML_SRC is not set"
    if not os.path.isfile(os.path.join(src, "pytorch_metric_learning", "__init__.py")):
        return None, None, None, f"no pytorch_metric_learning/__init__.py under {src}"
    sys.path.insert(0, src)
    try:
        import pytorch_metric_learning as pml
        from pytorch_metric_learning import losses, miners
    except Exception as e:  # a missing dependency (scipy, tqdm) or a tree this script does not understand
        return None, None, None, f"importing pytorch_metric_learning from {src} failed: {type(e).__name__}: {e}"
    return losses, miners, pml.__version__, src


def make_cases(losses, miners, classes):
    """name -> (loss module, miner or None)."""
    return {
        "contrastive": (losses.ContrastiveLoss(), None),
        "triplet": (losses.TripletMarginLoss(), None),
        "triplet_batchhard": (losses.TripletMarginLoss(margin=0.2), miners.BatchHardMiner()),
        "ntxent": (losses.NTXentLoss(), None),
        "supcon": (losses.SupConLoss(), None),
        "multi_similarity": (losses.MultiSimilarityLoss(), None),
        "circle": (losses.CircleLoss(), None),
        "proxy_nca": (losses.ProxyNCALoss(num_classes=classes, embedding_size=DIM), None),
        "proxy_anchor": (losses.ProxyAnchorLoss(num_classes=classes, embedding_size=DIM), None),
        "arcface": (losses.ArcFaceLoss(num_classes=classes, embedding_size=DIM), None),
        "cosface": (losses.CosFaceLoss(num_classes=classes, embedding_size=DIM), None),
        "npairs": (losses.NPairsLoss(), None),
        "lifted": (losses.LiftedStructureLoss(), None),
        "margin": (losses.MarginLoss(), None),
        "fastap": (losses.FastAPLoss(), None),
    }


def main():
    out_path, selected = parse_args("pml_losses.py")
    wanted = [(n, t) for n in SIZES for t in THREADS]
    rows = []
    losses, miners, version, source = load_pml()
    if losses is None:
        print(f"pml_losses.py: {source}; no pytorch-metric-learning rows (see the script's docstring)",
              file=sys.stderr)
    else:
        blas = openblas()  # torch.set_num_threads does not reach OpenBLAS's own pool
        for n, threads in wanted:
            classes = n // PER_CLASS
            gen = torch.Generator().manual_seed(SEED + n)
            emb = torch.randn(n, DIM, generator=gen, dtype=torch.float32).requires_grad_(True)
            labels = (torch.arange(n) // PER_CLASS)[torch.randperm(n, generator=gen)]
            torch.manual_seed(SEED)  # the proxies' and class weights' initialisation
            for name, (loss_fn, miner) in make_cases(losses, miners, classes).items():
                case = f"loss_{name}_f32_n{n}_d{DIM}"
                if not selected(f"{case}/omp:{threads}"):
                    continue
                positives = n * (PER_CLASS - 1)
                negatives = n * (n - PER_CLASS)
                if name in PAIR_MATRIX_LOSSES and positives * negatives > PAIR_MATRIX_LIMIT:
                    rows.append({
                        "case": case, "peer": "pytorch-metric-learning", "peer_seconds": None, "threads": threads,
                        "note": (f"not run: PML's {name} builds a {positives} x {negatives} pair matrix "
                                 f"({positives * negatives:.2e} entries), beyond this machine's memory"),
                    })
                    print(f"pytorch-metric-learning {case} threads={threads}: skipped ({rows[-1]['note']})",
                          file=sys.stderr)
                    continue
                torch.set_num_threads(threads)
                if blas is not None:
                    blas.openblas_set_num_threads(threads)

                def call():
                    emb.grad = None
                    loss_fn.zero_grad(set_to_none=True)
                    if miner is not None:
                        loss = loss_fn(emb, labels, miner(emb, labels))
                    else:
                        loss = loss_fn(emb, labels)
                    loss.backward()
                    return loss

                value = call().item()
                if not torch.isfinite(torch.tensor(value)) or emb.grad is None:
                    sys.exit(f"pml_losses.py: {case} gave a non-finite loss or no gradient")
                seconds, cpu_per_wall, calls = time_per_call(call)
                rows.append({
                    "case": case,
                    "peer": "pytorch-metric-learning",
                    "peer_seconds": seconds,
                    "threads": threads,
                    "note": f"forward + backward, PML {version} defaults; source: {source}",
                    "peer_loss": value,
                    "calls_per_repetition": calls,
                    "repetitions": REPETITIONS,
                    "cpu_per_wall": round(cpu_per_wall, 3),
                    "torch_version": torch.__version__,
                    "python": platform.python_version(),
                })
                print(f"pytorch-metric-learning {case} threads={threads}: {seconds * 1e3:.3f} ms "
                      f"(cpu/wall {cpu_per_wall:.2f})", file=sys.stderr)
    with open(out_path, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
