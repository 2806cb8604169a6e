/**
 * @file kshot/eval/confidence.hpp
 * @brief Mean with a 95% confidence interval, as few-shot papers report accuracy over episodes.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_EVAL_CONFIDENCE_HPP
#define KSHOT_EVAL_CONFIDENCE_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/types.hpp"

#include <cmath>
#include <vector>

namespace kshot {

/// A mean and its normal-approximation 95% confidence interval, mean ± half_width.
struct MeanInterval {
  double mean = 0;        ///< the sample mean
  double stddev = 0;      ///< the population standard deviation (ddof = 0, as numpy.std)
  double half_width = 0;  ///< 1.96 * stddev / sqrt(n)
  Index count = 0;        ///< n
  double lower() const noexcept { return mean - half_width; }
  double upper() const noexcept { return mean + half_width; }
};

/**
 * @brief Mean and 95% interval of `values`: @f$ \bar x \pm 1.96\,\sigma/\sqrt{n} @f$ with @f$\sigma@f$ the
 * population standard deviation, the convention of few-shot papers (numpy.std with ddof = 0).
 *
 * Summed in index order, so the result does not depend on how `values` was computed.
 * @throws std::invalid_argument if values is empty or has a non-finite entry.
 */
inline MeanInterval mean_ci95(const std::vector<double>& values) {
  constexpr const char* where = "kshot::mean_ci95()";
  KSHOT_CHECK(!values.empty(), where, "values is empty");
  double sum = 0;
  for (std::size_t i = 0; i < values.size(); ++i) {
    KSHOT_CHECK(std::isfinite(values[i]), where, detail::cat("values[", i, "] = ", values[i], " is not finite"));
    sum += values[i];
  }
  const auto n = static_cast<double>(values.size());
  MeanInterval out;
  out.count = static_cast<Index>(values.size());
  out.mean = sum / n;
  double squares = 0;
  for (double v : values) squares += (v - out.mean) * (v - out.mean);
  out.stddev = std::sqrt(squares / n);
  out.half_width = 1.96 * out.stddev / std::sqrt(n);
  return out;
}

}  // namespace kshot

#endif  // KSHOT_EVAL_CONFIDENCE_HPP
