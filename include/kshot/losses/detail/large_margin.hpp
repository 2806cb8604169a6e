/**
 * @file kshot/losses/detail/large_margin.hpp
 * @brief Softmax cross-entropy over a batch-by-class similarity matrix with a modified target logit: the
 * shared machinery of ArcFaceLoss, CosFaceLoss and ProxyNCALoss, and the input checks of every loss that
 * owns one row (or column) of parameters per class.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_LOSSES_DETAIL_LARGE_MARGIN_HPP
#define KSHOT_LOSSES_DETAIL_LARGE_MARGIN_HPP

// IWYU pragma: private

#include "kshot/core/check.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"
#include "kshot/losses/common.hpp"
#include "kshot/losses/detail/distance_matrix.hpp"

#include <cmath>
#include <vector>

namespace kshot {
namespace detail {

/**
 * @brief The checks of a loss with per-class parameters: embeddings and labels (check_embeddings), every
 * label in [0, num_classes), the embedding width equal to the parameter's, finite parameters.
 * @param param_name the member's name as the user sees it ("proxies", "W").
 * @throws std::out_of_range for a label outside [0, num_classes); std::invalid_argument otherwise.
 */
template <class Scalar>
void check_class_inputs(const ConstRowMatrixRef<Scalar>& emb, const ConstLabelRef& labels, Index num_classes,
                        Index embedding_size, const RowMatrixX<Scalar>& param, const char* param_name,
                        const char* where) {
  check_embeddings(emb, labels, where);
  KSHOT_CHECK(
      num_classes > 0 && embedding_size > 0, where,
      cat(param_name, " is ", param.rows(), " x ", param.cols(), " but must have at least one class and one column"));
  KSHOT_CHECK(emb.cols() == embedding_size, where,
              cat("embeddings has ", emb.cols(), " columns but ", param_name, " is ", param.rows(), " x ", param.cols(),
                  " (embedding_size ", embedding_size, ")"));
  for (Index i = 0; i < labels.size(); ++i)
    KSHOT_CHECK_RANGE(
        labels[i] >= 0 && labels[i] < num_classes, where,
        cat("labels[", i, "] = ", labels[i], " is outside [0, ", num_classes, ") (num_classes = ", num_classes, ")"));
  check_finite(param, where, param_name);
}

/**
 * @brief Cross-entropy of each row of z = scale · M against its label, where M = dist(emb, classes) and the
 * target entry M(i, y_i) is first mapped through a target function f: z(i, y_i) = scale · f(M(i, y_i)).
 *
 * loss_i = w_i · (logsumexp_c z(i, c) − z(i, y_i)), reduced over the batch (w: miner weights, all ones
 * without a mined tuple). The row phase runs in parallel with per-row results reduced serially in row
 * order, so value and gradient are bitwise the same for every thread count. A row whose target
 * probability underflows to 0 keeps its finite log-softmax value and is counted in stats.degenerate.
 *
 * The class parameter is held either as rows (C x d: proxies) or as columns (d x C: ArcFace's W); its
 * gradient comes back in the same layout. Buffers are reused: one object per thread.
 */
template <class Scalar>
class LargeMarginSoftmax {
 public:
  struct Setup {
    LossDistance distance;               ///< M = distance(emb, classes)
    Scalar scale = Scalar(1);            ///< logits are scale · M (a sign turns a distance into a logit)
    ReduceMode mode = ReduceMode::mean;  ///< how the per-row losses are reduced
    bool anchor_weights = false;         ///< miner weights count anchors only (pytorch-metric-learning's using_ref)
    bool classes_in_columns = false;     ///< the parameter is d x C (classes in columns) rather than C x d
  };

