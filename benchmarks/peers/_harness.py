# SPDX-License-Identifier: MIT
"""What every peer script shares: Google-Benchmark-like timing and the command line (OUT.json [FILTER]).

Not a peer itself: scripts/bench skips files whose name starts with an underscore.
"""
import ctypes
import re
import statistics
import sys
import time

MIN_TIME = 0.5
REPETITIONS = 5


def time_per_call(fn, min_time=MIN_TIME, repetitions=REPETITIONS):
    """Median over `repetitions` of the mean seconds per call, the median process CPU time per wall
    second, and the calls per repetition.

    The number of calls grows as in Google Benchmark: start at 1, multiply by up to 10 (by
    1.4 * min_time / elapsed once a batch takes over a tenth of min_time) until one batch lasts min_time.
    """
    fn()  # warm-up

    def batch(calls):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        for _ in range(calls):
            fn()
        return time.perf_counter() - wall0, time.process_time() - cpu0

    calls = 1
    while True:
        wall, cpu = batch(calls)
        if wall >= min_time:
            break
        growth = 1.4 * min_time / max(wall, 1e-9) if wall > 0.1 * min_time else 10.0
        calls = max(calls + 1, int(calls * min(growth, 10.0)))
    means, cpu_ratio = [wall / calls], [cpu / wall]  # the batch that met min_time is the first repetition
    for _ in range(repetitions - 1):
        wall, cpu = batch(calls)
        means.append(wall / calls)
        cpu_ratio.append(cpu / wall)
    return statistics.median(means), statistics.median(cpu_ratio), calls


def parse_args(script):
    """(output path, selected(name)) from `script OUT.json [FILTER]`; FILTER is a regular expression
    (or, if it does not compile, a substring) matched against "<case>/omp:<threads>"."""
    if len(sys.argv) < 2:
        sys.exit(f"usage: {script} OUT.json [FILTER]")
    flt = sys.argv[2] if len(sys.argv) > 2 and sys.argv[2] else None

    def selected(name):
        if flt is None:
            return True
        try:
            return re.search(flt, name) is not None
        except re.error:
            return flt in name

    return sys.argv[1], selected


def openblas():
    """The OpenBLAS that torch's GEMM calls (Debian's torch goes through libblas.so.3), if it is loaded.

    torch.set_num_threads() sets OpenMP's and torch's intra-op threads but not OpenBLAS's own pthread pool,
    which otherwise uses every core. Setting it here through the library's API only affects this process;
    no OPENBLAS_* / OMP_* variable is changed for anything else.
    """
    with open("/proc/self/maps") as maps:
        paths = {line.split()[-1] for line in maps if re.search(r"openblas[^/]*/[^/]*\.so[.0-9]*$|libopenblas[^/]*\.so", line)}
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
            lib.openblas_set_num_threads.argtypes = [ctypes.c_int]
            lib.openblas_get_num_threads.restype = ctypes.c_int
            return lib
        except (OSError, AttributeError):
            continue
    return None
