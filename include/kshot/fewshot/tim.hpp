/**
 * @file kshot/fewshot/tim.hpp
 * @brief TIM: prototypes fine-tuned by Adam on support cross-entropy minus the query mutual information,
 * with the analytic gradient; cosine scores to the fine-tuned prototypes (transductive).
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_FEWSHOT_TIM_HPP
#define KSHOT_FEWSHOT_TIM_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/gemm.hpp"
#include "kshot/core/types.hpp"
#include "kshot/distances/pairwise.hpp"
#include "kshot/fewshot/common.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace kshot {

/**
 * @brief TIM, transductive information maximisation (Boudiaf et al. 2020), as easyfsl's `TIM`.
 *
 * The prototypes P start at the support class means. With
 * @f$ z = t \cos(x, p_c) @f$ (t the temperature) and @f$ \pi_q = \mathrm{softmax}(z_q) @f$ for the queries,
 * `fine_tuning_steps` steps of Adam on P minimise
 * @f[ L(P) = w_{ce}\,\underbrace{\tfrac{1}{|S|}\textstyle\sum_{i \in S} -\log \mathrm{softmax}(z_i)_{y_i}}_{CE}
 *     - \Big(w_{m}\,\underbrace{-\textstyle\sum_c \bar\pi_c \log \bar\pi_c}_{H(Y)}
 *     - w_{c}\,\underbrace{\tfrac{1}{Q}\textstyle\sum_q -\sum_c \pi_{qc}\log(\pi_{qc} + 10^{-12})}_{H(Y|X)}\Big), @f]
 * with @f$ \bar\pi = \frac{1}{Q}\sum_q \pi_q @f$. The output is the cosine similarity of the queries to the
 * fine-tuned prototypes, *without* the temperature (easyfsl's convention).
 *
 * The gradient is analytic (objective()): with @f$ g_{qc} = \partial L/\partial \pi_{qc} =
 * \frac{w_m}{Q}(\log\bar\pi_c + 1) - \frac{w_c}{Q}\big(\log(\pi_{qc} + 10^{-12}) + \frac{\pi_{qc}}{\pi_{qc} +
 * 10^{-12}}\big) @f$, @f$ \partial L/\partial z_q = \pi_q \odot (g_q - \pi_q\cdot g_q) @f$ for the queries,
 * @f$ \frac{w_{ce}}{|S|}(\mathrm{softmax}(z_i) - e_{y_i}) @f$ for the support, then through the cosine:
 * @f$ \partial L/\partial p_c = (I - \hat p_c \hat p_c^\top)\,t\sum_x (\partial L/\partial z_{xc})\,\hat x /
 * \lVert p_c\rVert @f$.
 *
 * Hyperparameters are public members, checked by fit() and scores():
 * | member | default | valid |
 * |---|---|---|
 * | fine_tuning_steps | 50 | >= 0 |
 * | fine_tuning_lr | 1e-4 | finite, > 0 |
 * | cross_entropy_weight (@f$w_{ce}@f$) | 1 | finite, >= 0 |
 * | marginal_entropy_weight (@f$w_m@f$) | 1 | finite, >= 0 |
 * | conditional_entropy_weight (@f$w_c@f$) | 0.1 | finite, >= 0 |
 * | temperature (t) | 10 | finite, > 0 |
 * | adam_beta1, adam_beta2 | 0.9, 0.999 | in [0, 1) |
 * | adam_eps | 1e-8 | finite, > 0 |
 *
 * Adam follows torch.optim.Adam exactly (bias corrections, eps added after the square root).
 *
 * @code
 * @inproceedings{boudiaf2020information, title={Information Maximization for Few-Shot Learning},
 *   author={Boudiaf, Malik and Ziko, Imtiaz Masud and Rony, J{\'e}r{\^o}me and Dolz, Jose and Piantanida,
 *   Pablo and Ben Ayed, Ismail}, booktitle={Advances in Neural Information Processing Systems (NeurIPS)},
 *   volume={33}, pages={2445--2457}, year={2020}}
 * @endcode
 *
 * @tparam Scalar float or double.
 * @note Vectors are normalised as torch's F.normalize does, @f$ x/\max(\lVert x\rVert, 10^{-12}) @f$, so zero
 * vectors give cosine 0 and finite outputs.
 * @note Each scores() call starts again from the support class means (easyfsl keeps fine-tuning the
 * prototypes it fine-tuned in the previous forward call).
 * @note Scratch matrices are members, reused while shapes repeat. Not thread-safe; copy it per thread.
 */
