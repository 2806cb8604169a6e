/**
 * @file kshot/nn/clip.hpp
 * @brief Gradient clipping on a model's flat gradient vector: by total norm (torch.nn.utils.clip_grad_norm_)
 * and by value (torch.nn.utils.clip_grad_value_), and the fixed-chunk elementwise loop that kshot's
 * optimizers share.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_NN_CLIP_HPP
#define KSHOT_NN_CLIP_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <type_traits>

namespace kshot {
namespace detail {

/// At most this many chunks split an elementwise pass over a flat vector (so per-chunk partial results fit a
/// fixed array on the stack).
inline constexpr Index elementwise_max_chunks = 256;

/// Chunks hold at least this many entries (a chunk is worth a thread's start-up only when it is long).
inline constexpr Index elementwise_min_chunk = Index(1) << 14;

/**
 * @brief The chunk length of an elementwise pass over n entries: at least elementwise_min_chunk, and long
 * enough that there are at most elementwise_max_chunks chunks. A function of n only, never of the thread
 * count, so per-chunk partial sums combine in the same order whatever the number of threads.
 */
inline Index elementwise_chunk(Index n) noexcept {
  const Index by_count = (n + elementwise_max_chunks - 1) / elementwise_max_chunks;
  return std::max(elementwise_min_chunk, by_count);
}

/// The number of chunks of elementwise_chunk(n) entries that cover n entries (0 for n = 0).
inline Index elementwise_chunks(Index n) noexcept {
  const Index chunk = elementwise_chunk(n);
  return (n + chunk - 1) / chunk;
}

/**
 * @brief Runs body(chunk_index, start, length) over the fixed chunks of [0, n), in one parallel region when
 * the pass is long enough (detail::worth_parallel on n * ops_per_entry operations).
 *
 * Elementwise bodies give the same bits for any thread count; reductions write one partial per chunk and
 * combine them serially in chunk order afterwards.
 */
template <class Body>
void for_each_chunk(Index n, double ops_per_entry, Body&& body) {
  const Index chunk = elementwise_chunk(n);
  const Index chunks = elementwise_chunks(n);
  const bool parallel = worth_parallel(chunks, static_cast<double>(n) * ops_per_entry);
  parallel_for(chunks, parallel, [&](Index c) {
    const Index start = c * chunk;
    body(c, start, std::min(chunk, n - start));
  });
}

/// The index of the first non-finite entry of v (v.size() if none).
template <class Derived>
Index first_non_finite(const Eigen::DenseBase<Derived>& v) {
  for (Index k = 0; k < v.size(); ++k)
    if (!std::isfinite(v.derived().coeff(k))) return k;
  return v.size();
}

/// Throws std::invalid_argument naming `name`, its first non-finite entry and its index, unless v is finite.
template <class Derived>
void check_finite_vector(const Eigen::DenseBase<Derived>& v, const char* where, const char* name) {
  if (KSHOT_UNLIKELY(!all_finite(v))) {
    const Index k = first_non_finite(v);
    throw_invalid_argument(where, cat(name, " has a non-finite value (", v.derived().coeff(k), ") at index ", k));
  }
}

/// Sum over the chunk of |g|^p (p finite, > 0), or max |g| (p infinite, NaN propagated), in double.
template <class Scalar>
double chunk_norm_part(const Eigen::Ref<const VectorX<Scalar>>& g, double p, double scale) {
  const auto x = g.template cast<double>().array().abs() * scale;
  if (std::isinf(p)) return x.template maxCoeff<Eigen::PropagateNaN>();
  if (p == 2.0) return x.square().sum();
  if (p == 1.0) return x.sum();
  return x.pow(p).sum();
}

