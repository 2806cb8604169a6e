/**
 * @file kshot/interop/xtensor.hpp
 * @brief Zero-copy bridge between xtensor containers and kshot's Eigen types, both ways, row-major only.
 *
 * `as_eigen()` maps the storage of an xtensor container (`xt::xtensor`, `xt::xarray`, `xt::xtensor_fixed`,
 * the adaptors that `xt::adapt` returns) as an `Eigen::Map`, which binds to kshot's `ConstRowMatrixRef`,
 * `RowMatrixRef` and `ConstLabelRef` without a copy. `to_xtensor_view()` goes the other way: it adapts the
 * storage of a row-major Eigen matrix, `Map`, `Ref` or contiguous block as a non-owning `xt::xtensor_adaptor`.
 *
 * Only containers with contiguous row-major storage are mapped. Column-major or strided containers are
 * rejected at run time (std::invalid_argument); views and lazy expressions (`xt::view`, `xt::transpose`,
 * `a + b`, ...) are rejected at compile time with a message that says to call `xt::eval()` first, so every
 * copy is explicit. Maps are built from `data()` and the shape, never from the strides: xtensor reports a
 * stride of 0 for an axis of extent 1.
 *
 * This is the only kshot header that includes xtensor. It reads both the
 * xtensor 0.24/0.25 include layout (Debian 12) and the 0.26+ layout (`<xtensor/containers/...>`).
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_INTEROP_XTENSOR_HPP
#define KSHOT_INTEROP_XTENSOR_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/types.hpp"

#if __has_include(<xtensor/containers/xtensor.hpp>)  // xtensor >= 0.26
#include <xtensor/containers/xadapt.hpp>
#include <xtensor/containers/xarray.hpp>
#include <xtensor/containers/xbuffer_adaptor.hpp>
#include <xtensor/containers/xcontainer.hpp>
#include <xtensor/containers/xtensor.hpp>
#include <xtensor/core/xexpression.hpp>
#include <xtensor/core/xlayout.hpp>
#include <xtensor/core/xshape.hpp>
#else  // xtensor 0.24 / 0.25 (Debian 12 ships 0.24.3)
#include <xtensor/xadapt.hpp>
#include <xtensor/xarray.hpp>
#include <xtensor/xbuffer_adaptor.hpp>
#include <xtensor/xcontainer.hpp>
#include <xtensor/xexpression.hpp>
#include <xtensor/xlayout.hpp>
#include <xtensor/xshape.hpp>
#include <xtensor/xtensor.hpp>
#endif

#include <array>
#include <cstddef>
#include <string>
#include <type_traits>
#include <utility>

namespace kshot {

namespace detail {

/// E without reference and cv-qualifiers.
template <class E>
using xt_decay_t = std::remove_cv_t<std::remove_reference_t<E>>;

/**
 * @brief True for xtensor containers (types derived from `xt::xcontainer`): xarray, xtensor, xtensor_fixed and
 * the adaptors. They own or adapt one buffer that `data()` points to.
 *
 * `xt::has_data_interface` is not enough: strided views (`xt::view` with ranges, `xt::transpose`) also have a
 * `data()`, which points into the storage of the viewed container, not to their own first element.
 */
template <class E>
struct xt_is_container : std::is_base_of<xt::xcontainer<E>, E> {};

/// The rank fixed by the type of container E (-1 when it is only known at run time, as for xarray).
template <class E, bool = xt_is_container<E>::value>
struct xt_static_rank : std::integral_constant<std::ptrdiff_t, -1> {};

template <class E>
struct xt_static_rank<E, true>
    : std::integral_constant<std::ptrdiff_t, xt::static_dimension<typename E::shape_type>::value> {};

/// Whether an adaptor's storage owns its buffer: a reference to a container or a no_ownership buffer does not.
template <class EC>
struct xt_storage_owns : std::negation<std::is_lvalue_reference<EC>> {};

template <class CP, class A>
struct xt_storage_owns<xt::xbuffer_adaptor<CP, xt::no_ownership, A>> : std::false_type {};

/// Whether destroying E frees the buffer that data() points to (true unless E is a non-owning adaptor).
template <class E>
struct xt_owns_data : std::true_type {};

template <class EC, xt::layout_type L, class SC, class Tag>
struct xt_owns_data<xt::xarray_adaptor<EC, L, SC, Tag>> : xt_storage_owns<EC> {};

