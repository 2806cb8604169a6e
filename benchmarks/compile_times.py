#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The compile section of scripts/bench: CPU seconds to compile kshot's examples and the umbrella header.

Usage (scripts/bench runs it; `scripts/bench compile [FILTER]` runs only this section):
  compile_times.py OUT.json [FILTER]

Compiles (-c, one object file, no link), with the flags and definitions that examples/CMakeLists.txt gives the
examples (C++17, OpenMP, zlib's KSHOT_HAS_ZLIB=1 when zlib.h is there, Eigen as a system include) at
`-O2 -march=native`:
  compile_example_<name>      every examples/<name>.cpp that links kshot::kshot alone (not interop_*, which
                              needs the optional xtensor bridge), against yardstick A,
                              compile_yardstick_eigen_gemm (benchmarks/compile/yardstick_eigen_gemm.cpp:
                              <Eigen/Dense> and one float GEMM);
  compile_include_kshot       benchmarks/compile/include_kshot.cpp (only <kshot/kshot.hpp>), against yardstick B,
                              compile_yardstick_include_eigen (only <Eigen/Dense>).
Each case is compiled right after its yardstick, in the same run, and the whole sequence is repeated
KSHOT_COMPILE_REPETITIONS times (default 3); compare.py takes the medians. The time of one compile is the user +
system CPU time of the compiler process and of every process it waited for (cc1plus, as), from wait4(): it does
not count time spent waiting for a CPU, so a busy machine disturbs it less than wall time (the wall time is
recorded too).

FILTER (a Python regex, re.search) selects the cases whose "<case>/omp:1" matches; the yardstick of a selected
case always runs. The output is Google Benchmark's JSON layout ({"context", "benchmarks"}, one "iteration" row per
compile, real_time = CPU seconds, time_unit "s"), so scripts/bench merges it into results.json with the
benchmarks' output.

Environment: KSHOT_COMPILE_CXX (default g++), KSHOT_COMPILE_FLAGS (replaces the optimisation flags
`-O2 -march=native`), KSHOT_COMPILE_REPETITIONS.
"""
import datetime
import glob
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HERE = os.path.join(ROOT, "benchmarks", "compile")

YARDSTICK_A = "compile_yardstick_eigen_gemm"
YARDSTICK_B = "compile_yardstick_include_eigen"


def eigen_include_dir():
    try:
        flags = subprocess.run(["pkg-config", "--cflags-only-I", "eigen3"], capture_output=True, text=True,
                               check=True).stdout.split()
        for f in flags:
            if f.startswith("-I"):
                return f[2:]
    except (OSError, subprocess.CalledProcessError):
        pass
    return "/usr/include/eigen3"


def has_zlib(cxx):
    """Whether the compiler finds <zlib.h> (CMake then defines KSHOT_HAS_ZLIB=1 on kshot::kshot)."""
    probe = subprocess.run([cxx, "-x", "c++", "-E", "-", "-o", os.devnull], input="#include <zlib.h>\n",
                           capture_output=True, text=True)
    return probe.returncode == 0


def cases():
    """[(case, source, yardstick)] in the order they run: the include-only file first, then the examples."""
    out = [("compile_include_kshot", os.path.join(HERE, "include_kshot.cpp"), YARDSTICK_B)]
    for source in sorted(glob.glob(os.path.join(ROOT, "examples", "*.cpp"))):
        name = os.path.splitext(os.path.basename(source))[0]
        if name.startswith("interop_"):
            continue  # built only with the optional xtensor bridge (examples/CMakeLists.txt)
        out.append((f"compile_example_{name}", source, YARDSTICK_A))
    return out


def compile_once(command):
    """(CPU seconds of the compiler and its children, wall seconds, error or None)."""
    start = datetime.datetime.now()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = (datetime.datetime.now() - start).total_seconds()
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    if proc.returncode != 0:
        text = output.decode(errors="replace").strip().splitlines()
        return cpu, wall, f"exit status {proc.returncode}: {text[0] if text else ''}"
    return cpu, wall, None


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out_path = sys.argv[1]
    pattern = re.compile(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2] else None
    cxx = os.environ.get("KSHOT_COMPILE_CXX", "g++")
    opt = shlex.split(os.environ.get("KSHOT_COMPILE_FLAGS", "-O2 -march=native"))
    repetitions = int(os.environ.get("KSHOT_COMPILE_REPETITIONS", "3"))
    flags = ["-std=c++17", *opt, "-fopenmp", "-Iinclude", "-isystem", eigen_include_dir()]
    if has_zlib(cxx):
        flags.append("-DKSHOT_HAS_ZLIB=1")

    selected = [c for c in cases() if pattern is None or pattern.search(f"{c[0]}/omp:1")]
    if not selected:  # an empty file, as a Google Benchmark binary whose cases FILTER all left out writes
        open(out_path, "w").close()
        return 0
    yardsticks = {YARDSTICK_A: os.path.join(HERE, "yardstick_eigen_gemm.cpp"),
                  YARDSTICK_B: os.path.join(HERE, "yardstick_include_eigen.cpp")}
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout.splitlines()
    context = {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "num_cpus": os.cpu_count(),
        "load_avg": list(os.getloadavg()),
        "compiler": version[0] if version else cxx,
        "build_flags": " ".join([cxx, *flags, "-c"]),
        "compile_repetitions": repetitions,
        "executable": "benchmarks/compile_times.py",
    }
    rows = []
    with tempfile.TemporaryDirectory(prefix="kshot_compile_") as scratch:
        obj = os.path.join(scratch, "out.o")
        for rep in range(repetitions):
            for case, source, yardstick in selected:
                for label, path in ((yardstick, yardsticks[yardstick]), (case, source)):
                    cpu, wall, error = compile_once([cxx, *flags, "-c", os.path.relpath(path, ROOT), "-o", obj])
                    print(f"compile_times.py: {label}: {cpu:.2f} s CPU, {wall:.2f} s wall"
                          + (f" ({error})" if error else ""), file=sys.stderr)
                    row = {"name": f"{label}/omp:1/repeats:{repetitions}", "run_name": f"{label}/omp:1",
                           "run_type": "iteration", "repetitions": repetitions, "repetition_index": rep,
                           "threads": 1, "iterations": 1, "label": label, "real_time": cpu, "cpu_time": cpu,
                           "wall_time": wall, "time_unit": "s", "source": os.path.relpath(path, ROOT)}
                    if error:
                        row.update({"error_occurred": True, "error_message": error})
                    rows.append(row)
    with open(out_path, "w") as f:
        json.dump({"context": context, "benchmarks": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
