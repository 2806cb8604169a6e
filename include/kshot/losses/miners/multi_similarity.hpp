/**
 * @file kshot/losses/miners/multi_similarity.hpp
 * @brief The pair mining step of multi-similarity loss (Wang et al. 2019): pytorch-metric-learning's
 * MultiSimilarityMiner.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_LOSSES_MINERS_MULTI_SIMILARITY_HPP
#define KSHOT_LOSSES_MINERS_MULTI_SIMILARITY_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"
#include "kshot/losses/common.hpp"
#include "kshot/losses/miners/miner_stats.hpp"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

namespace kshot {

/**
 * @brief Positive pairs less similar than the anchor's most similar negative plus epsilon, and negative
 * pairs more similar than its least similar positive minus epsilon: pytorch-metric-learning's
 * miners.MultiSimilarityMiner.
 *
 * With a similarity s (the default, cosine): positives (a, p) with
 * @f$ s_{ap} - \epsilon < \max_{n \in N_a} s_{an} @f$, negatives (a, n) with
 * @f$ s_{an} + \epsilon > \min_{p \in P_a} s_{ap} @f$. With a distance d the roles flip:
 * @f$ d_{ap} + \epsilon > \min_n d_{an} @f$ and @f$ d_{an} - \epsilon < \max_p d_{ap} @f$.
 *
 * As in the peer's sort-based rule, each row's positives are compared in a copy of the row where every
 * other entry (negatives and the diagonal) holds an ignore value (finfo.max for a similarity, finfo.min
 * for a distance), and likewise for negatives with the opposite value; the max / min above are taken over
 * those rows, so an anchor with no negative (positive) gets the ignore value as its threshold and mines
 * nothing on the other side. When the batch has no positive pair or no negative pair at all, nothing is
 * mined.
 *
 * Output (MinedPairs, the peer's 4-tuple): anchors in increasing order; within an anchor its pairs follow
 * the ascending sorted order of the values (ties by lower index: the peer's torch.sort does not specify
 * the order of ties; losses do not depend on it).
 *
 * Defaults (pytorch-metric-learning): epsilon 0.1, CosineSimilarity. No reduction: a miner returns
 * indices. stats(): pos_pairs, neg_pairs, skipped_anchors (rows that mined nothing), degenerate.
 * Deliberate differences: ties within an anchor in lower-index order (documented above); a distance matrix
 * that overflows throws.
 *
 * @tparam Scalar float or double.
 * @note One object per thread. A second call with the same shapes allocates nothing of kshot's own
 * (the output's storage is reused).
 */
template <class Scalar = float>
class MultiSimilarityMiner {
  static_assert(std::is_floating_point_v<Scalar>,
                "kshot::MultiSimilarityMiner<Scalar>: Scalar must be float or double");

 public:
  Scalar epsilon = Scalar(0.1);                   ///< any finite value
  LossDistance distance = LossDistance::cosine();  ///< pytorch-metric-learning's default for this miner

  MultiSimilarityMiner() = default;
  explicit MultiSimilarityMiner(Scalar epsilon_) : epsilon(epsilon_) {}

  /// The mined pairs of the batch.
  MinedPairs mine(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels) {
    MinedPairs out;
    mine(emb, labels, out);
    return out;
  }

