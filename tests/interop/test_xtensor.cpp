/**
 * @file tests/interop/test_xtensor.cpp
 * @brief Tests of the xtensor bridge: zero-copy maps both ways (data pointers compared), size-1 axes,
 * runtime rejection of wrong ranks and layouts, compile-time rejection of views and dangling temporaries.
 *
 * SPDX-License-Identifier: MIT
 */
#include "test_util.hpp"

#include <kshot/interop/xtensor.hpp>

#if __has_include(<xtensor/containers/xfixed.hpp>)
#include <xtensor/containers/xfixed.hpp>
#include <xtensor/core/xeval.hpp>
#include <xtensor/misc/xmanipulation.hpp>
#include <xtensor/views/xview.hpp>
#else
#include <xtensor/xeval.hpp>
#include <xtensor/xfixed.hpp>
#include <xtensor/xmanipulation.hpp>
#include <xtensor/xview.hpp>
#endif

#include <array>
#include <cstddef>
#include <stdexcept>
#include <type_traits>
#include <vector>

namespace {

using kshot::Index;
using kshot::Label;

/// The row-major 2-D shape {rows, cols} as xtensor wants it.
std::vector<std::size_t> shape2(std::size_t rows, std::size_t cols) { return {rows, cols}; }

}  // namespace

TEST_CASE("interop.xtensor: as_eigen maps an xtensor without copying, read-only and writable") {
  xt::xtensor<float, 2> tensor = {{1.f, 2.f, 3.f}, {4.f, 5.f, 6.f}};

  const auto& const_tensor = tensor;
  const Eigen::Map<const kshot::RowMatrixX<float>> read = kshot::as_eigen(const_tensor);
  CHECK(read.data() == tensor.data());
  CHECK(read.rows() == 2);
  CHECK(read.cols() == 3);
  CHECK(read(0, 2) == 3.f);
  CHECK(read(1, 0) == 4.f);

  // kshot's public APIs take ConstRowMatrixRef: binding the map must not copy.
  const kshot::ConstRowMatrixRef<float> ref = kshot::as_eigen(const_tensor);
  CHECK(ref.data() == tensor.data());
  CHECK(ref(1, 2) == 6.f);

  Eigen::Map<kshot::RowMatrixX<float>> write = kshot::as_eigen(tensor);
  CHECK(write.data() == tensor.data());
  write(1, 1) = -50.f;
  write.row(0) *= 2.f;
  CHECK(tensor(1, 1) == -50.f);
  CHECK(tensor(0, 0) == 2.f);
  CHECK(tensor(0, 2) == 6.f);

  // A writable RowMatrixRef (an output argument) binds too, and writes land in the tensor.
  kshot::RowMatrixRef<float> out = kshot::as_eigen(tensor);
  CHECK(out.data() == tensor.data());
  out.setConstant(0.5f);
  CHECK(tensor(1, 2) == 0.5f);

  static_assert(std::is_same_v<decltype(kshot::as_eigen(const_tensor)), Eigen::Map<const kshot::RowMatrixX<float>>>);
  static_assert(std::is_same_v<decltype(kshot::as_eigen(tensor)), Eigen::Map<kshot::RowMatrixX<float>>>);
}

TEST_CASE("interop.xtensor: size-1 axes are mapped from the shape, not the strides") {
  // 1 x d: xtensor reports stride 0 on the size-1 axis.
  xt::xtensor<double, 2> row = {{1.0, 2.0, 3.0, 4.0}};
  REQUIRE(row.strides()[0] == 0);
  const auto row_map = kshot::as_eigen(row);
  CHECK(row_map.rows() == 1);
  CHECK(row_map.cols() == 4);
  CHECK(row_map.data() == row.data());
  CHECK(row_map(0, 3) == 4.0);
  const kshot::ConstRowMatrixRef<double> row_ref = row_map;
  CHECK(row_ref.data() == row.data());

  // n x 1.
  xt::xtensor<double, 2> column = {{1.0}, {2.0}, {3.0}};
  REQUIRE(column.strides()[1] == 0);
  const auto column_map = kshot::as_eigen(column);
  CHECK(column_map.rows() == 3);
  CHECK(column_map.cols() == 1);
  CHECK(column_map(2, 0) == 3.0);
  const kshot::ConstRowMatrixRef<double> column_ref = column_map;
  CHECK(column_ref.data() == column.data());
  CHECK(column_ref(1, 0) == 2.0);

  // The same through xarray (runtime-checked path) and an empty tensor.
  xt::xarray<float> row_array = {{7.f, 8.f}};
  const auto row_array_map = kshot::as_eigen(row_array);
  CHECK(row_array_map.rows() == 1);
  CHECK(row_array_map.cols() == 2);
  CHECK(row_array_map(0, 1) == 8.f);
  xt::xtensor<float, 2> empty = xt::xtensor<float, 2>::from_shape({0, 5});
  const auto empty_map = kshot::as_eigen(empty);
  CHECK(empty_map.rows() == 0);
  CHECK(empty_map.cols() == 5);
}

