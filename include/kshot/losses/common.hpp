/**
 * @file kshot/losses/common.hpp
 * @brief What every metric-learning loss and miner shares: the distance a loss is computed over
 * (pytorch-metric-learning's distance objects), reductions, statistics, mined index tuples, and the
 * helpers that turn labels or mined tuples into pairs, triplets, masks and miner weights.
 *
 * The loss interface (every class in kshot/losses/ follows it):
 * @code
 * template <class Scalar> class SomeLoss {
 *  public:
 *   // public hyperparameters with pytorch-metric-learning's defaults, checked at the top of evaluate()
 *   LossDistance distance = ...;              // the loss's default distance
 *   Reduction reduction = Reduction::loss_default;
 *   Scalar evaluate(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels, Mined mined = {});
 *   Scalar evaluate(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels, Mined mined,
 *                   RowMatrixRef<Scalar> grad);             // grad (n x d) is overwritten with dL/d(emb)
 *   Scalar evaluate(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels, RowMatrixRef<Scalar> grad);
 *   const LossStats& stats() const noexcept;                // counts from the last call
 * };
 * @endcode
 * Losses with parameters of their own (proxies, class weights, a learnable beta) hold them as public
 * members and take one more gradient output for them. One loss object per thread: evaluate() uses the
 * object's workspace, so a second call with the same shapes allocates nothing of kshot's own.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_LOSSES_COMMON_HPP
#define KSHOT_LOSSES_COMMON_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

namespace kshot {

/// The family of a LossDistance.
enum class DistanceKind {
  lp,           ///< ‖x − y‖_p raised to `power`: pytorch-metric-learning's LpDistance (a distance)
  dot_product,  ///< x · y raised to `power`: DotProductSimilarity (a similarity)
  cosine        ///< x̂ · ŷ raised to `power`: CosineSimilarity, always on normalised rows (a similarity)
};

/**
 * @brief The distance (or similarity) a loss or miner is computed over, as pytorch-metric-learning's
 * distance objects define it.
 *
 * Rows are first L2-normalised when `normalize_embeddings` is on (x / max(‖x‖_p, 1e-12), as
 * torch.nn.functional.normalize), then compared, and the matrix is raised to `power`. Gradients include
 * the normalisation Jacobian. A similarity (dot product, cosine) is "inverted": larger means closer, and
 * every margin of a loss flips accordingly (see docs/losses.md).
 */
struct LossDistance {
  DistanceKind kind = DistanceKind::lp;
  bool normalize_embeddings = true;  ///< L2-normalise rows first (always on for cosine)
  double p = 2;                      ///< the norm order of lp and of the normalisation; >= 1
  double power = 1;                  ///< the matrix is raised to this power; > 0 (an integer for similarities)

  /// LpDistance(p, power, normalize_embeddings): the default distance of pytorch-metric-learning.
  static LossDistance lp(double power_ = 1, bool normalize = true, double p_ = 2) {
    return LossDistance{DistanceKind::lp, normalize, p_, power_};
  }
  /// Squared Euclidean distance on normalised rows: LpDistance(power=2).
  static LossDistance squared_lp(bool normalize = true) { return lp(2, normalize); }
  /// CosineSimilarity().
  static LossDistance cosine(double power_ = 1) { return LossDistance{DistanceKind::cosine, true, 2, power_}; }
  /// DotProductSimilarity(normalize_embeddings).
  static LossDistance dot_product(bool normalize = true, double power_ = 1) {
    return LossDistance{DistanceKind::dot_product, normalize, 2, power_};
  }

