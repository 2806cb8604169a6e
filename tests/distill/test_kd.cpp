// SPDX-License-Identifier: MIT
// KDLoss and DKDLoss: the torchdistill and mdistiller reference cases, the definitions computed directly,
// central-difference gradients at random and degenerate points, float against double, 1 vs 2 threads, errors.
#include "distill/distill_checks.hpp"

#include <kshot/distill/dkd.hpp>
#include <kshot/distill/kd.hpp>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

// The distillation tests are compiled as one unity translation unit: each file keeps its helpers in a namespace
// of its own.
namespace test_kd {

using namespace kshot;
using namespace kshot::test;
using namespace kshot::test::distill_checks;

namespace {

LabelVector targets_of(Index n, Index c, std::uint64_t seed) {
  LabelVector y(n);
  RandomStream rng(seed);
  for (Index i = 0; i < n; ++i) y[i] = static_cast<Label>(rng.bounded(static_cast<std::uint64_t>(c)));
  return y;
}

/// Log-softmax of a row at temperature T, in long double.
std::vector<long double> log_softmax_ld(const RowMatrixX<double>& z, Index i, long double scale) {
  std::vector<long double> out(static_cast<std::size_t>(z.cols()));
  long double m = -std::numeric_limits<long double>::infinity();
  for (Index k = 0; k < z.cols(); ++k) m = std::max(m, z(i, k) * scale);
  long double s = 0;
  for (Index k = 0; k < z.cols(); ++k) s += std::exp(z(i, k) * scale - m);
  for (Index k = 0; k < z.cols(); ++k) out[static_cast<std::size_t>(k)] = z(i, k) * scale - m - std::log(s);
  return out;
}

/// torchdistill's KDLoss straight from its definition.
double kd_by_hand(const RowMatrixX<double>& s, const RowMatrixX<double>& t, const LabelVector* y, double T,
                  double alpha, double beta, DistillReduction red) {
  const Index n = s.rows(), c = s.cols();
  long double kl = 0, ce = 0;
  for (Index i = 0; i < n; ++i) {
    const auto lq = log_softmax_ld(s, i, 1.0L / T), lp = log_softmax_ld(t, i, 1.0L / T);
    for (std::size_t k = 0; k < lq.size(); ++k) kl += std::exp(lp[k]) * (lp[k] - lq[k]);
    if (y != nullptr) ce -= log_softmax_ld(s, i, 1.0L)[static_cast<std::size_t>((*y)[i])];
  }
  const long double kl_red = red == DistillReduction::batchmean ? kl / n
                             : red == DistillReduction::mean    ? kl / (n * c)
                                                                : kl;
  const long double ce_red = red == DistillReduction::sum ? ce : ce / n;
  if (y == nullptr || alpha == 0) return static_cast<double>(kl_red);
  return static_cast<double>(alpha * ce_red + beta * T * T * kl_red);
}

}  // namespace

TEST_CASE("KDLoss: torchdistill reference cases") {
  const auto all = cases(".KDLoss(");
  REQUIRE(!all.empty());
  for (const auto& c : all) {
    INFO("case " << c.json.at("case").get<std::string>());
    KDLoss<double> loss;
    loss.temperature = param(c, "temperature", 4.0);
    loss.alpha = param(c, "alpha", 0.0);
    const auto& p = c.json.at("params");
    if (p.contains("beta") && !p.at("beta").is_null()) loss.beta = p.at("beta").get<double>();
    const std::string red = param_string(c, "reduction", "batchmean");
    loss.reduction = red == "sum"    ? DistillReduction::sum
                     : red == "mean" ? DistillReduction::mean
                                     : DistillReduction::batchmean;
    loss.label_smoothing = param(c, "label_smoothing", 0.0);
    loss.ignore_index = static_cast<Label>(param(c, "ignore_index", -100));
    const RowMatrixX<double> s = c.input(key_with(c.json.at("inputs"), "student"));
    const RowMatrixX<double> t = c.input(key_with(c.json.at("inputs"), "teacher"));
    RowMatrixX<double> grad(s.rows(), s.cols());
    double value = 0;
    if (c.json.at("inputs").contains("targets") && !c.json.at("inputs").at("targets").is_null()) {
      const LabelVector y = c.labels("targets");
      value = loss.evaluate(s, t, y, grad);
      CHECK(loss.evaluate(s, t, y) == value);
    } else {
      value = loss.evaluate(s, t, grad);
    }
    CHECK(scalar_rel(value, c.loss()) <= reference_tolerance);
    CHECK(matrix_rel(grad, c.grad(key_with(c.json.at("grad"), "student"))) <= reference_tolerance);
  }
}

TEST_CASE("KDLoss: value from the definition for every reduction, alpha and beta") {
  const RowMatrixX<double> s = random_matrix<double>(7, 5, 1) * 3.0, t = random_matrix<double>(7, 5, 2) * 3.0;
  const LabelVector y = targets_of(7, 5, 3);
  for (const auto red : {DistillReduction::batchmean, DistillReduction::mean, DistillReduction::sum}) {
    for (const double T : {0.5, 1.0, 4.0, 20.0}) {
      for (const double alpha : {0.0, 0.3, 1.0}) {
        INFO("reduction " << reduction_name(red) << " T " << T << " alpha " << alpha);
        KDLoss<double> loss;
        loss.temperature = T;
        loss.alpha = alpha;
        loss.reduction = red;
        CHECK(scalar_rel(loss.evaluate(s, t, y), kd_by_hand(s, t, &y, T, alpha, 1 - alpha, red)) < 1e-12);
        CHECK(scalar_rel(loss.evaluate(s, t), kd_by_hand(s, t, nullptr, T, alpha, 1 - alpha, red)) < 1e-12);
        loss.beta = 0.25;
        CHECK(scalar_rel(loss.evaluate(s, t, y), kd_by_hand(s, t, &y, T, alpha, 0.25, red)) < 1e-12);
      }
    }
  }
}

TEST_CASE("KDLoss: gradient against central differences") {
  const RowMatrixX<double> s = random_matrix<double>(6, 4, 11) * 2.0, t = random_matrix<double>(6, 4, 12) * 2.0;
  LabelVector y = targets_of(6, 4, 13);
  struct Setting {
    double T, alpha, smoothing;
    DistillReduction red;
    bool targets, ignore;
  };
  const std::vector<Setting> settings{
      {4, 0.9, 0, DistillReduction::batchmean, true, false}, {1, 0.5, 0, DistillReduction::mean, true, false},
      {0.3, 0.2, 0.1, DistillReduction::sum, true, false},   {100, 0.7, 0.2, DistillReduction::batchmean, true, true},
      {2, 0.0, 0, DistillReduction::batchmean, true, false}, {3, 0.5, 0, DistillReduction::batchmean, false, false}};
  for (const auto& st : settings) {
    INFO("T " << st.T << " alpha " << st.alpha << " smoothing " << st.smoothing);
    KDLoss<double> loss;
    loss.temperature = st.T;
    loss.alpha = st.alpha;
    loss.label_smoothing = st.smoothing;
    loss.reduction = st.red;
    LabelVector yy = y;
    if (st.ignore) yy[2] = loss.ignore_index;
    RowMatrixX<double> g(6, 4);
    if (st.targets) {
      loss.evaluate(s, t, yy, g);
      check_gradient([&](const RowMatrixX<double>& x) { return loss.evaluate(x, t, yy); }, s, g);
    } else {
      loss.evaluate(s, t, g);
      check_gradient([&](const RowMatrixX<double>& x) { return loss.evaluate(x, t); }, s, g);
    }
  }
}

TEST_CASE("KDLoss: degenerate inputs give finite values and gradients") {
  KDLoss<double> loss;
  const LabelVector y = targets_of(4, 6, 5);
  RowMatrixX<double> g(4, 6);
  // Identical student and teacher: the KL term is 0 exactly, and its gradient too.
  const RowMatrixX<double> z = random_matrix<double>(4, 6, 6);
  loss.alpha = 0;
  CHECK(std::abs(loss.evaluate(z, z, g)) < 1e-15);
  CHECK(g.cwiseAbs().maxCoeff() < 1e-15);
  // Huge logits at a tiny temperature: teacher probabilities underflow, nothing overflows.
  loss.alpha = 0.5;
  loss.temperature = 1e-3;
  const RowMatrixX<double> big = random_matrix<double>(4, 6, 7) * 1e4;
  const double v = loss.evaluate(big, -big, y, g);
  CHECK(std::isfinite(v));
  CHECK(detail::all_finite(g));
  // A very large temperature: both distributions near uniform.
  loss.temperature = 1e6;
  CHECK(std::isfinite(loss.evaluate(big, -big, y, g)));
  CHECK(detail::all_finite(g));
  // Every target ignored: the cross-entropy is 0.
  loss.temperature = 2;
  LabelVector ignored = LabelVector::Constant(4, loss.ignore_index);
  KDLoss<double> soft;
  soft.temperature = 2;
  soft.alpha = 0;
  CHECK(loss.evaluate(z, big, ignored) == doctest::Approx(0.5 * 4 * soft.evaluate(z, big)).epsilon(1e-14));
}

TEST_CASE("KDLoss: float agrees with double") {
  const RowMatrixX<double> s = random_matrix<double>(16, 10, 21) * 2.0, t = random_matrix<double>(16, 10, 22) * 2.0;
  const LabelVector y = targets_of(16, 10, 23);
  KDLoss<double> ld;
  KDLoss<float> lf;
  RowMatrixX<double> gd(16, 10);
  RowMatrixX<float> gf(16, 10);
  const double vd = ld.evaluate(s, t, y, gd);
  const float vf = lf.evaluate(s.cast<float>(), t.cast<float>(), y, gf);
  CHECK(std::abs(vf - vd) / std::abs(vd) < 1e-5);
  CHECK(max_rel_error(gf.cast<double>(), gd) < 1e-5);
}

TEST_CASE("KDLoss: bitwise identical at 1 and 2 threads") {
  const Index n = 256, c = 1000;
  const RowMatrixX<double> s = random_matrix<double>(n, c, 31), t = random_matrix<double>(n, c, 32);
  const LabelVector y = targets_of(n, c, 33);
  KDLoss<double> loss;
  check_threads_bitwise([&](RowMatrixX<double>& g) { return loss.evaluate(s, t, y, g); }, n, c);
}

TEST_CASE("KDLoss: bad input throws with a clear message") {
  KDLoss<double> loss;
  const RowMatrixX<double> s = random_matrix<double>(4, 3, 1), t = random_matrix<double>(4, 3, 2);
  const RowMatrixX<double> t2 = random_matrix<double>(4, 5, 2), t3 = random_matrix<double>(3, 3, 2);
  LabelVector y = targets_of(4, 3, 3);
  RowMatrixX<double> g(4, 3), bad(3, 3);
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(s, t2), std::invalid_argument, "kshot::KDLoss::evaluate()",
                              "teacher has 5 columns", "student has 3");
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(s, t3), std::invalid_argument, "teacher has 3 rows", "student has 4 rows");
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(s, t, y, bad), std::invalid_argument, "grad is 3 x 3", "4 x 3");
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(s, t, LabelVector(y.head(3))), std::invalid_argument,
                              "targets has 3 entries");
  y[1] = 3;
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(s, t, y), std::out_of_range, "targets[1] = 3");
  y[1] = 0;
  RowMatrixX<double> nan = s;
  nan(2, 1) = std::numeric_limits<double>::quiet_NaN();
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(nan, t), std::invalid_argument, "student has a non-finite value");
  loss.temperature = 0;
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(s, t), std::invalid_argument, "temperature is 0");
  loss.temperature = 4;
  loss.label_smoothing = 2;
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(s, t, y), std::invalid_argument, "label_smoothing is 2");
}

