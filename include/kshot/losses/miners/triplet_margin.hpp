/**
 * @file kshot/losses/miners/triplet_margin.hpp
 * @brief Triplets selected by their margin (pytorch-metric-learning's TripletMarginMiner), mined as a
 * list or streamed through a selection predicate without one.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_LOSSES_MINERS_TRIPLET_MARGIN_HPP
#define KSHOT_LOSSES_MINERS_TRIPLET_MARGIN_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"
#include "kshot/losses/common.hpp"
#include "kshot/losses/miners/miner_stats.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <type_traits>
#include <vector>

namespace kshot {

/// Which triplets TripletMarginMiner keeps (pytorch-metric-learning's type_of_triplets).
enum class TripletType {
  all,       ///< margin violated: m <= margin
  hard,      ///< m <= margin and m <= 0 (the negative is at least as close as the positive)
  semihard,  ///< m <= margin and m > 0
  easy       ///< margin respected: m > margin
};

/// The type's name as pytorch-metric-learning spells it ("all", "hard", "semihard", "easy").
inline const char* to_string(TripletType t) noexcept {
  switch (t) {
    case TripletType::all: return "all";
    case TripletType::hard: return "hard";
    case TripletType::semihard: return "semihard";
    case TripletType::easy: return "easy";
  }
  return "invalid";
}

/**
 * @brief Every label triplet whose margin passes a test: pytorch-metric-learning's
 * miners.TripletMarginMiner.
 *
 * For each triplet (a, p, n) with a != p, y_a = y_p != y_n, the triplet margin is
 * @f$ m = d_{an} - d_{ap} @f$ for a distance (@f$ m = s_{ap} - s_{an} @f$ for a similarity), computed in
 * Scalar as the peer does. Kept: `easy`: m > margin; `all`: m <= margin; `hard`: m <= margin and m <= 0;
 * `semihard`: m <= margin and m > 0.
 *
 * Output (MinedTriplets, the peer's 3-tuple): the kept triplets in (a, p, n) row-major order, as
 * pytorch-metric-learning returns them. The n^3 candidates are never materialised: anchors are processed
 * in parallel over each anchor's negatives sorted by distance, so a triplet test is a binary search (the
 * rounded margin is monotone in d_an), and only the kept triplets are written.
 *
 * A batch can keep up to n^3 triplets: mine() throws std::length_error when more than `max_triplets` would
 * be kept. For such batches use the streaming path: prepare() computes and keeps the distances, and the
 * thread-safe keep(a, p, n) answers the selection rule for one triplet, so that
 * TripletMarginLoss::evaluate_streaming(emb, labels, miner, grad) evaluates the loss over the mined
 * triplets without a list. count() says how many triplets would be mined, without a list.
 *
 * Defaults (pytorch-metric-learning): margin 0.2, type all, Euclidean distance on L2-normalised rows;
 * max_triplets 50,000,000 (kshot's own). No reduction: a miner returns indices. stats(): triplets, and
 * over every label triplet before the test the peer's pos_pair_dist (mean d_ap), neg_pair_dist (mean
 * d_an) and avg_triplet_margin (mean m), summed per anchor in O(n^2). Deliberate differences: with no
 * label triplet at all these are 0 (the peer's torch.mean of an empty tensor gives NaN); the max_triplets
 * limit; a distance matrix that overflows throws.
 *
 * @tparam Scalar float or double.
 * @note One object per thread for mine(), count() and prepare(); keep() may be called from any number of
 * threads between two prepare() calls. A second call with the same shapes allocates nothing of kshot's
 * own (the output's storage is reused).
 */
template <class Scalar = float>
class TripletMarginMiner {
  static_assert(std::is_floating_point_v<Scalar>, "kshot::TripletMarginMiner<Scalar>: Scalar must be float or double");

 public:
  Scalar margin = Scalar(0.2);                  ///< any finite value
  TripletType type_of_triplets = TripletType::all;
  LossDistance distance = LossDistance::lp();   ///< pytorch-metric-learning's default LpDistance
  Index max_triplets = 50000000;                ///< mine() refuses to write more triplets than this

  TripletMarginMiner() = default;
  explicit TripletMarginMiner(Scalar margin_value, TripletType type = TripletType::all)
      : margin(margin_value), type_of_triplets(type) {}