template <class EC, std::size_t N, xt::layout_type L, class Tag>
struct xt_owns_data<xt::xtensor_adaptor<EC, N, L, Tag>> : xt_storage_owns<EC> {};

/// True when as_eigen() and as_eigen_vector() accept an argument of type Arg (E, E&, const E&, E&&).
template <class Arg>
inline constexpr bool xt_is_mappable_v = xt_is_container<xt_decay_t<Arg>>::value &&
                                         (std::is_lvalue_reference_v<Arg> || !xt_owns_data<xt_decay_t<Arg>>::value);

/// The element type that E::data() points to, const when the storage is read-only through E.
template <class E>
using xt_element_t = std::remove_pointer_t<decltype(std::declval<E&>().data())>;

/// Map<const RowMatrixX<V>> or Map<RowMatrixX<V>>, following the constness of Element.
template <class Element>
using xt_matrix_map_t =
    std::conditional_t<std::is_const_v<Element>, Eigen::Map<const RowMatrixX<std::remove_const_t<Element>>>,
                       Eigen::Map<RowMatrixX<Element>>>;

/// Map<const VectorX<V>> or Map<VectorX<V>>, following the constness of Element.
template <class Element>
using xt_vector_map_t =
    std::conditional_t<std::is_const_v<Element>, Eigen::Map<const VectorX<std::remove_const_t<Element>>>,
                       Eigen::Map<VectorX<Element>>>;

/// "row_major", "column_major", "dynamic" or "any".
inline const char* xt_layout_name(xt::layout_type layout) noexcept {
  switch (layout) {
    case xt::layout_type::row_major:
      return "row_major";
    case xt::layout_type::column_major:
      return "column_major";
    case xt::layout_type::dynamic:
      return "dynamic";
    case xt::layout_type::any:
      return "any";
  }
  return "unknown";
}

/// "2 x 3 x 4" ("scalar" for 0 dimensions).
template <class Shape>
std::string xt_shape_string(const Shape& shape) {
  if (shape.size() == 0) return "scalar";
  std::string text;
  for (std::size_t k = 0; k < shape.size(); ++k) {
    if (k > 0) text += " x ";
    text += std::to_string(shape[k]);
  }
  return text;
}

/// Throws std::invalid_argument unless x is 2-D with row-major layout.
template <class E>
void xt_check_matrix(const E& x, const char* where) {
  const std::size_t dims = x.dimension();
  if (dims != 2)
    throw_invalid_argument(where, cat("expected a 2-D row-major container, got ", dims,
                                      dims == 1 ? " dimension" : " dimensions", " (shape ", xt_shape_string(x.shape()),
                                      ")", dims == 1 ? "; use kshot::as_eigen_vector() for 1-D data" : ""));
  const xt::layout_type layout = x.layout();
  if (layout != xt::layout_type::row_major)
    throw_invalid_argument(where,
                           cat("expected a 2-D row-major container, got layout ", xt_layout_name(layout), " (shape ",
                               xt_shape_string(x.shape()), ")",
                               layout == xt::layout_type::column_major
                                   ? "; copy it into a row-major container first, e.g. xt::xarray<T> row_major = x"
                                   : "; the storage is not contiguous in row-major order"));
}

/// Throws std::invalid_argument unless x is 1-D with contiguous storage.
template <class E>
void xt_check_vector(const E& x, const char* where) {
  const std::size_t dims = x.dimension();
  if (dims != 1)
    throw_invalid_argument(
        where, cat("expected a 1-D container, got ", dims, " dimensions (shape ", xt_shape_string(x.shape()), ")"));
  // One axis: row-major and column-major are the same contiguous storage; a strided adaptor reports dynamic.
  const xt::layout_type layout = x.layout();
  if (layout == xt::layout_type::dynamic)
    throw_invalid_argument(where, cat("expected a contiguous 1-D container, got layout dynamic (shape ",
                                      xt_shape_string(x.shape()), "): the storage is strided"));
}

/// The map of a checked 2-D container (from data() and shape, never strides).
template <class E>
auto xt_matrix_map(E& x) {
  using Map = xt_matrix_map_t<xt_element_t<E>>;
  return Map(x.data(), static_cast<Index>(x.shape()[0]), static_cast<Index>(x.shape()[1]));
}

