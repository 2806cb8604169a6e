/**
 * @file kshot/losses/triplet.hpp
 * @brief Triplet margin loss (Weinberger and Saul 2009; Schroff et al. 2015) over every triplet of a batch,
 * mined triplets or pairs, random triplets, or the triplets a fused miner keeps, with its exact gradient:
 * pytorch-metric-learning's TripletMarginLoss.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_LOSSES_TRIPLET_HPP
#define KSHOT_LOSSES_TRIPLET_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/random.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"
#include "kshot/losses/common.hpp"
#include "kshot/losses/detail/distance_matrix.hpp"
#include "kshot/losses/detail/pair_masks.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

namespace kshot {
namespace detail {

/**
 * @brief k random triplets per anchor: for every row a whose class has another member and which has at
 * least one row of another class, k draws of (a, p, n) with p uniform over the other rows of a's class and
 * n uniform over the rows of other classes (with replacement), as pytorch-metric-learning's
 * get_random_triplet_indices. Anchor a draws from RandomStream(seed, a), so the list depends only on
 * (labels, k, seed); it is written anchor by anchor. Returns the number of anchors skipped for want of a
 * positive or a negative. `pos` and `neg` are scratch (capacity kept).
 */
inline Index draw_random_triplets(const ConstLabelRef& labels, Index k, std::uint64_t seed, MinedTriplets& out,
                                  std::vector<Index>& pos, std::vector<Index>& neg) {
  out.clear();
  const Index n = labels.size();
  Index skipped = 0;
  for (Index a = 0; a < n; ++a) {
    pos.clear();
    neg.clear();
    for (Index j = 0; j < n; ++j) {
      if (j == a) continue;
      if (labels[j] == labels[a])
        pos.push_back(j);
      else
        neg.push_back(j);
    }
    if (pos.empty() || neg.empty()) {
      ++skipped;
      continue;
    }
    RandomStream rng(seed, static_cast<std::uint64_t>(a));
    for (Index t = 0; t < k; ++t) {
      const auto ip = static_cast<std::size_t>(rng.bounded(static_cast<std::uint64_t>(pos.size())));
      const auto in = static_cast<std::size_t>(rng.bounded(static_cast<std::uint64_t>(neg.size())));
      out.a.push_back(a);
      out.p.push_back(pos[ip]);
      out.n.push_back(neg[in]);
    }
  }
  return skipped;
}

/// Anchors with no positive (another row of the same label) or no negative (a row of another label): the rows of
/// a label held by one row only, or by every row. O(n log n); `sorted` is grow-only scratch.
inline Index anchors_without_triplets(const ConstLabelRef& labels, std::vector<Label>& sorted) {
  const Index n = labels.size();
  sorted.assign(labels.data(), labels.data() + n);
  std::sort(sorted.begin(), sorted.end());
  Index skipped = 0;
  for (Index start = 0; start < n;) {
    Index end = start + 1;
    while (end < n && sorted[static_cast<std::size_t>(end)] == sorted[static_cast<std::size_t>(start)]) ++end;
    if (end - start < 2 || end - start == n) skipped += end - start;
    start = end;
  }
  return skipped;
}

/**
 * @brief One row of hinge terms: v_j = (y_j − x) + m when `Flip`, else (x − y_j) + m, for j < N. Returns
 * the sum and the number of the v_j > 0 and, when `hits` is not null, adds 1 to hits[j] for every v_j > 0.
 *
 * Vectorised with Eigen's packet primitives (comparison masks, which Eigen's array expressions do not
 * vectorise); each v_j is the same rounded expression as the scalar form, and the test is v_j > 0. The
 * packets run from y[0] whatever its alignment, so the summation order depends on N only. Counts are
 * exact in Scalar (far below 2^24).
 */
template <bool Flip, class Scalar>
void relu_row(Scalar x, Scalar m, const Scalar* y, Index N, Scalar* hits, Scalar& sum, Scalar& count) noexcept {
  namespace ei = Eigen::internal;
  using Packet = typename ei::packet_traits<Scalar>::type;
  constexpr Index kSize = ei::packet_traits<Scalar>::size;
  const Packet px = ei::pset1<Packet>(x), pm = ei::pset1<Packet>(m);
  const Packet zero = ei::pset1<Packet>(Scalar(0)), one = ei::pset1<Packet>(Scalar(1));
  Packet ps = zero, pc = zero;
  Index j = 0;
  for (; j + kSize <= N; j += kSize) {
    const Packet py = ei::ploadu<Packet>(y + j);
    const Packet v = ei::padd(Flip ? ei::psub(py, px) : ei::psub(px, py), pm);
    const Packet mask = ei::pcmp_lt(zero, v);
    ps = ei::padd(ps, ei::pand(mask, v));
    const Packet hit = ei::pand(mask, one);
    pc = ei::padd(pc, hit);
    if (hits != nullptr) ei::pstoreu(hits + j, ei::padd(ei::ploadu<Packet>(hits + j), hit));
  }
  Scalar s = ei::predux(ps), c = ei::predux(pc);
  for (; j < N; ++j) {
    const Scalar v = (Flip ? y[j] - x : x - y[j]) + m;
    if (v > Scalar(0)) {
      s += v;
      c += Scalar(1);
      if (hits != nullptr) hits[j] += Scalar(1);
    }
  }
  sum = s;
  count = c;
}

