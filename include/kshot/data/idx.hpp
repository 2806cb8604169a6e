/**
 * @file kshot/data/idx.hpp
 * @brief Reading IDX files (the format of MNIST and Fashion-MNIST), plain or gzip-compressed, into
 * row-major feature matrices and label vectors.
 *
 * An IDX file is a magic number `00 00 <type> <ndim>`, then `ndim` big-endian uint32 sizes, then the values
 * in row-major order, big-endian for the multi-byte types. `read_idx` returns the values as raw bytes already
 * converted to host byte order (`IdxArray`), so that a file is decoded once and typed access is a `memcpy`;
 * `load_idx_images`, `load_idx_labels`, `load_idx_dataset` and `load_fashion_mnist` convert them to kshot's
 * types (`RowMatrixX<Scalar>`, `LabelVector`).
 *
 * gzip files are read through zlib when kshot is built with it (`KSHOT_HAS_ZLIB`, set by CMake when zlib is
 * found); without zlib only uncompressed files are read, and a gzip file throws a std::runtime_error that says so.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_DATA_IDX_HPP
#define KSHOT_DATA_IDX_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/types.hpp"
#include "kshot/data/detail/io_messages.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <system_error>
#include <type_traits>
#include <vector>

#ifdef KSHOT_HAS_ZLIB
#include <zlib.h>
#else
#include <fstream>
#include <ios>
#endif

namespace kshot {

/// The element types of the IDX format; the value is the type byte of the magic number.
enum class IdxType : std::uint8_t {
  ubyte = 0x08,    ///< unsigned 8-bit integer (the pixels and labels of MNIST and Fashion-MNIST)
  sbyte = 0x09,    ///< signed 8-bit integer
  int16 = 0x0B,    ///< signed 16-bit integer
  int32 = 0x0C,    ///< signed 32-bit integer
  float32 = 0x0D,  ///< IEEE 754 single precision
  float64 = 0x0E   ///< IEEE 754 double precision
};

/**
 * @brief The size in bytes of one value of `type`.
 * @param[in] type an IDX element type.
 * @return 1, 2, 4 or 8; 0 for a value outside the enumeration.
 */
inline std::size_t idx_element_size(IdxType type) noexcept {
  switch (type) {
    case IdxType::ubyte:
    case IdxType::sbyte: return 1;
    case IdxType::int16: return 2;
    case IdxType::int32:
    case IdxType::float32: return 4;
    case IdxType::float64: return 8;
  }
  return 0;
}

/**
 * @brief The name of `type` as it appears in kshot's messages.
 * @param[in] type an IDX element type.
 * @return "ubyte", "sbyte", "int16", "int32", "float32" or "float64"; "unknown" outside the enumeration.
 */
inline const char* idx_type_name(IdxType type) noexcept {
  switch (type) {
    case IdxType::ubyte: return "ubyte";
    case IdxType::sbyte: return "sbyte";
    case IdxType::int16: return "int16";
    case IdxType::int32: return "int32";
    case IdxType::float32: return "float32";
    case IdxType::float64: return "float64";
  }
  return "unknown";
}

