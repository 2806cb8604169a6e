/**
 * @file kshot/distill/kd.hpp
 * @brief Hinton's knowledge distillation loss (temperature-softened KL to the teacher, T^2 factor, mixed with
 * hard-label cross-entropy) with its exact gradient: torchdistill's KDLoss.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_DISTILL_KD_HPP
#define KSHOT_DISTILL_KD_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"
#include "kshot/core/workspace.hpp"
#include "kshot/distill/common.hpp"

#include <cmath>
#include <optional>
#include <type_traits>

namespace kshot {

/**
 * @brief Knowledge distillation loss (Hinton et al.) as torchdistill's `KDLoss` computes it.
 *
 * With student logits s, teacher logits t (N x C), temperature T, p = softmax(t / T), q = softmax(s / T):
 * @f[ \mathrm{KL} = \sum_{i,k} p_{ik} (\log p_{ik} - \log q_{ik}) / D, \qquad
 *     L = \alpha\, \mathrm{CE}(s, y) + \beta\, T^2\, \mathrm{KL} @f]
 * with D = N for DistillReduction::batchmean (the default), N·C for mean, 1 for sum, and the cross-entropy
 * at temperature 1 reduced by its mean over the non-ignored rows (batchmean, mean) or summed (sum). β defaults
 * to 1 − α. As in torchdistill, without targets or with α = 0 the loss is the KL term alone, without T² and
 * without β. Cross-entropy options are those of torch.nn.CrossEntropyLoss that torchdistill forwards:
 * label_smoothing ε (the target distribution is (1 − ε) onehot + ε / C) and ignore_index (rows whose target
 * equals it are left out of the cross-entropy and of its mean; none left gives a cross-entropy of 0, where
 * PyTorch gives NaN).
 *
 * Every softmax is a log-sum-exp with the maximum subtracted, so any temperature gives finite output from
 * finite input; teacher probabilities that underflow contribute 0 (xlogy, as KLDivLoss).
 *
 * Gradient (student logits only; the teacher is constant):
 * dL/ds_i = β T² / D · (Σ_k p_ik · q_i − p_i) / T + α / N_ce · (softmax(s_i) − target_i).
 *
 * torchdistill: `KDLoss(..., temperature, alpha, beta=None, reduction='batchmean')`. Deliberate differences:
 * none in the function; alpha has no "None" (use 0), and the all-ignored cross-entropy is 0 instead of NaN.
 *
 * @code
 * @article{hinton2015distilling,
 *   title = {Distilling the Knowledge in a Neural Network},
 *   author = {Hinton, Geoffrey and Vinyals, Oriol and Dean, Jeff},
 *   journal = {arXiv:1503.02531}, year = {2015}}
 * @endcode
 *
 * @throws std::invalid_argument from evaluate() if student or teacher has 0 rows or 0 columns, their shapes differ,
 * either has a non-finite entry, temperature is not finite and > 0 (with 1 / T finite), alpha or the effective beta
 * is not finite, label_smoothing is outside [0, 1], targets does not have N entries, or grad is not N x C.
 * @throws std::out_of_range if a target (other than ignore_index) is outside [0, C).
 * @tparam Scalar float or double.
 * @note Rows run in parallel when the batch is large enough; per-row values are summed serially in row
 * order, so the result is bitwise the same at any thread count. Buffers grow to at most 4·N·C scalars and are reused:
 * a second call with the same shapes allocates nothing. One object per thread.
 */
template <class Scalar = float>
class KDLoss {
  static_assert(std::is_floating_point_v<Scalar>, "kshot::KDLoss<Scalar>: Scalar must be float or double");

 public:
  Scalar temperature = Scalar(4);                            ///< T > 0 (torchdistill's sample configuration: 4)
  Scalar alpha = Scalar(0.9);                                ///< weight of the cross-entropy (sample configuration: 0.9)
  std::optional<Scalar> beta;                                ///< weight of T^2 KL; empty: 1 - alpha
  DistillReduction reduction = DistillReduction::batchmean;  ///< batchmean (default), mean or sum
  Scalar label_smoothing = Scalar(0);                        ///< cross-entropy label smoothing, in [0, 1]
  Label ignore_index = -100;                                 ///< targets equal to this are left out of the cross-entropy

