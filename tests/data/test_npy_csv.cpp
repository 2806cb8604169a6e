/**
 * @file tests/data/test_npy_csv.cpp
 * @brief Tests of .npy and .csv I/O (kshot/data/npy.hpp, kshot/data/csv.hpp): exact round trips, files written by
 * NumPy (tests/data/npy_files, made by make_fixtures.py), and every error with its type and message: corrupt
 * headers, truncated data, wrong dtype, Fortran order, bad CSV cells and rows, missing files, failed saves that
 * leave nothing. The interchange with xtensor's own readers is in tests/interop/test_io.cpp.
 *
 * SPDX-License-Identifier: MIT
 */
#include "test_util.hpp"
#include "data/file_test_util.hpp"

#include <kshot/data/csv.hpp>
#include <kshot/data/npy.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using namespace kshot_file_test;
using kshot::Index;
using kshot::NpyConvert;

}  // namespace

TEST_CASE_TEMPLATE("data.io: .npy round trip keeps values and shape exactly", T, float, double) {
  TempDir dir;
  const std::string path = dir.file("embeddings.npy");
  kshot::RowMatrixX<T> matrix(3, 4);
  matrix << T(0.1), T(-2.5), T(1e-3), T(7), T(-0.0), std::numeric_limits<T>::denorm_min(),
      std::numeric_limits<T>::max(), std::numeric_limits<T>::infinity(), std::numeric_limits<T>::quiet_NaN(),
      T(1) / T(3), T(-1e30), T(42);
  kshot::save_npy(path, matrix);
  CHECK(dir.entries() == std::vector<std::string>{"embeddings.npy"});  // no temporary file left

  const kshot::NpyHeader header = kshot::read_npy_header(path);
  CHECK(header.descr == (sizeof(T) == 4 ? "<f4" : "<f8"));
  CHECK(header.shape == std::vector<Index>{3, 4});
  CHECK_FALSE(header.fortran_order);
  CHECK(header.data_offset == 128);  // NumPy's 64-byte alignment
  CHECK(fs::file_size(path) == 128 + 12 * sizeof(T));

  const kshot::RowMatrixX<T> loaded = kshot::load_npy_matrix<T>(path);
  CHECK(same_bits(loaded, matrix));

  // Columns blocks, column-major matrices and expressions are copied into row-major order first.
  Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic> column_major = matrix.leftCols(2);
  kshot::save_npy(path, column_major);
  const kshot::RowMatrixX<T> from_column_major = kshot::load_npy_matrix<T>(path);
  CHECK(same_bits(from_column_major, kshot::RowMatrixX<T>(matrix.leftCols(2))));
  kshot::save_npy(path, matrix.rightCols(1) * T(2));
  const kshot::RowMatrixX<T> doubled = kshot::load_npy_matrix<T>(path);
  REQUIRE(doubled.rows() == 3);
  REQUIRE(doubled.cols() == 1);
  CHECK(doubled(0, 0) == T(14));
  CHECK(doubled(2, 0) == T(84));
}

TEST_CASE("data.io: int32 labels round trip, 1-D shape, and vectors versus one-column matrices") {
  TempDir dir;
  const std::string path = dir.file("labels.npy");
  kshot::LabelVector labels(6);
  labels << 0, 4, 2, std::numeric_limits<kshot::Label>::max(), std::numeric_limits<kshot::Label>::min(), 1;
  kshot::save_npy(path, labels);
  const kshot::NpyHeader header = kshot::read_npy_header(path);
  CHECK(header.descr == "<i4");
  CHECK(header.shape == std::vector<Index>{6});
  const kshot::LabelVector loaded = kshot::load_npy_labels(path);
  CHECK(loaded == labels);

  // A vector type is saved 1-D; a one-row or one-column matrix type stays 2-D.
  kshot::RowMatrixX<float> row(1, 3);
  row << 1.f, 2.f, 3.f;
  kshot::save_npy(path, row);
  CHECK(kshot::read_npy_header(path).shape == std::vector<Index>{1, 3});
  CHECK(kshot::load_npy_matrix<float>(path) == row);
  kshot::VectorX<double> vector(2);
  vector << 0.25, 0.5;
  kshot::save_npy(path, vector);
  CHECK(kshot::read_npy_header(path).shape == std::vector<Index>{2});
  CHECK(kshot::read_npy_header(path).descr == "<f8");

  // An empty matrix round-trips with its shape.
  kshot::RowMatrixX<float> empty(0, 5);
  kshot::save_npy(path, empty);
  const kshot::RowMatrixX<float> empty_loaded = kshot::load_npy_matrix<float>(path);
  CHECK(empty_loaded.rows() == 0);
  CHECK(empty_loaded.cols() == 5);
}