/**
 * @brief Runs body(scratch, a) for every anchor a < n, in the row blocks each thread owns (for_owned_rows), with
 * scratch[t] for thread t, resized to n (grow-only) before the region; results must depend on the anchor only,
 * never on the scratch's earlier contents.
 */
template <class ScratchT, class Body>
void for_anchor_chunks(Index n, double work, std::vector<ScratchT>& scratch, Body&& body) {
  const bool par = worth_parallel(n, work);
  const auto slots = static_cast<std::size_t>(par ? max_threads() : 1);
  if (scratch.size() < slots) scratch.resize(slots);
  for (std::size_t c = 0; c < slots; ++c) scratch[c].resize(n);
  for_owned_rows(n, par, [&](Index a) { body(scratch[par ? static_cast<std::size_t>(thread_index()) : 0], a); });
}

}  // namespace detail

/**
 * @brief Triplet margin loss: the anchor-positive distance should be smaller than the anchor-negative
 * distance by at least `margin`.
 *
 * For a triplet (a, p, n) with a distance d:
 * @f[ v = d(a, p) - d(a, n) + \mathrm{margin}, \qquad \ell = \max(v, 0) \;\text{or}\;
 *     \ell = \log(1 + e^{v}) \text{ when smooth\_loss,} @f]
 * with a similarity s the margin flips: @f$ v = s(a, n) - s(a, p) + \mathrm{margin} @f$ (pytorch-metric-
 * learning's `distance.margin(d_ap, d_an) + margin`). With `swap`, d(a, n) is replaced by the closer of
 * d(a, n) and d(p, n) (min of distances, max of similarities); the gradient goes to the one chosen, split
 * in half on an exact tie (torch.minimum's rule). softplus follows torch: x itself past 20.
 *
 * Triplets: with no mined tuple and `triplets_per_anchor` = 0, every (a, p, n) with a != p and
 * label(a) = label(p) != label(n) (pytorch-metric-learning's "all"), streamed anchor by anchor and never
 * materialised (memory O(n^2): the distance matrix and its gradient). For the plain hinge without swap an
 * anchor with many triplets takes a sorted path, O((P + N) log min(P, N)) for P positives and N negatives:
 * it sorts the smaller side once and finds each triplet's activity by binary search with the very
 * expression of the direct loop, so the active set (and the gradient) are those of the direct loop.
 * `triplets_per_anchor` = k > 0 draws k random triplets per anchor (see detail::draw_random_triplets).
 * Mined triplets are used as given; mined pairs become triplets as pytorch-metric-learning's
 * convert_to_triplets joins them (every positive pair with every negative pair of the same anchor).
 * evaluate_streaming() evaluates over the triplets a fused miner keeps, again without a list.
 *
 * Reduction (default Reduction::mean_nonzero, pytorch-metric-learning's AvgNonZeroReducer): the mean of
 * the triplet losses > 0, 0 when none is. Reduction::mean and Reduction::sum average or add all triplets.
 *
 * Defaults follow pytorch-metric-learning: margin 0.05, swap off, smooth_loss off, every triplet,
 * Euclidean distance on L2-normalised embeddings. stats(): terms (triplets, as Index: batches of 4096 rows
 * have about 1.3e10), active_terms (triplets > 0), skipped_anchors (anchors without a positive or a
 * negative, when the triplets come from the labels), degenerate (zero-norm rows).
 *
 * Deliberate differences: random triplets come from kshot's RandomStream(seed, anchor), not torch's
 * generator, so the draw differs from pytorch-metric-learning's (same distribution); it depends only on
 * (labels, triplets_per_anchor, seed), so set `seed` per training step for fresh triplets. Sums are
 * accumulated in double and in anchor order, so results agree with pytorch-metric-learning to rounding.
 *
 * @code
 * @inproceedings{schroff2015facenet,
 *   title={FaceNet: A Unified Embedding for Face Recognition and Clustering},
 *   author={Schroff, Florian and Kalenichenko, Dmitry and Philbin, James},
 *   booktitle={CVPR}, year={2015}}
 * @endcode
 *
 * @tparam Scalar float or double.
 * @note One object per thread: evaluate() uses the object's workspace; a second call with the same shapes
 * (and thread count) allocates nothing of kshot's own. The elementwise phase is row-parallel with per-anchor
 * totals merged in anchor order, so results are bitwise identical for any thread count.
 */
template <class Scalar = float>
class TripletMarginLoss {
  static_assert(is_supported_scalar_v<Scalar>, "kshot::TripletMarginLoss<Scalar>: Scalar must be float or double");

