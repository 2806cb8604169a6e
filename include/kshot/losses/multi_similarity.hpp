/**
 * @file kshot/losses/multi_similarity.hpp
 * @brief Multi-similarity loss (Wang et al. 2019) per anchor row, with its exact gradient:
 * pytorch-metric-learning's MultiSimilarityLoss.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_LOSSES_MULTI_SIMILARITY_HPP
#define KSHOT_LOSSES_MULTI_SIMILARITY_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"
#include "kshot/losses/common.hpp"
#include "kshot/losses/detail/distance_matrix.hpp"
#include "kshot/losses/detail/pair_masks.hpp"

#include <cmath>
#include <type_traits>
#include <vector>

namespace kshot {

/**
 * @brief Multi-similarity loss: a soft penalty on every positive below `base` and every negative above it.
 *
 * With a similarity s, P(i) the positives and N(i) the negatives of row i, one element per row:
 * @f[ \ell_i = \frac{1}{\alpha} \log\Big(1 + \sum_{p \in P(i)} e^{-\alpha (s_{ip} - b)}\Big)
 *     + \frac{1}{\beta} \log\Big(1 + \sum_{n \in N(i)} e^{\beta (s_{in} - b)}\Big) @f]
 * with b = `base`; a part with no pairs is 0. With a distance d the signs flip, as
 * pytorch-metric-learning's `distance.margin` does: exponents α (d_ip − b) and β (b − d_in). Each
 * log(1 + sum exp) is a stable log-sum-exp with an added 0 entry, as m + log1p(rest) with m the largest
 * term (so a small part keeps its digits); where the peer's log(1 + sum) rounds to exactly 0 the 0 is kept,
 * so that mean_nonzero counts the same rows. The gradient is exact.
 *
 * Pairs are every ordered pair of the batch (positive when the labels match), or the pairs of a mined
 * tuple written into masks (triplets (a, p, n) give (a, p) and (a, n); duplicates collapse). Reduction
 * (default Reduction::mean): over ALL rows, those without pairs included (they contribute 0). The loss is 0
 * when every list of the pair tuple has at most one entry.
 *
 * Defaults follow pytorch-metric-learning: alpha 2, beta 50, base 0.5, cosine similarity. Any LossDistance
 * works. stats(): terms (rows), active_terms (rows > 0), skipped_anchors (rows with no pair at all),
 * degenerate (zero-norm rows).
 *
 * pytorch-metric-learning: `losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5)`. Deliberate
 * differences: alpha and beta must be > 0 (the peer does not check them); small parts are more accurate
 * than the peer's log(1 + sum) gives them.
 *
 * @code
 * @inproceedings{wang2019multisimilarity,
 *   title = {Multi-Similarity Loss With General Pair Weighting for Deep Metric Learning},
 *   author = {Wang, Xun and Han, Xintong and Huang, Weilin and Dong, Dengke and Scott, Matthew R.},
 *   booktitle = {CVPR}, year = {2019}}
 * @endcode
 *
 * @tparam Scalar float or double.
 * @note Without a mined tuple the rows are taken in label order (a sorted copy when they are not sorted), so
 * that each row's pairs are contiguous segments of the matrix; the result does not depend on the order of
 * the rows beyond rounding.
 * @note One object per thread: evaluate() uses the object's workspace. Nothing allocates on a second call
 * with the same shapes (apart from Eigen's GEMM packing buffers for large or threaded products).
 */
template <class Scalar = float>
class MultiSimilarityLoss {
  static_assert(std::is_floating_point_v<Scalar>, "kshot::MultiSimilarityLoss<Scalar>: Scalar must be float or double");

 public:
  Scalar alpha = Scalar(2);                        ///< weight of the positive part's exponent; > 0, finite
  Scalar beta = Scalar(50);                        ///< weight of the negative part's exponent; > 0, finite
  Scalar base = Scalar(0.5);                       ///< the shift b of both exponents; finite
  LossDistance distance = LossDistance::cosine();  ///< pytorch-metric-learning's default CosineSimilarity
  Reduction reduction = Reduction::loss_default;   ///< default: mean over all rows

  /// The loss over every pair the labels give, or over the mined pairs or triplets.
  Scalar evaluate(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels, Mined mined = {}) {
    return run(emb, labels, mined, nullptr);
  }
  /// The loss, and its gradient with respect to `emb` written to `grad` (n x d, overwritten).
  Scalar evaluate(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels, Mined mined, RowMatrixRef<Scalar> grad) {
    return run(emb, labels, mined, &grad);
  }
  /// The loss over every pair the labels give, and its gradient.
  Scalar evaluate(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels, RowMatrixRef<Scalar> grad) {
    return run(emb, labels, Mined{}, &grad);
  }

