/**
 * @file kshot/distill/pkt.hpp
 * @brief Probabilistic knowledge transfer (Passalis and Tefas): the student's cosine-kernel conditional
 * distributions over the batch match the teacher's under KL; torchdistill's PKTLoss, with the gradient.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_DISTILL_PKT_HPP
#define KSHOT_DISTILL_PKT_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/gemm.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"
#include "kshot/core/workspace.hpp"
#include "kshot/distill/common.hpp"

#include <cmath>
#include <type_traits>

namespace kshot {

/**
 * @brief PKT loss over a batch of features (N rows; student and teacher widths may differ).
 *
 * Each side: x̂ = x / (‖x‖ + ε), K = (X̂ X̂ᵀ + 1) / 2 (diagonal included), P_ij = K_ij / Σ_k K_ik.
 * @f[ L = \frac{1}{N^2} \sum_{i,j} p^t_{ij} \log \frac{p^t_{ij} + \varepsilon}{p^s_{ij} + \varepsilon} @f]
 * ε = 1e-7 by default (torchdistill's eps, used in both places as there). Gradient: g_ij = −p^t_ij / (p^s_ij + ε)
 * / N², dL/dK_ij = (g_ij − Σ_k g_ik p^s_ik) / Σ_k K_ik, dL/dX̂ = ½ (dK + dKᵀ) X̂, then through x / (‖x‖ + ε).
 * A zero row maps to 0 as in torchdistill (its kernel row is ½, its distribution uniform); its gradient is taken
 * as dL/dx̂ / ε (torchdistill's autograd gives NaN there). Rows whose kernel sums vanish cannot occur: K_ii ≥ ½·
 * (1 − rounding) for non-zero rows and K_ii = ½ for zero rows.
 *
 * torchdistill: `PKTLoss(..., eps=1e-7)`.
 *
 * @code
 * @inproceedings{passalis2018pkt,
 *   title = {Learning Deep Representations with Probabilistic Knowledge Transfer},
 *   author = {Passalis, Nikolaos and Tefas, Anastasios},
 *   booktitle = {ECCV}, year = {2018}}
 * @endcode
 *
 * @throws std::invalid_argument from evaluate() if student or teacher has 0 rows or 0 columns, their row counts
 * differ, either has a non-finite entry, eps is not finite and > 0, or grad is not shaped like student.
 * @tparam Scalar float or double.
 * @note Products in fixed 64-row blocks, rows in parallel, sums serial (same bits at any thread count). Buffers
 * grow to 3·N² + N·(d_s + d_t) scalars and are reused. One object per thread.
 */
template <class Scalar = float>
class PKTLoss {
  static_assert(std::is_floating_point_v<Scalar>, "kshot::PKTLoss<Scalar>: Scalar must be float or double");

 public:
  Scalar eps = Scalar(1e-7);  ///< ε > 0 (finite)

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
    constexpr const char* where = "kshot::PKTLoss::evaluate()";
    detail::check_student_teacher(s, t, where);
    KSHOT_CHECK(std::isfinite(eps) && eps > Scalar(0), where, detail::cat("eps is ", eps, " but must be finite and > 0"));
    if (grad != nullptr) detail::check_shape(*grad, s.rows(), s.cols(), where, "grad");
    const Index n = s.rows(), ds = s.cols(), dt = t.cols();
    auto XS = ws_.matrix(0, n, ds);
    auto XT = ws_.matrix(1, n, dt);
    auto KS = ws_.matrix(2, n, n);
    auto KT = ws_.matrix(3, n, n);
    auto info = ws_.matrix(4, n, 3);  // ‖s_i‖, Σ_k K^s_ik, row value
    const double nd = double(n);
    detail::parallel_for(n, detail::worth_parallel(n, nd * double(ds + dt) * 2), [&](Index i) {
      const Scalar ns = s.row(i).norm(), nt = t.row(i).norm();
      info(i, 0) = ns;
      XS.row(i) = s.row(i) / (ns + eps);
      XT.row(i) = t.row(i) / (nt + eps);
    });
    detail::blocked_gemm_assign(KS, XS, XS.transpose(), Scalar(1));
    detail::blocked_gemm_assign(KT, XT, XT.transpose(), Scalar(1));
    const bool want = grad != nullptr;
    const Scalar inv_n2 = Scalar(1) / (Scalar(n) * Scalar(n));
    auto row = [&](Index i) {
      auto ks = KS.row(i);
      auto kt = KT.row(i);
      ks = (ks.array() + Scalar(1)) / Scalar(2);
      kt = (kt.array() + Scalar(1)) / Scalar(2);
      const Scalar ss = ks.sum(), st = kt.sum();
      info(i, 1) = ss;
      ks /= ss;  // p^s
      kt /= st;  // p^t
      info(i, 2) = (kt.array() * ((kt.array() + eps) / (ks.array() + eps)).log()).sum();
      if (!want) return;
      // g = -p^t / (p^s + eps) / N^2 into kt; dL/dK = (g - (g . p^s)) / ss into ks.
      kt = (-inv_n2 * kt.array() / (ks.array() + eps)).matrix();
      const Scalar gp = kt.dot(ks);
      ks = (kt.array() - gp).matrix() / ss;
    };
    detail::parallel_for(n, detail::worth_parallel(n, nd * nd * 12), row);
    Scalar total = 0;
    for (Index i = 0; i < n; ++i) total += info(i, 2);
    if (want) {
      // Sym = (dK + dK^T) / 2 into KT; dX̂ = Sym X̂ into XT's slot (resized); then through x / (‖x‖ + eps).
      detail::parallel_for(n, detail::worth_parallel(n, nd * nd),
                           [&](Index i) { KT.row(i) = Scalar(0.5) * (KS.row(i) + KS.col(i).transpose()); });
      auto& g = *grad;
      detail::blocked_gemm_assign(g, KT, XS, Scalar(1));
      detail::parallel_for(n, detail::worth_parallel(n, nd * double(ds) * 4), [&](Index i) {
        const Scalar nrm = info(i, 0);
        const Scalar den = nrm + eps;
        if (nrm > Scalar(0)) {
          const Scalar xg = s.row(i).dot(g.row(i));
          g.row(i) = g.row(i) / den - s.row(i) * (xg / (den * den * nrm));
        } else {
          g.row(i) /= den;
        }
      });
    }
    return total * inv_n2;
  }

  detail::Workspace<Scalar> ws_;
};

}  // namespace kshot

#endif  // KSHOT_DISTILL_PKT_HPP