namespace detail {

/// Carries a type through a generic lambda (see visit_idx_type).
template <class T>
struct IdxTypeTag {
  using type = T;
};

/**
 * @brief Calls `f(IdxTypeTag<Stored>{})` with the C++ type that stores values of `type`.
 * @throws std::invalid_argument "<where>: ..." when `type` is outside the enumeration.
 */
template <class F>
void visit_idx_type(IdxType type, const char* where, F&& f) {
  switch (type) {
    case IdxType::ubyte: f(IdxTypeTag<std::uint8_t>{}); return;
    case IdxType::sbyte: f(IdxTypeTag<std::int8_t>{}); return;
    case IdxType::int16: f(IdxTypeTag<std::int16_t>{}); return;
    case IdxType::int32: f(IdxTypeTag<std::int32_t>{}); return;
    case IdxType::float32: f(IdxTypeTag<float>{}); return;
    case IdxType::float64: f(IdxTypeTag<double>{}); return;
  }
  throw_invalid_argument(where, cat("the array's type code 0x", std::hex, static_cast<unsigned>(type),
                                    " is not an IDX type"));
}

/// One stored value, read from host-order bytes (memcpy keeps it free of alignment and aliasing issues).
template <class Stored>
Stored load_idx_value(const std::uint8_t* p) noexcept {
  Stored value;
  std::memcpy(&value, p, sizeof(Stored));
  return value;
}

/**
 * @brief Converts one stored value to T with static_cast, refusing the conversions C++ leaves undefined.
 * @throws std::out_of_range "<where>: ..." when a floating value is NaN or outside
 * [lowest(T), max(T) + 1) and T is integral.
 */
template <class T, class Stored>
T convert_idx_value(Stored value, std::size_t i, const char* where) {
  if constexpr (std::is_integral_v<T> && std::is_floating_point_v<Stored>) {
    // Both bounds are 0 or a power of two, so they are exact in float and double.
    const Stored lowest = static_cast<Stored>(std::numeric_limits<T>::min());
    const Stored limit = std::ldexp(Stored(1), std::numeric_limits<T>::digits);
    if (!(value >= lowest && value < limit))
      throw_out_of_range(where, cat("element ", i, " (", value, ") does not fit the requested integer type"));
  }
  return static_cast<T>(value);
}

/// "60000 x 28 x 28".
inline std::string idx_shape_string(const std::vector<Index>& shape) {
  std::string text;
  for (std::size_t k = 0; k < shape.size(); ++k) {
    if (k > 0) text += " x ";
    text += std::to_string(shape[k]);
  }
  return text;
}

/// Rewrites `count` big-endian values of `size` bytes, in place, in host byte order (any host).
inline void idx_big_endian_to_host(std::uint8_t* p, std::size_t count, std::size_t size) noexcept {
  // Building the value with shifts is independent of the host's byte order; compilers emit bswap.
  switch (size) {
    case 2:
      for (std::size_t i = 0; i < count; ++i, p += 2) {
        const auto v = static_cast<std::uint16_t>((static_cast<unsigned>(p[0]) << 8) | static_cast<unsigned>(p[1]));
        std::memcpy(p, &v, 2);
      }
      break;
    case 4:
      for (std::size_t i = 0; i < count; ++i, p += 4) {
        const std::uint32_t v = (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) |
                                (std::uint32_t{p[2]} << 8) | std::uint32_t{p[3]};
        std::memcpy(p, &v, 4);
      }
      break;
    case 8:
      for (std::size_t i = 0; i < count; ++i, p += 8) {
        std::uint64_t v = 0;
        for (int k = 0; k < 8; ++k) v = (v << 8) | std::uint64_t{p[k]};
        std::memcpy(p, &v, 8);
      }
      break;
    default:
      break;
  }
}

/// The largest chunk handed to one read call: gzread takes an unsigned count and returns an int.
inline constexpr std::size_t idx_max_read_chunk = std::size_t{1} << 30;

/**
 * @brief A file opened for reading, decompressed on the fly when it is gzip (zlib build) or read as is.
 *
 * read() never throws: a stream error ends the read early and is described by error(), so that the
 * caller can say where in the file it happened.
 */
class IdxByteSource {
 public:
  /// @throws std::runtime_error "<where>: '<path>': ..." when the file is missing, a directory or unopenable.
  IdxByteSource(const std::string& path, const char* where) : path_(path) {
    std::error_code ec;
    const std::filesystem::file_status status = std::filesystem::status(path, ec);
    if (status.type() == std::filesystem::file_type::not_found)
      throw_runtime_error(where, cat(io_quote(path), ": cannot open the file: it does not exist"));
    if (status.type() == std::filesystem::file_type::directory)
      throw_runtime_error(where, cat(io_quote(path), ": cannot open the file: it is a directory"));
#ifdef KSHOT_HAS_ZLIB
    errno = 0;
    file_ = gzopen(path.c_str(), "rb");
    if (file_ == nullptr) {
      const int err = errno;
      throw_runtime_error(where, cat(io_quote(path), ": cannot open the file: ",
                                     err != 0 ? std::error_code(err, std::generic_category()).message()
                                              : std::string("zlib could not allocate its state")));
    }
    gzbuffer(file_, 1u << 17);
#else
    errno = 0;
    in_.open(path, std::ios::binary);
    if (!in_) {
      const int err = errno;
      throw_runtime_error(where, cat(io_quote(path), ": cannot open the file: ",
                                     err != 0 ? std::error_code(err, std::generic_category()).message()
                                              : std::string("std::ifstream failed")));
    }
    const int b0 = in_.get();
    const int b1 = in_.get();
    if (b0 == 0x1F && b1 == 0x8B)
      throw_runtime_error(where, cat(io_quote(path), ": the file is gzip-compressed (it starts with 1f 8b) but "
                                                     "kshot was built without zlib (KSHOT_HAS_ZLIB is not defined); "
                                                     "decompress it with gunzip or build kshot with zlib"));
    in_.clear();
    in_.seekg(0);
#endif
  }

