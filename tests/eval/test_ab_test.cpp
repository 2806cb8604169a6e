/**
 * @file tests/eval/test_ab_test.cpp
 * @brief A/B statistics: the normal quantile against SciPy, the two-proportion z-test against a textbook
 * worked example and SciPy's chi-square test of the 2 x 2 table, the sample size against its formula and its
 * own power, and bad input.
 *
 * SPDX-License-Identifier: MIT
 */
#include <kshot/eval/ab_test.hpp>

#include "reference.hpp"
#include "test_util.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <limits>
#include <string>

namespace {

const nlohmann::json& fixture() {
  static const kshot::test::ReferenceCase c = kshot::test::load_reference("sklearn_ranking");
  return c.json;
}

double rel_error(double got, double want) { return std::abs(got - want) / std::max(std::abs(want), 1e-300); }

kshot::Alternative alternative_of(const std::string& name) {
  if (name == "greater") return kshot::Alternative::greater;
  if (name == "less") return kshot::Alternative::less;
  return kshot::Alternative::two_sided;
}

}  // namespace

TEST_CASE("ab_test: the normal quantile, CDF and survival function match SciPy") {
  const auto& normal = fixture().at("normal");
  const auto& p = normal.at("p");
  const auto& ppf = normal.at("ppf");
  double worst = 0;
  for (std::size_t i = 0; i < p.size(); ++i) {
    const double want = ppf[i].get<double>();
    const double got = kshot::detail::normal_quantile(p[i].get<double>());
    INFO("p = " << p[i].get<double>() << ": got " << got << ", want " << want);
    if (want == 0) {
      CHECK(got == 0.0);
      continue;
    }
    const double err = rel_error(got, want);
    // 1 - 1e-10 is itself rounded to a double; that rounding, not the algorithm, bounds the agreement there.
    CHECK(err < (p[i].get<double>() > 0.9999 ? 1e-9 : 1e-12));
    worst = std::max(worst, p[i].get<double>() > 0.9999 ? 0.0 : err);
  }
  MESSAGE("worst relative error of normal_quantile against scipy.stats.norm.ppf: " << worst);
  const auto& x = normal.at("x");
  for (std::size_t i = 0; i < x.size(); ++i) {
    INFO("x = " << x[i].get<double>());
    CHECK(rel_error(kshot::detail::normal_cdf(x[i].get<double>()), normal.at("cdf")[i].get<double>()) < 1e-13);
    CHECK(rel_error(kshot::detail::normal_sf(x[i].get<double>()), normal.at("sf")[i].get<double>()) < 1e-13);
  }
  // Known values: the 97.5% and 95% quantiles, exact antisymmetry, and a round trip.
  CHECK(rel_error(kshot::detail::normal_quantile(0.975), 1.959963984540054) < 1e-15);
  CHECK(rel_error(kshot::detail::normal_quantile(0.95), 1.6448536269514722) < 1e-15);
  for (double q : {0.55, 0.7, 0.8, 0.99}) CHECK(  // 1 - q is exact for q >= 0.5
      kshot::detail::normal_quantile(q) == -kshot::detail::normal_quantile(1 - q));
  for (double q : {1e-12, 0.003, 0.4, 0.7}) CHECK(rel_error(kshot::detail::normal_cdf(kshot::detail::normal_quantile(q)), q) < 1e-14);
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::detail::normal_quantile(1.0), std::invalid_argument,
                              "kshot::detail::normal_quantile()", "p must lie in (0, 1), got 1");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::detail::normal_quantile(std::nan("")), std::invalid_argument, "got nan");
}