  /// The mined pairs written to `out` (overwritten; its storage is reused).
  void mine(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels, MinedPairs& out) {
    constexpr const char* where = "kshot::MultiSimilarityMiner::mine()";
    KSHOT_CHECK(std::isfinite(epsilon), where, detail::cat("epsilon is ", epsilon, " but must be finite"));
    stats_ = MinerStats{};
    dist_.compute(distance, emb, labels, where, stats_);
    out.clear();
    const Index n = emb.rows();
    const auto un = static_cast<std::size_t>(n);
    mat_ = dist_.matrix().data();
    n_ = n;
    inverted_ = distance.is_inverted();
    eps_ = epsilon;
    pos_ignore_ = inverted_ ? detail::finfo_max<Scalar>() : detail::finfo_min<Scalar>();
    neg_ignore_ = inverted_ ? detail::finfo_min<Scalar>() : detail::finfo_max<Scalar>();

    // The peer returns nothing when the batch has no positive pair or no negative pair.
    bool any_pos = false, any_neg = false;
    for (Index i = 0; i < n && !(any_pos && any_neg); ++i)
      for (Index j = 0; j < n; ++j) {
        if (labels[j] != labels[i]) any_neg = true;
        else if (j != i) any_pos = true;
      }
    if (!any_pos || !any_neg) {
      stats_.skipped_anchors = n;
      return;
    }

    // Pass 1 (rows in parallel): each row's extremes and how many pairs it mines.
    rows_.resize(un);
    auto count_row = [&](Index i) {
      RowInfo r;
      const Scalar* row = mat_ + i * n;
      const Label yi = labels[i];
      r.pos_min = r.neg_min = detail::finfo_max<Scalar>();
      r.pos_max = r.neg_max = detail::finfo_min<Scalar>();
      for (Index j = 0; j < n; ++j) {
        const Scalar ps = pos_value(row, j, i, labels[j] == yi), ns = neg_value(row, j, labels[j] != yi);
        r.pos_min = std::min(r.pos_min, ps);
        r.pos_max = std::max(r.pos_max, ps);
        r.neg_min = std::min(r.neg_min, ns);
        r.neg_max = std::max(r.neg_max, ns);
      }
      for (Index j = 0; j < n; ++j) {
        if (pos_selected(r, pos_value(row, j, i, labels[j] == yi))) ++r.pos_count;
        if (neg_selected(r, neg_value(row, j, labels[j] != yi))) ++r.neg_count;
      }
      rows_[static_cast<std::size_t>(i)] = r;
    };
    detail::parallel_for(n, detail::worth_parallel(n, double(n) * double(n) * 6), count_row);
    Index pos_total = 0, neg_total = 0;
    for (RowInfo& r : rows_) {
      r.pos_offset = pos_total;
      r.neg_offset = neg_total;
      pos_total += r.pos_count;
      neg_total += r.neg_count;
      if (r.pos_count == 0 && r.neg_count == 0) ++stats_.skipped_anchors;
    }
    out.a1.resize(static_cast<std::size_t>(pos_total));
    out.p.resize(static_cast<std::size_t>(pos_total));
    out.a2.resize(static_cast<std::size_t>(neg_total));
    out.n.resize(static_cast<std::size_t>(neg_total));

    // Pass 2 (rows in parallel): each row writes its pairs at its offsets, in the peer's sorted order.
    auto fill_row = [&](Index i) {
      const RowInfo& r = rows_[static_cast<std::size_t>(i)];
      const Scalar* row = mat_ + i * n;
      const Label yi = labels[i];
      Index* p = out.p.data() + r.pos_offset;
      Index* q = out.n.data() + r.neg_offset;
      Index wp = 0, wn = 0;
      for (Index j = 0; j < n; ++j) {
        if (pos_selected(r, pos_value(row, j, i, labels[j] == yi))) p[wp++] = j;
        if (neg_selected(r, neg_value(row, j, labels[j] != yi))) q[wn++] = j;
      }
      auto by_pos = [&](Index x, Index y) {
        const Scalar vx = pos_value(row, x, i, labels[x] == yi), vy = pos_value(row, y, i, labels[y] == yi);
        return vx < vy || (vx == vy && x < y);
      };
      auto by_neg = [&](Index x, Index y) {
        const Scalar vx = neg_value(row, x, labels[x] != yi), vy = neg_value(row, y, labels[y] != yi);
        return vx < vy || (vx == vy && x < y);
      };
      std::sort(p, p + wp, by_pos);
      std::sort(q, q + wn, by_neg);
      std::fill(out.a1.data() + r.pos_offset, out.a1.data() + r.pos_offset + wp, i);
      std::fill(out.a2.data() + r.neg_offset, out.a2.data() + r.neg_offset + wn, i);
    };
    detail::parallel_for(n, detail::worth_parallel(n, double(n) * double(n) * 4), fill_row);
    stats_.pos_pairs = pos_total;
    stats_.neg_pairs = neg_total;
  }

  /// Counts of the last call.
  const MinerStats& stats() const noexcept { return stats_; }

  /// Pre-sizes the buffers for n embeddings of dimension d.
  void reserve(Index n, Index d) {
    dist_.reserve(n, d);
    rows_.reserve(static_cast<std::size_t>(n));
  }

 private:
  struct RowInfo {
    Scalar pos_min, pos_max, neg_min, neg_max;  // extremes of the row's positive / negative sorting copies
    Index pos_count = 0, neg_count = 0, pos_offset = 0, neg_offset = 0;
  };

  /// Entry j of row i in the positive sorting copy: the value for a positive pair, the ignore value else.
  Scalar pos_value(const Scalar* row, Index j, Index i, bool same_label) const noexcept {
    return (same_label && j != i) ? row[j] : pos_ignore_;
  }
  /// Entry j of row i in the negative sorting copy.
  Scalar neg_value(const Scalar* row, Index j, bool other_label) const noexcept {
    return other_label ? row[j] : neg_ignore_;
  }
  bool pos_selected(const RowInfo& r, Scalar v) const noexcept {
    return inverted_ ? (v - eps_ < r.neg_max) : (v + eps_ > r.neg_min);
  }
  bool neg_selected(const RowInfo& r, Scalar v) const noexcept {
    return inverted_ ? (v + eps_ > r.pos_min) : (v - eps_ < r.pos_max);
  }

  detail::MinerDistance<Scalar> dist_;
  std::vector<RowInfo> rows_;
  const Scalar* mat_ = nullptr;
  Index n_ = 0;
  bool inverted_ = true;
  Scalar eps_ = Scalar(0.1), pos_ignore_ = 0, neg_ignore_ = 0;
  MinerStats stats_;
};

}  // namespace kshot

#endif  // KSHOT_LOSSES_MINERS_MULTI_SIMILARITY_HPP
