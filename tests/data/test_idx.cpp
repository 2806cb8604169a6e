/**
 * @file tests/data/test_idx.cpp
 * @brief Tests of the IDX loader: every element type, plain and gzip files, every error with its message,
 * and the real Fashion-MNIST files of Debian's dataset-fashion-mnist.
 *
 * SPDX-License-Identifier: MIT
 */
#include "test_util.hpp"
#include "data/file_test_util.hpp"

#include <kshot/data/idx.hpp>

#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#ifdef KSHOT_HAS_ZLIB
#include <zlib.h>
#endif

namespace {

namespace fs = std::filesystem;
using kshot_file_test::TempDir;
using Bytes = std::vector<std::uint8_t>;
using kshot::Index;
using kshot::IdxType;

void append_be32(Bytes& out, std::uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<std::uint8_t>((v >> shift) & 0xFFu));
}

/// The magic number and the big-endian sizes.
Bytes idx_header(std::uint8_t type_code, const std::vector<std::uint32_t>& dims) {
  Bytes out = {0x00, 0x00, type_code, static_cast<std::uint8_t>(dims.size())};
  for (std::uint32_t d : dims) append_be32(out, d);
  return out;
}

/// Values in big-endian byte order, as an IDX file stores them.
template <class T>
Bytes big_endian(const std::vector<T>& values) {
  Bytes out;
  for (const T& v : values) {
    std::uint64_t bits = 0;  // the value's bits, independent of the host's byte order
    if constexpr (sizeof(T) == 1) { std::uint8_t u; std::memcpy(&u, &v, 1); bits = u; }
    if constexpr (sizeof(T) == 2) { std::uint16_t u; std::memcpy(&u, &v, 2); bits = u; }
    if constexpr (sizeof(T) == 4) { std::uint32_t u; std::memcpy(&u, &v, 4); bits = u; }
    if constexpr (sizeof(T) == 8) { std::uint64_t u; std::memcpy(&u, &v, 8); bits = u; }
    for (int k = static_cast<int>(sizeof(T)) - 1; k >= 0; --k)
      out.push_back(static_cast<std::uint8_t>((bits >> (8 * k)) & 0xFFu));
  }
  return out;
}

