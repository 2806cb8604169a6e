// SPDX-License-Identifier: MIT
// Uses the installed headers: computes a small distance matrix and checks it.
#include <kshot/kshot.hpp>

#include <cstdio>

int main() {
  kshot::RowMatrixX<float> a(2, 2), b(1, 2);
  a << 0, 0, 3, 4;
  b << 0, 0;
  const auto d = kshot::pairwise_distances(a, b, kshot::Euclidean{});
  if (d(0, 0) != 0.0f || d(1, 0) != 5.0f) return 1;
  std::printf("kshot %s ok\n", kshot::Version::string());
  return 0;
}