  /// True for similarities (larger is closer).
  bool is_inverted() const noexcept { return kind != DistanceKind::lp; }
  /// True when rows are normalised before comparing.
  bool normalizes() const noexcept { return kind == DistanceKind::cosine || normalize_embeddings; }
  /// pytorch-metric-learning's `margin(x, y)`: by how much x exceeds y in the "farther" direction.
  template <class Scalar>
  Scalar margin(Scalar x, Scalar y) const noexcept {
    return is_inverted() ? y - x : x - y;
  }
  /// A short description, e.g. "LpDistance(p=2, power=1, normalize_embeddings=true)".
  std::string describe() const {
    const char* name = kind == DistanceKind::lp       ? "LpDistance"
                       : kind == DistanceKind::cosine ? "CosineSimilarity"
                                                      : "DotProductSimilarity";
    return detail::cat(name, "(p=", p, ", power=", power, ", normalize_embeddings=", normalizes() ? "true" : "false",
                       ")");
  }
};

/**
 * @brief How a loss turns its elements (pairs, triplets, anchors, proxies) into one value.
 *
 * `loss_default` is pytorch-metric-learning's default reducer for that loss (documented per loss in
 * docs/losses.md). Two-part losses (contrastive, margin, proxy-anchor) reduce each part on its own and
 * add the results, as pytorch-metric-learning's MultipleReducers does.
 */
enum class Reduction {
  loss_default,  ///< the loss's own default (MeanReducer, AvgNonZeroReducer or DivisorReducer)
  mean,          ///< MeanReducer: mean over all elements
  mean_nonzero,  ///< AvgNonZeroReducer: mean over the elements > 0, 0 when none is
  sum            ///< SumReducer: plain sum
};

/// Counts from a loss's last evaluate() call.
struct LossStats {
  Index terms = 0;            ///< loss elements before reduction (pairs, triplets, anchors or proxies; all parts)
  Index active_terms = 0;     ///< elements > 0
  Index skipped_anchors = 0;  ///< anchors left out for want of a positive or a negative
  Index degenerate = 0;       ///< zero-norm rows normalised through the 1e-12 floor, clamped angles, and the like
};

/// Pairs mined from a batch: positive pairs (a1[k], p[k]) and negative pairs (a2[k], n[k]).
/// pytorch-metric-learning's 4-tuple indices_tuple.
struct MinedPairs {
  std::vector<Index> a1, p, a2, n;
  void clear() noexcept {
    a1.clear();
    p.clear();
    a2.clear();
    n.clear();
  }
  Index positive_count() const noexcept { return static_cast<Index>(a1.size()); }
  Index negative_count() const noexcept { return static_cast<Index>(a2.size()); }
};

/// Triplets mined from a batch: (a[k], p[k], n[k]). pytorch-metric-learning's 3-tuple indices_tuple.
struct MinedTriplets {
  std::vector<Index> a, p, n;
  void clear() noexcept {
    a.clear();
    p.clear();
    n.clear();
  }
  Index size() const noexcept { return static_cast<Index>(a.size()); }
};

/**
 * @brief A non-owning view of what a miner produced, or nothing (every pair or triplet the labels allow).
 *
 * Implicitly made from MinedPairs or MinedTriplets, so `loss.evaluate(emb, labels, miner.mine(emb, labels))`
 * reads as in pytorch-metric-learning. The viewed tuple must outlive the call.
 */
class Mined {
 public:
  Mined() = default;
  Mined(const MinedPairs& pairs) noexcept : pairs_(&pairs) {}              // NOLINT: implicit by design
  Mined(const MinedTriplets& triplets) noexcept : triplets_(&triplets) {}  // NOLINT: implicit by design
  bool none() const noexcept { return pairs_ == nullptr && triplets_ == nullptr; }
  const MinedPairs* pairs() const noexcept { return pairs_; }
  const MinedTriplets* triplets() const noexcept { return triplets_; }

 private:
  const MinedPairs* pairs_ = nullptr;
  const MinedTriplets* triplets_ = nullptr;
};