// ---------------------------------------------------------------------------------------------------------------

namespace {

/// mdistiller's dkd_loss from its definition (probabilities summed as mdistiller does), long double.
double dkd_by_hand(const RowMatrixX<double>& s, const RowMatrixX<double>& t, const LabelVector& y, double alpha,
                   double beta, double T) {
  const Index n = s.rows(), c = s.cols();
  long double tckd = 0, nckd = 0;
  for (Index i = 0; i < n; ++i) {
    const auto lq = log_softmax_ld(s, i, 1.0L / T), lp = log_softmax_ld(t, i, 1.0L / T);
    const auto yi = static_cast<std::size_t>(y[i]);
    long double qo = 0, po = 0;
    for (std::size_t k = 0; k < lq.size(); ++k)
      if (k != yi) {
        qo += std::exp(lq[k]);
        po += std::exp(lp[k]);
      }
    const long double qy = std::exp(lq[yi]), py = std::exp(lp[yi]);
    tckd += py * (std::log(py) - std::log(qy)) + po * (std::log(po) - std::log(qo));
    RowMatrixX<double> ms = s.row(i) / T, mt = t.row(i) / T;
    ms(0, y[i]) -= 1000;
    mt(0, y[i]) -= 1000;
    const auto lms = log_softmax_ld(ms, 0, 1.0L), lmt = log_softmax_ld(mt, 0, 1.0L);
    for (std::size_t k = 0; k < lms.size(); ++k) nckd += std::exp(lmt[k]) * (lmt[k] - lms[k]);
  }
  (void)c;
  return static_cast<double>((alpha * tckd + beta * nckd) * T * T / n);
}

}  // namespace

