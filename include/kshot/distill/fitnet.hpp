/**
 * @file kshot/distill/fitnet.hpp
 * @brief FitNet hint loss: mean squared error between the student's (optionally regressed) features and the
 * teacher's, with the gradients for the student and for the regressor's weight and bias.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_DISTILL_FITNET_HPP
#define KSHOT_DISTILL_FITNET_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/gemm.hpp"
#include "kshot/core/random.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"
#include "kshot/core/workspace.hpp"
#include "kshot/distill/common.hpp"

#include <cmath>
#include <cstdint>
#include <type_traits>

namespace kshot {

/**
 * @brief FitNet (Romero et al.) hint loss: MSE(r(student), teacher), torchdistill's
 * `SimpleLossWrapper(nn.MSELoss(reduction))` over a student regressor output.
 *
 * Features are N rows; a row holds C channels of `spatial` positions each (C·H·W for a feature map in NCHW
 * order, spatial = H·W; plain vectors have spatial = 1). Without a regressor r is the identity and the shapes
 * must agree. With `use_regressor`, r is a learned linear map over channels applied at every position (a 1x1
 * convolution; nn.Linear when spatial = 1): r(x)_i = W X_i + b 1ᵀ with X_i the C_s x spatial block of row i,
 * W of shape C_t x C_s and b of length C_t (`use_bias`).
 * @f[ L = \frac{1}{D} \sum (r(s) - t)^2 @f]
 * with D = N·C_t·spatial for DistillReduction::mean (the default, MSELoss's), N for batchmean, 1 for sum.
 * Gradients: dL/dr = 2 (r − t) / D, dL/ds_i = Wᵀ dL/dr_i, dL/dW = Σ_i dL/dr_i X_iᵀ, dL/db = Σ_i dL/dr_i 1.
 *
 * @code
 * @inproceedings{romero2015fitnets,
 *   title = {FitNets: Hints for Thin Deep Nets},
 *   author = {Romero, Adriana and Ballas, Nicolas and Kahou, Samira Ebrahimi and Chassang, Antoine and
 *             Gatta, Carlo and Bengio, Yoshua},
 *   booktitle = {ICLR}, year = {2015}}
 * @endcode
 *
 * @throws std::invalid_argument from evaluate() if student or teacher has 0 rows or 0 columns, their row counts
 * differ, either has a non-finite entry, spatial < 1, without a regressor their widths differ, with one a width is
 * not a multiple of spatial or weight is not C_t x C_s or bias (with use_bias) has not C_t entries or either is
 * non-finite, a gradient output has the wrong shape, or the regressor's gradients are requested with
 * use_regressor off.
 * @tparam Scalar float or double.
 * @note The regressor's products run in fixed 64-row blocks; sums over the batch are in a fixed order: the
 * same bits at any thread count. Buffers grow and are reused: a second call with the same shapes allocates
 * nothing. One object per thread.
 */
template <class Scalar = float>
class FitNetLoss {
  static_assert(std::is_floating_point_v<Scalar>, "kshot::FitNetLoss<Scalar>: Scalar must be float or double");

 public:
  DistillReduction reduction = DistillReduction::mean;  ///< mean (default), batchmean or sum
  Index spatial = 1;                                    ///< positions per channel (H·W); >= 1
  bool use_regressor = false;                           ///< apply W X + b to the student first
  bool use_bias = true;                                 ///< the regressor has a bias
  RowMatrixX<Scalar> weight;                            ///< regressor weight, C_t x C_s
  VectorX<Scalar> bias;                                 ///< regressor bias, C_t