 public:
  Scalar margin = Scalar(0.05);                   ///< any finite value
  bool swap = false;                              ///< use the closer of d(a, n) and d(p, n)
  bool smooth_loss = false;                       ///< softplus instead of the hinge
  Index triplets_per_anchor = 0;                  ///< 0: every triplet; k > 0: k random triplets per anchor
  std::uint64_t seed = 0;                         ///< seed of the random triplets (triplets_per_anchor > 0)
  LossDistance distance = LossDistance::lp();     ///< pytorch-metric-learning's default LpDistance
  Reduction reduction = Reduction::loss_default;  ///< default: mean over the triplets > 0

  /// The loss over every triplet the labels give (or random ones), or over the mined triplets or pairs.
  Scalar evaluate(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels, Mined mined = {}) {
    return run(emb, labels, mined, nullptr);
  }
  /// The loss, and its gradient with respect to `emb` written to `grad` (n x d, overwritten).
  Scalar evaluate(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels, Mined mined, RowMatrixRef<Scalar> grad) {
    return run(emb, labels, mined, &grad);
  }
  /// The loss over every triplet the labels give (or random ones), and its gradient.
  Scalar evaluate(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels, RowMatrixRef<Scalar> grad) {
    return run(emb, labels, Mined{}, &grad);
  }

  /**
   * @brief The loss over the triplets a fused miner keeps, streamed anchor by anchor (no list).
   *
   * Calls `selector.prepare(emb, labels)` once, then evaluates over exactly the triplets (a, p, n) with
   * a != p, label(a) = label(p) != label(n) for which `selector.keep(a, p, n)` is true, reduced as if they
   * had been passed as MinedTriplets (in anchor, positive, negative order). keep() must be const and
   * thread-safe: it is called from several threads, and (with swap and a gradient) twice per triplet.
   * `triplets_per_anchor` is ignored. stats().skipped_anchors counts anchors without a positive or a
   * negative by their labels.
   */
  template <class Selector>
  Scalar evaluate_streaming(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels, Selector& selector,
                            RowMatrixRef<Scalar> grad) {
    return run_streaming(emb, labels, selector, &grad);
  }
  /// The value of evaluate_streaming() without the gradient.
  template <class Selector>
  Scalar evaluate_streaming(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels, Selector& selector) {
    return run_streaming(emb, labels, selector, nullptr);
  }

  /// Counts from the last call.
  const LossStats& stats() const noexcept { return stats_; }

  /// Pre-sizes the workspace for n embeddings of dimension d (one thread's scratch).
  void reserve(Index n, Index d) {
    dist_.reserve(n, n, d);
    order_.reserve(n, d);
    anchor_totals_.reserve(static_cast<std::size_t>(n));
    label_scratch_.reserve(static_cast<std::size_t>(n));
    if (scratch_.empty()) scratch_.resize(1);
    scratch_[0].resize(n);
  }

 private:
  using Totals = detail::PartTotals<double>;
  using Array = Eigen::Array<Scalar, Eigen::Dynamic, 1>;
  // Scratch rows start on Eigen's largest alignment, so vectorised sums split the same way in every chunk
  // (and so for every thread count).
  using ArrayMap = Eigen::Map<Array, Eigen::AlignedMax>;
  using ScalarVector = std::vector<Scalar, Eigen::aligned_allocator<Scalar>>;

  struct KeepAll {
    constexpr bool keep(Index, Index, Index) const noexcept { return true; }
  };

  /// A value of the sorted side and its row (rows fit in 32 bits: the n x n matrix would not otherwise).
  struct Entry {
    Scalar v;
    std::int32_t i;
  };

  /// The length of the leading run of `a[0, len)` where `pred` holds (pred: true, ..., true, false, ...),
  /// by a branch-free binary search.
  template <class Pred>
  static Index prefix_length(const Entry* a, Index len, Pred pred) noexcept {
    if (len == 0) return 0;
    const Entry* base = a;
    while (len > 1) {
      const Index half = len / 2;
      base = pred(base[half]) ? base + half : base;
      len -= half;
    }
    return static_cast<Index>(base - a) + (pred(*base) ? 1 : 0);
  }

  /// One chunk's scratch, sized for n rows; grows only.
  struct Scratch {
    std::vector<Index> pos, neg, hist;
    ScalarVector pv, nv, pw, nw, vb, zb, lb;
    std::vector<Entry> sorted;
    std::vector<double> prefix;
    void resize(Index n) {
      const auto m = static_cast<std::size_t>(n) + 1;
      for (auto* v : {&pos, &neg, &hist})
        if (v->size() < m) v->resize(m);
      for (auto* v : {&pv, &nv, &pw, &nw, &vb, &zb, &lb})
        if (v->size() < m) v->resize(m);
      if (sorted.size() < m) sorted.resize(m);
      if (prefix.size() < m) prefix.resize(m);
    }
  };

