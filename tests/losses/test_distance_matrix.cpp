// SPDX-License-Identifier: MIT
// The distance matrix under every metric-learning loss (kshot/losses/detail/distance_matrix.hpp), checked directly
// against its definition: the vectorised row passes (Gram entries to distances, with the cancellation fallback;
// dL/dE to dL/d(E^2)) and the fused symmetrise-and-scale of the Euclidean backward pass, at sizes that leave
// partial packets and partial 16 x 16 tiles.
#include "test_util.hpp"

#include <kshot/core/random.hpp>
#include <kshot/core/threads.hpp>
#include <kshot/losses/detail/distance_matrix.hpp>
#include <kshot/losses/ntxent.hpp>
#include <kshot/losses/proxy_nca.hpp>
#include <kshot/losses/triplet.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <utility>
#include <vector>

namespace {

using kshot::Index;
using kshot::LossDistance;
using kshot::LossStats;
template <class S>
using Mat = kshot::RowMatrixX<S>;

/// Rows of standard normal entries, with row 3 a copy of row 1 and row 5 a copy of row 1 plus a tiny offset, so
/// that the Gram formula cancels (its exact answer is 0 or tiny) and the fallback must recompute them.
template <class S>
Mat<S> rows_with_duplicates(Index n, Index d, std::uint64_t seed) {
  Mat<S> x(n, d);
  kshot::RandomStream rng(seed);
  rng.fill_normal(x);
  x.row(3) = x.row(1);
  x.row(5) = x.row(1);
  x(5, 0) += S(1e-3);
  return x;
}

template <class S>
S direct_distance(const Mat<S>& a, Index i, const Mat<S>& b, Index j) {
  return std::sqrt((a.row(i) - b.row(j)).squaredNorm());
}

template <class S>
void check_forward_self(Index n, Index d, double power, S tol) {
  CAPTURE(n);
  CAPTURE(power);
  const Mat<S> x = rows_with_duplicates<S>(n, d, 17);
  kshot::detail::LossDistanceMatrix<S> dm;
  LossStats stats;
  dm.compute_self(LossDistance::lp(power, /*normalize=*/false), x, stats);
  const auto m = dm.matrix();
  for (Index i = 0; i < n; ++i) {
    CHECK(m(i, i) == S(0));
    for (Index j = 0; j < n; ++j) {
      CHECK(std::memcmp(&m(i, j), &m(j, i), sizeof(S)) == 0);  // exactly symmetric
      const S e = direct_distance(x, i, x, j);
      const S want = power == 1 ? e : (power == 2 ? e * e : std::pow(e, S(power)));
      CHECK(std::abs(m(i, j) - want) <= tol * (S(1) + want));
    }
  }
  CHECK(m(1, 3) == S(0));  // duplicates: an exact zero through the subtraction fallback
  CHECK(m(3, 1) == S(0));
  // Row 5 is 1e-3 from row 1: the Gram formula alone would lose most digits of it.
  const S e15 = direct_distance(x, 1, x, 5);
  const S want15 = power == 1 ? e15 : (power == 2 ? e15 * e15 : std::pow(e15, S(power)));
  CHECK(std::abs(m(5, 1) - want15) <= S(1e-4) * want15);
}

template <class S>
void check_forward_cross(Index n, Index m_rows, Index d, S tol) {
  Mat<S> x = rows_with_duplicates<S>(n, d, 23);
  Mat<S> y(m_rows, d);
  kshot::RandomStream rng(29);
  rng.fill_normal(y);
  y.row(m_rows - 1) = x.row(0);  // a cross pair at distance 0, in a partial packet when m_rows % 16 != 0
  kshot::detail::LossDistanceMatrix<S> dm;
  LossStats stats;
  dm.compute(LossDistance::lp(1, /*normalize=*/false), x, y, stats);
  const auto m = dm.matrix();
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < m_rows; ++j) {
      const S e = direct_distance(x, i, y, j);
      CHECK(std::abs(m(i, j) - e) <= tol * (S(1) + e));
    }
  CHECK(m(0, m_rows - 1) == S(0));
}