Bytes concat(Bytes a, const Bytes& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

void write_file(const std::string& path, const Bytes& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

[[maybe_unused]] Bytes read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  return Bytes(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

#ifdef KSHOT_HAS_ZLIB
void write_gzip(const std::string& path, const Bytes& bytes) {
  gzFile file = gzopen(path.c_str(), "wb");
  REQUIRE(file != nullptr);
  if (!bytes.empty())
    REQUIRE(gzwrite(file, bytes.data(), static_cast<unsigned>(bytes.size())) == static_cast<int>(bytes.size()));
  REQUIRE(gzclose(file) == Z_OK);
}
#endif

/// A ubyte images payload whose pixel k is (7 k + 3) mod 256.
Bytes pixel_pattern(std::size_t count) {
  Bytes out(count);
  for (std::size_t k = 0; k < count; ++k) out[k] = static_cast<std::uint8_t>((7 * k + 3) % 256);
  return out;
}

std::string fashion_file(const std::string& name) { return std::string(KSHOT_FASHION_MNIST_DIR) + "/" + name; }

}  // namespace

TEST_CASE("data.idx: every element type is decoded from big-endian to host order") {
  TempDir dir;
  SUBCASE("ubyte") {
    const std::string path = dir.file("u8.idx");
    write_file(path, concat(idx_header(0x08, {5}), {0, 1, 127, 128, 255}));
    const kshot::IdxArray a = kshot::read_idx(path);
    CHECK(a.type == IdxType::ubyte);
    CHECK(a.element_size() == 1);
    CHECK(a.shape == std::vector<Index>{5});
    CHECK(a.value<int>(3) == 128);
    CHECK(a.to_vector<int>() == std::vector<int>{0, 1, 127, 128, 255});
  }
  SUBCASE("sbyte") {
    const std::string path = dir.file("s8.idx");
    write_file(path, concat(idx_header(0x09, {5}), {0x80, 0xFF, 0x00, 0x01, 0x7F}));
    const kshot::IdxArray a = kshot::read_idx(path);
    CHECK(a.type == IdxType::sbyte);
    CHECK(a.to_vector<int>() == std::vector<int>{-128, -1, 0, 1, 127});
  }
  SUBCASE("int16") {
    const std::string path = dir.file("i16.idx");
    write_file(path, concat(idx_header(0x0B, {2, 2}), {0x80, 0x00, 0xFF, 0xFE, 0x01, 0x02, 0x7F, 0xFF}));
    const kshot::IdxArray a = kshot::read_idx(path);
    CHECK(a.type == IdxType::int16);
    CHECK(a.element_size() == 2);
    CHECK(a.shape == std::vector<Index>{2, 2});
    CHECK(a.bytes.size() == 8);
    CHECK(a.to_vector<int>() == std::vector<int>{-32768, -2, 258, 32767});
  }
  SUBCASE("int32") {
    const std::string path = dir.file("i32.idx");
    write_file(path, concat(idx_header(0x0C, {3}), {0x01, 0x02, 0x03, 0x04, 0xFF, 0xFF, 0xFF, 0xFE, 0x80, 0, 0, 0}));
    const kshot::IdxArray a = kshot::read_idx(path);
    CHECK(a.type == IdxType::int32);
    CHECK(a.to_vector<std::int64_t>() == std::vector<std::int64_t>{16909060, -2, std::numeric_limits<std::int32_t>::min()});
    // Host order: the stored bytes are the host representation of the value.
    std::int32_t first = 0;
    std::memcpy(&first, a.bytes.data(), 4);
    CHECK(first == 0x01020304);
  }
  SUBCASE("float32") {
    const std::string path = dir.file("f32.idx");
    // 1.0f = 3f 80 00 00, -pi (float) = c0 49 0f db, +inf = 7f 80 00 00.
    write_file(path, concat(idx_header(0x0D, {3}), {0x3F, 0x80, 0, 0, 0xC0, 0x49, 0x0F, 0xDB, 0x7F, 0x80, 0, 0}));
    const kshot::IdxArray a = kshot::read_idx(path);
    CHECK(a.type == IdxType::float32);
    CHECK(a.value<float>(0) == 1.0f);
    CHECK(a.value<float>(1) == -3.14159274f);
    CHECK(std::isinf(a.value<double>(2)));
  }
  SUBCASE("float64") {
    const std::string path = dir.file("f64.idx");
    // pi = 40 09 21 fb 54 44 2d 18, -0.0 = 80 00 .. 00.
    write_file(path, concat(idx_header(0x0E, {2}), {0x40, 0x09, 0x21, 0xFB, 0x54, 0x44, 0x2D, 0x18,  //
                                                    0x80, 0, 0, 0, 0, 0, 0, 0}));
    const kshot::IdxArray a = kshot::read_idx(path);
    CHECK(a.type == IdxType::float64);
    CHECK(a.element_size() == 8);
    CHECK(a.value<double>(0) == 3.141592653589793);
    CHECK(a.value<double>(1) == 0.0);
    CHECK(std::signbit(a.value<double>(1)));
  }
  SUBCASE("values written by the test's own encoder round-trip exactly") {
    const std::vector<double> doubles = {-2.5, 1e300, 4.9406564584124654e-324, -1e-300};
    const std::vector<float> floats = {-1.5f, 1e-30f, 3.25f, 16777216.0f};
    const std::vector<std::int32_t> ints = {std::numeric_limits<std::int32_t>::max(), -123456789, 0};
    write_file(dir.file("d.idx"), concat(idx_header(0x0E, {4}), big_endian(doubles)));
    write_file(dir.file("f.idx"), concat(idx_header(0x0D, {4}), big_endian(floats)));
    write_file(dir.file("i.idx"), concat(idx_header(0x0C, {3}), big_endian(ints)));
    CHECK(kshot::read_idx(dir.file("d.idx")).to_vector<double>() == doubles);
    CHECK(kshot::read_idx(dir.file("f.idx")).to_vector<float>() == floats);
    CHECK(kshot::read_idx(dir.file("i.idx")).to_vector<std::int32_t>() == ints);
  }
}

TEST_CASE("data.idx: shapes with 3 and 8 dimensions and empty arrays") {
  TempDir dir;
  const std::string path3 = dir.file("three.idx");
  write_file(path3, concat(idx_header(0x08, {2, 3, 4}), pixel_pattern(24)));
  const kshot::IdxArray a = kshot::read_idx(path3);
  CHECK(a.shape == std::vector<Index>{2, 3, 4});
  CHECK(a.ndim() == 3);
  CHECK(a.size() == 24);
  CHECK(a.bytes == pixel_pattern(24));
  CHECK(a.value<int>(23) == (7 * 23 + 3) % 256);

  const std::string path8 = dir.file("eight.idx");
  write_file(path8, concat(idx_header(0x0B, {1, 2, 1, 2, 1, 2, 1, 2}), big_endian(std::vector<std::int16_t>(16, -7))));
  const kshot::IdxArray b = kshot::read_idx(path8);
  CHECK(b.ndim() == 8);
  CHECK(b.size() == 16);
  CHECK(b.to_vector<int>() == std::vector<int>(16, -7));

  const std::string empty = dir.file("empty.idx");
  write_file(empty, idx_header(0x0D, {0, 28, 28}));
  const kshot::IdxArray c = kshot::read_idx(empty);
  CHECK(c.shape == std::vector<Index>{0, 28, 28});
  CHECK(c.size() == 0);
  CHECK(c.bytes.empty());
  CHECK(kshot::load_idx_images(empty).rows() == 0);
  CHECK(kshot::load_idx_images(empty).cols() == 784);
}

#ifdef KSHOT_HAS_ZLIB
TEST_CASE("data.idx: gzip files read like plain ones") {
  TempDir dir;
  const std::vector<float> floats = {0.5f, -2.0f, 1e10f, 7.0f, -0.25f, 3.0f};
  const Bytes file = concat(idx_header(0x0D, {2, 3}), big_endian(floats));
  write_gzip(dir.file("f.idx.gz"), file);
  write_file(dir.file("f.idx"), file);
  const kshot::IdxArray gz = kshot::read_idx(dir.file("f.idx.gz"));
  const kshot::IdxArray plain = kshot::read_idx(dir.file("f.idx"));
  CHECK(gz.type == IdxType::float32);
  CHECK(gz.shape == std::vector<Index>{2, 3});
  CHECK(gz.to_vector<float>() == floats);
  CHECK(gz.bytes == plain.bytes);

  // Larger than zlib's buffers, so the data arrives in several inflate steps.
  const Bytes pixels = pixel_pattern(300 * 28 * 28);
  write_gzip(dir.file("images.gz"), concat(idx_header(0x08, {300, 28, 28}), pixels));
  const kshot::RowMatrixX<double> images = kshot::load_idx_images<double>(dir.file("images.gz"), 1.0);
  REQUIRE(images.rows() == 300);
  REQUIRE(images.cols() == 784);
  CHECK(images(0, 0) == 3.0);
  CHECK(images(299, 783) == static_cast<double>(pixels.back()));
  CHECK(images.sum() == doctest::Approx(static_cast<double>(std::accumulate(pixels.begin(), pixels.end(), 0LL))));
}
#endif

TEST_CASE("data.idx: load_idx_images flattens N x H x W and scales every pixel") {
  TempDir dir;
  const std::string path = dir.file("images.idx");
  write_file(path, concat(idx_header(0x08, {3, 2, 2}), {0, 255, 51, 102, 1, 2, 3, 4, 10, 20, 30, 40}));

  const kshot::RowMatrixX<float> f = kshot::load_idx_images(path);
  REQUIRE(f.rows() == 3);
  REQUIRE(f.cols() == 4);
  CHECK(f(0, 0) == 0.0f);
  CHECK(f(0, 1) == 1.0f);
  CHECK(f(0, 2) == doctest::Approx(0.2));
  CHECK(f(1, 3) == 4.0f * (1.0f / 255.0f));
  CHECK(f(2, 0) == 10.0f * (1.0f / 255.0f));

  const kshot::RowMatrixX<double> d = kshot::load_idx_images<double>(path, 0.5);
  CHECK(d(0, 1) == 127.5);
  CHECK(d(2, 3) == 20.0);

  // N x D: already flat.
  const std::string flat = dir.file("flat.idx");
  write_file(flat, concat(idx_header(0x0B, {2, 3}), big_endian(std::vector<std::int16_t>{-4, 0, 8, 1000, 2, -2})));
  const kshot::RowMatrixX<double> g = kshot::load_idx_images<double>(flat, 0.25);
  REQUIRE(g.rows() == 2);
  REQUIRE(g.cols() == 3);
  CHECK(g(0, 0) == -1.0);
  CHECK(g(1, 0) == 250.0);
  CHECK(g(1, 2) == -0.5);
}

TEST_CASE("data.idx: load_idx_labels reads integer labels of every integer type") {
  TempDir dir;
  write_file(dir.file("u8"), concat(idx_header(0x08, {4}), {9, 0, 3, 255}));
  write_file(dir.file("s8"), concat(idx_header(0x09, {2}), {0xFF, 0x05}));
  write_file(dir.file("i16"), concat(idx_header(0x0B, {2}), big_endian(std::vector<std::int16_t>{300, -300})));
  write_file(dir.file("i32"), concat(idx_header(0x0C, {3}), big_endian(std::vector<std::int32_t>{70000, -1, 2})));

  const kshot::LabelVector u8 = kshot::load_idx_labels(dir.file("u8"));
  REQUIRE(u8.size() == 4);
  CHECK(u8(0) == 9);
  CHECK(u8(3) == 255);
  const kshot::LabelVector s8 = kshot::load_idx_labels(dir.file("s8"));
  CHECK(s8(0) == -1);
  CHECK(s8(1) == 5);
  const kshot::LabelVector i16 = kshot::load_idx_labels(dir.file("i16"));
  CHECK(i16(0) == 300);
  CHECK(i16(1) == -300);
  const kshot::LabelVector i32 = kshot::load_idx_labels(dir.file("i32"));
  REQUIRE(i32.size() == 3);
  CHECK(i32(0) == 70000);
  CHECK(i32(1) == -1);
  CHECK(i32(2) == 2);
}

TEST_CASE("data.idx: load_idx_dataset pairs images with labels") {
  TempDir dir;
  write_file(dir.file("images"), concat(idx_header(0x08, {2, 2, 3}), pixel_pattern(12)));
  write_file(dir.file("labels"), concat(idx_header(0x08, {2}), {4, 1}));
  const kshot::LabeledImages<double> data = kshot::load_idx_dataset<double>(dir.file("images"), dir.file("labels"), 1.0);
  CHECK(data.height == 2);
  CHECK(data.width == 3);
  REQUIRE(data.features.rows() == 2);
  REQUIRE(data.features.cols() == 6);
  CHECK(data.features(1, 5) == static_cast<double>((7 * 11 + 3) % 256));
  CHECK(data.labels(0) == 4);
  CHECK(data.labels(1) == 1);

  write_file(dir.file("flat"), concat(idx_header(0x08, {2, 5}), pixel_pattern(10)));
  const kshot::LabeledImages<> flat = kshot::load_idx_dataset(dir.file("flat"), dir.file("labels"));
  CHECK(flat.height == 1);
  CHECK(flat.width == 5);
  CHECK(flat.features(0, 1) == 10.0f * (1.0f / 255.0f));
}

TEST_CASE("data.idx: IdxArray accessors check indices and integer conversions") {
  TempDir dir;
  write_file(dir.file("f"), concat(idx_header(0x0E, {4}), big_endian(std::vector<double>{2.9, -1.0, 3e9, std::nan("")})));
  const kshot::IdxArray a = kshot::read_idx(dir.file("f"));
  CHECK(a.value<int>(0) == 2);
  CHECK(a.value<int>(1) == -1);
  CHECK(a.value<std::int64_t>(2) == 3000000000LL);
  KSHOT_CHECK_THROWS_WITH_ALL(a.value<int>(2), std::out_of_range, "kshot::IdxArray::value()", "element 2 (3e+09)",
                              "does not fit");
  KSHOT_CHECK_THROWS_WITH_ALL(a.value<unsigned>(1), std::out_of_range, "element 1 (-1)");
  KSHOT_CHECK_THROWS_WITH_ALL(a.value<int>(3), std::out_of_range, "element 3 (nan)");
  KSHOT_CHECK_THROWS_WITH_ALL(a.to_vector<int>(), std::out_of_range, "kshot::IdxArray::to_vector()", "element 2");
  KSHOT_CHECK_THROWS_WITH_ALL(a.value<double>(4), std::out_of_range, "index 4 is outside [0, 4)");
  KSHOT_CHECK_THROWS_WITH_ALL(a.value<double>(-1), std::out_of_range, "index -1");

  kshot::IdxArray broken = a;
  broken.bytes.pop_back();
  KSHOT_CHECK_THROWS_WITH_ALL(broken.to_vector<double>(), std::invalid_argument, "bytes holds 31 bytes",
                              "needs 32");
}

TEST_CASE("data.idx: a missing file or a directory or an empty file throws with the path") {
  TempDir dir;
  const std::string missing = dir.file("no-such-file.idx");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::read_idx(missing), std::runtime_error, "kshot::read_idx(): ",
                              missing.c_str(), "does not exist");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_idx_labels(missing), std::runtime_error, "kshot::load_idx_labels(): ",
                              missing.c_str());
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::read_idx(dir.path()), std::runtime_error, "kshot::read_idx(): ",
                              dir.path().c_str(), "is a directory");
  const std::string empty = dir.file("empty.idx");
  write_file(empty, {});
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::read_idx(empty), std::runtime_error, empty.c_str(), "the file is empty");
}

