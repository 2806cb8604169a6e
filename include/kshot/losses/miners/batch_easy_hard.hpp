/**
 * @file kshot/losses/miners/batch_easy_hard.hpp
 * @brief Batch easy/semihard/hard miners: one positive and one negative per anchor, chosen by distance
 * (pytorch-metric-learning's BatchEasyHardMiner and BatchHardMiner).
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_LOSSES_MINERS_BATCH_EASY_HARD_HPP
#define KSHOT_LOSSES_MINERS_BATCH_EASY_HARD_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"
#include "kshot/losses/common.hpp"
#include "kshot/losses/miners/miner_stats.hpp"

#include <algorithm>
#include <cmath>
#include <optional>
#include <type_traits>
#include <vector>

namespace kshot {

/// How BatchEasyHardMiner picks the positive or the negative of each anchor.
enum class MiningStrategy {
  easy,      ///< the closest positive / the farthest negative
  semihard,  ///< hard, but on the right side of the other pick (see BatchEasyHardMiner)
  hard,      ///< the farthest positive / the closest negative
  all        ///< every positive / every negative pair (no per-anchor pick)
};

/// The strategy's name as pytorch-metric-learning spells it ("easy", "semihard", "hard", "all").
inline const char* to_string(MiningStrategy s) noexcept {
  switch (s) {
    case MiningStrategy::easy: return "easy";
    case MiningStrategy::semihard: return "semihard";
    case MiningStrategy::hard: return "hard";
    case MiningStrategy::all: return "all";
  }
  return "invalid";
}

/// A closed interval [low, high] of distance values a mined pair must lie in.
template <class Scalar>
struct AllowedRange {
  Scalar low;
  Scalar high;
};

template <class Scalar>
class BatchHardMiner;

/**
 * @brief For each anchor, one positive and one negative picked by distance: pytorch-metric-learning's
 * miners.BatchEasyHardMiner.
 *
 * With a distance d (for a similarity every comparison flips: "farthest" is the smallest similarity):
 * - positive, `hard`: @f$ p^* = \arg\max_{p \in P_a} d_{ap} @f$; `easy`: @f$ \arg\min_{p \in P_a} d_{ap} @f$;
 *   `semihard`: the hard pick among the positives with @f$ d_{ap} < d_{an^*} @f$ (n* the anchor's negative
 *   pick);
 * - negative, `hard`: @f$ n^* = \arg\min_{n \in N_a} d_{an} @f$; `easy`: @f$ \arg\max_{n \in N_a} d_{an} @f$;
 *   `semihard`: the hard pick among the negatives with @f$ d_{an} > d_{ap^*} @f$;
 * - `all`: every positive (or negative) pair of the batch, in row-major order, and no pick.
 *
 * P_a are the rows with the anchor's label other than a, N_a the rows with another label. With
 * `allowed_pos_range` / `allowed_neg_range`, pairs whose distance lies outside [low, high] are left out
 * first (ignored for a side mined with `all`, as in pytorch-metric-learning). An anchor contributes only
 * when every side it is picked on has a candidate left; rows without one are counted in
 * stats().skipped_anchors. The semihard threshold of an anchor with no candidate on the other side is
 * the peer's ±finfo.max, exactly as get_x_per_row leaves it.
 *
 * Output (MinedPairs, pytorch-metric-learning's 4-tuple): neither side `all`: (a, p*, a, n*) for each
 * contributing anchor, in increasing a; `all` on one side: every pair of that side (row-major) and the
 * picks of the other. Ties between equal distances go to the lower index (torch.min / torch.max on the
 * CPU).
 *
 * Defaults (pytorch-metric-learning): pos_strategy easy, neg_strategy semihard, no ranges, Euclidean
 * distance on L2-normalised rows. No reduction: a miner returns indices. Rejected, as in
 * pytorch-metric-learning (here at mine(), there at construction): both strategies semihard, and semihard
 * with all. Deliberate differences: a range with a NaN bound or low > high is rejected (the peer silently
 * mines nothing); a distance matrix that overflows throws (see MinerDistance).
 *
 * stats(): pos_pairs, neg_pairs, skipped_anchors, degenerate, and the peer's easiest/hardest triplet,
 * positive and negative distances over the mined pairs (0 when there is none).
 *
 * @tparam Scalar float or double.
 * @note One object per thread: mine() uses the object's buffers. A second call with the same shapes
 * allocates nothing of kshot's own (the output's storage is reused).
 */
