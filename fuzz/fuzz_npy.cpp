// libFuzzer harness of kshot's .npy reader (kshot/data/npy.hpp): read_npy_header,
// load_npy_matrix<float/double> under every NpyConvert, and load_npy_labels.
//
// Input: byte 0 = options, the rest = the .npy file.
//   bits 0-3: the entry point: 0-3 load_npy_matrix<float> with NpyConvert 0-3 (none, dtype, fortran_order,
//             all), 4-7 load_npy_matrix<double> with NpyConvert 0-3, 8-11 load_npy_labels, 12-15 read_npy_header
// After a successful load: the result agrees with read_npy_header() of the same file (shape, element count),
// and save_npy() then the same load gives back the same values bit for bit.
//
// SPDX-License-Identifier: MIT

#include "fuzz_common.hpp"

#include "kshot/data/npy.hpp"

#include <cstring>

namespace {

using kshot_fuzz::require;

kshot::NpyHeader header_of(const std::string& path) {
  kshot::NpyHeader header;
  require(kshot_fuzz::documented([&] { header = kshot::read_npy_header(path); }),
          "read_npy_header() failed on a file that loaded");
  return header;
}

template <class M>
bool same_bits(const M& a, const M& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() &&
         (a.size() == 0 || std::memcmp(a.data(), b.data(), sizeof(typename M::Scalar) * a.size()) == 0);
}

template <class T>
void matrix(const kshot_fuzz::TempFile& file, kshot::NpyConvert convert) {
  static const kshot_fuzz::TempFile copy("npy_copy");
  kshot::RowMatrixX<T> m;
  if (!kshot_fuzz::documented([&] { m = kshot::load_npy_matrix<T>(file.path(), convert); })) return;
  const kshot::NpyHeader header = header_of(file.path());
  require(header.shape.size() == 2 && m.rows() == header.shape[0] && m.cols() == header.shape[1],
          "load_npy_matrix() shape differs from the header's");
  kshot::save_npy(copy.path(), m);
  const kshot::RowMatrixX<T> again = kshot::load_npy_matrix<T>(copy.path());
  require(same_bits(m, again), "load_npy_matrix(save_npy(m)) differs from m");
}

void labels(const kshot_fuzz::TempFile& file) {
  static const kshot_fuzz::TempFile copy("npy_labels_copy");
  kshot::LabelVector v;
  if (!kshot_fuzz::documented([&] { v = kshot::load_npy_labels(file.path()); })) return;
  const kshot::NpyHeader header = header_of(file.path());
  require(header.shape.size() == 1 && v.size() == header.shape[0], "load_npy_labels() size differs from the header's");
  kshot::save_npy(copy.path(), v);
  const kshot::LabelVector again = kshot::load_npy_labels(copy.path());
  require(same_bits(v, again), "load_npy_labels(save_npy(v)) differs from v");
}

void header(const kshot_fuzz::TempFile& file) {
  kshot::NpyHeader h;
  if (!kshot_fuzz::documented([&] { h = kshot::read_npy_header(file.path()); })) return;
  require(h.item_size >= 1 && h.item_size <= 16, "read_npy_header(): item size");
  const kshot::Index n = h.size();
  require(n >= 0, "NpyHeader::size() is negative");
  require(h.data_bytes == static_cast<std::size_t>(n) * h.item_size, "NpyHeader: data_bytes != size() * item_size");
}

}  // namespace

void fuzz_one(const std::uint8_t* data, std::size_t size) {
  static const kshot_fuzz::TempFile file("npy");
  const int entry = data[0] & 15;
  file.write(data + 1, size - 1);
  if (entry < 4)
    matrix<float>(file, static_cast<kshot::NpyConvert>(entry));
  else if (entry < 8)
    matrix<double>(file, static_cast<kshot::NpyConvert>(entry - 4));
  else if (entry < 12)
    labels(file);
  else
    header(file);
}