TEST_CASE("data.idx: a bad magic number or type code or dimension count throws with the bytes") {
  TempDir dir;
  const std::string path = dir.file("bad.idx");
  write_file(path, {0x01, 0x02, 0x08, 0x01, 0, 0, 0, 1, 7});
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::read_idx(path), std::runtime_error, "kshot::read_idx(): ", path.c_str(),
                              "bad magic number 01 02 08 01");
  write_file(path, concat(idx_header(0x0A, {1}), {7}));
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::read_idx(path), std::runtime_error, path.c_str(), "unknown type code 0x0a",
                              "00 00 0a 01");
  write_file(path, {0, 0, 0x08, 0});
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::read_idx(path), std::runtime_error, path.c_str(), "declares 0 dimensions");
  write_file(path, idx_header(0x08, {1, 1, 1, 1, 1, 1, 1, 1, 1}));
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::read_idx(path), std::runtime_error, path.c_str(), "declares 9 dimensions");
}

TEST_CASE("data.idx: a truncated header or truncated data throws with the byte counts") {
  TempDir dir;
  const Bytes full = concat(idx_header(0x08, {10, 3, 4}), pixel_pattern(120));
  const std::string path = dir.file("cut.idx");

  write_file(path, Bytes(full.begin(), full.begin() + 2));
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::read_idx(path), std::runtime_error, "kshot::read_idx(): ", path.c_str(),
                              "truncated header", "read 2");
  write_file(path, Bytes(full.begin(), full.begin() + 10));
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::read_idx(path), std::runtime_error, path.c_str(),
                              "truncated header: expected 16 header bytes for 3 dimensions, read 10");
  write_file(path, Bytes(full.begin(), full.begin() + 116));
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::read_idx(path), std::runtime_error, path.c_str(),
                              "truncated data: expected 120 data bytes after the 16-byte header",
                              "shape 10 x 3 x 4, ubyte", "read 100");
  write_file(path, concat(idx_header(0x0C, {5}), Bytes(19, 1)));
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_idx_images(path), std::runtime_error, "kshot::load_idx_images(): ",
                              path.c_str(), "expected 20 data bytes after the 8-byte header", "read 19");

  // A header that claims 2^48 bytes must fail on the short file, not try to allocate them.
  write_file(path, concat(idx_header(0x08, {65536, 65536, 65536}), Bytes(5, 0)));
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::read_idx(path), std::runtime_error, path.c_str(),
                              "expected 281474976710656 data bytes", "read 5");

