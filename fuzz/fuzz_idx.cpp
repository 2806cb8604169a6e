// libFuzzer harness of kshot's IDX reader, plain and gzip (kshot/data/idx.hpp, built with KSHOT_HAS_ZLIB):
// read_idx (then IdxArray::value and to_vector), load_idx_images<float/double>, load_idx_labels and
// load_idx_dataset<float/double>.
//
// Input: byte 0 = options, the rest = the file (for load_idx_dataset: 2 bytes, big-endian, the length L of
// the labels file, then L bytes of labels file, then the images file).
//   bit 0: the harness gzip-compresses each file first, so that half the inputs reach the IDX parser behind
//          gzip (the other half feed the bytes as they are: plain IDX, or a gzip stream mutated as such)
//   bits 1-3: the entry point: 0 and 6 read_idx, 1 load_idx_images<float>, 2 load_idx_images<double>,
//             3 and 7 load_idx_labels, 4 load_idx_dataset<float>, 5 load_idx_dataset<double>
//   bits 4-6: the scale of the image loaders: 1/255, 1, 0.5, 2^-20, 3, 1/3, 1e-6; 7 an invalid scale
//
// SPDX-License-Identifier: MIT

#include "fuzz_common.hpp"

#include "kshot/data/idx.hpp"

#include <zlib.h>

#include <cmath>
#include <limits>

