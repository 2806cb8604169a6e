/**
 * @file tests/losses/loss_checks.hpp
 * @brief The checks every metric-learning loss gets: central finite differences, float against double,
 * bitwise identity at 1 and 2 threads, and test batches (random, near-degenerate).
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_TESTS_LOSSES_LOSS_CHECKS_HPP
#define KSHOT_TESTS_LOSSES_LOSS_CHECKS_HPP

#include "test_util.hpp"

#include <kshot/core/random.hpp>
#include <kshot/core/threads.hpp>
#include <kshot/core/types.hpp>
#include <kshot/losses/common.hpp>

#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

namespace kshot {
namespace test {

/// Labels 0..classes-1 repeated: n entries, class of row i is i % classes (shuffled by seed when seed != 0).
inline LabelVector cyclic_labels(Index n, Index classes, std::uint64_t seed = 0) {
  LabelVector y(n);
  for (Index i = 0; i < n; ++i) y[i] = static_cast<Label>(i % classes);
  if (seed != 0) {
    RandomStream rng(seed);
    for (Index i = n - 1; i > 0; --i) std::swap(y[i], y[static_cast<Index>(rng.bounded(std::uint64_t(i + 1)))]);
  }
  return y;
}

/// Every label triplet (a, p, n), a != p, label a = p != n, in (a, p, n) order.
inline MinedTriplets all_triplets(const LabelVector& labels) {
  MinedTriplets t;
  const Index n = labels.size();
  for (Index a = 0; a < n; ++a)
    for (Index p = 0; p < n; ++p) {
      if (p == a || labels[p] != labels[a]) continue;
      for (Index q = 0; q < n; ++q)
        if (labels[q] != labels[a]) {
          t.a.push_back(a);
          t.p.push_back(p);
          t.n.push_back(q);
        }
    }
  return t;
}

/**
 * @brief Central-difference gradient error of `f` at x: ||g - ĝ|| / ||g + ĝ||.
 * @param f callable (const RowMatrixX<double>& x, RowMatrixX<double>* grad) -> double; fills grad when
 * not null (it is pre-sized to x's shape).
 */
template <class F>
double fd_error(F&& f, const RowMatrixX<double>& x, double h = 1e-6) {
  RowMatrixX<double> g(x.rows(), x.cols());
  f(x, &g);
  const RowMatrixX<double> num = numeric_gradient([&](const RowMatrixX<double>& probe) { return f(probe, nullptr); }, x, h);
  return gradient_rel_error(g, num);
}

/// Runs f (RowMatrixX<Scalar>* grad) -> Scalar at 1 and 2 threads and checks value and gradient are
/// bitwise identical.
template <class Scalar, class F>
void check_thread_identity(F&& f, Index rows, Index cols) {
  RowMatrixX<Scalar> g1(rows, cols), g2(rows, cols);
  Scalar v1, v2;
  {
    ThreadCountGuard guard(1);
    v1 = f(&g1);
  }
  {
    ThreadCountGuard guard(2);
    v2 = f(&g2);
  }
  CHECK(std::memcmp(&v1, &v2, sizeof(Scalar)) == 0);
  CHECK(std::memcmp(g1.data(), g2.data(), sizeof(Scalar) * std::size_t(g1.size())) == 0);
}

/// Rows of a batch pushed onto each other: every row of class c becomes the class's first row plus
/// `spread` times noise (spread 0 gives exact duplicates within a class).
inline RowMatrixX<double> collapse_classes(const RowMatrixX<double>& emb, const LabelVector& labels, double spread,
                                           std::uint64_t seed) {
  RowMatrixX<double> out = emb;
  RandomStream rng(seed);
  for (Index i = 0; i < emb.rows(); ++i)
    for (Index j = 0; j < i; ++j)
      if (labels[j] == labels[i]) {
        for (Index k = 0; k < emb.cols(); ++k) out(i, k) = emb(j, k) + spread * rng.normal<double>();
        break;
      }
  return out;
}

}  // namespace test
}  // namespace kshot

#endif  // KSHOT_TESTS_LOSSES_LOSS_CHECKS_HPP