TEST_CASE("interop.xtensor: 1-D tensors map to vectors; label tensors bind to ConstLabelRef without a copy") {
  xt::xtensor<Label, 1> labels = {3, 1, 4, 1, 5};
  const auto& const_labels = labels;
  const kshot::ConstLabelRef ref = kshot::as_eigen(const_labels);
  CHECK(ref.data() == labels.data());
  CHECK(ref.size() == 5);
  CHECK(ref[2] == 4);
  static_assert(std::is_same_v<decltype(kshot::as_eigen(const_labels)), Eigen::Map<const kshot::LabelVector>>);

  Eigen::Map<kshot::LabelVector> writable = kshot::as_eigen(labels);
  writable[0] = 9;
  CHECK(labels(0) == 9);
  const kshot::LabelRef label_out = kshot::as_eigen(labels);
  CHECK(label_out.data() == labels.data());

  xt::xtensor<float, 1> norms = {0.5f, 1.5f};
  const kshot::ConstVectorRef<float> norms_ref = kshot::as_eigen(norms);
  CHECK(norms_ref.data() == norms.data());
  CHECK(norms_ref[1] == 1.5f);

  // A 1-D xarray (rank known only at run time) goes through as_eigen_vector.
  xt::xarray<Label> dynamic_labels = {2, 7};
  const kshot::ConstLabelRef dynamic_ref = kshot::as_eigen_vector(dynamic_labels);
  CHECK(dynamic_ref.data() == dynamic_labels.data());
  CHECK(dynamic_ref[1] == 7);
}

TEST_CASE("interop.xtensor: xarray, xtensor_fixed and xt::adapt results are accepted after a runtime check") {
  xt::xarray<double> array = {{1.0, 2.0}, {3.0, 4.0}, {5.0, 6.0}};
  auto array_map = kshot::as_eigen(array);
  CHECK(array_map.data() == array.data());
  CHECK(array_map.rows() == 3);
  CHECK(array_map.cols() == 2);
  array_map(2, 1) = 60.0;
  CHECK(array(2, 1) == 60.0);

  xt::xtensor_fixed<float, xt::xshape<2, 3>> fixed = {{1.f, 2.f, 3.f}, {4.f, 5.f, 6.f}};
  const auto fixed_map = kshot::as_eigen(fixed);
  CHECK(fixed_map.data() == fixed.data());
  CHECK(fixed_map(1, 0) == 4.f);

  // An adaptor over a std::vector (held by reference) and a non-owning adaptor over a pointer: both can be
  // mapped even as temporaries, because the buffer outlives them.
  std::vector<float> buffer = {1.f, 2.f, 3.f, 4.f, 5.f, 6.f};
  const auto vector_map = kshot::as_eigen(xt::adapt(buffer, shape2(3, 2)));
  CHECK(vector_map.data() == buffer.data());
  CHECK(vector_map.rows() == 3);
  CHECK(vector_map(2, 1) == 6.f);
  const auto pointer_map =
      kshot::as_eigen(xt::adapt(buffer.data(), buffer.size(), xt::no_ownership(), std::array<std::size_t, 2>{2, 3}));
  CHECK(pointer_map.data() == buffer.data());
  CHECK(pointer_map(1, 0) == 4.f);
  static_assert(std::is_same_v<std::remove_const_t<decltype(pointer_map)>, Eigen::Map<kshot::RowMatrixX<float>>>);

  // An adaptor over a const buffer gives a read-only map.
  const float* const_data = buffer.data();
  const auto const_map =
      kshot::as_eigen(xt::adapt(const_data + 0, buffer.size(), xt::no_ownership(), std::array<std::size_t, 2>{6, 1}));
  static_assert(std::is_same_v<std::remove_const_t<decltype(const_map)>, Eigen::Map<const kshot::RowMatrixX<float>>>);
  CHECK(const_map.data() == buffer.data());
  CHECK(const_map(5, 0) == 6.f);
}