  /// Counts from the last call.
  const LossStats& stats() const noexcept { return stats_; }

  /// Pre-sizes the workspace for n embeddings of dimension d.
  void reserve(Index n, Index d) {
    dist_.reserve(n, n, d);
    order_.reserve(n, d);
    rows_.reserve(static_cast<std::size_t>(n));
    scratch_.prepare(n, kScratchValues, kScratchIndices);
  }

 private:
  // Per-thread gathered rows of the mined path: values and indices.
  static constexpr int kScratchValues = 2;
  static constexpr int kScratchIndices = 2;

  /// (1/scale) log(1 + sum exp) from exp_shifted's m and rest: log1p where the added 0 is the largest
  /// entry, and exactly 0 where 1 + rest rounds to 1 (the peer's value, so mean_nonzero counts the same).
  static Scalar part(Scalar m, Scalar rest, Scalar scale) noexcept {
    if (m == Scalar(0) && Scalar(1) + rest == Scalar(1)) return Scalar(0);
    return (Scalar(1) / scale) * (m + std::log1p(rest));
  }

  Scalar run(const ConstRowMatrixRef<Scalar>& emb, const ConstLabelRef& labels, const Mined& mined,
             RowMatrixRef<Scalar>* grad) {
    constexpr const char* where = "kshot::MultiSimilarityLoss::evaluate()";
    detail::check_embeddings(emb, labels, where);
    detail::check_distance(distance, where);
    detail::check_mined(mined, emb.rows(), where);
    KSHOT_CHECK(std::isfinite(alpha) && alpha > Scalar(0), where,
                detail::cat("alpha is ", alpha, " but must be finite and > 0"));
    KSHOT_CHECK(std::isfinite(beta) && beta > Scalar(0), where,
                detail::cat("beta is ", beta, " but must be finite and > 0"));
    KSHOT_CHECK(std::isfinite(base), where, detail::cat("base is ", base, " but must be finite"));
    if (grad != nullptr) detail::check_grad(*grad, emb.rows(), emb.cols(), where, "grad");
    stats_ = LossStats{};
    const Index n = emb.rows();
    if (grad != nullptr) grad->setZero();

    if (detail::pair_rows::pair_tuple_is_trivial(mined, n)) return Scalar(0);
    const detail::ReduceMode mode = detail::resolve_reduction(reduction, detail::ReduceMode::mean);
    const bool want_grad = grad != nullptr;
    Scalar coeff = 0;
    if (mined.none()) {
      order_.build(labels);
      dist_.compute_self(distance, emb, stats_, order_.order());
      const Scalar value = detail::finish_part(all_pairs(n, mode, want_grad), mode, Scalar(0), coeff, stats_);
      if (want_grad) order_.finish_gradient(dist_, *grad, coeff);
      return value;
    }
    masks_.build(mined, n);
    dist_.compute_self(distance, emb, stats_);
    const Scalar value = detail::finish_part(mined_pairs(n, mode, want_grad), mode, Scalar(0), coeff, stats_);
    if (want_grad) detail::pair_rows::finish_gradient(dist_, *grad, coeff);
    return value;
  }

