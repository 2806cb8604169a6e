/**
 * @file kshot/core/random.hpp
 * @brief Seeded random streams: stream i of seed s is a pure function of (s, i).
 *
 * kshot never uses a global or shared generator. Each unit of parallel work (an episode, a row block)
 * draws from its own `RandomStream(seed, i)`, so results never depend on the number of threads or on
 * the order in which work runs. The generator is xoshiro256** (Blackman and Vigna 2018) seeded through
 * splitmix64; the distributions are implemented here, not taken from <random>, so the same seed gives
 * the same numbers with every standard library.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_CORE_RANDOM_HPP
#define KSHOT_CORE_RANDOM_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/types.hpp"

#include <cmath>
#include <cstdint>
#include <limits>

namespace kshot {
namespace detail {

/// One step of splitmix64: a bijective 64-bit mixer with strong avalanche.
constexpr std::uint64_t splitmix64(std::uint64_t x) noexcept {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// 128-bit product for Lemire's bounded draw (GCC and Clang).
__extension__ typedef unsigned __int128 uint128;

constexpr std::uint64_t rotl64(std::uint64_t x, int k) noexcept { return (x << k) | (x >> (64 - k)); }

}  // namespace detail

/**
 * @brief A seeded stream of random numbers (xoshiro256**), one per unit of work.
 *
 * Satisfies UniformRandomBitGenerator, but prefer the member distributions: they are specified here and
 * therefore portable, while <random>'s distributions differ between standard libraries.
 *
 * @note Not thread-safe; make one stream per thread or per work item (`RandomStream(seed, item)`).
 */
class RandomStream {
 public:
  using result_type = std::uint64_t;

  /// Stream `stream` of seed `seed`. Different (seed, stream) pairs give unrelated sequences.
  explicit RandomStream(std::uint64_t seed = 0, std::uint64_t stream = 0) noexcept {
    // Mix both words through splitmix64 so that neighbouring seeds and streams decorrelate, then fill
    // the 256-bit state from a splitmix64 sequence (the seeding its authors recommend).
    std::uint64_t x = detail::splitmix64(seed ^ detail::splitmix64(stream ^ 0xD1B54A32D192ED03ull));
    for (auto& word : state_) {
      x += 0x9E3779B97F4A7C15ull;
      word = detail::splitmix64(x);
    }
  }

  static constexpr result_type min() noexcept { return 0; }
  static constexpr result_type max() noexcept { return std::numeric_limits<result_type>::max(); }

  /// The next 64 random bits.
  result_type operator()() noexcept { return next(); }

  /// The next 64 random bits.
  std::uint64_t next() noexcept {
    const std::uint64_t result = detail::rotl64(state_[1] * 5, 7) * 9;
    const std::uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = detail::rotl64(state_[3], 45);
    return result;
  }

  /**
   * @brief Uniform integer in [0, n), without modulo bias (Lemire 2019, multiply and reject).
   * @throws std::invalid_argument if n < 1.
   */
  Index uniform_index(Index n) {
    KSHOT_CHECK(n >= 1, "kshot::RandomStream::uniform_index()", detail::cat("n must be at least 1, got ", n));
    return static_cast<Index>(bounded(static_cast<std::uint64_t>(n)));
  }

  /// Uniform integer in [0, n) for n >= 1 (unchecked; for internal loops that validated n).
  std::uint64_t bounded(std::uint64_t n) noexcept {
    detail::uint128 m = static_cast<detail::uint128>(next()) * n;
    auto low = static_cast<std::uint64_t>(m);
    if (low < n) {
      const std::uint64_t threshold = (0 - n) % n;
      while (low < threshold) {
        m = static_cast<detail::uint128>(next()) * n;
        low = static_cast<std::uint64_t>(m);
      }
    }
    return static_cast<std::uint64_t>(m >> 64);
  }