namespace {

using kshot_fuzz::require;

/// `in` as one gzip member (zlib's deflate with a gzip wrapper).
std::vector<std::uint8_t> gzip(const std::vector<std::uint8_t>& in) {
  z_stream z{};
  if (deflateInit2(&z, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) kshot_fuzz::finding("deflateInit2");
  std::vector<std::uint8_t> out(deflateBound(&z, static_cast<uLong>(in.size())) + 32);
  z.next_in = const_cast<Bytef*>(in.data());
  z.avail_in = static_cast<uInt>(in.size());
  z.next_out = out.data();
  z.avail_out = static_cast<uInt>(out.size());
  if (deflate(&z, Z_FINISH) != Z_STREAM_END) kshot_fuzz::finding("deflate did not finish");
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

template <class Scalar>
Scalar scale_of(std::uint8_t options) {
  switch ((options >> 4) & 7) {
    case 0: return Scalar(1) / Scalar(255);
    case 1: return Scalar(1);
    case 2: return Scalar(0.5);
    case 3: return std::ldexp(Scalar(1), -20);
    case 4: return Scalar(3);
    case 5: return Scalar(1) / Scalar(3);
    case 6: return Scalar(1e-6);
    default: return (options & 128) != 0 ? std::numeric_limits<Scalar>::quiet_NaN() : Scalar(0);
  }
}

void check_array(const kshot::IdxArray& a) {
  const kshot::Index n = a.size();
  require(a.ndim() >= 1 && a.ndim() <= 8, "read_idx() returned " + std::to_string(a.ndim()) + " dimensions");
  require(a.bytes.size() == static_cast<std::size_t>(n) * a.element_size(), "read_idx(): bytes and shape disagree");
  kshot_fuzz::documented([&] {
    const std::vector<double> values = a.to_vector<double>();
    require(static_cast<kshot::Index>(values.size()) == n, "to_vector<double>() size");
  });
  kshot_fuzz::documented([&] { (void)a.to_vector<std::int32_t>(); });
  kshot_fuzz::documented([&] { (void)a.to_vector<std::uint8_t>(); });
  if (n > 0) {
    kshot_fuzz::documented([&] { (void)a.value<float>(n - 1); });
    kshot_fuzz::documented([&] { (void)a.value<std::int64_t>(0); });
  }
  bool threw = false;
  try {
    (void)a.value<double>(n);
  } catch (const std::out_of_range& e) {
    kshot_fuzz::check_message(e);
    threw = true;
  }
  require(threw, "IdxArray::value(size()) did not throw std::out_of_range");
}

template <class Scalar>
void images(const std::string& path, std::uint8_t options) {
  kshot_fuzz::documented([&] {
    const kshot::RowMatrixX<Scalar> m = kshot::load_idx_images<Scalar>(path, scale_of<Scalar>(options));
    require(m.rows() >= 0 && m.cols() >= 0, "load_idx_images() returned a negative shape");
  });
}

template <class Scalar>
void dataset(const std::string& images_path, const std::string& labels_path, std::uint8_t options) {
  kshot_fuzz::documented([&] {
    const kshot::LabeledImages<Scalar> d =
        kshot::load_idx_dataset<Scalar>(images_path, labels_path, scale_of<Scalar>(options));
    require(d.features.rows() == d.labels.size(), "load_idx_dataset(): rows and labels differ");
    require(d.height * d.width == d.features.cols(), "load_idx_dataset(): height * width != cols");
  });
}

}  // namespace

void fuzz_one(const std::uint8_t* data, std::size_t size) {
  static const kshot_fuzz::TempFile file("idx"), labels("idx_labels");
  const std::uint8_t options = data[0];
  const bool compress = (options & 1) != 0;
  const int entry = (options >> 1) & 7;
  std::vector<std::uint8_t> bytes(data + 1, data + size);
  auto put = [&](const kshot_fuzz::TempFile& f, std::vector<std::uint8_t> b) { f.write(compress ? gzip(b) : b); };
  if (entry == 4 || entry == 5) {
    if (bytes.size() < 2) return;
    const std::size_t length = std::min<std::size_t>((std::size_t{bytes[0]} << 8) | bytes[1], bytes.size() - 2);
    put(labels, std::vector<std::uint8_t>(bytes.begin() + 2, bytes.begin() + 2 + static_cast<std::ptrdiff_t>(length)));
    put(file, std::vector<std::uint8_t>(bytes.begin() + 2 + static_cast<std::ptrdiff_t>(length), bytes.end()));
    if (entry == 4)
      dataset<float>(file.path(), labels.path(), options);
    else
      dataset<double>(file.path(), labels.path(), options);
    return;
  }
  put(file, std::move(bytes));
  switch (entry) {
    case 1: images<float>(file.path(), options); break;
    case 2: images<double>(file.path(), options); break;
    case 3:
    case 7: kshot_fuzz::documented([&] { (void)kshot::load_idx_labels(file.path()); }); break;
    default: {
      kshot::IdxArray array;
      if (kshot_fuzz::documented([&] { array = kshot::read_idx(file.path()); })) check_array(array);
    }
  }
}

namespace {

/// An IDX file written from the format's description: 00 00 <type> <ndim>, big-endian u32 sizes, big-endian
/// values (kshot has no IDX writer).
template <class Stored>
std::vector<std::uint8_t> idx_file(std::uint8_t type, const std::vector<std::uint32_t>& shape,
                                   const std::vector<Stored>& values) {
  std::vector<std::uint8_t> out = {0, 0, type, static_cast<std::uint8_t>(shape.size())};
  for (std::uint32_t s : shape)
    for (int b = 3; b >= 0; --b) out.push_back(static_cast<std::uint8_t>(s >> (8 * b)));
  for (Stored v : values) {
    std::uint8_t raw[sizeof(Stored)];
    std::memcpy(raw, &v, sizeof(Stored));
    for (std::size_t b = sizeof(Stored); b-- > 0;) out.push_back(raw[b]);  // little-endian host to big-endian
  }
  return out;
}

std::vector<std::uint8_t> with_length(const std::vector<std::uint8_t>& labels, const std::vector<std::uint8_t>& images) {
  std::vector<std::uint8_t> out = {static_cast<std::uint8_t>(labels.size() >> 8),
                                   static_cast<std::uint8_t>(labels.size() & 0xFF)};
  out.insert(out.end(), labels.begin(), labels.end());
  out.insert(out.end(), images.begin(), images.end());
  return out;
}

}  // namespace

void write_seeds(kshot_fuzz::SeedWriter& seeds) {
  const auto pixels = idx_file<std::uint8_t>(0x08, {2, 3, 4}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,
                                                               255, 254, 128, 127, 64, 32, 16, 8, 4, 2, 1, 0});
  const auto labels = idx_file<std::uint8_t>(0x08, {2}, {3, 9});
  const std::vector<std::pair<std::string, std::vector<std::uint8_t>>> arrays = {
      {"ubyte", pixels},
      {"labels", labels},
      {"sbyte", idx_file<std::int8_t>(0x09, {2, 3}, {-128, -1, 0, 1, 2, 127})},
      {"int16", idx_file<std::int16_t>(0x0B, {3}, {-300, 0, 32767})},
      {"int32", idx_file<std::int32_t>(0x0C, {2, 2}, {-70000, 1, 2, 2147483647})},
      {"float32", idx_file<float>(0x0D, {2, 1, 2}, {0.5f, -1.25f, 3e38f, 1e-30f})},
      {"float64", idx_file<double>(0x0E, {1, 3}, {1e300, -0.0, 2.5})},
      {"empty", idx_file<std::uint8_t>(0x08, {0, 28, 28}, {})},
  };
  // Every entry point (bits 1-3) on every array, each plain (bit 0 clear) and compressed by the harness (bit 0
  // set); plus gzip files made here, fed as they are.
  for (const auto& [name, file] : arrays) {
    for (int entry : {0, 1, 2, 3}) {
      for (std::uint8_t compress : {0, 1}) {
        const auto options = static_cast<std::uint8_t>(compress | (entry << 1) | ((entry & 1) << 4));
        seeds.add(name + "_e" + std::to_string(entry) + "_z" + std::to_string(compress), options, file);
      }
    }
    seeds.add(name + "_gz", 0, gzip(file));
  }
  for (int entry : {4, 5})
    for (std::uint8_t compress : {0, 1})
      seeds.add("dataset_e" + std::to_string(entry) + "_z" + std::to_string(compress),
                static_cast<std::uint8_t>(compress | (entry << 1)), with_length(labels, pixels));
  seeds.add("dataset_gz", static_cast<std::uint8_t>(4 << 1), with_length(gzip(labels), gzip(pixels)));
}
