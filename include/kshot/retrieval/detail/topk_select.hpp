/**
 * @file kshot/retrieval/detail/topk_select.hpp
 * @brief The selection kernel of exact top-k search: a bounded heap per query and a threshold-filtered scan
 * of a row of scores (vectorised maxima over fixed chunks; only chunks that can beat the current k-th best are
 * looked at item by item).
 *
 * SPDX-License-Identifier: MIT
 */
// IWYU pragma: private, include "kshot/retrieval.hpp"
#ifndef KSHOT_RETRIEVAL_DETAIL_TOPK_SELECT_HPP
#define KSHOT_RETRIEVAL_DETAIL_TOPK_SELECT_HPP

#include "kshot/core/types.hpp"
#include "kshot/retrieval/filter.hpp"

#include <algorithm>
#include <cstdint>
#include <functional>
#include <limits>
#include <utility>

#if defined(__SSE2__) || defined(__AVX__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace kshot {
namespace detail {

/// One scored item: `key` is larger-is-better for every metric (a negated distance for squared Euclidean).
template <class Scalar>
struct Candidate {
  Scalar key;
  ItemId id;
};

/// The total order of results: larger key first, equal keys by lower id.
template <class Scalar>
inline bool better(const Candidate<Scalar>& a, const Candidate<Scalar>& b) noexcept {
  return a.key > b.key || (a.key == b.key && a.id < b.id);
}

/**
 * @brief A bounded heap of the k best candidates seen so far, its worst at the root.
 *
 * It works on caller storage of k candidates (a slice of a grow-only buffer), so it never allocates.
 */
template <class Scalar>
class TopKHeap {
 public:
  TopKHeap(Candidate<Scalar>* storage, Index k, Index* size) noexcept : h_(storage), k_(k), size_(size) {}

  /// The key an item must reach to be considered: the worst kept key once full, -inf before.
  Scalar threshold() const noexcept { return *size_ == k_ ? h_[0].key : -std::numeric_limits<Scalar>::infinity(); }

  /// True when `c` would enter the heap (assuming it passes the filters).
  bool admits(const Candidate<Scalar>& c) const noexcept { return *size_ < k_ || better(c, h_[0]); }

  /// Inserts `c` (which must be admitted), evicting the worst when full.
  void push(const Candidate<Scalar>& c) noexcept {
    if (*size_ < k_) {
      // Sift up from the new leaf.
      Index i = (*size_)++;
      while (i > 0) {
        const Index parent = (i - 1) / 2;
        if (!better(h_[parent], c)) break;
        h_[i] = h_[parent];
        i = parent;
      }
      h_[i] = c;
      return;
    }
    // Replace the root and sift down: the child that is worse goes up.
    Index i = 0;
    for (;;) {
      const Index left = 2 * i + 1;
      if (left >= k_) break;
      Index worst = left;
      if (left + 1 < k_ && better(h_[left], h_[left + 1])) worst = left + 1;
      if (!better(c, h_[worst])) break;
      h_[i] = h_[worst];
      i = worst;
    }
    h_[i] = c;
  }

 private:
  Candidate<Scalar>* h_;
  Index k_;
  Index* size_;
};

/// The per-query filter of one search: allow-bitset, exclusion list, predicate (each optional).
struct QueryFilter {
  const IdBitset* allowed = nullptr;
  const std::function<bool(ItemId)>* predicate = nullptr;
  const ItemId* exclude_begin = nullptr;
  const ItemId* exclude_end = nullptr;

  bool active() const noexcept { return allowed != nullptr || predicate != nullptr || exclude_begin != exclude_end; }

  bool pass(ItemId id) const {
    if (allowed != nullptr && !allowed->test(id)) return false;
    if (exclude_begin != exclude_end && std::binary_search(exclude_begin, exclude_end, id)) return false;
    if (predicate != nullptr && !(*predicate)(id)) return false;
    return true;
  }
};

/// Width of the chunks that are compared with the threshold at once (one 64-bit mask).
inline constexpr Index scan_chunk = 64;

/**
 * @brief Bit t (t < 64) set when p[t] >= threshold: 64 keys compared with SIMD (AVX-512, AVX or SSE2, as the
 * build allows; a scalar loop elsewhere). The mask only says where to look: every hit is re-checked exactly.
 */
inline std::uint64_t reach_mask(const float* p, float threshold) noexcept {
#if defined(__AVX512F__)
  const __m512 t = _mm512_set1_ps(threshold);
  std::uint64_t m = 0;
  for (int i = 0; i < 4; ++i)
    m |= static_cast<std::uint64_t>(_mm512_cmp_ps_mask(_mm512_loadu_ps(p + 16 * i), t, _CMP_GE_OQ)) << (16 * i);
  return m;
#elif defined(__AVX__)
  const __m256 t = _mm256_set1_ps(threshold);
  std::uint64_t m = 0;
  for (int i = 0; i < 8; ++i)
    m |= static_cast<std::uint64_t>(
             static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(p + 8 * i), t, _CMP_GE_OQ))))
         << (8 * i);
  return m;
