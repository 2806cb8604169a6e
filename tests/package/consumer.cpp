// SPDX-License-Identifier: MIT
// Uses the installed headers: computes a small distance matrix and checks it, and checks which optional pieces
// reached this program through the target it links (kshot::kshot alone, or kshot::openmp and kshot::zlib).
#include <kshot/kshot.hpp>

#include <cstdio>

int main() {
#if defined(KSHOT_CONSUMER_OPTIONAL)
#if !defined(_OPENMP) || !defined(KSHOT_HAS_ZLIB)
  std::printf("kshot::openmp or kshot::zlib did not bring OpenMP or zlib\n");
  return 1;
#endif
#else
#if defined(_OPENMP) || defined(KSHOT_HAS_ZLIB) || defined(EIGEN_USE_BLAS)
  std::printf("kshot::kshot brought an optional piece the consumer did not ask for\n");
  return 1;
#endif
#endif
  kshot::RowMatrixX<float> a(2, 2), b(1, 2);
  a << 0, 0, 3, 4;
  b << 0, 0;
  const auto d = kshot::pairwise_distances(a, b, kshot::Euclidean{});
  if (d(0, 0) != 0.0f || d(1, 0) != 5.0f) return 1;
  std::printf("kshot %s ok\n", kshot::Version::string());
  return 0;
}