/// The map of a checked 1-D container.
template <class E>
auto xt_vector_map(E& x) {
  using Map = xt_vector_map_t<xt_element_t<E>>;
  return Map(x.data(), static_cast<Index>(x.shape()[0]));
}

}  // namespace detail

/**
 * @brief Maps a 2-D row-major `xt::xtensor` as a read-only Eigen row-major matrix, without copying.
 * @tparam T the element type.
 * @param[in] x the tensor; it must outlive the map, and must not be resized while the map is used.
 * @return `Eigen::Map<const RowMatrixX<T>>` over `x.data()`, `x.shape()[0]` x `x.shape()[1]`. It binds to
 * `ConstRowMatrixRef<T>` without a copy.
 * @note Built from the shape, never the strides (a 1 x d or n x 1 tensor reports a stride of 0 on its size-1
 * axis). Never throws: the type guarantees a contiguous row-major buffer.
 */
template <class T>
Eigen::Map<const RowMatrixX<T>> as_eigen(const xt::xtensor<T, 2, xt::layout_type::row_major>& x) {
  return detail::xt_matrix_map(x);
}

/**
 * @brief Maps a 2-D row-major `xt::xtensor` as a writable Eigen row-major matrix, without copying.
 * @tparam T the element type.
 * @param[in,out] x the tensor; writes through the map change it. It must outlive the map and must not be
 * resized while the map is used.
 * @return `Eigen::Map<RowMatrixX<T>>` over `x.data()`, `x.shape()[0]` x `x.shape()[1]`. It binds to
 * `RowMatrixRef<T>` (an output argument) and `ConstRowMatrixRef<T>` without a copy.
 */
template <class T>
Eigen::Map<RowMatrixX<T>> as_eigen(xt::xtensor<T, 2, xt::layout_type::row_major>& x) {
  return detail::xt_matrix_map(x);
}

/**
 * @brief Maps a 1-D `xt::xtensor` as a read-only Eigen column vector, without copying.
 * @tparam T the element type; for `T = Label` (std::int32_t) the result is `Eigen::Map<const LabelVector>`,
 * which binds to `ConstLabelRef` without a copy.
 * @param[in] x the tensor; it must outlive the map and must not be resized while the map is used.
 * @return `Eigen::Map<const VectorX<T>>` over `x.data()` with `x.size()` entries.
 */
template <class T>
Eigen::Map<const VectorX<T>> as_eigen(const xt::xtensor<T, 1, xt::layout_type::row_major>& x) {
  return detail::xt_vector_map(x);
}

/**
 * @brief Maps a 1-D `xt::xtensor` as a writable Eigen column vector, without copying.
 * @tparam T the element type (`Label` gives a writable `Eigen::Map<LabelVector>`).
 * @param[in,out] x the tensor; writes through the map change it.
 * @return `Eigen::Map<VectorX<T>>` over `x.data()` with `x.size()` entries.
 */
template <class T>
Eigen::Map<VectorX<T>> as_eigen(xt::xtensor<T, 1, xt::layout_type::row_major>& x) {
  return detail::xt_vector_map(x);
}

/**
 * @brief Maps any other xtensor container (`xt::xarray`, `xt::xtensor_fixed`, an `xt::adapt` result, a
 * column-major `xt::xtensor`) as an Eigen map, without copying, after checking its layout and rank.
 *
 * - A container whose type fixes rank 1 gives a vector map, as the `xt::xtensor<T, 1>` overloads do.
 * - Any other container gives a row-major matrix map, and must be 2-D with row-major layout at run time.
 *
 * The map is read-only (`Map<const ...>`) when `x` is const or adapts a const buffer, writable otherwise.
 *
 * @tparam E an xtensor container type (deduced). Views and lazy expressions are refused at compile time:
 * call `xt::eval()` on them first (that copy is then explicit). A temporary container that owns its buffer
 * is refused at compile time too (the map would dangle); temporary non-owning adaptors are accepted.
 * @param[in] x the container; it must outlive the map and must not be resized while the map is used.
 * @return `Eigen::Map<[const] RowMatrixX<T>>` (shape[0] x shape[1]) or, for a container of fixed rank 1,
 * `Eigen::Map<[const] VectorX<T>>`, over `x.data()`.
 * @throws std::invalid_argument "kshot::as_eigen(): expected a 2-D row-major container, got ..." when a
 * container of run-time rank does not have 2 dimensions, or when the layout is not row-major (column-major,
 * or dynamic for a strided adaptor); the message names the dimensions, the layout and the shape.
 */
