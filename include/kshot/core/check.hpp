/**
 * @file kshot/core/check.hpp
 * @brief Precondition checks that are always on (`KSHOT_CHECK`), debug-only invariants (`KSHOT_ASSERT`),
 * and the helpers that build error messages naming the function, the argument and the numbers.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_CORE_CHECK_HPP
#define KSHOT_CORE_CHECK_HPP

#include "kshot/core/types.hpp"

#include <cassert>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#if defined(__GNUC__) || defined(__clang__)
#define KSHOT_NOINLINE_COLD __attribute__((noinline, cold))
#define KSHOT_NOINLINE __attribute__((noinline))
#define KSHOT_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define KSHOT_NOINLINE_COLD
#define KSHOT_NOINLINE
#define KSHOT_UNLIKELY(x) (x)
#endif

namespace kshot {
namespace detail {

/**
 * @brief The string stream behind cat(), with precision 9. Its members are out of line (noinline), so that each
 * of cat()'s many instantiations (one per list of argument types, string literals of every length included) is
 * a few calls rather than an inlined std::ostringstream constructor, str() and destructor: that was about a
 * tenth of clang's optimiser time on examples/train_protonet.cpp (GCC inlined less of it).
 */
class MessageStream {
 public:
  KSHOT_NOINLINE MessageStream() { out_.precision(9); }
  KSHOT_NOINLINE ~MessageStream() {}
  MessageStream(const MessageStream&) = delete;
  MessageStream& operator=(const MessageStream&) = delete;
  /// The stream to insert into.
  std::ostream& stream() noexcept { return out_; }
  /// What was inserted so far.
  KSHOT_NOINLINE std::string str() const { return out_.str(); }

 private:
  std::ostringstream out_;
};

/// Concatenates the streamed form of every argument ("labels has ", 12, " entries").
template <class... Args>
std::string cat(Args&&... args) {
  MessageStream out;
  (out.stream() << ... << std::forward<Args>(args));
  return out.str();
}

/// Throws std::invalid_argument("<where>: <what>"). Out of line and cold so that checks cost one branch.
[[noreturn]] KSHOT_NOINLINE_COLD inline void throw_invalid_argument(const char* where, const std::string& what) {
  throw std::invalid_argument(std::string(where) + ": " + what);
}

/// Throws std::out_of_range("<where>: <what>").
[[noreturn]] KSHOT_NOINLINE_COLD inline void throw_out_of_range(const char* where, const std::string& what) {
  throw std::out_of_range(std::string(where) + ": " + what);
}

/// Throws std::runtime_error("<where>: <what>"), used for I/O and file-format errors.
[[noreturn]] KSHOT_NOINLINE_COLD inline void throw_runtime_error(const char* where, const std::string& what) {
  throw std::runtime_error(std::string(where) + ": " + what);
}

}  // namespace detail
}  // namespace kshot

/**
 * @brief Always-on precondition check for public boundaries.
 * @param cond the condition that must hold.
 * @param where the public call, e.g. "kshot::pairwise_distances()".
 * @param what a std::string expression, evaluated only on failure, that names the argument and the numbers.
 * @throws std::invalid_argument "<where>: <what>" when cond is false.
 */
#define KSHOT_CHECK(cond, where, what)                                                             \
  do {                                                                                             \
    if (KSHOT_UNLIKELY(!(cond))) ::kshot::detail::throw_invalid_argument((where), (what));        \
  } while (0)

/// Like KSHOT_CHECK, for indices and ids: throws std::out_of_range.
#define KSHOT_CHECK_RANGE(cond, where, what)                                                       \
  do {                                                                                             \
    if (KSHOT_UNLIKELY(!(cond))) ::kshot::detail::throw_out_of_range((where), (what));            \
  } while (0)