TEST_CASE("data.io: reads the .npy files that NumPy wrote") {
  kshot::RowMatrixX<float> expected(2, 3);
  expected << 1.5f, -2.25f, 3.0f, 0.1f, 1e-3f, -7.0f;

  const kshot::NpyHeader header = kshot::read_npy_header(fixture("f32_2x3.npy"));
  CHECK(header.major_version == 1);
  CHECK(header.descr == "<f4");
  CHECK(header.kind == 'f');
  CHECK(header.item_size == 4);
  CHECK(header.shape == std::vector<Index>{2, 3});
  CHECK(header.data_offset == 128);
  CHECK(header.data_bytes == 24);
  CHECK(kshot::load_npy_matrix<float>(fixture("f32_2x3.npy")) == expected);

  const kshot::RowMatrixX<double> column = kshot::load_npy_matrix<double>(fixture("f64_4x1.npy"));
  REQUIRE(column.rows() == 4);
  REQUIRE(column.cols() == 1);
  CHECK(column(0, 0) == 0.1);
  CHECK(column(1, 0) == -2.5);
  CHECK(column(2, 0) == 1e300);
  CHECK(column(3, 0) == 3.141592653589793);

  kshot::LabelVector labels(6);
  labels << 3, 0, 7, 2, 2147483647, -5;
  CHECK(kshot::read_npy_header(fixture("labels_i64.npy")).descr == "<i8");
  CHECK(kshot::load_npy_labels(fixture("labels_i64.npy")) == labels);
  kshot::LabelVector bytes(4);
  bytes << 0, 1, 255, 9;
  CHECK(kshot::read_npy_header(fixture("labels_u8.npy")).descr == "|u1");
  CHECK(kshot::load_npy_labels(fixture("labels_u8.npy")) == bytes);

  // Big-endian data is byte-swapped (exact, no flag needed).
  const kshot::NpyHeader big = kshot::read_npy_header(fixture("be_f4_2x2.npy"));
  CHECK(big.byte_order == '>');
  kshot::RowMatrixX<float> big_expected(2, 2);
  big_expected << 1.f, -2.f, 0.5f, 1e10f;
  CHECK(kshot::load_npy_matrix<float>(fixture("be_f4_2x2.npy")) == big_expected);

  // Fortran order: the same values stored column by column, transposed on request.
  CHECK(kshot::read_npy_header(fixture("fortran_f32_2x3.npy")).fortran_order);
  CHECK(kshot::load_npy_matrix<float>(fixture("fortran_f32_2x3.npy"), NpyConvert::fortran_order) == expected);
  CHECK(kshot::load_npy_matrix<float>(fixture("fortran_f32_2x3.npy"), NpyConvert::all) == expected);

  CHECK(kshot::read_npy_header(fixture("f32_2x2x2.npy")).shape == std::vector<Index>{2, 2, 2});
}