  /// The KL term alone (no targets): KL(p || q) reduced, without T^2.
  Scalar evaluate(ConstRowMatrixRef<Scalar> student, ConstRowMatrixRef<Scalar> teacher) {
    return run(student, teacher, nullptr, nullptr);
  }
  /// The KL term alone, and its gradient with respect to the student logits (N x C, overwritten).
  Scalar evaluate(ConstRowMatrixRef<Scalar> student, ConstRowMatrixRef<Scalar> teacher, RowMatrixRef<Scalar> grad) {
    return run(student, teacher, nullptr, &grad);
  }
  /// The full loss alpha CE + beta T^2 KL (the KL alone when alpha = 0).
  Scalar evaluate(ConstRowMatrixRef<Scalar> student, ConstRowMatrixRef<Scalar> teacher, ConstLabelRef targets) {
    return run(student, teacher, &targets, nullptr);
  }
  /// The full loss and its gradient with respect to the student logits (N x C, overwritten).
  Scalar evaluate(ConstRowMatrixRef<Scalar> student, ConstRowMatrixRef<Scalar> teacher, ConstLabelRef targets,
                  RowMatrixRef<Scalar> grad) {
    return run(student, teacher, &targets, &grad);
  }

  /// The beta in use: the member when set, else 1 - alpha.
  Scalar effective_beta() const noexcept { return beta ? *beta : Scalar(1) - alpha; }

  /// Pre-sizes the buffers for N x C logits.
  void reserve(Index n, Index c) {
    for (std::size_t slot : {std::size_t{0}, std::size_t{1}, std::size_t{2}, std::size_t{4}}) ws_.reserve(slot, n * c);
    ws_.reserve(3, 2 * n);
  }