namespace detail {

/// Rows per block of the passes over the rows of an n x n loss matrix, and of the distance matrix's products: the
/// unit a thread owns (core/threads.hpp, owned_region()).
inline constexpr Index loss_row_block = 64;

/**
 * @brief Runs body(i) for every row i < n, in one region when `parallel` is true, each block of loss_row_block rows
 * on the thread that owns it in LossDistanceMatrix's passes: a thread reads and writes the rows of the distance
 * matrix and of dL/dM that it wrote before, in its own cache (see owned_region()). Results must not depend on
 * the thread.
 */
template <class Body>
void for_owned_rows(Index n, bool parallel, Body&& body) {
  const Index blocks = (n + loss_row_block - 1) / loss_row_block;
  for_owned_blocks(blocks, parallel, [&](Index b) {
    const Index end = std::min(n, (b + 1) * loss_row_block);
    for (Index i = b * loss_row_block; i < end; ++i) body(i);
  });
}

/// The reduction actually applied to one part of a loss.
enum class ReduceMode { mean, mean_nonzero, sum, divisor };

/// Resolves `r` against a loss's default mode.
inline ReduceMode resolve_reduction(Reduction r, ReduceMode loss_default) noexcept {
  switch (r) {
    case Reduction::mean:
      return ReduceMode::mean;
    case Reduction::mean_nonzero:
      return ReduceMode::mean_nonzero;
    case Reduction::sum:
      return ReduceMode::sum;
    case Reduction::loss_default:
      break;
  }
  return loss_default;
}

/**
 * @brief Reduces the K values at `v` and, when `coeff` is not null, writes dL/dv_k to coeff[k].
 *
 * Sums run serially in index order, so the result never depends on the number of threads. An empty set,
 * no element > 0 under mean_nonzero, or a zero divisor give 0 with zero coefficients (pytorch-metric-
 * learning's zero loss). Adds K to stats.terms and the number of elements > 0 to stats.active_terms.
 */
template <class Scalar>
Scalar reduce(const Scalar* v, Index K, ReduceMode mode, Scalar divisor, Scalar* coeff, LossStats& stats) {
  Index active = 0;
  Scalar sum = 0;
  for (Index k = 0; k < K; ++k) {
    if (v[k] > Scalar(0)) ++active;
  }
  stats.terms += K;
  stats.active_terms += active;
  Scalar scale = 0;
  switch (mode) {
    case ReduceMode::mean:
      for (Index k = 0; k < K; ++k) sum += v[k];
      scale = K > 0 ? Scalar(1) / Scalar(K) : Scalar(0);
      break;
    case ReduceMode::mean_nonzero:
      for (Index k = 0; k < K; ++k)
        if (v[k] > Scalar(0)) sum += v[k];
      scale = active > 0 ? Scalar(1) / Scalar(active) : Scalar(0);
      break;
    case ReduceMode::sum:
      for (Index k = 0; k < K; ++k) sum += v[k];
      scale = K > 0 ? Scalar(1) : Scalar(0);
      break;
    case ReduceMode::divisor:
      for (Index k = 0; k < K; ++k) sum += v[k];
      scale = divisor != Scalar(0) ? Scalar(1) / divisor : Scalar(0);
      break;
  }
  if (coeff != nullptr) {
    for (Index k = 0; k < K; ++k)
      coeff[k] = (mode == ReduceMode::mean_nonzero && !(v[k] > Scalar(0))) ? Scalar(0) : scale;
  }
  // mean as sum / K (what torch.mean does) rather than sum * (1 / K): the same to the last bit as the peer.
  if (mode == ReduceMode::mean) return K > 0 ? sum / Scalar(K) : Scalar(0);
  if (mode == ReduceMode::mean_nonzero) return active > 0 ? sum / Scalar(active) : Scalar(0);
  if (mode == ReduceMode::divisor) return divisor != Scalar(0) ? sum / divisor : Scalar(0);
  return sum;
}

/// Running totals of one part of a loss: enough to reduce it without keeping every element.
template <class Scalar>
struct PartTotals {
  Scalar sum = 0;         ///< sum of all elements
  Scalar sum_active = 0;  ///< sum of the elements > 0
  Index count = 0;        ///< number of elements
  Index active = 0;       ///< number of elements > 0
  void add(Scalar v) noexcept {
    sum += v;
    ++count;
    if (v > Scalar(0)) {
      sum_active += v;
      ++active;
    }
  }
  void merge(const PartTotals& o) noexcept {
    sum += o.sum;
    sum_active += o.sum_active;
    count += o.count;
    active += o.active;
  }
};

/**
 * @brief Reduces a part from its totals. `coeff` receives dL/d(element): the same for every element
 * (mean, sum, divisor) or for every element > 0 (mean_nonzero; the others get 0). Updates stats.
 */
template <class Scalar>
Scalar finish_part(const PartTotals<Scalar>& t, ReduceMode mode, Scalar divisor, Scalar& coeff, LossStats& stats) {
  stats.terms += t.count;
  stats.active_terms += t.active;
  coeff = 0;
  switch (mode) {
    case ReduceMode::mean:
      if (t.count == 0) return 0;
      coeff = Scalar(1) / Scalar(t.count);
      return t.sum / Scalar(t.count);
    case ReduceMode::mean_nonzero:
      if (t.active == 0) return 0;
      coeff = Scalar(1) / Scalar(t.active);
      return t.sum_active / Scalar(t.active);
    case ReduceMode::sum:
      if (t.count == 0) return 0;
      coeff = 1;
      return t.sum;
    case ReduceMode::divisor:
      if (divisor == Scalar(0) || t.count == 0) return 0;
      coeff = Scalar(1) / divisor;
      return t.sum / divisor;
  }
  return 0;
}

/// The coefficient of one element of value v, given the part's coefficient from finish_part.
template <class Scalar>
Scalar element_coeff(Scalar v, Scalar coeff, ReduceMode mode) noexcept {
  return (mode == ReduceMode::mean_nonzero && !(v > Scalar(0))) ? Scalar(0) : coeff;
}

/**
 * @brief Checks embeddings (n x d, finite, n >= 1, d >= 1, every squared row norm at most max(Scalar) / 4) and
 * labels (n entries).
 *
 * The norm bound keeps every distance, dot product and norm the losses compute finite (||x - y||^2 <=
 * 2 ||x||^2 + 2 ||y||^2), as pairwise_distances() refuses rows whose squared norm overflows: a larger row would
 * otherwise give a wrong finite loss or a NaN gradient. One pass: a non-finite value makes its row's squared
 * norm non-finite.
 */
template <class Scalar>
void check_embeddings(const ConstRowMatrixRef<Scalar>& emb, const ConstLabelRef& labels, const char* where) {
  KSHOT_CHECK(emb.rows() > 0, where, "embeddings has 0 rows");
  KSHOT_CHECK(emb.cols() > 0, where, "embeddings has 0 columns");
  KSHOT_CHECK(labels.size() == emb.rows(), where,
              cat("labels has ", labels.size(), " entries but embeddings has ", emb.rows(), " rows"));
  constexpr Scalar most = std::numeric_limits<Scalar>::max() / Scalar(4);
  for (Index i = 0; i < emb.rows(); ++i) {
    const Scalar squared = emb.row(i).squaredNorm();
    if (KSHOT_UNLIKELY(!(squared <= most))) {
      for (Index j = 0; j < emb.cols(); ++j)
        if (!std::isfinite(emb(i, j)))
          throw_invalid_argument(where, cat("embeddings has a non-finite value (", emb(i, j), ") at row ", i,
                                            ", column ", j));
      throw_invalid_argument(where, cat("embeddings row ", i, " is finite but its squared norm (",
                                        std::isfinite(squared) ? cat(squared) : std::string("overflows"),
                                        ") exceeds ", most, " (a quarter of the largest scalar), so its ",
                                        "distances could overflow the scalar type; rescale the data"));
    }
  }
}

/// Checks that a gradient output is n x d.
template <class Scalar>
void check_grad(const RowMatrixRef<Scalar>& grad, Index rows, Index cols, const char* where, const char* name) {
  check_shape(grad, rows, cols, where, name);
}

/// Checks a LossDistance's fields.
inline void check_distance(const LossDistance& d, const char* where) {
  KSHOT_CHECK(std::isfinite(d.p) && d.p >= 1, where, cat("distance.p is ", d.p, " but must be >= 1"));
  KSHOT_CHECK(std::isfinite(d.power) && d.power > 0, where, cat("distance.power is ", d.power, " but must be > 0"));
  if (d.is_inverted()) {
    KSHOT_CHECK(d.power == std::floor(d.power), where,
                cat("distance.power is ", d.power, " but a similarity takes an integer power"));
    KSHOT_CHECK(d.p == 2, where, cat("distance.p is ", d.p, " but similarities normalise with p = 2"));
  }
}

/// Checks every index of a mined tuple against the batch size n.
inline void check_mined(const Mined& mined, Index n, const char* where) {
  auto check_list = [&](const std::vector<Index>& v, const char* name) {
    for (std::size_t k = 0; k < v.size(); ++k)
      KSHOT_CHECK_RANGE(v[k] >= 0 && v[k] < n, where,
                        cat("mined index ", name, "[", k, "] = ", v[k], " is outside the batch of ", n, " rows"));
  };
  if (const MinedPairs* pr = mined.pairs()) {
    KSHOT_CHECK(pr->a1.size() == pr->p.size(), where,
                cat("mined pairs: a1 has ", pr->a1.size(), " entries but p has ", pr->p.size()));
    KSHOT_CHECK(pr->a2.size() == pr->n.size(), where,
                cat("mined pairs: a2 has ", pr->a2.size(), " entries but n has ", pr->n.size()));
    check_list(pr->a1, "a1");
    check_list(pr->p, "p");
    check_list(pr->a2, "a2");
    check_list(pr->n, "n");
  } else if (const MinedTriplets* tr = mined.triplets()) {
    KSHOT_CHECK(tr->a.size() == tr->p.size() && tr->a.size() == tr->n.size(), where,
                cat("mined triplets: a, p and n have ", tr->a.size(), ", ", tr->p.size(), " and ", tr->n.size(),
                    " entries but must have the same number"));
    check_list(tr->a, "a");
    check_list(tr->p, "p");
    check_list(tr->n, "n");
  }
}

/**
 * @brief The pairs a pair-based loss works on (pytorch-metric-learning's convert_to_pairs).
 *
 * No mined tuple: every ordered pair i != j, positive when the labels match, negative otherwise (row-major
 * order). Pairs: as given. Triplets (a, p, n): positives (a, p), negatives (a, n).
 */
inline void pairs_from(const Mined& mined, const ConstLabelRef& labels, MinedPairs& out) {
  out.clear();
  if (const MinedPairs* pr = mined.pairs()) {
    out.a1 = pr->a1;
    out.p = pr->p;
    out.a2 = pr->a2;
    out.n = pr->n;
    return;
  }
  if (const MinedTriplets* tr = mined.triplets()) {
    out.a1 = tr->a;
    out.p = tr->p;
    out.a2 = tr->a;
    out.n = tr->n;
    return;
  }
  const Index n = labels.size();
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < n; ++j) {
      if (labels[i] == labels[j]) {
        if (i != j) {
          out.a1.push_back(i);
          out.p.push_back(j);
        }
      } else {
        out.a2.push_back(i);
        out.n.push_back(j);
      }
    }
}