TEST_CASE("data.io: a wrong dtype throws naming the dtype found; NpyConvert::dtype converts") {
  const std::string path = fixture("f64_4x1.npy");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_npy_matrix<float>(path), std::runtime_error, "kshot::load_npy_matrix()",
                              path.c_str(), "holds <f8 (float64) but float32 was requested",
                              "kshot::NpyConvert::dtype");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_npy_matrix<double>(fixture("f32_2x3.npy")), std::runtime_error,
                              "holds <f4 (float32) but float64 was requested");
  const kshot::RowMatrixX<float> converted = kshot::load_npy_matrix<float>(path, NpyConvert::dtype);
  CHECK(converted(0, 0) == 0.1f);
  CHECK(converted(3, 0) == static_cast<float>(3.141592653589793));
  CHECK(std::isinf(converted(2, 0)));  // 1e300 does not fit a float: static_cast gives inf

  // Integer matrices convert too (here int32 written by save_npy).
  TempDir dir;
  Eigen::Matrix<std::int32_t, 2, 2, Eigen::RowMajor> ints;
  ints << 1, -2, 300, 4;
  kshot::save_npy(dir.file("ints.npy"), ints);
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_npy_matrix<double>(dir.file("ints.npy")), std::runtime_error,
                              "holds <i4 (int32) but float64 was requested");
  const kshot::RowMatrixX<double> from_ints = kshot::load_npy_matrix<double>(dir.file("ints.npy"), NpyConvert::dtype);
  CHECK(from_ints(0, 1) == -2.0);
  CHECK(from_ints(1, 0) == 300.0);

  // Types that cannot become a float at all are refused even with the flag.
  write_file(dir.file("complex.npy"),
             npy_bytes("{'descr': '<c8', 'fortran_order': False, 'shape': (1, 1), }", std::string(8, '\0')));
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_npy_matrix<float>(dir.file("complex.npy"), NpyConvert::all),
                              std::runtime_error, "<c8 (complex64)", "cannot convert to float32");
}

TEST_CASE("data.io: a Fortran-ordered file throws unless NpyConvert::fortran_order is passed") {
  const std::string path = fixture("fortran_f32_2x3.npy");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_npy_matrix<float>(path), std::runtime_error, "kshot::load_npy_matrix()",
                              path.c_str(), "Fortran (column-major) order", "fortran_order: True", "shape (2, 3)",
                              "kshot::NpyConvert::fortran_order");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_npy_matrix<float>(path, NpyConvert::dtype), std::runtime_error,
                              "Fortran (column-major) order");
  // With one column, Fortran and C order are the same bytes: accepted as is.
  TempDir dir;
  write_file(dir.file("column.npy"),
             npy_bytes("{'descr': '<f4', 'fortran_order': True, 'shape': (3, 1), }", raw<float>({1.f, 2.f, 3.f})));
  const kshot::RowMatrixX<float> column = kshot::load_npy_matrix<float>(dir.file("column.npy"));
  CHECK(column(2, 0) == 3.f);
}