  /// The next 32 random bits: the two halves of one 64-bit output, low half first.
  std::uint32_t next32() noexcept {
    if (has_half_) {
      has_half_ = false;
      return half_;
    }
    const std::uint64_t x = next();
    half_ = static_cast<std::uint32_t>(x >> 32);
    has_half_ = true;
    return static_cast<std::uint32_t>(x);
  }

  /// Uniform integer in [0, n) for 1 <= n < 2^32 from 32 random bits (Lemire's method; half the
  /// generator calls of bounded(), for the small ranges of samplers). Unchecked.
  std::uint32_t bounded32(std::uint32_t n) noexcept {
    std::uint64_t m = static_cast<std::uint64_t>(next32()) * n;
    auto low = static_cast<std::uint32_t>(m);
    if (low < n) {
      const std::uint32_t threshold = (0u - n) % n;
      while (low < threshold) {
        m = static_cast<std::uint64_t>(next32()) * n;
        low = static_cast<std::uint32_t>(m);
      }
    }
    return static_cast<std::uint32_t>(m >> 32);
  }

  /// Uniform real in [0, 1), with the full precision of Scalar's mantissa.
  template <class Scalar = double>
  Scalar uniform() noexcept {
    static_assert(is_supported_scalar_v<Scalar>, "kshot::RandomStream::uniform<Scalar>: Scalar must be float or double");
    if constexpr (std::is_same_v<Scalar, double>) {
      return static_cast<double>(next() >> 11) * 0x1.0p-53;
    } else {
      return static_cast<float>(next() >> 40) * 0x1.0p-24f;
    }
  }

  /// Uniform real in [lo, hi).
  template <class Scalar = double>
  Scalar uniform(Scalar lo, Scalar hi) noexcept {
    return lo + (hi - lo) * uniform<Scalar>();
  }

  /// Standard normal variate (Box-Muller on doubles; no cached second value, so the stream stays simple).
  template <class Scalar = double>
  Scalar normal() noexcept {
    // u1 in (0, 1] so that log(u1) is finite.
    const double u1 = 1.0 - uniform<double>();
    const double u2 = uniform<double>();
    return static_cast<Scalar>(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586476925 * u2));
  }

  /// Normal variate with the given mean and standard deviation.
  template <class Scalar = double>
  Scalar normal(Scalar mean, Scalar stddev) noexcept {
    return mean + stddev * normal<Scalar>();
  }

  /// Fisher-Yates shuffle of [first, last), identical on every platform for the same stream state.
  template <class RandomIt>
  void shuffle(RandomIt first, RandomIt last) noexcept {
    const auto n = static_cast<std::uint64_t>(last - first);
    for (std::uint64_t i = n; i > 1; --i) {
      const std::uint64_t j = bounded(i);
      using std::swap;
      swap(first[static_cast<std::ptrdiff_t>(i - 1)], first[static_cast<std::ptrdiff_t>(j)]);
    }
  }

  /// Fills `m` with independent standard normal variates, row by row.
  template <class Derived>
  void fill_normal(Eigen::DenseBase<Derived>& m) noexcept {
    using Scalar = typename Derived::Scalar;
    for (Index i = 0; i < m.rows(); ++i)
      for (Index j = 0; j < m.cols(); ++j) m(i, j) = normal<Scalar>();
  }

  /// Fills `m` with independent uniform variates in [lo, hi), row by row.
  template <class Derived>
  void fill_uniform(Eigen::DenseBase<Derived>& m, typename Derived::Scalar lo, typename Derived::Scalar hi) noexcept {
    using Scalar = typename Derived::Scalar;
    for (Index i = 0; i < m.rows(); ++i)
      for (Index j = 0; j < m.cols(); ++j) m(i, j) = uniform<Scalar>(lo, hi);
  }

 private:
  std::uint64_t state_[4];
  std::uint32_t half_ = 0;
  bool has_half_ = false;
};

}  // namespace kshot

#endif  // KSHOT_CORE_RANDOM_HPP