/// backward_self for Euclidean distances against the chain rule written out: with A = dL/dE,
/// dL/dx_i = sum_j (A_ij + A_ji) (x_i - x_j) / E_ij, and 0 for pairs at distance 0.
template <class S>
void check_backward_self(Index n, Index d, S tol) {
  CAPTURE(n);
  const Mat<S> x = rows_with_duplicates<S>(n, d, 31);
  Mat<S> a(n, n);
  kshot::RandomStream rng(37);
  rng.fill_normal(a);
  kshot::detail::LossDistanceMatrix<S> dm;
  LossStats stats;
  dm.compute_self(LossDistance::lp(1, /*normalize=*/false), x, stats);
  dm.grad(false) = a;
  Mat<S> dx(n, d);
  dm.backward_self(dx);
  Mat<S> want = Mat<S>::Zero(n, d);
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < n; ++j) {
      const S e = direct_distance(x, i, x, j);
      if (i == j || e == S(0)) continue;
      want.row(i) += ((a(i, j) + a(j, i)) / e) * (x.row(i) - x.row(j));
    }
  CHECK((dx - want).norm() <= tol * (S(1) + want.norm()));
  CHECK(dx.allFinite());
}

/// backward for M = dist(X, Y) against the chain rule written out: Euclidean, dL/dx_i = sum_j A_ij (x_i - y_j) /
/// E_ij and dL/dy_j = -sum_i A_ij (x_i - y_j) / E_ij (0 at distance 0); dot products, dX = A Y and dY = A^T X (the
/// kernel's products with rhs read in place, a partial group packed, and the transposed left operand).
template <class S>
void check_backward_cross(Index n, Index m_rows, Index d, bool dot, S tol) {
  CAPTURE(n);
  CAPTURE(m_rows);
  CAPTURE(d);
  CAPTURE(dot);
  Mat<S> x = rows_with_duplicates<S>(n, d, 61);
  Mat<S> y(m_rows, d);
  kshot::RandomStream rng(67);
  rng.fill_normal(y);
  y.row(m_rows - 1) = x.row(0);  // a pair at distance 0
  Mat<S> a(n, m_rows);
  rng.fill_normal(a);
  kshot::detail::LossDistanceMatrix<S> dm;
  LossStats stats;
  dm.compute(dot ? LossDistance::dot_product(false) : LossDistance::lp(1, /*normalize=*/false), x, y, stats);
  dm.grad(false) = a;
  Mat<S> dx(n, d), dy(m_rows, d);
  dm.backward(dx, dy);
  Mat<S> wx = Mat<S>::Zero(n, d), wy = Mat<S>::Zero(m_rows, d);
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < m_rows; ++j) {
      if (dot) {
        wx.row(i) += a(i, j) * y.row(j);
        wy.row(j) += a(i, j) * x.row(i);
        continue;
      }
      const S e = direct_distance(x, i, y, j);
      if (e == S(0)) continue;
      wx.row(i) += (a(i, j) / e) * (x.row(i) - y.row(j));
      wy.row(j) -= (a(i, j) / e) * (x.row(i) - y.row(j));
    }
  CHECK((dx - wx).norm() <= tol * (S(1) + wx.norm()));
  CHECK((dy - wy).norm() <= tol * (S(1) + wy.norm()));
  CHECK(wy.norm() > 0);
}

}  // namespace

TEST_CASE("LossDistanceMatrix: the backward pass between two sets equals the chain rule, for both operands") {
  // d = 70: one group of 64 output columns read in place and a partial one; 200 rows against 90: partial row
  // blocks and tiles.
  for (bool dot : {false, true}) {
    check_backward_cross<double>(200, 90, 70, dot, 1e-12);
    check_backward_cross<float>(200, 90, 70, dot, 2e-5f);
    check_backward_cross<float>(19, 7, 128, dot, 2e-5f);
  }
}

TEST_CASE("LossDistanceMatrix: Euclidean distances of a batch match direct subtraction, symmetric, zero diagonal") {
  for (Index n : {6, 17, 37, 70}) {
    check_forward_self<double>(n, 9, 1, 1e-12);
    check_forward_self<double>(n, 9, 2, 1e-12);
    check_forward_self<double>(n, 9, 1.5, 1e-12);
    check_forward_self<float>(n, 9, 1, 2e-5f);
  }
}