  static constexpr const char* kWhere = "kshot::TripletMarginLoss::evaluate()";
  static constexpr const char* kWhereStreaming = "kshot::TripletMarginLoss::evaluate_streaming()";
  /// Below this violation exp(v) is close to leaving the normal range of Scalar.
  static constexpr Scalar kSmoothLow = std::is_same_v<Scalar, float> ? Scalar(-80) : Scalar(-700);

  /// pytorch-metric-learning's distance.margin(d_ap, d_an) + margin: the one expression every path uses.
  static Scalar violation(bool inv, Scalar ap, Scalar an, Scalar m) noexcept { return (inv ? an - ap : ap - an) + m; }

  void check_common(const ConstRowMatrixRef<Scalar>& emb, const ConstLabelRef& labels, RowMatrixRef<Scalar>* grad,
                    const char* where) {
    detail::check_embeddings(emb, labels, where);
    detail::check_distance(distance, where);
    KSHOT_CHECK(std::isfinite(margin), where, detail::cat("margin is ", margin, " but must be finite"));
    if (grad != nullptr) detail::check_grad(*grad, emb.rows(), emb.cols(), where, "grad");
  }

  Scalar run(const ConstRowMatrixRef<Scalar>& emb, const ConstLabelRef& labels, const Mined& mined,
             RowMatrixRef<Scalar>* grad) {
    check_common(emb, labels, grad, kWhere);
    detail::check_mined(mined, emb.rows(), kWhere);
    KSHOT_CHECK(
        triplets_per_anchor >= 0, kWhere,
        detail::cat("triplets_per_anchor is ", triplets_per_anchor, " but must be >= 0 (0 means every triplet)"));
    stats_ = LossStats{};
    const detail::ZeroGradientUnlessWritten<Scalar, detail::LossDistanceMatrix<Scalar>> zero_unless_written(grad, dist_);
    use_order_ = false;
    if (mined.none() && triplets_per_anchor == 0) {
      if (!swap && !smooth_loss) {
        // Rows in label order: each anchor's positives and negatives are contiguous runs of its row of the
        // distance matrix (no gather by label, no scattered gradient writes).
        order_.build(labels);
        dist_.compute_self(distance, emb, stats_, order_.order());
        use_order_ = true;
      } else {
        dist_.compute_self(distance, emb, stats_);
      }
      return stream(labels, KeepAll{}, /*keep_all=*/true, grad);
    }
    const MinedTriplets* list = mined.triplets();
    if (mined.none()) {
      stats_.skipped_anchors = detail::draw_random_triplets(labels, triplets_per_anchor, seed, list_, pos_, neg_);
      list = &list_;
    } else if (list == nullptr) {
      detail::triplets_from(mined, labels, list_);
      list = &list_;
    }
    // A short list (e.g. one triplet per anchor from a batch-hard miner) needs only its own distances:
    // computed directly, O(list * d), instead of the n x n matrix and its backward.
    const Index n = emb.rows();
    if (3 * list->size() * 8 < n * n) {
      dist_.prepare_rows(distance, emb, stats_);
      return from_list_sparse(*list, grad);
    }
    dist_.compute_self(distance, emb, stats_);
    return from_list(*list, grad);
  }

  template <class Selector>
  Scalar run_streaming(const ConstRowMatrixRef<Scalar>& emb, const ConstLabelRef& labels, Selector& selector,
                       RowMatrixRef<Scalar>* grad) {
    check_common(emb, labels, grad, kWhereStreaming);
    stats_ = LossStats{};
    use_order_ = false;
    const detail::ZeroGradientUnlessWritten<Scalar, detail::LossDistanceMatrix<Scalar>> zero_unless_written(grad, dist_);
    selector.prepare(emb, labels);
    dist_.compute_self(distance, emb, stats_);
    const Selector& keeper = selector;
    return stream(labels, keeper, /*keep_all=*/false, grad);
  }

  /// True when the sorted path is cheaper than the P x N loop of one anchor.
  static bool sorted_path_pays(Index P, Index N) noexcept {
    double lg = 1;
    for (Index s = std::min(P, N); s > 1; s >>= 1) lg += 1;
    return double(P) * double(N) > 8.0 * double(P + N) * lg;
  }