/**
 * @brief The triplets a triplet-based loss works on (pytorch-metric-learning's convert_to_triplets with
 * triplets_per_anchor = "all").
 *
 * No mined tuple: every (a, p, n) with a != p, labels a = p != n, in (a, p, n) row-major order. Triplets:
 * as given. Pairs: every positive pair k joined with every negative pair j of the same anchor, in (k, j)
 * order. Materialises the list: losses that can stream (TripletMarginLoss) avoid this for "all".
 */
inline void triplets_from(const Mined& mined, const ConstLabelRef& labels, MinedTriplets& out) {
  out.clear();
  if (const MinedTriplets* tr = mined.triplets()) {
    out.a = tr->a;
    out.p = tr->p;
    out.n = tr->n;
    return;
  }
  if (const MinedPairs* pr = mined.pairs()) {
    for (std::size_t k = 0; k < pr->a1.size(); ++k)
      for (std::size_t j = 0; j < pr->a2.size(); ++j)
        if (pr->a1[k] == pr->a2[j]) {
          out.a.push_back(pr->a1[k]);
          out.p.push_back(pr->p[k]);
          out.n.push_back(pr->n[j]);
        }
    return;
  }
  const Index n = labels.size();
  for (Index a = 0; a < n; ++a)
    for (Index p = 0; p < n; ++p) {
      if (p == a || labels[p] != labels[a]) continue;
      for (Index q = 0; q < n; ++q)
        if (labels[q] != labels[a]) {
          out.a.push_back(a);
          out.p.push_back(p);
          out.n.push_back(q);
        }
    }
}

