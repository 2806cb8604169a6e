// SPDX-License-Identifier: MIT
// RKDLoss: the torchdistill reference cases, the O(N^3 d) definition computed directly (explicit difference
// vectors, as the peer), central-difference gradients at random, near-duplicate and degenerate points, float
// against double, 1 vs 2 threads, errors.
#include "distill/distill_checks.hpp"

#include <kshot/distill/rkd.hpp>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

// One unity translation unit with the other distillation tests: helpers stay in this namespace.
namespace test_rkd {

using namespace kshot;
using namespace kshot::test;
using namespace kshot::test::distill_checks;

namespace {

long double huber(long double x, long double beta) {
  const long double a = std::abs(x);
  if (beta == 0) return a;
  return a < beta ? 0.5L * x * x / beta : a - 0.5L * beta;
}

/// RKD exactly as torchdistill's code reads (distance matrix, mean of positive entries, N batched angle products).
double rkd_by_hand(const RowMatrixX<double>& s, const RowMatrixX<double>& t, double df, double af, bool mean,
                   double beta) {
  const Index n = s.rows();
  auto pdist = [&](const RowMatrixX<double>& x) {
    std::vector<long double> d(static_cast<std::size_t>(n * n), 0.0L);
    long double sum = 0;
    Index count = 0;
    for (Index i = 0; i < n; ++i)
      for (Index j = 0; j < n; ++j) {
        if (i == j) continue;
        long double sq = 0;
        for (Index k = 0; k < x.cols(); ++k) sq += (long double)(x(i, k) - x(j, k)) * (x(i, k) - x(j, k));
        const long double v = std::sqrt(std::max(sq, 1e-12L));
        d[static_cast<std::size_t>(i * n + j)] = v;
        sum += v;
        ++count;
      }
    for (auto& v : d) v /= (sum / count);
    return d;
  };
  auto units = [&](const RowMatrixX<double>& x, Index i) {
    std::vector<std::vector<long double>> e(static_cast<std::size_t>(n));
    for (Index j = 0; j < n; ++j) {
      std::vector<long double> v(static_cast<std::size_t>(x.cols()));
      long double nrm = 0;
      for (Index k = 0; k < x.cols(); ++k) {
        v[static_cast<std::size_t>(k)] = (long double)x(j, k) - x(i, k);
        nrm += v[static_cast<std::size_t>(k)] * v[static_cast<std::size_t>(k)];
      }
      nrm = std::max(std::sqrt(nrm), 1e-12L);
      for (auto& c : v) c /= nrm;
      e[static_cast<std::size_t>(j)] = v;
    }
    return e;
  };
  long double dist = 0, angle = 0;
  if (df != 0 && n >= 2) {
    const auto ds = pdist(s), dt = pdist(t);
    for (std::size_t k = 0; k < ds.size(); ++k) dist += huber(ds[k] - dt[k], beta);
    if (mean) dist /= (long double)(n * n);
  }
  if (af != 0) {
    for (Index i = 0; i < n; ++i) {
      const auto es = units(s, i), et = units(t, i);
      for (Index j = 0; j < n; ++j)
        for (Index k = 0; k < n; ++k) {
          long double as = 0, at = 0;
          for (std::size_t c = 0; c < es[0].size(); ++c)
            as += es[static_cast<std::size_t>(j)][c] * es[static_cast<std::size_t>(k)][c];
          for (std::size_t c = 0; c < et[0].size(); ++c)
            at += et[static_cast<std::size_t>(j)][c] * et[static_cast<std::size_t>(k)][c];
          angle += huber(as - at, beta);
        }
    }
    if (mean) angle /= (long double)(n * n * n);
  }
  return static_cast<double>(df * dist + af * angle);
}

}  // namespace

TEST_CASE("RKDLoss: torchdistill reference cases") {
  const auto all = cases("RKDLoss");
  REQUIRE(!all.empty());
  for (const auto& c : all) {
    INFO("case " << c.json.at("case").get<std::string>());
    RKDLoss<double> loss;
    loss.dist_factor = param(c, "dist_factor", 0.0);
    loss.angle_factor = param(c, "angle_factor", 0.0);
    loss.reduction = param_string(c, "reduction", "mean") == "sum" ? DistillReduction::sum : DistillReduction::mean;
    loss.smooth_l1_beta = param(c, "beta", 1.0);
    const double value = check_student_case(loss, c);
    CHECK(loss.evaluate(c.input(key_with(c.json.at("inputs"), "student")),
                        c.input(key_with(c.json.at("inputs"), "teacher"))) == value);
  }
}

TEST_CASE("RKDLoss: value against the definition, gradient against central differences") {
  const RowMatrixX<double> s = random_matrix<double>(7, 5, 1) + RowMatrixX<double>::Constant(7, 5, 3.0);
  const RowMatrixX<double> t = random_matrix<double>(7, 9, 2);
  struct Setting {
    double df, af, beta;
    bool mean;
  };
  for (const Setting st : {Setting{1, 2, 1, true}, Setting{1, 0, 1, true}, Setting{0, 1, 1, true},
                           Setting{0.5, 3, 0.05, false}, Setting{1, 1, 0, true}}) {
    INFO("dist " << st.df << " angle " << st.af << " beta " << st.beta << " mean " << st.mean);
    RKDLoss<double> loss;
    loss.dist_factor = st.df;
    loss.angle_factor = st.af;
    loss.smooth_l1_beta = st.beta;
    loss.reduction = st.mean ? DistillReduction::mean : DistillReduction::sum;
    RowMatrixX<double> g(7, 5);
    const double v = loss.evaluate(s, t, g);
    CHECK(scalar_rel(v, rkd_by_hand(s, t, st.df, st.af, st.mean, st.beta)) < 1e-11);
    CHECK(loss.last_explicit_apexes() == 0);
    check_gradient([&](const RowMatrixX<double>& x) { return loss.evaluate(x, t); }, s, g);
  }
}

TEST_CASE("RKDLoss: near-duplicate samples take the explicit path; duplicates and a single row stay finite") {
  RowMatrixX<double> s = random_matrix<double>(6, 4, 11);
  const RowMatrixX<double> t = random_matrix<double>(6, 3, 12);
  s.row(4) = s.row(1) + 3e-3 * random_matrix<double>(1, 4, 13);
  RKDLoss<double> loss;
  RowMatrixX<double> g(6, 4);
  const double v = loss.evaluate(s, t, g);
  CHECK(loss.last_explicit_apexes() >= 2);
  CHECK(scalar_rel(v, rkd_by_hand(s, t, 1, 2, true, 1)) < 1e-11);
  check_gradient([&](const RowMatrixX<double>& x) { return loss.evaluate(x, t); }, s, g, 1e-8);
  // The teacher with near duplicates too.
  RowMatrixX<double> t2 = t;
  t2.row(0) = t2.row(5) + 1e-4 * random_matrix<double>(1, 3, 14);
  loss.evaluate(s, t2, g);
  CHECK(scalar_rel(loss.evaluate(s, t2), rkd_by_hand(s, t2, 1, 2, true, 1)) < 1e-11);
  check_gradient([&](const RowMatrixX<double>& x) { return loss.evaluate(x, t2); }, s, g, 1e-8);
  // Exact duplicates (the difference vector is zero, its unit vector 0, the distance at its 1e-6 clamp).
  RowMatrixX<double> d = s;
  d.row(3) = d.row(0);
  const double vd = loss.evaluate(d, t, g);
  CHECK(std::isfinite(vd));
  CHECK(detail::all_finite(g));
  CHECK(scalar_rel(vd, rkd_by_hand(d, t, 1, 2, true, 1)) < 1e-11);
  // Every row the same: all angles and distances degenerate.
  const RowMatrixX<double> same = RowMatrixX<double>::Constant(5, 4, 0.7);
  RowMatrixX<double> gs(5, 4);
  const RowMatrixX<double> ts = random_matrix<double>(5, 4, 15);
  CHECK(scalar_rel(loss.evaluate(same, ts, gs), rkd_by_hand(same, ts, 1, 2, true, 1)) < 1e-11);
  CHECK(detail::all_finite(gs));
  // Zero features everywhere.
  const RowMatrixX<double> zero = RowMatrixX<double>::Zero(5, 4);
  CHECK(std::isfinite(loss.evaluate(zero, zero, gs)));
  CHECK(gs.isZero(0));
  // One row: 0.
  RowMatrixX<double> g1(1, 4);
  CHECK(loss.evaluate(RowMatrixX<double>(s.topRows(1)), RowMatrixX<double>(t.topRows(1)), g1) == 0.0);
  CHECK(g1.isZero(0));
}

TEST_CASE("RKDLoss: float agrees with double, and 1 vs 2 threads are bitwise identical") {
  const Index n = 96;
  const RowMatrixX<double> s = random_matrix<double>(n, 32, 21), t = random_matrix<double>(n, 48, 22);
  RKDLoss<double> ld;
  RKDLoss<float> lf;
  check_float_and_threads(ld, lf, s, t, 1e-4);
  CHECK(lf.last_explicit_apexes() == 0);
  // With explicit apexes in the batch too.
  RowMatrixX<double> d = s;
  d.row(7) = d.row(50);
  check_threads_bitwise([&](RowMatrixX<double>& g) { return ld.evaluate(d, t, g); }, n, 32);
  CHECK(ld.last_explicit_apexes() >= 2);
}

TEST_CASE("RKDLoss: bad input throws with a clear message") {
  RKDLoss<double> loss;
  const RowMatrixX<double> s = random_matrix<double>(5, 3, 1), t = random_matrix<double>(4, 3, 2);
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(s, t), std::invalid_argument, "kshot::RKDLoss::evaluate()",
                              "teacher has 4 rows but student has 5 rows");
  loss.reduction = DistillReduction::batchmean;
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(s, s), std::invalid_argument, "'batchmean' is not defined");
  loss.reduction = DistillReduction::mean;
  loss.smooth_l1_beta = -1;
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(s, s), std::invalid_argument, "smooth_l1_beta is -1");
  loss.smooth_l1_beta = 1;
  loss.angle_factor = std::numeric_limits<double>::quiet_NaN();
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(s, s), std::invalid_argument, "angle_factor is nan");
}

}  // namespace test_rkd
