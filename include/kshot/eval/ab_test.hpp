/**
 * @file kshot/eval/ab_test.hpp
 * @brief A/B test statistics for click-through and conversion rates: the two-proportion z-test with its
 * p-value and confidence interval, the power of that test, and the sample size needed for a minimum
 * detectable effect.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_EVAL_AB_TEST_HPP
#define KSHOT_EVAL_AB_TEST_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/types.hpp"
#include "kshot/eval/detail/normal.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

namespace kshot {

/**
 * @brief The alternative hypothesis of a test comparing variant B with control A.
 *
 * `two_sided`: @f$p_B \ne p_A@f$; `greater`: @f$p_B > p_A@f$; `less`: @f$p_B < p_A@f$.
 */
enum class Alternative { two_sided, less, greater };

/// What two_proportion_z_test() computed.
struct TwoProportionZTest {
  double rate_a = 0;                 ///< @f$\hat p_A = x_A / n_A@f$ (control)
  double rate_b = 0;                 ///< @f$\hat p_B = x_B / n_B@f$ (variant)
  double difference = 0;             ///< @f$\hat p_B - \hat p_A@f$
  double relative_lift = 0;          ///< difference / rate_a (0 when both rates are 0, +inf when only rate_a is)
  double pooled_rate = 0;            ///< @f$\bar p = (x_A + x_B)/(n_A + n_B)@f$
  double standard_error_pooled = 0;  ///< @f$\sqrt{\bar p(1-\bar p)(1/n_A + 1/n_B)}@f$, used by the test
  double standard_error = 0;         ///< @f$\sqrt{\hat p_A(1-\hat p_A)/n_A + \hat p_B(1-\hat p_B)/n_B}@f$, used by the interval
  double z = 0;                      ///< difference / standard_error_pooled (0 when that is 0)
  double p_value = 1;                ///< of `alternative` under @f$H_0: p_A = p_B@f$
  double ci_lower = 0;               ///< lower end of the 1 - alpha interval for the difference
  double ci_upper = 0;               ///< upper end
  double alpha = 0.05;               ///< the significance level used
  Alternative alternative = Alternative::two_sided;  ///< the alternative tested

  /// True when p_value < alpha.
  bool significant() const noexcept { return p_value < alpha; }
};

/**
 * @brief Two-proportion z-test of control A against variant B (clicks over impressions, conversions
 * over visitors).
 *
 * The test statistic uses the pooled standard error (the rates are equal under @f$H_0@f$):
 * @f$z = (\hat p_B - \hat p_A) / \sqrt{\bar p(1-\bar p)(1/n_A + 1/n_B)}@f$, with p-value
 * @f$2(1 - \Phi(|z|))@f$ (two-sided), @f$1 - \Phi(z)@f$ (greater) or @f$\Phi(z)@f$ (less). It equals
 * Pearson's chi-square test of the 2 x 2 table without continuity correction (@f$z^2 = \chi^2@f$).
 *
 * The confidence interval for @f$p_B - p_A@f$ uses the unpooled (Wald) standard error, since it must not
 * assume equal rates: two-sided @f$\hat p_B - \hat p_A \pm z_{1-\alpha/2}\,SE@f$; for `greater` the
 * interval is @f$[\hat p_B - \hat p_A - z_{1-\alpha} SE,\ 1]@f$ and for `less`
 * @f$[-1,\ \hat p_B - \hat p_A + z_{1-\alpha} SE]@f$ (the open end is the range of a difference of rates).
 * The Wald interval is not clipped to [-1, 1] and is poor for tiny counts (use it when each arm has at
 * least about 10 successes and 10 failures).
 *
 * Degenerate but valid input: when no trial or every trial succeeded in both arms the pooled standard
 * error is 0; then z = 0 and the p-value is 1.
 *
 * @param[in] successes_a, trials_a control successes and trials, 0 <= successes_a <= trials_a, trials_a >= 1.
 * @param[in] successes_b, trials_b variant successes and trials, likewise.
 * @param[in] alpha significance level, 0 < alpha < 1 (the interval has level 1 - alpha).
 * @param[in] alternative the alternative hypothesis.
 * @throws std::invalid_argument if a trial count is < 1, a success count is negative or exceeds its
 * trials, or alpha is not in (0, 1).
 * @note No allocation; thread-safe.
 */
