/**
 * @file kshot/kernels/ip_kernel.hpp
 * @brief The fused score-and-select kernel of FlatIndex<float> on AVX-512 builds (in the kernel module below
 * retrieval and losses, which both use it): 64 queries x 6 items of
 * inner products per register tile (queries packed k-major, item values broadcast straight from the row-major
 * catalogue, so the catalogue is never packed), each tile compared in registers with the group's queries'
 * current k-th best; only the lanes that reach it leave the registers.
 *
 * Every score is one sequential chain of fused multiply-adds over the dimension, so its bits depend neither on
 * the item's position in storage nor on blocking or threads.
 *
 * SPDX-License-Identifier: MIT
 */
// IWYU pragma: private
#ifndef KSHOT_KERNELS_IP_KERNEL_HPP
#define KSHOT_KERNELS_IP_KERNEL_HPP

#include "kshot/core/types.hpp"

#if defined(__AVX512F__) && !defined(KSHOT_RETRIEVAL_NO_KERNEL)
#define KSHOT_RETRIEVAL_HAS_KERNEL 1
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#else
#define KSHOT_RETRIEVAL_HAS_KERNEL 0
#endif

// bfloat16 screening: AVX512_BF16 builds (-march=native on AMD Zen 4, Intel Cooper Lake and Sapphire Rapids);
// define KSHOT_RETRIEVAL_NO_SCREEN to leave it out.
#if KSHOT_RETRIEVAL_HAS_KERNEL && defined(__AVX512BF16__) && !defined(KSHOT_RETRIEVAL_NO_SCREEN)
#define KSHOT_RETRIEVAL_HAS_SCREEN 1
#else
#define KSHOT_RETRIEVAL_HAS_SCREEN 0
#endif

#if KSHOT_RETRIEVAL_HAS_KERNEL