template <class Scalar = float>
class BatchEasyHardMiner {
  static_assert(std::is_floating_point_v<Scalar>, "kshot::BatchEasyHardMiner<Scalar>: Scalar must be float or double");

 public:
  MiningStrategy pos_strategy = MiningStrategy::easy;      ///< how positives are picked
  MiningStrategy neg_strategy = MiningStrategy::semihard;  ///< how negatives are picked
  std::optional<AllowedRange<Scalar>> allowed_pos_range;   ///< positive distances allowed (none: any)
  std::optional<AllowedRange<Scalar>> allowed_neg_range;   ///< negative distances allowed (none: any)
  LossDistance distance = LossDistance::lp();              ///< pytorch-metric-learning's default LpDistance

  BatchEasyHardMiner() = default;
  BatchEasyHardMiner(MiningStrategy pos, MiningStrategy neg) : pos_strategy(pos), neg_strategy(neg) {}

  /// The mined pairs of the batch.
  MinedPairs mine(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels) {
    MinedPairs out;
    run(emb, labels, out, "kshot::BatchEasyHardMiner::mine()");
    return out;
  }
  /// The mined pairs written to `out` (cleared first; its storage is reused).
  void mine(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels, MinedPairs& out) {
    run(emb, labels, out, "kshot::BatchEasyHardMiner::mine()");
  }

  /// Counts and statistics of the last call.
  const MinerStats& stats() const noexcept { return stats_; }

  /// Pre-sizes the buffers for n embeddings of dimension d.
  void reserve(Index n, Index d) {
    dist_.reserve(n, d);
    rows_.reserve(static_cast<std::size_t>(n));
  }

 private:
  friend class BatchHardMiner<Scalar>;

  /// One side's pick on one row: get_x_per_row's value and index, and whether anything was left.
  struct Pick {
    Scalar value = 0;
    Index index = 0;
    bool kept = false;
  };
  struct RowPicks {
    Pick pos, neg;
  };

  void check(const char* where) const {
    auto valid = [](MiningStrategy s) {
      return s == MiningStrategy::easy || s == MiningStrategy::semihard || s == MiningStrategy::hard ||
             s == MiningStrategy::all;
    };
    KSHOT_CHECK(valid(pos_strategy), where,
                detail::cat("pos_strategy is ", static_cast<int>(pos_strategy),
                            " but must be easy, semihard, hard or all"));
    KSHOT_CHECK(valid(neg_strategy), where,
                detail::cat("neg_strategy is ", static_cast<int>(neg_strategy),
                            " but must be easy, semihard, hard or all"));
    KSHOT_CHECK(!(pos_strategy == MiningStrategy::semihard && neg_strategy == MiningStrategy::semihard), where,
                "pos_strategy and neg_strategy are both semihard, but at most one of them may be semihard");
    const bool semi_all = (pos_strategy == MiningStrategy::semihard && neg_strategy == MiningStrategy::all) ||
                          (pos_strategy == MiningStrategy::all && neg_strategy == MiningStrategy::semihard);
    KSHOT_CHECK(!semi_all, where,
                detail::cat("pos_strategy is ", to_string(pos_strategy), " and neg_strategy is ",
                            to_string(neg_strategy), ", but semihard cannot be combined with all"));
    check_range(allowed_pos_range, "allowed_pos_range", where);
    check_range(allowed_neg_range, "allowed_neg_range", where);
  }

  static void check_range(const std::optional<AllowedRange<Scalar>>& r, const char* name, const char* where) {
    if (!r) return;
    KSHOT_CHECK(!std::isnan(r->low) && !std::isnan(r->high) && r->low <= r->high, where,
                detail::cat(name, " is [", r->low, ", ", r->high, "] but must have low <= high (and no NaN)"));
  }

  /**
   * pytorch-metric-learning's get_x_per_row on row i: entries outside the side's pairs, on the wrong side
   * of the semihard threshold, or outside the range are replaced by ±finfo.max, then the first minimum
   * (or maximum) of the row is taken; `kept` says whether any entry survived.
   */
  static Pick pick(const Scalar* row, Index i, Index n, const ConstLabelRef& labels, bool positives, bool take_min,
                   const Scalar* threshold, const std::optional<AllowedRange<Scalar>>& range) {
    const Scalar masked = take_min ? detail::finfo_max<Scalar>() : detail::finfo_min<Scalar>();
    const Label li = labels[i];
    Pick out;
    out.value = masked;
    out.index = 0;
    for (Index j = 0; j < n; ++j) {
      const Scalar m = row[j];
      bool keep = positives ? (j != i && labels[j] == li) : (labels[j] != li);
      if (keep && threshold != nullptr) keep = take_min ? !(m <= *threshold) : !(m >= *threshold);
      if (keep && range) keep = !(m > range->high || m < range->low);
      const Scalar v = keep ? m : masked;
      if (take_min ? v < out.value : v > out.value) {
        out.value = v;
        out.index = j;
      }
      out.kept = out.kept || keep;
    }
    return out;
  }

