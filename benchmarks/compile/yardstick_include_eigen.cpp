// SPDX-License-Identifier: MIT
// Yardstick B of the compile section of scripts/bench (benchmarks/compile_times.py): only <Eigen/Dense>, the
// counterpart of include_kshot.cpp.
#include <Eigen/Dense>