  /// Every pair the labels give, row by row in label order: P is one block of the row, N the two ranges
  /// around it. The exponentials of both live in the row's dL/dM buffer (also without grad).
  detail::PartTotals<Scalar> all_pairs(Index n, detail::ReduceMode mode, bool want_grad) {
    auto M = dist_.matrix();
    auto G = dist_.grad(/*zero=*/false);
    // The positive exponent alpha * margin(M, base) is alpha (base − M) for a similarity (`flip`), and
    // alpha (M − base) for a distance; the negative one beta * margin(base, M) the other way round.
    const bool inverted = distance.is_inverted();
    const Scalar pos_dir = inverted ? Scalar(-1) : Scalar(1);  // d margin(M, base) / dM
    auto row = [&](Index r, detail::pair_rows::RowOutcome<Scalar>& out) {
      const detail::pair_rows::Runs pos = order_.positives(r), neg = order_.negatives(r);
      auto Mr = M.row(r);
      auto Gr = G.row(r);
      if (pos.size() == 0 && neg.size() == 0) out.skipped = 1;
      // (1/scale) log(1 + sum over R of exp(scale (±(M − base)))); its exponentials land in Gr over R.
      auto side = [&](const detail::pair_rows::Runs& R, Scalar scale, bool flip, Scalar& sum) {
        sum = Scalar(1);
        if (R.size() == 0) return Scalar(0);
        const Scalar top_m = detail::pair_rows::extreme_over(Mr, R, /*largest=*/!flip);
        const Scalar top = flip ? scale * (base - top_m) : scale * (top_m - base);
        const bool zero_on_top = top < Scalar(0);
        const Scalar m = zero_on_top ? Scalar(0) : top;
        R.each([&](Index b, Index len) {
          if (flip)
            Gr.segment(b, len) = ((scale * (base - Mr.segment(b, len).array())) - m).exp().matrix();
          else
            Gr.segment(b, len) = ((scale * (Mr.segment(b, len).array() - base)) - m).exp().matrix();
        });
        // The added entry 0 has exp(0 − m); when it is the largest, every exponential is in rest.
        const Scalar rest =
            zero_on_top ? detail::pair_rows::sum_over(Gr, R) : detail::pair_rows::rest_over(Gr, R) + std::exp(-m);
        sum = Scalar(1) + rest;
        return part(m, rest, scale);
      };
      Scalar pos_sum = 1, neg_sum = 1;
      const Scalar pos_loss = side(pos, alpha, inverted, pos_sum);
      const Scalar neg_loss = side(neg, beta, !inverted, neg_sum);
      const Scalar v = pos_loss + neg_loss;
      out.totals.add(v);
      if (!want_grad) return;
      Gr[r] = Scalar(0);
      if (mode == detail::ReduceMode::mean_nonzero && !(v > Scalar(0))) {
        Gr.setZero();
        return;
      }
      // d/dM of (1/alpha) log(1 + sum exp(alpha margin)) = softmax weight × d margin / dM.
      const Scalar wp = pos_dir / pos_sum, wn = -pos_dir / neg_sum;
      pos.each([&](Index b, Index len) { Gr.segment(b, len) *= wp; });
      neg.each([&](Index b, Index len) { Gr.segment(b, len) *= wn; });
    };
    return detail::pair_rows::for_each_row(n, double(n) * double(n) * 8, rows_, stats_, row);
  }

  /// A mined tuple: each row's pairs gathered from the masks.
  detail::PartTotals<Scalar> mined_pairs(Index n, detail::ReduceMode mode, bool want_grad) {
    auto M = dist_.matrix();
    auto G = want_grad ? dist_.grad(/*zero=*/false) : M;
    const Scalar pos_dir = distance.is_inverted() ? Scalar(-1) : Scalar(1);
    scratch_.prepare(n, kScratchValues, kScratchIndices);
    auto row = [&](Index i, detail::pair_rows::RowOutcome<Scalar>& out) {
      const int s = scratch_.slot();
      Index* pidx = scratch_.indices(s, 0);
      Index* nidx = scratch_.indices(s, 1);
      Index np = 0, nn = 0;
      masks_.row(i, pidx, np, nidx, nn);
      if (want_grad) G.row(i).setZero();
      if (np == 0 && nn == 0) out.skipped = 1;
      Scalar* ep = scratch_.values(s, 0);
      Scalar* en = scratch_.values(s, 1);
      Scalar pos_loss = 0, neg_loss = 0, pos_sum = 1, neg_sum = 1;
      if (np > 0) {
        for (Index k = 0; k < np; ++k) ep[k] = alpha * distance.margin(M(i, pidx[k]), base);
        Scalar rest = 0;
        const Scalar m = detail::pair_rows::exp_shifted(ep, np, ep, rest, /*add_one=*/true);
        pos_loss = part(m, rest, alpha);
        pos_sum = Scalar(1) + rest;
      }
      if (nn > 0) {
        for (Index k = 0; k < nn; ++k) en[k] = beta * distance.margin(base, M(i, nidx[k]));
        Scalar rest = 0;
        const Scalar m = detail::pair_rows::exp_shifted(en, nn, en, rest, /*add_one=*/true);
        neg_loss = part(m, rest, beta);
        neg_sum = Scalar(1) + rest;
      }
      const Scalar v = pos_loss + neg_loss;
      out.totals.add(v);
      if (!want_grad || (mode == detail::ReduceMode::mean_nonzero && !(v > Scalar(0)))) return;
      const Scalar wp = pos_dir / pos_sum;
      for (Index k = 0; k < np; ++k) G(i, pidx[k]) = wp * ep[k];
      const Scalar wn = -pos_dir / neg_sum;
      for (Index k = 0; k < nn; ++k) G(i, nidx[k]) += wn * en[k];
    };
    return detail::pair_rows::for_each_row(n, double(n) * double(n) * 16, rows_, stats_, row);
  }

  detail::LossDistanceMatrix<Scalar> dist_;
  detail::pair_rows::LabelOrder<Scalar> order_;
  detail::pair_rows::PairMasks masks_;
  detail::pair_rows::RowScratch<Scalar> scratch_;
  std::vector<detail::pair_rows::RowOutcome<Scalar>> rows_;
  LossStats stats_;
};

}  // namespace kshot

#endif  // KSHOT_LOSSES_MULTI_SIMILARITY_HPP
