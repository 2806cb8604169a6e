/**
 * @file kshot/losses/npairs.hpp
 * @brief N-pairs loss (Sohn 2016): one (anchor, positive) pair per class, cross-entropy of each anchor
 * against every positive, with its exact gradient: pytorch-metric-learning's NPairsLoss.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_LOSSES_NPAIRS_HPP
#define KSHOT_LOSSES_NPAIRS_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"
#include "kshot/core/workspace.hpp"
#include "kshot/losses/common.hpp"
#include "kshot/losses/detail/distance_matrix.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

namespace kshot {

/**
 * @brief N-pairs loss: each class contributes one (anchor, positive) pair, and each anchor must pick its
 * own positive out of the positives of every class.
 *
 * Pair selection (pytorch-metric-learning's convert_to_pos_pairs_with_unique_labels): from the positive
 * pairs of the batch (every ordered (i, j), i != j, with equal labels, in row-major order) or of the mined
 * tuple (pairs (a1, p); triplets (a, p)), keep for each distinct anchor label, in ascending label order,
 * the first pair in list order with that anchor label. Without a mined tuple that is, per class with at
 * least two rows, anchor = its lowest row index and positive = its second lowest.
 *
 * With k selected pairs (a_t, p_t), the logits are
 * @f$ \ell_{tu} = s(x_{a_t}, x_{p_u}) @f$ for a similarity s, or @f$ \ell_{tu} = -d(x_{a_t}, x_{p_u}) @f$
 * for a distance d (anchors and positives each normalised when the distance asks for it), and the element
 * of anchor t is the cross-entropy with the diagonal as target,
 * @f$ L_t = \log \sum_u e^{\ell_{tu}} - \ell_{tt} @f$ (log-sum-exp, so no overflow).
 * Reduction (default Reduction::mean): mean over the k elements. Rows of the batch that are in no selected
 * pair get zero gradient. Fewer than one pair gives 0.
 *
 * Defaults follow pytorch-metric-learning: DotProductSimilarity on L2-normalised embeddings (the same as
 * cosine similarity), no temperature. stats(): terms (selected pairs), active_terms (elements > 0),
 * skipped_anchors (distinct labels of the batch that got no pair), degenerate (zero-norm rows normalised
 * through the 1e-12 floor, per anchor or positive use).
 *
 * PML equivalent: `losses.NPairsLoss()`. No deliberate difference.
 *
 * @tparam Scalar float or double.
 * @note One object per thread: evaluate() uses the object's workspace. A second call with the same shapes
 * allocates nothing of kshot's own.
 */
template <class Scalar = float>
class NPairsLoss {
  static_assert(std::is_floating_point_v<Scalar>, "kshot::NPairsLoss<Scalar>: Scalar must be float or double");

 public:
  LossDistance distance = LossDistance::dot_product(true);  ///< pytorch-metric-learning's DotProductSimilarity()
  Reduction reduction = Reduction::loss_default;            ///< default: mean over the selected pairs

  /// The loss over the pairs the labels give, or over the mined pairs or triplets.
  Scalar evaluate(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels, Mined mined = {}) {
    return run(emb, labels, mined, nullptr);
  }
  /// The loss, and its gradient with respect to `emb` written to `grad` (n x d, overwritten).
  Scalar evaluate(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels, Mined mined, RowMatrixRef<Scalar> grad) {
    return run(emb, labels, mined, &grad);
  }
  /// The loss over the pairs the labels give, and its gradient.
  Scalar evaluate(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels, RowMatrixRef<Scalar> grad) {
    return run(emb, labels, Mined{}, &grad);
  }

  /// Counts from the last call.
  const LossStats& stats() const noexcept { return stats_; }

  /// The rows (anchor, positive) of the pairs selected by the last call, one per distinct anchor label.
  const std::vector<Index>& anchors() const noexcept { return anchor_; }
  const std::vector<Index>& positives() const noexcept { return positive_; }

  /// Pre-sizes the workspace for n embeddings of dimension d.
  void reserve(Index n, Index d) {
    const Index k = std::max<Index>(n / 2, 1);
    dist_.reserve(k, k, d);
    for (std::size_t s : {kA, kP, kDA, kDP}) ws_.reserve(s, k * d);
    ws_.reserve(kLse, k);
    ws_.reserve(kVal, k);
    ws_.reserve(kCoeff, k);
    order_.reserve(static_cast<std::size_t>(n));
    anchor_.reserve(static_cast<std::size_t>(k));
    positive_.reserve(static_cast<std::size_t>(k));
  }

 private:
  enum : std::size_t { kA = 0, kP, kDA, kDP, kLse, kVal, kCoeff };

