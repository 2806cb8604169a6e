/**
 * @file kshot/losses/miners/pair_margin.hpp
 * @brief Pairs on the wrong side of a margin (pytorch-metric-learning's PairMarginMiner).
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_LOSSES_MINERS_PAIR_MARGIN_HPP
#define KSHOT_LOSSES_MINERS_PAIR_MARGIN_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"
#include "kshot/losses/common.hpp"
#include "kshot/losses/miners/miner_stats.hpp"

#include <cmath>
#include <type_traits>
#include <vector>

namespace kshot {

/**
 * @brief Positive pairs farther than `pos_margin` and negative pairs closer than `neg_margin`:
 * pytorch-metric-learning's miners.PairMarginMiner.
 *
 * With a distance d: positives (a, p) with @f$ d_{ap} > \text{pos\_margin} @f$, negatives (a, n) with
 * @f$ d_{an} < \text{neg\_margin} @f$. With a similarity s: @f$ s_{ap} < \text{pos\_margin} @f$ and
 * @f$ s_{an} > \text{neg\_margin} @f$. Pairs are ordered (each unordered pair can appear twice), a != p.
 *
 * Output (MinedPairs, the peer's 4-tuple): the kept pairs of each side in row-major order.
 *
 * Defaults (pytorch-metric-learning): pos_margin 0.2, neg_margin 0.8, Euclidean distance on
 * L2-normalised rows. No reduction: a miner returns indices. stats(): pos_pairs, neg_pairs, degenerate,
 * and the peer's pos_pair_dist / neg_pair_dist (the mean distance over every positive / negative pair
 * before the test; 0 when none, as the peer). Deliberate difference: a distance matrix that overflows
 * throws.
 *
 * @tparam Scalar float or double.
 * @note One object per thread. A second call with the same shapes allocates nothing of kshot's own
 * (the output's storage is reused).
 */
template <class Scalar = float>
class PairMarginMiner {
  static_assert(std::is_floating_point_v<Scalar>, "kshot::PairMarginMiner<Scalar>: Scalar must be float or double");

 public:
  Scalar pos_margin = Scalar(0.2);             ///< any finite value
  Scalar neg_margin = Scalar(0.8);             ///< any finite value
  LossDistance distance = LossDistance::lp();  ///< pytorch-metric-learning's default LpDistance

  PairMarginMiner() = default;
  PairMarginMiner(Scalar pos_margin_, Scalar neg_margin_) : pos_margin(pos_margin_), neg_margin(neg_margin_) {}

  /// The mined pairs of the batch.
  MinedPairs mine(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels) {
    MinedPairs out;
    mine(emb, labels, out);
    return out;
  }

  /// The mined pairs written to `out` (overwritten; its storage is reused).
  void mine(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels, MinedPairs& out) {
    constexpr const char* where = "kshot::PairMarginMiner::mine()";
    KSHOT_CHECK(std::isfinite(pos_margin), where, detail::cat("pos_margin is ", pos_margin, " but must be finite"));
    KSHOT_CHECK(std::isfinite(neg_margin), where, detail::cat("neg_margin is ", neg_margin, " but must be finite"));
    stats_ = MinerStats{};
    dist_.compute(distance, emb, labels, where, stats_);
    out.clear();
    const Index n = emb.rows();
    const Scalar* mat = dist_.matrix().data();
    const bool inv = distance.is_inverted();
    const Scalar pm = pos_margin, nm = neg_margin;
    double pos_sum = 0, neg_sum = 0;
    Index pos_all = 0, neg_all = 0;
    // O(n^2) comparisons against the GEMM's O(n^2 d): one serial pass in row-major order.
    for (Index i = 0; i < n; ++i) {
      const Scalar* row = mat + i * n;
      const Label yi = labels[i];
      for (Index j = 0; j < n; ++j) {
        const Scalar m = row[j];
        if (labels[j] == yi) {
          if (j == i) continue;
          pos_sum += double(m);
          ++pos_all;
          if (inv ? m < pm : m > pm) {
            out.a1.push_back(i);
            out.p.push_back(j);
          }
        } else {
          neg_sum += double(m);
          ++neg_all;
          if (inv ? m > nm : m < nm) {
            out.a2.push_back(i);
            out.n.push_back(j);
          }
        }
      }
    }
    stats_.pos_pairs = out.positive_count();
    stats_.neg_pairs = out.negative_count();
    if (pos_all > 0) stats_.pos_pair_dist = pos_sum / double(pos_all);
    if (neg_all > 0) stats_.neg_pair_dist = neg_sum / double(neg_all);
  }

  /// Counts and statistics of the last call.
  const MinerStats& stats() const noexcept { return stats_; }

  /// Pre-sizes the buffers for n embeddings of dimension d.
  void reserve(Index n, Index d) { dist_.reserve(n, d); }

 private:
  detail::MinerDistance<Scalar> dist_;
  MinerStats stats_;
};

}  // namespace kshot

#endif  // KSHOT_LOSSES_MINERS_PAIR_MARGIN_HPP