template <class Scalar>
class TIM {
  static_assert(is_supported_scalar_v<Scalar>, "kshot::TIM<Scalar>: Scalar must be float or double");

 public:
  Index fine_tuning_steps = 50;                     ///< Adam steps (>= 0)
  Scalar fine_tuning_lr = Scalar(1e-4);             ///< Adam learning rate (> 0)
  Scalar cross_entropy_weight = Scalar(1);          ///< weight of the support cross-entropy (>= 0)
  Scalar marginal_entropy_weight = Scalar(1);       ///< weight of H(Y) (>= 0)
  Scalar conditional_entropy_weight = Scalar(0.1);  ///< weight of H(Y|X) (>= 0)
  Scalar temperature = Scalar(10);                  ///< logit scale during fine-tuning (> 0)
  Scalar adam_beta1 = Scalar(0.9);                  ///< Adam first-moment decay, in [0, 1)
  Scalar adam_beta2 = Scalar(0.999);                ///< Adam second-moment decay, in [0, 1)
  Scalar adam_eps = Scalar(1e-8);                   ///< Adam denominator guard (> 0)

  /**
   * @brief Checks the hyperparameters, stores the normalised support and computes the class means.
   * @throws std::invalid_argument on a bad support set (see detail::check_support) or hyperparameter.
   */
  void fit(ConstRowMatrixRef<Scalar> support, ConstLabelRef support_labels) {
    constexpr const char* where = "kshot::TIM::fit()";
    check_hyperparameters(where);
    classes_ = detail::check_support<Scalar>(support, support_labels, where);
    labels_ = support_labels;
    means_.resize(classes_, support.cols());
    class_means<Scalar>(support, labels_, classes_, means_);
    prototypes_ = means_;
    normalize_rows(support, support_unit_, scratch_norms_);
  }

  /**
   * @brief Fine-tunes the prototypes on the whole query set, then writes the Q x N cosine scores.
   * @param[in] query Q x d query features.
   * @param[out] out Q x N, overwritten.
   * @throws std::invalid_argument before fit(), on a bad hyperparameter, if query has the wrong number of
   * columns or a non-finite value, or if out is not Q x N.
   */
  void scores(ConstRowMatrixRef<Scalar> query, RowMatrixRef<Scalar> out) {
    constexpr const char* where = "kshot::TIM::scores()";
    check_ready(query, where);
    check_hyperparameters(where);
    detail::check_shape(out, query.rows(), classes_, where, "out");
    prototypes_ = means_;
    normalize_rows(query, query_unit_, scratch_norms_);
    first_moment_.setZero(classes_, means_.cols());
    second_moment_.setZero(classes_, means_.cols());
    gradient_.resize(classes_, means_.cols());
    const double b1 = static_cast<double>(adam_beta1), b2 = static_cast<double>(adam_beta2);
    for (Index step = 1; step <= fine_tuning_steps; ++step) {
      RowMatrixRef<Scalar> gradient_ref(gradient_);
      evaluate(prototypes_, &gradient_ref);
      first_moment_ = adam_beta1 * first_moment_ + (Scalar(1) - adam_beta1) * gradient_;
      second_moment_ = adam_beta2 * second_moment_ + (Scalar(1) - adam_beta2) * gradient_.cwiseAbs2();
      const double correction1 = 1.0 - std::pow(b1, static_cast<double>(step));
      const double correction2 = 1.0 - std::pow(b2, static_cast<double>(step));
      const Scalar step_size = static_cast<Scalar>(static_cast<double>(fine_tuning_lr) / correction1);
      const Scalar root2 = static_cast<Scalar>(std::sqrt(correction2));
      prototypes_.array() -= step_size * first_moment_.array() / (second_moment_.array().sqrt() / root2 + adam_eps);
    }
    cosine_.compute(query, prototypes_, out);
  }

  /// Q x N cosine scores as a new matrix; see scores(query, out).
  RowMatrixX<Scalar> scores(ConstRowMatrixRef<Scalar> query) {
    RowMatrixX<Scalar> out(query.rows(), classes_);
    scores(query, out);
    return out;
  }

  /// The class of the largest score per query (ties to the lower class).
  LabelVector predict(ConstRowMatrixRef<Scalar> query) { return argmax_rows<Scalar>(scores(query)); }

  Index num_classes() const noexcept { return classes_; }
  /// The class means after fit(); the fine-tuned prototypes after scores() or predict().
  const RowMatrixX<Scalar>& prototypes() const noexcept { return prototypes_; }

