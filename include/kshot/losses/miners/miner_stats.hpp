/**
 * @file kshot/losses/miners/miner_stats.hpp
 * @brief What every miner shares: the statistics of its last call (MinerStats, pytorch-metric-learning's
 * recorded miner attributes) and the distance matrix a miner selects from.
 *
 * The miner interface (every class in kshot/losses/miners/ follows it):
 * @code
 * template <class Scalar> class SomeMiner {
 *  public:
 *   // public hyperparameters with pytorch-metric-learning's defaults, checked at the top of mine()
 *   LossDistance distance = ...;                         // the miner's default distance
 *   Tuple mine(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels);          // MinedPairs or MinedTriplets
 *   void mine(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels, Tuple& out);  // reuses out's storage
 *   const MinerStats& stats() const noexcept;            // counts and distance statistics of the last call
 *   void reserve(Index n, Index d);
 * };
 * @endcode
 * A miner computes no gradient (pytorch-metric-learning mines under torch.no_grad()). Its result never
 * depends on the number of threads, and ties between equal distances go to the lower index (what
 * torch.min / torch.max return on the CPU). One miner object per thread: mine() uses the object's
 * buffers, so a second call with the same shapes allocates nothing of kshot's own.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_LOSSES_MINERS_MINER_STATS_HPP
#define KSHOT_LOSSES_MINERS_MINER_STATS_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/types.hpp"
#include "kshot/losses/common.hpp"
#include "kshot/losses/detail/distance_matrix.hpp"

#include <limits>

namespace kshot {

/**
 * @brief Counts and distance statistics of a miner's last call.
 *
 * The counts are pytorch-metric-learning's num_pos_pairs / num_neg_pairs (miners that return pairs) and
 * num_triplets (miners that return triplets). The distance statistics are the ones the peer records when
 * its collect_stats is on; a statistic a miner does not record, or one with nothing to average, stays 0
 * (pytorch-metric-learning's reset value).
 */
struct MinerStats {
  Index pos_pairs = 0;        ///< positive pairs returned (pair miners)
  Index neg_pairs = 0;        ///< negative pairs returned (pair miners)
  Index triplets = 0;         ///< triplets returned (triplet miners; TripletMarginMiner::count() too)
  Index skipped_anchors = 0;  ///< rows that gave nothing where the rule mines per anchor
  Index degenerate = 0;       ///< zero-norm rows normalised through the 1e-12 floor

  // BatchEasyHardMiner / BatchHardMiner, over the mined (kept) pairs; "easiest" and "hardest" in the
  // distance's sense (for a similarity, the easiest positive is the largest).
  double easiest_triplet = 0;   ///< easiest of d_ap - d_an over the mined anchors (neither strategy "all")
  double hardest_triplet = 0;   ///< hardest of d_ap - d_an
  double easiest_pos_pair = 0;  ///< easiest mined positive distance
  double hardest_pos_pair = 0;  ///< hardest mined positive distance
  double easiest_neg_pair = 0;  ///< easiest mined negative distance
  double hardest_neg_pair = 0;  ///< hardest mined negative distance

  // TripletMarginMiner (over every label triplet, before selection) and PairMarginMiner (over every pair).
  double pos_pair_dist = 0;       ///< mean anchor-positive distance
  double neg_pair_dist = 0;       ///< mean anchor-negative distance
  double avg_triplet_margin = 0;  ///< mean triplet margin (TripletMarginMiner)
};

namespace detail {

/**
 * @brief The distance matrix of a miner: dist(emb, emb) through LossDistanceMatrix, with the checks every
 * mine() call starts with.
 *
 * Throws std::invalid_argument when the matrix has an infinite or NaN entry (finite embeddings so large
 * that the distance overflows), since no selection rule is meaningful then.
 */
template <class Scalar>
class MinerDistance {
 public:
  /// Checks the inputs and the distance, computes the matrix, and records zero-norm rows in stats.
  void compute(const LossDistance& dist, const ConstRowMatrixRef<Scalar>& emb, const ConstLabelRef& labels,
               const char* where, MinerStats& stats) {
    check_embeddings(emb, labels, where);
    check_distance(dist, where);
    LossStats ls;
    matrix_.compute_self(dist, emb, ls);
    stats.degenerate = ls.degenerate;
    auto M = matrix_.matrix();
    KSHOT_CHECK(all_finite_contiguous(M.data(), M.size()), where,
                cat("the ", dist.describe(), " matrix of the ", emb.rows(),
                    " embeddings overflows (an entry is infinite or NaN); scale the embeddings down"));
  }

  /// The n x n matrix of the last compute (row-major, contiguous).
  typename Workspace<Scalar>::Matrix matrix() { return matrix_.matrix(); }

  void reserve(Index n, Index d) { matrix_.reserve(n, n, d); }

 private:
  LossDistanceMatrix<Scalar> matrix_;
};

/// pytorch's finfo.max: the value pytorch-metric-learning writes into masked entries (c_f.pos_inf).
template <class Scalar>
constexpr Scalar finfo_max() noexcept {
  return std::numeric_limits<Scalar>::max();
}

/// pytorch's finfo.min (the lowest finite value, c_f.neg_inf).
template <class Scalar>
constexpr Scalar finfo_min() noexcept {
  return std::numeric_limits<Scalar>::lowest();
}

}  // namespace detail
}  // namespace kshot

#endif  // KSHOT_LOSSES_MINERS_MINER_STATS_HPP