TEST_CASE("interop.xtensor: a 3-D xarray throws std::invalid_argument naming the dimensions") {
  xt::xarray<float> cube = xt::xarray<float>::from_shape({2, 3, 4});
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::as_eigen(cube), std::invalid_argument, "kshot::as_eigen()",
                              "expected a 2-D row-major container", "got 3 dimensions", "shape 2 x 3 x 4");
  xt::xarray<float> line = {1.f, 2.f, 3.f};
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::as_eigen(line), std::invalid_argument, "kshot::as_eigen()",
                              "got 1 dimension (shape 3)", "shape 3", "kshot::as_eigen_vector()");
  xt::xarray<float> matrix = {{1.f, 2.f}, {3.f, 4.f}};
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::as_eigen_vector(matrix), std::invalid_argument, "kshot::as_eigen_vector()",
                              "expected a 1-D container", "got 2 dimensions", "shape 2 x 2");
}

TEST_CASE("interop.xtensor: column-major and strided containers throw std::invalid_argument") {
  xt::xarray<float, xt::layout_type::dynamic> dynamic(shape2(3, 2), xt::layout_type::column_major);
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::as_eigen(dynamic), std::invalid_argument, "kshot::as_eigen()",
                              "expected a 2-D row-major container", "got layout column_major", "shape 3 x 2",
                              "copy it into a row-major container");

  xt::xarray<double, xt::layout_type::column_major> column_major = {{1.0, 2.0}, {3.0, 4.0}};
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::as_eigen(column_major), std::invalid_argument, "got layout column_major",
                              "shape 2 x 2");

  xt::xtensor<float, 2, xt::layout_type::column_major> tensor = {{1.f, 2.f, 3.f}, {4.f, 5.f, 6.f}};
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::as_eigen(tensor), std::invalid_argument, "got layout column_major", "shape 2 x 3");

  // An adaptor with explicit strides that skip elements reports layout dynamic.
  std::vector<float> buffer(6, 1.f);
  auto strided = xt::adapt(buffer.data(), 4, xt::no_ownership(), shape2(2, 2), std::vector<std::size_t>{3, 1});
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::as_eigen(strided), std::invalid_argument, "got layout dynamic", "not contiguous");
  auto strided_vector =
      xt::adapt(buffer.data(), 2, xt::no_ownership(), std::vector<std::size_t>{2}, std::vector<std::size_t>{2});
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::as_eigen_vector(strided_vector), std::invalid_argument, "kshot::as_eigen_vector()",
                              "layout dynamic", "strided");

  // One axis: row-major and column-major are the same bytes, so a column-major 1-D xarray maps.
  xt::xarray<float, xt::layout_type::dynamic> line(std::vector<std::size_t>{3}, xt::layout_type::column_major);
  line(2) = 8.f;
  CHECK(kshot::as_eigen_vector(line)[2] == 8.f);
}

TEST_CASE("interop.xtensor: views, lazy expressions and owning temporaries are refused at compile time") {
  using kshot::detail::xt_is_mappable_v;
  xt::xtensor<float, 2> tensor = {{1.f, 2.f, 3.f}, {4.f, 5.f, 6.f}};
  auto view = xt::view(tensor, xt::all(), xt::range(1, 3));
  auto transposed = xt::transpose(tensor);
  auto sum = tensor + tensor;
  // Strided views do have a data() (into the viewed storage), so has_data_interface alone would not catch them.
  static_assert(xt::has_data_interface<decltype(view)>::value);
  static_assert(!xt_is_mappable_v<decltype(view)&>);
  static_assert(!xt_is_mappable_v<decltype(transposed)&>);
  static_assert(!xt_is_mappable_v<decltype(sum)&>);
  // Lvalue containers map; owning temporaries would dangle; non-owning temporary adaptors are fine.
  static_assert(xt_is_mappable_v<xt::xtensor<float, 2>&>);
  static_assert(xt_is_mappable_v<const xt::xarray<float>&>);
  static_assert(!xt_is_mappable_v<xt::xtensor<float, 2>>);
  static_assert(!xt_is_mappable_v<xt::xarray<float>&&>);
  static_assert(xt_is_mappable_v<decltype(xt::adapt(std::declval<float*>(), std::size_t{}, xt::no_ownership(),
                                                    std::declval<const std::array<std::size_t, 2>&>()))>);

  // The documented way: xt::eval() makes the copy explicit, then the result maps.
  auto evaluated = xt::eval(view);
  const auto map = kshot::as_eigen(evaluated);
  CHECK(map.rows() == 2);
  CHECK(map.cols() == 2);
  CHECK(map(0, 0) == 2.f);
  CHECK(map(1, 1) == 6.f);
  auto evaluated_sum = xt::eval(sum);
  CHECK(kshot::as_eigen(evaluated_sum)(1, 2) == 12.f);
}