  /**
   * @brief The fine-tuning objective L(P) for the fitted support and `query`, at the prototypes `prototypes`.
   * @param[in] query Q x d query features (Q >= 1).
   * @param[in] prototypes N x d.
   * @return L(P) as in the class description.
   * @throws std::invalid_argument before fit() or on bad shapes or values.
   */
  Scalar objective(ConstRowMatrixRef<Scalar> query, ConstRowMatrixRef<Scalar> prototypes) {
    prepare_objective(query, prototypes, "kshot::TIM::objective()");
    return evaluate(prototypes, nullptr);
  }

  /**
   * @brief L(P) and its gradient with respect to the prototypes.
   * @param[out] grad N x d, overwritten with dL/dP.
   * @throws std::invalid_argument as objective(), or if grad is not N x d.
   */
  Scalar objective(ConstRowMatrixRef<Scalar> query, ConstRowMatrixRef<Scalar> prototypes, RowMatrixRef<Scalar> grad) {
    constexpr const char* where = "kshot::TIM::objective()";
    prepare_objective(query, prototypes, where);
    detail::check_shape(grad, classes_, means_.cols(), where, "grad");
    RowMatrixRef<Scalar> grad_ref(grad);
    return evaluate(prototypes, &grad_ref);
  }

 private:
  static constexpr Scalar norm_floor = Scalar(1e-12);  // torch F.normalize's eps
  static constexpr Scalar log_guard = Scalar(1e-12);   // easyfsl's guard in H(Y|X)

  void check_ready(const ConstRowMatrixRef<Scalar>& query, const char* where) const {
    KSHOT_CHECK(classes_ > 0, where, "fit() has not been called");
    detail::check_query<Scalar>(query, means_.cols(), where);
  }

  void prepare_objective(const ConstRowMatrixRef<Scalar>& query, const ConstRowMatrixRef<Scalar>& prototypes,
                         const char* where) {
    check_ready(query, where);
    KSHOT_CHECK(query.rows() > 0, where, "the query set is empty");
    detail::check_shape(prototypes, classes_, means_.cols(), where, "prototypes");
    detail::check_finite(prototypes, where, "prototypes");
    normalize_rows(query, query_unit_, scratch_norms_);
  }

  void check_hyperparameters(const char* where) const {
    using detail::cat;
    KSHOT_CHECK(fine_tuning_steps >= 0, where, cat("fine_tuning_steps must be >= 0, got ", fine_tuning_steps));
    KSHOT_CHECK(std::isfinite(fine_tuning_lr) && fine_tuning_lr > Scalar(0), where,
                cat("fine_tuning_lr must be finite and > 0, got ", fine_tuning_lr));
    KSHOT_CHECK(std::isfinite(cross_entropy_weight) && cross_entropy_weight >= Scalar(0), where,
                cat("cross_entropy_weight must be finite and >= 0, got ", cross_entropy_weight));
    KSHOT_CHECK(std::isfinite(marginal_entropy_weight) && marginal_entropy_weight >= Scalar(0), where,
                cat("marginal_entropy_weight must be finite and >= 0, got ", marginal_entropy_weight));
    KSHOT_CHECK(std::isfinite(conditional_entropy_weight) && conditional_entropy_weight >= Scalar(0), where,
                cat("conditional_entropy_weight must be finite and >= 0, got ", conditional_entropy_weight));
    KSHOT_CHECK(std::isfinite(temperature) && temperature > Scalar(0), where,
                cat("temperature must be finite and > 0, got ", temperature));
    KSHOT_CHECK(adam_beta1 >= Scalar(0) && adam_beta1 < Scalar(1), where,
                cat("adam_beta1 must be in [0, 1), got ", adam_beta1));
    KSHOT_CHECK(adam_beta2 >= Scalar(0) && adam_beta2 < Scalar(1), where,
                cat("adam_beta2 must be in [0, 1), got ", adam_beta2));
    KSHOT_CHECK(std::isfinite(adam_eps) && adam_eps > Scalar(0), where, cat("adam_eps must be finite and > 0, got ", adam_eps));
  }

  // out = x / max(||x||, 1e-12) row by row; norms keeps the clamped norms.
  static void normalize_rows(const ConstRowMatrixRef<Scalar>& x, RowMatrixX<Scalar>& out, VectorX<Scalar>& norms) {
    norms = x.rowwise().norm().cwiseMax(norm_floor);
    out = x;
    for (Index i = 0; i < out.rows(); ++i) out.row(i) /= norms[i];
  }