  /// Every triplet of the labels (or those `filter` keeps), anchor by anchor. Fills the unit gradients
  /// (d element / dM times the element's reduction weight before the part's coefficient) into grad(),
  /// reduces, scales and runs the backward pass.
  template <class Filter>
  Scalar stream(const ConstLabelRef& labels, const Filter& filter, bool keep_all, RowMatrixRef<Scalar>* grad) {
    const Index n = labels.size();
    const detail::ReduceMode mode = detail::resolve_reduction(reduction, detail::ReduceMode::mean_nonzero);
    const bool want = grad != nullptr;
    auto M = dist_.matrix();
    auto G = want ? dist_.grad(/*zero=*/false) : dist_.matrix();  // each anchor zeroes its own row
    anchor_totals_.assign(static_cast<std::size_t>(n), Totals{});
    auto anchor = [&](Scratch& sc, Index a) {
      anchor_totals_[static_cast<std::size_t>(a)] = anchor_pass(M, G, labels, filter, keep_all, mode, want, sc, a);
    };
    detail::for_anchor_chunks(n, double(n) * double(n) * 8, scratch_, anchor);
    if (want && swap) {
      // The share of d(p, n) goes to row p: a second row-parallel pass over rows in their positive role.
      auto positive = [&](Scratch& sc, Index r) { positive_pass(M, G, labels, filter, mode, sc, r); };
      detail::for_anchor_chunks(n, double(n) * double(n) * 8, scratch_, positive);
    }
    Totals total;
    for (const Totals& t : anchor_totals_) total.merge(t);
    stats_.skipped_anchors = detail::anchors_without_triplets(labels, label_scratch_);
    return finish(total, mode, grad);
  }

  /// Reduces the totals; with a gradient, scales the unit gradients by the part's coefficient and runs the
  /// backward pass.
  Scalar finish(const Totals& total, detail::ReduceMode mode, RowMatrixRef<Scalar>* grad) {
    double coeff = 0;
    const double value = detail::finish_part(total, mode, 0.0, coeff, stats_);
    if (grad == nullptr || coeff == 0) return static_cast<Scalar>(value);
    if (use_order_) {
      order_.finish_gradient(dist_, *grad, static_cast<Scalar>(coeff));
      return static_cast<Scalar>(value);
    }
    auto G = dist_.grad(/*zero=*/false);
    G *= static_cast<Scalar>(coeff);
    dist_.backward_self(*grad);
    return static_cast<Scalar>(value);
  }

  /// Gathers anchor a's positives and negatives (index order) and their distances to a.
  template <class MatrixT>
  static void gather(const MatrixT& M, const ConstLabelRef& labels, Index a, Scratch& sc, Index& P, Index& N) {
    const Index n = labels.size();
    P = 0;
    N = 0;
    const Label y = labels[a];
    for (Index j = 0; j < n; ++j) {
      if (j == a) continue;
      if (labels[j] == y) {
        sc.pos[static_cast<std::size_t>(P)] = j;
        sc.pv[static_cast<std::size_t>(P++)] = M(a, j);
      } else {
        sc.neg[static_cast<std::size_t>(N)] = j;
        sc.nv[static_cast<std::size_t>(N++)] = M(a, j);
      }
    }
  }

  /// gather() for rows in label order: the positives and negatives of sorted row r are contiguous runs, so
  /// their distances are block copies; the column indices are written only when `indices` is set (the
  /// sorted path needs them, the row path writes the gradient back by runs).
  template <class MatrixT>
  void gather_sorted(const MatrixT& M, Index r, Scratch& sc, Index& P, Index& N, bool indices) const {
    const Scalar* row = M.row(r).data();
    P = 0;
    N = 0;
    order_.positives(r).each([&](Index b, Index len) {
      std::copy(row + b, row + b + len, sc.pv.data() + P);
      if (indices)
        for (Index k = 0; k < len; ++k) sc.pos[static_cast<std::size_t>(P + k)] = b + k;
      P += len;
    });
    order_.negatives(r).each([&](Index b, Index len) {
      std::copy(row + b, row + b + len, sc.nv.data() + N);
      if (indices)
        for (Index k = 0; k < len; ++k) sc.neg[static_cast<std::size_t>(N + k)] = b + k;
      N += len;
    });
  }

  /// The element loss and its unit gradient d(element)/dv (0 where the reduction ignores the element).
  Scalar element(Scalar v, detail::ReduceMode mode, Scalar& w) const noexcept {
    if (!smooth_loss) {
      w = v > Scalar(0) ? Scalar(1) : Scalar(0);
      return v > Scalar(0) ? v : Scalar(0);
    }
    const Scalar l = detail::softplus(v);
    w = (mode == detail::ReduceMode::mean_nonzero && !(l > Scalar(0))) ? Scalar(0) : detail::softplus_grad(v);
    return l;
  }