  IdxByteSource(const IdxByteSource&) = delete;
  IdxByteSource& operator=(const IdxByteSource&) = delete;

  ~IdxByteSource() {
#ifdef KSHOT_HAS_ZLIB
    if (file_ != nullptr) gzclose(file_);
#endif
  }

  /// Reads up to `n` bytes into `dst`; fewer only at the end of the stream or after an error (see error()).
  std::size_t read(std::uint8_t* dst, std::size_t n) {
    std::size_t done = 0;
    while (done < n && error_.empty()) {
      const std::size_t chunk = std::min(n - done, idx_max_read_chunk);
#ifdef KSHOT_HAS_ZLIB
      const int got = gzread(file_, dst + done, static_cast<unsigned>(chunk));
      if (got > 0) done += static_cast<std::size_t>(got);
      if (got == static_cast<int>(chunk)) continue;
      // A short read is the end of the stream or an error; zlib reports a truncated stream
      // (Z_BUF_ERROR) only through gzerror.
      int errnum = Z_OK;
      const char* message = gzerror(file_, &errnum);
      if (errnum != Z_OK) error_ = describe_zlib_error(errnum, message);
      break;
#else
      in_.read(reinterpret_cast<char*>(dst + done), static_cast<std::streamsize>(chunk));
      const auto got = static_cast<std::size_t>(in_.gcount());
      done += got;
      if (got == chunk) continue;
      if (in_.bad()) error_ = "read error (std::ifstream::read failed)";
      break;
#endif
    }
    return done;
  }

  /// Empty while the stream is healthy; otherwise what went wrong, e.g. "corrupt gzip stream (zlib: ...)".
  const std::string& error() const noexcept { return error_; }

  /// True when the file is gzip-compressed (always false without zlib).
  bool compressed() {
#ifdef KSHOT_HAS_ZLIB
    return gzdirect(file_) == 0;
#else
    return false;
#endif
  }

 private:
#ifdef KSHOT_HAS_ZLIB
  std::string describe_zlib_error(int errnum, const char* message) const {
    std::string text = message != nullptr ? message : "";
    // gzerror prefixes its message with the path, which kshot's message already names.
    const std::string prefix = path_ + ": ";
    if (text.compare(0, prefix.size(), prefix) == 0) text.erase(0, prefix.size());
    switch (errnum) {
      case Z_BUF_ERROR: return cat("the gzip stream is truncated (zlib: ", text, ")");
      case Z_DATA_ERROR: return cat("corrupt gzip stream (zlib: ", text, ")");
      case Z_ERRNO: return cat("read error (", text, ")");
      case Z_MEM_ERROR: return "zlib ran out of memory";
      default: return cat("zlib error ", errnum, " (", text, ")");
    }
  }

  gzFile file_ = nullptr;
#else
  std::ifstream in_;
#endif
  std::string path_;
  std::string error_;
};

}  // namespace detail

/**
 * @brief The contents of an IDX file: element type, shape and values.
 *
 * The values are kept as the file's bytes converted to host byte order, `size() * element_size()` bytes in
 * row-major order. This keeps one decoded copy whatever the element type, with no loss (an int32 or float64
 * file is not forced through double); read them typed with value() or to_vector(), or convert a whole file
 * with load_idx_images() and load_idx_labels().
 */
struct IdxArray {
  /// The element type (the third byte of the magic number).
  IdxType type = IdxType::ubyte;
  /// The sizes of the dimensions, outermost first (e.g. {60000, 28, 28}).
  std::vector<Index> shape;
  /// The values in row-major order, host byte order, `element_size()` bytes each.
  std::vector<std::uint8_t> bytes;

  /// The number of dimensions.
  Index ndim() const noexcept { return static_cast<Index>(shape.size()); }

  /// The number of values: the product of `shape` (0 when `shape` is empty or holds a 0).
  Index size() const noexcept {
    if (shape.empty() || std::find(shape.begin(), shape.end(), Index{0}) != shape.end()) return 0;
    Index count = 1;
    for (Index extent : shape) count *= extent;
    return count;
  }

  /// The size in bytes of one value (1, 2, 4 or 8).
  std::size_t element_size() const noexcept { return idx_element_size(type); }