TEST_CASE("ab_test: two-proportion z-test, textbook worked example") {
  // Control: 200 conversions of 1000 visitors, variant: 250 of 1000. Pooled rate 0.225,
  // SE0 = sqrt(0.225 * 0.775 * (1/1000 + 1/1000)) = 0.0186748, z = 0.05 / SE0 = 2.6774, two-sided p = 0.0074.
  const auto t = kshot::two_proportion_z_test(200, 1000, 250, 1000);
  CHECK(t.rate_a == 0.2);
  CHECK(t.rate_b == 0.25);
  CHECK(t.difference == doctest::Approx(0.05).epsilon(1e-14));
  CHECK(t.relative_lift == doctest::Approx(0.25).epsilon(1e-14));
  CHECK(t.pooled_rate == 0.225);
  CHECK(t.standard_error_pooled == doctest::Approx(std::sqrt(0.225 * 0.775 * 0.002)).epsilon(1e-15));
  CHECK(t.z == doctest::Approx(2.677398).epsilon(1e-6));
  CHECK(t.p_value == doctest::Approx(0.0074196).epsilon(1e-4));
  CHECK(t.significant());
  // Wald interval: 0.05 +- 1.959964 * sqrt(0.2 * 0.8 / 1000 + 0.25 * 0.75 / 1000) = [0.013464, 0.086536].
  CHECK(t.standard_error == doctest::Approx(std::sqrt(0.16 / 1000 + 0.1875 / 1000)).epsilon(1e-15));
  CHECK(t.ci_lower == doctest::Approx(0.0134636).epsilon(1e-5));
  CHECK(t.ci_upper == doctest::Approx(0.0865364).epsilon(1e-5));
  const auto greater = kshot::two_proportion_z_test(200, 1000, 250, 1000, 0.05, kshot::Alternative::greater);
  CHECK(greater.p_value == doctest::Approx(t.p_value / 2).epsilon(1e-13));
  CHECK(greater.ci_upper == 1.0);
  CHECK(greater.ci_lower == doctest::Approx(0.05 - 1.6448536269514722 * t.standard_error).epsilon(1e-14));
  const auto less = kshot::two_proportion_z_test(200, 1000, 250, 1000, 0.05, kshot::Alternative::less);
  CHECK(less.p_value == doctest::Approx(1 - t.p_value / 2).epsilon(1e-13));
  CHECK(less.ci_lower == -1.0);
  CHECK_FALSE(less.significant());
}

TEST_CASE("ab_test: two-proportion z-test equals SciPy's chi-square test of the 2 x 2 table") {
  for (const auto& c : fixture().at("z_test")) {
    const auto xa = c.at("successes_a").get<std::int64_t>(), na = c.at("trials_a").get<std::int64_t>();
    const auto xb = c.at("successes_b").get<std::int64_t>(), nb = c.at("trials_b").get<std::int64_t>();
    const double alpha = c.at("alpha").get<double>();
    INFO(xa << "/" << na << " vs " << xb << "/" << nb);
    const auto t = kshot::two_proportion_z_test(xa, na, xb, nb, alpha);
    CHECK(rel_error(t.z * t.z, c.at("chi2").get<double>()) < 1e-12);
    CHECK(rel_error(t.p_value, c.at("chi2_p").get<double>()) < 1e-10);
    CHECK(rel_error(t.ci_lower, c.at("ci")[0].get<double>()) < 1e-12);
    CHECK(rel_error(t.ci_upper, c.at("ci")[1].get<double>()) < 1e-12);
    CHECK(rel_error(kshot::two_proportion_z_test(xa, na, xb, nb, alpha, kshot::Alternative::greater).p_value,
                    c.at("p_greater").get<double>()) < 1e-12);
    CHECK(rel_error(kshot::two_proportion_z_test(xa, na, xb, nb, alpha, kshot::Alternative::less).p_value,
                    c.at("p_less").get<double>()) < 1e-12);
  }
}

TEST_CASE("ab_test: degenerate counts give finite, documented results") {
  const auto none = kshot::two_proportion_z_test(0, 100, 0, 120);
  CHECK(none.z == 0.0);
  CHECK(none.p_value == 1.0);
  CHECK(none.relative_lift == 0.0);
  CHECK(none.ci_lower == 0.0);
  CHECK(none.ci_upper == 0.0);
  const auto all = kshot::two_proportion_z_test(100, 100, 7, 7);
  CHECK(all.z == 0.0);
  CHECK(all.p_value == 1.0);
  const auto from_zero = kshot::two_proportion_z_test(0, 100, 5, 100);
  CHECK(std::isinf(from_zero.relative_lift));
  CHECK(std::isfinite(from_zero.z));
  CHECK(from_zero.p_value > 0.0);
  CHECK(from_zero.p_value < 1.0);
}