/// The p-norm of g from fixed chunks; `scale` multiplies every entry first (1, or 1 / max|g| on overflow).
template <class Scalar>
double chunked_norm(const Eigen::Ref<const VectorX<Scalar>>& g, double p, double scale) {
  const Index n = g.size();
  double part[elementwise_max_chunks];
  for_each_chunk(n, 3.0, [&](Index c, Index start, Index length) {
    part[c] = chunk_norm_part<Scalar>(g.segment(start, length), p, scale);
  });
  const Index chunks = elementwise_chunks(n);
  double total = 0.0;
  if (std::isinf(p)) {
    for (Index c = 0; c < chunks; ++c)
      if (std::isnan(part[c]) || part[c] > total) total = part[c];
    return total;
  }
  for (Index c = 0; c < chunks; ++c) total += part[c];
  if (p == 2.0) return std::sqrt(total);
  if (p == 1.0) return total;
  return std::pow(total, 1.0 / p);
}

/// clip_grad_norm for one scalar type (the public overloads forward here).
template <class Scalar>
double clip_grad_norm_impl(VectorRef<Scalar> grads, double max_norm, double norm_type, bool error_if_nonfinite) {
  constexpr const char* where = "kshot::clip_grad_norm()";
  KSHOT_CHECK(max_norm >= 0.0, where, cat("max_norm must be >= 0 (+inf allowed), got ", max_norm));
  KSHOT_CHECK(norm_type > 0.0, where, cat("norm_type must be > 0 (a finite p or +inf), got ", norm_type));
  const Index n = grads.size();
  if (n == 0) return 0.0;
  const Eigen::Ref<const VectorX<Scalar>> g(grads);
  double total = chunked_norm<Scalar>(g, norm_type, 1.0);
  if (!std::isfinite(total) && !std::isinf(norm_type) && all_finite(g)) {
    // Finite entries whose p-th powers overflow double: the norm is finite, so compute it scaled by the
    // largest magnitude (torch overflows to inf here).
    const double largest = chunked_norm<Scalar>(g, std::numeric_limits<double>::infinity(), 1.0);
    total = largest * chunked_norm<Scalar>(g, norm_type, 1.0 / largest);
  }
  if (!std::isfinite(total) && error_if_nonfinite) {
    const Index bad = first_non_finite(g);
    throw_invalid_argument(where,
                           cat("the ", norm_type, "-norm of grads is not finite (", total, ")",
                               bad < n ? cat(": grads has a non-finite value (", g[bad], ") at index ", bad)
                                       : std::string(": it overflows double"),
                               "; pass error_if_nonfinite = false to scale by it anyway, as torch does by default"));
  }
  const double coefficient = max_norm / (total + 1e-6);
  const double clamped = std::isnan(coefficient) ? coefficient : std::min(coefficient, 1.0);
  if (clamped != 1.0) {  // torch always multiplies; by exactly 1 that changes no bit
    const auto factor = static_cast<Scalar>(clamped);
    for_each_chunk(n, 1.0, [&](Index, Index start, Index length) { grads.segment(start, length) *= factor; });
  }
  return total;
}

/// clip_grad_value for one scalar type (the public overloads forward here).
template <class Scalar>
void clip_grad_value_impl(VectorRef<Scalar> grads, double clip_value, bool error_if_nonfinite) {
  constexpr const char* where = "kshot::clip_grad_value()";
  KSHOT_CHECK(clip_value >= 0.0, where, cat("clip_value must be >= 0 (+inf allowed), got ", clip_value));
  if (error_if_nonfinite) check_finite_vector(grads, where, "grads");
  const auto hi = static_cast<Scalar>(clip_value);
  const auto lo = static_cast<Scalar>(-clip_value);
  for_each_chunk(grads.size(), 2.0, [&](Index, Index start, Index length) {
    auto x = grads.segment(start, length).array();
    // min(max(x, lo), hi) keeps NaN (torch.clamp propagates NaN); Eigen's cwiseMax/Min might not.
    for (Index k = 0; k < length; ++k) {
      const Scalar v = x[k];
      x[k] = v < lo ? lo : (v > hi ? hi : v);
    }
  });
}

}  // namespace detail