 private:
  Scalar run(const ConstRowMatrixRef<Scalar>& s, const ConstRowMatrixRef<Scalar>& t, const ConstLabelRef* targets,
             RowMatrixRef<Scalar>* grad) {
    constexpr const char* where = "kshot::KDLoss::evaluate()";
    detail::check_logits(s, t, where);
    detail::check_temperature(temperature, where);
    detail::check_factor(alpha, where, "alpha");
    detail::check_factor(effective_beta(), where, "beta");
    KSHOT_CHECK(label_smoothing >= Scalar(0) && label_smoothing <= Scalar(1), where,
                detail::cat("label_smoothing is ", label_smoothing, " but must be in [0, 1]"));
    const Index n = s.rows(), c = s.cols();
    if (targets != nullptr) detail::check_targets(*targets, n, c, where, ignore_index);
    if (grad != nullptr) detail::check_shape(*grad, n, c, where, "grad");

    const bool hard = targets != nullptr && alpha != Scalar(0);
    const bool want = grad != nullptr;
    const Scalar inv_t = Scalar(1) / temperature;
    const Scalar eps = label_smoothing;
    const Scalar eps_c = eps / Scalar(c);
    const bool same_t = temperature == Scalar(1);

    // The coefficients are known before the pass (the number of non-ignored rows is), so the gradient is
    // written in the same pass as the value: three exponentials per logit (student at T, teacher at T,
    // student at 1 when T != 1).
    Index ce_count = 0;
    if (hard)
      for (Index i = 0; i < n; ++i) ce_count += (*targets)[i] != ignore_index ? 1 : 0;
    const Scalar kl_div = reduction == DistillReduction::batchmean ? Scalar(n)
                          : reduction == DistillReduction::mean    ? Scalar(n) * Scalar(c)
                                                                   : Scalar(1);
    const Scalar beta_eff = effective_beta();
    const Scalar t2 = temperature * temperature;
    Scalar kl_coeff = Scalar(1) / kl_div * inv_t;
    Scalar ce_coeff = 0;
    if (hard) {
      kl_coeff *= beta_eff * t2;
      if (reduction == DistillReduction::sum) ce_coeff = alpha;
      else if (ce_count > 0) ce_coeff = alpha / Scalar(ce_count);
    }

    auto Q = ws_.matrix(0, want ? 0 : n, c);  // z_s = s/T - max, then exp(z_s) (the gradient row when wanted)
    auto P = ws_.matrix(1, n, c);             // z_t = t/T - max
    auto E = ws_.matrix(2, n, c);             // exp(z_t)
    auto H = ws_.matrix(4, hard && !same_t ? n : 0, c);  // s - max(s), then exp of it
    auto vals = ws_.matrix(3, n, 2);          // per row: KL, CE

    auto body = [&](Index i, auto&& q) {
      auto p = P.row(i);
      auto e = E.row(i);
      q = s.row(i) * inv_t;
      q.array() -= q.maxCoeff();
      p = t.row(i) * inv_t;
      p.array() -= p.maxCoeff();
      e = p.array().exp().matrix();
      const Scalar st = e.sum();
      // xlogy: an underflowed teacher probability contributes 0 (e = 0 times a finite difference).
      const Scalar dot = (e.array() * (p.array() - q.array())).sum();
      const Label y = hard ? (*targets)[i] : Label(0);
      const bool counted = hard && y != ignore_index;
      Scalar zs_y = 0, zs_sum = 0;
      if (counted && same_t) {
        zs_y = q[y];
        if (eps != Scalar(0)) zs_sum = q.sum();
      }
      q = q.array().exp().matrix();
      const Scalar ss = q.sum();
      const Scalar lss = std::log(ss), lst = std::log(st);
      const Scalar inv_st = Scalar(1) / st, inv_ss = Scalar(1) / ss;
      const Scalar psum = st * inv_st;
      vals(i, 0) = dot * inv_st + psum * (lss - lst);
      vals(i, 1) = Scalar(0);
      Scalar hs = 0;  // sum of the softmax at T = 1 (when T != 1)
      if (counted) {
        if (same_t) {
          Scalar ce = -(Scalar(1) - eps) * (zs_y - lss);
          if (eps != Scalar(0)) ce -= eps_c * (zs_sum - Scalar(c) * lss);
          vals(i, 1) = ce;
        } else {
          auto h = H.row(i);
          h = s.row(i);
          h.array() -= h.maxCoeff();
          const Scalar hy = h[y];
          const Scalar hsum = eps != Scalar(0) ? h.sum() : Scalar(0);
          h = h.array().exp().matrix();
          hs = h.sum();
          const Scalar lhs = std::log(hs);
          Scalar ce = -(Scalar(1) - eps) * (hy - lhs);
          if (eps != Scalar(0)) ce -= eps_c * (hsum - Scalar(c) * lhs);
          vals(i, 1) = ce;
        }
      }
      if (!want) return;
      // KL part: kl_coeff (psum q - p); CE part: ce_coeff (softmax - target distribution).
      const Scalar a = kl_coeff * psum * inv_ss, b = kl_coeff * inv_st;
      if (!counted) {
        q = a * q - b * e;
        return;
      }
      if (same_t) {
        q = (a + ce_coeff * inv_ss) * q - b * e;
      } else {
        q = a * q - b * e + (ce_coeff / hs) * H.row(i);
      }
      q.array() -= ce_coeff * eps_c;
      q[y] -= ce_coeff * (Scalar(1) - eps);
    };
    auto row = [&](Index i) {
      if (want) body(i, grad->row(i));
      else body(i, Q.row(i));
    };
    detail::parallel_for(n, detail::worth_parallel(n, double(n) * double(c) * (hard ? 40 : 30)), row);

    Scalar kl_sum = 0, ce_sum = 0;
    for (Index i = 0; i < n; ++i) kl_sum += vals(i, 0);
    if (hard)
      for (Index i = 0; i < n; ++i) ce_sum += vals(i, 1);
    const Scalar kl = kl_sum / kl_div;
    Scalar value = kl;
    if (hard) {
      Scalar ce = 0;
      if (reduction == DistillReduction::sum) ce = ce_sum;
      else if (ce_count > 0) ce = ce_sum / Scalar(ce_count);
      value = alpha * ce + beta_eff * t2 * kl;
    }
    return value;
  }

  detail::Workspace<Scalar> ws_;
};

}  // namespace kshot

#endif  // KSHOT_DISTILL_KD_HPP