#ifdef KSHOT_HAS_ZLIB
  const std::string gz = dir.file("cut.idx.gz");
  write_gzip(gz, Bytes(full.begin(), full.begin() + 116));
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::read_idx(gz), std::runtime_error, gz.c_str(),
                              "truncated data: expected 120 data bytes after the 16-byte header", "read 100");
  write_gzip(gz, Bytes(full.begin(), full.begin() + 10));
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::read_idx(gz), std::runtime_error, gz.c_str(), "read 10");
  write_gzip(gz, concat(idx_header(0x08, {65536, 65536, 65536}), Bytes(5, 0)));
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::read_idx(gz), std::runtime_error, gz.c_str(),
                              "expected 281474976710656 data bytes", "read 5");
#endif
}

TEST_CASE("data.idx: bytes after the data throw") {
  TempDir dir;
  const std::string path = dir.file("long.idx");
  write_file(path, concat(concat(idx_header(0x08, {10, 3, 4}), pixel_pattern(120)), {1, 2, 3}));
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::read_idx(path), std::runtime_error, "kshot::read_idx(): ", path.c_str(),
                              "trailing garbage: 3 bytes after the 120 data bytes");
  write_file(path, concat(concat(idx_header(0x08, {2}), {1, 2}), Bytes(10000, 0)));
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_idx_labels(path), std::runtime_error, "kshot::load_idx_labels(): ",
                              "trailing garbage: 10000 bytes after the 2 data bytes");