  /// Anchor a's triplets: totals, and (when `want`) the unit gradients of row a.
  template <class MatrixT, class GradT, class Filter>
  Totals anchor_pass(const MatrixT& M, GradT& G, const ConstLabelRef& labels, const Filter& filter, bool keep_all,
                     detail::ReduceMode mode, bool want, Scratch& sc, Index a) const {
    Totals t;
    if (want) G.row(a).setZero();
    Index P = 0, N = 0;
    bool by_runs = false;  // rows in label order on the row path: the gradient row is written by runs
    if (use_order_) {
      const Index np = order_.positives(a).size(), nn = order_.negatives(a).size();
      by_runs = !(keep_all && !swap && !smooth_loss && sorted_path_pays(np, nn));
      gather_sorted(M, a, sc, P, N, /*indices=*/!by_runs);
    } else {
      gather(M, labels, a, sc, P, N);
    }
    if (P == 0 || N == 0) return t;
    const bool inv = distance.is_inverted();
    const Scalar s = inv ? Scalar(-1) : Scalar(1);  // dv/d(ap); dv/d(an) = -s
    const Scalar m = margin;
    if (keep_all && !swap && !smooth_loss && sorted_path_pays(P, N)) {
      sorted_pass(G, a, P, N, inv, want, sc, t);
      return t;
    }
    ArrayMap pw(sc.pw.data(), P), nw(sc.nw.data(), N);
    if (want) {
      pw.setZero();
      nw.setZero();
    }
    if (keep_all && !swap) {
      // Whole rows of negatives at once (vectorised), the same expression as violation().
      ArrayMap nv(sc.nv.data(), N), vb(sc.vb.data(), N), zb(sc.zb.data(), N), lb(sc.lb.data(), N);
      for (Index i = 0; i < P; ++i) {
        const Scalar x = sc.pv[static_cast<std::size_t>(i)];
        if (!smooth_loss) {
          Scalar sum = 0, active = 0;
          Scalar* nwp = want ? sc.nw.data() : nullptr;
          if (inv)
            detail::relu_row<true>(x, m, sc.nv.data(), N, nwp, sum, active);
          else
            detail::relu_row<false>(x, m, sc.nv.data(), N, nwp, sum, active);
          t.sum += double(sum);
          t.sum_active += double(sum);
          t.count += N;
          t.active += static_cast<Index>(active);
          if (want) pw[i] = active;
        } else {
          if (inv)
            vb = (nv - x) + m;
          else
            vb = (x - nv) + m;
          zb = vb.exp();
          lb = (vb > Scalar(20)).select(vb, zb.log1p());
          if (want) zb = (vb > Scalar(20)).select(Array::Ones(N), zb / (zb + Scalar(1)));
          // Far below 0, where exp leaves the normal range, Eigen's vectorised exp clamps while std::exp
          // (and torch) underflow to 0: take those few elements through the scalar functions, so that
          // exactly the same elements are > 0 (mean_nonzero counts them).
          if ((vb < kSmoothLow).any()) {
            for (Index j = 0; j < N; ++j) {
              if (!(vb[j] < kSmoothLow)) continue;
              lb[j] = detail::softplus(vb[j]);
              if (want) zb[j] = detail::softplus_grad(vb[j]);
            }
          }
          const double sum = double(lb.sum());
          t.sum += sum;
          t.sum_active += sum;
          t.count += N;
          t.active += (lb > Scalar(0)).count();
          if (want) {
            if (mode == detail::ReduceMode::mean_nonzero) zb = (lb > Scalar(0)).select(zb, Scalar(0));
            pw[i] = zb.sum();
            nw += zb;
          }
        }
      }
    } else {
      for (Index i = 0; i < P; ++i) {
        const Index p = sc.pos[static_cast<std::size_t>(i)];
        const Scalar x = sc.pv[static_cast<std::size_t>(i)];
        Scalar pwi = 0;
        for (Index j = 0; j < N; ++j) {
          const Index q = sc.neg[static_cast<std::size_t>(j)];
          if (!filter.keep(a, p, q)) continue;
          Scalar an = sc.nv[static_cast<std::size_t>(j)];
          Scalar share = 1;  // of the gradient that goes to d(a, n)
          if (swap) swap_choice(inv, an, M(p, q), an, share);
          Scalar w = 0;
          t.add(double(element(violation(inv, x, an, m), mode, w)));
          if (want) {
            pwi += w;
            nw[j] += w * share;
          }
        }
        if (want) pw[i] = pwi;
      }
    }
    if (want && by_runs) {
      Index k = 0;
      order_.positives(a).each([&](Index b, Index len) {
        G.row(a).segment(b, len) = s * pw.segment(k, len).matrix().transpose();
        k += len;
      });
      k = 0;
      order_.negatives(a).each([&](Index b, Index len) {
        G.row(a).segment(b, len) = -s * nw.segment(k, len).matrix().transpose();
        k += len;
      });
    } else if (want) {
      for (Index i = 0; i < P; ++i) G(a, sc.pos[static_cast<std::size_t>(i)]) += s * pw[i];
      for (Index j = 0; j < N; ++j) G(a, sc.neg[static_cast<std::size_t>(j)]) -= s * nw[j];
    }
    return t;
  }

  /// swap: the closer of d(a, n) and d(p, n) (min of distances, max of similarities), and the share of
  /// the gradient that goes to d(a, n): 1, 0, or 1/2 on an exact tie (torch.minimum / torch.maximum).
  static void swap_choice(bool inv, Scalar an, Scalar pn, Scalar& chosen, Scalar& an_share) noexcept {
    if (an == pn) {
      chosen = an;
      an_share = Scalar(0.5);
      return;
    }
    const bool an_closer = inv ? an > pn : an < pn;
    chosen = an_closer ? an : pn;
    an_share = an_closer ? Scalar(1) : Scalar(0);
  }