#elif defined(__SSE2__)
  const __m128 t = _mm_set1_ps(threshold);
  std::uint64_t m = 0;
  for (int i = 0; i < 16; ++i)
    m |= static_cast<std::uint64_t>(static_cast<unsigned>(_mm_movemask_ps(_mm_cmpge_ps(_mm_loadu_ps(p + 4 * i), t))))
         << (4 * i);
  return m;
#else
  std::uint64_t m = 0;
  for (int i = 0; i < 64; ++i) m |= static_cast<std::uint64_t>(p[i] >= threshold) << i;
  return m;
#endif
}

/// reach_mask() for double keys.
inline std::uint64_t reach_mask(const double* p, double threshold) noexcept {
#if defined(__AVX512F__)
  const __m512d t = _mm512_set1_pd(threshold);
  std::uint64_t m = 0;
  for (int i = 0; i < 8; ++i)
    m |= static_cast<std::uint64_t>(_mm512_cmp_pd_mask(_mm512_loadu_pd(p + 8 * i), t, _CMP_GE_OQ)) << (8 * i);
  return m;
#elif defined(__AVX__)
  const __m256d t = _mm256_set1_pd(threshold);
  std::uint64_t m = 0;
  for (int i = 0; i < 16; ++i)
    m |= static_cast<std::uint64_t>(
             static_cast<unsigned>(_mm256_movemask_pd(_mm256_cmp_pd(_mm256_loadu_pd(p + 4 * i), t, _CMP_GE_OQ))))
         << (4 * i);
  return m;
#elif defined(__SSE2__)
  const __m128d t = _mm_set1_pd(threshold);
  std::uint64_t m = 0;
  for (int i = 0; i < 32; ++i)
    m |= static_cast<std::uint64_t>(static_cast<unsigned>(_mm_movemask_pd(_mm_cmpge_pd(_mm_loadu_pd(p + 2 * i), t))))
         << (2 * i);
  return m;
#else
  std::uint64_t m = 0;
  for (int i = 0; i < 64; ++i) m |= static_cast<std::uint64_t>(p[i] >= threshold) << i;
  return m;
#endif
}

/// Index of the lowest set bit of a non-zero mask.
inline int lowest_bit(std::uint64_t m) noexcept {
#if defined(__GNUC__) || defined(__clang__)
  return __builtin_ctzll(m);
#else
  int i = 0;
  while ((m & 1u) == 0) {
    m >>= 1;
    ++i;
  }
  return i;
#endif
}

/**
 * @brief Offers the `count` keys at `keys` (items with external ids ids[0..count)) to `heap`.
 *
 * Keys are compared with the current threshold 64 at a time (reach_mask); only the keys that reach it are
 * looked at: checked exactly against the heap's worst (tie by lower id, and against a threshold that may have
 * risen since the mask was taken), then against the filter, then pushed.
 */
template <class Scalar>
void scan_keys(const Scalar* keys, const ItemId* ids, Index count, TopKHeap<Scalar>& heap, const QueryFilter& filter) {
  const bool filtered = filter.active();
  Scalar threshold = heap.threshold();
  auto offer = [&](Index j) {
    const Candidate<Scalar> c{keys[j], ids[j]};
    if (!heap.admits(c)) return;
    if (filtered && !filter.pass(c.id)) return;
    heap.push(c);
    threshold = heap.threshold();
  };
  Index j = 0;
  for (; j + scan_chunk <= count; j += scan_chunk) {
    for (std::uint64_t m = reach_mask(keys + j, threshold); m != 0; m &= m - 1) offer(j + lowest_bit(m));
  }
  for (; j < count; ++j)
    if (keys[j] >= threshold) offer(j);
}

}  // namespace detail
}  // namespace kshot

#endif  // KSHOT_RETRIEVAL_DETAIL_TOPK_SELECT_HPP