  /**
   * @brief The value at row-major position `i`, converted to T with static_cast.
   * @tparam T an arithmetic type.
   * @param[in] i the position, in [0, size()).
   * @return the value as T.
   * @throws std::out_of_range when `i` is outside [0, size()), or when T is integral and the value is a
   * floating NaN or lies outside [lowest(T), max(T) + 1).
   * @throws std::invalid_argument when `bytes` does not hold `size() * element_size()` bytes.
   */
  template <class T>
  T value(Index i) const {
    static_assert(std::is_arithmetic_v<T>, "kshot::IdxArray::value<T>(): T must be an arithmetic type");
    constexpr const char* where = "kshot::IdxArray::value()";
    check_consistent(where);
    KSHOT_CHECK_RANGE(i >= 0 && i < size(), where,
                      detail::cat("index ", i, " is outside [0, ", size(), ") for shape ",
                                  detail::idx_shape_string(shape)));
    T result{};
    const auto position = static_cast<std::size_t>(i);
    detail::visit_idx_type(type, where, [&](auto tag) {
      using Stored = typename decltype(tag)::type;
      const Stored stored = detail::load_idx_value<Stored>(bytes.data() + position * sizeof(Stored));
      result = detail::convert_idx_value<T>(stored, position, where);
    });
    return result;
  }

  /**
   * @brief All values in row-major order, converted to T with static_cast.
   * @tparam T an arithmetic type.
   * @return a vector of size() values.
   * @throws std::out_of_range when T is integral and a value is a floating NaN or lies outside
   * [lowest(T), max(T) + 1).
   * @throws std::invalid_argument when `bytes` does not hold `size() * element_size()` bytes.
   */
  template <class T>
  std::vector<T> to_vector() const {
    static_assert(std::is_arithmetic_v<T>, "kshot::IdxArray::to_vector<T>(): T must be an arithmetic type");
    constexpr const char* where = "kshot::IdxArray::to_vector()";
    check_consistent(where);
    const auto count = static_cast<std::size_t>(size());
    std::vector<T> result(count);
    detail::visit_idx_type(type, where, [&](auto tag) {
      using Stored = typename decltype(tag)::type;
      for (std::size_t i = 0; i < count; ++i)
        result[i] = detail::convert_idx_value<T>(detail::load_idx_value<Stored>(bytes.data() + i * sizeof(Stored)),
                                                 i, where);
    });
    return result;
  }

 private:
  void check_consistent(const char* where) const {
    const std::size_t expected = static_cast<std::size_t>(size()) * element_size();
    KSHOT_CHECK(bytes.size() == expected, where,
                detail::cat("bytes holds ", bytes.size(), " bytes but shape ", detail::idx_shape_string(shape),
                            " of ", idx_type_name(type), " values needs ", expected));
  }
};