#ifdef KSHOT_HAS_ZLIB
  write_gzip(path, concat(concat(idx_header(0x08, {2}), {1, 2}), {0}));
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::read_idx(path), std::runtime_error,
                              "trailing garbage: 1 bytes after the 2 data bytes");
#endif
}

TEST_CASE("data.idx: a size that overflows throws") {
  TempDir dir;
  const std::string path = dir.file("huge.idx");
  write_file(path, idx_header(0x0E, std::vector<std::uint32_t>(8, 0xFFFFFFFFu)));
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::read_idx(path), std::runtime_error, "kshot::read_idx(): ", path.c_str(),
                              "size overflow", "4294967295 x 4294967295", "float64");
  write_file(path, idx_header(0x08, {0xFFFFFFFFu, 0xFFFFFFFFu}));
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::read_idx(path), std::runtime_error, "size overflow");
  // A zero size makes the array empty whatever the other sizes are.
  write_file(path, idx_header(0x0E, {0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu, 0}));
  CHECK(kshot::read_idx(path).size() == 0);
}

#ifdef KSHOT_HAS_ZLIB
TEST_CASE("data.idx: a corrupt or cut gzip stream throws with zlib's message") {
  TempDir dir;
  const std::string good = dir.file("good.gz");
  write_gzip(good, concat(idx_header(0x08, {100, 28, 28}), pixel_pattern(78400)));
  const Bytes gz = read_file(good);
  REQUIRE(gz.size() > 64);
  REQUIRE(kshot::read_idx(good).size() == 78400);

  const std::string corrupt = dir.file("corrupt.gz");
  for (const std::size_t at : {gz.size() / 2, gz.size() / 3}) {
    Bytes flipped = gz;
    for (std::size_t k = at; k < at + 4; ++k) flipped[k] = static_cast<std::uint8_t>(flipped[k] ^ 0xA5u);
    write_file(corrupt, flipped);
    CAPTURE(at);
    KSHOT_CHECK_THROWS_WITH_ALL(kshot::read_idx(corrupt), std::runtime_error, "kshot::read_idx(): ",
                                corrupt.c_str(), "corrupt gzip stream (zlib: ");
  }
  // Damage at the end of the deflate data: zlib reports the stream as corrupt or as ending early.
  Bytes tail = gz;
  for (std::size_t k = gz.size() - 12; k < gz.size() - 8; ++k) tail[k] = static_cast<std::uint8_t>(tail[k] ^ 0xA5u);
  write_file(corrupt, tail);
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::read_idx(corrupt), std::runtime_error, corrupt.c_str(), "gzip stream");

  const std::string cut = dir.file("cut.gz");
  write_file(cut, Bytes(gz.begin(), gz.begin() + static_cast<std::ptrdiff_t>(gz.size() / 2)));
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::read_idx(cut), std::runtime_error, cut.c_str(),
                              "the gzip stream is truncated (zlib: unexpected end of file)", "of the 78400 data bytes");
  write_file(cut, Bytes(gz.begin(), gz.end() - 4));  // only the length field of the trailer is missing
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::read_idx(cut), std::runtime_error, cut.c_str(), "gzip stream is truncated",
                              "after the 78400 data bytes");
}