TEST_CASE("interop.xtensor: to_xtensor_view adapts Eigen storage without copying") {
  kshot::RowMatrixX<float> matrix(2, 3);
  matrix << 1.f, 2.f, 3.f, 4.f, 5.f, 6.f;
  auto view = kshot::to_xtensor_view(matrix);
  static_assert(std::is_same_v<decltype(view), kshot::XtensorView<float, 2>>);
  CHECK(view.data() == matrix.data());
  CHECK(view.dimension() == 2);
  CHECK(view.shape()[0] == 2);
  CHECK(view.shape()[1] == 3);
  CHECK(view.layout() == xt::layout_type::row_major);
  CHECK(view(1, 2) == 6.f);
  view(0, 1) = -2.f;
  CHECK(matrix(0, 1) == -2.f);

  // Const matrices give a read-only view.
  const kshot::RowMatrixX<float>& const_matrix = matrix;
  const auto const_view = kshot::to_xtensor_view(const_matrix);
  static_assert(std::is_same_v<std::remove_const_t<decltype(const_view)>, kshot::XtensorView<const float, 2>>);
  CHECK(const_view.data() == matrix.data());
  CHECK(const_view(1, 0) == 4.f);

  // Maps, Refs and whole-row blocks of row-major storage.
  std::vector<double> buffer = {1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0};
  Eigen::Map<kshot::RowMatrixX<double>> map(buffer.data(), 4, 2);
  auto map_view = kshot::to_xtensor_view(map);
  CHECK(map_view.data() == buffer.data());
  CHECK(map_view(3, 1) == 8.0);
  const kshot::ConstRowMatrixRef<double> ref = map;
  const auto ref_view = kshot::to_xtensor_view(ref);
  CHECK(ref_view.data() == buffer.data());
  CHECK(ref_view.shape()[0] == 4);
  auto block_view = kshot::to_xtensor_view(map.middleRows(1, 2));
  CHECK(block_view.data() == buffer.data() + 2);
  CHECK(block_view.shape()[0] == 2);
  CHECK(block_view(1, 0) == 5.0);

  // Vectors (labels) become 1-D.
  kshot::LabelVector labels(4);
  labels << 0, 2, 1, 2;
  auto label_view = kshot::to_xtensor_view(labels);
  static_assert(std::is_same_v<decltype(label_view), kshot::XtensorView<Label, 1>>);
  CHECK(label_view.data() == labels.data());
  CHECK(label_view.dimension() == 1);
  CHECK(label_view.shape()[0] == 4);
  CHECK(label_view(1) == 2);
  label_view(3) = 7;
  CHECK(labels[3] == 7);

  // A one-column matrix type stays 2-D; the round trip maps back onto the same storage.
  kshot::RowMatrixX<float> column(3, 1);
  column << 1.f, 2.f, 3.f;
  auto column_view = kshot::to_xtensor_view(column);
  CHECK(column_view.dimension() == 2);
  CHECK(column_view.shape()[1] == 1);
  const auto back = kshot::as_eigen(column_view);
  CHECK(back.data() == column.data());
  CHECK(back(2, 0) == 3.f);
}

TEST_CASE("interop.xtensor: to_xtensor_view refuses non-contiguous blocks with std::invalid_argument") {
  kshot::RowMatrixX<float> matrix = kshot::RowMatrixX<float>::Zero(3, 4);
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::to_xtensor_view(matrix.leftCols(2)), std::invalid_argument,
                              "kshot::to_xtensor_view()", "outer stride 4 but 2 columns", "shape 3 x 2");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::to_xtensor_view(matrix.col(1)), std::invalid_argument, "kshot::to_xtensor_view()",
                              "inner stride 4", "shape 3 x 1");
  // One row of a column block is contiguous.
  auto one_row = kshot::to_xtensor_view(matrix.block(1, 1, 1, 2));
  CHECK(one_row.data() == matrix.data() + 5);
}
