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
#include <vector>

namespace kshot {
namespace detail {

/**
 * @brief Scratch for partial Fisher-Yates draws without touching an n-sized array.
 *
 * Step i swaps virtual positions i and j = i + U[0, n - i) and emits the value at j. Only displaced
 * positions are stored, in an open-addressing table stamped with a generation counter, so starting a new
 * draw costs nothing and the table never needs clearing (n <= 256 uses a plain array instead). The result is exactly a partial Fisher-Yates
 * shuffle: every ordered k-subset is equally likely.
 * @note Grows to the largest k seen, then allocates nothing.
 */
class SparseShuffle {
 public:
  /// Writes k distinct values of [0, n) to out[0..k), in uniformly random order. Requires 0 <= k <= n.
  template <class Out>
  void draw(RandomStream& rng, Index n, Index k, Out&& out) {
    if (n <= dense_limit) {
      // Small n: a plain partial Fisher-Yates over 0..n-1 (a vectorised fill, then branch-free swaps)
      // costs less than hashing; the distribution is the same.
      if (dense_.size() < static_cast<std::size_t>(n)) dense_.resize(static_cast<std::size_t>(n));
      Index* a = dense_.data();
      for (Index i = 0; i < n; ++i) a[i] = i;
      for (Index i = 0; i < k; ++i) {
        const Index j = i + static_cast<Index>(rng.bounded(static_cast<std::uint64_t>(n - i)));
        const Index value_j = a[j];
        a[j] = a[i];
        out(i, value_j);
      }
      return;
    }
    reset(k);
    for (Index i = 0; i < k; ++i) {
      const Index j = i + static_cast<Index>(rng.bounded(static_cast<std::uint64_t>(n - i)));
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

  static constexpr Index dense_limit = 256;  // measured: the fill beats hashing up to a few hundred
  std::vector<Index> dense_;
  std::vector<Index> keys_, values_;
  std::vector<std::uint32_t> stamps_;
  std::size_t mask_ = 0;
  std::uint32_t generation_ = 0;
};

}  // namespace detail
}  // namespace kshot

#endif  // KSHOT_SAMPLING_DETAIL_SPARSE_SHUFFLE_HPP
