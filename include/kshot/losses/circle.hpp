/**
 * @file kshot/losses/circle.hpp
 * @brief Circle loss (Sun et al. 2020) per anchor row, with its exact gradient: pytorch-metric-learning's
 * CircleLoss.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_LOSSES_CIRCLE_HPP
#define KSHOT_LOSSES_CIRCLE_HPP

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
 * @brief Circle loss: positives and negatives re-weighted by how far each is from its optimum, then one
 * softplus of the two log-sum-exps per row.
 *
 * With a similarity s, P(i) the positives and N(i) the negatives of row i, m the relaxation and γ the scale:
 * @f[ a_{ip} = -\gamma\, [1 + m - s_{ip}]_+ \, (s_{ip} - (1 - m)), \qquad
 *     a_{in} = \gamma\, [s_{in} + m]_+ \, (s_{in} - m), @f]
 * @f[ \ell_i = \mathrm{softplus}\Big( \log \sum_{p \in P(i)} e^{a_{ip}} + \log \sum_{n \in N(i)} e^{a_{in}} \Big) @f]
 * and 0 for a row without a positive or without a negative. The weights [·]_+ are constants for the
 * gradient (pytorch-metric-learning detaches them): d a_ip / d s_ip = −γ [1 + m − s_ip]_+ and
 * d a_in / d s_in = γ [s_in + m]_+. softplus is torch's (linear above 20); the log-sum-exps are stable.
 *
 * Pairs are every ordered pair of the batch (positive when the labels match), or the pairs of a mined
 * tuple written into masks (triplets (a, p, n) give (a, p) and (a, n); duplicates collapse). As in
 * pytorch-metric-learning, a pair mined both as positive and negative takes the negative's a_in, in both
 * log-sum-exps. Reduction (default Reduction::mean_nonzero): over the rows > 0. The loss is 0 when every
 * list of the pair tuple has at most one entry.
 *
 * Defaults follow pytorch-metric-learning: m 0.4, gamma 80, cosine similarity. Only similarities are
 * accepted: an Lp distance throws std::invalid_argument.
 * stats(): terms (rows), active_terms (rows > 0), skipped_anchors (rows without a positive or a negative),
 * degenerate (zero-norm rows).
 *
 * pytorch-metric-learning: `losses.CircleLoss(m=0.4, gamma=80)`. Deliberate differences: the peer accepts
 * CosineSimilarity only, kshot also takes a dot-product similarity (with or without normalisation, any
 * power); gamma must be > 0 (the peer does not check it).
 *
 * @code
 * @inproceedings{sun2020circle,
 *   title = {Circle Loss: A Unified Perspective of Pair Similarity Optimization},
 *   author = {Sun, Yifan and Cheng, Changmao and Zhang, Yuhan and Zhang, Chi and Zheng, Liang and
 *             Wang, Zhongdao and Wei, Yichen},
 *   booktitle = {CVPR}, year = {2020}}
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
class CircleLoss {
  static_assert(std::is_floating_point_v<Scalar>, "kshot::CircleLoss<Scalar>: Scalar must be float or double");

 public:
  Scalar m = Scalar(0.4);                          ///< relaxation margin; finite
  Scalar gamma = Scalar(80);                       ///< scale; > 0, finite
  LossDistance distance = LossDistance::cosine();  ///< a similarity: cosine (default) or dot product
  Reduction reduction = Reduction::loss_default;   ///< default: mean over the rows > 0

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
  static constexpr int kScratchValues = 6;
  static constexpr int kScratchIndices = 2;

  Scalar run(const ConstRowMatrixRef<Scalar>& emb, const ConstLabelRef& labels, const Mined& mined,
             RowMatrixRef<Scalar>* grad) {
    constexpr const char* where = "kshot::CircleLoss::evaluate()";
    detail::check_embeddings(emb, labels, where);
    detail::check_distance(distance, where);
    KSHOT_CHECK(distance.is_inverted(), where,
                detail::cat("distance is ", distance.describe(),
                            " but circle loss needs a similarity (LossDistance::cosine() or dot_product())"));
    detail::check_mined(mined, emb.rows(), where);
    KSHOT_CHECK(std::isfinite(m), where, detail::cat("m is ", m, " but must be finite"));
    KSHOT_CHECK(std::isfinite(gamma) && gamma > Scalar(0), where,
                detail::cat("gamma is ", gamma, " but must be finite and > 0"));
    if (grad != nullptr) detail::check_grad(*grad, emb.rows(), emb.cols(), where, "grad");
    stats_ = LossStats{};
    const Index n = emb.rows();
    if (grad != nullptr) grad->setZero();

    if (detail::pair_rows::pair_tuple_is_trivial(mined, n)) return Scalar(0);
    const detail::ReduceMode mode = detail::resolve_reduction(reduction, detail::ReduceMode::mean_nonzero);
    const bool want_grad = grad != nullptr;
    Scalar coeff = 0;
    if (mined.none()) {
      order_.build(labels);
      if (!order_.any_positive() || !order_.any_negative()) return no_pairs(n);
      dist_.compute_self(distance, emb, stats_, order_.order());
      const Scalar value = detail::finish_part(all_pairs(n, mode, want_grad), mode, Scalar(0), coeff, stats_);
      if (want_grad) order_.finish_gradient(dist_, *grad, coeff);
      return value;
    }
    masks_.build(mined, n);
    if (!masks_.any_positive() || !masks_.any_negative()) return no_pairs(n);
    dist_.compute_self(distance, emb, stats_);
    const Scalar value = detail::finish_part(mined_pairs(n, mode, want_grad), mode, Scalar(0), coeff, stats_);
    if (want_grad) detail::pair_rows::finish_gradient(dist_, *grad, coeff);
    return value;
  }

  /// No row has both a positive and a negative: n zero elements.
  Scalar no_pairs(Index n) {
    stats_.terms = n;
    stats_.skipped_anchors = n;
    return Scalar(0);
  }

  // pytorch-metric-learning's optima and margins: O_p = 1 + m, O_n = −m, Δ_p = 1 − m, Δ_n = m.
  Scalar op() const noexcept { return Scalar(1) + m; }
  Scalar on() const noexcept { return -m; }
  Scalar delta_p() const noexcept { return Scalar(1) - m; }
  Scalar delta_n() const noexcept { return m; }

  /// Every pair the labels give, row by row in label order: P is one block of the row, N the two ranges
  /// around it. The logits, then their exponentials, live in the row's dL/dM buffer (also without grad).
  detail::PartTotals<Scalar> all_pairs(Index n, detail::ReduceMode mode, bool want_grad) {
    auto M = dist_.matrix();
    auto G = dist_.grad(/*zero=*/false);
    const Scalar g = gamma, o_p = op(), o_n = on(), d_p = delta_p(), d_n = delta_n();
    auto row = [&](Index r, detail::pair_rows::RowOutcome<Scalar>& out) {
      const detail::pair_rows::Runs pos = order_.positives(r), neg = order_.negatives(r);
      auto Mr = M.row(r);
      auto Gr = G.row(r);
      if (pos.size() == 0 || neg.size() == 0) {
        out.skipped = 1;
        out.totals.add(Scalar(0));
        if (want_grad) Gr.setZero();
        return;
      }
      pos.each([&](Index b, Index len) {
        auto s = Mr.segment(b, len).array();
        Gr.segment(b, len) = ((-g * (o_p - s).max(Scalar(0))) * (s - d_p)).matrix();
      });
      neg.each([&](Index b, Index len) {
        auto s = Mr.segment(b, len).array();
        Gr.segment(b, len) = ((g * (s - o_n).max(Scalar(0))) * (s - d_n)).matrix();
      });
      // Stable log-sum-exp of each side: the exponentials replace the logits.
      auto lse = [&](const detail::pair_rows::Runs& R, Scalar& rest) {
        const Scalar top = detail::pair_rows::extreme_over(Gr, R, true);
        R.each([&](Index b, Index len) { Gr.segment(b, len) = (Gr.segment(b, len).array() - top).exp().matrix(); });
        rest = detail::pair_rows::rest_over(Gr, R);
        return top + std::log1p(rest);
      };
      Scalar rest_p = 0, rest_n = 0;
      const Scalar lse_p = lse(pos, rest_p);
      const Scalar lse_n = lse(neg, rest_n);
      const Scalar z = lse_p + lse_n;
      const Scalar v = detail::softplus(z);
      out.totals.add(v);
      if (!want_grad) return;
      Gr[r] = Scalar(0);
      if (mode == detail::ReduceMode::mean_nonzero && !(v > Scalar(0))) {
        Gr.setZero();
        return;
      }
      // dℓ/dM = softplus'(z) · softmax · (detached weight).
      const Scalar dz = detail::softplus_grad(z);
      const Scalar cp = dz / (Scalar(1) + rest_p), cn = dz / (Scalar(1) + rest_n);
      pos.each([&](Index b, Index len) {
        Gr.segment(b, len).array() *= (cp * -g) * (o_p - Mr.segment(b, len).array()).max(Scalar(0));
      });
      neg.each([&](Index b, Index len) {
        Gr.segment(b, len).array() *= (cn * g) * (Mr.segment(b, len).array() - o_n).max(Scalar(0));
      });
    };
    return detail::pair_rows::for_each_row(n, double(n) * double(n) * 8, rows_, stats_, row);
  }

  /// A mined tuple: each row's pairs gathered from the masks.
  detail::PartTotals<Scalar> mined_pairs(Index n, detail::ReduceMode mode, bool want_grad) {
    auto M = dist_.matrix();
    auto G = want_grad ? dist_.grad(/*zero=*/false) : M;
    const Scalar g = gamma, o_p = op(), o_n = on(), d_p = delta_p(), d_n = delta_n();
    scratch_.prepare(n, kScratchValues, kScratchIndices);
    auto row = [&](Index i, detail::pair_rows::RowOutcome<Scalar>& out) {
      const int s = scratch_.slot();
      Index* pidx = scratch_.indices(s, 0);
      Index* nidx = scratch_.indices(s, 1);
      Index np = 0, nn = 0;
      masks_.row(i, pidx, np, nidx, nn);
      if (want_grad) G.row(i).setZero();
      if (np == 0 || nn == 0) {
        out.skipped = 1;
        out.totals.add(Scalar(0));
        return;
      }
      // Gathered similarities, detached weights (= d a / d s) and logits a, per side.
      auto sp = detail::pair_rows::array_of(scratch_.values(s, 0), np);
      auto wp = detail::pair_rows::array_of(scratch_.values(s, 1), np);
      auto ap = detail::pair_rows::array_of(scratch_.values(s, 2), np);
      auto sn = detail::pair_rows::array_of(scratch_.values(s, 3), nn);
      auto wn = detail::pair_rows::array_of(scratch_.values(s, 4), nn);
      auto an = detail::pair_rows::array_of(scratch_.values(s, 5), nn);
      for (Index k = 0; k < np; ++k) sp[k] = M(i, pidx[k]);
      for (Index k = 0; k < nn; ++k) sn[k] = M(i, nidx[k]);
      wp = -g * (o_p - sp).max(Scalar(0));
      ap = wp * (sp - d_p);
      wn = g * (sn - o_n).max(Scalar(0));
      an = wn * (sn - d_n);
      // A pair that is also negative holds the negative's logit (the peer writes negatives last).
      for (Index k = 0; k < np; ++k)
        if (masks_.code(i, pidx[k]) & detail::pair_rows::PairMasks::kNegative) {
          const Scalar w = sp[k] - o_n;
          wp[k] = g * (w > Scalar(0) ? w : Scalar(0));
          ap[k] = wp[k] * (sp[k] - d_n);
        }
      Scalar rest_p = 0, rest_n = 0;
      const Scalar mp = detail::pair_rows::exp_shifted(ap.data(), np, ap.data(), rest_p, false);
      const Scalar mn = detail::pair_rows::exp_shifted(an.data(), nn, an.data(), rest_n, false);
      const Scalar z = (mp + std::log1p(rest_p)) + (mn + std::log1p(rest_n));
      const Scalar v = detail::softplus(z);
      out.totals.add(v);
      if (!want_grad || (mode == detail::ReduceMode::mean_nonzero && !(v > Scalar(0)))) return;
      const Scalar dz = detail::softplus_grad(z);
      const Scalar cp = dz / (Scalar(1) + rest_p), cn = dz / (Scalar(1) + rest_n);
      for (Index k = 0; k < np; ++k) G(i, pidx[k]) = cp * ap[k] * wp[k];
      for (Index k = 0; k < nn; ++k) G(i, nidx[k]) += cn * an[k] * wn[k];
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

#endif  // KSHOT_LOSSES_CIRCLE_HPP