TEST_CASE("data.io: corrupt .npy headers throw std::runtime_error naming the path and what was found") {
  TempDir dir;
  const std::string path = dir.file("bad.npy");
  const std::string data = raw<float>({1.f, 2.f, 3.f, 4.f, 5.f, 6.f});
  const std::string good_dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
  auto load = [&] { return kshot::load_npy_matrix<float>(path); };

  SUBCASE("bad magic") {
    write_file(path, "\x89PNG\r\n\x1a\n" + std::string(100, '\0'));
    KSHOT_CHECK_THROWS_WITH_ALL(load(), std::runtime_error, "kshot::load_npy_matrix()", path.c_str(), "not a .npy file",
                                "89 50 4e 47 0d 0a", "93 4e 55 4d 50 59");
  }
  SUBCASE("empty file") {
    write_file(path, "");
    KSHOT_CHECK_THROWS_WITH_ALL(load(), std::runtime_error, path.c_str(), "the file is empty");
  }
  SUBCASE("unsupported version") {
    std::string bytes = npy_bytes(good_dict, data);
    bytes[6] = 4;
    write_file(path, bytes);
    KSHOT_CHECK_THROWS_WITH_ALL(load(), std::runtime_error, path.c_str(), "unsupported .npy format version 4.0");
  }
  SUBCASE("header length beyond the end of the file") {
    std::string bytes = npy_bytes(good_dict, data);
    bytes[8] = '\xff';
    bytes[9] = '\xff';
    write_file(path, bytes);
    KSHOT_CHECK_THROWS_WITH_ALL(load(), std::runtime_error, path.c_str(), "header length (65535 bytes)",
                                "runs past the end of the file", "byte 65545", "the file has 152 bytes");
  }
  SUBCASE("file ends inside the header-length field") {
    write_file(path, std::string("\x93NUMPY\x02\x00\x10", 9));
    KSHOT_CHECK_THROWS_WITH_ALL(load(), std::runtime_error, path.c_str(), "ends inside the header-length field");
  }
  SUBCASE("unparsable dictionary") {
    write_file(path, npy_bytes("{'descr': '<f4' 'fortran_order': False, 'shape': (2, 3), }", data));
    KSHOT_CHECK_THROWS_WITH_ALL(load(), std::runtime_error, path.c_str(), "unparsable .npy header",
                                "expected ',' or '}' after the value", "at character 16", "{'descr': '<f4' 'fortran");
  }
  SUBCASE("not a dictionary") {
    write_file(path, npy_bytes("garbage", data));
    KSHOT_CHECK_THROWS_WITH_ALL(load(), std::runtime_error, "unparsable .npy header", "expected '{'", "at character 0");
  }
  SUBCASE("missing 'descr'") {
    write_file(path, npy_bytes("{'fortran_order': False, 'shape': (2, 3), }", data));
    KSHOT_CHECK_THROWS_WITH_ALL(load(), std::runtime_error, "kshot::load_npy_matrix()", path.c_str(),
                                "the .npy header has no 'descr' key");
  }
  SUBCASE("unexpected and duplicated keys") {
    write_file(path, npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'extra': 1}", data));
    KSHOT_CHECK_THROWS_WITH_ALL(load(), std::runtime_error, "unexpected key 'extra'");
    write_file(path, npy_bytes("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}", data));
    KSHOT_CHECK_THROWS_WITH_ALL(load(), std::runtime_error, "the key 'descr' appears twice");
  }
  SUBCASE("bad values") {
    write_file(path, npy_bytes("{'descr': '<f4', 'fortran_order': Maybe, 'shape': (2, 3), }", data));
    KSHOT_CHECK_THROWS_WITH_ALL(load(), std::runtime_error, "the value of 'fortran_order' must be True or False");
    write_file(path, npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, -3), }", data));
    KSHOT_CHECK_THROWS_WITH_ALL(load(), std::runtime_error, "negative extent");
    write_file(path, npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': 6, }", data));
    KSHOT_CHECK_THROWS_WITH_ALL(load(), std::runtime_error, "'shape' must be a tuple");
    write_file(path, npy_bytes("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2, 3), }", data));
    KSHOT_CHECK_THROWS_WITH_ALL(load(), std::runtime_error, "structured dtype");
    write_file(path, npy_bytes("{'descr': '<U3', 'fortran_order': False, 'shape': (2, 3), }", data));
    KSHOT_CHECK_THROWS_WITH_ALL(load(), std::runtime_error, path.c_str(), "unsupported dtype '<U3'");
    write_file(path, npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999, 3), }", data));
    KSHOT_CHECK_THROWS_WITH_ALL(load(), std::runtime_error, "too large");
  }
  SUBCASE("a 1.0 header length with a low byte >= 0x80 is read (xt::load_npy 0.24 fails on it)") {
    write_file(path, npy_bytes(good_dict + std::string(120, ' '), data));
    CHECK(kshot::read_npy_header(path).data_offset == 192);
    CHECK(kshot::load_npy_matrix<float>(path)(0, 2) == 3.f);
  }
  SUBCASE("versions 2.0 and 3.0 and Python 2 long extents are read") {
    write_file(path, npy_bytes(good_dict, data, 2));
    CHECK(kshot::load_npy_matrix<float>(path)(1, 2) == 6.f);
    write_file(path, npy_bytes("{\"descr\": \"<f4\", \"fortran_order\": False, \"shape\": (2L, 3L)}", data, 3));
    CHECK(kshot::read_npy_header(path).major_version == 3);
    CHECK(kshot::load_npy_matrix<float>(path)(1, 0) == 4.f);
  }
}

TEST_CASE("data.io: truncated data and trailing bytes throw with both byte counts") {
  TempDir dir;
  const std::string path = dir.file("short.npy");
  const std::string full = read_file(fixture("f32_2x3.npy"));
  write_file(path, full.substr(0, full.size() - 4));
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_npy_matrix<float>(path), std::runtime_error, "kshot::load_npy_matrix()",
                              path.c_str(), "truncated data", "shape (2, 3) of <f4 (float32) = 24 data bytes",
                              "after the 128-byte header", "the file has only 20");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::read_npy_header(path), std::runtime_error, "kshot::read_npy_header()",
                              "truncated data");
  write_file(path, full.substr(0, 100));  // ends inside the header
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_npy_matrix<float>(path), std::runtime_error, "runs past the end of the file",
                              "the file has 100 bytes");
  write_file(path, full + "xyz");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_npy_matrix<float>(path), std::runtime_error, "trailing bytes",
                              "the file has 27 (3 too many)");
}