template <class E>
auto as_eigen(E&& x) {
  using Container = detail::xt_decay_t<E>;
  static_assert(xt::is_xexpression<Container>::value,
                "kshot::as_eigen(): the argument is not an xtensor expression (kshot maps xtensor containers "
                "such as xt::xtensor, xt::xarray and xt::adapt results)");
  static_assert(detail::xt_is_container<Container>::value,
                "kshot::as_eigen(): views and lazy expressions (xt::view, xt::transpose, a + b, ...) have no "
                "contiguous storage of their own; call xt::eval() first to make an explicit copy");
  if constexpr (detail::xt_is_container<Container>::value) {
    static_assert(detail::xt_is_mappable_v<E>,
                  "kshot::as_eigen(): the argument is a temporary container that owns its data, so the map "
                  "would dangle; store the container in a variable first");
    constexpr std::ptrdiff_t rank = detail::xt_static_rank<Container>::value;
    static_assert(rank == -1 || rank == 1 || rank == 2,
                  "kshot::as_eigen(): the container's type fixes a rank other than 1 or 2; kshot maps 2-D "
                  "containers as matrices and 1-D containers as vectors");
    if constexpr (rank == 1) {
      detail::xt_check_vector(x, "kshot::as_eigen()");
      return detail::xt_vector_map(x);
    } else {
      detail::xt_check_matrix(x, "kshot::as_eigen()");
      return detail::xt_matrix_map(x);
    }
  }
}

/**
 * @brief Maps a 1-D xtensor container (of fixed or run-time rank, e.g. a 1-D `xt::xarray` of labels) as an
 * Eigen column vector, without copying.
 * @tparam E an xtensor container type (deduced); views, lazy expressions and owning temporaries are refused
 * at compile time, as for as_eigen().
 * @param[in] x the container; it must outlive the map and must not be resized while the map is used.
 * @return `Eigen::Map<[const] VectorX<T>>` over `x.data()` with `x.size()` entries; for `T = Label` it binds
 * to `ConstLabelRef` without a copy. Read-only when `x` is const or adapts a const buffer.
 * @throws std::invalid_argument "kshot::as_eigen_vector(): expected a 1-D container, got ..." when `x` does
 * not have exactly 1 dimension, and "... expected a contiguous 1-D container, got layout dynamic ..." when
 * its storage is strided.
 */
template <class E>
auto as_eigen_vector(E&& x) {
  using Container = detail::xt_decay_t<E>;
  static_assert(xt::is_xexpression<Container>::value,
                "kshot::as_eigen_vector(): the argument is not an xtensor expression (kshot maps xtensor "
                "containers such as xt::xtensor, xt::xarray and xt::adapt results)");
  static_assert(detail::xt_is_container<Container>::value,
                "kshot::as_eigen_vector(): views and lazy expressions (xt::view, xt::transpose, a + b, ...) have "
                "no contiguous storage of their own; call xt::eval() first to make an explicit copy");
  if constexpr (detail::xt_is_container<Container>::value) {
    static_assert(detail::xt_is_mappable_v<E>,
                  "kshot::as_eigen_vector(): the argument is a temporary container that owns its data, so the "
                  "map would dangle; store the container in a variable first");
    constexpr std::ptrdiff_t rank = detail::xt_static_rank<Container>::value;
    static_assert(rank == -1 || rank == 1,
                  "kshot::as_eigen_vector(): the container's type fixes a rank other than 1; use "
                  "kshot::as_eigen() for 2-D containers");
    detail::xt_check_vector(x, "kshot::as_eigen_vector()");
    return detail::xt_vector_map(x);
  }
}

/**
 * @brief The type to_xtensor_view() returns: a non-owning, row-major `xt::xtensor_adaptor` of rank N over
 * a buffer of T (T is const for a read-only view).
 * @tparam T the element type, const-qualified for a read-only view.
 * @tparam N the rank (2 for matrices, 1 for vectors).
 */
template <class T, std::size_t N>
using XtensorView = decltype(xt::adapt<xt::layout_type::row_major>(
    std::declval<T*>(), std::size_t{}, xt::no_ownership(), std::declval<const std::array<std::size_t, N>&>()));

