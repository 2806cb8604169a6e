/**
 * @file kshot/distill/common.hpp
 * @brief What the knowledge-distillation losses share: reductions, input checks, log-sum-exp softmax rows,
 * row normalisation with torch's clamp, SmoothL1, and fixed-block products that give the same bits at any
 * thread count.
 *
 * The distillation loss interface (every class in kshot/distill/ follows it):
 * @code
 * template <class Scalar> class SomeDistillLoss {
 *  public:
 *   // public hyperparameters with the peer's defaults, checked at the top of evaluate()
 *   Scalar evaluate(ConstRowMatrixRef<Scalar> student, ConstRowMatrixRef<Scalar> teacher);
 *   Scalar evaluate(ConstRowMatrixRef<Scalar> student, ConstRowMatrixRef<Scalar> teacher,
 *                   RowMatrixRef<Scalar> grad);   // grad (shape of student) is overwritten with dL/d(student)
 * };
 * @endcode
 * The teacher side is a constant: no gradient flows into it (CRD, whose teacher embedding head is trained,
 * returns its gradient on request). One loss object per thread: evaluate() reuses the object's buffers, so a
 * second call with the same shapes allocates nothing of kshot's own.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_DISTILL_COMMON_HPP
#define KSHOT_DISTILL_COMMON_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/gemm.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace kshot {

/**
 * @brief How a distillation loss reduces its elements (torchdistill's `reduction` strings).
 *
 * Each loss documents which of these it accepts and what "element" means for it.
 */
enum class DistillReduction {
  batchmean,  ///< sum divided by the batch size N (KLDivLoss 'batchmean'; SP's N^2)
  mean,       ///< mean over every element
  sum         ///< plain sum
};

/// The reduction's torchdistill name ("batchmean", "mean" or "sum").
inline const char* reduction_name(DistillReduction r) noexcept {
  switch (r) {
    case DistillReduction::batchmean: return "batchmean";
    case DistillReduction::mean: return "mean";
    case DistillReduction::sum: return "sum";
  }
  return "?";
}

namespace detail {

/// Checks a student / teacher pair: same number of rows (>= 1), columns >= 1, all finite.
template <class Scalar>
void check_student_teacher(const ConstRowMatrixRef<Scalar>& s, const ConstRowMatrixRef<Scalar>& t,
                           const char* where) {
  KSHOT_CHECK(s.rows() > 0, where, "student has 0 rows");
  KSHOT_CHECK(s.cols() > 0, where, "student has 0 columns");
  KSHOT_CHECK(t.cols() > 0, where, "teacher has 0 columns");
  KSHOT_CHECK(t.rows() == s.rows(), where,
              cat("teacher has ", t.rows(), " rows but student has ", s.rows(), " rows"));
  check_finite(s, where, "student");
  check_finite(t, where, "teacher");
}

/// Checks a student / teacher pair of logits: same shape.
template <class Scalar>
void check_logits(const ConstRowMatrixRef<Scalar>& s, const ConstRowMatrixRef<Scalar>& t, const char* where) {
  check_student_teacher(s, t, where);
  KSHOT_CHECK(t.cols() == s.cols(), where,
              cat("teacher has ", t.cols(), " columns (classes) but student has ", s.cols()));
}

/// Checks a temperature: finite, > 0, with 1 / T finite.
template <class Scalar>
void check_temperature(Scalar t, const char* where, const char* name = "temperature") {
  KSHOT_CHECK(std::isfinite(t) && t > Scalar(0) && std::isfinite(Scalar(1) / t), where,
              cat(name, " is ", t, " but must be finite and > 0, with 1 / ", name, " finite"));
}

/// Checks a finite weight.
template <class Scalar>
void check_factor(Scalar v, const char* where, const char* name) {
  KSHOT_CHECK(std::isfinite(v), where, cat(name, " is ", v, " but must be finite"));
}

/// Checks class targets: n entries in [0, classes) (or equal to `ignore`).
inline void check_targets(const ConstLabelRef& targets, Index n, Index classes, const char* where,
                          Label ignore = std::numeric_limits<Label>::min()) {
  KSHOT_CHECK(targets.size() == n, where,
              cat("targets has ", targets.size(), " entries but the logits have ", n, " rows"));
  for (Index i = 0; i < n; ++i)
    KSHOT_CHECK_RANGE(targets[i] == ignore || (targets[i] >= 0 && targets[i] < classes), where,
                      cat("targets[", i, "] = ", targets[i], " is outside [0, ", classes, ")"));
}

/**
 * @brief Log-softmax of one row z * scale: writes log p into `out` and returns the log-sum-exp.
 * Computed with the maximum subtracted, so any scale (any temperature) gives finite output from finite input.
 */
template <class In, class Out, class Scalar>
Scalar log_softmax_row(const In& z, Scalar scale, Out&& out) {
  out = z * scale;
  const Scalar m = out.maxCoeff();
  const Scalar lse = m + std::log((out.array() - m).exp().sum());
  out.array() -= lse;
  return lse;
}

/// SmoothL1 with threshold beta (torch.nn.SmoothL1Loss): 0.5 x^2 / beta below beta, |x| - 0.5 beta above.
template <class Scalar>
Scalar smooth_l1(Scalar x, Scalar beta) noexcept {
  const Scalar a = std::abs(x);
  if (beta == Scalar(0)) return a;
  return a < beta ? Scalar(0.5) * x * x / beta : a - Scalar(0.5) * beta;
}

/// d smooth_l1(x) / dx.
template <class Scalar>
Scalar smooth_l1_grad(Scalar x, Scalar beta) noexcept {
  const Scalar a = std::abs(x);
  if (beta == Scalar(0) || a >= beta) return x > Scalar(0) ? Scalar(1) : (x < Scalar(0) ? Scalar(-1) : Scalar(0));
  return x / beta;
}

/// torch.nn.functional.normalize's default eps.
template <class Scalar>
constexpr Scalar normalize_eps() noexcept {
  return Scalar(1e-12);
}

/**
 * @brief Backward of y = x / max(‖x‖_2, eps) for one row: given dL/dy (g) returns dL/dx into `out`.
 * Above the clamp: (g − y (y·g)) / ‖x‖; at or below it the denominator is the constant eps: g / eps.
 */
template <class Y, class G, class Out, class Scalar>
void normalize_backward_row(const Y& y, const G& g, Scalar norm, Out&& out) {
  const Scalar eps = normalize_eps<Scalar>();
  if (norm > eps) {
    const Scalar yg = y.dot(g);
    out = (g - yg * y) / norm;
  } else {
    out = g / eps;
  }
}

}  // namespace detail
}  // namespace kshot

#endif  // KSHOT_DISTILL_COMMON_HPP
