/**
 * @file kshot/distill/dkd.hpp
 * @brief Decoupled knowledge distillation (DKD: target-class and non-target-class KD) with its exact gradient,
 * as the authors' mdistiller computes `dkd_loss`.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_DISTILL_DKD_HPP
#define KSHOT_DISTILL_DKD_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"
#include "kshot/core/workspace.hpp"
#include "kshot/distill/common.hpp"

#include <cmath>
#include <type_traits>

namespace kshot {

/**
 * @brief Decoupled KD (Zhao et al., CVPR 2022), mdistiller's `dkd_loss(logits_student, logits_teacher, target,
 * alpha, beta, temperature)`.
 *
 * With z = s / T and y the target of a row: TCKD is the KL between the binary distributions
 * [p_y, Σ_{k≠y} p_k] of the teacher and of the student (p = softmax(z)); NCKD is the KL between
 * softmax(z_t − 1000·onehot(y)) and softmax(z_s − 1000·onehot(y)) (mdistiller masks the target class by
 * subtracting 1000 after the division by T; it does not remove it). Both are summed over classes and rows and
 * scaled by T² / N:
 * @f[ L = \alpha\, \mathrm{TCKD} + \beta\, \mathrm{NCKD} @f]
 * The binary probabilities are formed in log space (log p_y = z_y − lse(z), log Σ_{k≠y} p_k =
 * lse_{k≠y}(z) − lse(z)), where mdistiller takes the log of summed probabilities: the same value to rounding,
 * and finite where a sum underflows (mdistiller gives inf there). With one class the non-target set is empty:
 * its probability is 0 and TCKD is 0.
 *
 * Defaults are mdistiller's CIFAR configuration: alpha 1, beta 8, T 4. The DKD distiller of mdistiller adds
 * CE_WEIGHT · CE(student, target) and multiplies dkd_loss by min(epoch / warmup, 1); compose those outside
 * (kshot::KDLoss with alpha = 1 gives the cross-entropy, or scale this loss).
 *
 * @code
 * @inproceedings{zhao2022dkd,
 *   title = {Decoupled Knowledge Distillation},
 *   author = {Zhao, Borui and Cui, Quan and Song, Renjie and Qiu, Yiyu and Liang, Jiajun},
 *   booktitle = {CVPR}, year = {2022}}
 * @endcode
 *
 * @throws std::invalid_argument from evaluate() if student or teacher has 0 rows or 0 columns, their shapes differ,
 * either has a non-finite entry, temperature is not finite and > 0 (with 1 / T finite), alpha, beta or mask_offset is
 * not finite, targets does not have N entries, or grad is not N x C.
 * @throws std::out_of_range if a target is outside [0, C).
 * @tparam Scalar float or double.
 * @note Rows in parallel for large batches, per-row values summed serially in row order (bitwise the same at
 * any thread count). Buffers grow to 5·N·C scalars and are reused. One object per thread.
 */
template <class Scalar = float>
class DKDLoss {
  static_assert(std::is_floating_point_v<Scalar>, "kshot::DKDLoss<Scalar>: Scalar must be float or double");

 public:
  Scalar alpha = Scalar(1);        ///< weight of TCKD (finite)
  Scalar beta = Scalar(8);         ///< weight of NCKD (finite)
  Scalar temperature = Scalar(4);  ///< T > 0
  Scalar mask_offset = Scalar(1000);  ///< subtracted from the target logit / T in NCKD (mdistiller: 1000)

  /// The loss.
  Scalar evaluate(ConstRowMatrixRef<Scalar> student, ConstRowMatrixRef<Scalar> teacher, ConstLabelRef targets) {
    return run(student, teacher, targets, nullptr);
  }
  /// The loss and its gradient with respect to the student logits (N x C, overwritten).
  Scalar evaluate(ConstRowMatrixRef<Scalar> student, ConstRowMatrixRef<Scalar> teacher, ConstLabelRef targets,
                  RowMatrixRef<Scalar> grad) {
    return run(student, teacher, targets, &grad);
  }

  /// TCKD (already scaled by T^2 / N, before alpha) of the last call.
  Scalar last_tckd() const noexcept { return tckd_; }
  /// NCKD (already scaled by T^2 / N, before beta) of the last call.
  Scalar last_nckd() const noexcept { return nckd_; }