namespace {

/// A .npy file written from the format's description (for the dtypes, orders and versions save_npy does not
/// write): magic, version, little-endian header length, the dictionary padded to 64 bytes, the data as given.
std::vector<std::uint8_t> npy_file(int major, const std::string& descr, bool fortran, const std::string& shape,
                                   const std::vector<std::uint8_t>& data) {
  std::string dict = "{'descr': '" + descr + "', 'fortran_order': " + (fortran ? "True" : "False") +
                     ", 'shape': " + shape + ", }";
  const std::size_t preamble = major == 1 ? 10 : 12;
  const std::size_t length = (preamble + dict.size() + 1 + 63) / 64 * 64 - preamble;
  dict.append(length - dict.size() - 1, ' ');
  dict += '\n';
  std::vector<std::uint8_t> out = {0x93, 'N', 'U', 'M', 'P', 'Y', static_cast<std::uint8_t>(major), 0};
  for (std::size_t b = 0; b < (major == 1 ? 2u : 4u); ++b) out.push_back(static_cast<std::uint8_t>(length >> (8 * b)));
  out.insert(out.end(), dict.begin(), dict.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

std::vector<std::uint8_t> counting(std::size_t n) {
  std::vector<std::uint8_t> out(n);
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::uint8_t>(i * 37 + 1);
  return out;
}

}  // namespace

void write_seeds(kshot_fuzz::SeedWriter& seeds) {
  static const kshot_fuzz::TempFile file("npy_seed");
  auto saved = [&](const auto& array) {
    kshot::save_npy(file.path(), array);
    return file.read();
  };
  kshot::RowMatrixX<float> f(2, 3);
  f << 1, -2, 3.5f, 0, 1e-3f, 7;
  kshot::RowMatrixX<double> d(3, 1);
  d << 0.25, -1e300, 42;
  kshot::LabelVector l(4);
  l << 0, 3, -1, 2147483647;
  const auto f32 = saved(f), f64 = saved(d), i32 = saved(l);
  // save_npy's files under every entry point.
  for (int entry = 0; entry < 16; ++entry) {
    const auto options = static_cast<std::uint8_t>(entry);
    const std::string e = std::to_string(entry);
    seeds.add("f32_" + e, options, f32);
    if (entry >= 4) seeds.add("f64_" + e, options, f64);
    if (entry >= 8) seeds.add("i32_" + e, options, i32);
  }
  // Files written from the format's description: other dtypes, byte orders, Fortran order, versions 2 and 3.
  const struct {
    const char* name;
    int major;
    const char* descr;
    bool fortran;
    const char* shape;
    std::size_t bytes;
    std::uint8_t options;
  } files[] = {
      {"be_f8", 1, ">f8", false, "(2, 2)", 32, 4},     {"fortran_f4", 1, "<f4", true, "(2, 3)", 24, 2},
      {"i1_matrix", 2, "|i1", false, "(3, 2)", 6, 5},  {"u8_matrix", 3, "<u8", false, "(1, 2)", 16, 3},
      {"be_i2_labels", 1, ">i2", false, "(5,)", 10, 8}, {"u4_labels", 1, "<u4", false, "(3,)", 12, 9},
      {"i8_labels", 2, "<i8", false, "(2,)", 16, 10},   {"u1_labels", 1, "|u1", false, "(4,)", 4, 11},
      {"b1", 1, "|b1", false, "(2, 2)", 4, 13},         {"c8", 1, "<c8", false, "(1, 1)", 8, 1},
      {"f2", 1, "<f2", false, "(2, 1)", 4, 5},          {"scalar", 1, "<f8", false, "()", 8, 12},
      {"empty", 1, "<f4", false, "(0, 5)", 0, 0},       {"fortran_f8_3d", 1, "<f8", true, "(1, 2, 1)", 16, 14},
  };
  for (const auto& s : files)
    seeds.add(s.name, s.options, npy_file(s.major, s.descr, s.fortran, s.shape, counting(s.bytes)));
}
