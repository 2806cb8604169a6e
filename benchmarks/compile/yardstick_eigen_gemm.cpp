// SPDX-License-Identifier: MIT
// Yardstick A of the compile section of scripts/bench (benchmarks/compile_times.py): a file that includes
// <Eigen/Dense> and does one float GEMM. Each example's compile time is compared with this file's.
#include <Eigen/Dense>

int main() {
  const Eigen::MatrixXf a = Eigen::MatrixXf::Random(64, 48);
  const Eigen::MatrixXf b = Eigen::MatrixXf::Random(48, 32);
  Eigen::MatrixXf c(64, 32);
  c.noalias() = a * b;
  return c(0, 0) > 100.0f ? 1 : 0;
}