 private:
  Scalar run(const ConstRowMatrixRef<Scalar>& s, const ConstRowMatrixRef<Scalar>& t, const ConstLabelRef& targets,
             RowMatrixRef<Scalar>* grad) {
    constexpr const char* where = "kshot::DKDLoss::evaluate()";
    detail::check_logits(s, t, where);
    detail::check_temperature(temperature, where);
    detail::check_factor(alpha, where, "alpha");
    detail::check_factor(beta, where, "beta");
    detail::check_factor(mask_offset, where, "mask_offset");
    const Index n = s.rows(), c = s.cols();
    detail::check_targets(targets, n, c, where);
    if (grad != nullptr) detail::check_shape(*grad, n, c, where, "grad");
    const bool want = grad != nullptr;
    const Scalar inv_t = Scalar(1) / temperature;
    const Scalar scale = temperature * temperature / Scalar(n);

    auto LS = ws_.matrix(0, n, c);  // log softmax(z_s), later the gradient row
    auto LT = ws_.matrix(1, n, c);  // log softmax(z_t)
    auto MS = ws_.matrix(2, n, c);  // log softmax(z_s - off onehot)
    auto MT = ws_.matrix(3, n, c);  // log softmax(z_t - off onehot)
    auto vals = ws_.matrix(4, n, 2);
    auto SC = ws_.matrix(5, n, c);  // per-row scratch

    auto row = [&](Index i) {
      const Index y = targets[i];
      auto ls = LS.row(i);
      auto lt = LT.row(i);
      auto ms = MS.row(i);
      auto mt = MT.row(i);
      detail::log_softmax_row(s.row(i), inv_t, ls);
      detail::log_softmax_row(t.row(i), inv_t, lt);
      // Log of the non-target mass: lse over k != y of log p_k (the target's entry set to -inf in a copy).
      auto scratch = SC.row(i);
      auto other_log = [&](const auto& l) {
        scratch = l;
        scratch[y] = -std::numeric_limits<Scalar>::infinity();
        const Scalar m = scratch.maxCoeff();
        if (!(m > -std::numeric_limits<Scalar>::infinity())) return m;  // one class: empty set
        return m + std::log((scratch.array() - m).exp().sum());
      };
      const Scalar ls_y = ls[y], lt_y = lt[y];
      const Scalar ls_o = other_log(ls), lt_o = other_log(lt);
      const Scalar pt_y = std::exp(lt_y), pt_o = std::exp(lt_o);
      Scalar tckd = pt_y * (lt_y - ls_y);
      if (pt_o > Scalar(0)) tckd += pt_o * (lt_o - ls_o);
      // NCKD on the masked logits.
      ms = s.row(i) * inv_t;
      ms[y] -= mask_offset;
      mt = t.row(i) * inv_t;
      mt[y] -= mask_offset;
      detail::log_softmax_row(ms, Scalar(1), ms);
      detail::log_softmax_row(mt, Scalar(1), mt);
      auto pe = mt.array().exp();
      const Scalar nckd = (pe * (mt.array() - ms.array())).sum();
      vals(i, 0) = tckd;
      vals(i, 1) = nckd;
      if (!want) return;
      // NCKD: d/dz = psum q - p.  TCKD: d/dz_k = (a + b) q_k - a [k = y] - b [k != y] q_k / q_o.
      const Scalar psum = pe.sum();
      const Scalar ab = pt_y + pt_o;
      const Scalar cn = beta * scale * inv_t, ct = alpha * scale * inv_t;
      // gt = (a + b) q − a onehot − b [k != y] q / q_o, with q / q_o = exp(ls − ls_o).
      // (The entry of y is written last: exp(ls_y − ls_o) may overflow, and is not part of the sum.)
      if (pt_o > Scalar(0)) scratch = (ab * ls.array().exp() - pt_o * (ls.array() - ls_o).exp()).matrix();
      else scratch = (ab * ls.array().exp()).matrix();
      scratch[y] = ab * std::exp(ls_y) - pt_y;
      ls = ct * scratch + cn * (psum * ms.array().exp() - mt.array().exp()).matrix();
    };
    detail::parallel_for(n, detail::worth_parallel(n, double(n) * double(c) * 60), row);

    Scalar tsum = 0, nsum = 0;
    for (Index i = 0; i < n; ++i) {
      tsum += vals(i, 0);
      nsum += vals(i, 1);
    }
    tckd_ = tsum * scale;
    nckd_ = nsum * scale;
    if (want) {
      auto& g = *grad;
      detail::parallel_for(n, detail::worth_parallel(n, double(n) * double(c)), [&](Index i) { g.row(i) = LS.row(i); });
    }
    return alpha * tckd_ + beta * nckd_;
  }

  detail::Workspace<Scalar> ws_;
  Scalar tckd_ = 0, nckd_ = 0;
};

}  // namespace kshot

#endif  // KSHOT_DISTILL_DKD_HPP
