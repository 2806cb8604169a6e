/**
 * @file kshot/fewshot/pt_map.hpp
 * @brief PT-MAP: power-transformed features, Sinkhorn soft assignments of the queries to the prototypes,
 * and prototypes moved towards the assignment-weighted means (transductive).
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_FEWSHOT_PT_MAP_HPP
#define KSHOT_FEWSHOT_PT_MAP_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/gemm.hpp"
#include "kshot/core/types.hpp"
#include "kshot/distances/pairwise.hpp"
#include "kshot/fewshot/common.hpp"

#include <cmath>
#include <limits>

namespace kshot {

/**
 * @brief PT-MAP (Hu et al. 2021), as easyfsl's `PTMAP`.
 *
 * Every feature (support and query) is mapped through the power transform
 * @f$ x \mapsto (\max(x, 0) + 10^{-6})^{\beta} @f$ (no L2 normalisation, as easyfsl). The prototypes start
 * at the class means of the transformed support. Each of `fine_tuning_steps` steps computes the soft
 * assignments M of the queries (below) and moves the prototypes,
 * @f$ p_c \leftarrow p_c + \alpha\,(\hat p_c - p_c) @f$ with
 * @f$ \hat p_c = \big(\sum_{i: y_i = c} x_i + \sum_q M_{qc} q\big) / \big(|S_c| + \sum_q M_{qc}\big) @f$.
 * The output is the soft assignments to the final prototypes.
 *
 * Soft assignments (Sinkhorn-Knopp, easyfsl's `compute_optimal_transport`): with
 * @f$ C_{qc} = \lVert q - p_c \rVert^2 @f$, start from @f$ M = e^{-\lambda C} / \sum e^{-\lambda C} @f$,
 * then repeat up to `sinkhorn_max_iterations` times: scale each row by @f$ 1/(r_q + 10^{-10}) @f$ (r the row
 * sums), then each column by @f$ k/(\text{column sum} + 10^{-10}) @f$ with @f$ k = \lfloor Q/N \rfloor @f$;
 * stop when the row sums moved by less than `sinkhorn_tolerance`. Rows then sum to about 1 and columns to k.
 *
 * Hyperparameters are public members, checked by fit() and scores():
 * | member | default | valid |
 * |---|---|---|
 * | fine_tuning_steps | 10 | >= 0 |
 * | fine_tuning_lr (@f$\alpha@f$) | 0.2 | finite, > 0 |
 * | lambda_regularization (@f$\lambda@f$) | 10 | finite, > 0 |
 * | power_factor (@f$\beta@f$) | 0.5 | finite, > 0 |
 * | sinkhorn_max_iterations | 1000 | >= 1 |
 * | sinkhorn_tolerance | 1e-6 | finite, > 0 |
 *
 * @code
 * @inproceedings{hu2021leveraging, title={Leveraging the Feature Distribution in Transfer-based Few-Shot
 *   Learning}, author={Hu, Yuqing and Gripon, Vincent and Pateux, St{\'e}phane},
 *   booktitle={International Conference on Artificial Neural Networks (ICANN)}, pages={487--499}, year={2021}}
 * @endcode
 *
 * @tparam Scalar float or double.
 * @note Differences from easyfsl, only where easyfsl gives zeros or NaN: with fewer queries than classes
 * (k = 0) the columns are scaled to Q/N instead of 0; when a row of @f$ e^{-\lambda C} @f$ underflows
 * to 0 entirely, the kernel of every row is computed as @f$ e^{-\lambda (C_{qc} - \min_c C_{qc})} @f$
 * (equal after the first row scaling, up to the 1e-10 guards).
 * @note prototypes() are in the power-transformed space.
 * @note Scratch matrices are members, reused while shapes repeat. Not thread-safe; copy it per thread.
 */
template <class Scalar>
class PTMAP {
  static_assert(is_supported_scalar_v<Scalar>, "kshot::PTMAP<Scalar>: Scalar must be float or double");

 public:
  Index fine_tuning_steps = 10;             ///< prototype updates (>= 0)
  Scalar fine_tuning_lr = Scalar(0.2);      ///< step towards the weighted means (> 0)
  Scalar lambda_regularization = Scalar(10);  ///< inverse entropic regularisation of the transport (> 0)
  Scalar power_factor = Scalar(0.5);        ///< exponent of the power transform (> 0)
  Index sinkhorn_max_iterations = 1000;     ///< cap on Sinkhorn iterations (>= 1)
  Scalar sinkhorn_tolerance = Scalar(1e-6);  ///< stop when the row sums change by less (> 0)

  /**
   * @brief Checks the hyperparameters, power-transforms and stores the support, computes the class means.
   * @throws std::invalid_argument on a bad support set (see detail::check_support) or hyperparameter.
   */
  void fit(ConstRowMatrixRef<Scalar> support, ConstLabelRef support_labels) {
    constexpr const char* where = "kshot::PTMAP::fit()";
    check_hyperparameters(where);
    classes_ = detail::check_support<Scalar>(support, support_labels, where);
    power_transform(support, support_);
    labels_ = support_labels;
    means_.resize(classes_, support.cols());
    class_means<Scalar>(support_, labels_, classes_, means_);
    prototypes_ = means_;
    counts_.setZero(classes_);
    for (Index i = 0; i < labels_.size(); ++i) counts_[labels_[i]] += Scalar(1);
    support_sums_.setZero(classes_, support.cols());
    for (Index i = 0; i < labels_.size(); ++i) support_sums_.row(labels_[i]) += support_.row(i);
  }

