/**
 * @file kshot/distill/sp.hpp
 * @brief Similarity-preserving knowledge distillation (Tung and Mori): the student's normalised batch Gram
 * matrix matches the teacher's; torchdistill's L1 row normalisation and the paper's L2, with the gradient.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_DISTILL_SP_HPP
#define KSHOT_DISTILL_SP_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/gemm.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"
#include "kshot/core/workspace.hpp"
#include "kshot/distill/common.hpp"

#include <cmath>
#include <type_traits>

namespace kshot {

/// The row normalisation of SPLoss's Gram matrices.
enum class SPNorm {
  l1,  ///< torchdistill's SPKDLoss: normalize(G, 1) passes p = 1 (rows divided by their L1 norm)
  l2   ///< the paper and mdistiller: rows divided by their L2 norm
};

/**
 * @brief Similarity-preserving KD loss over a batch of features (N rows of any width; student and teacher
 * widths may differ).
 *
 * G = Z Zᵀ (N x N) for each side, rows normalised: Ĝ_i = G_i / max(‖G_i‖_p, 1e-12), p = 1 or 2;
 * @f[ L = \frac{1}{D} \| \hat G_t - \hat G_s \|_F^2 @f]
 * with D = N² for DistillReduction::batchmean (the default) and 1 for sum (torchdistill returns the plain
 * sum for any other reduction string). Gradient: with A = 2 (Ĝ_s − Ĝ_t) / D and κ_i = A_i · Ĝ_i,
 * dL/dG_ij = (A_ij − κ_i σ_ij) / r_i (σ = sign(G_ij) for L1, Ĝ_ij for L2; A_ij / 1e-12 at the floor) and
 * dL/dZ = (B + Bᵀ) Z with B = dL/dG.
 *
 * torchdistill: `SPKDLoss(..., reduction='batchmean')` is SPNorm::l1 (the default; a quirk of the peer, see
 * docs/distillation.md); mdistiller's `SP` (and the paper) is SPNorm::l2 with batchmean. A zero row gives a zero
 * Gram row (floor), and a finite gradient.
 *
 * @code
 * @inproceedings{tung2019sp,
 *   title = {Similarity-Preserving Knowledge Distillation},
 *   author = {Tung, Frederick and Mori, Greg},
 *   booktitle = {ICCV}, year = {2019}}
 * @endcode
 *
 * @throws std::invalid_argument from evaluate() if student or teacher has 0 rows or 0 columns, their row counts
 * differ, either has a non-finite entry, reduction is DistillReduction::mean, or grad is not shaped like student.
 * @tparam Scalar float or double.
 * @note Products in fixed 64-row blocks, row passes in parallel, sums serial: the same bits at any thread count.
 * Buffers grow to 4·N² scalars and are reused. One object per thread.
 */
template <class Scalar = float>
class SPLoss {
  static_assert(std::is_floating_point_v<Scalar>, "kshot::SPLoss<Scalar>: Scalar must be float or double");

 public:
  SPNorm norm = SPNorm::l1;                                  ///< l1 (torchdistill) or l2 (paper, mdistiller)
  DistillReduction reduction = DistillReduction::batchmean;  ///< batchmean (/ N^2) or sum

  /// The loss.
  Scalar evaluate(ConstRowMatrixRef<Scalar> student, ConstRowMatrixRef<Scalar> teacher) {
    return run(student, teacher, nullptr);
  }
  /// The loss and dL/d(student) (overwritten, shape of student).
  Scalar evaluate(ConstRowMatrixRef<Scalar> student, ConstRowMatrixRef<Scalar> teacher, RowMatrixRef<Scalar> grad) {
    return run(student, teacher, &grad);
  }

 private:
  Scalar run(const ConstRowMatrixRef<Scalar>& s, const ConstRowMatrixRef<Scalar>& t, RowMatrixRef<Scalar>* grad) {
    constexpr const char* where = "kshot::SPLoss::evaluate()";
    detail::check_student_teacher(s, t, where);
    KSHOT_CHECK(reduction != DistillReduction::mean, where, "reduction 'mean' is not defined for SP; use batchmean or sum");
    if (grad != nullptr) detail::check_shape(*grad, s.rows(), s.cols(), where, "grad");
    const Index n = s.rows();
    const Scalar denom = reduction == DistillReduction::batchmean ? Scalar(n) * Scalar(n) : Scalar(1);
    const Scalar eps = detail::normalize_eps<Scalar>();
    auto GS = ws_.matrix(0, n, n);
    auto GT = ws_.matrix(1, n, n);
    auto r = ws_.matrix(2, n, 2);  // student norm, row value
    detail::blocked_gemm_assign(GS, s, s.transpose(), Scalar(1));
    detail::blocked_gemm_assign(GT, t, t.transpose(), Scalar(1));
    const bool l1 = norm == SPNorm::l1;
    const bool want = grad != nullptr;
    auto B = ws_.matrix(3, n, want ? n : 0);
    const Scalar coeff = Scalar(2) / denom;
    auto row = [&](Index i) {
      auto gs = GS.row(i);
      auto gt = GT.row(i);
      const Scalar rs = std::max(l1 ? gs.template lpNorm<1>() : gs.norm(), eps);
      const Scalar rt = std::max(l1 ? gt.template lpNorm<1>() : gt.norm(), eps);
      r(i, 0) = rs;
      if (want) B.row(i) = gs;  // keep G_s for the sign
      gs /= rs;
      gt = gs - gt / rt;  // the difference D
      r(i, 1) = gt.squaredNorm();
      if (!want) return;
      auto b = B.row(i);
      gt *= coeff;  // A
      const Scalar kappa = gt.dot(gs);
      if (r(i, 0) > eps) {
        if (l1) b = (gt.array() - kappa * b.array().sign()).matrix() / r(i, 0);
        else b = (gt - kappa * gs) / r(i, 0);
      } else {
        b = gt / eps;
      }
    };
    detail::parallel_for(n, detail::worth_parallel(n, double(n) * double(n) * 8), row);
    Scalar total = 0;
    for (Index i = 0; i < n; ++i) total += r(i, 1);
    if (want) {
      // S = B + B^T, then dZ = S Z.
      auto S = ws_.matrix(1, n, n);  // G_t is no longer needed
      detail::parallel_for(n, detail::worth_parallel(n, double(n) * double(n)),
                           [&](Index i) { S.row(i) = B.row(i) + B.col(i).transpose(); });
      auto& g = *grad;
      detail::blocked_gemm_assign(g, S, s, Scalar(1));
    }
    return total / denom;
  }

  detail::Workspace<Scalar> ws_;
};

}  // namespace kshot

#endif  // KSHOT_DISTILL_SP_HPP