TEST_CASE("DKDLoss: mdistiller reference cases") {
  const auto all = cases("dkd_loss");
  REQUIRE(!all.empty());
  for (const auto& c : all) {
    INFO("case " << c.json.at("case").get<std::string>());
    DKDLoss<double> loss;
    loss.alpha = param(c, "alpha", 1.0);
    loss.beta = param(c, "beta", 8.0);
    loss.temperature = param(c, "temperature", 4.0);
    const RowMatrixX<double> s = c.input(key_with(c.json.at("inputs"), "student"));
    const RowMatrixX<double> t = c.input(key_with(c.json.at("inputs"), "teacher"));
    const LabelVector y = c.labels("targets");
    RowMatrixX<double> grad(s.rows(), s.cols());
    const double value = loss.evaluate(s, t, y, grad);
    CHECK(scalar_rel(value, c.loss()) <= reference_tolerance);
    CHECK(matrix_rel(grad, c.grad(key_with(c.json.at("grad"), "student"))) <= reference_tolerance);
    CHECK(loss.evaluate(s, t, y) == value);
  }
}

TEST_CASE("DKDLoss: value from the definition and gradient against central differences") {
  const RowMatrixX<double> s = random_matrix<double>(6, 5, 41) * 2.0, t = random_matrix<double>(6, 5, 42) * 2.0;
  const LabelVector y = targets_of(6, 5, 43);
  for (const double T : {0.5, 1.0, 4.0, 30.0}) {
    for (const double alpha : {1.0, 0.0, 2.5}) {
      INFO("T " << T << " alpha " << alpha);
      DKDLoss<double> loss;
      loss.temperature = T;
      loss.alpha = alpha;
      loss.beta = 8;
      RowMatrixX<double> g(6, 5);
      const double v = loss.evaluate(s, t, y, g);
      CHECK(scalar_rel(v, dkd_by_hand(s, t, y, alpha, 8, T)) < 1e-11);
      check_gradient([&](const RowMatrixX<double>& x) { return loss.evaluate(x, t, y); }, s, g);
    }
  }
}

