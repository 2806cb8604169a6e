/**
 * @file kshot/distill/embedding_distill.hpp
 * @brief Listwise embedding distillation for retrieval: each sample's softmax over its similarities to the rest
 * of the batch, in the student, matches the teacher's under KL, so that the student keeps the teacher's
 * similarity ranking; with the gradient for the student's embeddings.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_DISTILL_EMBEDDING_DISTILL_HPP
#define KSHOT_DISTILL_EMBEDDING_DISTILL_HPP

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
 * @brief Listwise similarity distillation over a batch (N rows; student and teacher widths may differ).
 *
 * With S = X̂ X̂ᵀ (X̂ the rows L2-normalised, x / max(‖x‖, 1e-12), when `normalize` is on: cosine similarity;
 * the raw dot product otherwise), for each anchor i a distribution over the other samples j ≠ i:
 * p_ij = softmax_j(S^t_ij / τ_t), q_ij = softmax_j(S^s_ij / τ_s), and
 * @f[ L = \frac{w}{N} \sum_i \sum_{j \ne i} p_{ij} (\log p_{ij} - \log q_{ij}) @f]
 * (w = `weight`; τ_s = τ_t by default). It is the listwise ranking-distillation objective (a soft version of the
 * teacher's ranking of the batch around each anchor, as in RKD-style relational and "similarity-ranking"
 * distillation for retrieval, e.g. Park et al. 2019's relational view with a ListNet-style KL, Cao et al. 2007):
 * the student is pushed to rank every neighbour where the teacher ranks it, with the teacher's confidence.
 * The softmax is a log-sum-exp, so any temperature is safe; N = 1 gives 0.
 *
 * Gradient: dL/dS^s_ij = w (Σ_j p_ij · q_ij − p_ij) / (N τ_s) for j ≠ i, dL/dX̂ = (D + Dᵀ) X̂, then through the
 * normalisation ((g − x̂ (x̂·g)) / ‖x‖, or g / 1e-12 at the floor).
 *
 * No peer library ships this loss; docs/distillation.md gives the formula as the reference.
 *
 * @code
 * @inproceedings{cao2007listnet,
 *   title = {Learning to Rank: From Pairwise Approach to Listwise Approach},
 *   author = {Cao, Zhe and Qin, Tao and Liu, Tie-Yan and Tsai, Ming-Feng and Li, Hang},
 *   booktitle = {ICML}, year = {2007}}
 * @endcode
 *
 * @throws std::invalid_argument from evaluate() if student or teacher has 0 rows or 0 columns, their row counts
 * differ, either has a non-finite entry, a temperature is not finite and > 0 (with its inverse finite), weight is not
 * finite, or grad is not shaped like student.
 * @tparam Scalar float or double.
 * @note Products in fixed 64-row blocks, rows in parallel, sums serial: the same bits at any thread count.
 * Buffers grow to 3·N² + N·(d_s + d_t) scalars and are reused. One object per thread.
 */
template <class Scalar = float>
class EmbeddingDistillLoss {
  static_assert(std::is_floating_point_v<Scalar>, "kshot::EmbeddingDistillLoss<Scalar>: Scalar must be float or double");

 public:
  Scalar student_temperature = Scalar(0.1);  ///< τ_s > 0
  Scalar teacher_temperature = Scalar(0.1);  ///< τ_t > 0
  bool normalize = true;                     ///< cosine similarity (true) or raw dot product
  Scalar weight = Scalar(1);                 ///< w (finite)

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
    constexpr const char* where = "kshot::EmbeddingDistillLoss::evaluate()";
    detail::check_student_teacher(s, t, where);
    detail::check_temperature(student_temperature, where, "student_temperature");
    detail::check_temperature(teacher_temperature, where, "teacher_temperature");
    detail::check_factor(weight, where, "weight");
    if (grad != nullptr) detail::check_shape(*grad, s.rows(), s.cols(), where, "grad");
    const Index n = s.rows(), ds = s.cols(), dt = t.cols();
    if (grad != nullptr) grad->setZero();
    if (n < 2) return Scalar(0);
    const double nd = double(n);
    const Scalar eps = detail::normalize_eps<Scalar>();
    auto XS = ws_.matrix(0, n, ds);
    auto XT = ws_.matrix(1, n, dt);
    auto info = ws_.matrix(2, n, 2);  // ‖s_i‖, row value
    detail::parallel_for(n, detail::worth_parallel(n, nd * double(ds + dt) * 2), [&](Index i) {
      const Scalar ns = s.row(i).norm();
      info(i, 0) = ns;
      if (normalize) {
        XS.row(i) = s.row(i) / std::max(ns, eps);
        XT.row(i) = t.row(i) / std::max(t.row(i).norm(), eps);
      } else {
        XS.row(i) = s.row(i);
        XT.row(i) = t.row(i);
      }
    });
    auto SS = ws_.matrix(3, n, n);
    auto ST = ws_.matrix(4, n, n);
    detail::blocked_gemm_assign(SS, XS, XS.transpose(), Scalar(1));
    detail::blocked_gemm_assign(ST, XT, XT.transpose(), Scalar(1));
    const bool want = grad != nullptr;
    const Scalar is = Scalar(1) / student_temperature, it = Scalar(1) / teacher_temperature;
    const Scalar coeff = weight / (Scalar(n) * student_temperature);
    const Scalar lowest = std::numeric_limits<Scalar>::lowest();
    auto row = [&](Index i) {
      auto q = SS.row(i);
      auto p = ST.row(i);
      // Log-softmax over j != i: the diagonal is set to the lowest value, so it takes no mass (exp underflows
      // to exactly 0), then excluded from the sums explicitly.
      q *= is;
      p *= it;
      q[i] = lowest;
      p[i] = lowest;
      const Scalar mq = q.maxCoeff(), mp = p.maxCoeff();
      Scalar sq = 0, sp = 0;
      for (Index j = 0; j < n; ++j) {
        if (j == i) continue;
        sq += std::exp(q[j] - mq);
        sp += std::exp(p[j] - mp);
      }
      const Scalar lq = mq + std::log(sq), lp = mp + std::log(sp);
      Scalar v = 0, psum = 0;
      for (Index j = 0; j < n; ++j) {
        if (j == i) continue;
        q[j] -= lq;
        p[j] -= lp;
        const Scalar pj = std::exp(p[j]);
        v += pj * (p[j] - q[j]);
        psum += pj;
        p[j] = pj;
      }
      info(i, 1) = v;
      if (!want) return;
      for (Index j = 0; j < n; ++j) q[j] = j == i ? Scalar(0) : coeff * (psum * std::exp(q[j]) - p[j]);
    };
    detail::parallel_for(n, detail::worth_parallel(n, nd * nd * 10), row);
    Scalar total = 0;
    for (Index i = 0; i < n; ++i) total += info(i, 1);
    if (want) {
      detail::parallel_for(n, detail::worth_parallel(n, nd * nd),
                           [&](Index i) { ST.row(i) = SS.row(i) + SS.col(i).transpose(); });
      auto& g = *grad;
      detail::blocked_gemm_assign(g, ST, XS, Scalar(1));
      if (normalize) {
        detail::parallel_for(n, detail::worth_parallel(n, nd * double(ds) * 4), [&](Index i) {
          auto gi = g.row(i);
          detail::normalize_backward_row(XS.row(i), g.row(i), info(i, 0), gi);
        });
      }
    }
    return weight * total / Scalar(n);
  }

  detail::Workspace<Scalar> ws_;
};

}  // namespace kshot

#endif  // KSHOT_DISTILL_EMBEDDING_DISTILL_HPP
