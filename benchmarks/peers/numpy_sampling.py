#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Peer for benchmarks/bench_sampling.cpp: the obvious NumPy episode sampler (numpy.random.Generator.choice).

Usage: /usr/bin/python3 benchmarks/peers/numpy_sampling.py OUT.json [FILTER]

Same data as the kshot cases: 60,000 examples with labels assigned round-robin (row r has class r % C) in
C = 10 or 1,000 classes, and 60,000 x 640 float32 features. One episode:

    classes = rng.choice(C, ways, replace=False)
    for each class c: idx = rng.choice(class_rows[c], shots + queries, replace=False)
                      support += idx[:shots]; query += idx[shots:]
    (gather cases) features[support], features[query]

Cases (labels as in bench_sampling.cpp): sampling_index_<N>w<K>s<Q>q_c<C> (rows only),
sampling_gather_<N>w<K>s<Q>q_c<C>_d640 (rows and gathered features), sampling_batch64_5w5s15q_c10_d640 (64 gathered
episodes per call; NumPy's sampler is single-threaded, so only the 1-thread row is written). peer_seconds is the
time per call (one episode, or 64 for the batch case). FILTER, when given, is searched (as a regular expression,
so a plain word is a substring) in "<case>/omp:<threads>", like --benchmark_filter on the kshot side.

Timing follows Google Benchmark: one warm-up call, a call count grown until one batch lasts at least MIN_TIME (see _harness.py)
seconds, then 5 repetitions of that batch; the reported time is the median of the 5 means per call.
"""
import json
import platform
import sys

import numpy as np

from _harness import REPETITIONS, parse_args, time_per_call

NUM_EXAMPLES = 60000
FEATURE_DIM = 640
BATCH = 64
CASES = [(5, 5, 15, 10), (5, 5, 15, 1000), (20, 1, 15, 1000)]  # (ways, shots, queries, classes)
SEED = 20240611
PEER = "numpy.random.Generator.choice"


def make_sampler(rng, class_rows, ways, shots, queries):
    n_classes = len(class_rows)

    def sample():
        classes = rng.choice(n_classes, ways, replace=False)
        support, query = [], []
        for c in classes:
            idx = rng.choice(class_rows[c], shots + queries, replace=False)
            support.append(idx[:shots])
            query.append(idx[shots:])
        return classes, np.concatenate(support), np.concatenate(query)

    return sample


def validate(sample, features, ways, shots, queries, n_classes):
    """One episode's shape, classes and rows, so that a broken sampler cannot look fast."""
    classes, support, query = sample()
    rows = np.concatenate([support, query])
    ok = (len(set(classes.tolist())) == ways and support.shape == (ways * shots,) and query.shape == (ways * queries,)
          and len(set(rows.tolist())) == rows.size
          and np.array_equal(support % n_classes, np.repeat(classes, shots))
          and np.array_equal(query % n_classes, np.repeat(classes, queries)))
    if ok and features is not None:
        ok = np.array_equal(features[support][3], features[support[3]]) and features[query].shape == (ways * queries, FEATURE_DIM)
    if not ok:
        sys.exit(f"numpy_sampling.py: the NumPy sampler drew an invalid {ways}-way {shots}-shot {queries}-query episode")


def main():
    out_path, selected = parse_args("numpy_sampling.py")

    features = None
    rows = []

    def record(case, seconds, calls, episodes, note):
        rows.append({
            "case": case,
            "peer": PEER,
            "peer_seconds": seconds,
            "threads": 1,
            "episodes_per_call": episodes,
            "peer_episodes_per_second": episodes / seconds,
            "note": note,
            "calls_per_repetition": calls,
            "repetitions": REPETITIONS,
            "numpy_version": np.__version__,
            "python": platform.python_version(),
        })
        print(f"{PEER} {case}: {seconds * 1e6:.2f} us per call ({episodes / seconds:,.0f} episodes/s)", file=sys.stderr)

    for ways, shots, queries, n_classes in CASES:
        tag = f"{ways}w{shots}s{queries}q_c{n_classes}"
        index_case = f"sampling_index_{tag}"
        gather_case = f"sampling_gather_{tag}_d{FEATURE_DIM}"
        batch_case = f"sampling_batch64_{tag}_d{FEATURE_DIM}" if (ways, shots, queries, n_classes) == CASES[0] else None
        want_index = selected(f"{index_case}/omp:1")
        want_gather = selected(f"{gather_case}/omp:1")
        want_batch = batch_case is not None and selected(f"{batch_case}/omp:1")
        if not (want_index or want_gather or want_batch):
            continue
        labels = np.arange(NUM_EXAMPLES) % n_classes
        class_rows = [np.flatnonzero(labels == c) for c in range(n_classes)]
        sample = make_sampler(np.random.default_rng(SEED), class_rows, ways, shots, queries)
        if (want_gather or want_batch) and features is None:
            features = np.random.default_rng(SEED + 1).standard_normal((NUM_EXAMPLES, FEATURE_DIM), dtype=np.float32)
        validate(sample, features if (want_gather or want_batch) else None, ways, shots, queries, n_classes)

        if want_index:
            seconds, _, calls = time_per_call(sample)
            record(index_case, seconds, calls, 1, "rows only")

        def gathered():
            classes, support, query = sample()
            return features[support], features[query]

        if want_gather:
            seconds, _, calls = time_per_call(gathered)
            record(gather_case, seconds, calls, 1, "rows, then features[support], features[query]")
        if want_batch:
            seconds, _, calls = time_per_call(lambda: [gathered() for _ in range(BATCH)])
            record(batch_case, seconds, calls, BATCH, f"{BATCH} gathered episodes in a Python loop (single-threaded)")
    with open(out_path, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
