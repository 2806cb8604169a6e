#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Peer for benchmarks/bench_train.cpp: episodic training of a prototypical network with an MLP backbone
(Linear(784, 256), ReLU, Linear(256, 64)) and Adam in PyTorch, one thread, on Fashion-MNIST.

Usage: [KSHOT_EASYFSL_SRC=DIR] [KSHOT_FASHION_MNIST_DIR=DIR] /usr/bin/python3 benchmarks/peers/easyfsl_train.py OUT.json [FILTER]

Data (as bench_train.cpp): the training images of the base categories (T-shirt/top, Trouser, Pullover, Dress,
Coat), pixels / 255 centred by the mean base training image; 5-way 5-shot 15-query episodes.

Case train_protonet_mlp784x256x64_adam_5w5s15q, threads 1: per call (one training step)

    support, query = features[support_rows], features[query_rows]   # episode rows drawn before the timing
    model.process_support_set(support, support_labels)              # easyfsl: backbone(support), prototypes
    loss = F.cross_entropy(model(query), query_labels)              # backbone(query), -cdist scores
    optimizer.zero_grad(); loss.backward(); optimizer.step()        # torch.optim.Adam(lr=1e-3)

Cases train_protonet_accuracy_seed<S> (S = 1, 2, 3): torch.manual_seed(S), a fresh model, 2,000 training
episodes drawn with numpy's default_rng(S), then ProtoNet (Euclidean) on the embedded test images: 5-way
1-shot and 5-shot 15-query on the novel categories (Sandal, Shirt, Sneaker, Bag, Ankle boot) and 5-shot on
the base ones, 600 episodes each; the row carries novel_1shot, novel_5shot, base_5shot (and the untrained
model's) and peer_seconds is the training time. Set KSHOT_TRAIN_ACCURACY=0 to skip these (about a minute), or
KSHOT_TRAIN_SEEDS=4,5,6 for other seeds (bench_train.cpp has seeds 1, 2, 3).

Which implementation runs, recorded as "peer": "easyfsl.PrototypicalNetworks" when KSHOT_EASYFSL_SRC names
a directory with easyfsl's source (imported as in easyfsl_protonet.py), else "torch (easyfsl formula)", the
same computation in plain PyTorch. Timing: _harness.time_per_call (Google-Benchmark-like, median of 5).
"""
import gzip
import json
import os
import platform
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from _harness import REPETITIONS, parse_args, time_per_call
from easyfsl_protonet import EasyfslFormula, load_easyfsl

try:
    from _harness import openblas
except ImportError:  # an older harness
    openblas = None

WAYS, SHOTS, QUERIES = 5, 5, 15
THREADS = 1
BASE, NOVEL = [0, 1, 2, 3, 4], [5, 6, 7, 8, 9]
ACCURACY_EPISODES = 2000
EVAL_EPISODES = 600
STEP_CASE = "train_protonet_mlp784x256x64_adam_5w5s15q"


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = struct.unpack(">" + "I" * dims, data[4:4 + 4 * dims])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_split(directory, prefix):
    def find(name):
        for candidate in (os.path.join(directory, name + ".gz"), os.path.join(directory, name)):
            if os.path.exists(candidate):
                return candidate
        sys.exit(f"easyfsl_train.py: {name} not found under {directory}")
    images = read_idx(find(f"{prefix}-images-idx3-ubyte")).reshape(-1, 784).astype(np.float32) / 255.0
    labels = read_idx(find(f"{prefix}-labels-idx1-ubyte")).astype(np.int64)
    return images, labels


def mlp():
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 64))


class Sampler:
    """N-way K-shot Q-query episodes of `classes` (rows grouped by episode label)."""

    def __init__(self, labels, classes, shots, seed):
        self.rows = {c: np.flatnonzero(labels == c) for c in classes}
        self.classes = np.array(classes)
        self.shots = shots
        self.rng = np.random.default_rng(seed)

    def episode(self):
        chosen = self.rng.choice(self.classes, WAYS, replace=False)
        support, query = [], []
        for c in chosen:
            rows = self.rng.choice(self.rows[c], self.shots + QUERIES, replace=False)
            support.append(rows[:self.shots])
            query.append(rows[self.shots:])
        return np.concatenate(support), np.concatenate(query)


SUPPORT_LABELS = {k: torch.arange(WAYS).repeat_interleave(k) for k in (1, 5)}
QUERY_LABELS = torch.arange(WAYS).repeat_interleave(QUERIES)


def train_step(model, optimizer, features, support_rows, query_rows):
    support = features[support_rows]
    query = features[query_rows]
    model.process_support_set(support, SUPPORT_LABELS[SHOTS])
    loss = F.cross_entropy(model(query), QUERY_LABELS)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss


def protonet_accuracy(embedded, labels, classes, shots, seed):
    """Mean 5-way accuracy of ProtoNet (Euclidean) over EVAL_EPISODES episodes of the embedded rows."""
    sampler = Sampler(labels, classes, shots, seed)
    correct = []
    truth = np.repeat(np.arange(WAYS), QUERIES)
    for _ in range(EVAL_EPISODES):
        s, q = sampler.episode()
        prototypes = embedded[s].reshape(WAYS, shots, -1).mean(axis=1)
        d = ((embedded[q][:, None, :] - prototypes[None, :, :]) ** 2).sum(-1)
        correct.append(float((d.argmin(axis=1) == truth).mean()))
    return float(np.mean(correct))


def evaluate(backbone, test, test_labels):
    with torch.no_grad():
        emb = backbone(test).numpy()
    return {
        "novel_1shot": protonet_accuracy(emb, test_labels, NOVEL, 1, 2026),
        "novel_5shot": protonet_accuracy(emb, test_labels, NOVEL, 5, 2026),
        "base_5shot": protonet_accuracy(emb, test_labels, BASE, 5, 2026),
    }


def main():
    out_path, selected = parse_args("easyfsl_train.py")
    want_step = selected(f"{STEP_CASE}/omp:{THREADS}")
    seed_list = [int(s) for s in os.environ.get("KSHOT_TRAIN_SEEDS", "1,2,3").split(",") if s.strip()]
    seeds = [s for s in seed_list if selected(f"train_protonet_accuracy_seed{s}/omp:{THREADS}")]
    if os.environ.get("KSHOT_TRAIN_ACCURACY", "1") == "0":
        seeds = []
    rows = []
    if not want_step and not seeds:
        with open(out_path, "w") as f:
            json.dump(rows, f)
        return
    torch.set_num_threads(THREADS)
    blas = openblas() if openblas else None
    if blas is not None:
        blas.openblas_set_num_threads(THREADS)
    model_class, source = load_easyfsl()
    if model_class is None:
        print(f"easyfsl_train.py: {source}; timing the same formula in plain PyTorch", file=sys.stderr)
        model_class, peer, source_note = EasyfslFormula, "torch (easyfsl formula)", source
    else:
        peer, source_note = "easyfsl.PrototypicalNetworks", f"easyfsl source: {source}"

    directory = os.environ.get("KSHOT_FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist")
    train_x, train_y = load_split(directory, "train")
    test_x, test_y = load_split(directory, "t10k")
    mean = train_x[np.isin(train_y, BASE)].mean(axis=0)
    train = torch.from_numpy(train_x - mean)
    test = torch.from_numpy(test_x - mean)
    common = {"threads": THREADS, "torch_version": torch.__version__, "python": platform.python_version()}

    if want_step:
        torch.manual_seed(0)
        model = model_class(mlp())
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        sampler = Sampler(train_y, BASE, SHOTS, 1)
        episodes = [tuple(torch.from_numpy(r) for r in sampler.episode()) for _ in range(4096)]
        counter = [0]

        def step():
            s, q = episodes[counter[0] % len(episodes)]
            counter[0] += 1
            return train_step(model, optimizer, train, s, q)

        seconds, cpu_per_wall, calls = time_per_call(step)
        rows.append(dict(common, case=STEP_CASE, peer=peer, peer_seconds=seconds, flops=90.1e6,
                         note=f"Linear(784,256)-ReLU-Linear(256,64) backbone, Adam(lr=1e-3), gather + forward + "
                              f"loss + backward + step; {source_note}",
                         calls_per_repetition=calls, repetitions=REPETITIONS, cpu_per_wall=round(cpu_per_wall, 3)))
        print(f"{peer} {STEP_CASE}: {seconds * 1e3:.3f} ms per episode ({1 / seconds:.0f} episodes/s, "
              f"cpu/wall {cpu_per_wall:.2f})", file=sys.stderr)

    for seed in seeds:
        torch.manual_seed(seed)
        backbone = mlp()
        model = model_class(backbone)
        untrained = evaluate(backbone, test, test_y)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        sampler = Sampler(train_y, BASE, SHOTS, seed)
        start = time.perf_counter()
        for _ in range(ACCURACY_EPISODES):
            s, q = sampler.episode()
            train_step(model, optimizer, train, torch.from_numpy(s), torch.from_numpy(q))
        seconds = time.perf_counter() - start
        trained = evaluate(backbone, test, test_y)
        case = f"train_protonet_accuracy_seed{seed}"
        rows.append(dict(common, case=case, peer=peer, peer_seconds=seconds, episodes=ACCURACY_EPISODES,
                         **trained, **{"untrained_" + k: v for k, v in untrained.items()},
                         note=f"training time of {ACCURACY_EPISODES} episodes (sampling included); accuracy "
                              f"fields: ProtoNet on embedded test images, {EVAL_EPISODES} episodes; {source_note}"))
        print(f"{peer} {case}: novel 1-shot {100 * trained['novel_1shot']:.2f}% (untrained "
              f"{100 * untrained['novel_1shot']:.2f}%), novel 5-shot {100 * trained['novel_5shot']:.2f}% "
              f"(untrained {100 * untrained['novel_5shot']:.2f}%), base 5-shot {100 * trained['base_5shot']:.2f}%, "
              f"{seconds:.1f} s", file=sys.stderr)
    with open(out_path, "w") as f:
        json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