TEST_CASE("data.io: shape and label errors name the shape, the dtype or the value") {
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_npy_matrix<float>(fixture("f32_2x2x2.npy")), std::runtime_error,
                              "expected a 2-D array", "3-D array of shape (2, 2, 2)");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_npy_matrix<double>(fixture("labels_i64.npy"), NpyConvert::all),
                              std::runtime_error, "1-D array of shape (6,)", "reshape it to (n, 1)");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_npy_labels(fixture("f32_2x3.npy")), std::runtime_error,
                              "kshot::load_npy_labels()", "expected a 1-D array of labels", "shape (2, 3)");
  TempDir dir;
  const std::string path = dir.file("labels.npy");
  write_file(path, npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", raw<float>({1.f, 2.f})));
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_npy_labels(path), std::runtime_error, path.c_str(),
                              "labels must be integers, but the file holds <f4 (float32)");
  write_file(path, npy_bytes("{'descr': '<i8', 'fortran_order': False, 'shape': (3,), }",
                             raw<std::int64_t>({1, -7, std::int64_t{1} << 40})));
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_npy_labels(path), std::runtime_error, path.c_str(),
                              "element 2 is 1099511627776, outside the int32 range of labels");
  write_file(path, npy_bytes("{'descr': '<u4', 'fortran_order': False, 'shape': (2,), }",
                             raw<std::uint32_t>({5u, 3000000000u})));
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_npy_labels(path), std::runtime_error, "element 1 is 3000000000");
  // Big-endian int16 labels are swapped and widened.
  write_file(
      path, npy_bytes("{'descr': '>i2', 'fortran_order': False, 'shape': (2,), }", std::string("\x01\x02\xff\xfe", 4)));
  kshot::LabelVector expected(2);
  expected << 258, -2;
  CHECK(kshot::load_npy_labels(path) == expected);
}

TEST_CASE("data.io: a missing file or a directory throws with the path") {
  TempDir dir;
  const std::string missing = dir.file("nope.npy");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_npy_matrix<float>(missing), std::runtime_error, "kshot::load_npy_matrix()",
                              missing.c_str(), "it does not exist");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_npy_labels(missing), std::runtime_error, "kshot::load_npy_labels()",
                              missing.c_str(), "it does not exist");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::read_npy_header(missing), std::runtime_error, "kshot::read_npy_header()",
                              "it does not exist");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_csv_matrix<float>(dir.file("nope.csv")), std::runtime_error,
                              "kshot::load_csv_matrix()", "nope.csv", "it does not exist");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_npy_matrix<float>(dir.file("")), std::runtime_error, "it is a directory");
}

TEST_CASE("data.io: save_npy never leaves a half-written file") {
  TempDir dir;
  kshot::RowMatrixX<float> matrix = kshot::RowMatrixX<float>::Constant(2, 2, 1.5f);

  // Into a directory that does not exist: throws, and nothing is created.
  const std::string nowhere = dir.file("missing_dir/out.npy");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::save_npy(nowhere, matrix), std::runtime_error, "kshot::save_npy()",
                              nowhere.c_str(), "cannot create the temporary file", "out.npy.tmp",
                              "No such file or directory");
  CHECK_FALSE(fs::exists(dir.file("missing_dir")));
  CHECK(dir.entries().empty());

  // Onto a path that is a directory: the rename fails, and the temporary file is removed.
  fs::create_directory(dir.file("taken"));
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::save_npy(dir.file("taken"), matrix), std::runtime_error, "kshot::save_npy()",
                              "cannot rename", "taken.tmp");
  CHECK(dir.entries() == std::vector<std::string>{"taken"});
  CHECK(fs::is_empty(dir.file("taken")));

  // Replacing an existing file swaps the whole content.
  const std::string path = dir.file("out.npy");
  write_file(path, "old content");
  kshot::save_npy(path, matrix);
  CHECK(dir.entries() == std::vector<std::string>{"out.npy", "taken"});
  CHECK(kshot::load_npy_matrix<float>(path) == matrix);
}