  /// Row r in its positive role (swap only): the shares of d(r, n) of every triplet (a, r, n).
  template <class MatrixT, class GradT, class Filter>
  void positive_pass(const MatrixT& M, GradT& G, const ConstLabelRef& labels, const Filter& filter,
                     detail::ReduceMode mode, Scratch& sc, Index r) const {
    Index P = 0, N = 0;
    gather(M, labels, r, sc, P, N);  // r's class mates are the anchors; its negatives are theirs
    if (P == 0 || N == 0) return;
    const bool inv = distance.is_inverted();
    const Scalar s = inv ? Scalar(-1) : Scalar(1);
    ArrayMap nw(sc.nw.data(), N);
    nw.setZero();
    for (Index i = 0; i < P; ++i) {
      const Index a = sc.pos[static_cast<std::size_t>(i)];
      const Scalar ar = M(a, r);
      for (Index j = 0; j < N; ++j) {
        const Index q = sc.neg[static_cast<std::size_t>(j)];
        if (!filter.keep(a, r, q)) continue;
        Scalar chosen = 0, an_share = 0;
        swap_choice(inv, M(a, q), sc.nv[static_cast<std::size_t>(j)], chosen, an_share);
        if (an_share == Scalar(1)) continue;
        Scalar w = 0;
        element(violation(inv, ar, chosen, margin), mode, w);
        nw[j] += w * (Scalar(1) - an_share);
      }
    }
    for (Index j = 0; j < N; ++j) G(r, sc.neg[static_cast<std::size_t>(j)]) -= s * nw[j];
  }

  /**
   * @brief The sorted path of one anchor (hinge, no swap, every triplet).
   *
   * The violation v(ap, an) = fl(fl(±(ap − an)) + margin) is monotone in each argument (rounding is
   * monotone), so for a fixed element of the larger side, the active elements of the smaller side form a
   * prefix once that side is sorted from "most violating" to "least": closest negatives first, or farthest
   * positives first. A binary search with violation() itself finds each prefix, so the active set is
   * exactly the direct loop's (equal values are always on the same side of it, so ties need no care).
   * Counts give the unit gradients; prefix sums (in double) give the values.
   */
  template <class GradT>
  void sorted_pass(GradT& G, Index a, Index P, Index N, bool inv, bool want, Scratch& sc, Totals& t) const {
    const Scalar m = margin;
    const double sgn = inv ? -1.0 : 1.0;
    const bool inner_is_neg = N <= P;
    Index I = inner_is_neg ? N : P;
    const Index O = inner_is_neg ? P : N;
    const Index* inner_idx = inner_is_neg ? sc.neg.data() : sc.pos.data();
    const Index* outer_idx = inner_is_neg ? sc.pos.data() : sc.neg.data();
    const Scalar* inner_val = inner_is_neg ? sc.nv.data() : sc.pv.data();
    const Scalar* outer_val = inner_is_neg ? sc.pv.data() : sc.nv.data();
    Entry* sorted = sc.sorted.data();
    for (Index j = 0; j < I; ++j) sorted[j] = Entry{inner_val[j], static_cast<std::int32_t>(inner_idx[j])};
    // The most violating outer element (farthest positive or closest negative). v is monotone in it too,
    // so an inner element inactive against it is inactive against every outer element: only the others
    // are sorted (in trained embeddings, most negatives are far and drop out here).
    const bool outer_max = inner_is_neg != inv;
    Scalar best = outer_val[0];
    for (Index i = 1; i < O; ++i) best = outer_max ? std::max(best, outer_val[i]) : std::min(best, outer_val[i]);
    Entry* cut = inner_is_neg ? std::partition(sorted, sorted + I,
                                               [&](const Entry& e) { return violation(inv, best, e.v, m) > Scalar(0); })
                              : std::partition(sorted, sorted + I, [&](const Entry& e) {
                                  return violation(inv, e.v, best, m) > Scalar(0);
                                });
    I = static_cast<Index>(cut - sorted);
    // Most violating first: for distances, negatives ascending and positives descending; for similarities
    // the reverse.
    const bool ascending = inner_is_neg != inv;
    if (ascending)
      std::sort(sorted, sorted + I, [](const Entry& x, const Entry& y) { return x.v < y.v; });
    else
      std::sort(sorted, sorted + I, [](const Entry& x, const Entry& y) { return x.v > y.v; });
    double* prefix = sc.prefix.data();
    prefix[0] = 0;
    for (Index j = 0; j < I; ++j) prefix[j + 1] = prefix[j] + double(sorted[j].v);
    Index* hist = sc.hist.data();
    if (want) std::fill(hist, hist + I + 1, Index(0));
    double sum = 0;
    Index active = 0;
    for (Index i = 0; i < O; ++i) {
      const Scalar y = outer_val[i];
      const Index k =
          inner_is_neg
              ? prefix_length(sorted, I, [&](const Entry& e) { return violation(inv, y, e.v, m) > Scalar(0); })
              : prefix_length(sorted, I, [&](const Entry& e) { return violation(inv, e.v, y, m) > Scalar(0); });
      active += k;
      const double dk = double(k);
      // sum over j < k of sgn (ap - an) + margin
      sum += inner_is_neg ? dk * (sgn * double(y) + double(m)) - sgn * prefix[k]
                          : sgn * prefix[k] + dk * (double(m) - sgn * double(y));
      if (want) {
        ++hist[k];
        const Scalar unit = inner_is_neg ? Scalar(sgn) : Scalar(-sgn);  // d v / d(outer distance)
        G(a, outer_idx[i]) += unit * Scalar(k);
      }
    }
    t.sum += sum;
    t.sum_active += sum;
    t.count += P * N;
    t.active += active;
    if (!want) return;
    // Inner position j is active with every outer element whose prefix is longer than j.
    const Scalar unit = inner_is_neg ? Scalar(-sgn) : Scalar(sgn);
    Index longer = 0;
    for (Index j = I - 1; j >= 0; --j) {
      longer += hist[j + 1];
      G(a, Index(sorted[j].i)) += unit * Scalar(longer);
    }
  }

