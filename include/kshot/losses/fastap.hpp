/**
 * @file kshot/losses/fastap.hpp
 * @brief FastAP (Cakir et al. 2019): a differentiable average precision from soft distance histograms, with
 * its exact gradient: pytorch-metric-learning's FastAPLoss.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_LOSSES_FASTAP_HPP
#define KSHOT_LOSSES_FASTAP_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"
#include "kshot/core/workspace.hpp"
#include "kshot/losses/common.hpp"
#include "kshot/losses/detail/distance_matrix.hpp"
#include "kshot/losses/detail/pair_masks.hpp"

#include <algorithm>
#include <bitset>
#include <cmath>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

namespace kshot {
namespace detail {
namespace fastap_rows {

/**
 * @brief FastAP's row kernels over one row x of the distance matrix, in bin widths: q_j = x_j · inv with
 * inv = 1 / δ (x_j >= 0), kernels K_b(q) = relu(1 − |q − b|).
 *
 * Forward: the all-pairs cumulative histogram H_b = Σ_(c <= b) Σ_j K_c(q_j) = Σ_j clamp(b + 1 − q_j, 0, 1),
 * which is also Σ_(j: floor(q_j) < b) 1 + Σ_(j: floor(q_j) = b) (1 − (q_j − floor(q_j))). Only the bins
 * between the row's smallest and largest distance need sums (below, H is 0; above, the count), and each takes
 * one vectorised sweep of the row: clamps with Eigen's packet primitives, or AVX-512 comparison masks and
 * masked adds. Past kMaxSweepBins bins one scalar scatter over the row is cheaper: O(n) per row whatever
 * num_bins.
 *
 * Backward: dL/dq_j = T[floor(q_j)], the slopes −1 of kernel k = floor(q_j) and +1 of kernel k + 1, and 0 at
 * a kernel peak (q_j an integer: torch's d|x|/dx = 0 at 0 and relu'(0) = 0) or beyond the last kernel: a
 * table lookup, by a permute (AVX-512), by comparisons per bin, or scalar.
 *
 * Packets run from the start of the row whatever its alignment, so every result depends on the row only,
 * never on the thread that computes it.
 */
namespace ei = Eigen::internal;

template <class Scalar>
using Packet = typename ei::packet_traits<Scalar>::type;

template <class Scalar>
constexpr Index packet_size() {
  return ei::packet_traits<Scalar>::size;
}

/// Bins up to which the vectorised sweeps (one pass of the row per bin) beat the scalar scatter.
constexpr Index kMaxSweepBins = 16;

/// Entries of a row rounded up to whole packets.
template <class Scalar>
Index padded_length(Index n) noexcept {
  constexpr Index S = packet_size<Scalar>();
  return (n + S - 1) / S * S;
}

/// Calls f(b, std::integral_constant<int, K>{}) for the bins [first, last] in blocks of K = 4 (the last 1 to 3).
template <class F>
void bin_blocks(Index first, Index last, F&& f) {
  Index b = first;
  for (; last - b + 1 >= 4; b += 4) f(b, std::integral_constant<int, 4>{});
  switch (last - b + 1) {
    case 3: f(b, std::integral_constant<int, 3>{}); break;
    case 2: f(b, std::integral_constant<int, 2>{}); break;
    case 1: f(b, std::integral_constant<int, 1>{}); break;
    default: break;
  }
}

/**
 * @brief Copies the row x (n >= 2 entries) to y (padded_length(n) entries) with y[skip] and the padding set
 * to +infinity, where no kernel reaches, and returns the smallest and largest x_j over j != skip.
 */
template <class Scalar>
void prepare_row(const Scalar* x, Index n, Index skip, Scalar* y, Scalar& lo, Scalar& hi) noexcept {
  using P = Packet<Scalar>;
  constexpr Index S = packet_size<Scalar>();
  const Index L = padded_length<Scalar>(n);
  Index j = 0;
  for (; j + S <= n; j += S) ei::pstoreu(y + j, ei::ploadu<P>(x + j));
  for (; j < n; ++j) y[j] = x[j];
  // Extremes with the skipped entry and the padding replaced by another entry of the row.
  const Scalar dup = x[skip == 0 ? 1 : 0];
  for (j = n; j < L; ++j) y[j] = dup;
  y[skip] = dup;
  P pl = ei::pset1<P>(dup), ph = pl;
  for (j = 0; j < L; j += S) {
    const P v = ei::ploadu<P>(y + j);
    pl = ei::pmin(pl, v);
    ph = ei::pmax(ph, v);
  }
  lo = ei::predux_min(pl);
  hi = ei::predux_max(ph);
  const Scalar far = std::numeric_limits<Scalar>::infinity();
  for (j = n; j < L; ++j) y[j] = far;
  y[skip] = far;
}