namespace detail {

/// The first read of read_idx() takes at most this many bytes when the file's size is unknown (a pipe).
inline constexpr std::uint64_t idx_unknown_size_first_read = std::uint64_t{1} << 20;

/**
 * @brief The size of the first allocation of read_idx() for `expected` data bytes: what the file can hold.
 *
 * A plain file of `on_disk` bytes holds at most `on_disk` data bytes; a gzip file at most 1032 times its size
 * (deflate's largest expansion). When the size is unknown, 1 MiB. read_idx() doubles the buffer while data keeps
 * arriving, so a header that claims more than the file holds costs an allocation proportional to the file.
 */
inline std::uint64_t idx_first_allocation(std::uint64_t expected, bool size_known, std::uint64_t on_disk,
                                          bool compressed) noexcept {
  constexpr std::uint64_t deflate_expansion = 1032;
  std::uint64_t bound = idx_unknown_size_first_read;
  if (size_known) {
    const std::uint64_t most = std::numeric_limits<std::uint64_t>::max();
    bound = compressed ? (on_disk > most / deflate_expansion ? most : on_disk * deflate_expansion) : on_disk;
  }
  return std::min(expected, bound);
}

/// read_idx under the name of the public call that the messages report.
inline IdxArray read_idx_impl(const std::string& path, const char* where) {
  const auto fail = [&](const std::string& what) { throw_runtime_error(where, cat(io_quote(path), ": ", what)); };
  IdxByteSource source(path, where);

  std::array<std::uint8_t, 4> magic{};
  const std::size_t magic_read = source.read(magic.data(), magic.size());
  if (!source.error().empty()) fail(cat(source.error(), " while reading the 4-byte magic number"));
  if (magic_read == 0) fail("the file is empty (an IDX file starts with the magic number 00 00 <type> <ndim>)");
  if (magic_read < magic.size())
    fail(cat("truncated header: expected at least 4 header bytes, read ", magic_read, " (",
             io_hex_bytes(magic.data(), magic_read), ")"));
  const std::string magic_text = io_hex_bytes(magic.data(), magic.size());
  if (magic[0] != 0 || magic[1] != 0)
    fail(cat("bad magic number ", magic_text, " (an IDX file starts with 00 00 <type> <ndim>)"));
  const std::uint8_t code = magic[2];
  const bool known_code = code == 0x08 || code == 0x09 || code == 0x0B || code == 0x0C || code == 0x0D || code == 0x0E;
  if (!known_code)
    fail(cat("unknown type code 0x", io_hex_bytes(&code, 1), " in the magic number ", magic_text,
             " (expected 08 ubyte, 09 sbyte, 0b int16, 0c int32, 0d float32 or 0e float64)"));
  const std::size_t ndim = magic[3];
  if (ndim == 0 || ndim > 8)
    fail(cat("the magic number ", magic_text, " declares ", ndim, " dimensions; kshot reads 1 to 8"));

  const std::size_t header_bytes = 4 + 4 * ndim;
  std::array<std::uint8_t, 32> sizes{};
  const std::size_t sizes_read = source.read(sizes.data(), 4 * ndim);
  if (!source.error().empty()) fail(cat(source.error(), " while reading the ", header_bytes, "-byte header"));
  if (sizes_read < 4 * ndim)
    fail(cat("truncated header: expected ", header_bytes, " header bytes for ", ndim, " dimensions, read ",
             4 + sizes_read));

  IdxArray out;
  out.type = static_cast<IdxType>(code);
  const std::size_t element_size = idx_element_size(out.type);
  // Up to eight uint32 sizes can overflow 64 bits: multiply with a check at every step.
  const auto limit = static_cast<std::uint64_t>(
      std::min<std::uint64_t>(static_cast<std::uint64_t>(std::numeric_limits<std::ptrdiff_t>::max()),
                              static_cast<std::uint64_t>(std::numeric_limits<Index>::max())));
  out.shape.resize(ndim);
  bool empty = false;
  for (std::size_t k = 0; k < ndim; ++k) {
    const std::uint8_t* p = sizes.data() + 4 * k;
    const std::uint32_t extent = (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) |
                                 (std::uint32_t{p[2]} << 8) | std::uint32_t{p[3]};
    out.shape[k] = static_cast<Index>(extent);
    empty = empty || extent == 0;
  }
  const std::string described = cat("shape ", idx_shape_string(out.shape), ", ", idx_type_name(out.type));
  std::uint64_t total = empty ? 0 : element_size;
  for (std::size_t k = 0; k < ndim && total != 0; ++k) {
    const auto extent = static_cast<std::uint64_t>(out.shape[k]);
    if (total > limit / extent) fail(cat("size overflow: ", described, " needs more than ", limit, " bytes"));
    total *= extent;
  }
  const auto expected = static_cast<std::size_t>(total);

  // Allocate what the file can plausibly hold, so that a corrupt header cannot make a small file allocate more
  // than it could hold; honest files still take one allocation and one read.
  std::error_code ec;
  const std::uintmax_t file_size = std::filesystem::file_size(path, ec);
  out.bytes.resize(static_cast<std::size_t>(
      idx_first_allocation(expected, !ec, static_cast<std::uint64_t>(ec ? 0 : file_size), source.compressed())));
  std::size_t done = 0;
  for (;;) {
    done += source.read(out.bytes.data() + done, out.bytes.size() - done);
    if (!source.error().empty())  // zlib may drop the count of a read that ends in an error: 0 means unknown
      fail(cat(source.error(), done > 0 ? cat(" after ", done, " of the ") : std::string(" while reading the "),
               expected, " data bytes (", described, ")"));
    if (done < out.bytes.size())
      fail(cat("truncated data: expected ", expected, " data bytes after the ", header_bytes, "-byte header (",
               described, "), read ", done));
    if (done == expected) break;
    out.bytes.resize(std::min(expected, std::max<std::size_t>(2 * out.bytes.size(), 4096)));
  }

  // Reading past the data also makes zlib check the gzip trailer (CRC-32 and length).
  std::array<std::uint8_t, 4096> probe{};
  std::uint64_t trailing = 0;
  for (;;) {
    const std::size_t got = source.read(probe.data(), probe.size());
    trailing += got;
    if (!source.error().empty())
      fail(cat(source.error(), " after the ", expected, " data bytes (", described, ")"));
    if (got < probe.size()) break;
  }
  if (trailing > 0)
    fail(cat("trailing garbage: ", trailing, " bytes after the ", expected, " data bytes that the header declares (",
             described, ")"));

  idx_big_endian_to_host(out.bytes.data(), expected / element_size, element_size);
  return out;
}

/// Checks the scale of the image loaders.
template <class Scalar>
void check_idx_scale(Scalar scale, const char* where) {
  KSHOT_CHECK(std::isfinite(scale) && scale > Scalar(0), where,
              cat("scale must be finite and positive, got ", scale));
}

/// An N x H x W or N x D array as an N x (H*W) matrix times scale; height and width receive H, W (or 1, D).
template <class Scalar>
RowMatrixX<Scalar> idx_to_images(const IdxArray& array, const std::string& path, Scalar scale, const char* where,
                                 Index& height, Index& width) {
  if (array.ndim() != 2 && array.ndim() != 3)
    throw_runtime_error(where, cat(io_quote(path), ": an images file must be 3-D (N x H x W) or 2-D (N x D), "
                                                    "but this one is ", array.ndim(), "-D with shape ",
                                   idx_shape_string(array.shape)));
  const Index rows = array.shape[0];
  height = array.ndim() == 3 ? array.shape[1] : 1;
  width = array.ndim() == 3 ? array.shape[2] : array.shape[1];
  // With N = 0 the file holds no pixel, so read_idx() could not bound H x W by its size: checked here.
  if (height > 0 && width > std::numeric_limits<Index>::max() / height)
    throw_runtime_error(where, cat(io_quote(path), ": an image of ", height, " x ", width, " pixels (shape ",
                                   idx_shape_string(array.shape), ") has more pixels than a matrix can number (",
                                   std::numeric_limits<Index>::max(), ")"));
  RowMatrixX<Scalar> images(rows, height * width);
  const auto count = static_cast<std::size_t>(images.size());
  Scalar* out = images.data();
  const std::uint8_t* in = array.bytes.data();
  visit_idx_type(array.type, where, [&](auto tag) {
    using Stored = typename decltype(tag)::type;
    for (std::size_t i = 0; i < count; ++i)
      out[i] = static_cast<Scalar>(load_idx_value<Stored>(in + i * sizeof(Stored))) * scale;
  });
  return images;
}

/// A 1-D integer array as labels.
inline LabelVector idx_to_labels(const IdxArray& array, const std::string& path, const char* where) {
  if (array.ndim() != 1)
    throw_runtime_error(where, cat(io_quote(path), ": a labels file must be 1-D, but this one is ", array.ndim(),
                                   "-D with shape ", idx_shape_string(array.shape)));
  if (array.type == IdxType::float32 || array.type == IdxType::float64)
    throw_runtime_error(where, cat(io_quote(path), ": labels must be integers, but this file holds ",
                                   idx_type_name(array.type), " values"));
  LabelVector labels(array.shape[0]);
  const auto count = static_cast<std::size_t>(labels.size());
  Label* out = labels.data();
  const std::uint8_t* in = array.bytes.data();
  visit_idx_type(array.type, where, [&](auto tag) {
    using Stored = typename decltype(tag)::type;
    if constexpr (std::is_integral_v<Stored>)
      for (std::size_t i = 0; i < count; ++i) out[i] = static_cast<Label>(load_idx_value<Stored>(in + i * sizeof(Stored)));
  });
  return labels;
}

}  // namespace detail