  Scalar run(const ConstRowMatrixRef<Scalar>& emb, const ConstLabelRef& labels, const Mined& mined,
             RowMatrixRef<Scalar>* grad) {
    constexpr const char* where = "kshot::NPairsLoss::evaluate()";
    detail::check_embeddings(emb, labels, where);
    detail::check_distance(distance, where);
    detail::check_mined(mined, emb.rows(), where);
    if (grad != nullptr) detail::check_grad(*grad, emb.rows(), emb.cols(), where, "grad");
    stats_ = LossStats{};
    const Index d = emb.cols();
    if (grad != nullptr) grad->setZero();

    select_pairs(labels, mined);
    const Index k = static_cast<Index>(anchor_.size());
    if (k == 0) return Scalar(0);

    auto A = ws_.matrix(kA, k, d);
    auto P = ws_.matrix(kP, k, d);
    for (Index t = 0; t < k; ++t) {
      A.row(t) = emb.row(anchor_[static_cast<std::size_t>(t)]);
      P.row(t) = emb.row(positive_[static_cast<std::size_t>(t)]);
    }
    dist_.compute(distance, A, P, stats_);
    auto S = dist_.matrix();
    // logits = S for a similarity, -S for a distance.
    const Scalar sign = distance.is_inverted() ? Scalar(1) : Scalar(-1);
    auto lse = ws_.vector(kLse, k);
    auto val = ws_.vector(kVal, k);
    auto row_value = [&](Index t) {
      auto logits = S.row(t).array() * sign;
      const Scalar mx = logits.maxCoeff();
      const Scalar l = mx + std::log((logits - mx).exp().sum());
      lse[t] = l;
      // l >= max >= logit(t, t), so the element is never negative.
      val[t] = l - sign * S(t, t);
    };
    detail::parallel_for(k, detail::worth_parallel(k, double(k) * double(k) * 8), row_value);

    const detail::ReduceMode mode = detail::resolve_reduction(reduction, detail::ReduceMode::mean);
    auto coeff = ws_.vector(kCoeff, k);
    const Scalar value = detail::reduce(val.data(), k, mode, Scalar(0), grad != nullptr ? coeff.data() : nullptr,
                                        stats_);
    if (grad == nullptr) return value;

    // dL_t / d logit(t, u) = softmax(t, u) - [t == u]; dlogit/dS = sign.
    auto G = dist_.grad(/*zero=*/false);
    auto row_grad = [&](Index t) {
      const Scalar c = coeff[t];
      if (c == Scalar(0)) {
        G.row(t).setZero();
        return;
      }
      G.row(t) = ((S.row(t).array() * sign - lse[t]).exp()) * (c * sign);
      G(t, t) -= c * sign;
    };
    detail::parallel_for(k, detail::worth_parallel(k, double(k) * double(k) * 8), row_grad);
    auto dA = ws_.matrix(kDA, k, d);
    auto dP = ws_.matrix(kDP, k, d);
    dist_.backward(dA, dP);
    // Scatter in pair order (a row may be the anchor of one pair and the positive of another).
    for (Index t = 0; t < k; ++t) {
      grad->row(anchor_[static_cast<std::size_t>(t)]) += dA.row(t);
      grad->row(positive_[static_cast<std::size_t>(t)]) += dP.row(t);
    }
    return value;
  }

  /// Fills anchor_ and positive_: per distinct anchor label (ascending), the first positive pair in order.
  void select_pairs(const ConstLabelRef& labels, const Mined& mined) {
    anchor_.clear();
    positive_.clear();
    order_.clear();
    const Index n = labels.size();
    for (Index i = 0; i < n; ++i) order_.emplace_back(labels[i], i);
    std::sort(order_.begin(), order_.end());
    Index distinct = 0;
    for (std::size_t t = 0; t < order_.size(); ++t)
      if (t == 0 || order_[t].first != order_[t - 1].first) ++distinct;

    if (mined.none()) {
      // Row-major order: the first pair of a class is (its lowest row, its second lowest row).
      for (std::size_t t = 0; t + 1 < order_.size(); ++t) {
        const bool starts = t == 0 || order_[t].first != order_[t - 1].first;
        if (starts && order_[t + 1].first == order_[t].first) {
          anchor_.push_back(order_[t].second);
          positive_.push_back(order_[t + 1].second);
        }
      }
    } else {
      detail::pairs_from(mined, labels, pairs_);
      order_.clear();
      for (std::size_t t = 0; t < pairs_.a1.size(); ++t) order_.emplace_back(labels[pairs_.a1[t]], Index(t));
      std::sort(order_.begin(), order_.end());
      for (std::size_t t = 0; t < order_.size(); ++t) {
        if (t > 0 && order_[t].first == order_[t - 1].first) continue;
        const auto at = static_cast<std::size_t>(order_[t].second);
        anchor_.push_back(pairs_.a1[at]);
        positive_.push_back(pairs_.p[at]);
      }
    }
    stats_.skipped_anchors = distinct - static_cast<Index>(anchor_.size());
  }

  detail::LossDistanceMatrix<Scalar> dist_;
  detail::Workspace<Scalar> ws_;
  MinedPairs pairs_;
  std::vector<std::pair<Label, Index>> order_;
  std::vector<Index> anchor_, positive_;
  LossStats stats_;
};

}  // namespace kshot

#endif  // KSHOT_LOSSES_NPAIRS_HPP
