#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Joins kshot's Google Benchmark results with the peers' timings and checks the performance targets.

Usage (scripts/bench runs it; use /usr/bin/python3):
  compare.py [--results FILE]... [--peers FILE]... [--cmake-cache FILE] [--out DIR]

  --results     Google Benchmark JSON (--benchmark_out_format=json), or several merged as scripts/bench does
                ({"context", "contexts", "benchmarks"}); default build/bench/results.json
  --peers       peer JSON files: a list (or JSON lines) of {"case", "peer", "peer_seconds", "threads", ...};
                default build/bench/peers/*.json
  --cmake-cache the build's CMakeCache.txt, for the compiler and flags; default build/bench/CMakeCache.txt
  --out         where compare.json and compare.md go; default build/bench

Google Benchmark rows are named `<case>/omp:<threads>/...` and labelled `<case>`. A row whose label starts with
a key of YARDSTICKS is not a kshot case but an in-run peer (e.g. the bare Eigen GEMM of the same shape); every
other label is a kshot case. Times are medians over the repetitions.

compare.json: a list of rows {"case", "threads", "kshot_seconds", "peer", "peer_seconds", "speedup", ...}, one
per (case, threads, peer), with speedup = peer_seconds / kshot_seconds (> 1: kshot is faster; against a
yardstick it is the fraction of the yardstick's throughput that kshot reaches). Extra fields: kshot_gflops,
peer_gflops, kshot_cv (coefficient of variation over the repetitions), target, status (PASS/MISS/null), note.
"""
import argparse
import datetime
import glob
import json
import os
import platform
import re
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# ---- the data-driven part: later benchmarks add entries here ---------------------------------------------------

# In-run yardsticks: Google Benchmark rows whose label starts with the key are reported as this peer name.
YARDSTICKS = {
    "eigen_gemm_": "eigen_gemm_same_shape",
    "sampling_memcpy_rows_": "memcpy_same_rows",
    "loss_yardstick_gemm_": "eigen_gemm_same_shape",
    "train_yardstick_gemm_": "eigen_gemm_same_shape",
}

# Which yardstick a kshot case is compared with: case prefix -> function(case) -> the yardstick's label.
# pairwise_<metric>_<dtype>_<n>x<m>x<d> -> eigen_gemm_<dtype>_<n>x<m>x<d>
YARDSTICK_OF = {
    "pairwise_": lambda case: "eigen_gemm_" + case.split("_", 2)[2],
    # sampling_gather_<N>w<K>s<Q>q_c<C>_d<D> -> sampling_memcpy_rows_<N>w<K>s<Q>q_c<C>_d<D>
    "sampling_gather_": lambda case: "sampling_memcpy_rows_" + case[len("sampling_gather_"):],
    # loss_<name>_f32_n<N>_d<D> -> loss_yardstick_gemm_f32_<N>x<N>x<D> (X X^T of the batch)
    "loss_": lambda case: "loss_yardstick_gemm_f32_{0}x{0}x{1}".format(*re.search(r"_n(\d+)_d(\d+)$", case).groups()),
    # train_protonet_mlp784x256x64_adam_5w5s15q -> train_yardstick_gemm_mlp784x256x64_5w5s15q (same GEMM work)
    "train_protonet_mlp": lambda case: "train_yardstick_gemm_" + re.sub(r"_adam|_sgd", "", case[len("train_protonet_"):]),
}

# Absolute floors on kshot's own rate: case prefix -> (peer name, threads, minimum calls per second). A kshot case
# that matches (at that thread count) gets an extra row against this pseudo-peer, whose peer_seconds is the time
# per call at exactly the floor rate, so its speedup is kshot's rate / the floor; give the peer a TARGETS entry
# of 1.0. (One call of sampling_index_* is one episode, so calls/s are episodes/s.)
FLOORS = {
    "sampling_index_": ("floor_1M_episodes_per_s", 1, 1e6),
}

# Targets: case prefix -> {peer: (minimum speedup, wording)}. The longest matching prefix applies; a row whose
# (case, peer) has a target gets PASS or MISS. speedup = peer_seconds / kshot_seconds at the same thread count.
TARGETS = {
    "pairwise_sqeuclidean_": {
        "eigen_gemm_same_shape": (0.85, "squared Euclidean >= 85% of same-shape GEMM"),
        "torch.cdist": (1.5, ">= 1.5x torch.cdist at the same thread count"),
    },
    "sampling_index_": {
        "floor_1M_episodes_per_s": (1.0, "index sampling >= 1,000,000 episodes/s on one thread"),
    },
    "sampling_gather_": {
        "memcpy_same_rows": (0.5, "sampling + gathering d = 640 floats >= 50% of memcpy bandwidth for the same rows"),
    },
    # One target per dimension (d = 1600 has none); the peer is easyfsl itself when its source was given
    # (KSHOT_EASYFSL_SRC), else the same formula in plain PyTorch: the target is the same against either.
    "fewshot_protonet_loss_grad_5w5s15q_d64": {
        "easyfsl.PrototypicalNetworks": (10.0, "ProtoNet episode loss + gradients, d = 64: >= 10x easyfsl (1 thread)"),
        "torch (easyfsl formula)": (10.0, "ProtoNet episode loss + gradients, d = 64: >= 10x easyfsl's formula in PyTorch (1 thread)"),
    },
    "fewshot_protonet_loss_grad_5w5s15q_d640": {
        "easyfsl.PrototypicalNetworks": (10.0, "ProtoNet episode loss + gradients, d = 640: >= 10x easyfsl (1 thread)"),
        "torch (easyfsl formula)": (10.0, "ProtoNet episode loss + gradients, d = 640: >= 10x easyfsl's formula in PyTorch (1 thread)"),
    },
}

# Metric-learning losses (bench_losses.cpp, peers/pml_losses.py): every loss against the same-shape GEMM (at any
# thread count) and against pytorch-metric-learning on one thread.
# Episodic training (bench_train.cpp, peers/easyfsl_train.py): one training step of a ProtoNet with an MLP
# 784 -> 256 -> 64 and Adam, against PyTorch (easyfsl's PrototypicalNetworks, or its formula) and against the
# same GEMM work done by bare Eigen products (the fraction of the one-core GEMM limit the whole step reaches).
TARGETS["train_protonet_mlp784x256x64_adam_5w5s15q"] = {
    "easyfsl.PrototypicalNetworks": (2.0, "ProtoNet + MLP training step (Adam): >= 2x easyfsl in PyTorch (1 thread)", 1),
    "torch (easyfsl formula)": (2.0, "ProtoNet + MLP training step (Adam): >= 2x easyfsl's formula in PyTorch (1 thread)", 1),
    "eigen_gemm_same_shape": (0.7, "ProtoNet + MLP training step >= 70% of bare GEMM throughput for the same products", 1),
}

TARGETS["loss_"] = {
    "eigen_gemm_same_shape": (1 / 3, "loss value + gradient within 3x one same-shape GEMM (X X^T)"),
    "pytorch-metric-learning": (3.0, ">= 3x pytorch-metric-learning forward + backward (1 thread)", 1),
}

# Distillation losses (bench_distill.cpp, peers/torchdistill_losses.py): KD at 256 x 1000 classes and RKD at 256 x 128,
# value + gradient, against torchdistill's losses in PyTorch (or their formulas in plain PyTorch when the source is
# not given), one thread each.
TARGETS["distill_kd_"] = {
    "torchdistill.KDLoss": (4.0, "KD value + gradient, 256 x 1000: >= 4x torchdistill's KDLoss (1 thread)", 1),
    "torch (torchdistill formula)": (4.0, "KD value + gradient, 256 x 1000: >= 4x torchdistill's formula in PyTorch (1 thread)", 1),
}
TARGETS["distill_rkd_"] = {
    "torchdistill.RKDLoss": (4.0, "RKD (distance + angle) value + gradient, 256 x 128: >= 4x torchdistill's RKDLoss (1 thread)", 1),
    "torch (torchdistill formula)": (4.0, "RKD value + gradient, 256 x 128: >= 4x torchdistill's formula in PyTorch (1 thread)", 1),
}

# Notes printed under the table for a (case prefix, peer) pair.
PEER_NOTES = {
    ("train_protonet_mlp", "eigen_gemm_same_shape"):
        "For the train_protonet_mlp* rows, eigen_gemm_same_shape is the five single-threaded Eigen products of one "
        "training step (X W1^T, H W2^T, dE^T H, dE W2, dH^T X: 90.1 MFLOP) in the same binary and run: the speedup "
        "column is the fraction of bare-GEMM throughput the whole step (sampling, gather, forward, loss, backward, "
        "Adam) reaches.",
    ("train_protonet_accuracy_", "easyfsl.PrototypicalNetworks"):
        "train_protonet_accuracy_seed<S>: 2,000 training episodes from seed S, then 600 test episodes per setting; "
        "the accuracies (novel_1shot, novel_5shot, base_5shot and the untrained ones) are in the kshot counters of "
        "results.json and in the peer's row of compare.json; peer_seconds / kshot_seconds compares wall time of "
        "training plus evaluation, not a target.",
    ("train_protonet_accuracy_", "torch (easyfsl formula)"):
        "train_protonet_accuracy_seed<S>: 2,000 training episodes from seed S, then 600 test episodes per setting; "
        "the accuracies (novel_1shot, novel_5shot, base_5shot and the untrained ones) are in the kshot counters of "
        "results.json and in the peer's row of compare.json; peer_seconds / kshot_seconds compares wall time of "
        "training plus evaluation, not a target.",
    ("pairwise_sqeuclidean_", "torch.cdist"):
        "torch has no squared cdist: the torch.cdist peer of the squared-Euclidean cases also takes a sqrt "
        "(it is the same timing as the Euclidean case's peer).",
    ("pairwise_", "eigen_gemm_same_shape"):
        "eigen_gemm_same_shape is `out.noalias() = a * b.transpose()` (row-major, same OpenMP threads) in the "
        "same binary and run: its speedup column is the fraction of bare-GEMM throughput kshot reaches.",
    ("sampling_", "floor_1M_episodes_per_s"):
        "floor_1M_episodes_per_s is not a measurement: its time is 1 µs per episode (the 1,000,000 episodes/s "
        "target), so the speedup column is kshot's episodes/s divided by one million.",
    ("sampling_gather_", "memcpy_same_rows"):
        "memcpy_same_rows copies, with one memcpy per 640-float row, the support and query rows of 4,096 "
        "precomputed episodes of the same sampler (cycled) into one buffer, in the same binary and run: the "
        "speedup column is kshot's sample-and-gather bandwidth as a fraction of bare memcpy's for the same bytes.",
    ("sampling_", "numpy.random.Generator.choice"):
        "numpy.random.Generator.choice is the obvious NumPy sampler (choice of the classes, then choice of "
        "shots + queries rows per class, then features[rows] for the gather cases) on the same data; it is "
        "single-threaded, so it has 1-thread rows only.",
    ("fewshot_protonet_loss_grad_", "easyfsl.PrototypicalNetworks"):
        "easyfsl.PrototypicalNetworks is easyfsl's own class (imported from the source tree named by "
        "KSHOT_EASYFSL_SRC) with an nn.Identity backbone: process_support_set, forward, F.cross_entropy and "
        "backward to the support and query tensors, per episode, in PyTorch on one thread.",
    ("fewshot_protonet_loss_grad_", "torch (easyfsl formula)"):
        "torch (easyfsl formula) is easyfsl's PrototypicalNetworks computation written in plain PyTorch "
        "(prototypes by nonzero/mean per label, -torch.cdist scores, F.cross_entropy, backward), used because "
        "KSHOT_EASYFSL_SRC did not name an easyfsl source tree; it times the same as easyfsl within noise.",
    ("loss_", "eigen_gemm_same_shape"):
        "For the loss_* rows, eigen_gemm_same_shape is `out.noalias() = x * x.transpose()` on the same N x 128 "
        "float batch in the same binary and run: a speedup of 0.333 or more means value + gradient within 3x one "
        "GEMM of the distance matrix's shape.",
    ("loss_", "pytorch-metric-learning"):
        "pytorch-metric-learning is PML itself, imported from the source tree named by KSHOT_PML_SRC "
        "(benchmarks/peers/pml_losses.py), with its defaults, forward and backward in PyTorch on the same shapes "
        "and label structure (4 rows per class); rows with no time are cases PML cannot run here (see their note).",
    ("fewshot_eval_", None):
        "fewshot_eval_* has no peer: one call is evaluate_episodes over 10,000 episodes (sample, gather, fit, "
        "predict, count), so episodes/s = 10,000 / the kshot time; no target.",
}

# Retrieval (bench_retrieval): kshot::FlatIndex against FAISS's IndexFlatIP of the same case, in the same binary.
YARDSTICKS["faiss_flatip_"] = "faiss.IndexFlatIP"
# retrieval_flatip_<tag> -> faiss_flatip_<tag>
YARDSTICK_OF["retrieval_flatip_"] = lambda case: "faiss_flatip_" + case[len("retrieval_flatip_"):]
# retrieval_noscreen_flatip_<tag> (bfloat16 screening off) -> faiss_flatip_<tag>; no target
YARDSTICK_OF["retrieval_noscreen_flatip_"] = lambda case: "faiss_flatip_" + case[len("retrieval_noscreen_flatip_"):]
TARGETS["retrieval_flatip_f32_1000000x128_q1000_k100"] = {
    "faiss.IndexFlatIP": (1.7, "exact top-100 over 1M x 128, 1,000 queries: >= 1.7x FAISS IndexFlatIP queries/s (2 threads)", 2),
}
TARGETS["retrieval_flatip_f32_1000000x128_q1_k100"] = {
    "faiss.IndexFlatIP": (1.7, "exact top-100 over 1M x 128, one query: latency >= 1.7x better than FAISS IndexFlatIP (2 threads)", 2),
}
PEER_NOTES[("retrieval_flatip_", "faiss.IndexFlatIP")] = (
    "faiss.IndexFlatIP is FAISS 1.7.3 (libfaiss-dev, OpenBLAS) in the same binary and run, with omp_set_num_threads and "
    "openblas_set_num_threads at the row's thread count; run it with OMP_WAIT_POLICY=PASSIVE (recorded in the context), "
    "else OpenBLAS's and OpenMP's workers spin on the same cores. Both are exact: kshot's counters id_mismatch and "
    "set_mismatch count result positions whose id differs from FAISS's and kshot ids missing from FAISS's top-k "
    "(float rounding at the k-th place only)."
)

# Compile time (benchmarks/compile_times.py, `scripts/bench compile`): CPU seconds (user + system) of one g++
# -O2 -march=native compile, not a time per call. Each example against yardstick A (<Eigen/Dense> and one float
# GEMM), the file holding only <kshot/kshot.hpp> against yardstick B (only <Eigen/Dense>), compiled in the same
# run; speedup = yardstick seconds / kshot seconds, so "at most 6x the yardstick" is a speedup >= 1/6.
YARDSTICKS["compile_yardstick_eigen_gemm"] = "eigen_dense_float_gemm"
YARDSTICKS["compile_yardstick_include_eigen"] = "include_eigen_dense"
YARDSTICK_OF["compile_example_"] = lambda case: "compile_yardstick_eigen_gemm"
YARDSTICK_OF["compile_include_kshot"] = lambda case: "compile_yardstick_include_eigen"
TARGETS["compile_example_"] = {
    "eigen_dense_float_gemm": (1 / 6, "compiling an example (g++ -O2 -march=native, CPU s) takes at most 6x a file "
                                      "with <Eigen/Dense> and one float GEMM"),
}
TARGETS["compile_include_kshot"] = {
    "include_eigen_dense": (0.5, "compiling a file holding only #include <kshot/kshot.hpp> takes at most 2x one "
                                 "holding only #include <Eigen/Dense>"),
}
PEER_NOTES[("compile_", "eigen_dense_float_gemm")] = (
    "compile_* rows are not times per call: kshot_seconds and peer_seconds are the median CPU seconds (user + "
    "system, from wait4) of one compile (-c) with the examples' flags and definitions at -O2 -march=native "
    "(benchmarks/compile_times.py); eigen_dense_float_gemm is benchmarks/compile/yardstick_eigen_gemm.cpp, compiled "
    "right before each example in the same run. A speedup of 0.167 or more means at most 6x the yardstick.")
PEER_NOTES[("compile_", "include_eigen_dense")] = (
    "include_eigen_dense is benchmarks/compile/yardstick_include_eigen.cpp (only #include <Eigen/Dense>), compiled "
    "right before benchmarks/compile/include_kshot.cpp (only #include <kshot/kshot.hpp>) in the same run; a "
    "speedup of 0.5 or more means at most 2x.")

# ---------------------------------------------------------------------------------------------------------------

SLOWER = 1.05  # a run at more threads this much slower than at 1 thread gets a warning
TIME_UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}
OMP_RE = re.compile(r"/omp:(\d+)(?:/|$)")


def load_json_rows(path):
    """A JSON list, a single JSON object, or JSON lines."""
    with open(path) as f:
        text = f.read()
    try:
        data = json.loads(text)
        return data if isinstance(data, list) else [data]
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def load_benchmarks(paths):
    """Merges Google Benchmark files: (list of contexts, list of benchmark entries)."""
    contexts, entries = [], []
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        if "contexts" in data:
            contexts.extend(data["contexts"])
        elif "context" in data:
            contexts.append(data["context"])
        entries.extend(data.get("benchmarks", []))
    return contexts, entries


def summarise(entries):
    """(label, threads) -> {"seconds", "gflops", "cv", "reps", "error"} from the repetitions' medians."""
    groups = {}
    for e in entries:
        label = e.get("label") or e.get("run_name") or e["name"]
        m = OMP_RE.search(e.get("run_name", e["name"]))
        threads = int(m.group(1)) if m else int(e.get("threads", 1))
        g = groups.setdefault((label, threads), {"iterations": [], "median": None, "error": None})
        if e.get("error_occurred"):
            g["error"] = e.get("error_message", "error")
        elif e.get("run_type") == "aggregate":
            if e.get("aggregate_name") == "median":
                g["median"] = e
        else:
            g["iterations"].append(e)
    out = {}
    for key, g in groups.items():
        if g["error"]:
            out[key] = {"seconds": None, "gflops": None, "cv": None, "reps": 0, "error": g["error"]}
            continue
        runs = g["iterations"] or ([g["median"]] if g["median"] else [])
        if not runs:
            continue
        times = [r["real_time"] * TIME_UNITS[r.get("time_unit", "ns")] for r in runs]
        seconds = statistics.median(times)
        flops = [r["GFLOP/s"] * 1e9 * t for r, t in zip(runs, times) if "GFLOP/s" in r]
        gflops = statistics.median(flops) / seconds * 1e-9 if flops else None
        cv = statistics.stdev(times) / statistics.mean(times) if len(times) > 1 else None
        out[key] = {"seconds": seconds, "gflops": gflops, "cv": cv, "reps": len(times), "error": None}
    return out


def longest_prefix(table, case):
    keys = [k for k in table if case.startswith(k)]
    return max(keys, key=len) if keys else None


def target_for(case, peer, threads):
    """(minimum speedup, wording) for the row, or None. A target may carry a third element: the only thread
    count it applies to."""
    prefix = longest_prefix(TARGETS, case)
    t = TARGETS[prefix].get(peer) if prefix else None
    if t is not None and len(t) > 2 and t[2] != threads:
        return None
    return t


def build_rows(kshot, peers):
    rows, errors, warnings = [], [], []
    yard = {}
    for (label, threads), s in kshot.items():
        prefix = longest_prefix(YARDSTICKS, label)
        if prefix:
            yard[(label, threads)] = (YARDSTICKS[prefix], s)
    peer_rows = {}
    for p in peers:
        peer_rows.setdefault((p["case"], int(p["threads"])), []).append(p)

    for (case, threads), s in kshot.items():  # in the order the benchmarks ran
        if (case, threads) in yard:
            if s["error"]:
                errors.append(f"{case} (omp:{threads}): {s['error']}")
            continue
        if s["error"]:
            errors.append(f"{case} (omp:{threads}): {s['error']}")
            continue
        base = {"case": case, "threads": threads, "kshot_seconds": s["seconds"], "kshot_gflops": s["gflops"],
                "kshot_cv": s["cv"]}
        candidates = []
        prefix = longest_prefix(YARDSTICK_OF, case)
        if prefix:
            ylabel = YARDSTICK_OF[prefix](case)
            if (ylabel, threads) in yard:
                name, ys = yard[(ylabel, threads)]
                if ys["error"] is None:
                    candidates.append({"peer": name, "peer_seconds": ys["seconds"], "peer_gflops": ys["gflops"],
                                       "peer_cv": ys["cv"], "peer_label": ylabel})
        for p in peer_rows.get((case, threads), []):
            extra = {k: v for k, v in p.items() if k not in ("case", "threads")}
            if extra.get("peer_gflops") is None and "flops" in p and p.get("peer_seconds"):
                extra["peer_gflops"] = p["flops"] / p["peer_seconds"] * 1e-9
            candidates.append(extra)
        prefix = longest_prefix(FLOORS, case)
        if prefix and FLOORS[prefix][1] == threads:
            name, _, rate = FLOORS[prefix]
            candidates.append({"peer": name, "peer_seconds": 1.0 / rate})
        if not candidates:
            candidates.append({"peer": None, "peer_seconds": None})
        for c in candidates:
            row = dict(base)
            row.update(c)
            ps, ks = row.get("peer_seconds"), row["kshot_seconds"]
            row["speedup"] = ps / ks if ps and ks else None
            t = target_for(case, row["peer"], threads) if row["peer"] else None
            row["target"] = t[0] if t else None
            row["status"] = None if t is None or row["speedup"] is None else (
                "PASS" if row["speedup"] >= t[0] else "MISS")
            rows.append(row)
    for (case, threads) in sorted(set(peer_rows) - set(kshot)):
        warnings.append(f"peer rows for {case} (omp:{threads}) have no kshot result")
    # A peer or yardstick that got slower with more threads (e.g. a parallel GEMM too small to split, on a
    # busy machine) makes an easy target: say so, once per (peer, threads, timing).
    one_thread = {(r["case"], r["peer"]): r["peer_seconds"] for r in rows if r["threads"] == 1}
    slower = {}
    for r in rows:
        base_time = one_thread.get((r["case"], r["peer"]))
        if r["threads"] > 1 and r["peer_seconds"] and base_time and r["peer_seconds"] > SLOWER * base_time:
            r["note"] = (r.get("note") + "; " if r.get("note") else "") + (
                f"peer slower at {r['threads']} threads than at 1 ({fmt_seconds(base_time)})")
            slower.setdefault((r["peer"], r["threads"], r["peer_seconds"], base_time), []).append(r["case"])
    kshot_one = {r["case"]: r["kshot_seconds"] for r in rows if r["threads"] == 1}
    seen = set()
    for r in rows:
        base_time = kshot_one.get(r["case"])
        if r["threads"] > 1 and base_time and r["kshot_seconds"] > SLOWER * base_time and (r["case"], r["threads"]) not in seen:
            seen.add((r["case"], r["threads"]))
            warnings.append(f"kshot's {r['case']} is slower at {r['threads']} threads ({fmt_seconds(r['kshot_seconds'])}) "
                            f"than at 1 ({fmt_seconds(base_time)}): a busy machine, or a scaling problem")
    for (peer, threads, seconds, base_time), cases in slower.items():
        warnings.append(f"{peer} is slower at {threads} threads ({fmt_seconds(seconds)}) than at 1 "
                        f"({fmt_seconds(base_time)}) as the peer of {', '.join(cases)}: the speedup at "
                        f"{threads} threads flatters kshot")
    key_order = ["case", "threads", "kshot_seconds", "peer", "peer_seconds", "speedup"]
    rows = [{**{k: r.get(k) for k in key_order}, **{k: v for k, v in r.items() if k not in key_order}} for r in rows]
    return rows, errors, warnings


# ---- environment for the header -------------------------------------------------------------------------------

def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags_of_note():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return " ".join(x for x in ("avx2", "fma", "avx512f", "avx512_bf16", "amx_tile") if x in flags)
    except OSError:
        pass
    return ""


def cmake_cache(path):
    values = {}
    try:
        with open(path) as f:
            for line in f:
                m = re.match(r"^([A-Za-z0-9_]+):[A-Z]+=(.*)$", line.rstrip("\n"))
                if m:
                    values[m.group(1)] = m.group(2)
    except OSError:
        pass
    return values


def compiler_version(path):
    if not path:
        return None
    try:
        return subprocess.run([path, "--version"], capture_output=True, text=True, check=True).stdout.splitlines()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return None


# ---- output -------------------------------------------------------------------------------------------------

def fmt_seconds(s):
    if s is None:
        return "—"
    if s >= 1.0:
        return f"{s:.3f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3f} ms"
    return f"{s * 1e6:.2f} µs"


def fmt(x, spec):
    return "—" if x is None else format(x, spec)


def write_markdown(path, rows, errors, warnings, contexts, peers, cache):
    ctx = contexts[0] if contexts else {}
    threads = sorted({r["threads"] for r in rows})
    cxx = cache.get("CMAKE_CXX_COMPILER")
    build_type = cache.get("CMAKE_BUILD_TYPE") or ctx.get("build_type", "?")
    config_flags = " ".join(x for x in (cache.get("CMAKE_CXX_FLAGS", ""),
                                        cache.get(f"CMAKE_CXX_FLAGS_{build_type.upper()}", "")) if x)
    lines = ["# kshot benchmark comparison", ""]
    lines.append(f"- Date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}"
                 + (f" (benchmarks started {ctx['date']})" if "date" in ctx else ""))
    lines.append(f"- CPU: {cpu_model()}, {ctx.get('num_cpus', os.cpu_count())} CPUs"
                 + (f" @ {ctx['mhz_per_cpu']} MHz" if "mhz_per_cpu" in ctx else "")
                 + (f"; {cpu_flags_of_note()}" if cpu_flags_of_note() else ""))
    if "caches" in ctx:
        caches = ", ".join(f"L{c['level']}{'d' if c['type'] == 'Data' else 'i' if c['type'] == 'Instruction' else ''} "
                           f"{c['size'] // 1024} KiB" for c in ctx["caches"])
        lines.append(f"- Caches: {caches}")
    if "load_avg" in ctx:
        load = ctx["load_avg"]
        busy = " — the machine was busy: treat the numbers as noisy" if load and load[0] > 0.5 * ctx.get("num_cpus", 1) else ""
        lines.append(f"- Load average at start: {', '.join(f'{x:.2f}' for x in load)}{busy}")
    lines.append(f"- Compiler: {ctx.get('compiler') or compiler_version(cxx) or 'unknown'}"
                 + (f" ({cxx})" if cxx else ""))
    lines.append(f"- Build type: {build_type}; CMake flags: `{config_flags or '(none)'}`"
                 + (f"; KSHOT_NATIVE={cache['KSHOT_NATIVE']}" if "KSHOT_NATIVE" in cache else ""))
    if "build_flags" in ctx:
        lines.append(f"- Benchmark compile flags: `{ctx['build_flags']}`")
    if "eigen_version" in ctx:
        lines.append(f"- Eigen {ctx['eigen_version']} ({ctx.get('eigen_simd', '?')}); OpenMP {ctx.get('openmp', '?')}; "
                     f"kshot {ctx.get('kshot_version', '?')}; Google Benchmark library build: "
                     f"{ctx.get('library_build_type', '?')}")
    env = [f"{k}={ctx[k]}" for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "OMP_PROC_BIND") if k in ctx]
    lines.append(f"- Threads (OpenMP, and the peers' intra-op/BLAS threads): {', '.join(map(str, threads))}"
                 + (f"; environment: {', '.join(env)}" if env else ""))
    peer_desc = {}
    for p in peers:
        if p.get("peer") and p["peer"] not in peer_desc:
            bits = [f"{k}={p[k]}" for k in ("torch_version", "numpy_version", "compute_mode", "path", "blas_threads") if k in p]
            peer_desc[p["peer"]] = ", ".join(bits)
    for name, desc in peer_desc.items():
        lines.append(f"- Peer {name}: {desc}")
    lines.append("- Times: median over the repetitions of the mean wall time per call; speedup = peer time / kshot time.")
    lines += ["", "## Targets", ""]
    for prefix, per_peer in TARGETS.items():
        for peer, target in per_peer.items():
            minimum, words = target[0], target[1]
            only = f", {target[2]} thread(s) only" if len(target) > 2 else ""
            lines.append(f"- `{prefix}*` vs {peer}: {words} (speedup >= {minimum:g}{only})")
    lines += ["", "## Results", "",
              "| case | threads | kshot | kshot GFLOP/s | kshot cv | peer | peer time | peer GFLOP/s | speedup | target | status |",
              "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|"]
    for r in rows:
        cv = "—" if r.get("kshot_cv") is None else f"{100 * r['kshot_cv']:.0f}%"
        lines.append(f"| {r['case']} | {r['threads']} | {fmt_seconds(r['kshot_seconds'])} | {fmt(r.get('kshot_gflops'), '.1f')} "
                     f"| {cv} | {r['peer'] or '—'} | {fmt_seconds(r['peer_seconds'])} | {fmt(r.get('peer_gflops'), '.1f')} "
                     f"| {fmt(r['speedup'], '.2f')} | {fmt(r['target'], 'g')} | {r['status'] or '—'} |")
    summary = [r["status"] for r in rows if r["status"]]
    lines += ["", f"Targets: {summary.count('PASS')} PASS, {summary.count('MISS')} MISS."]
    notes = [text for (prefix, peer), text in PEER_NOTES.items()
             if any(r["case"].startswith(prefix) and r["peer"] == peer for r in rows)]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    if warnings:
        lines += ["", "## Warnings", ""] + [f"- {w}" for w in warnings]
    if errors:
        lines += ["", "## Errors", ""] + [f"- {e}" for e in errors]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", action="append", help="Google Benchmark JSON (repeatable)")
    ap.add_argument("--peers", action="append", help="peer JSON (repeatable)")
    ap.add_argument("--cmake-cache", default=os.path.join(ROOT, "build", "bench", "CMakeCache.txt"))
    ap.add_argument("--out", default=os.path.join(ROOT, "build", "bench"))
    args = ap.parse_args()
    results = args.results or [os.path.join(ROOT, "build", "bench", "results.json")]
    peer_files = args.peers if args.peers is not None else sorted(
        glob.glob(os.path.join(ROOT, "build", "bench", "peers", "*.json")))

    contexts, entries = load_benchmarks(results)
    peers = [p for path in peer_files for p in load_json_rows(path)]
    for p in peers:
        missing = [k for k in ("case", "peer", "peer_seconds", "threads") if k not in p]
        if missing:
            sys.exit(f"compare.py: a peer row lacks {missing}: {p}")
    rows, errors, warnings = build_rows(summarise(entries), peers)

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "compare.json"), "w") as f:
        json.dump(rows, f, indent=1)
    write_markdown(os.path.join(args.out, "compare.md"), rows, errors, warnings, contexts, peers,
                   cmake_cache(args.cmake_cache))
    print(f"compare.py: {len(rows)} rows -> {os.path.join(args.out, 'compare.json')}, compare.md", file=sys.stderr)
    for e in errors:
        print(f"compare.py: error: {e}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