TEST_CASE("data.idx: a wrong CRC-32 in the gzip trailer of a large file throws") {
  // Incompressible data, larger than zlib's buffers: the CRC-32 of the whole stream must still be checked.
  TempDir dir;
  Bytes noise(400000);
  std::mt19937 rng(42);
  for (std::uint8_t& b : noise) b = static_cast<std::uint8_t>(rng() & 0xFFu);
  const std::string path = dir.file("noise.gz");
  write_gzip(path, concat(idx_header(0x08, {400000}), noise));
  CHECK(kshot::read_idx(path).bytes == noise);

  Bytes bad_crc = read_file(path);
  REQUIRE(bad_crc.size() > 400000);
  bad_crc[bad_crc.size() - 8] = static_cast<std::uint8_t>(bad_crc[bad_crc.size() - 8] ^ 0x01u);
  write_file(path, bad_crc);
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::read_idx(path), std::runtime_error, path.c_str(),
                              "corrupt gzip stream (zlib: incorrect data check)", "400000 data bytes");
}
#else
TEST_CASE("data.idx: without zlib a gzip file throws a clear error") {
  TempDir dir;
  const std::string path = dir.file("labels.gz");
  // The first bytes of a gzip member: magic 1f 8b, deflate, no flags.
  write_file(path, {0x1F, 0x8B, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0x03, 0x63, 0x60, 0x00, 0x00});
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::read_idx(path), std::runtime_error, "kshot::read_idx(): ", path.c_str(),
                              "gzip-compressed (it starts with 1f 8b)", "built without zlib");

  REQUIRE_MESSAGE(fs::exists(fashion_file("t10k-labels-idx1-ubyte.gz")),
                  "install Debian's dataset-fashion-mnist package");
  const std::string real = fashion_file("t10k-labels-idx1-ubyte.gz");  // labels are read first
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_fashion_mnist(KSHOT_FASHION_MNIST_DIR, kshot::FashionMnistSplit::test),
                              std::runtime_error, "kshot::load_fashion_mnist(): ", real.c_str(), "built without zlib");
}
#endif

TEST_CASE("data.idx: labels must be 1-D integers and images 2-D or 3-D") {
  TempDir dir;
  const std::string cube = dir.file("cube.idx");
  write_file(cube, concat(idx_header(0x08, {2, 2, 2}), pixel_pattern(8)));
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_idx_labels(cube), std::runtime_error, "kshot::load_idx_labels(): ",
                              cube.c_str(), "must be 1-D", "3-D with shape 2 x 2 x 2");
  const std::string floats = dir.file("floats.idx");
  write_file(floats, concat(idx_header(0x0D, {2}), big_endian(std::vector<float>{1.0f, 2.0f})));
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_idx_labels(floats), std::runtime_error, floats.c_str(),
                              "labels must be integers", "float32");
  const std::string line = dir.file("line.idx");
  write_file(line, concat(idx_header(0x08, {5}), pixel_pattern(5)));
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_idx_images(line), std::runtime_error, "kshot::load_idx_images(): ",
                              line.c_str(), "3-D (N x H x W) or 2-D (N x D)", "1-D with shape 5");
  const std::string four = dir.file("four.idx");
  write_file(four, concat(idx_header(0x08, {1, 2, 2, 2}), pixel_pattern(8)));
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_idx_dataset(four, line), std::runtime_error,
                              "kshot::load_idx_dataset(): ", four.c_str(), "4-D with shape 1 x 2 x 2 x 2");
}

TEST_CASE("data.idx: images and labels must have the same count") {
  TempDir dir;
  const std::string images = dir.file("images.idx");
  const std::string labels = dir.file("labels.idx");
  write_file(images, concat(idx_header(0x08, {3, 2, 2}), pixel_pattern(12)));
  write_file(labels, concat(idx_header(0x08, {2}), {0, 1}));
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_idx_dataset(images, labels), std::runtime_error,
                              "kshot::load_idx_dataset(): ", images.c_str(), labels.c_str(), "has 3 images but",
                              "has 2 labels");
}

TEST_CASE("data.idx: scale must be finite and positive") {
  TempDir dir;
  const std::string path = dir.file("images.idx");
  write_file(path, concat(idx_header(0x08, {1, 2, 2}), pixel_pattern(4)));
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_idx_images(path, 0.0f), std::invalid_argument,
                              "kshot::load_idx_images(): ", "scale must be finite and positive, got 0");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_idx_images(path, -1.0), std::invalid_argument, "got -1");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_idx_images(path, std::numeric_limits<double>::quiet_NaN()),
                              std::invalid_argument, "got nan");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_idx_dataset(path, path, std::numeric_limits<float>::infinity()),
                              std::invalid_argument, "kshot::load_idx_dataset(): ", "got inf");
  KSHOT_CHECK_THROWS_WITH_ALL(
      kshot::load_fashion_mnist(dir.path(), kshot::FashionMnistSplit::test, 0.0f), std::invalid_argument,
      "kshot::load_fashion_mnist(): ", "scale");
}

TEST_CASE("data.idx: Fashion-MNIST class names") {
  CHECK(std::string(kshot::fashion_mnist_class_name(0)) == "T-shirt/top");
  CHECK(std::string(kshot::fashion_mnist_class_name(5)) == "Sandal");
  CHECK(std::string(kshot::fashion_mnist_class_name(9)) == "Ankle boot");
  CHECK(kshot::fashion_mnist_num_classes == 10);
  CHECK(std::string(kshot::fashion_mnist_default_directory()) == "/usr/share/datasets/fashion-mnist");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::fashion_mnist_class_name(10), std::out_of_range,
                              "kshot::fashion_mnist_class_name(): ", "label 10 is outside [0, 10)");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::fashion_mnist_class_name(-1), std::out_of_range, "label -1");
}