/// Internal invariant, compiled out under NDEBUG or KSHOT_NO_DEBUG.
#if defined(NDEBUG) || defined(KSHOT_NO_DEBUG)
#define KSHOT_ASSERT(cond) ((void)0)
#else
#define KSHOT_ASSERT(cond) assert(cond)
#endif

namespace kshot {
namespace detail {

/// True when none of the n contiguous values at p is an infinity or a NaN: their exponent bits are not
/// all ones. An integer OR-reduction, which compilers vectorise without reassociating floating point.
template <class Scalar>
bool all_finite_contiguous(const Scalar* p, Index n) noexcept {
  using Bits = std::conditional_t<sizeof(Scalar) == 4, std::uint32_t, std::uint64_t>;
  constexpr Bits exponent = sizeof(Scalar) == 4 ? Bits(0x7F800000u) : Bits(0x7FF0000000000000ull);
  Bits bad = 0;
  for (Index k = 0; k < n; ++k) {
    Bits u;
    std::memcpy(&u, p + k, sizeof(Bits));
    bad |= static_cast<Bits>((u & exponent) == exponent);
  }
  return bad == 0;
}

/**
 * @brief True when every entry of `m` is finite.
 *
 * Direct-access matrices with contiguous rows (or columns) are scanned as bits (all_finite_contiguous);
 * other expressions use x - x, which is 0 for finite x and NaN otherwise, summed. Both measured several
 * times faster than Eigen's allFinite() on episode-sized data.
 */
template <class Derived>
bool all_finite(const Eigen::DenseBase<Derived>& m) {
  using Scalar = typename Derived::Scalar;
  const auto& a = m.derived();
  if constexpr (std::is_floating_point_v<Scalar> &&
                (Eigen::internal::traits<Derived>::Flags & Eigen::DirectAccessBit) != 0) {
    if (a.innerStride() == 1) {
      for (Index outer = 0; outer < a.outerSize(); ++outer)
        if (!all_finite_contiguous(a.data() + outer * a.outerStride(), a.innerSize())) return false;
      return true;
    }
  }
  return std::isfinite((a.array() - a.array()).sum());
}

/**
 * @brief Throws std::invalid_argument naming the first non-finite entry of `m`.
 * @param m the matrix or vector to check.
 * @param where the public call.
 * @param name the argument's name as the user sees it.
 */
template <class Derived>
void check_finite(const Eigen::DenseBase<Derived>& m, const char* where, const char* name) {
  // Locate the culprit only on failure.
  if (KSHOT_UNLIKELY(!all_finite(m))) {
    for (Index i = 0; i < m.rows(); ++i)
      for (Index j = 0; j < m.cols(); ++j)
        if (!std::isfinite(m(i, j)))
          throw_invalid_argument(where, cat(name, " has a non-finite value (", m(i, j), ") at row ", i,
                                            ", column ", j));
    throw_invalid_argument(where, cat(name, " has a non-finite value"));
  }
}

/// Throws unless `m` is rows x cols, naming the argument and both shapes.
template <class Derived>
void check_shape(const Eigen::EigenBase<Derived>& m, Index rows, Index cols, const char* where, const char* name) {
  if (KSHOT_UNLIKELY(m.rows() != rows || m.cols() != cols))
    throw_invalid_argument(where, cat(name, " is ", m.rows(), " x ", m.cols(), " but must be ", rows, " x ", cols));
}

}  // namespace detail

/**
 * @name Input checks for user code
 * The checks kshot's own classes run on their inputs, for user code that plugs into kshot (a custom loss, objective
 * or layer) and wants the same messages: `kshot::check_shape(m, rows, cols, "my::f()", "targets")` throws
 * std::invalid_argument "my::f(): targets is 3 x 4 but must be 3 x 5"; `kshot::check_finite(m, where, name)` names the
 * first non-finite entry.
 * @{
 */
using detail::check_finite;
using detail::check_shape;
/** @} */

}  // namespace kshot

#endif  // KSHOT_CORE_CHECK_HPP