/**
 * @brief Adapts the storage of a row-major Eigen matrix, or of a vector, as an xtensor container, without
 * copying.
 *
 * Accepts `RowMatrixX<T>`, `LabelVector`, `VectorX<T>`, `RowVectorX<T>`, and `Eigen::Map`, `Eigen::Ref` and
 * blocks of them whose storage is contiguous (`m.middleRows(i, k)` of a row-major matrix is; `m.leftCols(k)`
 * is not).
 *
 * @tparam M an Eigen type with direct storage access (deduced). Refused at compile time: column-major
 * matrices (that are not vectors at compile time: copy them into a `RowMatrixX<T>` first), expressions without
 * storage (evaluate them first), and temporary matrices that own their storage (the view would dangle);
 * temporary `Map`s, `Ref`s and blocks are accepted.
 * @param[in] m the matrix or vector; it must outlive the view and must not be resized while the view is used.
 * @return a `XtensorView<T, 2>` of shape {rows, cols} for a matrix type, or a `XtensorView<T, 1>` of shape
 * {size} for a vector type (rank from the compile-time type, so a one-column `RowMatrixX` stays 2-D). `T` is
 * const, and the view read-only, when `m` is const or a read-only `Map`/`Ref`. `data()` of the view equals
 * `m.data()`.
 * @throws std::invalid_argument "kshot::to_xtensor_view(): ..." when the storage is not contiguous: an inner
 * stride other than 1, or (for a matrix with more than one row) an outer stride other than the number of
 * columns; the message names the strides and the shape.
 */
template <class M>
auto to_xtensor_view(M&& m) {
  using Matrix = detail::xt_decay_t<M>;
  constexpr const char* where = "kshot::to_xtensor_view()";
  static_assert(std::is_base_of_v<Eigen::EigenBase<Matrix>, Matrix>,
                "kshot::to_xtensor_view(): the argument must be an Eigen matrix, vector, Map, Ref or block");
  if constexpr (std::is_base_of_v<Eigen::EigenBase<Matrix>, Matrix>) {
    constexpr bool has_storage = (int(Eigen::internal::traits<Matrix>::Flags) & Eigen::DirectAccessBit) != 0;
    constexpr bool row_major = Matrix::IsVectorAtCompileTime || Matrix::IsRowMajor;
    constexpr bool lasting =
        std::is_lvalue_reference_v<M> || !std::is_base_of_v<Eigen::PlainObjectBase<Matrix>, Matrix>;
    static_assert(has_storage,
                  "kshot::to_xtensor_view(): the argument is an Eigen expression without storage; evaluate it "
                  "into a RowMatrixX<T> (or a vector) first");
    static_assert(row_major,
                  "kshot::to_xtensor_view(): the matrix is column-major; kshot's xtensor bridge is row-major only, "
                  "copy it into a kshot::RowMatrixX<T> first");
    static_assert(lasting,
                  "kshot::to_xtensor_view(): the argument is a temporary matrix that owns its storage, so the view "
                  "would dangle; store it in a variable first");
    if constexpr (has_storage && row_major && lasting) {
      if (m.size() > 1 && m.innerStride() != 1)
        detail::throw_invalid_argument(where, detail::cat("the storage is not contiguous: inner stride ",
                                                          m.innerStride(), " (shape ", m.rows(), " x ", m.cols(), ")"));
      if constexpr (Matrix::IsVectorAtCompileTime) {
        const std::array<std::size_t, 1> shape = {static_cast<std::size_t>(m.size())};
        return xt::adapt<xt::layout_type::row_major>(m.data(), static_cast<std::size_t>(m.size()), xt::no_ownership(),
                                                     shape);
      } else {
        if (m.rows() > 1 && m.outerStride() != m.cols())
          detail::throw_invalid_argument(
              where, detail::cat("the storage is not contiguous: outer stride ", m.outerStride(), " but ", m.cols(),
                                 " columns (shape ", m.rows(), " x ", m.cols(),
                                 "); only whole rows of a row-major matrix can be adapted"));
        const std::array<std::size_t, 2> shape = {static_cast<std::size_t>(m.rows()),
                                                  static_cast<std::size_t>(m.cols())};
        return xt::adapt<xt::layout_type::row_major>(m.data(), static_cast<std::size_t>(m.size()), xt::no_ownership(),
                                                     shape);
      }
    }
  }
}

}  // namespace kshot

#endif  // KSHOT_INTEROP_XTENSOR_HPP