/**
 * @brief Reads an IDX file, plain or gzip-compressed, into its type, shape and host-order values.
 * @param[in] path the file.
 * @return the decoded array; `bytes` holds `size() * element_size()` bytes in host byte order.
 * @throws std::runtime_error "kshot::read_idx(): '<path>': ..." when the file does not exist, is a directory or
 * cannot be opened; is empty; has a magic number that does not start with 00 00 (the bytes are shown), an
 * unknown type code, or 0 or more than 8 dimensions; ends inside the header or the data (both byte counts are
 * shown); has bytes after the data; is a corrupt or truncated gzip stream (zlib's message is shown); declares
 * a shape whose byte size overflows; or is gzip-compressed while kshot was built without zlib.
 * @note Reads the whole file in one pass, with one allocation for honest files (zlib reads the data straight
 * into the array). The first allocation is at most what the file can hold (its size, or 1032 times its size
 * for gzip: detail::idx_first_allocation()), so a file whose header claims more data than it can hold fails with
 * "truncated data" after allocating in proportion to the file, never the claimed size. zlib ignores bytes that
 * follow a complete gzip stream and reads concatenated
 * gzip members as one stream.
 */
inline IdxArray read_idx(const std::string& path) { return detail::read_idx_impl(path, "kshot::read_idx()"); }