  /// The mined triplets of the batch.
  /// @throws std::length_error when more than max_triplets would be kept.
  MinedTriplets mine(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels) {
    MinedTriplets out;
    mine(emb, labels, out);
    return out;
  }

  /// The mined triplets written to `out` (overwritten; its storage is reused).
  /// @throws std::length_error when more than max_triplets would be kept (out is then left empty).
  void mine(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels, MinedTriplets& out) {
    constexpr const char* where = "kshot::TripletMarginMiner::mine()";
    out.clear();
    KSHOT_CHECK(max_triplets >= 0, where, detail::cat("max_triplets is ", max_triplets, " but must be >= 0"));
    const Index total = count_impl(emb, labels, where);
    if (total > max_triplets)
      throw std::length_error(detail::cat(
          where, ": ", total, " triplets would be mined from ", emb.rows(), " rows, more than max_triplets = ",
          max_triplets, "; use the streaming path (prepare() and keep(), as TripletMarginLoss::evaluate_streaming "
          "does) or raise max_triplets"));
    fill(out, total);
  }

  /// How many triplets mine() would return, without building the list (also sets stats().triplets).
  Index count(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels) {
    return count_impl(emb, labels, "kshot::TripletMarginMiner::count()");
  }

  /**
   * @brief The streaming path, step 1: computes and keeps the batch's distances and labels (and the
   * statistics over every label triplet), so that keep() can answer for any triplet.
   */
  void prepare(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels) {
    prepare_impl(emb, labels, "kshot::TripletMarginMiner::prepare()");
  }

  /**
   * @brief The streaming path, step 2: true exactly when (a, p, n) is a label triplet (a != p,
   * y_a = y_p != y_n) that mine() would return for the batch given to the last prepare() (or mine(),
   * count()), with the margin and type_of_triplets of that call.
   * @pre 0 <= a, p, n < the number of rows prepared (checked by assertion only: this is the hot loop).
   * @note const and thread-safe: reads the kept distances only.
   */
  bool keep(Index a, Index p, Index n) const noexcept {
    KSHOT_ASSERT(a >= 0 && a < n_ && p >= 0 && p < n_ && n >= 0 && n < n_);
    const Label* y = labels_.data();
    if (a == p || y[a] != y[p] || y[n] == y[a]) return false;
    const Scalar* row = mat_ + a * n_;
    return selected(triplet_margin(row[p], row[n]));
  }

  /// The number of rows of the batch last prepared (0 before the first call).
  Index prepared_rows() const noexcept { return n_; }

  /// Counts and statistics of the last call.
  const MinerStats& stats() const noexcept { return stats_; }

  /// Pre-sizes the buffers for n embeddings of dimension d.
  void reserve(Index n, Index d) {
    dist_.reserve(n, d);
    const auto un = static_cast<std::size_t>(n);
    labels_.reserve(un);
    order_.reserve(un * un);
    anchor_count_.reserve(un + 1);
    row_sums_.reserve(un);
  }

 private:
  /// Per-anchor sums behind the statistics.
  struct RowSums {
    double ap = 0, an = 0;  // N_a * sum_p d_ap and P_a * sum_n d_an
    Index triplets = 0;     // P_a * N_a
  };

  Scalar triplet_margin(Scalar ap, Scalar an) const noexcept { return inverted_ ? ap - an : an - ap; }

  bool selected(Scalar m) const noexcept {
    switch (type_) {
      case TripletType::easy: return m > margin_;
      case TripletType::all: return m <= margin_;
      case TripletType::hard: return m <= margin_ && m <= Scalar(0);
      case TripletType::semihard: return m <= margin_ && m > Scalar(0);
    }
    return false;
  }

  void check(const char* where) const {
    KSHOT_CHECK(std::isfinite(margin), where, detail::cat("margin is ", margin, " but must be finite"));
    const bool valid = type_of_triplets == TripletType::all || type_of_triplets == TripletType::hard ||
                       type_of_triplets == TripletType::semihard || type_of_triplets == TripletType::easy;
    KSHOT_CHECK(valid, where,
                detail::cat("type_of_triplets is ", static_cast<int>(type_of_triplets),
                            " but must be all, hard, semihard or easy"));
  }

