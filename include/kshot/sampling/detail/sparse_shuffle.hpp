/**
 * @file kshot/sampling/detail/sparse_shuffle.hpp
 * @brief Drawing k distinct integers of [0, n) in uniformly random order in O(k) time and memory: a
 * partial Fisher-Yates shuffle over a virtual array whose displaced entries live in a small hash table.
 *
 * SPDX-License-Identifier: MIT
 */
// IWYU pragma: private
#ifndef KSHOT_SAMPLING_DETAIL_SPARSE_SHUFFLE_HPP
#define KSHOT_SAMPLING_DETAIL_SPARSE_SHUFFLE_HPP

#include "kshot/core/random.hpp"
#include "kshot/core/types.hpp"

#include <cstdint>
#include <utility>
#include <vector>

namespace kshot {
namespace detail {

/**
 * @brief Scratch for partial Fisher-Yates draws of k distinct values of [0, n) in O(k) time.
 *
 * Step i swaps positions i and j = i + U[0, n - i) and emits the value at j, so the result is exactly a
 * partial Fisher-Yates shuffle: every ordered k-subset is equally likely. Three layouts, by n:
 *  - n <= 256: a plain array filled with 0..n-1 (a vectorised fill is cheaper than bookkeeping);
 *  - n <= 16384: an array kept equal to the identity between draws, whose k swaps are undone in reverse;
 *  - larger: only displaced positions are stored, in an open-addressing table stamped with a generation
 *    counter, so starting a draw costs nothing and the table never needs clearing.
 * @note Grows to the largest n (up to 16384) and k seen, then allocates nothing.
 */
class SparseShuffle {
 public:
  /// Writes k distinct values of [0, n) to out[0..k), in uniformly random order. Requires 0 <= k <= n.
  template <class Out>
  void draw(RandomStream& rng, Index n, Index k, Out&& out) {
    if (n <= fill_limit) {
      // Tiny n: a partial Fisher-Yates over a freshly filled 0..n-1 (a vectorised fill, then swaps).
      if (fill_.size() < static_cast<std::size_t>(n)) fill_.resize(static_cast<std::size_t>(n));
      Index* a = fill_.data();
      for (Index i = 0; i < n; ++i) a[i] = i;
      for (Index i = 0; i < k; ++i) {
        const Index j = i + static_cast<Index>(rng.bounded32(static_cast<std::uint32_t>(n - i)));
        const Index value_j = a[j];
        a[j] = a[i];
        out(i, value_j);
      }
      return;
    }
    if (n <= dense_limit) {
      // Small n: a partial Fisher-Yates on an array kept equal to the identity between draws; the swaps
      // are undone in reverse order afterwards, so a draw costs O(k), not O(n).
      if (dense_.size() < static_cast<std::size_t>(n)) {
        const auto old = static_cast<Index>(dense_.size());
        dense_.resize(static_cast<std::size_t>(n));
        for (Index i = old; i < n; ++i) dense_[static_cast<std::size_t>(i)] = i;
      }
      if (swaps_.size() < static_cast<std::size_t>(k)) swaps_.resize(static_cast<std::size_t>(k));
      Index* a = dense_.data();
      Index* swaps = swaps_.data();
      for (Index i = 0; i < k; ++i) {
        const Index j = i + static_cast<Index>(rng.bounded32(static_cast<std::uint32_t>(n - i)));
        const Index value_j = a[j];
        a[j] = a[i];
        a[i] = value_j;
        swaps[i] = j;
        out(i, value_j);
      }
      for (Index i = k - 1; i >= 0; --i) std::swap(a[i], a[swaps[i]]);
      return;
    }
    reset(k);
    const bool small_range = n <= static_cast<Index>(UINT32_MAX);
    for (Index i = 0; i < k; ++i) {
      const auto range = n - i;
      const Index j = i + (small_range ? static_cast<Index>(rng.bounded32(static_cast<std::uint32_t>(range)))
                                       : static_cast<Index>(rng.bounded(static_cast<std::uint64_t>(range))));
      const Index value_j = get(j);
      if (j != i) put(j, get(i));  // position i is never read again: later steps only touch positions > i
      out(i, value_j);
    }
  }

 private:
  void reset(Index k) {
    std::size_t capacity = 16;
    while (capacity < static_cast<std::size_t>(4 * k)) capacity <<= 1;
    if (capacity > keys_.size()) {
      keys_.assign(capacity, 0);
      values_.assign(capacity, 0);
      stamps_.assign(capacity, 0);
      generation_ = 0;
    }
    mask_ = keys_.size() - 1;
    if (++generation_ == 0) {  // wrapped: stale stamps could alias, so clear once every 2^32 draws
      std::fill(stamps_.begin(), stamps_.end(), 0u);
      generation_ = 1;
    }
  }

  std::size_t slot(Index key) const noexcept {
    return static_cast<std::size_t>((static_cast<std::uint64_t>(key) * 0x9E3779B97F4A7C15ull) >> 32) & mask_;
  }

  Index get(Index key) const noexcept {
    for (std::size_t s = slot(key);; s = (s + 1) & mask_) {
      if (stamps_[s] != generation_) return key;  // never displaced: the identity
      if (keys_[s] == key) return values_[s];
    }
  }

  void put(Index key, Index value) noexcept {
    for (std::size_t s = slot(key);; s = (s + 1) & mask_) {
      if (stamps_[s] != generation_) {
        stamps_[s] = generation_;
        keys_[s] = key;
        values_[s] = value;
        return;
      }
      if (keys_[s] == key) {
        values_[s] = value;
        return;
      }
    }
  }

  // Measured on 5-way and 20-way episodes: the fill wins for a few hundred rows, the undo array up to a
  // few thousand, the hash table beyond.
  static constexpr Index fill_limit = 256;
  static constexpr Index dense_limit = 16384;
  std::vector<Index> fill_, dense_, swaps_;
  std::vector<Index> keys_, values_;
  std::vector<std::uint32_t> stamps_;
  std::size_t mask_ = 0;
  std::uint32_t generation_ = 0;
};

}  // namespace detail
}  // namespace kshot

#endif  // KSHOT_SAMPLING_DETAIL_SPARSE_SHUFFLE_HPP