  void run(const ConstRowMatrixRef<Scalar>& emb, const ConstLabelRef& labels, MinedPairs& out, const char* where) {
    check(where);
    stats_ = MinerStats{};
    dist_.compute(distance, emb, labels, where, stats_);
    out.clear();
    const Index n = emb.rows();
    auto M = dist_.matrix();
    const Scalar* mat = M.data();
    const bool inv = distance.is_inverted();
    const MiningStrategy ps = pos_strategy, ns = neg_strategy;
    const bool pos_all = ps == MiningStrategy::all, neg_all = ns == MiningStrategy::all;
    // The peer's mine functions: hard and semihard positives take the farthest (max distance, min
    // similarity), easy ones the closest; negatives are mined with the opposite function.
    const bool pos_min = (ps == MiningStrategy::easy) ? !inv : inv;
    const bool neg_min = (ns == MiningStrategy::easy) ? inv : !inv;

    rows_.resize(static_cast<std::size_t>(n));
    auto row_picks = [&](Index i) {
      const Scalar* row = mat + i * n;
      RowPicks r;
      if (ps == MiningStrategy::semihard && !neg_all) {
        r.neg = pick(row, i, n, labels, false, neg_min, nullptr, allowed_neg_range);
        r.pos = pick(row, i, n, labels, true, pos_min, &r.neg.value, allowed_pos_range);
      } else if (ns == MiningStrategy::semihard && !pos_all) {
        r.pos = pick(row, i, n, labels, true, pos_min, nullptr, allowed_pos_range);
        r.neg = pick(row, i, n, labels, false, neg_min, &r.pos.value, allowed_neg_range);
      } else {
        if (!pos_all) r.pos = pick(row, i, n, labels, true, pos_min, nullptr, allowed_pos_range);
        if (!neg_all) r.neg = pick(row, i, n, labels, false, neg_min, nullptr, allowed_neg_range);
      }
      rows_[static_cast<std::size_t>(i)] = r;
    };
    detail::parallel_for(n, detail::worth_parallel(n, double(n) * double(n) * 4), row_picks);

    // Assembly in row order (serial, so the tuple never depends on the thread count).
    Stat pos_stat, neg_stat, trip_stat;
    for (Index i = 0; i < n; ++i) {
      const RowPicks& r = rows_[static_cast<std::size_t>(i)];
      if (!pos_all && !neg_all) {
        if (r.pos.kept && r.neg.kept) {
          out.a1.push_back(i);
          out.p.push_back(r.pos.index);
          out.a2.push_back(i);
          out.n.push_back(r.neg.index);
          pos_stat.add(r.pos.value);
          neg_stat.add(r.neg.value);
          trip_stat.add(r.pos.value - r.neg.value);
        } else {
          ++stats_.skipped_anchors;
        }
        continue;
      }
      const Scalar* row = mat + i * n;
      if (pos_all) {
        for (Index j = 0; j < n; ++j)
          if (j != i && labels[j] == labels[i]) {
            out.a1.push_back(i);
            out.p.push_back(j);
            pos_stat.add(row[j]);
          }
      } else if (r.pos.kept) {
        out.a1.push_back(i);
        out.p.push_back(r.pos.index);
        pos_stat.add(r.pos.value);
      } else {
        ++stats_.skipped_anchors;
      }
    }
    if (pos_all || neg_all) {
      for (Index i = 0; i < n; ++i) {
        const RowPicks& r = rows_[static_cast<std::size_t>(i)];
        const Scalar* row = mat + i * n;
        if (neg_all) {
          for (Index j = 0; j < n; ++j)
            if (labels[j] != labels[i]) {
              out.a2.push_back(i);
              out.n.push_back(j);
              neg_stat.add(row[j]);
            }
        } else if (r.neg.kept) {
          out.a2.push_back(i);
          out.n.push_back(r.neg.index);
          neg_stat.add(r.neg.value);
        } else {
          ++stats_.skipped_anchors;
        }
      }
    }
    stats_.pos_pairs = out.positive_count();
    stats_.neg_pairs = out.negative_count();
    // The peer's set_stats: "easy" is the min of distances (max of similarities), "hard" the other end.
    auto easy = [&](const Stat& s) { return inv ? s.max : s.min; };
    auto hard = [&](const Stat& s) { return inv ? s.min : s.max; };
    if (trip_stat.count > 0) {
      stats_.easiest_triplet = double(easy(trip_stat));
      stats_.hardest_triplet = double(hard(trip_stat));
    }
    if (pos_stat.count > 0) {
      stats_.easiest_pos_pair = double(easy(pos_stat));
      stats_.hardest_pos_pair = double(hard(pos_stat));
    }
    if (neg_stat.count > 0) {
      stats_.easiest_neg_pair = double(hard(neg_stat));
      stats_.hardest_neg_pair = double(easy(neg_stat));
    }
  }

