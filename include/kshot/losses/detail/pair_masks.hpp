/**
 * @file kshot/losses/detail/pair_masks.hpp
 * @brief What the row-wise pair losses (NT-Xent, SupCon, multi-similarity, circle) share: the batch in label
 * order (every pair the labels give, as contiguous segments of each row), the pairs of a mined tuple as
 * masks (as pytorch-metric-learning's GenericPairLoss builds them), per-thread row scratch for gathered
 * pairs, and a stable log-sum-exp.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_LOSSES_DETAIL_PAIR_MASKS_HPP
#define KSHOT_LOSSES_DETAIL_PAIR_MASKS_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"
#include "kshot/losses/common.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

namespace kshot {
namespace detail {
/// Helpers of the row-wise pair losses (NTXentLoss, SupConLoss, MultiSimilarityLoss, CircleLoss).
namespace pair_rows {

/**
 * @brief pytorch-metric-learning's `all(len(x) <= 1 for x in convert_to_pairs(indices_tuple))`: the rule by
 * which every GenericPairLoss returns a zero loss. Without a mined tuple the pair lists of a batch of n rows
 * have at most one entry only when n <= 1 (ordered pairs come two by two).
 */
inline bool pair_tuple_is_trivial(const Mined& mined, Index n) {
  if (const MinedPairs* p = mined.pairs()) return p->a1.size() <= 1 && p->a2.size() <= 1;
  if (const MinedTriplets* t = mined.triplets()) return t->a.size() <= 1;
  return n <= 1;
}

/**
 * @brief The positive and negative pairs of each row under a mined tuple, as pytorch-metric-learning's
 * mask-based pair losses see them: the (a1, p) and (a2, n) lists (triplets (a, p, n) give (a, p) and
 * (a, n)) written into an n x n byte mask, so duplicates collapse and a pair may be both positive and
 * negative, exactly as `pos_mask[a1, p] = 1; neg_mask[a2, n] = 1` does.
 */
class PairMasks {
 public:
  static constexpr std::uint8_t kPositive = 1;
  static constexpr std::uint8_t kNegative = 2;

  /// Reads the pairs of `mined` (which must hold pairs or triplets) for a batch of n rows.
  void build(const Mined& mined, Index n) {
    n_ = n;
    any_pos_ = any_neg_ = false;
    mask_.assign(static_cast<std::size_t>(n_) * static_cast<std::size_t>(n_), std::uint8_t(0));
    auto mark = [&](const std::vector<Index>& a, const std::vector<Index>& b, std::uint8_t bit) {
      for (std::size_t k = 0; k < a.size(); ++k) mask_[flat(a[k], b[k])] |= bit;
      return !a.empty();
    };
    if (const MinedPairs* p = mined.pairs()) {
      any_pos_ = mark(p->a1, p->p, kPositive);
      any_neg_ = mark(p->a2, p->n, kNegative);
    } else if (const MinedTriplets* t = mined.triplets()) {
      any_pos_ = mark(t->a, t->p, kPositive);
      any_neg_ = mark(t->a, t->n, kNegative);
    }
  }

  /// True when some pair is positive (pytorch-metric-learning's pos_mask.any()).
  bool any_positive() const noexcept { return any_pos_; }
  /// True when some pair is negative.
  bool any_negative() const noexcept { return any_neg_; }
  /// kPositive | kNegative bits of pair (i, j).
  std::uint8_t code(Index i, Index j) const noexcept { return mask_[flat(i, j)]; }

  /**
   * @brief The columns of row i, ascending: positives into `pos`, negatives into `neg`, and (when `kept` is
   * not null) those that are either into `kept`. Each output needs room for n entries.
   */
  void row(Index i, Index* pos, Index& npos, Index* neg, Index& nneg, Index* kept = nullptr,
           Index* nkept = nullptr) const {
    Index np = 0, nn = 0, nk = 0;
    const std::uint8_t* m = &mask_[flat(i, 0)];
    for (Index j = 0; j < n_; ++j) {
      const std::uint8_t c = m[j];
      if (c == 0) continue;
      if (c & kPositive) pos[np++] = j;
      if (c & kNegative) neg[nn++] = j;
      if (kept != nullptr) kept[nk++] = j;
    }
    npos = np;
    nneg = nn;
    if (nkept != nullptr) *nkept = nk;
  }

 private:
  std::size_t flat(Index i, Index j) const noexcept {
    return static_cast<std::size_t>(i) * static_cast<std::size_t>(n_) + static_cast<std::size_t>(j);
  }

