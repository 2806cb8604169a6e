/**
 * @file kshot/core/gemm.hpp
 * @brief One matrix product for all of kshot: C = beta C + alpha op(A) op(B) over strided row-major storage,
 * compiled once per scalar type instead of once per Eigen expression type.
 *
 * An Eigen product expression instantiates, for its own operand types, the GEMM driver, two matrix-vector
 * paths (a destination of one row or one column) and a coefficient-based product for small sizes. Written at
 * each call site with Blocks, Maps, Refs and Transposes, that was most of the compile time of kshot's layers:
 * one Linear<float> cost more than the whole `<Eigen/Dense>` plus one GEMM. Every product kshot computes on
 * dense row-major data goes through gemm() instead, whose four operand orders are the only product
 * expressions instantiated. The arithmetic is Eigen's own (same kernels, same blocking), single-threaded
 * inside kshot's parallel regions as before.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_CORE_GEMM_HPP
#define KSHOT_CORE_GEMM_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"

#include <algorithm>
#include <type_traits>

namespace kshot {
namespace detail {

/**
 * @brief A dense operand of gemm(): `rows x cols` values at `data`, row r starting at data + r * stride, read
 * transposed when `trans` is true (the operand is then the `cols x rows` matrix whose columns are those rows).
 */
template <class Scalar>
struct GemmOperand {
  const Scalar* data;
  Index rows, cols, stride;
  bool trans;

  /// Rows of op(operand).
  Index op_rows() const noexcept { return trans ? cols : rows; }
  /// Columns of op(operand).
  Index op_cols() const noexcept { return trans ? rows : cols; }
  /// The same storage read the other way: op() of the result is op()^T of this.
  GemmOperand transposed() const noexcept { return {data, rows, cols, stride, !trans}; }
  /// Rows [r0, r0 + r) of op(operand), as an operand.
  GemmOperand op_row_block(Index r0, Index r) const noexcept {
    return trans ? GemmOperand{data + r0, rows, r, stride, true}
                 : GemmOperand{data + r0 * stride, r, cols, stride, false};
  }
};

/**
 * @brief The operand for a dense Eigen object with direct access and unit inner stride: a Matrix, Map, Ref or
 * Block of them, row- or column-major, or the transpose of one. A column-major object is read as the transpose
 * of the row-major matrix over the same storage.
 */
template <class Derived>
GemmOperand<typename Derived::Scalar> gemm_operand(const Eigen::MatrixBase<Derived>& m) {
  static_assert((Eigen::internal::traits<Derived>::Flags & Eigen::DirectAccessBit) != 0,
                "kshot::detail::gemm_operand(): the operand must be a Matrix, Map, Ref, Block or their transpose");
  const auto& d = m.derived();
  KSHOT_ASSERT(d.innerStride() == 1 || d.size() <= 1);
  if constexpr (static_cast<bool>(Derived::IsRowMajor))
    return {d.data(), d.rows(), d.cols(), d.rows() > 1 ? Index(d.outerStride()) : d.cols(), false};
  else
    return {d.data(), d.cols(), d.rows(), d.cols() > 1 ? Index(d.outerStride()) : d.rows(), true};
}

/**
 * @brief C = beta C + alpha op(A) op(B), C row-major `rows x cols` at c with row stride ldc.
 *
 * beta is 0 (C is overwritten; its old values, NaN included, are ignored) or 1 (accumulate); op(A) must be
 * rows x k and op(B) k x cols. An empty product (k = 0) leaves beta C. C must not overlap A or B.
 * Out of line: each scalar type compiles the four operand orders once per translation unit.
 */