  void prepare_impl(const ConstRowMatrixRef<Scalar>& emb, const ConstLabelRef& labels, const char* where) {
    check(where);
    stats_ = MinerStats{};
    n_ = 0;
    mat_ = nullptr;
    dist_.compute(distance, emb, labels, where, stats_);
    const Index n = emb.rows();
    labels_.assign(labels.data(), labels.data() + n);
    n_ = n;
    mat_ = dist_.matrix().data();
    inverted_ = distance.is_inverted();
    margin_ = margin;
    type_ = type_of_triplets;

    // Statistics over every label triplet, from per-anchor sums (O(n^2)), merged in row order.
    row_sums_.resize(static_cast<std::size_t>(n));
    auto sums = [&](Index a) {
      const Scalar* row = mat_ + a * n;
      const Label ya = labels_[static_cast<std::size_t>(a)];
      double sp = 0, sn = 0;
      Index np = 0, nn = 0;
      for (Index j = 0; j < n; ++j) {
        const Label yj = labels_[static_cast<std::size_t>(j)];
        if (yj == ya) {
          if (j != a) { sp += double(row[j]); ++np; }
        } else {
          sn += double(row[j]);
          ++nn;
        }
      }
      row_sums_[static_cast<std::size_t>(a)] = RowSums{double(nn) * sp, double(np) * sn, np * nn};
    };
    detail::parallel_for(n, detail::worth_parallel(n, double(n) * double(n) * 2), sums);
    double ap = 0, an = 0;
    Index total = 0;
    for (const RowSums& r : row_sums_) {
      ap += r.ap;
      an += r.an;
      total += r.triplets;
    }
    if (total > 0) {
      stats_.pos_pair_dist = ap / double(total);
      stats_.neg_pair_dist = an / double(total);
      stats_.avg_triplet_margin = inverted_ ? (ap - an) / double(total) : (an - ap) / double(total);
    }
  }

  /// [lo, hi): the positions in the anchor's sorted negatives (order_ + a * n) that keep (a, p, .).
  /// The rounded margin is monotone in d_an, so each test of `selected` holds on a prefix or a suffix.
  void kept_range(const Scalar* row, const Index* neg, Index count, Scalar ap, Index& lo, Index& hi) const {
    const bool increasing = !inverted_;  // m = d_an - d_ap grows with d_an; s_ap - s_an shrinks with s_an
    auto m_at = [&](Index k) { return triplet_margin(ap, row[neg[k]]); };
    // First position where pred fails, for a pred that holds on a prefix.
    auto prefix_end = [&](auto pred) {
      Index l = 0, h = count;
      while (l < h) {
        const Index mid = l + (h - l) / 2;
        if (pred(m_at(mid))) l = mid + 1;
        else h = mid;
      }
      return l;
    };
    lo = 0;
    hi = count;
    // "m > t" is a suffix when m increases along the order, a prefix otherwise; "m <= t" the reverse.
    auto greater = [&](Scalar t) {
      if (increasing) lo = std::max(lo, prefix_end([t](Scalar m) { return !(m > t); }));
      else hi = std::min(hi, prefix_end([t](Scalar m) { return m > t; }));
    };
    auto at_most = [&](Scalar t) {
      if (increasing) hi = std::min(hi, prefix_end([t](Scalar m) { return m <= t; }));
      else lo = std::max(lo, prefix_end([t](Scalar m) { return !(m <= t); }));
    };
    switch (type_) {
      case TripletType::easy: greater(margin_); break;
      case TripletType::all: at_most(margin_); break;
      case TripletType::hard: at_most(margin_); at_most(Scalar(0)); break;
      case TripletType::semihard: at_most(margin_); greater(Scalar(0)); break;
    }
    if (hi < lo) hi = lo;
  }