  /**
   * @brief Turns the regressor on and initialises it as torch.nn.Linear does (uniform in ±1/sqrt(C_s) for
   * weight and bias), from RandomStream(seed).
   * @throws std::invalid_argument if a channel count is < 1.
   */
  void init_regressor(Index student_channels, Index teacher_channels, std::uint64_t seed = 0) {
    constexpr const char* where = "kshot::FitNetLoss::init_regressor()";
    KSHOT_CHECK(student_channels >= 1 && teacher_channels >= 1, where,
                detail::cat("channel counts are ", student_channels, " and ", teacher_channels, " but must be >= 1"));
    RandomStream rng(seed);
    const Scalar bound = Scalar(1) / std::sqrt(Scalar(student_channels));
    weight.resize(teacher_channels, student_channels);
    bias.resize(teacher_channels);
    rng.fill_uniform(weight, -bound, bound);
    for (Index k = 0; k < teacher_channels; ++k) bias[k] = rng.uniform<Scalar>(-bound, bound);
    use_regressor = true;
  }

  /// The loss.
  Scalar evaluate(ConstRowMatrixRef<Scalar> student, ConstRowMatrixRef<Scalar> teacher) {
    return run(student, teacher, nullptr, nullptr, nullptr);
  }
  /// The loss and dL/d(student) (overwritten, shape of student).
  Scalar evaluate(ConstRowMatrixRef<Scalar> student, ConstRowMatrixRef<Scalar> teacher, RowMatrixRef<Scalar> grad) {
    return run(student, teacher, &grad, nullptr, nullptr);
  }
  /**
   * @brief The loss, dL/d(student), and the regressor's gradients grad_weight (C_t x C_s) and grad_bias (C_t),
   * all overwritten. Pass a 0 x 0 grad to skip the student's gradient.
   * @throws std::invalid_argument if the regressor is off, or on any bad shape.
   */
  Scalar evaluate(ConstRowMatrixRef<Scalar> student, ConstRowMatrixRef<Scalar> teacher, RowMatrixRef<Scalar> grad,
                  RowMatrixRef<Scalar> grad_weight, VectorRef<Scalar> grad_bias) {
    KSHOT_CHECK(use_regressor, "kshot::FitNetLoss::evaluate()",
                "grad_weight and grad_bias were requested but use_regressor is false");
    return run(student, teacher, grad.size() > 0 ? &grad : nullptr, &grad_weight, &grad_bias);
  }

