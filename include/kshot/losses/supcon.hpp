/**
 * @file kshot/losses/supcon.hpp
 * @brief Supervised contrastive loss (Khosla et al. 2020) per anchor row, with its exact gradient:
 * pytorch-metric-learning's SupConLoss.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_LOSSES_SUPCON_HPP
#define KSHOT_LOSSES_SUPCON_HPP

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
 * @brief Supervised contrastive loss: each anchor's positives are classified against all of its pairs.
 *
 * With s the similarity (a distance d enters as s = −d), t the temperature, P(i) the positives and N(i)
 * the negatives of row i, one element per row:
 * @f[ \ell_i = -\frac{1}{|P(i)|} \sum_{p \in P(i)} \Big( \frac{s_{ip}}{t}
 *     - \log \sum_{j \in P(i) \cup N(i)} e^{s_{ij}/t} \Big) @f]
 * and 0 for a row without positives. As in pytorch-metric-learning the row's largest s_ij / t (over the
 * whole row, diagonal included) is subtracted first and the log-sum-exp is taken stably, as m + log1p(rest)
 * with m the largest term (so a row far inside the margin keeps the digits of its small loss); where the
 * peer's log(sum) rounds to exactly 0 the 0 is kept, so that mean_nonzero counts the same rows. The gradient
 * is exact: dℓ_i/ds_ij = (softmax over P(i) ∪ N(i) of s_i·/t)_j / t − [j ∈ P(i)] / (|P(i)| t).
 *
 * Pairs are every ordered pair of the batch (positive when the labels match), or the pairs of a mined
 * tuple written into masks (triplets (a, p, n) give (a, p) and (a, n)): duplicates collapse, and a pair
 * mined both as positive and negative is in both sets but once in the log-sum-exp. Reduction (default
 * Reduction::mean_nonzero): over the rows whose element is > 0. The loss is 0 when every list of the pair
 * tuple has at most one entry, or when the batch has no positive or no negative pair at all; a row with
 * positives but no negatives keeps its (positives-only) term.
 *
 * Defaults follow pytorch-metric-learning: temperature 0.1, cosine similarity. Any LossDistance works.
 * stats(): terms (rows), active_terms (rows > 0), skipped_anchors (rows without a positive),
 * degenerate (zero-norm rows).
 *
 * pytorch-metric-learning: `losses.SupConLoss(temperature=0.1)`. Deliberate difference: none in the
 * function; small row losses are more accurate than the peer's log(sum) gives them.
 *
 * @code
 * @inproceedings{khosla2020supcon,
 *   title = {Supervised Contrastive Learning},
 *   author = {Khosla, Prannay and Teterwak, Piotr and Wang, Chen and Sarna, Aaron and Tian, Yonglong and
 *             Isola, Phillip and Maschinot, Aaron and Liu, Ce and Krishnan, Dilip},
 *   booktitle = {NeurIPS}, year = {2020}}
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
class SupConLoss {
  static_assert(std::is_floating_point_v<Scalar>, "kshot::SupConLoss<Scalar>: Scalar must be float or double");

 public:
  Scalar temperature = Scalar(0.1);                ///< t > 0, with t and 1/t finite
  LossDistance distance = LossDistance::cosine();  ///< pytorch-metric-learning's default CosineSimilarity
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
  static constexpr int kScratchValues = 1;
  static constexpr int kScratchIndices = 3;

  Scalar run(const ConstRowMatrixRef<Scalar>& emb, const ConstLabelRef& labels, const Mined& mined,
             RowMatrixRef<Scalar>* grad) {
    constexpr const char* where = "kshot::SupConLoss::evaluate()";
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
    const detail::ReduceMode mode = detail::resolve_reduction(reduction, detail::ReduceMode::mean_nonzero);
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
    masks_.build(mined, n);
    if (!masks_.any_positive() || !masks_.any_negative()) return Scalar(0);
    dist_.compute_self(distance, emb, stats_);
    const Scalar value = detail::finish_part(mined_pairs(n, mode, dz, want_grad), mode, Scalar(0), coeff, stats_);
    if (want_grad) detail::pair_rows::finish_gradient(dist_, *grad, coeff);
    return value;
  }

  /// The row's element from the sum over its positives of (x_p − m) (x the shifted z, m their largest over
  /// P ∪ N) and rest = sum over P ∪ N of exp(x − m) less the largest's 1: the log-sum-exp is m + log1p(rest).
  /// Where 1 + rest rounds to 1 the peer's log(sum) is exactly 0 (and so, for a lone top positive, the row's
  /// element): that 0 is kept so that mean_nonzero counts the same rows.
  static Scalar element(Scalar sum_shifted, Index np, Scalar rest) noexcept {
    const Scalar log_sum = Scalar(1) + rest == Scalar(1) ? Scalar(0) : std::log1p(rest);
    return -((sum_shifted - Scalar(np) * log_sum) / Scalar(np));
  }

  /// Every pair the labels give, row by row in label order: P ∪ N is the row without its diagonal, P one
  /// contiguous block.
  detail::PartTotals<Scalar> all_pairs(Index n, detail::ReduceMode mode, Scalar dz, bool want_grad) {
    auto M = dist_.matrix();
    auto G = dist_.grad(/*zero=*/false);  // the exponentials live here (also without grad)
    const bool up = dz > Scalar(0);       // z grows with M
    auto row = [&](Index r, detail::pair_rows::RowOutcome<Scalar>& out) {
      const detail::pair_rows::Runs pos = order_.positives(r), kept = order_.others(r);
      const Index np = pos.size();
      auto Mr = M.row(r);
      auto Gr = G.row(r);
      if (np == 0) {
        out.skipped = 1;
        out.totals.add(Scalar(0));
        if (want_grad) Gr.setZero();
        return;
      }
      // pytorch-metric-learning's shift by the row's largest z (diagonal included; it cancels in the value),
      // then the log-sum-exp over P ∪ N shifted by their own largest.
      const Scalar row_max = (up ? Mr.maxCoeff() : Mr.minCoeff()) * dz;
      const Scalar top_m = detail::pair_rows::extreme_over(Mr, kept, up);
      auto x = [&](Scalar mv) { return mv * dz - row_max; };
      const Scalar m = x(top_m);
      kept.each([&](Index b, Index len) {
        Gr.segment(b, len) = (((Mr.segment(b, len).array() * dz) - row_max) - m).exp().matrix();
      });
      Gr[r] = Scalar(0);
      const Scalar rest = detail::pair_rows::rest_over(Gr, kept);
      Scalar acc = 0;
      pos.each([&](Index b, Index len) {
        for (Index k = b; k < b + len; ++k) acc += x(Mr[k]) - m;
      });
      const Scalar v = element(acc, np, rest);
      out.totals.add(v);
      if (!want_grad) return;
      if (mode == detail::ReduceMode::mean_nonzero && !(v > Scalar(0))) {
        Gr.setZero();
        return;
      }
      // dℓ/dz_j = softmax_j − [j ∈ P] / |P|.
      Gr *= dz / (Scalar(1) + rest);
      const Scalar wp = dz / Scalar(np);
      pos.each([&](Index b, Index len) { Gr.segment(b, len).array() -= wp; });
    };
    return detail::pair_rows::for_each_row(n, double(n) * double(n) * 8, rows_, stats_, row);
  }

  /// A mined tuple: each row's pairs gathered from the masks.
  detail::PartTotals<Scalar> mined_pairs(Index n, detail::ReduceMode mode, Scalar dz, bool want_grad) {
    auto M = dist_.matrix();
    auto G = want_grad ? dist_.grad(/*zero=*/false) : M;
    const bool up = dz > Scalar(0);
    scratch_.prepare(n, kScratchValues, kScratchIndices);
    auto row = [&](Index i, detail::pair_rows::RowOutcome<Scalar>& out) {
      const int s = scratch_.slot();
      Index* pidx = scratch_.indices(s, 0);
      Index* nidx = scratch_.indices(s, 1);
      Index* kidx = scratch_.indices(s, 2);
      Index np = 0, nn = 0, nk = 0;
      masks_.row(i, pidx, np, nidx, nn, kidx, &nk);
      if (want_grad) G.row(i).setZero();
      if (np == 0) {
        out.skipped = 1;
        out.totals.add(Scalar(0));
        return;
      }
      const Scalar row_max = (up ? M.row(i).maxCoeff() : M.row(i).minCoeff()) * dz;
      auto x = [&](Scalar mv) { return mv * dz - row_max; };
      Scalar* e = scratch_.values(s, 0);
      for (Index k = 0; k < nk; ++k) e[k] = x(M(i, kidx[k]));
      Scalar rest = 0;
      const Scalar m = detail::pair_rows::exp_shifted(e, nk, e, rest, false);
      Scalar acc = 0;
      for (Index k = 0; k < np; ++k) acc += x(M(i, pidx[k])) - m;
      const Scalar v = element(acc, np, rest);
      out.totals.add(v);
      if (!want_grad || (mode == detail::ReduceMode::mean_nonzero && !(v > Scalar(0)))) return;
      const Scalar ws = dz / (Scalar(1) + rest);
      for (Index k = 0; k < nk; ++k) G(i, kidx[k]) = ws * e[k];
      const Scalar wp = dz / Scalar(np);
      for (Index k = 0; k < np; ++k) G(i, pidx[k]) -= wp;
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

#endif  // KSHOT_LOSSES_SUPCON_HPP