/// H[b + k] = Σ_j clamp(b + k + 1 − y_j · inv, 0, 1) over the L entries of y (whole packets), k < K.
template <int K, class Scalar>
void clamp_sweep(const Scalar* y, Index L, Scalar inv, Index b, Scalar* H) noexcept {
  using P = Packet<Scalar>;
  constexpr Index S = packet_size<Scalar>();
  const P pinv = ei::pset1<P>(inv), zero = ei::pset1<P>(Scalar(0)), one = ei::pset1<P>(Scalar(1));
  P c[K], acc[K];
  for (int k = 0; k < K; ++k) {
    c[k] = ei::pset1<P>(Scalar(b + k + 1));
    acc[k] = zero;
  }
  for (Index j = 0; j < L; j += S) {
    const P q = ei::pmul(ei::ploadu<P>(y + j), pinv);
    for (int k = 0; k < K; ++k) acc[k] = ei::padd(acc[k], ei::pmin(ei::pmax(ei::psub(c[k], q), zero), one));
  }
  for (int k = 0; k < K; ++k) H[b + k] = ei::predux(acc[k]);
}

#if defined(EIGEN_VECTORIZE_AVX512)
/**
 * @brief AVX-512 sweep of K bins from b: counts[k] = #{j: floor(q_j) = b + k} and sums[k] = Σ over those j of
 * 1 − (q_j − floor(q_j)), by comparison masks and masked adds.
 */