  /**
   * @brief Soft assignments of the whole query set to the fine-tuned prototypes (Q x N).
   * @param[in] query Q x d raw query features (transformed here).
   * @param[out] out Q x N, overwritten.
   * @throws std::invalid_argument before fit(), on a bad hyperparameter, if query has the wrong number of
   * columns or a non-finite value, or if out is not Q x N.
   */
  void scores(ConstRowMatrixRef<Scalar> query, RowMatrixRef<Scalar> out) {
    constexpr const char* where = "kshot::PTMAP::scores()";
    KSHOT_CHECK(classes_ > 0, where, "fit() has not been called");
    check_hyperparameters(where);
    detail::check_query<Scalar>(query, support_.cols(), where);
    detail::check_shape(out, query.rows(), classes_, where, "out");
    prototypes_ = means_;
    if (query.rows() == 0) return;
    power_transform(query, query_);
    for (Index step = 0; step < fine_tuning_steps; ++step) {
      soft_assignments(plan_);
      // Weighted means of support (one-hot) and queries (soft), then a step of size lr towards them.
      detail::gemm_assign(targets_, plan_.transpose(), query_);
      targets_ += support_sums_;
      mass_ = plan_.colwise().sum().transpose() + counts_;
      for (Index c = 0; c < classes_; ++c)
        prototypes_.row(c) += fine_tuning_lr * (targets_.row(c) / mass_[c] - prototypes_.row(c));
    }
    soft_assignments(plan_);
    out = plan_;
  }

  /// Soft assignments as a new Q x N matrix; see scores(query, out).
  RowMatrixX<Scalar> scores(ConstRowMatrixRef<Scalar> query) {
    RowMatrixX<Scalar> out(query.rows(), classes_);
    scores(query, out);
    return out;
  }

  /// The class of the largest soft assignment per query (ties to the lower class).
  LabelVector predict(ConstRowMatrixRef<Scalar> query) { return argmax_rows<Scalar>(scores(query)); }

  Index num_classes() const noexcept { return classes_; }
  /// Class means of the transformed support after fit(); the fine-tuned prototypes after scores().
  const RowMatrixX<Scalar>& prototypes() const noexcept { return prototypes_; }

 private:
  void check_hyperparameters(const char* where) const {
    KSHOT_CHECK(fine_tuning_steps >= 0, where, detail::cat("fine_tuning_steps must be >= 0, got ", fine_tuning_steps));
    KSHOT_CHECK(std::isfinite(fine_tuning_lr) && fine_tuning_lr > Scalar(0), where,
                detail::cat("fine_tuning_lr must be finite and > 0, got ", fine_tuning_lr));
    KSHOT_CHECK(std::isfinite(lambda_regularization) && lambda_regularization > Scalar(0), where,
                detail::cat("lambda_regularization must be finite and > 0, got ", lambda_regularization));
    KSHOT_CHECK(std::isfinite(power_factor) && power_factor > Scalar(0), where,
                detail::cat("power_factor must be finite and > 0, got ", power_factor));
    KSHOT_CHECK(sinkhorn_max_iterations >= 1, where,
                detail::cat("sinkhorn_max_iterations must be >= 1, got ", sinkhorn_max_iterations));
    KSHOT_CHECK(std::isfinite(sinkhorn_tolerance) && sinkhorn_tolerance > Scalar(0), where,
                detail::cat("sinkhorn_tolerance must be finite and > 0, got ", sinkhorn_tolerance));
  }

  void power_transform(const ConstRowMatrixRef<Scalar>& x, RowMatrixX<Scalar>& out) const {
    out = x.array().max(Scalar(0)) + Scalar(1e-6);
    if (power_factor == Scalar(0.5)) {
      out = out.array().sqrt();
    } else {
      out = out.array().pow(power_factor);
    }
  }

  // Sinkhorn-Knopp on exp(-lambda * squared distances) to the current prototypes.
  void soft_assignments(RowMatrixX<Scalar>& plan) {
    const Index q = query_.rows();
    plan.resize(q, classes_);
    squared_.compute(query_, prototypes_, plan);
    const Index whole = q / classes_;
    const Scalar column_mass = whole > 0 ? Scalar(whole) : Scalar(q) / Scalar(classes_);

    cost_row_min_ = plan.rowwise().minCoeff();
    plan = (-lambda_regularization * plan).array().exp();
    bool underflow = false;
    for (Index i = 0; i < q; ++i) underflow = underflow || !(plan.row(i).sum() >= std::numeric_limits<Scalar>::min());
    if (underflow) {
      squared_.compute(query_, prototypes_, plan);
      plan.colwise() -= cost_row_min_;
      plan = (-lambda_regularization * plan).array().exp();
    }
    plan /= plan.sum();

    for (Index it = 0; it < sinkhorn_max_iterations; ++it) {
      row_sums_ = plan.rowwise().sum();
      for (Index i = 0; i < q; ++i) plan.row(i) *= Scalar(1) / (row_sums_[i] + Scalar(1e-10));
      column_scale_ = plan.colwise().sum();
      for (Index c = 0; c < classes_; ++c) column_scale_[c] = column_mass / (column_scale_[c] + Scalar(1e-10));
      plan.array().rowwise() *= column_scale_.array();
      if ((row_sums_ - plan.rowwise().sum()).cwiseAbs().maxCoeff() < sinkhorn_tolerance) break;
    }
  }

  Index classes_ = 0;
  RowMatrixX<Scalar> support_, query_, means_, prototypes_, support_sums_, targets_, plan_;
  LabelVector labels_;
  VectorX<Scalar> counts_, mass_, row_sums_, cost_row_min_;
  RowVectorX<Scalar> column_scale_;
  PairwiseDistance<Scalar, SquaredEuclidean> squared_;
};

}  // namespace kshot

#endif  // KSHOT_FEWSHOT_PT_MAP_HPP