  /// Prepares, sorts each anchor's negatives by distance and counts the kept triplets per anchor.
  Index count_impl(const ConstRowMatrixRef<Scalar>& emb, const ConstLabelRef& labels, const char* where) {
    prepare_impl(emb, labels, where);
    const Index n = n_;
    const auto un = static_cast<std::size_t>(n);
    order_.resize(un * un);
    anchor_count_.resize(un + 1);
    auto per_anchor = [&](Index a) {
      const Scalar* row = mat_ + a * n;
      const Label ya = labels_[static_cast<std::size_t>(a)];
      Index* neg = order_.data() + a * n;
      Index nn = 0;
      for (Index j = 0; j < n; ++j)
        if (labels_[static_cast<std::size_t>(j)] != ya) neg[nn++] = j;
      std::sort(neg, neg + nn, [row](Index x, Index y) { return row[x] < row[y] || (row[x] == row[y] && x < y); });
      Index c = 0;
      if (nn > 0) {
        for (Index p = 0; p < n; ++p) {
          if (p == a || labels_[static_cast<std::size_t>(p)] != ya) continue;
          Index lo, hi;
          kept_range(row, neg, nn, row[p], lo, hi);
          c += hi - lo;
        }
      }
      anchor_count_[static_cast<std::size_t>(a)] = c;
    };
    detail::parallel_for(n, detail::worth_parallel(n, double(n) * double(n) * 8), per_anchor, /*dynamic=*/true);
    Index total = 0;
    for (Index a = 0; a < n; ++a) {
      const Index c = anchor_count_[static_cast<std::size_t>(a)];
      anchor_count_[static_cast<std::size_t>(a)] = total;  // becomes the anchor's offset
      total += c;
      if (c == 0) ++stats_.skipped_anchors;
    }
    anchor_count_[un] = total;
    stats_.triplets = total;
    return total;
  }

  /// Writes the kept triplets in (a, p, n) row-major order, each anchor at its offset.
  void fill(MinedTriplets& out, Index total) {
    const Index n = n_;
    const auto ut = static_cast<std::size_t>(total);
    out.a.resize(ut);
    out.p.resize(ut);
    out.n.resize(ut);
    auto per_anchor = [&](Index a) {
      Index at = anchor_count_[static_cast<std::size_t>(a)];
      const Index end = anchor_count_[static_cast<std::size_t>(a) + 1];
      if (at == end) return;
      const Scalar* row = mat_ + a * n;
      const Label ya = labels_[static_cast<std::size_t>(a)];
      const Index* neg = order_.data() + a * n;
      Index nn = 0;
      for (Index j = 0; j < n; ++j)
        if (labels_[static_cast<std::size_t>(j)] != ya) ++nn;
      for (Index p = 0; p < n; ++p) {
        if (p == a || labels_[static_cast<std::size_t>(p)] != ya) continue;
        Index lo, hi;
        kept_range(row, neg, nn, row[p], lo, hi);
        const Index k = hi - lo;
        if (k == 0) continue;
        Index* dst = out.n.data() + at;
        if (k * 4 < nn) {
          // Few kept: copy the range and put it in index order.
          std::copy(neg + lo, neg + hi, dst);
          std::sort(dst, dst + k);
        } else {
          // Most kept: scan the negatives in index order with the same test.
          Index w = 0;
          const Scalar ap = row[p];
          for (Index j = 0; j < n; ++j)
            if (labels_[static_cast<std::size_t>(j)] != ya && selected(triplet_margin(ap, row[j]))) dst[w++] = j;
          KSHOT_ASSERT(w == k);
        }
        std::fill(out.a.data() + at, out.a.data() + at + k, a);
        std::fill(out.p.data() + at, out.p.data() + at + k, p);
        at += k;
      }
      KSHOT_ASSERT(at == end);
    };
    detail::parallel_for(n, detail::worth_parallel(n, double(total) + double(n) * double(n) * 8), per_anchor,
                         /*dynamic=*/true);
  }

  detail::MinerDistance<Scalar> dist_;
  std::vector<Label> labels_;
  std::vector<Index> order_;         // row a: the anchor's negatives sorted by (distance, index)
  std::vector<Index> anchor_count_;  // kept triplets per anchor, then their offsets
  std::vector<RowSums> row_sums_;
  const Scalar* mat_ = nullptr;  // the prepared n x n matrix (row-major, in dist_'s workspace)
  Index n_ = 0;
  bool inverted_ = false;
  Scalar margin_ = Scalar(0.2);  // the parameters the last prepare() ran with (keep() uses these)
  TripletType type_ = TripletType::all;
  MinerStats stats_;
};

}  // namespace kshot

#endif  // KSHOT_LOSSES_MINERS_TRIPLET_MARGIN_HPP