template <int K>
void masked_sweep(const float* y, Index L, float inv, Index b, Index* counts, float* sums) noexcept {
  const __m512 pinv = _mm512_set1_ps(inv), one = _mm512_set1_ps(1.0f);
  __m512 bin[K], acc[K];
  Index cnt[K];
  for (int k = 0; k < K; ++k) {
    bin[k] = _mm512_set1_ps(float(b + k));
    acc[k] = _mm512_setzero_ps();
    cnt[k] = 0;
  }
  for (Index j = 0; j < L; j += 16) {
    const __m512 q = _mm512_mul_ps(_mm512_loadu_ps(y + j), pinv);
    const __m512 fl = _mm512_roundscale_ps(q, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    const __m512 w = _mm512_sub_ps(one, _mm512_sub_ps(q, fl));
    for (int k = 0; k < K; ++k) {
      const __mmask16 m = _mm512_cmp_ps_mask(fl, bin[k], _CMP_EQ_OQ);
      acc[k] = _mm512_mask_add_ps(acc[k], m, acc[k], w);
      cnt[k] += static_cast<Index>(std::bitset<16>(m).count());
    }
  }
  for (int k = 0; k < K; ++k) {
    counts[k] = cnt[k];
    sums[k] = _mm512_reduce_add_ps(acc[k]);
  }
}

template <int K>
void masked_sweep(const double* y, Index L, double inv, Index b, Index* counts, double* sums) noexcept {
  const __m512d pinv = _mm512_set1_pd(inv), one = _mm512_set1_pd(1.0);
  __m512d bin[K], acc[K];
  Index cnt[K];
  for (int k = 0; k < K; ++k) {
    bin[k] = _mm512_set1_pd(double(b + k));
    acc[k] = _mm512_setzero_pd();
    cnt[k] = 0;
  }
  for (Index j = 0; j < L; j += 8) {
    const __m512d q = _mm512_mul_pd(_mm512_loadu_pd(y + j), pinv);
    const __m512d fl = _mm512_roundscale_pd(q, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    const __m512d w = _mm512_sub_pd(one, _mm512_sub_pd(q, fl));
    for (int k = 0; k < K; ++k) {
      const __mmask8 m = _mm512_cmp_pd_mask(fl, bin[k], _CMP_EQ_OQ);
      acc[k] = _mm512_mask_add_pd(acc[k], m, acc[k], w);
      cnt[k] += static_cast<Index>(std::bitset<8>(m).count());
    }
  }
  for (int k = 0; k < K; ++k) {
    counts[k] = cnt[k];
    sums[k] = _mm512_reduce_add_pd(acc[k]);
  }
}
#endif

/**
 * @brief The cumulative histogram of a row prepared by prepare_row (L entries; `count` of them finite, with
 * extremes lo and hi): H[b] for b in [0, nb], 0 below the bin of lo and `count` from the bin of hi on, summed
 * in between. Writes the first and last bin it summed to b0 and b1. `bins` is scratch for nb + 1 Index.
 */
template <class Scalar>
void cumulative_row(const Scalar* y, Index L, Index count, Scalar inv, Index nb, Scalar lo, Scalar hi, Scalar* H,
                    Index& b0, Index& b1, Index* bins) noexcept {
  const Scalar top = Scalar(nb);
  const Index first = static_cast<Index>(std::min(std::floor(lo * inv), top));
  const Index last = static_cast<Index>(std::min(std::floor(hi * inv), top));
  b0 = first;
  b1 = last;
  for (Index b = 0; b < first; ++b) H[b] = Scalar(0);
  for (Index b = last + 1; b <= nb; ++b) H[b] = Scalar(count);
  // Per bin b in [first, last]: the entries with floor(q) = b (bins[b]) and their 1 − frac(q) (H[b]), then
  // the prefix counts.
  auto finish = [&] {
    Index below = 0;
    for (Index b = first; b <= last; ++b) {
      H[b] += Scalar(below);
      below += bins[b];
    }
  };
  if (last - first + 1 > kMaxSweepBins) {
    for (Index b = first; b <= last; ++b) {
      bins[b] = 0;
      H[b] = Scalar(0);
    }
    for (Index j = 0; j < L; ++j) {
      const Scalar q = y[j] * inv;
      const Scalar fl = std::floor(q);
      if (!(fl <= Scalar(last))) continue;  // the skipped entry and the padding
      const auto b = static_cast<Index>(fl);
      ++bins[b];
      H[b] += Scalar(1) - (q - fl);
    }
    finish();
    return;
  }
#if defined(EIGEN_VECTORIZE_AVX512)
  bin_blocks(first, last, [&](Index b, auto K) { masked_sweep<decltype(K)::value>(y, L, inv, b, bins + b, H + b); });
  finish();
#else
  (void)bins;
  bin_blocks(first, last, [&](Index b, auto K) { clamp_sweep<decltype(K)::value>(y, L, inv, b, H); });
#endif
}

/// One sweep of gradient_row over the K bins from b: g_j = T[b + k] where floor(q_j) = b + k < q_j.
template <int K, bool First, class Scalar>
void lookup_sweep(const Scalar* x, Index n, Scalar inv, Index b, const Scalar* T, Scalar* g) noexcept {
  using P = Packet<Scalar>;
  constexpr Index S = packet_size<Scalar>();
  const P pinv = ei::pset1<P>(inv), zero = ei::pset1<P>(Scalar(0)), none = ei::pset1<P>(Scalar(-1));
  P bin[K], val[K];
  for (int k = 0; k < K; ++k) {
    bin[k] = ei::pset1<P>(Scalar(b + k));
    val[k] = ei::pset1<P>(T[b + k]);
  }
  Index j = 0;
  for (; j + S <= n; j += S) {
    const P q = ei::pmul(ei::ploadu<P>(x + j), pinv);
    P fl = ei::pfloor(q);
    fl = ei::pselect(ei::pcmp_lt(fl, q), fl, none);  // a kernel peak: no bin
    P out = First ? zero : ei::ploadu<P>(g + j);
    for (int k = 0; k < K; ++k) out = ei::pselect(ei::pcmp_eq(fl, bin[k]), val[k], out);
    ei::pstoreu(g + j, out);
  }
  for (; j < n; ++j) {
    const Scalar q = x[j] * inv;
    const Scalar fl = std::floor(q);
    Scalar out = First ? Scalar(0) : g[j];
    if (fl < q)
      for (int k = 0; k < K; ++k)
        if (fl == Scalar(b + k)) out = T[b + k];
    g[j] = out;
  }
}

#if defined(EIGEN_VECTORIZE_AVX512)
/// gradient_row's lookup as one two-register permute per packet (AVX-512, at most 32 float or 16 double
/// bins; returns false beyond).
inline bool lookup_permute(const float* x, Index n, float inv, Index nb, const float* T, float* g) noexcept {
  if (nb + 1 > 32) return false;
  alignas(64) float tab[32] = {};
  std::copy(T, T + nb + 1, tab);
  const __m512 lo = _mm512_load_ps(tab), hi = _mm512_load_ps(tab + 16);
  const __m512 pinv = _mm512_set1_ps(inv), top = _mm512_set1_ps(float(nb));
  auto one = [&](__m512 v) {
    const __m512 q = _mm512_mul_ps(v, pinv);
    const __m512 fl = _mm512_roundscale_ps(q, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    const __mmask16 m = _mm512_cmp_ps_mask(fl, q, _CMP_LT_OQ) & _mm512_cmp_ps_mask(fl, top, _CMP_LE_OQ);
    return _mm512_maskz_permutex2var_ps(m, lo, _mm512_cvttps_epi32(_mm512_maskz_mov_ps(m, fl)), hi);
  };
  Index j = 0;
  for (; j + 16 <= n; j += 16) _mm512_storeu_ps(g + j, one(_mm512_loadu_ps(x + j)));
  if (j < n) {
    const auto rest = static_cast<__mmask16>((1u << static_cast<unsigned>(n - j)) - 1u);
    _mm512_mask_storeu_ps(g + j, rest, one(_mm512_maskz_loadu_ps(rest, x + j)));
  }
  return true;
}

inline bool lookup_permute(const double* x, Index n, double inv, Index nb, const double* T, double* g) noexcept {
  if (nb + 1 > 16) return false;
  alignas(64) double tab[16] = {};
  std::copy(T, T + nb + 1, tab);
  const __m512d lo = _mm512_load_pd(tab), hi = _mm512_load_pd(tab + 8);
  const __m512d pinv = _mm512_set1_pd(inv), top = _mm512_set1_pd(double(nb));
  auto one = [&](__m512d v) {
    const __m512d q = _mm512_mul_pd(v, pinv);
    const __m512d fl = _mm512_roundscale_pd(q, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    const __mmask8 m = _mm512_cmp_pd_mask(fl, q, _CMP_LT_OQ) & _mm512_cmp_pd_mask(fl, top, _CMP_LE_OQ);
    const __m512i idx = _mm512_cvtepi32_epi64(_mm512_cvttpd_epi32(_mm512_maskz_mov_pd(m, fl)));
    return _mm512_maskz_permutex2var_pd(m, lo, idx, hi);
  };
  Index j = 0;
  for (; j + 8 <= n; j += 8) _mm512_storeu_pd(g + j, one(_mm512_loadu_pd(x + j)));
  if (j < n) {
    const auto rest = static_cast<__mmask8>((1u << static_cast<unsigned>(n - j)) - 1u);
    _mm512_mask_storeu_pd(g + j, rest, one(_mm512_maskz_loadu_pd(rest, x + j)));
  }
  return true;
}
#endif

/**
 * @brief g_j = T[floor(q_j)] for floor(q_j) < q_j and floor(q_j) <= nb, else 0, for j in [0, n), given that
 * every such floor(q_j) lies in [b0, b1] (the caller fixes the positives and the diagonal).
 */
template <class Scalar>
void gradient_row(const Scalar* x, Index n, Scalar inv, Index nb, Index b0, Index b1, const Scalar* T,
                  Scalar* g) noexcept {
#if defined(EIGEN_VECTORIZE_AVX512)
  if (lookup_permute(x, n, inv, nb, T, g)) return;
#endif
  if (b1 - b0 + 1 > kMaxSweepBins) {
    for (Index j = 0; j < n; ++j) {
      const Scalar q = x[j] * inv;
      const Scalar fl = std::floor(q);
      g[j] = fl < q && fl <= Scalar(nb) ? T[static_cast<Index>(fl)] : Scalar(0);
    }
    return;
  }
  bool first = true;
  bin_blocks(b0, b1, [&](Index b, auto K) {
    constexpr int k = decltype(K)::value;
    if (first) lookup_sweep<k, true>(x, n, inv, b, T, g);
    else lookup_sweep<k, false>(x, n, inv, b, T, g);
    first = false;
  });
  if (first) std::fill(g, g + n, Scalar(0));
}

}  // namespace fastap_rows
}  // namespace detail

/**
 * @brief FastAP loss: one minus a histogram approximation of each anchor's average precision.
 *
 * Distances d_ij (squared Euclidean on L2-normalised rows by default, so in [0, 4]) are binned into
 * B + 1 = num_bins + 1 triangular kernels centred at t_b = linspace(0, 2^power, B + 1), of half-width
 * δ = 2^power / B: @f$ K_b(d) = \mathrm{relu}(1 - |d - t_b| / \delta) @f$. Per anchor i, over j != i,
 * @f$ h^+_b = \sum_{j:\,y_j = y_i} K_b(d_{ij}) @f$, @f$ h^-_b = \sum_{j:\,y_j \ne y_i} K_b(d_{ij}) @f$,
 * @f$ H^+_b = \sum_{c \le b} h^+_c @f$, @f$ H_b = \sum_{c \le b} (h^+_c + h^-_c) @f$, and
 * @f[ \mathrm{FastAP}_i = \frac{1}{N^+_i} \sum_{b:\ h^+_b H^+_b > 0,\ H_b > 0} \frac{h^+_b H^+_b}{H_b},
 *   \qquad L_i = (1 - \mathrm{FastAP}_i)\, w_i, @f]
 * with N^+_i the number of positives of i and w_i the miner weight (pytorch-metric-learning's
 * convert_to_weights: how often row i appears in the mined tuple over the largest count; 1 without a
 * tuple). Positives and negatives always come from the labels; a mined tuple only sets the weights.
 * Reduction (default Reduction::mean): mean over the anchors with a positive; anchors without one are
 * skipped (stats().skipped_anchors). The loss is 0 when no anchor has a positive or no bin is kept.
 *
 * The gradient is exact: through the piecewise-linear kernels (zero at a kernel's peak and at its ends,
 * as torch's d|x|/dx = 0 at 0 and relu'(0) = 0) and only through the bins that the sum keeps (the
 * others give no gradient, as torch's masked indexing). Cost O(n^2) after the distance matrix, each
 * distance touching at most two kernels: distances are taken in bin widths (d / δ, so the centres are
 * b δ: torch's linspace up to rounding); per row, the histogram of all the other rows is cumulative by
 * construction (Σ_j clamp(b + 1 − d_ij / δ, 0, 1)), one vectorised pass per bin between the row's smallest
 * and largest distance (one scalar pass past 16 such bins), the positives come from the label groups, and
 * the gradient is a lookup of one table per row (detail::fastap_rows). Rows are independent and merged in
 * row order: the same bits for any number of threads.
 *
 * Defaults follow pytorch-metric-learning: num_bins 10, LpDistance(power=2) on L2-normalised rows. As
 * pytorch-metric-learning asserts, the distance must be LpDistance with normalize_embeddings and p = 2
 * (any power > 0); other distances throw std::invalid_argument. stats(): terms (anchors with a
 * positive), active_terms (elements > 0), skipped_anchors, degenerate (zero-norm rows).
 *
 * PML equivalent: `losses.FastAPLoss(num_bins)`. No deliberate difference.
 *
 * @tparam Scalar float or double.
 * @note One object per thread: evaluate() uses the object's workspace. A second call with the same shapes
 * allocates nothing of kshot's own.
 */
template <class Scalar = float>
class FastAPLoss {
  static_assert(std::is_floating_point_v<Scalar>, "kshot::FastAPLoss<Scalar>: Scalar must be float or double");

 public:
  int num_bins = 10;                                    ///< number of histogram intervals; >= 1
  LossDistance distance = LossDistance::squared_lp();   ///< LpDistance(power=2), normalised, p = 2
  Reduction reduction = Reduction::loss_default;        ///< default: mean over the anchors with a positive

  /// The loss over the batch; a mined tuple, when given, sets the miner weights.
  Scalar evaluate(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels, Mined mined = {}) {
    return run(emb, labels, mined, nullptr);
  }
  /// The loss, and its gradient with respect to `emb` written to `grad` (n x d, overwritten).
  Scalar evaluate(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels, Mined mined, RowMatrixRef<Scalar> grad) {
    return run(emb, labels, mined, &grad);
  }
  /// The loss over the batch, and its gradient.
  Scalar evaluate(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels, RowMatrixRef<Scalar> grad) {
    return run(emb, labels, Mined{}, &grad);
  }

  /// Counts from the last call.
  const LossStats& stats() const noexcept { return stats_; }

  /// Pre-sizes the workspace for n embeddings of dimension d.
  void reserve(Index n, Index d) {
    dist_.reserve(n, n, d);
    const auto un = static_cast<std::size_t>(n);
    const auto bins = static_cast<std::size_t>(std::max(num_bins, 1) + 1);
    for (auto* v : {&weight_, &fastap_, &val_, &coeff_, &elem_coeff_}) v->reserve(un);
    hist_.reserve(un * 2 * bins);
    dhist_.reserve(un * 2 * bins);
    order_.reserve(un);
    group_.reserve(un);
    range_.reserve(un);
    npos_.reserve(un);
    anchor_.reserve(un);
    counts_.reserve(un);
    kept_.reserve(un);
    scratch_.prepare(std::max(detail::fastap_rows::padded_length<Scalar>(n), Index(bins)), 1, 1);
  }

 private:
  Scalar run(const ConstRowMatrixRef<Scalar>& emb, const ConstLabelRef& labels, const Mined& mined,
             RowMatrixRef<Scalar>* grad) {
    constexpr const char* where = "kshot::FastAPLoss::evaluate()";
    detail::check_embeddings(emb, labels, where);
    detail::check_distance(distance, where);
    KSHOT_CHECK(distance.kind == DistanceKind::lp && distance.normalize_embeddings && distance.p == 2, where,
                detail::cat("the distance is ", distance.describe(),
                            " but FastAP needs LpDistance with normalize_embeddings and p = 2"));
    KSHOT_CHECK(num_bins >= 1, where, detail::cat("num_bins is ", num_bins, " but must be >= 1"));
    detail::check_mined(mined, emb.rows(), where);
    if (grad != nullptr) detail::check_grad(*grad, emb.rows(), emb.cols(), where, "grad");
    stats_ = LossStats{};
    const Index n = emb.rows();
    const auto un = static_cast<std::size_t>(n);
    const detail::ZeroGradientUnlessWritten<Scalar, detail::LossDistanceMatrix<Scalar>> zero_unless_written(grad, dist_);

    // Rows by (label, row): the positives of row i are the other rows of its group [start, end).
    order_.clear();
    for (Index i = 0; i < n; ++i) order_.emplace_back(labels[i], i);
    std::sort(order_.begin(), order_.end());
    npos_.resize(un);
    group_.resize(un);
    for (std::size_t t = 0; t < un;) {
      std::size_t e = t;
      while (e < un && order_[e].first == order_[t].first) ++e;
      for (std::size_t u = t; u < e; ++u) {
        const auto row = static_cast<std::size_t>(order_[u].second);
        npos_[row] = static_cast<Index>(e - t) - 1;
        group_[row] = {static_cast<Index>(t), static_cast<Index>(e)};
      }
      t = e;
    }
    anchor_.clear();
    for (Index i = 0; i < n; ++i)
      if (npos_[static_cast<std::size_t>(i)] > 0) anchor_.push_back(i);
    const Index K = static_cast<Index>(anchor_.size());
    stats_.skipped_anchors = n - K;
    if (K == 0) return Scalar(0);

    weight_.resize(un);
    detail::miner_weights(mined, n, weight_.data(), counts_);

    dist_.compute_self(distance, emb, stats_);
    auto M = dist_.matrix();

    // Kernel centres t_b = b δ, δ = 2^power / B: distances are measured in bin widths, q = d / δ.
    const Index nb = num_bins, bins = nb + 1;
    const double hmax = std::pow(2.0, distance.power);
    const Scalar inv = Scalar(double(nb) / hmax);

    // Per row: h+ at hist_[row * 2B'], the cumulative histogram H_b = Σ_(c <= b) (h+_c + h-_c) right after
    // it; FastAP_i (before dividing by N+_i); the bins [b0, b1] that the row's distances reach.
    const auto ub = static_cast<std::size_t>(bins);
    hist_.resize(un * 2 * ub);
    range_.resize(un);
    fastap_.assign(un, Scalar(0));
    kept_.assign(un, 0);
    const bool par = detail::worth_parallel(n, double(n) * double(n) * 4);
    // Per thread: the row with its diagonal and padding out of reach (values), bin counts (indices).
    const Index L = detail::fastap_rows::padded_length<Scalar>(n);
    scratch_.prepare(std::max(L, bins), /*values=*/1, /*indices=*/1);
    auto row_value = [&](Index i) {
      const auto ui = static_cast<std::size_t>(i);
      if (npos_[ui] == 0) return;
      Scalar* hp = &hist_[ui * 2 * ub];
      Scalar* H = hp + ub;
      const Scalar* x = &M(i, 0);
      const int slot = scratch_.slot();
      Scalar* y = scratch_.values(slot, 0);
      Scalar lo, hi;
      detail::fastap_rows::prepare_row(x, n, i, y, lo, hi);
      Index b0, b1;
      detail::fastap_rows::cumulative_row(y, L, n - 1, inv, nb, lo, hi, H, b0, b1, scratch_.indices(slot, 0));
      range_[ui] = {b0, b1};
      // h+ from the positives (the other rows of the group): K_k = 1 - frac(q), K_(k+1) = frac(q).
      std::fill(hp, hp + ub, Scalar(0));
      const auto& g = group_[ui];
      for (Index t = g.first; t < g.second; ++t) {
        const Index j = order_[static_cast<std::size_t>(t)].second;
        if (j == i) continue;
        const Scalar q = x[j] * inv;
        const Scalar kf = std::floor(q);
        if (!(kf <= Scalar(nb))) continue;  // beyond the last kernel
        const Scalar f = q - kf;
        const auto k = static_cast<std::size_t>(kf);
        hp[k] += Scalar(1) - f;
        if (k < static_cast<std::size_t>(nb) && f > Scalar(0)) hp[k + 1] += f;
      }
      // Only the bins [b0, b1 + 1] hold mass: below, H = 0; above, h+ = 0.
      Scalar Hp = 0, F = 0;
      unsigned char any = 0;
      const auto top = static_cast<std::size_t>(std::min(b1 + 1, nb));
      for (auto b = static_cast<std::size_t>(b0); b <= top; ++b) {
        Hp += hp[b];
        const Scalar prod = hp[b] * Hp;
        if (prod > Scalar(0) && H[b] > Scalar(0)) {
          F += prod / H[b];
          any = 1;
        }
      }
      fastap_[ui] = F;
      kept_[ui] = any;
    };
    detail::for_owned_rows(n, par, row_value);
    bool any_kept = false;
    for (std::size_t i = 0; i < un; ++i) any_kept = any_kept || kept_[i] != 0;
    if (!any_kept) return Scalar(0);

    val_.resize(static_cast<std::size_t>(K));
    for (Index t = 0; t < K; ++t) {
      const auto ui = static_cast<std::size_t>(anchor_[static_cast<std::size_t>(t)]);
      val_[static_cast<std::size_t>(t)] = (Scalar(1) - fastap_[ui] / Scalar(npos_[ui])) * weight_[ui];
    }
    const detail::ReduceMode mode = detail::resolve_reduction(reduction, detail::ReduceMode::mean);
    coeff_.assign(un, Scalar(0));
    elem_coeff_.resize(static_cast<std::size_t>(K));
    const Scalar value = detail::reduce(val_.data(), K, mode, Scalar(0),
                                        grad != nullptr ? elem_coeff_.data() : nullptr, stats_);
    if (grad == nullptr) return value;
    // dL/dFastAP_i (FastAP before the division by N+_i).
    for (Index t = 0; t < K; ++t) {
      const auto ui = static_cast<std::size_t>(anchor_[static_cast<std::size_t>(t)]);
      coeff_[ui] = -elem_coeff_[static_cast<std::size_t>(t)] * weight_[ui] / Scalar(npos_[ui]);
    }

    auto G = dist_.grad(/*zero=*/false);
    dhist_.resize(un * 2 * ub);
    auto row_grad = [&](Index i) {
      const auto ui = static_cast<std::size_t>(i);
      const Scalar gF = coeff_[ui];
      if (gF == Scalar(0) || kept_[ui] == 0) {
        G.row(i).setZero();
        return;
      }
      const Scalar* hp = &hist_[ui * 2 * ub];
      const Scalar* H = hp + ub;
      Scalar* dp = &dhist_[ui * 2 * ub];
      Scalar* dn = dp + ub;
      // dF/dh+_b and dF/dh-_b by suffix sums over the kept bins: phi_b = h+_b H+_b / H_b;
      // dphi_b/dh+_c = [c = b] H+_b/H_b + h+_b/H_b - phi_b/H_b (c <= b), dphi_b/dh-_c = -phi_b/H_b (c <= b).
      // Outside the bins [b0, b1 + 1] that hold mass, the suffix sums are 0 above and unused below.
      const auto range = range_[ui];
      const auto lo = static_cast<std::size_t>(range.first);
      const auto top = static_cast<std::size_t>(std::min(range.second + 1, nb));
      std::fill(dp, dp + 2 * ub, Scalar(0));
      Scalar Hp = 0;
      for (std::size_t b = lo; b <= top; ++b) {
        Hp += hp[b];
        dp[b] = Hp;  // H+_b for now
      }
      Scalar sa = 0, sc = 0;
      for (std::size_t b = top + 1; b-- > lo;) {
        const Scalar Hpb = dp[b], Hb = H[b];
        const Scalar prod = hp[b] * Hpb;
        Scalar direct = 0;
        if (prod > Scalar(0) && Hb > Scalar(0)) {
          const Scalar r = Scalar(1) / Hb;
          const Scalar phi_r = prod * r * r;  // phi_b / H_b
          sa += hp[b] * r - phi_r;
          sc -= phi_r;
          direct = Hpb * r;
        }
        dp[b] = gF * (direct + sa);
        dn[b] = gF * sc;
      }
      // dL/dq for q in (b, b + 1): the slopes -1 of kernel b and +1 of kernel b + 1; then per unit of d.
      for (std::size_t b = lo; b <= top; ++b) {
        dp[b] = ((b + 1 < ub ? dp[b + 1] : Scalar(0)) - dp[b]) * inv;
        dn[b] = ((b + 1 < ub ? dn[b + 1] : Scalar(0)) - dn[b]) * inv;
      }
      // dn for the negatives over the whole row, then dp for the positives, and 0 on the diagonal.
      const Scalar* x = &M(i, 0);
      Scalar* gi = &G(i, 0);
      detail::fastap_rows::gradient_row(x, n, inv, nb, range.first, range.second, dn, gi);
      const auto& g = group_[ui];
      for (Index t = g.first; t < g.second; ++t) {
        const Index j = order_[static_cast<std::size_t>(t)].second;
        const Scalar q = x[j] * inv;
        const Scalar kf = std::floor(q);
        gi[j] = kf < q && kf <= Scalar(nb) ? dp[static_cast<std::size_t>(kf)] : Scalar(0);
      }
      gi[i] = 0;
    };
    detail::for_owned_rows(n, par, row_grad);
    dist_.backward_self(*grad);
    return value;
  }

  detail::LossDistanceMatrix<Scalar> dist_;
  std::vector<std::pair<Label, Index>> order_;
  std::vector<std::pair<Index, Index>> group_, range_;
  std::vector<Index> npos_, anchor_, counts_;
  std::vector<Scalar> weight_, hist_, dhist_, fastap_, val_, coeff_, elem_coeff_;
  std::vector<unsigned char> kept_;
  detail::pair_rows::RowScratch<Scalar> scratch_;
  LossStats stats_;
};

}  // namespace kshot

#endif  // KSHOT_LOSSES_FASTAP_HPP