/**
 * @brief pytorch-metric-learning's convert_to_weights: each row weighted by how often it appears in the
 * mined tuple, divided by the largest count; all ones when nothing (or an empty tuple) was mined.
 * `anchors_only` counts only anchors (a, or a1 and a2).
 */
template <class Scalar>
void miner_weights(const Mined& mined, Index n, Scalar* w, std::vector<Index>& counts, bool anchors_only = false) {
  counts.assign(static_cast<std::size_t>(n), 0);
  bool any = false;
  auto add = [&](const std::vector<Index>& v) {
    for (Index i : v) {
      ++counts[static_cast<std::size_t>(i)];
      any = true;
    }
  };
  if (const MinedPairs* pr = mined.pairs()) {
    add(pr->a1);
    if (!anchors_only) add(pr->p);
    add(pr->a2);
    if (!anchors_only) add(pr->n);
  } else if (const MinedTriplets* tr = mined.triplets()) {
    add(tr->a);
    if (!anchors_only) {
      add(tr->p);
      add(tr->n);
    }
  }
  if (!any) {
    for (Index i = 0; i < n; ++i) w[i] = Scalar(1);
    return;
  }
  Index max_count = 0;
  for (Index c : counts) max_count = std::max(max_count, c);
  for (Index i = 0; i < n; ++i) w[i] = Scalar(counts[static_cast<std::size_t>(i)]) / Scalar(max_count);
}

/// log(1 + exp(x)) without overflow (torch.nn.functional.softplus with beta = 1, threshold 20).
template <class Scalar>
Scalar softplus(Scalar x) noexcept {
  if (x > Scalar(20)) return x;
  return std::log1p(std::exp(x));
}

/// d softplus / dx as torch computes it: exactly 1 past the threshold, exp(x) / (exp(x) + 1) below it.
template <class Scalar>
Scalar softplus_grad(Scalar x) noexcept {
  if (x > Scalar(20)) return Scalar(1);
  const Scalar z = std::exp(x);
  return z / (z + Scalar(1));
}

/// The logistic function 1 / (1 + exp(-x)) without overflow.
template <class Scalar>
Scalar sigmoid(Scalar x) noexcept {
  if (x >= Scalar(0)) return Scalar(1) / (Scalar(1) + std::exp(-x));
  const Scalar e = std::exp(x);
  return e / (Scalar(1) + e);
}

/// pytorch's finfo.tiny (the smallest normal number), added inside logs by some peer losses.
template <class Scalar>
constexpr Scalar tiny() noexcept {
  return std::numeric_limits<Scalar>::min();
}

}  // namespace detail
}  // namespace kshot

#endif  // KSHOT_LOSSES_COMMON_HPP