  /// A triplet list (mined, converted from pairs, or random), serially in list order.
  Scalar from_list(const MinedTriplets& list, RowMatrixRef<Scalar>* grad) {
    const detail::ReduceMode mode = detail::resolve_reduction(reduction, detail::ReduceMode::mean_nonzero);
    const bool want = grad != nullptr;
    const bool inv = distance.is_inverted();
    const Scalar s = inv ? Scalar(-1) : Scalar(1);
    auto M = dist_.matrix();
    auto G = want ? dist_.grad(/*zero=*/true) : dist_.matrix();
    Totals total;
    for (std::size_t k = 0; k < list.a.size(); ++k) {
      const Index a = list.a[k], p = list.p[k], q = list.n[k];
      Scalar an = M(a, q), share = 1;
      if (swap) swap_choice(inv, an, M(p, q), an, share);
      Scalar w = 0;
      total.add(double(element(violation(inv, M(a, p), an, margin), mode, w)));
      if (want && w != Scalar(0)) {
        G(a, p) += s * w;
        if (share != Scalar(0)) G(a, q) -= s * w * share;
        if (share != Scalar(1)) G(p, q) -= s * w * (Scalar(1) - share);
      }
    }
    return finish(total, mode, grad);
  }

  /// from_list() through the distance engine's sparse mode: each triplet's distances computed directly.
  Scalar from_list_sparse(const MinedTriplets& list, RowMatrixRef<Scalar>* grad) {
    const detail::ReduceMode mode = detail::resolve_reduction(reduction, detail::ReduceMode::mean_nonzero);
    const bool inv = distance.is_inverted();
    const Scalar s = inv ? Scalar(-1) : Scalar(1);
    const std::size_t T = list.a.size();
    unit_.resize(T);
    share_.resize(T);
    Totals total;
    for (std::size_t k = 0; k < T; ++k) {
      const Index a = list.a[k], p = list.p[k], q = list.n[k];
      Scalar an = dist_.entry(a, q), share = 1;
      if (swap) swap_choice(inv, an, dist_.entry(p, q), an, share);
      Scalar w = 0;
      total.add(double(element(violation(inv, dist_.entry(a, p), an, margin), mode, w)));
      unit_[k] = w;
      share_[k] = share;
    }
    double coeff = 0;
    const double value = detail::finish_part(total, mode, 0.0, coeff, stats_);
    if (grad == nullptr) return static_cast<Scalar>(value);
    const Scalar c = static_cast<Scalar>(coeff);
    for (std::size_t k = 0; k < T; ++k) {
      const Scalar w = unit_[k] * c;
      if (w == Scalar(0)) continue;
      const Index a = list.a[k], p = list.p[k], q = list.n[k];
      const Scalar share = share_[k];
      dist_.entry_backward(a, p, s * w);
      if (share != Scalar(0)) dist_.entry_backward(a, q, -s * w * share);
      if (share != Scalar(1)) dist_.entry_backward(p, q, -s * w * (Scalar(1) - share));
    }
    dist_.sparse_backward(*grad);
    return static_cast<Scalar>(value);
  }

  detail::LossDistanceMatrix<Scalar> dist_;
  detail::pair_rows::LabelOrder<Scalar> order_;  // rows in label order (all triplets, no swap, no smoothing)
  bool use_order_ = false;
  std::vector<Totals> anchor_totals_;
  std::vector<Label> label_scratch_;
  std::vector<Scratch> scratch_;
  MinedTriplets list_;
  std::vector<Index> pos_, neg_;
  std::vector<Scalar> unit_, share_;  // per-triplet unit gradients and swap shares (sparse path)
  LossStats stats_;
};

}  // namespace kshot

#endif  // KSHOT_LOSSES_TRIPLET_HPP