  /**
   * @brief The reduced loss; with `grad`, dL/d(emb) (n x d) and, with `grad_param`, dL/d(param) in the
   * parameter's layout, both overwritten.
   * @param target callable (Scalar m, Scalar& dfdm, Index& degenerate) -> f(m), thread-safe; it adds to
   * `degenerate` when it clamps or floors.
   */
  template <class Target>
  Scalar run(const Setup& setup, const ConstRowMatrixRef<Scalar>& emb, const ConstLabelRef& labels, const Mined& mined,
             const RowMatrixX<Scalar>& param, RowMatrixRef<Scalar>* grad, RowMatrixRef<Scalar>* grad_param,
             LossStats& stats, const Target& target) {
    const Index n = emb.rows();
    const auto un = static_cast<std::size_t>(n);
    weights_.resize(un);
    miner_weights(mined, n, weights_.data(), counts_, setup.anchor_weights);

    if (setup.classes_in_columns) {
      classes_.resize(param.cols(), param.rows());
      classes_ = param.transpose();
    }
    if (setup.classes_in_columns)
      dist_.compute(setup.distance, emb, classes_, stats);
    else
      dist_.compute(setup.distance, emb, param, stats);
    const Index C = dist_.cols();
    auto M = dist_.matrix();
    auto Z = dist_.grad(/*zero=*/false);  // the logits, their shifted exponentials, then dL/dM in place
    loss_.resize(un);
    inv_sum_.resize(un);
    dtarget_.resize(un);
    degenerate_.resize(un);
    const Scalar scale = setup.scale;

    auto forward_row = [&](Index i) {
      const auto ui = static_cast<std::size_t>(i);
      const Index y = labels[i];
      Scalar dfdm = 0;
      Index deg = 0;
      const Scalar fy = target(M(i, y), dfdm, deg);
      Z.row(i) = scale * M.row(i);
      const Scalar zy = scale * fy;
      Z(i, y) = zy;
      const Scalar top = Z.row(i).maxCoeff();
      // Z keeps exp(z - top) for the backward pass: softmax = Z / sum, without a second exp.
      Z.row(i) = (Z.row(i).array() - top).exp();
      const Scalar sum = Z.row(i).sum();  // >= 1: the largest logit contributes exp(0)
      const Scalar log_p = zy - (top + std::log(sum));
      if (std::exp(log_p) == Scalar(0)) ++deg;  // the peer's softmax would give log(0) here
      loss_[ui] = -log_p * weights_[ui];
      inv_sum_[ui] = Scalar(1) / sum;
      dtarget_[ui] = dfdm;
      degenerate_[ui] = deg;
    };
    parallel_for(n, worth_parallel(n, double(n) * double(C) * 16), forward_row);

    PartTotals<Scalar> totals;
    for (std::size_t i = 0; i < un; ++i) {
      totals.add(loss_[i]);
      stats.degenerate += degenerate_[i];
    }
    Scalar coeff = 0;
    const Scalar value = finish_part(totals, setup.mode, Scalar(0), coeff, stats);
    if (grad == nullptr) return value;

    // dL/dz(i, c) = a_i (softmax(i, c) - [c = y_i]) with a_i = coeff · w_i; dL/dM = scale · dL/dz, times
    // f'(M(i, y_i)) at the target.
    auto backward_row = [&](Index i) {
      const auto ui = static_cast<std::size_t>(i);
      const Scalar a = element_coeff(loss_[ui], coeff, setup.mode) * weights_[ui] * scale;
      if (a == Scalar(0)) {
        Z.row(i).setZero();
        return;
      }
      const Index y = labels[i];
      Z.row(i) *= a * inv_sum_[ui];
      Z(i, y) = (Z(i, y) - a) * dtarget_[ui];
    };
    parallel_for(n, worth_parallel(n, double(n) * double(C) * 16), backward_row);

    if (grad_param == nullptr) {
      dist_.backward(*grad, RowMatrixRef<Scalar>(empty_));
    } else if (setup.classes_in_columns) {
      dclasses_.resize(C, emb.cols());
      dist_.backward(*grad, RowMatrixRef<Scalar>(dclasses_));
      *grad_param = dclasses_.transpose();
    } else {
      dist_.backward(*grad, *grad_param);
    }
    return value;
  }

  /// Pre-sizes the buffers for n embeddings of dimension d against C classes.
  void reserve(Index n, Index d, Index C) {
    dist_.reserve(n, C, d);
    const auto un = static_cast<std::size_t>(n);
    weights_.reserve(un);
    counts_.reserve(un);
    loss_.reserve(un);
    inv_sum_.reserve(un);
    dtarget_.reserve(un);
    degenerate_.reserve(un);
  }

 private:
  LossDistanceMatrix<Scalar> dist_;
  RowMatrixX<Scalar> classes_, dclasses_, empty_;
  std::vector<Scalar> weights_, loss_, inv_sum_, dtarget_;
  std::vector<Index> counts_, degenerate_;
};

}  // namespace detail
}  // namespace kshot

#endif  // KSHOT_LOSSES_DETAIL_LARGE_MARGIN_HPP