 private:
  Scalar run(const ConstRowMatrixRef<Scalar>& s, const ConstRowMatrixRef<Scalar>& t, RowMatrixRef<Scalar>* grad,
             RowMatrixRef<Scalar>* gw, VectorRef<Scalar>* gb) {
    constexpr const char* where = "kshot::FitNetLoss::evaluate()";
    detail::check_student_teacher(s, t, where);
    KSHOT_CHECK(spatial >= 1, where, detail::cat("spatial is ", spatial, " but must be >= 1"));
    const Index n = s.rows();
    Index cs = 0, ct = 0;
    if (use_regressor) {
      KSHOT_CHECK(s.cols() % spatial == 0, where,
                  detail::cat("student has ", s.cols(), " columns, not a multiple of spatial = ", spatial));
      KSHOT_CHECK(t.cols() % spatial == 0, where,
                  detail::cat("teacher has ", t.cols(), " columns, not a multiple of spatial = ", spatial));
      cs = s.cols() / spatial;
      ct = t.cols() / spatial;
      KSHOT_CHECK(weight.rows() == ct && weight.cols() == cs, where,
                  detail::cat("weight is ", weight.rows(), " x ", weight.cols(), " but must be ", ct, " x ", cs,
                              " (teacher channels x student channels)"));
      if (use_bias)
        KSHOT_CHECK(bias.size() == ct, where, detail::cat("bias has ", bias.size(), " entries but must have ", ct));
      detail::check_finite(weight, where, "weight");
      if (use_bias) detail::check_finite(bias, where, "bias");
    } else {
      KSHOT_CHECK(t.cols() == s.cols(), where,
                  detail::cat("teacher has ", t.cols(), " columns but student has ", s.cols(),
                              " (use a regressor for different widths)"));
    }
    if (grad != nullptr) detail::check_shape(*grad, n, s.cols(), where, "grad");
    if (gw != nullptr) detail::check_shape(*gw, ct, cs, where, "grad_weight");
    if (gb != nullptr) detail::check_shape(*gb, ct, 1, where, "grad_bias");

    const Index m = t.cols();
    const Scalar denom = reduction == DistillReduction::mean        ? Scalar(n) * Scalar(m)
                         : reduction == DistillReduction::batchmean ? Scalar(n)
                                                                    : Scalar(1);
    auto R = ws_.matrix(0, n, m);  // r(s) - t, then dL/dr
    const Index hw = spatial;
    if (use_regressor) {
      detail::parallel_for(n, detail::worth_parallel(n, double(n) * double(m) * double(cs) * 2), [&](Index i) {
        Eigen::Map<const RowMatrixX<Scalar>, 0, Eigen::OuterStride<>> xi(s.data() + i * s.outerStride(), cs, hw,
                                                                          Eigen::OuterStride<>(hw));
        Eigen::Map<RowMatrixX<Scalar>> ri(R.data() + i * m, ct, hw);
        detail::gemm_assign(ri, weight, xi);
        if (use_bias) ri.colwise() += bias;
        ri -= Eigen::Map<const RowMatrixX<Scalar>, 0, Eigen::OuterStride<>>(t.data() + i * t.outerStride(), ct, hw,
                                                                           Eigen::OuterStride<>(hw));
      });
    } else {
      R = s - t;
    }
    // Sum of squares, row by row in a fixed order.
    auto rows = ws_.vector(1, n);
    detail::parallel_for(n, detail::worth_parallel(n, double(n) * double(m)),
                         [&](Index i) { rows[i] = R.row(i).squaredNorm(); });
    Scalar total = 0;
    for (Index i = 0; i < n; ++i) total += rows[i];
    const Scalar value = total / denom;
    if (grad == nullptr && gw == nullptr) return value;

    const Scalar c = Scalar(2) / denom;
    if (!use_regressor) {
      auto& g = *grad;
      detail::parallel_for(n, detail::worth_parallel(n, double(n) * double(m)), [&](Index i) { g.row(i) = c * R.row(i); });
      return value;
    }
    R *= c;
    if (grad != nullptr) {
      auto& g = *grad;
      detail::parallel_for(n, detail::worth_parallel(n, double(n) * double(m) * double(cs) * 2), [&](Index i) {
        Eigen::Map<RowMatrixX<Scalar>, 0, Eigen::OuterStride<>> gi(g.data() + i * g.outerStride(), cs, hw,
                                                                   Eigen::OuterStride<>(hw));
        Eigen::Map<const RowMatrixX<Scalar>> ri(R.data() + i * m, ct, hw);
        detail::gemm_assign(gi, weight.transpose(), ri);
      });
    }
    if (gw != nullptr) {
      // dW = [dR_1 ... dR_N] [X_1^T; ...; X_N^T]: one product over the batch, in fixed row blocks of dW.
      auto D = ws_.matrix(2, ct, n * hw);
      auto XT = ws_.matrix(3, n * hw, cs);
      for (Index i = 0; i < n; ++i) {
        Eigen::Map<const RowMatrixX<Scalar>> ri(R.data() + i * m, ct, hw);
        Eigen::Map<const RowMatrixX<Scalar>, 0, Eigen::OuterStride<>> xi(s.data() + i * s.outerStride(), cs, hw,
                                                                          Eigen::OuterStride<>(hw));
        D.middleCols(i * hw, hw) = ri;
        XT.middleRows(i * hw, hw) = xi.transpose();
      }
      auto& dw = *gw;
      detail::blocked_gemm_assign(dw, D, XT, Scalar(1));
      auto& db = *gb;
      if (use_bias) db = D.rowwise().sum();
      else db.setZero();
    }
    return value;
  }

  detail::Workspace<Scalar> ws_;
};

}  // namespace kshot

#endif  // KSHOT_DISTILL_FITNET_HPP