template <class Scalar>
KSHOT_NOINLINE void gemm(const GemmOperand<Scalar>& a, const GemmOperand<Scalar>& b, Scalar* c, Index ldc, Scalar alpha,
                         bool accumulate) {
  static_assert(std::is_floating_point_v<Scalar>, "kshot::detail::gemm(): Scalar must be a floating-point type");
  const Index m = a.op_rows(), k = a.op_cols(), n = b.op_cols();
  KSHOT_ASSERT(b.op_rows() == k);
  if (!accumulate)
    for (Index i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + n, Scalar(0));
  if (m == 0 || n == 0 || k == 0) return;
  // One row or one column of C: Eigen's matrix-vector product, as Eigen's own product would choose.
  using Stride = Eigen::OuterStride<>;
  using VecStride = Eigen::InnerStride<>;
  if (n == 1 || m == 1) {
    using Row = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
    using Col = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::ColMajor>;
    if (n == 1) {
      // c (m, stride ldc) += alpha op(A) b, b the single column of op(B).
      Eigen::Map<VectorX<Scalar>, 0, VecStride> cv(c, m, VecStride(ldc));
      const Eigen::Map<const VectorX<Scalar>, 0, VecStride> bv(b.data, k, VecStride(b.trans ? 1 : b.stride));
      if (!a.trans)
        cv.noalias() += alpha * Eigen::Map<const Row, 0, Stride>(a.data, m, k, Stride(a.stride)) * bv;
      else
        cv.noalias() += alpha * Eigen::Map<const Col, 0, Stride>(a.data, m, k, Stride(a.stride)) * bv;
    } else {
      // c^T (n) += alpha op(B)^T a^T, a the single row of op(A).
      Eigen::Map<VectorX<Scalar>> cv(c, n);
      const Eigen::Map<const VectorX<Scalar>, 0, VecStride> av(a.data, k, VecStride(a.trans ? a.stride : 1));
      if (!b.trans)
        cv.noalias() += alpha * Eigen::Map<const Col, 0, Stride>(b.data, n, k, Stride(b.stride)) * av;
      else
        cv.noalias() += alpha * Eigen::Map<const Row, 0, Stride>(b.data, n, k, Stride(b.stride)) * av;
    }
    return;
  }
  // A row-major X read transposed is a column-major matrix over the same storage. The GEMM driver is Eigen's
  // own, called directly: the product expression would also compile a coefficient-based product for tiny sizes
  // and two matrix-vector paths for every operand order.
  using Blocking = Eigen::internal::gemm_blocking_space<Eigen::RowMajor, Scalar, Scalar, Eigen::Dynamic, Eigen::Dynamic,
                                                        Eigen::Dynamic>;
  Blocking blocking(m, n, k, 1, true);
  using Eigen::ColMajor;
  using Eigen::RowMajor;
  if (!a.trans && !b.trans)
    Eigen::internal::general_matrix_matrix_product<Index, Scalar, RowMajor, false, Scalar, RowMajor, false, RowMajor,
                                                   1>::run(m, n, k, a.data, a.stride, b.data, b.stride, c, 1, ldc,
                                                           alpha, blocking, nullptr);
  else if (!a.trans)
    Eigen::internal::general_matrix_matrix_product<Index, Scalar, RowMajor, false, Scalar, ColMajor, false, RowMajor,
                                                   1>::run(m, n, k, a.data, a.stride, b.data, b.stride, c, 1, ldc,
                                                           alpha, blocking, nullptr);
  else if (!b.trans)
    Eigen::internal::general_matrix_matrix_product<Index, Scalar, ColMajor, false, Scalar, RowMajor, false, RowMajor,
                                                   1>::run(m, n, k, a.data, a.stride, b.data, b.stride, c, 1, ldc,
                                                           alpha, blocking, nullptr);
  else
    Eigen::internal::general_matrix_matrix_product<Index, Scalar, ColMajor, false, Scalar, ColMajor, false, RowMajor,
                                                   1>::run(m, n, k, a.data, a.stride, b.data, b.stride, c, 1, ldc,
                                                           alpha, blocking, nullptr);
}

/// Rows of C per single-threaded gemm() in blocked_gemm().
inline constexpr Index gemm_row_block = 64;

/**
 * @brief gemm() in fixed blocks of gemm_row_block rows of C, in parallel over the blocks when the work is worth a
 * region. Each block is the same single-threaded product whatever the number of threads, so the bits never depend
 * on it (Eigen's own multi-threaded GEMM splits the work, and so rounds, differently). Out of line, like gemm():
 * one parallel loop per scalar type for every blocked product of a program.
 */
