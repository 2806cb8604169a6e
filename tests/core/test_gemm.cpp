// SPDX-License-Identifier: MIT
// core/gemm.hpp: gemm() in every operand order, the matrix-vector and empty cases, strided operands, accumulation
// and alpha, column-major and resizable destinations, and blocked_gemm()'s bits at any thread count.
#include <kshot/core.hpp>

#include "test_util.hpp"

#include <array>
#include <cmath>
#include <limits>
#include <vector>

using namespace kshot;

namespace gemm_test {

using DMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// op(A) op(B) in long double, entry by entry: the reference.
template <class A, class B>
DMatrix naive(const A& a, const B& b) {
  DMatrix out(a.rows(), b.cols());
  for (Index i = 0; i < a.rows(); ++i)
    for (Index j = 0; j < b.cols(); ++j) {
      long double s = 0;
      for (Index k = 0; k < a.cols(); ++k) s += static_cast<long double>(a(i, k)) * static_cast<long double>(b(k, j));
      out(i, j) = static_cast<double>(s);
    }
  return out;
}

/// Largest |x - ref| / (1 + |ref|).
template <class X>
double max_rel_error(const X& x, const DMatrix& ref) {
  double worst = 0;
  for (Index i = 0; i < ref.rows(); ++i)
    for (Index j = 0; j < ref.cols(); ++j)
      worst = std::max(worst, std::abs(double(x(i, j)) - ref(i, j)) / (1.0 + std::abs(ref(i, j))));
  return worst;
}

template <class Scalar>
double tolerance() {
  return std::is_same_v<Scalar, float> ? 2e-5 : 1e-13;
}

}  // namespace gemm_test

using gemm_test::DMatrix;

TEST_CASE_TEMPLATE("core.gemm: every operand order, shape and stride matches the reference", Scalar, float, double) {
  using M = RowMatrixX<Scalar>;
  // (m, n, k): matrix-vector (m = 1, n = 1), a single inner term, Eigen's small-product range, several GEMM blocks.
  const std::vector<std::array<Index, 3>> shapes = {{1, 1, 1}, {1, 7, 5}, {9, 1, 5},     {4, 6, 1},
                                                    {3, 2, 4}, {7, 5, 3}, {33, 70, 129}, {130, 65, 300}};
  Index seed = 1;
  for (const auto& s : shapes) {
    const Index m = s[0], n = s[1], k = s[2];
    for (int order = 0; order < 4; ++order) {
      const bool ta = (order & 1) != 0, tb = (order & 2) != 0;
      CAPTURE(m);
      CAPTURE(n);
      CAPTURE(k);
      CAPTURE(ta);
      CAPTURE(tb);
      // Operands stored as blocks of larger matrices (row strides past their widths), transposed in storage
      // where op() transposes them.
      std::srand(static_cast<unsigned>(++seed));
      const M big_a = M::Random(ta ? k + 2 : m + 2, (ta ? m : k) + 3),
              big_b = M::Random(tb ? n + 1 : k + 1, (tb ? k : n) + 4);
      const auto a = big_a.block(1, 2, ta ? k : m, ta ? m : k);
      const auto b = big_b.block(1, 1, tb ? n : k, tb ? k : n);
      const auto ga = detail::gemm_operand(a), gb = detail::gemm_operand(b);
      const detail::GemmOperand<Scalar> opa{ga.data, ga.rows, ga.cols, ga.stride, ta},
          opb{gb.data, gb.rows, gb.cols, gb.stride, tb};
      const DMatrix ref =
          ta ? (tb ? gemm_test::naive(a.transpose(), b.transpose()) : gemm_test::naive(a.transpose(), b))
             : (tb ? gemm_test::naive(a, b.transpose()) : gemm_test::naive(a, b));
      // Overwrite: the destination's old values (NaN here) play no part.
      M big_c = M::Constant(m + 2, n + 5, std::numeric_limits<Scalar>::quiet_NaN());
      auto c = big_c.block(1, 3, m, n);
      detail::gemm_into(c, opa, opb, /*accumulate=*/false);
      CHECK(gemm_test::max_rel_error(c, ref) < gemm_test::tolerance<Scalar>());
      // Accumulate with alpha: c + (-2.5) op(A) op(B) = -1.5 ref.
      detail::gemm_into(c, opa, opb, /*accumulate=*/true, Scalar(-2.5));
      CHECK(gemm_test::max_rel_error(c, DMatrix(-1.5 * ref)) < 4 * gemm_test::tolerance<Scalar>());
      // Nothing outside the block was written.
      CHECK(std::isnan(big_c(0, 0)));
      CHECK(std::isnan(big_c(m + 1, n + 4)));
      CHECK(std::isnan(big_c(1, 2)));
      CHECK(std::isnan(big_c(1, n + 3)));
    }
  }
}