/**
 * @brief Reads an IDX images file (N x H x W, or N x D) as an N x (H*W) row-major matrix scaled by `scale`.
 * @tparam Scalar float or double.
 * @param[in] path the file, plain or gzip-compressed, of any IDX element type.
 * @param[in] scale every value is converted to Scalar and multiplied by it; the default 1/255 maps ubyte pixels
 * to [0, 1] (pass 1 to keep raw values). Must be finite and positive.
 * @return one image per row, pixels in row-major (H, W) order.
 * @throws std::invalid_argument "kshot::load_idx_images(): ..." when `scale` is not finite and positive.
 * @throws std::runtime_error "kshot::load_idx_images(): '<path>': ..." on every error of read_idx(), when
 * the file is not 2-D or 3-D, and when H x W overflows Index (possible only with N = 0, as the data bytes bound
 * every other shape).
 */
template <class Scalar = float>
RowMatrixX<Scalar> load_idx_images(const std::string& path, Scalar scale = Scalar(1) / Scalar(255)) {
  static_assert(is_supported_scalar_v<Scalar>, "kshot::load_idx_images<Scalar>(): Scalar must be float or double");
  constexpr const char* where = "kshot::load_idx_images()";
  detail::check_idx_scale(scale, where);
  Index height = 0, width = 0;
  return detail::idx_to_images(detail::read_idx_impl(path, where), path, scale, where, height, width);
}

/**
 * @brief Reads a 1-D IDX labels file (ubyte, sbyte, int16 or int32) as a label vector.
 * @param[in] path the file, plain or gzip-compressed.
 * @return the labels, unchanged (no remapping to 0..C-1).
 * @throws std::runtime_error "kshot::load_idx_labels(): '<path>': ..." on every error of read_idx(), when the
 * file is not 1-D, and when it holds float32 or float64 values.
 */
inline LabelVector load_idx_labels(const std::string& path) {
  constexpr const char* where = "kshot::load_idx_labels()";
  return detail::idx_to_labels(detail::read_idx_impl(path, where), path, where);
}

/**
 * @brief Images with their labels, as load_idx_dataset() and load_fashion_mnist() return them.
 * @tparam Scalar float or double.
 */
template <class Scalar = float>
struct LabeledImages {
  /// N x (height * width), one image per row, pixels in row-major order.
  RowMatrixX<Scalar> features;
  /// N labels, the label of row i at i.
  LabelVector labels;
  /// Image height in pixels (1 for a 2-D N x D images file).
  Index height = 0;
  /// Image width in pixels (D for a 2-D N x D images file); `height * width == features.cols()`.
  Index width = 0;
};

namespace detail {

template <class Scalar>
LabeledImages<Scalar> load_idx_dataset_impl(const std::string& images_path, const std::string& labels_path,
                                            Scalar scale, const char* where) {
  check_idx_scale(scale, where);
  LabeledImages<Scalar> dataset;
  dataset.labels = idx_to_labels(read_idx_impl(labels_path, where), labels_path, where);
  dataset.features = idx_to_images(read_idx_impl(images_path, where), images_path, scale, where, dataset.height,
                                   dataset.width);
  if (dataset.features.rows() != dataset.labels.size())
    throw_runtime_error(where, cat(io_quote(images_path), " has ", dataset.features.rows(), " images but ",
                                   io_quote(labels_path), " has ", dataset.labels.size(), " labels"));
  return dataset;
}

}  // namespace detail

/**
 * @brief Reads an IDX images file and its labels file, and checks that they hold the same number of samples.
 * @tparam Scalar float or double.
 * @param[in] images_path the images (N x H x W or N x D), as for load_idx_images().
 * @param[in] labels_path the labels (1-D, N entries), as for load_idx_labels().
 * @param[in] scale every pixel is multiplied by it; finite and positive (default 1/255).
 * @return features (N x H*W), labels (N), height and width.
 * @throws std::invalid_argument "kshot::load_idx_dataset(): ..." when `scale` is not finite and positive.
 * @throws std::runtime_error "kshot::load_idx_dataset(): ..." on every error of load_idx_images() and
 * load_idx_labels() (naming the file at fault), and when the counts differ ("'<images>' has 60000 images but
 * '<labels>' has 10000 labels").
 */