TEST_CASE("LossDistanceMatrix: Euclidean distances between two sets match direct subtraction") {
  check_forward_cross<double>(19, 33, 7, 1e-12);
  check_forward_cross<double>(8, 16, 7, 1e-12);
  check_forward_cross<float>(19, 35, 7, 2e-5f);
}

TEST_CASE("LossDistanceMatrix: the fused symmetrise-and-scale backward pass equals the chain rule") {
  for (Index n : {6, 16, 33, 70}) {
    check_backward_self<double>(n, 5, 1e-12);
    check_backward_self<float>(n, 5, 2e-4f);
  }
}

TEST_CASE("LossDistanceMatrix: the matrix and the gradient are bitwise the same at 1 and 2 threads") {
  const Index n = 480, d = 16;  // large enough that the products and the tile passes run in parallel
  const Mat<float> x = rows_with_duplicates<float>(n, d, 41);
  Mat<float> a(n, n);
  kshot::RandomStream rng(43);
  rng.fill_normal(a);
  Mat<float> m1, m2, g1(n, d), g2(n, d);
  for (int threads : {1, 2}) {
    kshot::ThreadCountGuard guard(threads);
    kshot::detail::LossDistanceMatrix<float> dm;
    LossStats stats;
    dm.compute_self(LossDistance::lp(), x, stats);
    (threads == 1 ? m1 : m2) = dm.matrix();
    dm.grad(false) = a;
    dm.backward_self(threads == 1 ? g1 : g2);
  }
  CHECK(std::memcmp(m1.data(), m2.data(), sizeof(float) * std::size_t(n * n)) == 0);
  CHECK(std::memcmp(g1.data(), g2.data(), sizeof(float) * std::size_t(n * d)) == 0);
}

namespace {

/// One loss in float and in double on the same batch (and the same proxies): values within 1e-4, gradients
/// within 1e-3 in norm; the float loss bitwise the same at 1 and 2 threads. `make<S>()` builds the loss and
/// `run(loss, x, labels, grad)` evaluates it.
template <class Make, class Run>
void check_float_loss(const char* name, Make&& make, Run&& run) {
  CAPTURE(name);
  const Index n = 130, d = 70;  // partial row blocks and a partial group of 64 columns; the products run in parallel
  const Mat<double> x64 = rows_with_duplicates<double>(n, d, 47);
  const Mat<float> x32 = x64.cast<float>();
  kshot::LabelVector labels(n);
  for (Index i = 0; i < n; ++i) labels[i] = static_cast<kshot::Label>((i * 7) % 26);
  auto loss64 = make(double{});
  Mat<double> g64(n, d);
  const double v64 = run(loss64, x64, labels, g64);
  Mat<float> g32[2];
  float v32[2] = {0, 0};
  for (int threads : {1, 2}) {
    kshot::ThreadCountGuard guard(threads);
    auto loss32 = make(float{});
    g32[threads - 1].resize(n, d);
    v32[threads - 1] = run(loss32, x32, labels, g32[threads - 1]);
  }
  CHECK(std::abs(double(v32[0]) - v64) <= 1e-4 * (1 + std::abs(v64)));
  CHECK((g32[0].cast<double>() - g64).norm() <= 1e-3 * g64.norm());
  CHECK(g64.norm() > 0);
  CHECK(v32[0] == v32[1]);
  CHECK(std::memcmp(g32[0].data(), g32[1].data(), sizeof(float) * std::size_t(n * d)) == 0);
}

}  // namespace

TEST_CASE("LossDistanceMatrix: losses over it agree in float and double and do not depend on the thread count") {
  auto plain = [](auto& loss, const auto& x, const kshot::LabelVector& labels, auto& grad) {
    return loss.evaluate(x, labels, grad);
  };
  check_float_loss(
      "TripletMarginLoss", [](auto s) { return kshot::TripletMarginLoss<decltype(s)>(); }, plain);
  check_float_loss(
      "NTXentLoss", [](auto s) { return kshot::NTXentLoss<decltype(s)>(); }, plain);
  // ProxyNCA: the distances between the batch and the proxies (two different matrices), proxies set the same in
  // both precisions.
  check_float_loss(
      "ProxyNCALoss",
      [](auto s) {
        using S = decltype(s);
        kshot::ProxyNCALoss<S> loss(26, 70, 3);
        kshot::RandomStream rng(53);
        Mat<double> p(26, 70);
        rng.fill_normal(p);
        loss.proxies = p.cast<S>();
        return loss;
      },
      [](auto& loss, const auto& x, const kshot::LabelVector& labels, auto& grad) {
        using S = typename std::decay_t<decltype(x)>::Scalar;
        Mat<S> grad_proxies(26, 70);
        return loss.evaluate(x, labels, grad, grad_proxies);
      });
}