  Index n_ = 0;
  bool any_pos_ = false, any_neg_ = false;
  std::vector<std::uint8_t> mask_;
};

/// Up to two index ranges [begin, end) of a row (empty ranges are skipped).
struct Runs {
  Index begin[2] = {0, 0};
  Index end[2] = {0, 0};

  static Runs of(Index b0, Index e0, Index b1, Index e1) noexcept {
    Runs r;
    r.begin[0] = b0;
    r.end[0] = e0;
    r.begin[1] = b1;
    r.end[1] = e1;
    return r;
  }
  Index size() const noexcept { return (end[0] - begin[0]) + (end[1] - begin[1]); }
  /// f(begin, length) for each non-empty range, in order.
  template <class F>
  void each(F&& f) const {
    for (int k = 0; k < 2; ++k)
      if (end[k] > begin[k]) f(begin[k], end[k] - begin[k]);
  }
};

/// The largest (or, with `largest` false, smallest) entry of `row` over the non-empty `runs`.
template <class Row>
typename Row::Scalar extreme_over(const Row& row, const Runs& runs, bool largest) {
  using Scalar = typename Row::Scalar;
  Scalar out = largest ? std::numeric_limits<Scalar>::lowest() : std::numeric_limits<Scalar>::max();
  runs.each([&](Index b, Index len) {
    const Scalar v = largest ? row.segment(b, len).maxCoeff() : row.segment(b, len).minCoeff();
    out = largest ? (v > out ? v : out) : (v < out ? v : out);
  });
  return out;
}

/// The first index j in `runs` with row[j] == value (-1 when none).
template <class Row>
Index find_over(const Row& row, const Runs& runs, typename Row::Scalar value) {
  Index found = -1;
  runs.each([&](Index b, Index len) {
    for (Index j = b; j < b + len && found < 0; ++j)
      if (row[j] == value) found = j;
  });
  return found;
}

/// The sum of `row` over `runs`.
template <class Row>
typename Row::Scalar sum_over(const Row& row, const Runs& runs) {
  typename Row::Scalar sum = 0;
  runs.each([&](Index b, Index len) { sum += row.segment(b, len).sum(); });
  return sum;
}

/**
 * @brief The sum of the shifted exponentials in `row` over `runs` less the largest one's share (1): the
 * `rest` of a log-sum-exp m + log1p(rest). When the whole sum is at least 2, rest = sum − 1 loses nothing;
 * below, the largest entry is set to exactly 1 and left out of a second sum, so that a rest far below 1
 * keeps its digits.
 */
template <class Row>
typename std::decay_t<Row>::Scalar rest_over(Row&& row, const Runs& runs) {
  using Scalar = typename std::decay_t<Row>::Scalar;
  const Scalar total = sum_over(row, runs);
  if (total >= Scalar(2)) return total - Scalar(1);
  const Index top = find_over(row, runs, extreme_over(row, runs, true));
  if (top < 0) return total - Scalar(1);
  row[top] = Scalar(0);
  const Scalar rest = sum_over(row, runs);
  row[top] = Scalar(1);
  return rest;
}

/**
 * @brief A batch in label order, for the losses that work on every pair the labels give: with rows sorted
 * by label, the positives of a row are one block of its class (the row itself excluded) and its negatives
 * the two ranges around the block, so each row's work is a few contiguous, vectorised segments of the
 * distance matrix instead of gathers.
 *
 * The loss computes its matrix on sorted() (the embeddings themselves when the labels are already sorted),
 * then finish_gradient() runs the backward pass and puts the gradient rows back in the caller's order.
 * Sorting is by (label, row), so the order and every result are deterministic. Grows only: nothing
 * allocates on a second call with the same shapes.
 */
template <class Scalar>
class LabelOrder {
 public:
  /// Pre-sizes the buffers for n rows of dimension d.
  void reserve(Index n, Index /*d*/) {
    keys_.reserve(static_cast<std::size_t>(n));
    block_.reserve(static_cast<std::size_t>(n));
    original_.reserve(static_cast<std::size_t>(n));
  }