template <class Scalar = float>
LabeledImages<Scalar> load_idx_dataset(const std::string& images_path, const std::string& labels_path,
                                       Scalar scale = Scalar(1) / Scalar(255)) {
  static_assert(is_supported_scalar_v<Scalar>, "kshot::load_idx_dataset<Scalar>(): Scalar must be float or double");
  return detail::load_idx_dataset_impl(images_path, labels_path, scale, "kshot::load_idx_dataset()");
}

/// The two splits of Fashion-MNIST: 60,000 training and 10,000 test images.
enum class FashionMnistSplit { train, test };

/// The number of Fashion-MNIST classes (labels 0 to 9).
inline constexpr Index fashion_mnist_num_classes = 10;

/// Where Debian's `dataset-fashion-mnist` package installs the files: "/usr/share/datasets/fashion-mnist".
inline const char* fashion_mnist_default_directory() noexcept { return "/usr/share/datasets/fashion-mnist"; }

/**
 * @brief The name of a Fashion-MNIST class.
 * @param[in] label a label in [0, 9].
 * @return "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag" or
 * "Ankle boot".
 * @throws std::out_of_range "kshot::fashion_mnist_class_name(): ..." when `label` is outside [0, 9].
 */
inline const char* fashion_mnist_class_name(Label label) {
  static constexpr const char* names[] = {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                                          "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle boot"};
  KSHOT_CHECK_RANGE(label >= 0 && label < fashion_mnist_num_classes, "kshot::fashion_mnist_class_name()",
                    detail::cat("label ", label, " is outside [0, ", fashion_mnist_num_classes, ")"));
  return names[label];
}

namespace detail {

/// `<directory>/<stem>.gz`, else `<directory>/<stem>` (the other way round without zlib).
inline std::string find_fashion_mnist_file(const std::string& directory, const std::string& stem,
                                           const char* where) {
  const std::string compressed = (std::filesystem::path(directory) / (stem + ".gz")).string();
  const std::string plain = (std::filesystem::path(directory) / stem).string();
#ifdef KSHOT_HAS_ZLIB
  const std::string candidates[] = {compressed, plain};
#else
  const std::string candidates[] = {plain, compressed};
#endif
  for (const std::string& candidate : candidates) {
    std::error_code ec;
    if (std::filesystem::exists(candidate, ec)) return candidate;
  }
  throw_runtime_error(where, cat("neither ", io_quote(compressed), " nor ", io_quote(plain),
                                 " exists; install Debian's dataset-fashion-mnist package or pass the directory "
                                 "that holds the Fashion-MNIST IDX files"));
}

}  // namespace detail

/**
 * @brief Loads one split of Fashion-MNIST (Zalando's 28 x 28 grey-scale product images, 10 classes).
 * @tparam Scalar float or double.
 * @param[in] directory the folder with `train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`,
 * `t10k-images-idx3-ubyte.gz` and `t10k-labels-idx1-ubyte.gz` (or the same names without `.gz`), e.g.
 * fashion_mnist_default_directory().
 * @param[in] split FashionMnistSplit::train (60,000 images) or FashionMnistSplit::test (10,000 images, the
 * `t10k` files).
 * @param[in] scale every pixel is multiplied by it; finite and positive (default 1/255, pixels in [0, 1]).
 * @return features (N x 784), labels (N, in 0..9), height 28 and width 28.
 * @throws std::invalid_argument "kshot::load_fashion_mnist(): ..." when `scale` is not finite and positive.
 * @throws std::runtime_error "kshot::load_fashion_mnist(): ..." when a file is found under neither name, and
 * on every error of load_idx_dataset().
 */
template <class Scalar = float>
LabeledImages<Scalar> load_fashion_mnist(const std::string& directory, FashionMnistSplit split,
                                         Scalar scale = Scalar(1) / Scalar(255)) {
  static_assert(is_supported_scalar_v<Scalar>,
                "kshot::load_fashion_mnist<Scalar>(): Scalar must be float or double");
  constexpr const char* where = "kshot::load_fashion_mnist()";
  detail::check_idx_scale(scale, where);
  const std::string prefix = split == FashionMnistSplit::train ? "train" : "t10k";
  const std::string images = detail::find_fashion_mnist_file(directory, prefix + "-images-idx3-ubyte", where);
  const std::string labels = detail::find_fashion_mnist_file(directory, prefix + "-labels-idx1-ubyte", where);
  return detail::load_idx_dataset_impl(images, labels, scale, where);
}

}  // namespace kshot

#endif  // KSHOT_DATA_IDX_HPP