TEST_CASE("data.idx: load_fashion_mnist finds plain files and names both candidates when missing") {
  TempDir dir;
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_fashion_mnist(dir.path(), kshot::FashionMnistSplit::train),
                              std::runtime_error, "kshot::load_fashion_mnist(): ",
                              "train-images-idx3-ubyte.gz'", "train-images-idx3-ubyte'", dir.path().c_str());
  write_file(dir.file("t10k-images-idx3-ubyte"), concat(idx_header(0x08, {2, 28, 28}), pixel_pattern(2 * 784)));
  write_file(dir.file("t10k-labels-idx1-ubyte"), concat(idx_header(0x08, {2}), {3, 8}));
  const kshot::LabeledImages<> test = kshot::load_fashion_mnist(dir.path(), kshot::FashionMnistSplit::test);
  CHECK(test.features.rows() == 2);
  CHECK(test.height == 28);
  CHECK(test.labels(1) == 8);
#ifdef KSHOT_HAS_ZLIB
  // The .gz name comes first.
  write_gzip(dir.file("t10k-labels-idx1-ubyte.gz"), concat(idx_header(0x08, {2}), {7, 7}));
  CHECK(kshot::load_fashion_mnist(dir.path(), kshot::FashionMnistSplit::test).labels(1) == 7);
#endif
  // The counts must match, as in load_idx_dataset.
  write_file(dir.file("t10k-labels-idx1-ubyte"), concat(idx_header(0x08, {3}), {3, 8, 1}));
  std::error_code ec;
  fs::remove(dir.file("t10k-labels-idx1-ubyte.gz"), ec);
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_fashion_mnist(dir.path(), kshot::FashionMnistSplit::test),
                              std::runtime_error, "kshot::load_fashion_mnist(): ", "has 2 images but",
                              "has 3 labels");
}

#ifdef KSHOT_HAS_ZLIB
TEST_CASE("data.idx: Fashion-MNIST training split (Debian's dataset-fashion-mnist)") {
  REQUIRE_MESSAGE(fs::exists(fashion_file("train-images-idx3-ubyte.gz")),
                  "install Debian's dataset-fashion-mnist package");
  const kshot::LabeledImages<> train =
      kshot::load_fashion_mnist(KSHOT_FASHION_MNIST_DIR, kshot::FashionMnistSplit::train);
  REQUIRE(train.features.rows() == 60000);
  REQUIRE(train.features.cols() == 784);
  REQUIRE(train.labels.size() == 60000);
  CHECK(train.height == 28);
  CHECK(train.width == 28);
  CHECK(train.features.minCoeff() == 0.0f);
  CHECK(train.features.maxCoeff() == 1.0f);

  REQUIRE(train.labels.minCoeff() == 0);
  REQUIRE(train.labels.maxCoeff() == 9);
  std::array<Index, 10> counts{};
  for (Index i = 0; i < train.labels.size(); ++i) ++counts[static_cast<std::size_t>(train.labels(i))];
  for (Index count : counts) CHECK(count == 6000);

  // Spot values read once from the files (first image: an ankle boot).
  CHECK(train.labels(0) == 9);
  CHECK(std::string(kshot::fashion_mnist_class_name(train.labels(0))) == "Ankle boot");
  CHECK(train.labels(1) == 0);
  CHECK(train.labels(59999) == 5);
  CHECK(train.features(0, 14 * 28 + 14) == 217.0f * (1.0f / 255.0f));
  long long first_image_bytes = 0;
  for (Index j = 0; j < 784; ++j) first_image_bytes += std::lround(train.features(0, j) * 255.0f);
  CHECK(first_image_bytes == 76247);
}

TEST_CASE("data.idx: Fashion-MNIST test split with checksums in double") {
  REQUIRE_MESSAGE(fs::exists(fashion_file("t10k-images-idx3-ubyte.gz")),
                  "install Debian's dataset-fashion-mnist package");
  const kshot::LabeledImages<double> test =
      kshot::load_fashion_mnist<double>(KSHOT_FASHION_MNIST_DIR, kshot::FashionMnistSplit::test, 1.0);
  REQUIRE(test.features.rows() == 10000);
  REQUIRE(test.features.cols() == 784);
  CHECK(test.height == 28);
  CHECK(test.width == 28);
  // Sums of pixel bytes: exact in double.
  CHECK(test.features.sum() == 573469082.0);
  CHECK(test.features.row(0).sum() == 33456.0);
  CHECK(test.features.row(9999).sum() == 24390.0);
  CHECK(test.features(0, 14 * 28 + 14) == 110.0);
  CHECK(test.features.maxCoeff() == 255.0);

  REQUIRE(test.labels.minCoeff() == 0);
  REQUIRE(test.labels.maxCoeff() == 9);
  std::array<Index, 10> counts{};
  for (Index i = 0; i < test.labels.size(); ++i) ++counts[static_cast<std::size_t>(test.labels(i))];
  for (Index count : counts) CHECK(count == 1000);
  CHECK(test.labels.head(5) == (kshot::LabelVector(5) << 9, 2, 1, 1, 6).finished());

  const kshot::IdxArray raw = kshot::read_idx(fashion_file("t10k-labels-idx1-ubyte.gz"));
  CHECK(raw.type == IdxType::ubyte);
  CHECK(raw.shape == std::vector<Index>{10000});

  // Test images with training labels: the counts differ.
  const std::string images = fashion_file("t10k-images-idx3-ubyte.gz");
  const std::string labels = fashion_file("train-labels-idx1-ubyte.gz");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_idx_dataset(images, labels), std::runtime_error,
                              "kshot::load_idx_dataset(): ", "has 10000 images but", "has 60000 labels",
                              images.c_str(), labels.c_str());
}