inline TwoProportionZTest two_proportion_z_test(std::int64_t successes_a, std::int64_t trials_a,
                                                std::int64_t successes_b, std::int64_t trials_b, double alpha = 0.05,
                                                Alternative alternative = Alternative::two_sided) {
  constexpr const char* where = "kshot::two_proportion_z_test()";
  KSHOT_CHECK(trials_a >= 1, where, detail::cat("trials_a must be at least 1, got ", trials_a));
  KSHOT_CHECK(trials_b >= 1, where, detail::cat("trials_b must be at least 1, got ", trials_b));
  KSHOT_CHECK(successes_a >= 0 && successes_a <= trials_a, where,
              detail::cat("successes_a = ", successes_a, " must lie in [0, trials_a = ", trials_a, "]"));
  KSHOT_CHECK(successes_b >= 0 && successes_b <= trials_b, where,
              detail::cat("successes_b = ", successes_b, " must lie in [0, trials_b = ", trials_b, "]"));
  KSHOT_CHECK(alpha > 0 && alpha < 1, where, detail::cat("alpha must lie in (0, 1), got ", alpha));

  const auto na = static_cast<double>(trials_a), nb = static_cast<double>(trials_b);
  TwoProportionZTest t;
  t.alpha = alpha;
  t.alternative = alternative;
  t.rate_a = static_cast<double>(successes_a) / na;
  t.rate_b = static_cast<double>(successes_b) / nb;
  t.difference = t.rate_b - t.rate_a;
  if (t.rate_a > 0)
    t.relative_lift = t.difference / t.rate_a;
  else
    t.relative_lift = t.rate_b > 0 ? std::numeric_limits<double>::infinity() : 0.0;
  t.pooled_rate = static_cast<double>(successes_a + successes_b) / (na + nb);
  t.standard_error_pooled = std::sqrt(t.pooled_rate * (1 - t.pooled_rate) * (1 / na + 1 / nb));
  t.standard_error = std::sqrt(t.rate_a * (1 - t.rate_a) / na + t.rate_b * (1 - t.rate_b) / nb);

  if (t.standard_error_pooled > 0) {
    t.z = t.difference / t.standard_error_pooled;
    switch (alternative) {
      case Alternative::two_sided: t.p_value = std::erfc(std::abs(t.z) * detail::inv_sqrt2); break;
      case Alternative::greater: t.p_value = detail::normal_sf(t.z); break;
      case Alternative::less: t.p_value = detail::normal_cdf(t.z); break;
    }
  } else {
    t.z = 0;
    t.p_value = 1;
  }
  if (alternative == Alternative::two_sided) {
    const double half = detail::normal_quantile(1 - alpha / 2) * t.standard_error;
    t.ci_lower = t.difference - half;
    t.ci_upper = t.difference + half;
  } else {
    const double half = detail::normal_quantile(1 - alpha) * t.standard_error;
    t.ci_lower = alternative == Alternative::greater ? t.difference - half : -1.0;
    t.ci_upper = alternative == Alternative::greater ? 1.0 : t.difference + half;
  }
  return t;
}

/**
 * @brief Power of the two-proportion z-test (normal approximation) when the true rates are p_a and p_b
 * and the arms have n_a and n_b trials.
 *
 * With @f$\Delta = p_B - p_A@f$, @f$SE_0@f$ the pooled standard error at
 * @f$\bar p = (n_A p_A + n_B p_B)/(n_A + n_B)@f$ and @f$SE_1@f$ the unpooled one:
 * greater: @f$\Phi((\Delta - z_{1-\alpha}SE_0)/SE_1)@f$; less: @f$\Phi((-\Delta - z_{1-\alpha}SE_0)/SE_1)@f$;
 * two-sided: the sum of both with @f$z_{1-\alpha/2}@f$.
 * @throws std::invalid_argument if p_a or p_b is not in (0, 1), n_a or n_b < 1, or alpha not in (0, 1).
 * @note No allocation; thread-safe.
 */
inline double power_two_proportions(double p_a, double p_b, double n_a, double n_b, double alpha = 0.05,
                                    Alternative alternative = Alternative::two_sided) {
  constexpr const char* where = "kshot::power_two_proportions()";
  KSHOT_CHECK(p_a > 0 && p_a < 1, where, detail::cat("p_a must lie in (0, 1), got ", p_a));
  KSHOT_CHECK(p_b > 0 && p_b < 1, where, detail::cat("p_b must lie in (0, 1), got ", p_b));
  KSHOT_CHECK(n_a >= 1 && std::isfinite(n_a), where, detail::cat("n_a must be a finite count >= 1, got ", n_a));
  KSHOT_CHECK(n_b >= 1 && std::isfinite(n_b), where, detail::cat("n_b must be a finite count >= 1, got ", n_b));
  KSHOT_CHECK(alpha > 0 && alpha < 1, where, detail::cat("alpha must lie in (0, 1), got ", alpha));
  const double delta = p_b - p_a;
  const double pooled = (n_a * p_a + n_b * p_b) / (n_a + n_b);
  const double se0 = std::sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b));
  const double se1 = std::sqrt(p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b);
  if (alternative == Alternative::two_sided) {
    const double z = detail::normal_quantile(1 - alpha / 2);
    return detail::normal_cdf((delta - z * se0) / se1) + detail::normal_cdf((-delta - z * se0) / se1);
  }
  const double z = detail::normal_quantile(1 - alpha);
  const double signed_delta = alternative == Alternative::greater ? delta : -delta;
  return detail::normal_cdf((signed_delta - z * se0) / se1);
}

/// What sample_size_two_proportions() computed.
struct SampleSize {
  Index trials_a = 0;  ///< trials needed in control A
  Index trials_b = 0;  ///< trials needed in variant B (ratio x trials_a, rounded up)
  double power = 0;    ///< power_two_proportions() at these sizes (>= the requested power)
  Index total() const noexcept { return trials_a + trials_b; }  ///< trials_a + trials_b
};