TEST_CASE("ab_test: sample size for a minimum detectable effect") {
  // Baseline 10%, detect +2 points, two-sided alpha 5%, power 80%: Fleiss' formula gives 3840.8 -> 3841 per arm.
  const auto s = kshot::sample_size_two_proportions(0.10, 0.02);
  CHECK(s.trials_a == 3841);
  CHECK(s.trials_b == 3841);
  CHECK(s.total() == 7682);
  CHECK(s.power >= 0.8);
  CHECK(kshot::power_two_proportions(0.10, 0.12, 3840, 3840) < 0.8);

  for (const auto& c : fixture().at("sample_size")) {
    const double p1 = c.at("p_baseline").get<double>(), mde = c.at("mde").get<double>();
    const double alpha = c.at("alpha").get<double>(), power = c.at("power").get<double>();
    const double ratio = c.at("ratio").get<double>();
    const auto alternative = alternative_of(c.at("alternative").get<std::string>());
    INFO("p = " << p1 << ", mde = " << mde << ", " << c.at("alternative").get<std::string>());
    const auto got = kshot::sample_size_two_proportions(p1, mde, alpha, power, ratio, alternative);
    const double exact = c.at("n_a_exact").get<double>();
    CHECK(got.trials_a == static_cast<kshot::Index>(std::ceil(exact)));
    CHECK(got.trials_b == static_cast<kshot::Index>(std::ceil(ratio * static_cast<double>(got.trials_a))));
    // The rounded-up sizes reach the power; one trial fewer in each arm does not.
    CHECK(got.power >= power);
    CHECK(kshot::power_two_proportions(p1, p1 + mde, static_cast<double>(got.trials_a) - 1,
                                       ratio * (static_cast<double>(got.trials_a) - 1), alpha, alternative) < power);
    // Monte Carlo power of the real test at these sizes (20000 simulated experiments, in the fixture).
    CHECK(std::abs(c.at("simulated_power").get<double>() - power) < 0.015);
  }
  // Doubling the effect roughly quarters the size; a smaller alpha or a higher power needs more.
  CHECK(kshot::sample_size_two_proportions(0.10, 0.04).trials_a < 3841 / 3);
  CHECK(kshot::sample_size_two_proportions(0.10, 0.02, 0.01).trials_a > 3841);
  CHECK(kshot::sample_size_two_proportions(0.10, 0.02, 0.05, 0.9).trials_a > 3841);
}

TEST_CASE("ab_test: bad input throws with the function, the argument and the numbers") {
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::two_proportion_z_test(5, 0, 1, 10), std::invalid_argument,
                              "kshot::two_proportion_z_test()", "trials_a must be at least 1, got 0");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::two_proportion_z_test(5, 10, 11, 10), std::invalid_argument,
                              "successes_b = 11 must lie in [0, trials_b = 10]");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::two_proportion_z_test(-1, 10, 1, 10), std::invalid_argument,
                              "successes_a = -1");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::two_proportion_z_test(1, 10, 1, 10, 1.5), std::invalid_argument,
                              "alpha must lie in (0, 1), got 1.5");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::sample_size_two_proportions(0.0, 0.01), std::invalid_argument,
                              "kshot::sample_size_two_proportions()", "p_baseline must lie in (0, 1), got 0");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::sample_size_two_proportions(0.5, 0.0), std::invalid_argument,
                              "minimum_detectable_effect must be finite and non-zero, got 0");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::sample_size_two_proportions(0.95, 0.1), std::invalid_argument,
                              "p_baseline + minimum_detectable_effect = 1.05 must lie in (0, 1)");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::sample_size_two_proportions(0.1, 0.01, 0.05, 1.0), std::invalid_argument,
                              "power must lie in (0, 1), got 1");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::sample_size_two_proportions(0.1, 0.01, 0.0), std::invalid_argument,
                              "alpha must lie in (0, 1), got 0");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::sample_size_two_proportions(0.1, 0.01, 0.05, 0.8, -2.0), std::invalid_argument,
                              "ratio must be finite and > 0, got -2");
  KSHOT_CHECK_THROWS_WITH_ALL(
      kshot::sample_size_two_proportions(0.1, -0.01, 0.05, 0.8, 1.0, kshot::Alternative::greater),
      std::invalid_argument, "Alternative::greater needs minimum_detectable_effect > 0, got -0.01");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::sample_size_two_proportions(0.1, 1e-160), std::invalid_argument,
                              "the sample size overflows");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::power_two_proportions(0.1, 1.0, 100, 100), std::invalid_argument,
                              "kshot::power_two_proportions()", "p_b must lie in (0, 1), got 1");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::power_two_proportions(0.1, 0.2, 0.5, 100), std::invalid_argument,
                              "n_a must be a finite count >= 1, got 0.5");
}
