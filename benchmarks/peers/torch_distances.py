#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Peer for benchmarks/bench_distances.cpp: torch.cdist (p=2) on the same shapes and thread counts.

Usage: /usr/bin/python3 benchmarks/peers/torch_distances.py OUT.json [FILTER]

Writes a JSON list of rows {"case", "peer", "peer_seconds", "threads", ...}. One torch.cdist timing is the
peer of two kshot cases: pairwise_euclidean_* (same output) and pairwise_sqeuclidean_* (torch has no squared
cdist, so torch does the same work plus a sqrt). FILTER, when given, is searched (as a regular expression,
so a plain word is a substring) in "<case>/omp:<threads>", like --benchmark_filter on the kshot side.

Timing follows Google Benchmark: one warm-up call, a call count grown until one batch lasts at least MIN_TIME (see _harness.py)
seconds, then 5 repetitions of that batch; the reported time is the median of the 5 means per call.
"""
import json
import platform
import sys

import torch

from _harness import openblas, REPETITIONS, parse_args, time_per_call

SHAPES = [(4096, 4096, 128), (75, 5, 640), (100000, 100, 128)]  # (n, m, d) as in bench_distances.cpp
THREAD_COUNTS = [1, 2]
SEED = 20240611


def cdist_path(n, m, mode="use_mm_for_euclid_dist_if_necessary"):
    """Which algorithm torch.cdist (p=2) picks: the matmul trick when either side has more than 25 rows."""
    if mode == "use_mm_for_euclid_dist" or (mode == "use_mm_for_euclid_dist_if_necessary" and (n > 25 or m > 25)):
        return "mm (norm trick)"
    return "direct"


def main():
    out_path, selected = parse_args("torch_distances.py")

    blas = openblas()
    gen = torch.Generator().manual_seed(SEED)
    rows = []
    for n, m, d in SHAPES:
        tag = f"f32_{n}x{m}x{d}"
        cases = [f"pairwise_sqeuclidean_{tag}", f"pairwise_euclidean_{tag}"]
        a = b = None
        for threads in THREAD_COUNTS:
            wanted = [c for c in cases if selected(f"{c}/omp:{threads}")]
            if not wanted:
                continue
            if a is None:
                a = torch.randn(n, d, generator=gen, dtype=torch.float32)
                b = torch.randn(m, d, generator=gen, dtype=torch.float32)
                # Validate once against a direct float64 computation so a broken call cannot look fast.
                got = torch.cdist(a, b)
                ref = ((a[:8, None, :].double() - b[None, :8, :].double()) ** 2).sum(-1).sqrt()
                if not torch.allclose(got[:8, :8].double(), ref, rtol=1e-3, atol=1e-3):
                    sys.exit(f"torch_distances.py: torch.cdist disagrees with the direct computation for {tag}")
            torch.set_num_threads(threads)
            if blas is not None:
                blas.openblas_set_num_threads(threads)
            with torch.inference_mode():
                seconds, cpu_per_wall, calls = time_per_call(lambda: torch.cdist(a, b))
            flops = 2.0 * n * m * d
            for case in wanted:
                rows.append({
                    "case": case,
                    "peer": "torch.cdist",
                    "peer_seconds": seconds,
                    "threads": threads,
                    "flops": flops,
                    "peer_gflops": flops / seconds * 1e-9,
                    "compute_mode": "use_mm_for_euclid_dist_if_necessary",
                    "path": cdist_path(n, m),
                    "note": "Euclidean output (sqrt included)" if "sqeuclidean" in case else "same output",
                    "calls_per_repetition": calls,
                    "repetitions": REPETITIONS,
                    "cpu_per_wall": round(cpu_per_wall, 3),
                    "blas_threads": blas.openblas_get_num_threads() if blas is not None else None,
                    "torch_version": torch.__version__,
                    "python": platform.python_version(),
                })
            print(f"torch.cdist {tag} threads={threads}: {seconds * 1e3:.3f} ms "
                  f"({flops / seconds * 1e-9:.1f} GFLOP/s, cpu/wall {cpu_per_wall:.2f})", file=sys.stderr)
    with open(out_path, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