template <class Scalar>
KSHOT_NOINLINE void blocked_gemm(const GemmOperand<Scalar>& a, const GemmOperand<Scalar>& b, Scalar* c, Index ldc,
                                 Scalar alpha, bool accumulate) {
  const Index rows = a.op_rows(), blocks = (rows + gemm_row_block - 1) / gemm_row_block;
  const double work = double(rows) * double(b.op_cols()) * double(a.op_cols());
  parallel_for(blocks, worth_parallel(blocks, work), [&](Index block) {
    const Index r0 = block * gemm_row_block, r = std::min(gemm_row_block, rows - r0);
    gemm<Scalar>(a.op_row_block(r0, r), b, c + r0 * ldc, ldc, alpha, accumulate);
  });
}

/**
 * @brief gemm(), or blocked_gemm() when `Blocked`, into an Eigen destination with direct access and unit inner
 * stride: dst (= or +=) alpha op(A) op(B). A Matrix is resized on assignment, as `matrix = product` would; a
 * column-major destination is written as the row-major C^T = op(B)^T op(A)^T over the same storage.
 */
template <bool Blocked = false, class Derived, class Scalar = typename Derived::Scalar>
void gemm_into(const Eigen::MatrixBase<Derived>& dst, const GemmOperand<Scalar>& a, const GemmOperand<Scalar>& b,
               bool accumulate, Scalar alpha = Scalar(1)) {
  static_assert((Eigen::internal::traits<Derived>::Flags & Eigen::DirectAccessBit) != 0,
                "kshot::detail::gemm_into(): the destination must be a Matrix, Map, Ref or Block");
  auto& d = const_cast<Eigen::MatrixBase<Derived>&>(dst).derived();
  if constexpr (std::is_base_of_v<Eigen::PlainObjectBase<Derived>, Derived>) {
    if (!accumulate) d.resize(a.op_rows(), b.op_cols());
  }
  KSHOT_ASSERT(d.rows() == a.op_rows() && d.cols() == b.op_cols());
  KSHOT_ASSERT(d.innerStride() == 1 || d.size() <= 1);
  constexpr auto run = Blocked ? &blocked_gemm<Scalar> : &gemm<Scalar>;
  if constexpr (static_cast<bool>(Derived::IsRowMajor))
    run(a, b, d.data(), d.rows() > 1 ? Index(d.outerStride()) : d.cols(), alpha, accumulate);
  else
    run(b.transposed(), a.transposed(), d.data(), d.cols() > 1 ? Index(d.outerStride()) : d.rows(), alpha, accumulate);
}

/// dst = alpha * lhs * rhs by blocked_gemm() (the same bits for any thread count); lhs and rhs as gemm_operand()
/// takes them.
template <class Dst, class Lhs, class Rhs, class Scalar = typename Dst::Scalar>
void blocked_gemm_assign(const Eigen::MatrixBase<Dst>& dst, const Eigen::MatrixBase<Lhs>& lhs,
                         const Eigen::MatrixBase<Rhs>& rhs, Scalar alpha = Scalar(1)) {
  gemm_into<true>(dst, gemm_operand(lhs), gemm_operand(rhs), false, alpha);
}

/// dst = alpha * lhs * rhs through gemm(); lhs and rhs as gemm_operand() takes them.
template <class Dst, class Lhs, class Rhs, class Scalar = typename Dst::Scalar>
void gemm_assign(const Eigen::MatrixBase<Dst>& dst, const Eigen::MatrixBase<Lhs>& lhs,
                 const Eigen::MatrixBase<Rhs>& rhs, Scalar alpha = Scalar(1)) {
  gemm_into(dst, gemm_operand(lhs), gemm_operand(rhs), false, alpha);
}

/// dst += alpha * lhs * rhs through gemm().
template <class Dst, class Lhs, class Rhs, class Scalar = typename Dst::Scalar>
void gemm_add(const Eigen::MatrixBase<Dst>& dst, const Eigen::MatrixBase<Lhs>& lhs, const Eigen::MatrixBase<Rhs>& rhs,
              Scalar alpha = Scalar(1)) {
  gemm_into(dst, gemm_operand(lhs), gemm_operand(rhs), true, alpha);
}

}  // namespace detail
}  // namespace kshot

#endif  // KSHOT_CORE_GEMM_HPP
