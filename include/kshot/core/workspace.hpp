/**
 * @file kshot/core/workspace.hpp
 * @brief A grow-only scratch arena: slots of scalars that are reused call after call.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_CORE_WORKSPACE_HPP
#define KSHOT_CORE_WORKSPACE_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/types.hpp"

#include <vector>

namespace kshot {
namespace detail {

/**
 * @brief Numbered scratch buffers that grow and never shrink.
 *
 * `matrix(slot, rows, cols)` returns a row-major `Eigen::Map` onto slot `slot`, growing its storage only
 * when the requested size exceeds every earlier request for that slot. After the first call with the
 * largest shape, a loop that asks for the same shapes allocates nothing.
 *
 * @tparam Scalar float or double.
 * @note Not thread-safe: give each thread (or each loss, index or sampler object) its own workspace.
 * Maps returned earlier stay valid until the same slot grows.
 */
template <class Scalar>
class Workspace {
 public:
  using Matrix = Eigen::Map<RowMatrixX<Scalar>, Eigen::Aligned16>;
  using Vector = Eigen::Map<VectorX<Scalar>, Eigen::Aligned16>;

  /// Pre-sizes slot `slot` for `size` scalars.
  void reserve(std::size_t slot, Index size) { grow(slot, size); }

  /// A rows x cols row-major view of slot `slot` (contents unspecified).
  Matrix matrix(std::size_t slot, Index rows, Index cols) {
    KSHOT_ASSERT(rows >= 0 && cols >= 0);
    return Matrix(grow(slot, rows * cols), rows, cols);
  }

  /// A length-n vector view of slot `slot` (contents unspecified).
  Vector vector(std::size_t slot, Index n) {
    KSHOT_ASSERT(n >= 0);
    return Vector(grow(slot, n), n);
  }

  /// Total scalars held over all slots.
  Index capacity() const noexcept {
    Index total = 0;
    for (const auto& s : slots_) total += static_cast<Index>(s.size());
    return total;
  }

  /// Releases all storage.
  void clear() noexcept { slots_.clear(); }

 private:
  using Buffer = std::vector<Scalar, Eigen::aligned_allocator<Scalar>>;

  Scalar* grow(std::size_t slot, Index size) {
    if (slot >= slots_.size()) slots_.resize(slot + 1);
    Buffer& buffer = slots_[slot];
    // One extra element keeps data() non-null for empty requests.
    const auto needed = static_cast<std::size_t>(size) + 1;
    if (buffer.size() < needed) buffer.resize(needed);
    return buffer.data();
  }

  std::vector<Buffer> slots_;
};

}  // namespace detail
}  // namespace kshot

#endif  // KSHOT_CORE_WORKSPACE_HPP