/**
 * @brief Trials per arm that the two-proportion z-test needs to detect an absolute change of
 * `minimum_detectable_effect` from `p_baseline` with the given power.
 *
 * With @f$p_1@f$ = p_baseline, @f$p_2 = p_1 + \Delta@f$, r = ratio (= n_B / n_A),
 * @f$\bar p = (p_1 + r p_2)/(1 + r)@f$ and z the quantiles of @f$1 - \alpha/2@f$ (two-sided) or
 * @f$1 - \alpha@f$ (one-sided) and of the power:
 * @f[ n_A = \left\lceil \frac{\left(z_{\alpha}\sqrt{\bar p\bar q(1 + 1/r)} + z_{\beta}\sqrt{p_1q_1 + p_2q_2/r}
 * \right)^2}{\Delta^2} \right\rceil, \qquad n_B = \lceil r\,n_A \rceil @f]
 * (Fleiss, Levin and Paik 2003, eq. 4.14, without continuity correction): the pooled variance under
 * @f$H_0@f$, the unpooled one under @f$H_1@f$, matching two_proportion_z_test(). The far tail of a
 * two-sided test is ignored, as usual, so the achieved power is a hair above the request.
 *
 * @param[in] p_baseline control rate, in (0, 1).
 * @param[in] minimum_detectable_effect absolute change @f$\Delta \ne 0@f$ (0.01 = one percentage point) with
 * p_baseline + Δ in (0, 1); Δ > 0 for Alternative::greater, Δ < 0 for Alternative::less.
 * @param[in] alpha significance level in (0, 1).
 * @param[in] power wanted power in (0, 1), typically 0.8.
 * @param[in] ratio n_B / n_A, > 0 and finite (1 for an even split).
 * @param[in] alternative the test that will be run.
 * @throws std::invalid_argument when any of those conditions fails or the result overflows Index.
 * @note No allocation; thread-safe.
 */
inline SampleSize sample_size_two_proportions(double p_baseline, double minimum_detectable_effect, double alpha = 0.05,
                                              double power = 0.8, double ratio = 1.0,
                                              Alternative alternative = Alternative::two_sided) {
  constexpr const char* where = "kshot::sample_size_two_proportions()";
  const double p1 = p_baseline, delta = minimum_detectable_effect, p2 = p1 + delta;
  KSHOT_CHECK(p1 > 0 && p1 < 1, where, detail::cat("p_baseline must lie in (0, 1), got ", p1));
  KSHOT_CHECK(std::isfinite(delta) && delta != 0, where,
              detail::cat("minimum_detectable_effect must be finite and non-zero, got ", delta));
  KSHOT_CHECK(p2 > 0 && p2 < 1, where,
              detail::cat("p_baseline + minimum_detectable_effect = ", p2, " must lie in (0, 1)"));
  KSHOT_CHECK(alpha > 0 && alpha < 1, where, detail::cat("alpha must lie in (0, 1), got ", alpha));
  KSHOT_CHECK(power > 0 && power < 1, where, detail::cat("power must lie in (0, 1), got ", power));
  KSHOT_CHECK(ratio > 0 && std::isfinite(ratio), where, detail::cat("ratio must be finite and > 0, got ", ratio));
  KSHOT_CHECK(alternative != Alternative::greater || delta > 0, where,
              detail::cat("Alternative::greater needs minimum_detectable_effect > 0, got ", delta));
  KSHOT_CHECK(alternative != Alternative::less || delta < 0, where,
              detail::cat("Alternative::less needs minimum_detectable_effect < 0, got ", delta));

  const double z_alpha = detail::normal_quantile(alternative == Alternative::two_sided ? 1 - alpha / 2 : 1 - alpha);
  const double z_beta = detail::normal_quantile(power);
  const double pooled = (p1 + ratio * p2) / (1 + ratio);
  const double root = z_alpha * std::sqrt(pooled * (1 - pooled) * (1 + 1 / ratio)) +
                      z_beta * std::sqrt(p1 * (1 - p1) + p2 * (1 - p2) / ratio);
  const double n_a = root * root / (delta * delta);
  const double limit = static_cast<double>(std::numeric_limits<Index>::max() / 4);
  KSHOT_CHECK(n_a < limit && ratio * n_a < limit, where,
              detail::cat("the sample size overflows (", n_a, " trials in arm A)"));
  SampleSize out;
  out.trials_a = std::max<Index>(1, static_cast<Index>(std::ceil(n_a)));
  out.trials_b = std::max<Index>(1, static_cast<Index>(std::ceil(ratio * static_cast<double>(out.trials_a))));
  out.power = power_two_proportions(p1, p2, static_cast<double>(out.trials_a), static_cast<double>(out.trials_b), alpha,
                                    alternative);
  return out;
}

}  // namespace kshot

#endif  // KSHOT_EVAL_AB_TEST_HPP
