/**
 * @file kshot/fewshot/soft_kmeans.hpp
 * @brief Soft k-means refinement of prototypes with the unlabelled queries (Ren et al. 2018), then
 * prototypical scores to the refined prototypes (transductive).
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_FEWSHOT_SOFT_KMEANS_HPP
#define KSHOT_FEWSHOT_SOFT_KMEANS_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/gemm.hpp"
#include "kshot/core/types.hpp"
#include "kshot/distances/pairwise.hpp"
#include "kshot/fewshot/common.hpp"

namespace kshot {

/**
 * @brief Prototypes refined by soft k-means over the queries (Ren et al. 2018, "ProtoNet + soft k-means").
 *
 * The prototypes start at the support class means @f$ p_c = \frac{1}{n_c}\sum_{i: y_i = c} x_i @f$. Each of
 * `refinement_steps` steps assigns every query softly to the current prototypes,
 * @f$ z_{qc} = \mathrm{softmax}_c(-\lVert x_q - p_c\rVert^2) @f$, and recomputes
 * @f[ p_c = \frac{\sum_{i: y_i = c} x_i + \sum_q z_{qc}\, x_q}{n_c + \sum_q z_{qc}}. @f]
 * The support keeps its hard labels; every step starts from the support sums, not from the previous
 * prototypes' weighted sums (the paper's update, iterated). The scores are the prototypical logits to the
 * refined prototypes, @f$ -\lVert x_q - p_c \rVert^2 @f$ (their softmax is the paper's class probability).
 *
 * Hyperparameters (public, checked by fit() and scores()): `refinement_steps` (default 1, >= 0; 0 gives a
 * plain prototypical network with squared Euclidean distance).
 *
 * No easyfsl equivalent exists. The paper's variants with a distractor cluster and with masking are not
 * implemented.
 *
 * @code
 * @inproceedings{ren2018meta, title={Meta-Learning for Semi-Supervised Few-Shot Classification},
 *   author={Ren, Mengye and Triantafillou, Eleni and Ravi, Sachin and Snell, Jake and Swersky, Kevin and
 *   Tenenbaum, Joshua B. and Larochelle, Hugo and Zemel, Richard S.},
 *   booktitle={International Conference on Learning Representations (ICLR)}, year={2018}}
 * @endcode
 *
 * @tparam Scalar float or double.
 * @note Scratch matrices are members, reused while shapes repeat. Not thread-safe; copy it per thread.
 */
template <class Scalar>
class SoftKMeans {
  static_assert(is_supported_scalar_v<Scalar>, "kshot::SoftKMeans<Scalar>: Scalar must be float or double");

 public:
  Index refinement_steps = 1;  ///< soft k-means steps over the queries (>= 0)

  /**
   * @brief Checks the hyperparameters, computes the class means and the per-class support sums.
   * @throws std::invalid_argument on a bad support set (see detail::check_support) or refinement_steps < 0.
   */
  void fit(ConstRowMatrixRef<Scalar> support, ConstLabelRef support_labels) {
    constexpr const char* where = "kshot::SoftKMeans::fit()";
    check_hyperparameters(where);
    classes_ = detail::check_support<Scalar>(support, support_labels, where);
    means_.resize(classes_, support.cols());
    class_means<Scalar>(support, support_labels, classes_, means_);
    prototypes_ = means_;
    counts_.setZero(classes_);
    support_sums_.setZero(classes_, support.cols());
    for (Index i = 0; i < support_labels.size(); ++i) {
      counts_[support_labels[i]] += Scalar(1);
      support_sums_.row(support_labels[i]) += support.row(i);
    }
  }

  /**
   * @brief Refines the prototypes with `query`, then writes the Q x N scores @f$ -\lVert x_q - p_c\rVert^2 @f$.
   * @param[in] query Q x d query features (the unlabelled set).
   * @param[out] out Q x N, overwritten.
   * @throws std::invalid_argument before fit(), if refinement_steps < 0, if query has the wrong number of
   * columns or a non-finite value, or if out is not Q x N.
   */
  void scores(ConstRowMatrixRef<Scalar> query, RowMatrixRef<Scalar> out) {
    constexpr const char* where = "kshot::SoftKMeans::scores()";
    KSHOT_CHECK(classes_ > 0, where, "fit() has not been called");
    check_hyperparameters(where);
    detail::check_query<Scalar>(query, means_.cols(), where);
    detail::check_shape(out, query.rows(), classes_, where, "out");
    refine_checked(query);
    squared_.compute(query, prototypes_, out);
    out = -out;
  }

  /// Q x N scores as a new matrix; see scores(query, out).
  RowMatrixX<Scalar> scores(ConstRowMatrixRef<Scalar> query) {
    RowMatrixX<Scalar> out(query.rows(), classes_);
    scores(query, out);
    return out;
  }

  /// The class of the nearest refined prototype per query (ties to the lower class).
  LabelVector predict(ConstRowMatrixRef<Scalar> query) { return argmax_rows<Scalar>(scores(query)); }

  /**
   * @brief Only the refinement: after it, prototypes() holds the refined prototypes for `query`.
   * @throws std::invalid_argument as scores().
   */
  void refine(ConstRowMatrixRef<Scalar> query) {
    constexpr const char* where = "kshot::SoftKMeans::refine()";
    KSHOT_CHECK(classes_ > 0, where, "fit() has not been called");
    check_hyperparameters(where);
    detail::check_query<Scalar>(query, means_.cols(), where);
    refine_checked(query);
  }

  Index num_classes() const noexcept { return classes_; }
  /// The class means after fit(); the refined prototypes after scores(), predict() or refine().
  const RowMatrixX<Scalar>& prototypes() const noexcept { return prototypes_; }
  /// The soft assignments z (Q x N) of the last refinement step (empty when refinement_steps = 0).
  const RowMatrixX<Scalar>& assignments() const noexcept { return assignments_; }

 private:
  void check_hyperparameters(const char* where) const {
    KSHOT_CHECK(refinement_steps >= 0, where, detail::cat("refinement_steps must be >= 0, got ", refinement_steps));
  }

  void refine_checked(const ConstRowMatrixRef<Scalar>& query) {
    prototypes_ = means_;
    assignments_.resize(0, classes_);
    if (query.rows() == 0) return;
    for (Index step = 0; step < refinement_steps; ++step) {
      logits_.resize(query.rows(), classes_);
      squared_.compute(query, prototypes_, logits_);
      logits_ = -logits_;
      assignments_.resize(query.rows(), classes_);
      softmax_rows<Scalar>(logits_, assignments_);
      // Denominators are >= n_c >= 1, so the update is always defined.
      prototypes_ = support_sums_;
      detail::gemm_add(prototypes_, assignments_.transpose(), query);
      mass_ = counts_ + assignments_.colwise().sum().transpose();
      for (Index c = 0; c < classes_; ++c) prototypes_.row(c) /= mass_[c];
    }
  }

  Index classes_ = 0;
  RowMatrixX<Scalar> means_, prototypes_, support_sums_, logits_, assignments_;
  VectorX<Scalar> counts_, mass_;
  PairwiseDistance<Scalar, SquaredEuclidean> squared_;
};

}  // namespace kshot

#endif  // KSHOT_FEWSHOT_SOFT_KMEANS_HPP