TEST_CASE("data.idx: truncated and corrupt copies of a real Fashion-MNIST file throw") {
  REQUIRE_MESSAGE(fs::exists(fashion_file("t10k-labels-idx1-ubyte.gz")),
                  "install Debian's dataset-fashion-mnist package");
  const Bytes gz = read_file(fashion_file("t10k-labels-idx1-ubyte.gz"));
  REQUIRE(gz.size() == 5125);
  TempDir dir;
  const std::string path = dir.file("t10k-labels-idx1-ubyte.gz");
  write_file(path, gz);
  CHECK(kshot::load_idx_labels(path).size() == 10000);

  for (const std::size_t keep : {std::size_t{1}, std::size_t{10}, std::size_t{30}, std::size_t{100},
                                 std::size_t{2560}, std::size_t{5000}, std::size_t{5117}, std::size_t{5124}}) {
    CAPTURE(keep);
    write_file(path, Bytes(gz.begin(), gz.begin() + static_cast<std::ptrdiff_t>(keep)));
    KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_idx_labels(path), std::runtime_error, "kshot::load_idx_labels(): ",
                                path.c_str());
  }
  // Cut in the middle of the deflate data: zlib stops early, and the message says so.
  write_file(path, Bytes(gz.begin(), gz.begin() + 2560));
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_idx_labels(path), std::runtime_error, "gzip stream is truncated",
                              "of the 10000 data bytes");

  Bytes flipped = gz;
  for (std::size_t k = 2500; k < 2508; ++k) flipped[k] = static_cast<std::uint8_t>(~flipped[k]);
  write_file(path, flipped);
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_idx_labels(path), std::runtime_error, path.c_str(),
                              "corrupt gzip stream");
}
#endif

TEST_CASE("data.idx: an images file with no image and a huge H x W is refused, not overflowed (issue 17)") {
  TempDir dir;
  const std::string path = dir.file("empty-huge-idx3-ubyte");
  // 0 images of (2^32 - 1) x (2^32 - 1) pixels: no data byte, so only H x W could overflow.
  write_file(path, idx_header(0x08, {0u, 0xFFFFFFFFu, 0xFFFFFFFFu}));
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::load_idx_images<float>(path), std::runtime_error, "kshot::load_idx_images()",
                              path.c_str(), "an image of 4294967295 x 4294967295 pixels",
                              "has more pixels than a matrix can number");
  // read_idx itself is fine with it: 0 values.
  const kshot::IdxArray array = kshot::read_idx(path);
  CHECK(array.size() == 0);
  CHECK(array.bytes.empty());
  // A large H x W that still fits gives a 0 x (H * W) matrix.
  const std::string fits = dir.file("empty-wide-idx3-ubyte");
  write_file(fits, idx_header(0x08, {0u, 65536u, 65536u}));
  const kshot::RowMatrixX<float> images = kshot::load_idx_images<float>(fits);
  CHECK(images.rows() == 0);
  CHECK(images.cols() == Index(65536) * 65536);
}

TEST_CASE("data.idx: the first allocation of a read is bounded by what the file can hold (issue 17)") {
  using kshot::detail::idx_first_allocation;
  const std::uint64_t claimed = std::uint64_t{1} << 30;  // a header that declares 1 GiB of data
  // A 20-byte plain file holds at most 20 data bytes: no 16 MiB floor.
  CHECK(idx_first_allocation(claimed, true, 20, false) == 20);
  // gzip expands at most 1032:1.
  CHECK(idx_first_allocation(claimed, true, 100, true) == 103200);
  // An honest file gets exactly its data in one allocation.
  CHECK(idx_first_allocation(784, true, 800, false) == 784);
  CHECK(idx_first_allocation(784, true, 60, true) == 784);
  // Size unknown (a pipe): 1 MiB, then doubling.
  CHECK(idx_first_allocation(claimed, false, 0, false) == (std::uint64_t{1} << 20));
  // A lying 20-byte header still fails as truncated data.
  TempDir dir;
  const std::string path = dir.file("liar-idx1-ubyte");
  write_file(path, concat(idx_header(0x08, {1u << 30}), Bytes{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}));
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::read_idx(path), std::runtime_error, "truncated data: expected 1073741824",
                              "read 12");
}