namespace {

/// compute_self with a row order and backward_self with a gradient row map and a scale, against the same matrix
/// of a permuted copy; and bitwise the same at 1, 2 and 3 threads (each thread normalises its own copy of the rows,
/// and the threads own row blocks across the passes).
template <class S>
void check_order_and_threads(Index n, Index d, const LossDistance& dist, bool symmetric, S tol) {
  CAPTURE(n);
  CAPTURE(d);
  CAPTURE(dist.describe());
  CAPTURE(symmetric);
  const Mat<S> x = rows_with_duplicates<S>(n, d, 53);
  std::vector<Index> order(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i) order[static_cast<std::size_t>(i)] = (i * 7 + 3) % n;  // 7 is prime to n
  Mat<S> xp(n, d);
  for (Index i = 0; i < n; ++i) xp.row(i) = x.row(order[static_cast<std::size_t>(i)]);
  Mat<S> a(n, n);
  kshot::RandomStream rng(59);
  rng.fill_normal(a);
  if (symmetric) a = (a + a.transpose()).eval();
  const S coeff = S(0.75);
  Mat<S> m[3], g[3];
  for (int threads : {1, 2, 3}) {
    kshot::ThreadCountGuard guard(threads);
    kshot::detail::LossDistanceMatrix<S> dm;
    LossStats stats;
    dm.compute_self(dist, x, stats, order.data());
    m[threads - 1] = dm.matrix();
    dm.grad(false) = a;
    g[threads - 1] = Mat<S>::Constant(n, d, S(99));
    Mat<S>& out = g[threads - 1];
    dm.backward_self(out, symmetric, order.data(), coeff);
  }
  for (int t : {1, 2}) {
    CHECK(std::memcmp(m[0].data(), m[t].data(), sizeof(S) * std::size_t(n * n)) == 0);
    CHECK(std::memcmp(g[0].data(), g[t].data(), sizeof(S) * std::size_t(n * d)) == 0);
  }
  kshot::detail::LossDistanceMatrix<S> ref;
  LossStats stats;
  ref.compute_self(dist, xp, stats);
  const Mat<S> mref = ref.matrix();
  CHECK((m[0] - mref).norm() <= tol * (S(1) + mref.norm()));
  ref.grad(false) = a;
  Mat<S> gref(n, d);
  if (symmetric)
    ref.backward_self_symmetric(gref);
  else
    ref.backward_self(gref);
  Mat<S> want(n, d);
  for (Index i = 0; i < n; ++i) want.row(order[static_cast<std::size_t>(i)]) = coeff * gref.row(i);
  CHECK((g[0] - want).norm() <= tol * (S(1) + want.norm()));
  CHECK(want.norm() > 0);
}

}  // namespace

TEST_CASE("LossDistanceMatrix: a row order, a gradient row map and a scale; bitwise the same at 1, 2 and 3 threads") {
  // (128, 16): the forward pass is too small for threads and the backward is not, so threads the forward did not
  // have make their copies in the backward region. (200, 144): partial row blocks, a full group of 64 columns read
  // in place and a partial one.
  const std::pair<Index, Index> shapes[] = {{128, 16}, {200, 144}};
  const LossDistance dists[] = {LossDistance::lp(), LossDistance::lp(2), LossDistance::cosine(),
                                LossDistance::dot_product(false), LossDistance::lp(1, true, 1)};
  for (const auto& [n, d] : shapes)
    for (const LossDistance& dist : dists)
      for (bool symmetric : {false, true}) {
        check_order_and_threads<float>(n, d, dist, symmetric, 1e-5f);
        check_order_and_threads<double>(n, d, dist, symmetric, 1e-12);
      }
}