TEST_CASE_TEMPLATE("core.gemm: transposed Eigen operands, column-major and resizable destinations", Scalar, float,
                   double) {
  using M = RowMatrixX<Scalar>;
  using C = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
  std::srand(11);
  const M a = M::Random(40, 23), b = M::Random(31, 23);
  const DMatrix ref = gemm_test::naive(a, b.transpose());
  // A Matrix destination is resized, as `m = a * b.transpose()` would.
  M r(1, 1);
  detail::gemm_assign(r, a, b.transpose());
  REQUIRE(r.rows() == 40);
  REQUIRE(r.cols() == 31);
  CHECK(gemm_test::max_rel_error(r, ref) < gemm_test::tolerance<Scalar>());
  // A column-major destination (and a column-major operand) gives the same numbers.
  C cm;
  detail::gemm_assign(cm, a, b.transpose(), Scalar(2));
  REQUIRE(cm.rows() == 40);
  CHECK(gemm_test::max_rel_error(cm, DMatrix(2 * ref)) < 2 * gemm_test::tolerance<Scalar>());
  const C acol = a;
  M r2(40, 31);
  detail::gemm_assign(r2, acol, b.transpose());
  CHECK(gemm_test::max_rel_error(r2, ref) < gemm_test::tolerance<Scalar>());
  detail::gemm_add(r2, acol, b.transpose(), Scalar(-1));
  CHECK(r2.cwiseAbs().maxCoeff() < Scalar(1000) * std::numeric_limits<Scalar>::epsilon());
  // An empty inner dimension: the product is 0 (overwrite) or leaves the destination (accumulate).
  const M a0(5, 0), b0(0, 4);
  M z = M::Constant(5, 4, Scalar(3));
  detail::gemm_add(z, a0, b0);
  CHECK((z.array() == Scalar(3)).all());
  detail::gemm_assign(z, a0, b0);
  CHECK((z.array() == Scalar(0)).all());
}

TEST_CASE_TEMPLATE("core.gemm: blocked_gemm gives the same bits at 1 and 2 threads, and runs in parallel", Scalar,
                   float, double) {
  using M = RowMatrixX<Scalar>;
  std::srand(5);
  // 300 x 257 x 200: five row blocks, 15 MFLOP, far past the work that opens a region.
  const M a = M::Random(300, 200), b = M::Random(257, 200);
  M one, two;
  {
    ThreadCountGuard guard(1);
    detail::blocked_gemm_assign(one, a, b.transpose(), Scalar(0.5));
  }
  {
    ThreadCountGuard guard(2);
    const auto regions = detail::parallel_regions_opened().load();
    detail::blocked_gemm_assign(two, a, b.transpose(), Scalar(0.5));
    if (max_threads() > 1) CHECK(detail::parallel_regions_opened().load() > regions);
  }
  REQUIRE(one.rows() == 300);
  REQUIRE(one.cols() == 257);
  CHECK(one == two);
  CHECK(gemm_test::max_rel_error(one, DMatrix(0.5 * gemm_test::naive(a, b.transpose()))) <
        gemm_test::tolerance<Scalar>());
  // A transposed left operand: its row blocks are column blocks of the storage.
  M t1, t2;
  const M at = a.transpose();
  {
    ThreadCountGuard guard(1);
    detail::blocked_gemm_assign(t1, at.transpose(), b.transpose());
  }
  {
    ThreadCountGuard guard(2);
    detail::blocked_gemm_assign(t2, at.transpose(), b.transpose());
  }
  CHECK(t1 == t2);
  CHECK(gemm_test::max_rel_error(t1, gemm_test::naive(a, b.transpose())) < gemm_test::tolerance<Scalar>());
}