TEST_CASE("data.io: load_csv_matrix reads numbers and skips header lines, comments and blank lines") {
  TempDir dir;
  const std::string path = dir.file("features.csv");
  write_file(path, "id,a,b\r\n# a comment\r\n0.1, -2.5 ,+3\r\n\r\n   \r\n1e-3,4,-0\r\n7,8,nan\r\n");
  const kshot::RowMatrixX<float> matrix = kshot::load_csv_matrix<float>(path, ',', 1);
  REQUIRE(matrix.rows() == 3);
  REQUIRE(matrix.cols() == 3);
  CHECK(matrix(0, 0) == 0.1f);
  CHECK(matrix(0, 1) == -2.5f);
  CHECK(matrix(0, 2) == 3.f);
  CHECK(matrix(1, 0) == 1e-3f);
  CHECK(std::signbit(matrix(1, 2)));
  CHECK(std::isnan(matrix(2, 2)));

  write_file(path, "1;2\n3;4\n");
  kshot::RowMatrixX<double> semicolons = kshot::load_csv_matrix<double>(path, ';');
  kshot::RowMatrixX<double> expected(2, 2);
  expected << 1, 2, 3, 4;
  CHECK(semicolons == expected);
  write_file(path, "1\t2\n3\t4\n");
  CHECK(kshot::load_csv_matrix<double>(path, '\t') == expected);
  // Underflow gives zero, as in NumPy.
  write_file(path, "1e-60\n");
  CHECK(kshot::load_csv_matrix<float>(path)(0, 0) == 0.f);

}

TEST_CASE("data.io: bad CSV throws with the line and the column") {
  TempDir dir;
  const std::string path = dir.file("bad.csv");
  write_file(path, "1,2,3\n4,abc,6\n");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_csv_matrix<float>(path), std::runtime_error, "kshot::load_csv_matrix()",
                              path.c_str(), "line 2, column 2", "cannot parse \"abc\" as float32");
  write_file(path, "1,2,3\n4,5,1.5abc\n");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_csv_matrix<double>(path), std::runtime_error, "line 2, column 3",
                              "cannot parse \"1.5abc\" as float64");
  write_file(path, "header\n1,2,3\n4,5\n");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_csv_matrix<float>(path, ',', 1), std::runtime_error,
                              "line 3 has 2 cells but line 2 (the first data line) has 3");
  write_file(path, "1,2\n3,4\n5,6,7\n");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_csv_matrix<float>(path), std::runtime_error,
                              "line 3 has more than 2 cells but line 1 (the first data line) has 2");
  write_file(path, "1,,3\n");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_csv_matrix<float>(path), std::runtime_error, "line 1, column 2: empty cell");
  write_file(path, "1,1e39\n");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_csv_matrix<float>(path), std::runtime_error,
                              "line 1, column 2: 1e39 is out of the range of float32");
  write_file(path, "# only a comment\n\n");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_csv_matrix<float>(path), std::runtime_error, "no data line");
  write_file(path, "a,b\n");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_csv_matrix<float>(path, ',', 5), std::runtime_error,
                              "no data line after skipping 5 lines (the file has 1 lines)");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_csv_matrix<float>(path, '.'), std::invalid_argument,
                              "kshot::load_csv_matrix()", "delimiter (character code 46)");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_csv_matrix<float>(path, ',', -1), std::invalid_argument,
                              "skip_rows must be >= 0, got -1");
}

// Found by fuzz/fuzz_npy.cpp: extents whose product overflows Index before a later extent of 0 made
// NpyHeader::size() overflow a signed integer (undefined behaviour, reported by the sanitized test build).
TEST_CASE("data.io: an empty .npy array with huge other extents has size 0 without overflow") {
  TempDir dir;
  const std::string path = dir.file("huge_empty.npy");
  write_file(path, npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 2, 0), }", ""));
  const kshot::NpyHeader header = kshot::read_npy_header(path);
  REQUIRE(header.shape.size() == 3);
  CHECK(header.shape[0] == Index{1} << 62);
  CHECK(header.shape[1] == 2);
  CHECK(header.shape[2] == 0);
  CHECK(header.size() == 0);
  CHECK(header.data_bytes == 0);
  write_file(path, npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (0, 9223372036854775807), }", ""));
  const kshot::RowMatrixX<double> m = kshot::load_npy_matrix<double>(path);
  CHECK(m.rows() == 0);
  CHECK(m.cols() == Index{9223372036854775807});
  CHECK(kshot::read_npy_header(path).size() == 0);
}
