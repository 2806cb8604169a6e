// SPDX-License-Identifier: MIT
// The compile section of scripts/bench (benchmarks/compile_times.py): a file holding only the umbrella header,
// compared with yardstick_include_eigen.cpp (only <Eigen/Dense>).
#include <kshot/kshot.hpp>
