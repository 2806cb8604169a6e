/**
 * @file tests/test_util.hpp
 * @brief Shared helpers of kshot's tests: tolerances per scalar, seeded random data, and central
 * finite-difference gradient checks.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_TESTS_TEST_UTIL_HPP
#define KSHOT_TESTS_TEST_UTIL_HPP

#include <kshot/core.hpp>

#include <doctest/doctest.h>

#include <string>

namespace kshot {
namespace test {

/// Comparison tolerances per scalar type.
template <class Scalar>
struct Tolerances;
template <>
struct Tolerances<float> {
  static constexpr double rel = 1e-4;   // float kernels against a double reference
  static constexpr double abs = 1e-5;
};
template <>
struct Tolerances<double> {
  static constexpr double rel = 1e-11;
  static constexpr double abs = 1e-12;
};

/// n x d matrix of standard normal values from RandomStream(seed).
template <class Scalar>
RowMatrixX<Scalar> random_matrix(Index n, Index d, std::uint64_t seed) {
  RowMatrixX<Scalar> m(n, d);
  RandomStream rng(seed);
  rng.fill_normal(m);
  return m;
}

/// max |a - b| / max(1, |b|) over all entries (the relative error used by the tests).
template <class DA, class DB>
double max_rel_error(const Eigen::MatrixBase<DA>& a, const Eigen::MatrixBase<DB>& b) {
  REQUIRE(a.rows() == b.rows());
  REQUIRE(a.cols() == b.cols());
  double worst = 0.0;
  for (Index i = 0; i < a.rows(); ++i)
    for (Index j = 0; j < a.cols(); ++j) {
      const double x = static_cast<double>(a(i, j)), y = static_cast<double>(b(i, j));
      worst = std::max(worst, std::abs(x - y) / std::max(1.0, std::abs(y)));
    }
  return worst;
}

/// ||g - h|| / ||g + h|| (0 when both are zero), the gradient-check error of mlpack, asserted here.
template <class DA, class DB>
double gradient_rel_error(const Eigen::MatrixBase<DA>& g, const Eigen::MatrixBase<DB>& h) {
  const double denom = (g + h).norm();
  const double num = (g - h).norm();
  if (denom == 0.0) return num;
  return num / denom;
}

/**
 * @brief Central finite differences of a scalar function f(X) with respect to every entry of X (double).
 * @param f callable taking const RowMatrixX<double>& and returning double.
 */
template <class F>
RowMatrixX<double> numeric_gradient(F&& f, const RowMatrixX<double>& x, double h = 1e-6) {
  RowMatrixX<double> grad(x.rows(), x.cols());
  RowMatrixX<double> probe = x;
  for (Index i = 0; i < x.rows(); ++i)
    for (Index j = 0; j < x.cols(); ++j) {
      const double keep = probe(i, j);
      probe(i, j) = keep + h;
      const double up = f(probe);
      probe(i, j) = keep - h;
      const double down = f(probe);
      probe(i, j) = keep;
      grad(i, j) = (up - down) / (2 * h);
    }
  return grad;
}

/// True when `what` (an exception message) contains `needle`.
inline bool contains(const std::string& what, const std::string& needle) {
  return what.find(needle) != std::string::npos;
}

}  // namespace test
}  // namespace kshot

/// Checks that `expr` throws `type` and that its message contains every listed fragment.
#define KSHOT_CHECK_THROWS_WITH_ALL(expr, type, ...)                                               \
  do {                                                                                             \
    bool kshot_thrown_ = false;                                                                    \
    try {                                                                                          \
      (void)(expr);                                                                                \
    } catch (const type& e) {                                                                      \
      kshot_thrown_ = true;                                                                        \
      for (const char* fragment : {__VA_ARGS__}) {                                                 \
        const std::string kshot_message_(e.what()), kshot_fragment_(fragment);                    \
        INFO("message: " << kshot_message_ << " | expected fragment: " << kshot_fragment_);        \
        CHECK(::kshot::test::contains(kshot_message_, kshot_fragment_));                           \
      }                                                                                            \
    }                                                                                              \
    CHECK_MESSAGE(kshot_thrown_, "expected " #type " from " #expr);                                \
  } while (0)

#endif  // KSHOT_TESTS_TEST_UTIL_HPP
