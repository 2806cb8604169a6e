/**
 * @file kshot/losses/ntxent.hpp
 * @brief NT-Xent (normalised temperature-scaled cross entropy, the SimCLR / InfoNCE loss) over positive
 * pairs, with its exact gradient: pytorch-metric-learning's NTXentLoss.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_LOSSES_NTXENT_HPP
#define KSHOT_LOSSES_NTXENT_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"
#include "kshot/losses/common.hpp"
#include "kshot/losses/detail/distance_matrix.hpp"
#include "kshot/losses/detail/pair_masks.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

namespace kshot {

/**
 * @brief NT-Xent loss: each positive pair is a softmax classification of its positive against the
 * anchor's negatives.
 *
 * With s the similarity (a distance d enters as s = −d) and t the temperature, one element per positive
 * pair (a, p):
 * @f[ \ell_{ap} = -\log\Big( \frac{e^{s_{ap}/t}}{e^{s_{ap}/t} + \sum_{(a, n) \in N} e^{s_{an}/t}}
 *     + \mathrm{tiny} \Big) @f]
 * where the sum runs over the negative pairs whose anchor is a (the anchor's other positives are not in the
 * denominator) and tiny is the smallest normal Scalar. It is computed with the largest exponent subtracted,
 * as pytorch-metric-learning does, and where tiny has no effect on the sum, as log1p(·) or a difference of
 * logs instead of log(ratio): the same function without the cancellation of log(q) at q ≈ 1 (pairs already
 * far inside the margin get their small loss and gradient to full precision). Where the ratio is so small
 * (below about 1e-292 in double, 1e-31 in float) that tiny matters, the literal form is used: the value
 * saturates at −log(tiny) and the gradient vanishes, as in pytorch-metric-learning; such pairs are counted
 * in stats().degenerate.
 *
 * Pairs are every ordered pair of the batch (positive when the labels match), or the pairs of a mined
 * tuple (triplets (a, p, n) give (a, p) and (a, n)); duplicate mined pairs count as often as they appear,
 * in the elements and in the denominators. Reduction (default Reduction::mean): over the positive pairs.
 * The loss is 0 when every list of the pair tuple has at most one entry, or when there is no positive or no
 * negative pair; a positive pair whose anchor has no negative pair is an element of value 0.
 *
 * Defaults follow pytorch-metric-learning: temperature 0.07, cosine similarity. Any LossDistance works.
 * stats(): terms (positive pairs), active_terms (pairs > 0), skipped_anchors (rows that are not the anchor
 * of both a positive and a negative pair), degenerate (zero-norm rows, ratios at the tiny floor).
 *
 * pytorch-metric-learning: `losses.NTXentLoss(temperature=0.07)`. Deliberate difference: none in the
 * function; its value near q = 1 is more accurate than the peer's log(q + tiny) (which loses the digits of
 * a loss below about 1e-8 in double).
 *
 * @code
 * @inproceedings{chen2020simclr,
 *   title = {A Simple Framework for Contrastive Learning of Visual Representations},
 *   author = {Chen, Ting and Kornblith, Simon and Norouzi, Mohammad and Hinton, Geoffrey},
 *   booktitle = {ICML}, year = {2020}}
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
class NTXentLoss {
  static_assert(std::is_floating_point_v<Scalar>, "kshot::NTXentLoss<Scalar>: Scalar must be float or double");

 public:
  Scalar temperature = Scalar(0.07);               ///< t > 0, with t and 1/t finite
  LossDistance distance = LossDistance::cosine();  ///< pytorch-metric-learning's default CosineSimilarity
  Reduction reduction = Reduction::loss_default;   ///< default: mean over the positive pairs

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
  }

 private:
  Scalar run(const ConstRowMatrixRef<Scalar>& emb, const ConstLabelRef& labels, const Mined& mined,
             RowMatrixRef<Scalar>* grad) {
    constexpr const char* where = "kshot::NTXentLoss::evaluate()";
    detail::check_embeddings(emb, labels, where);
    detail::check_distance(distance, where);
    detail::check_mined(mined, emb.rows(), where);
    KSHOT_CHECK(
        std::isfinite(temperature) && temperature > Scalar(0) && std::isfinite(Scalar(1) / temperature), where,
        detail::cat("temperature is ", temperature, " but must be finite and > 0, with 1 / temperature finite"));
    if (grad != nullptr) detail::check_grad(*grad, emb.rows(), emb.cols(), where, "grad");
    stats_ = LossStats{};
    const Index n = emb.rows();
    if (grad != nullptr) grad->setZero();

    if (detail::pair_rows::pair_tuple_is_trivial(mined, n)) return Scalar(0);
    const detail::ReduceMode mode = detail::resolve_reduction(reduction, detail::ReduceMode::mean);
    // s = M for a similarity, −M for a distance; z = s / t = dz M.
    const Scalar dz = (distance.is_inverted() ? Scalar(1) : Scalar(-1)) / temperature;
    const bool want_grad = grad != nullptr;
    Scalar coeff = 0;
    if (mined.none()) {
      order_.build(labels);
      if (!order_.any_positive() || !order_.any_negative()) return Scalar(0);
      dist_.compute_self(distance, emb, stats_, order_.order());
      const Scalar value = detail::finish_part(all_pairs(n, mode, dz, want_grad), mode, Scalar(0), coeff, stats_);
      if (want_grad) order_.finish_gradient(dist_, *grad, coeff);
      return value;
    }
    detail::pairs_from(mined, labels, pairs_);
    if (pairs_.a1.empty() || pairs_.a2.empty()) return Scalar(0);
    dist_.compute_self(distance, emb, stats_);
    const Scalar value = detail::finish_part(mined_pairs(n, mode, dz, want_grad), mode, Scalar(0), coeff, stats_);
    if (want_grad) detail::pair_rows::finish_gradient(dist_, *grad, coeff);
    return value;
  }

  /// One positive pair's element and its derivatives.
  struct PairTerm {
    Scalar value;   ///< −log(q + tiny)
    Scalar dpos;    ///< d value / d z_p
    Scalar dneg;    ///< d value / d z_n = dneg · exp(z_n − MN) / SN
    Index floored;  ///< 1 when q is so small that tiny changes q + tiny (the literal form is used)
  };

  /**
   * @brief The element of a positive pair with z_p = s_ap / t, against negatives with largest z MN and
   * SN = sum exp(z_n − MN).
   *
   * With m = max(z_p, MN) (pytorch-metric-learning's max subtraction), num = exp(z_p − m) and
   * rest = SN exp(MN − m): q = num / (num + rest) and the element is −log(q + tiny). Where tiny does not
   * change q + tiny (every q above about 1e-292 in double) the same value is computed without the
   * cancellation of log(q) near q = 1: log1p(rest) when num = 1, log(num + rest) + (m − z_p) otherwise;
   * where q rounds to 1 the element is exactly 0, as the peer's (so that mean_nonzero counts the same).
   * d/dz_p = −f (1 − q) and d/dz_n = f exp(z_n − m) / (num + rest), with f = q / (q + tiny) and
   * 1 − q = rest / (num + rest).
   */
  static PairTerm term(Scalar zp, Scalar mn, Scalar sn) noexcept {
    const Scalar tiny = detail::tiny<Scalar>();
    const Scalar m = zp > mn ? zp : mn;
    const Scalar num = std::exp(zp - m);
    const Scalar rest = sn * std::exp(mn - m);
    const Scalar den = num + rest;
    const Scalar q = num / den;
    const Scalar r = rest / den;
    PairTerm out{};
    if (q + tiny == q) {
      // q rounds to 1 exactly where the peer's element is exactly 0 (and left out by mean_nonzero).
      out.value = q == Scalar(1) ? Scalar(0) : (zp >= mn ? std::log1p(rest) : std::log(den) + (m - zp));
      out.dpos = -r;
      out.dneg = r;
    } else {
      out.value = -std::log(q + tiny);
      const Scalar f = q / (q + tiny);
      out.dpos = -f * r;
      out.dneg = f * r;
      out.floored = 1;
    }
    return out;
  }

  /// Every ordered pair, row by row in label order: the negatives are two contiguous ranges of the row.
  detail::PartTotals<Scalar> all_pairs(Index n, detail::ReduceMode mode, Scalar dz, bool want_grad) {
    auto M = dist_.matrix();
    auto G = dist_.grad(/*zero=*/false);  // the exponentials of the negatives live here (also without grad)
    const bool up = dz > Scalar(0);       // z grows with M
    auto row = [&](Index r, detail::pair_rows::RowOutcome<Scalar>& out) {
      const detail::pair_rows::Runs pos = order_.positives(r), neg = order_.negatives(r);
      const Index np = pos.size(), nn = neg.size();
      auto Mr = M.row(r);
      auto Gr = G.row(r);
      if (np == 0 || nn == 0) {
        out.skipped = 1;
        // A positive pair without negatives: exp(z)/exp(z) = 1, element −log(1 + tiny) = 0.
        for (Index k = 0; k < np; ++k) out.totals.add(Scalar(0));
        if (want_grad) Gr.setZero();
        return;
      }
      // Negatives: MN = max z, e_n = exp(z_n − MN), SN = sum e_n.
      const Scalar mn = detail::pair_rows::extreme_over(Mr, neg, up) * dz;
      Scalar sn = 0;
      neg.each([&](Index b, Index len) {
        Gr.segment(b, len) = ((Mr.segment(b, len).array() * dz) - mn).exp().matrix();
        sn += Gr.segment(b, len).sum();
      });
      // Positives, one element each.
      Scalar neg_coeff = 0;
      pos.each([&](Index b, Index len) {
        for (Index k = b; k < b + len; ++k) {
          const PairTerm e = term(Mr[k] * dz, mn, sn);
          out.totals.add(e.value);
          out.degenerate += e.floored;
          Scalar g = 0;
          if (want_grad && !(mode == detail::ReduceMode::mean_nonzero && !(e.value > Scalar(0)))) {
            g = e.dpos * dz;
            neg_coeff += e.dneg;
          }
          Gr[k] = g;
        }
      });
      if (!want_grad) return;
      Gr[r] = Scalar(0);
      const Scalar c = neg_coeff / sn * dz;
      neg.each([&](Index b, Index len) { Gr.segment(b, len) *= c; });
    };
    return detail::pair_rows::for_each_row(n, double(n) * double(n) * 8, rows_, stats_, row);
  }

  /// A mined tuple: per-anchor maxima and sums over the negative pairs, then one pass over the positives.
  detail::PartTotals<Scalar> mined_pairs(Index n, detail::ReduceMode mode, Scalar dz, bool want_grad) {
    auto M = dist_.matrix();
    auto G = want_grad ? dist_.grad(/*zero=*/true) : M;
    const auto un = static_cast<std::size_t>(n);
    amax_.assign(un, std::numeric_limits<Scalar>::lowest());
    asum_.assign(un, Scalar(0));
    acoef_.assign(un, Scalar(0));
    npos_.assign(un, 0);
    nneg_.assign(un, 0);
    const std::size_t P = pairs_.a1.size(), N = pairs_.a2.size();
    for (std::size_t k = 0; k < N; ++k) {
      const auto a = static_cast<std::size_t>(pairs_.a2[k]);
      amax_[a] = std::max(amax_[a], M(pairs_.a2[k], pairs_.n[k]) * dz);
      ++nneg_[a];
    }
    for (std::size_t k = 0; k < N; ++k) {
      const auto a = static_cast<std::size_t>(pairs_.a2[k]);
      asum_[a] += std::exp(M(pairs_.a2[k], pairs_.n[k]) * dz - amax_[a]);
    }
    detail::PartTotals<Scalar> totals;
    for (std::size_t k = 0; k < P; ++k) {
      const Index i = pairs_.a1[k], j = pairs_.p[k];
      const auto a = static_cast<std::size_t>(i);
      ++npos_[a];
      if (nneg_[a] == 0) {
        totals.add(Scalar(0));
        continue;
      }
      const PairTerm e_k = term(M(i, j) * dz, amax_[a], asum_[a]);
      totals.add(e_k.value);
      stats_.degenerate += e_k.floored;
      if (!want_grad || (mode == detail::ReduceMode::mean_nonzero && !(e_k.value > Scalar(0)))) continue;
      G(i, j) += e_k.dpos * dz;
      acoef_[a] += e_k.dneg / asum_[a];
    }
    for (std::size_t a = 0; a < un; ++a)
      if (npos_[a] == 0 || nneg_[a] == 0) ++stats_.skipped_anchors;
    if (want_grad) {
      for (std::size_t k = 0; k < N; ++k) {
        const Index i = pairs_.a2[k], j = pairs_.n[k];
        const auto a = static_cast<std::size_t>(i);
        if (acoef_[a] == Scalar(0)) continue;
        G(i, j) += acoef_[a] * dz * std::exp(M(i, j) * dz - amax_[a]);
      }
    }
    return totals;
  }

  detail::LossDistanceMatrix<Scalar> dist_;
  detail::pair_rows::LabelOrder<Scalar> order_;
  std::vector<detail::pair_rows::RowOutcome<Scalar>> rows_;
  MinedPairs pairs_;
  std::vector<Scalar> amax_, asum_, acoef_;
  std::vector<Index> npos_, nneg_;
  LossStats stats_;
};

}  // namespace kshot

#endif  // KSHOT_LOSSES_NTXENT_HPP