TEST_CASE("DKDLoss: degenerate inputs") {
  DKDLoss<double> loss;
  RowMatrixX<double> g(3, 4);
  const LabelVector y = targets_of(3, 4, 51);
  // The same logits: both parts are 0.
  const RowMatrixX<double> z = random_matrix<double>(3, 4, 52);
  CHECK(std::abs(loss.evaluate(z, z, y, g)) < 1e-14);
  CHECK(g.cwiseAbs().maxCoeff() < 1e-14);
  // A confident student: the non-target mass underflows in mdistiller's sum; here it stays finite.
  RowMatrixX<double> sharp = RowMatrixX<double>::Zero(3, 4);
  for (Index i = 0; i < 3; ++i) sharp(i, y[i]) = 5000;
  CHECK(std::isfinite(loss.evaluate(sharp, z, y, g)));
  CHECK(detail::all_finite(g));
  // A confident teacher: the gradient is still exact.
  loss.evaluate(z, sharp, y, g);
  check_gradient([&](const RowMatrixX<double>& x) { return loss.evaluate(x, sharp, y); }, z, g);
  // One class: TCKD and NCKD are both 0.
  const RowMatrixX<double> one = random_matrix<double>(3, 1, 53);
  RowMatrixX<double> g1(3, 1);
  CHECK(loss.evaluate(one, -one, LabelVector::Zero(3), g1) == 0.0);
  CHECK(g1.cwiseAbs().maxCoeff() == 0.0);
}

TEST_CASE("DKDLoss: float agrees with double, and 1 vs 2 threads are bitwise identical") {
  const RowMatrixX<double> s = random_matrix<double>(12, 7, 61) * 2.0, t = random_matrix<double>(12, 7, 62) * 2.0;
  const LabelVector y = targets_of(12, 7, 63);
  DKDLoss<double> ld;
  DKDLoss<float> lf;
  RowMatrixX<double> gd(12, 7);
  RowMatrixX<float> gf(12, 7);
  const double vd = ld.evaluate(s, t, y, gd);
  const float vf = lf.evaluate(s.cast<float>(), t.cast<float>(), y, gf);
  CHECK(std::abs(vf - vd) / std::abs(vd) < 1e-5);
  CHECK(max_rel_error(gf.cast<double>(), gd) < 1e-4);
  const Index n = 256, c = 200;
  const RowMatrixX<double> bs = random_matrix<double>(n, c, 64), bt = random_matrix<double>(n, c, 65);
  const LabelVector by = targets_of(n, c, 66);
  check_threads_bitwise([&](RowMatrixX<double>& g) { return ld.evaluate(bs, bt, by, g); }, n, c);
}

TEST_CASE("DKDLoss: bad input throws with a clear message") {
  DKDLoss<double> loss;
  const RowMatrixX<double> s = random_matrix<double>(4, 3, 1), t = random_matrix<double>(4, 3, 2);
  LabelVector y = targets_of(4, 3, 3);
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(s, RowMatrixX<double>(random_matrix<double>(4, 2, 1)), y),
                              std::invalid_argument, "kshot::DKDLoss::evaluate()", "teacher has 2 columns");
  y[0] = -1;
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(s, t, y), std::out_of_range, "targets[0] = -1");
  y[0] = 0;
  loss.temperature = -1;
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(s, t, y), std::invalid_argument, "temperature is -1");
  loss.temperature = 4;
  loss.beta = std::numeric_limits<double>::infinity();
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(s, t, y), std::invalid_argument, "beta is inf");
}

}  // namespace test_kd