// These four overloads are templates of an unused, defaulted parameter (`kshot::clip_grad_norm(g, 1.0)` calls
// them as before) rather than plain inline functions: a plain inline function instantiates the float and double
// implementations in every file that includes this header, used or not, and they were the largest share of the
// compile time of a file holding only #include <kshot/kshot.hpp>.

/**
 * @brief Scales `grads` in place so that its total norm is at most `max_norm`, exactly as
 * torch.nn.utils.clip_grad_norm_ does, and returns the norm before clipping.
 *
 * With @f$\|g\|_p@f$ the p-norm of the whole vector (the max-norm for p = +inf), the gradient is multiplied
 * by @f$\min(1, \mathrm{max\_norm} / (\|g\|_p + 10^{-6}))@f$. The norm is accumulated in double, in fixed
 * chunks combined in a fixed order, so the result does not depend on the thread count. If finite entries
 * overflow double in the sum of p-th powers (possible in double only), the norm is recomputed scaled by the
 * largest magnitude, so it stays finite (torch returns inf there).
 *
 * @param[in,out] grads the flat gradient vector (a model's gradient, or any contiguous segment of it).
 * @param[in] max_norm the largest allowed norm, >= 0 (+inf clips nothing and only measures).
 * @param[in] norm_type p > 0 (1, 2, any finite p) or std::numeric_limits<double>::infinity().
 * @param[in] error_if_nonfinite when true (kshot's default; torch's is false), a NaN or infinite norm throws;
 * when false, grads are scaled by the non-finite norm as torch does (an infinite norm zeroes the finite
 * entries, a NaN norm turns every entry into NaN).
 * @return the total norm before clipping, in double (torch returns it in the gradient's dtype).
 * @throws std::invalid_argument if max_norm < 0 or is NaN; if norm_type <= 0 or is NaN; if
 * error_if_nonfinite is true and the norm is not finite (the message names the first non-finite entry);
 * grads is left unchanged then.
 * @note Allocates nothing. Runs in parallel over fixed chunks of at least 16384 entries when the vector is
 * long; results are bitwise identical for any thread count.
 */
template <int Lazy = 0>
double clip_grad_norm(VectorRef<float> grads, double max_norm, double norm_type = 2.0, bool error_if_nonfinite = true) {
  return detail::clip_grad_norm_impl<float>(grads, max_norm, norm_type, error_if_nonfinite);
}

/// @copydoc clip_grad_norm(VectorRef<float>, double, double, bool)
template <int Lazy = 0>
double clip_grad_norm(VectorRef<double> grads, double max_norm, double norm_type = 2.0,
                      bool error_if_nonfinite = true) {
  return detail::clip_grad_norm_impl<double>(grads, max_norm, norm_type, error_if_nonfinite);
}

/**
 * @brief Clamps every entry of `grads` to [-clip_value, clip_value] in place, as
 * torch.nn.utils.clip_grad_value_ does.
 *
 * @param[in,out] grads the flat gradient vector.
 * @param[in] clip_value the bound, >= 0 (+inf changes nothing).
 * @param[in] error_if_nonfinite when true (the default), a NaN or infinite entry throws before anything is
 * changed; when false, infinities are clamped to the bound and NaN stays NaN, as torch.clamp does.
 * @throws std::invalid_argument if clip_value < 0 or is NaN; if error_if_nonfinite is true and grads has a
 * non-finite entry (the message names it and its index).
 * @note Allocates nothing; parallel over fixed chunks when long; bitwise identical for any thread count.
 */
template <int Lazy = 0>
void clip_grad_value(VectorRef<float> grads, double clip_value, bool error_if_nonfinite = true) {
  detail::clip_grad_value_impl<float>(grads, clip_value, error_if_nonfinite);
}

/// @copydoc clip_grad_value(VectorRef<float>, double, bool)
template <int Lazy = 0>
void clip_grad_value(VectorRef<double> grads, double clip_value, bool error_if_nonfinite = true) {
  detail::clip_grad_value_impl<double>(grads, clip_value, error_if_nonfinite);
}

}  // namespace kshot

#endif  // KSHOT_NN_CLIP_HPP