namespace kshot {
namespace detail {

/// Query registers per tile (16 queries each). Tiles of 4 x 6 (24 accumulators, 10 loads per 24 FMAs) measured
/// 5-10% faster than 2 x 12 and 3 x 8, and 25% faster than 1 x 24 (d = 128, AMD EPYC with AVX-512).
inline constexpr int kernel_vectors = 4;
/// Queries per kernel group.
inline constexpr Index kernel_group = 16 * kernel_vectors;
/// Items per register tile.
inline constexpr int kernel_items = 6;

/**
 * @brief Packs `count` (<= kernel_group) query rows starting at `q` (row stride `stride`) k-major:
 * dst[k * kernel_group + lane], lanes past `count` zero. Full runs of 16 rows go 16 x 16 values at a time through
 * a register transpose (Eigen's ptranspose); the rest element by element (the scalar loop alone took 10 us for
 * 256 rows of 128 values, more than normalising them).
 */
inline void pack_query_group(const float* q, Index stride, Index count, Index d, float* dst) noexcept {
  for (Index l0 = 0; l0 < kernel_group; l0 += 16) {
    Index k0 = 0;
    if (count - l0 >= 16) {
      for (; k0 + 16 <= d; k0 += 16) {
        // Eigen's packet type as a template argument: GCC warns that the vector attributes are ignored there.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"
        Eigen::internal::PacketBlock<Eigen::internal::Packet16f, 16> block;
#pragma GCC diagnostic pop
        for (int r = 0; r < 16; ++r) block.packet[r] = _mm512_loadu_ps(q + (l0 + r) * stride + k0);
        Eigen::internal::ptranspose(block);
        for (int c = 0; c < 16; ++c) _mm512_storeu_ps(dst + (k0 + c) * kernel_group + l0, block.packet[c]);
      }
    }
    for (Index k = k0; k < d; ++k)
      for (Index lane = l0; lane < l0 + 16; ++lane)
        dst[k * kernel_group + lane] = lane < count ? q[lane * stride + k] : 0.0f;
  }
}

/**
 * @brief acc[v][i] = inner products of the packed queries of lanes 16 v .. 16 v + 15 with item row
 * x + i * stride, for i < NI: one FMA chain over k = 0 .. d - 1 per lane. The queries' values for k start at
 * qpack + k * qstride (kernel_group when packed; any stride when the kernel_group lanes already lie side by side),
 * and item i's value for k is x[i * stride + k * kstride] (kstride 1 for rows; items that are columns of a
 * row-major matrix have stride 1 and kstride its row stride).
 */
template <int NI>
inline void kernel_tile(const float* qpack, const float* x, Index stride, Index d, __m512 (&acc)[kernel_vectors][NI],
                        Index qstride = kernel_group, Index kstride = 1) noexcept {
  for (int v = 0; v < kernel_vectors; ++v)
    for (int i = 0; i < NI; ++i) acc[v][i] = _mm512_setzero_ps();
  for (Index k = 0; k < d; ++k) {
    __m512 q[kernel_vectors];
    for (int v = 0; v < kernel_vectors; ++v) q[v] = _mm512_loadu_ps(qpack + k * qstride + 16 * v);
    for (int i = 0; i < NI; ++i) {
      const __m512 xv = _mm512_set1_ps(x[i * stride + k * kstride]);
      for (int v = 0; v < kernel_vectors; ++v) acc[v][i] = _mm512_fmadd_ps(q[v], xv, acc[v][i]);
    }
  }
}

/**
 * @brief Scores items [0, count) of `x` (row stride `stride`) against one packed query group and offers every
 * lane whose key reaches that lane's threshold to `offer(lane, item, key)`, which returns the lane's new
 * threshold.
 *
 * @param threshold kernel_group per-lane thresholds (+inf for unused lanes), updated through `offer`.
 * @param distance when true, keys are -max(0, ||q||^2 + ||x||^2 - 2 q.x) with qnorm (one per lane) and xnorm
 * (per item); else keys are the inner products.
 */
template <class Offer>
inline void kernel_scan(const float* qpack, const float* x, Index stride, Index count, Index d, float* threshold,
                        bool distance, const float* qnorm, const float* xnorm, Offer&& offer) {
  alignas(64) float lanes[16];
  const __m512 zero = _mm512_setzero_ps();
  const __m512 two = _mm512_set1_ps(2.0f);
  __m512 qn[kernel_vectors], t[kernel_vectors];
  for (int v = 0; v < kernel_vectors; ++v) {
    qn[v] = distance ? _mm512_loadu_ps(qnorm + 16 * v) : zero;
    t[v] = _mm512_loadu_ps(threshold + 16 * v);
  }
  auto select = [&](Index item, __m512* keys) {
    if (distance) {
      const __m512 xn = _mm512_set1_ps(xnorm[item]);
      for (int v = 0; v < kernel_vectors; ++v)
        keys[v] = _mm512_min_ps(_mm512_sub_ps(_mm512_mul_ps(two, keys[v]), _mm512_add_ps(xn, qn[v])), zero);
    }
    __mmask16 m[kernel_vectors];
    unsigned any = 0;
    for (int v = 0; v < kernel_vectors; ++v) {
      m[v] = _mm512_cmp_ps_mask(keys[v], t[v], _CMP_GE_OQ);
      any |= m[v];
    }
    if (any == 0) return;
    for (int v = 0; v < kernel_vectors; ++v) {
      if (m[v] == 0) continue;
      _mm512_store_ps(lanes, keys[v]);
      for (unsigned bits = m[v]; bits != 0; bits &= bits - 1) {
        const int lane = 16 * v + __builtin_ctz(bits);
        threshold[lane] = offer(lane, item, lanes[lane - 16 * v]);
      }
    }
    for (int v = 0; v < kernel_vectors; ++v) t[v] = _mm512_loadu_ps(threshold + 16 * v);
  };
  Index j = 0;
  for (; j + kernel_items <= count; j += kernel_items) {
    __m512 acc[kernel_vectors][kernel_items];
    kernel_tile<kernel_items>(qpack, x + j * stride, stride, d, acc);
    for (int i = 0; i < kernel_items; ++i) {
      __m512 keys[kernel_vectors];
      for (int v = 0; v < kernel_vectors; ++v) keys[v] = acc[v][i];
      select(j + i, keys);
    }
  }
  for (; j < count; ++j) {
    __m512 acc[kernel_vectors][1];
    kernel_tile<1>(qpack, x + j * stride, stride, d, acc);
    __m512 keys[kernel_vectors];
    for (int v = 0; v < kernel_vectors; ++v) keys[v] = acc[v][0];
    select(j, keys);
  }
}

#if KSHOT_RETRIEVAL_HAS_SCREEN

// ---- bf16 screening (AVX512_BF16 builds) ------------------------------------------------------------------------
//
// Each tile is first scored in bfloat16 with VDPBF16PS (two products per lane and instruction: twice the fp32
// FMA's work per instruction). An item can reach a query's threshold t only if its screening score s~ satisfies
// s~ >= t - (||q|| a_x + ||q - q~|| b_x), which bounds |s - s~| for the exact float score s (screen_chain_factor); only
// those (query, item) pairs are scored exactly, by the same sequential FMA chain as kernel_tile, and offered in
// the same order as kernel_scan would offer them. The offers, and therefore the results, are bitwise those of
// kernel_scan.

/// Rounds a float to bfloat16 (round to nearest even), returned as its 16 bits.
inline std::uint32_t to_bf16_bits(float f) noexcept {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  u += 0x7FFFu + ((u >> 16) & 1u);
  return u >> 16;
}

/// The value of bfloat16 bits `b` (exact in double).
inline double bf16_value(std::uint32_t b) noexcept {
  const std::uint32_t u = b << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return static_cast<double>(f);
}

/// True for a value the screening bound does not cover: |v| >= 2^50 (products could overflow) or a nonzero
/// |v| < 2^-50 (products could fall below the range where VDPBF16PS keeps them). Rows or queries holding one are
/// always scored exactly.
inline bool screen_extreme(float v) noexcept {
  const float a = std::fabs(v);
  return a >= 0x1p50f || (a != 0.0f && a < 0x1p-50f);
}

/**
 * @brief The bound on |s - s~| for the exact float score s (a sequential FMA chain over d terms) and the
 * screening score s~ (VDPBF16PS over the bfloat16 roundings q~, x~), when no value is extreme:
 *
 *   |s - s~| <= ||q|| a_x + ||q - q~|| b_x,   a_x = ||x - x~|| + g ||x||,   b_x = ||x~||.
 *
 * The true sum differs from the sum of the rounded products by q.(x - x~) + (q - q~).x~ (Cauchy-Schwarz on
 * each). With u = 2^-24 and G = d u / (1 - d u): the float chain is within G sum|q_k x_k| <= G ||q|| ||x|| of
 * the true sum; VDPBF16PS sums the exact products of the roundings with at most d roundings, within
 * G ||q~|| ||x~|| <= G (1 + 2^-8)^2 ||q|| ||x||; partial sums flushed to zero below 2^-126 add at most d 2^-126,
 * at most d u ||q|| ||x|| because nonzero values are at least 2^-50 in magnitude. So g = (G (1 + (1 + 2^-8)^2) +
 * d u) with a 2^-10 relative margin. The norms are summed in double and rounded up.
 */
inline double screen_chain_factor(Index d) noexcept {
  const double u = 0x1p-24, b = 0x1p-8, dd = static_cast<double>(d);
  const double g = dd * u / (1.0 - dd * u);
  return (g * (1.0 + (1.0 + b) * (1.0 + b)) + dd * u) * (1.0 + 0x1p-10);
}

/// The smallest float >= x (x finite and >= 0, or +inf).
inline float round_up_to_float(double x) noexcept {
  float f = static_cast<float>(x);
  if (static_cast<double>(f) < x) f = std::nextafter(f, std::numeric_limits<float>::infinity());
  return f;
}

/// A norm summed in double, with a 2^-20 relative margin for that sum's rounding, rounded up to float.
inline float norm_bound(double squared_sum) noexcept {
  return round_up_to_float(std::sqrt(squared_sum) * (1.0 + 0x1p-20));
}

/// The squared norms a vector's screening bound needs: of x, of its rounding error x - x~, and of x~; and whether
/// x holds an extreme value.
struct ScreenSums {
  double value = 0.0, rounding = 0.0, rounded = 0.0;
  bool extreme = false;
};

/**
 * @brief Writes x (d values) as bfloat16 pairs to dst[0], dst[stride], ... (value 2p in the low half of pair p,
 * 2p + 1 in the high half; an odd d gets a zero partner) and returns its ScreenSums (summed in double).
 */
inline ScreenSums convert_screen_vector(const float* x, Index d, std::uint32_t* dst, Index stride) noexcept {
  ScreenSums s;
  for (Index p = 0; p < (d + 1) / 2; ++p) {
    const float lo = x[2 * p], hi = 2 * p + 1 < d ? x[2 * p + 1] : 0.0f;
    const std::uint32_t blo = to_bf16_bits(lo), bhi = to_bf16_bits(hi);
    dst[p * stride] = blo | (bhi << 16);
    s.extreme = s.extreme || screen_extreme(lo) || screen_extreme(hi);
    const double rlo = bf16_value(blo), rhi = bf16_value(bhi);
    s.value += static_cast<double>(lo) * lo + static_cast<double>(hi) * hi;
    s.rounding += (lo - rlo) * (lo - rlo) + (hi - rhi) * (hi - rhi);
    s.rounded += rlo * rlo + rhi * rhi;
  }
  return s;
}

/**
 * @brief Writes row x (d values) as bfloat16 pairs to dst (convert_screen_vector) and its bound terms
 * ab[0] = a_x, ab[1] = b_x (see screen_chain_factor), both +inf when x holds an extreme value.
 */
inline void pack_screen_row(const float* x, Index d, double chain, std::uint32_t* dst, float* ab) noexcept {
  const ScreenSums s = convert_screen_vector(x, d, dst, 1);
  const float inf = std::numeric_limits<float>::infinity();
  ab[0] = s.extreme ? inf : round_up_to_float((std::sqrt(s.rounding) + chain * std::sqrt(s.value)) * (1.0 + 0x1p-20));
  ab[1] = s.extreme ? inf : norm_bound(s.rounded);
}

/**
 * @brief Packs `count` (<= kernel_group) query rows as bfloat16 pairs, pair-major: dst[p * kernel_group + lane]
 * (lanes past `count` zero), and writes each lane's bound terms: e1[lane] = ||q||, e2[lane] = ||q - q~||
 * (rounded up; +inf for a query with an extreme value; 0 for unused lanes).
 */
inline void pack_screen_group(const float* q, Index stride, Index count, Index d, std::uint32_t* dst, float* e1,
                              float* e2) noexcept {
  const Index pairs = (d + 1) / 2;
  const float inf = std::numeric_limits<float>::infinity();
  for (Index lane = 0; lane < kernel_group; ++lane) {
    if (lane >= count) {
      for (Index p = 0; p < pairs; ++p) dst[p * kernel_group + lane] = 0;
      e1[lane] = e2[lane] = 0.0f;
      continue;
    }
    const ScreenSums s = convert_screen_vector(q + lane * stride, d, dst + lane, kernel_group);
    e1[lane] = s.extreme ? inf : norm_bound(s.value);
    e2[lane] = s.extreme ? inf : norm_bound(s.rounding);
  }
}

/// acc[v][i] = screening scores of the packed bfloat16 queries (lanes 16 v .. 16 v + 15) against the bfloat16
/// row xb + i * pstride, for i < NI.
template <int NI>
inline void screen_tile(const std::uint32_t* qpack, const std::uint32_t* xb, Index pstride, Index pairs,
                        __m512 (&acc)[kernel_vectors][NI]) noexcept {
  for (int v = 0; v < kernel_vectors; ++v)
    for (int i = 0; i < NI; ++i) acc[v][i] = _mm512_setzero_ps();
  for (Index p = 0; p < pairs; ++p) {
    __m512i q[kernel_vectors];
    for (int v = 0; v < kernel_vectors; ++v)
      q[v] = _mm512_loadu_si512(static_cast<const void*>(qpack + p * kernel_group + 16 * v));
    for (int i = 0; i < NI; ++i) {
      const __m512i xv = _mm512_set1_epi32(static_cast<int>(xb[i * pstride + p]));
      for (int v = 0; v < kernel_vectors; ++v)
        acc[v][i] =
            _mm512_dpbf16_ps(acc[v][i], reinterpret_cast<const __m512bh&>(q[v]), reinterpret_cast<const __m512bh&>(xv));
    }
  }
}

/// The exact float score of kernel_tile: one sequential FMA chain from zero, for `n` (<= 4) pairs at once.
inline void exact_scores(const float* const* q, const float* const* x, int n, Index d, float* out) noexcept {
  float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
  const float* q0 = q[0];
  const float* x0 = x[0];
  const float* q1 = n > 1 ? q[1] : q0;
  const float* x1 = n > 1 ? x[1] : x0;
  const float* q2 = n > 2 ? q[2] : q0;
  const float* x2 = n > 2 ? x[2] : x0;
  const float* q3 = n > 3 ? q[3] : q0;
  const float* x3 = n > 3 ? x[3] : x0;
  for (Index k = 0; k < d; ++k) {
    a0 = std::fma(q0[k], x0[k], a0);
    a1 = std::fma(q1[k], x1[k], a1);
    a2 = std::fma(q2[k], x2[k], a2);
    a3 = std::fma(q3[k], x3[k], a3);
  }
  const float all[4] = {a0, a1, a2, a3};
  for (int i = 0; i < n; ++i) out[i] = all[i];
}

/**
 * @brief kernel_scan for inner-product keys with bfloat16 screening: the same offers, in the same order, with
 * the same keys.
 *
 * @param qpack the group's bfloat16 query pairs (pack_screen_group).
 * @param qrows the group's float query rows (row stride qstride), which the exact scores read.
 * @param lanes the group's number of queries (the lanes past it are never offered anything).
 * @param e1, e2 the group's query bound terms (pack_screen_group).
 * @param xb the items' bfloat16 pairs (row stride pstride), x their float rows (row stride d), xab their bound
 * terms a_x, b_x interleaved (pack_screen_row).
 */
template <class Offer>
inline void screen_scan(const std::uint32_t* qpack, const float* qrows, Index qstride, Index lanes, const float* e1,
                        const float* e2, const std::uint32_t* xb, Index pstride, const float* x, const float* xab,
                        Index count, Index d, float* threshold, Offer&& offer) {
  const Index pairs = (d + 1) / 2;
  __m512 qa[kernel_vectors], qb[kernel_vectors], t[kernel_vectors];
  __mmask16 used[kernel_vectors];  // the group's real queries: lanes [0, lanes)
  for (int v = 0; v < kernel_vectors; ++v) {
    qa[v] = _mm512_loadu_ps(e1 + 16 * v);
    qb[v] = _mm512_loadu_ps(e2 + 16 * v);
    t[v] = _mm512_loadu_ps(threshold + 16 * v);
    const Index first = 16 * v, live = std::max<Index>(0, std::min<Index>(16, lanes - first));
    used[v] = static_cast<__mmask16>(live == 16 ? 0xFFFFu : (1u << live) - 1u);
  }
  // Candidates of one tile: (item in the tile, lane), item-major and lanes ascending: kernel_scan's offer order.
  constexpr int max_candidates = kernel_items * kernel_group;
  std::uint16_t cand_item[max_candidates], cand_lane[max_candidates];
  float keys[max_candidates];
  auto process = [&](Index j0, int items, auto& acc) {
    int n = 0;
    for (int i = 0; i < items; ++i) {
      const __m512 ax = _mm512_set1_ps(xab[2 * (j0 + i)]), bx = _mm512_set1_ps(xab[2 * (j0 + i) + 1]);
      for (int v = 0; v < kernel_vectors; ++v) {
        // t - ||q|| a_x - ||q - q~|| b_x, each step rounded down; a NaN (inf - inf, 0 inf) or a NaN screening score
        // passes: it is scored exactly.
        constexpr int down = _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC;
        const __m512 lower = _mm512_fnmadd_round_ps(qb[v], bx, _mm512_fnmadd_round_ps(qa[v], ax, t[v], down), down);
        for (unsigned bits = _mm512_mask_cmp_ps_mask(used[v], acc[v][i], lower, _CMP_NLT_UQ); bits != 0;
             bits &= bits - 1) {
          cand_item[n] = static_cast<std::uint16_t>(i);
          cand_lane[n] = static_cast<std::uint16_t>(16 * v + __builtin_ctz(bits));
          ++n;
        }
      }
    }
    if (n == 0) return;
    // Request every candidate row at once (they are read right below, one chain at a time).
    for (int c = 0; c < n; ++c) {
      const char* row = reinterpret_cast<const char*>(x + (j0 + cand_item[c]) * d);
      for (Index byte = 0; byte < d * Index(sizeof(float)); byte += 64) _mm_prefetch(row + byte, _MM_HINT_T0);
    }
    for (int c = 0; c < n; c += 4) {
      const int m = std::min(4, n - c);
      const float* qs[4];
      const float* xs[4];
      for (int i = 0; i < m; ++i) {
        qs[i] = qrows + static_cast<Index>(cand_lane[c + i]) * qstride;
        xs[i] = x + (j0 + cand_item[c + i]) * d;
      }
      exact_scores(qs, xs, m, d, keys + c);
    }
    for (int c = 0; c < n; ++c) {
      const int lane = cand_lane[c];
      if (keys[c] >= threshold[lane]) threshold[lane] = offer(lane, j0 + cand_item[c], keys[c]);
    }
    for (int v = 0; v < kernel_vectors; ++v) t[v] = _mm512_loadu_ps(threshold + 16 * v);
  };
  Index j = 0;
  for (; j + kernel_items <= count; j += kernel_items) {
    __m512 acc[kernel_vectors][kernel_items];
    screen_tile<kernel_items>(qpack, xb + j * pstride, pstride, pairs, acc);
    process(j, kernel_items, acc);
  }
  for (; j < count; ++j) {
    __m512 acc[kernel_vectors][1];
    screen_tile<1>(qpack, xb + j * pstride, pstride, pairs, acc);
    process(j, 1, acc);
  }
}

#endif  // KSHOT_RETRIEVAL_HAS_SCREEN

}  // namespace detail
}  // namespace kshot

#endif  // KSHOT_RETRIEVAL_HAS_KERNEL

#endif  // KSHOT_KERNELS_IP_KERNEL_HPP