  /// Sorts the rows by label and finds each row's class block.
  void build(const ConstLabelRef& labels) {
    n_ = labels.size();
    const auto un = static_cast<std::size_t>(n_);
    keys_.resize(un);
    for (Index i = 0; i < n_; ++i) keys_[static_cast<std::size_t>(i)] = {labels[i], i};
    std::sort(keys_.begin(), keys_.end());
    original_.resize(un);
    for (std::size_t r = 0; r < un; ++r) original_[r] = keys_[r].second;
    identity_ = true;
    for (Index r = 0; r < n_; ++r) identity_ = identity_ && keys_[static_cast<std::size_t>(r)].second == r;
    block_.resize(un);
    any_pos_ = any_neg_ = false;
    Index start = 0;
    for (Index r = 1; r <= n_; ++r) {
      if (r < n_ && keys_[static_cast<std::size_t>(r)].first == keys_[static_cast<std::size_t>(start)].first) continue;
      for (Index k = start; k < r; ++k) block_[static_cast<std::size_t>(k)] = {start, r};
      if (r - start > 1) any_pos_ = true;
      if (r - start < n_) any_neg_ = true;
      start = r;
    }
  }

  Index size() const noexcept { return n_; }
  /// True when two rows share a label.
  bool any_positive() const noexcept { return any_pos_; }
  /// True when two rows have different labels.
  bool any_negative() const noexcept { return any_neg_; }
  /// The caller's row at sorted position r.
  Index original(Index r) const noexcept { return original_[static_cast<std::size_t>(r)]; }

  /// Positives of sorted row r: its class block without r.
  Runs positives(Index r) const noexcept {
    const auto& b = block_[static_cast<std::size_t>(r)];
    return Runs::of(b.first, r, r + 1, b.second);
  }
  /// Negatives of sorted row r: everything outside its class block.
  Runs negatives(Index r) const noexcept {
    const auto& b = block_[static_cast<std::size_t>(r)];
    return Runs::of(0, b.first, b.second, n_);
  }
  /// Every column but r.
  Runs others(Index r) const noexcept { return Runs::of(0, r, r + 1, n_); }

  /// The caller's rows in label order, for LossDistanceMatrix::compute_self (null when already sorted).
  const Index* order() const noexcept { return identity_ ? nullptr : original_.data(); }

  /**
   * @brief dL/d(emb) = coeff · backward(dL/dM) with rows back in the caller's order (the backward pass is
   * linear, and scaling the n x d result costs less than scaling the n x n buffer). Zero when coeff is 0.
   */
  template <class DistanceMatrix>
  void finish_gradient(DistanceMatrix& dist, RowMatrixRef<Scalar>& grad, Scalar coeff) {
    if (coeff == Scalar(0)) {
      grad.setZero();
      return;
    }
    dist.backward_self(grad, /*symmetric=*/false, identity_ ? nullptr : original_.data(), coeff);
  }

 private:
  Index n_ = 0;
  bool identity_ = true, any_pos_ = false, any_neg_ = false;
  std::vector<std::pair<Label, Index>> keys_;
  std::vector<Index> original_;  // keys_[r].second, contiguous (backward_self's row map)
  std::vector<std::pair<Index, Index>> block_;
};

/**
 * @brief Per-thread scratch rows for a row-parallel loop: `values` rows of Scalars and `indices` rows of
 * Index, each of length n, for every thread that may run an iteration.
 *
 * Rows are padded to 64 bytes, so every thread's rows have the same alignment and Eigen's vectorised
 * expressions on them round the same way whichever thread runs a row (results stay bitwise independent
 * of the thread count). Grows only; nothing allocates on a second call with the same n and thread count.
 */
template <class Scalar>
class RowScratch {
 public:
  /// Sizes the scratch for rows of length n; call outside the parallel loop.
  void prepare(Index n, int values, int indices) {
    single_ = in_parallel_region();
    slots_ = single_ ? 1 : std::max(1, max_threads());
    constexpr Index pad = Index(64 / sizeof(Scalar));
    stride_ = std::max<Index>(pad, (n + pad - 1) / pad * pad);
    values_ = values;
    indices_ = indices;
    const auto nv =
        static_cast<std::size_t>(slots_) * static_cast<std::size_t>(values) * static_cast<std::size_t>(stride_);
    const auto ni =
        static_cast<std::size_t>(slots_) * static_cast<std::size_t>(indices) * static_cast<std::size_t>(stride_);
    if (v_.size() < nv) v_.resize(nv);
    if (i_.size() < ni) i_.resize(ni);
  }

  /// The slot of the calling thread (inside the loop).
  int slot() const noexcept {
    const int s = single_ ? 0 : thread_index();
    KSHOT_ASSERT(s >= 0 && s < slots_);
    return s;
  }
  /// Scalar row k of slot s.
  Scalar* values(int s, int k) noexcept {
    return v_.data() + (static_cast<std::size_t>(s) * static_cast<std::size_t>(values_) + static_cast<std::size_t>(k)) *
                           static_cast<std::size_t>(stride_);
  }
  /// Index row k of slot s.
  Index* indices(int s, int k) noexcept {
    return i_.data() +
           (static_cast<std::size_t>(s) * static_cast<std::size_t>(indices_) + static_cast<std::size_t>(k)) *
               static_cast<std::size_t>(stride_);
  }