  // L(P) with the normalised support and queries in support_unit_ and query_unit_; dL/dP into *grad if given.
  Scalar evaluate(const ConstRowMatrixRef<Scalar>& prototypes_in, RowMatrixRef<Scalar>* grad) {
    const Index n = support_unit_.rows(), q = query_unit_.rows();
    normalize_rows(prototypes_in, prototypes_unit_, prototype_norms_);
    // Support: logits, log-softmax, cross-entropy; d/dz = w_ce (softmax - onehot) / n.
    detail::gemm_assign(support_logits_, support_unit_, prototypes_unit_.transpose(), Scalar(temperature));
    support_log_probs_.resize(n, classes_);
    log_softmax_rows<Scalar>(support_logits_, support_log_probs_);
    Scalar cross_entropy = 0;
    for (Index i = 0; i < n; ++i) cross_entropy -= support_log_probs_(i, labels_[i]);
    cross_entropy /= Scalar(n);
    // Queries: softmax, conditional entropy, marginal entropy.
    detail::gemm_assign(query_logits_, query_unit_, prototypes_unit_.transpose(), Scalar(temperature));
    query_probs_.resize(q, classes_);
    softmax_rows<Scalar>(query_logits_, query_probs_);
    Scalar conditional = 0;
    for (Index i = 0; i < q; ++i)
      for (Index c = 0; c < classes_; ++c) conditional -= query_probs_(i, c) * std::log(query_probs_(i, c) + log_guard);
    conditional /= Scalar(q);
    marginal_ = query_probs_.colwise().mean();
    Scalar marginal_entropy = 0;
    for (Index c = 0; c < classes_; ++c)
      if (marginal_[c] > Scalar(0)) marginal_entropy -= marginal_[c] * std::log(marginal_[c]);
    const Scalar value = cross_entropy_weight * cross_entropy -
                         (marginal_entropy_weight * marginal_entropy - conditional_entropy_weight * conditional);
    if (grad == nullptr) return value;

    // dL/dz for the support (into support_logits_) and the queries (into query_logits_), scaled by t.
    support_logits_ = support_log_probs_.array().exp();
    for (Index i = 0; i < n; ++i) support_logits_(i, labels_[i]) -= Scalar(1);
    support_logits_ *= temperature * cross_entropy_weight / Scalar(n);
    for (Index c = 0; c < classes_; ++c)
      marginal_[c] = marginal_entropy_weight / Scalar(q) *
                     (std::log(std::max(marginal_[c], std::numeric_limits<Scalar>::min())) + Scalar(1));
    for (Index i = 0; i < q; ++i) {
      Scalar mean = 0;
      for (Index c = 0; c < classes_; ++c) {
        const Scalar p = query_probs_(i, c);
        const Scalar g = marginal_[c] - conditional_entropy_weight / Scalar(q) *
                                            (std::log(p + log_guard) + p / (p + log_guard));
        query_logits_(i, c) = g;
        mean += p * g;
      }
      for (Index c = 0; c < classes_; ++c)
        query_logits_(i, c) = temperature * query_probs_(i, c) * (query_logits_(i, c) - mean);
    }
    // dL/dP_unit = Gs^T S_unit + Gq^T Q_unit, then through x / max(||x||, eps).
    RowMatrixRef<Scalar>& g = *grad;
    detail::gemm_assign(g, support_logits_.transpose(), support_unit_);
    detail::gemm_add(g, query_logits_.transpose(), query_unit_);
    for (Index c = 0; c < classes_; ++c) {
      const Scalar norm = prototype_norms_[c];
      if (norm > norm_floor) {
        const auto u = prototypes_unit_.row(c);
        g.row(c) = (g.row(c) - u * u.dot(g.row(c))) / norm;
      } else {
        g.row(c) /= norm_floor;
      }
    }
    return value;
  }

  Index classes_ = 0;
  LabelVector labels_;
  RowMatrixX<Scalar> means_, prototypes_, support_unit_, query_unit_, prototypes_unit_;
  RowMatrixX<Scalar> support_logits_, support_log_probs_, query_logits_, query_probs_;
  RowMatrixX<Scalar> gradient_, first_moment_, second_moment_;
  VectorX<Scalar> scratch_norms_, prototype_norms_;
  RowVectorX<Scalar> marginal_;
  PairwiseDistance<Scalar, CosineSimilarity> cosine_;
};

}  // namespace kshot

#endif  // KSHOT_FEWSHOT_TIM_HPP