  /// Running min and max of a list of values.
  struct Stat {
    Scalar min = detail::finfo_max<Scalar>();
    Scalar max = detail::finfo_min<Scalar>();
    Index count = 0;
    void add(Scalar v) noexcept {
      min = std::min(min, v);
      max = std::max(max, v);
      ++count;
    }
  };

  detail::MinerDistance<Scalar> dist_;
  std::vector<RowPicks> rows_;
  MinerStats stats_;
};

/**
 * @brief For each anchor, its hardest positive and hardest negative: pytorch-metric-learning's
 * miners.BatchHardMiner (BatchEasyHardMiner with both strategies hard), returned as triplets.
 *
 * With a distance d: @f$ p^* = \arg\max_{p \in P_a} d_{ap} @f$, @f$ n^* = \arg\min_{n \in N_a} d_{an} @f$
 * (for a similarity: the smallest positive and the largest negative similarity). One triplet
 * (a, p*, n*) per anchor that has a positive and a negative (in increasing a; others are counted in
 * stats().skipped_anchors), restricted to the allowed ranges when set. Ties go to the lower index.
 *
 * Defaults (pytorch-metric-learning): no ranges, Euclidean distance on L2-normalised rows. No reduction:
 * a miner returns indices. Deliberate differences: those of BatchEasyHardMiner. stats():
 * triplets (num_triplets), the easiest/hardest statistics of BatchEasyHardMiner, skipped_anchors,
 * degenerate.
 *
 * @tparam Scalar float or double.
 * @note One object per thread. A second call with the same shapes allocates nothing of kshot's own.
 */
template <class Scalar = float>
class BatchHardMiner {
  static_assert(std::is_floating_point_v<Scalar>, "kshot::BatchHardMiner<Scalar>: Scalar must be float or double");

 public:
  std::optional<AllowedRange<Scalar>> allowed_pos_range;  ///< positive distances allowed (none: any)
  std::optional<AllowedRange<Scalar>> allowed_neg_range;  ///< negative distances allowed (none: any)
  LossDistance distance = LossDistance::lp();             ///< pytorch-metric-learning's default LpDistance

  /// The mined triplets of the batch.
  MinedTriplets mine(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels) {
    MinedTriplets out;
    mine(emb, labels, out);
    return out;
  }
  /// The mined triplets written to `out` (overwritten; its storage is reused).
  void mine(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels, MinedTriplets& out) {
    engine_.pos_strategy = MiningStrategy::hard;
    engine_.neg_strategy = MiningStrategy::hard;
    engine_.allowed_pos_range = allowed_pos_range;
    engine_.allowed_neg_range = allowed_neg_range;
    engine_.distance = distance;
    engine_.run(emb, labels, pairs_, "kshot::BatchHardMiner::mine()");
    out.a.assign(pairs_.a1.begin(), pairs_.a1.end());
    out.p.assign(pairs_.p.begin(), pairs_.p.end());
    out.n.assign(pairs_.n.begin(), pairs_.n.end());
    stats_ = engine_.stats();
    stats_.pos_pairs = 0;
    stats_.neg_pairs = 0;
    stats_.triplets = out.size();
  }

  /// Counts and statistics of the last call.
  const MinerStats& stats() const noexcept { return stats_; }

  /// Pre-sizes the buffers for n embeddings of dimension d.
  void reserve(Index n, Index d) { engine_.reserve(n, d); }

 private:
  BatchEasyHardMiner<Scalar> engine_;
  MinedPairs pairs_;
  MinerStats stats_;
};

}  // namespace kshot

#endif  // KSHOT_LOSSES_MINERS_BATCH_EASY_HARD_HPP