 private:
  std::vector<Scalar, Eigen::aligned_allocator<Scalar>> v_;
  std::vector<Index> i_;
  Index stride_ = 0;
  int slots_ = 1, values_ = 0, indices_ = 0;
  bool single_ = true;
};

/// What one row of a row-wise loss contributed: its elements' totals and its counts.
template <class Scalar>
struct RowOutcome {
  PartTotals<Scalar> totals;
  Index skipped = 0;     ///< 1 when the row lacks a positive or a negative
  Index degenerate = 0;  ///< floors or clamps met in the row
};

/// An Eigen array view of k scalars at p.
template <class Scalar>
Eigen::Map<Eigen::Array<Scalar, Eigen::Dynamic, 1>> array_of(Scalar* p, Index k) {
  return Eigen::Map<Eigen::Array<Scalar, Eigen::Dynamic, 1>>(p, k);
}

/**
 * @brief The shifted exponentials of a stable log-sum-exp over k >= 1 values v (and one more entry 0 when
 * `add_one`, as log(1 + sum exp)).
 *
 * m is the largest entry, e_k = exp(v_k − m), and `rest` is the sum of the shifted exponentials of every
 * entry but the largest (whose own is exactly 1), including exp(−m) for the added 0 when that is not the
 * largest. Then log-sum-exp = m + log1p(rest) — without the cancellation of log(sum) when the largest entry
 * dominates — and the softmax weights are e_k / (1 + rest). Returns m. `e` may alias `v`.
 */
template <class Scalar>
Scalar exp_shifted(const Scalar* v, Index k, Scalar* e, Scalar& rest, bool add_one) {
  Index top = 0;
  for (Index j = 1; j < k; ++j)
    if (v[j] > v[top]) top = j;
  Scalar m = v[top];
  const bool zero_on_top = add_one && m < Scalar(0);
  if (zero_on_top) m = Scalar(0);
  auto vin = Eigen::Map<const Eigen::Array<Scalar, Eigen::Dynamic, 1>>(v, k);
  auto out = array_of(e, k);
  out = (vin - m).exp();
  if (zero_on_top) {
    rest = out.sum();  // the added entry is the largest: exp(0 − m) = 1 is left out
    return m;
  }
  out[top] = Scalar(0);
  rest = out.sum();
  out[top] = Scalar(1);
  if (add_one) rest += std::exp(-m);
  return m;
}

/**
 * @brief Runs body(i, outcome) for every row in one row-parallel region and merges the outcomes in row
 * order: returns the elements' totals and adds the rows' skipped and degenerate counts to `stats`. Bitwise
 * the same result for any thread count.
 */
template <class Scalar, class Body>
PartTotals<Scalar> for_each_row(Index n, double work, std::vector<RowOutcome<Scalar>>& out, LossStats& stats,
                                Body&& body) {
  out.resize(static_cast<std::size_t>(n));
  auto row = [&](Index i) {
    RowOutcome<Scalar> o;
    body(i, o);
    out[static_cast<std::size_t>(i)] = o;
  };
  for_owned_rows(n, worth_parallel(n, work), row);
  PartTotals<Scalar> total;
  for (Index i = 0; i < n; ++i) {
    const RowOutcome<Scalar>& o = out[static_cast<std::size_t>(i)];
    total.merge(o.totals);
    stats.skipped_anchors += o.skipped;
    stats.degenerate += o.degenerate;
  }
  return total;
}

/**
 * @brief Finishes a gradient whose dL/dM buffer holds the elements' derivatives before the reduction's
 * common factor `coeff`: dL/dX = coeff · backward(buffer) (the backward pass is linear, and scaling the
 * n x d result costs less than scaling the n x n buffer). A zero coeff leaves `grad` zero.
 */
template <class Scalar, class DistanceMatrix>
void finish_gradient(DistanceMatrix& dist, RowMatrixRef<Scalar>& grad, Scalar coeff) {
  if (coeff == Scalar(0)) {
    grad.setZero();
    return;
  }
  dist.backward_self(grad, /*symmetric=*/false, nullptr, coeff);
}

}  // namespace pair_rows
}  // namespace detail
}  // namespace kshot

#endif  // KSHOT_LOSSES_DETAIL_PAIR_MASKS_HPP
