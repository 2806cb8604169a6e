/**
 * @file kshot/core/types.hpp
 * @brief The data layout every kshot API shares: row-major N x D embeddings, int32 labels, Eigen indices.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_CORE_TYPES_HPP
#define KSHOT_CORE_TYPES_HPP

#include <Eigen/Core>

#include <cstdint>
#include <type_traits>

#if !EIGEN_VERSION_AT_LEAST(3, 4, 0)
#error "kshot requires Eigen 3.4 or newer"
#endif

namespace kshot {

/// Sizes and indices (signed, as in Eigen).
using Index = Eigen::Index;

/// A class label. Class ids run from 0 to C - 1 inside kshot.
using Label = std::int32_t;

/// N x D matrix with one sample per row, as NumPy and PyTorch store embeddings.
template <class Scalar>
using RowMatrixX = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Column vector of scalars (per-row values such as norms or losses).
template <class Scalar>
using VectorX = Eigen::Matrix<Scalar, Eigen::Dynamic, 1>;

/// Row vector of scalars (one embedding).
template <class Scalar>
using RowVectorX = Eigen::Matrix<Scalar, 1, Eigen::Dynamic>;

/// Column vector of labels.
using LabelVector = Eigen::Matrix<Label, Eigen::Dynamic, 1>;

/// Column vector of indices.
using IndexVector = Eigen::Matrix<Index, Eigen::Dynamic, 1>;

/**
 * @brief Read-only view of a row-major matrix.
 *
 * Row-major matrices, their row blocks and `Eigen::Map`s bind without a copy.
 * @note A column-major argument (such as `Eigen::MatrixXf`) is silently copied into a row-major
 * temporary when it binds; pass row-major data on hot paths.
 */
template <class Scalar>
using ConstRowMatrixRef = Eigen::Ref<const RowMatrixX<Scalar>>;

/// Writable view of a row-major matrix. A column-major target is refused at compile time.
template <class Scalar>
using RowMatrixRef = Eigen::Ref<RowMatrixX<Scalar>>;

/// Read-only view of a vector of scalars.
template <class Scalar>
using ConstVectorRef = Eigen::Ref<const VectorX<Scalar>>;

/// Writable view of a vector of scalars.
template <class Scalar>
using VectorRef = Eigen::Ref<VectorX<Scalar>>;

/// Read-only view of a label vector.
using ConstLabelRef = Eigen::Ref<const LabelVector>;

/// Writable view of a label vector.
using LabelRef = Eigen::Ref<LabelVector>;

/// True for the scalar types kshot instantiates (float and double).
template <class Scalar>
inline constexpr bool is_supported_scalar_v =
    std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double>;

/**
 * @brief A zero matrix shaped like `like`, for use as a gradient output.
 * @param[in] like the matrix whose shape is copied.
 */
template <class Derived>
RowMatrixX<typename Derived::Scalar> make_gradient_like(const Eigen::MatrixBase<Derived>& like) {
  return RowMatrixX<typename Derived::Scalar>::Zero(like.rows(), like.cols());
}

}  // namespace kshot

#endif  // KSHOT_CORE_TYPES_HPP
