/**
 * @file kshot/data/npy.hpp
 * @brief Reading and writing NumPy `.npy` files as kshot matrices and label vectors, with every header field
 * validated and every error naming the function, the path and what was found.
 *
 * The `.npy` reader checks the whole file before it touches the data: the magic string `\x93NUMPY`, the
 * format version (1.0, 2.0 or 3.0), the header length against the file size, the header dictionary (parsed
 * as the Python literal it is: exactly the keys 'descr', 'fortran_order' and 'shape'), the dtype, and that the
 * file holds exactly `product(shape) * itemsize` bytes after the header. A corrupt header, a truncated file,
 * a wrong dtype or an unexpected memory order throws a std::runtime_error; it never aborts, crashes, reads
 * out of bounds or allocates what a corrupt header claims.
 *
 * Why not `xt::load_npy` / `xt::dump_npy` / `xt::load_csv` (xtensor 0.24.3): `xt::load_npy` throws messages
 * without the path or the dtype found ("Cast error: formats not matching"), misreads 1.0 header lengths whose
 * low byte is >= 0x80 (it sign-extends a char), does not read version 3.0, and reads the data into a buffer
 * that kshot would copy again; `xt::dump_npy` reports no write error; `xt::load_csv` accepts "1.5abc" as 1.5,
 * reports a bad cell without its position, and accepts ragged rows whenever the total cell count equals the
 * number of rows times the length of the last row. kshot's files are plain NumPy format, so they stay
 * interchangeable with xtensor (the tests read kshot's files with `xt::load_npy` and xtensor's with kshot) and
 * with NumPy.
 *
 * Saving writes `<path>.tmp` in the same directory, then renames it onto `<path>`, so a reader never sees a
 * half-written file; on any failure the temporary file is removed.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_DATA_NPY_HPP
#define KSHOT_DATA_NPY_HPP

#include "kshot/core/binary_io.hpp"
#include "kshot/core/check.hpp"
#include "kshot/core/types.hpp"
#include "kshot/data/detail/io_messages.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <ios>
#include <limits>
#include <ostream>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

namespace kshot {

/**
 * @brief The conversions load_npy_matrix() may apply when a file differs from the request; combine with `|`.
 *
 * Without them (NpyConvert::none, the default) the file must hold T itself in C (row-major) order, so that a
 * loaded matrix never silently changes precision or is silently transposed. The byte order needs no flag: a
 * big-endian file ('>f4') is always byte-swapped to the host's order, which is exact.
 */
enum class NpyConvert : unsigned {
  none = 0,           ///< the file's dtype must be T (float32 for float, float64 for double), in C order
  dtype = 1,          ///< convert another numeric dtype (float32/64, int8..int64, uint8..uint64) to T by static_cast
  fortran_order = 2,  ///< transpose a Fortran-ordered (column-major) file into row-major order
  all = 3             ///< both
};

/// Combines two sets of conversions.
constexpr NpyConvert operator|(NpyConvert a, NpyConvert b) noexcept {
  return static_cast<NpyConvert>(static_cast<unsigned>(a) | static_cast<unsigned>(b));
}

/// The conversions present in both sets.
constexpr NpyConvert operator&(NpyConvert a, NpyConvert b) noexcept {
  return static_cast<NpyConvert>(static_cast<unsigned>(a) & static_cast<unsigned>(b));
}

/**
 * @brief What the header of a `.npy` file declares, as read_npy_header() validated it.
 */
struct NpyHeader {
  /// The format version, 1.0, 2.0 or 3.0 (major, minor).
  int major_version = 1;
  /// The minor format version (always 0).
  int minor_version = 0;
  /// The dtype string as written, e.g. "<f4", ">i8", "|u1".
  std::string descr;
  /// '<' little-endian, '>' big-endian, '|' not applicable (one-byte types); '=' in a file becomes the host's.
  char byte_order = '<';
  /// 'f' floating, 'i' signed integer, 'u' unsigned integer, 'b' boolean, 'c' complex.
  char kind = 'f';
  /// The size of one element in bytes.
  std::size_t item_size = 4;
  /// True when the data is in Fortran (column-major) order.
  bool fortran_order = false;
  /// The extents, outermost first; empty for a 0-d array.
  std::vector<Index> shape;
  /// The number of bytes before the data (magic, version, header length, header).
  std::size_t data_offset = 0;
  /// The number of data bytes: product(shape) * item_size.
  std::size_t data_bytes = 0;

  /// The number of elements: the product of `shape` (1 for a 0-d array, 0 when an extent is 0). A header that
  /// read_npy_header() returned never overflows here: an extent of 0 makes the other extents unbounded, so it
  /// answers 0 before multiplying them.
  Index size() const noexcept {
    if (std::find(shape.begin(), shape.end(), Index{0}) != shape.end()) return 0;
    Index count = 1;
    for (Index extent : shape) count *= extent;
    return count;
  }
};

namespace detail {

/// True on a little-endian host.
inline bool host_is_little_endian() noexcept {
  const std::uint16_t probe = 1;
  unsigned char first = 0;
  std::memcpy(&first, &probe, 1);
  return first == 1;
}

/// '<' or '>': the byte order of the host, as a dtype prefix.
inline char host_byte_order() noexcept { return host_is_little_endian() ? '<' : '>'; }

/// "float32", "int64", "uint8", "bool", "complex64", ... for a dtype kind and item size.
inline std::string npy_type_name(char kind, std::size_t item_size) {
  const std::string bits = std::to_string(item_size * 8);
  switch (kind) {
    case 'f':
      return "float" + bits;
    case 'i':
      return "int" + bits;
    case 'u':
      return "uint" + bits;
    case 'c':
      return "complex" + bits;
    case 'b':
      return "bool";
    default:
      return std::string(1, kind) + std::to_string(item_size);
  }
}

/// "<f8 (float64)" or ">f4 (float32, big-endian)": how messages name a file's dtype.
inline std::string npy_describe_dtype(const NpyHeader& header) {
  std::string text = header.descr + " (" + npy_type_name(header.kind, header.item_size);
  if (header.item_size > 1 && header.byte_order == '>') text += ", big-endian";
  return text + ")";
}

/// "(2, 3)", "(5,)" or "()": a shape as NumPy prints it.
inline std::string npy_shape_string(const std::vector<Index>& shape) {
  std::string text = "(";
  for (std::size_t k = 0; k < shape.size(); ++k) {
    if (k > 0) text += ", ";
    text += std::to_string(shape[k]);
  }
  if (shape.size() == 1) text += ",";
  return text + ")";
}

/**
 * @brief Parses the header dictionary of a `.npy` file, a Python literal such as
 * `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`, into `header`.
 *
 * Accepts what NumPy writes (and reads): single- or double-quoted strings, True/False, tuples of non-negative
 * integers (with Python 2's trailing 'L'), a trailing comma, whitespace anywhere. Requires exactly the keys
 * 'descr', 'fortran_order' and 'shape', as NumPy does.
 */
class NpyDictParser {
 public:
  NpyDictParser(const std::string& text, const std::string& path, const char* where)
      : text_(text), path_(path), where_(where) {}

  void parse(NpyHeader& header) {
    bool have_descr = false, have_fortran = false, have_shape = false;
    skip_space();
    expect('{');
    for (;;) {
      skip_space();
      if (peek() == '}') break;
      const std::size_t key_at = pos_;
      if (peek() != '\'' && peek() != '"') fail("expected a quoted key or '}'");
      const std::string key = parse_string();
      skip_space();
      expect(':');
      skip_space();
      if (key == "descr") {
        if (have_descr) fail_at(key_at, "the key 'descr' appears twice");
        if (peek() == '[')
          fail("the value of 'descr' is a list, i.e. a structured dtype; kshot reads simple numeric dtypes only");
        if (peek() != '\'' && peek() != '"') fail("the value of 'descr' must be a string such as '<f4'");
        header.descr = parse_string();
        have_descr = true;
      } else if (key == "fortran_order") {
        if (have_fortran) fail_at(key_at, "the key 'fortran_order' appears twice");
        header.fortran_order = parse_bool("fortran_order");
        have_fortran = true;
      } else if (key == "shape") {
        if (have_shape) fail_at(key_at, "the key 'shape' appears twice");
        header.shape = parse_shape();
        have_shape = true;
      } else {
        fail_at(key_at, cat("unexpected key '", key,
                            "' (a .npy header has exactly 'descr', 'fortran_order' and "
                            "'shape')"));
      }
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() != '}') fail("expected ',' or '}' after the value");
    }
    ++pos_;  // '}'
    skip_space();
    if (pos_ != text_.size()) fail("unexpected text after the closing '}'");
    if (!have_descr) missing("descr");
    if (!have_fortran) missing("fortran_order");
    if (!have_shape) missing("shape");
  }

 private:
  char peek() const noexcept { return pos_ < text_.size() ? text_[pos_] : '\0'; }

  void skip_space() noexcept {
    while (pos_ < text_.size() &&
           (text_[pos_] == ' ' || text_[pos_] == '\t' || text_[pos_] == '\n' || text_[pos_] == '\r'))
      ++pos_;
  }

  void expect(char c) {
    if (peek() != c) fail(cat("expected '", c, "'"));
    ++pos_;
  }

  std::string parse_string() {
    const char quote = text_[pos_++];
    std::string value;
    for (;;) {
      if (pos_ >= text_.size() || text_[pos_] == '\n') fail("unterminated string");
      const char c = text_[pos_++];
      if (c == quote) break;
      if (c == '\\') {
        if (pos_ >= text_.size()) fail("unterminated string");
        value += text_[pos_++];
      } else {
        value += c;
      }
    }
    return value;
  }

  bool parse_bool(const char* key) {
    const std::size_t start = pos_;
    while (pos_ < text_.size() && std::isalpha(static_cast<unsigned char>(text_[pos_])) != 0) ++pos_;
    const std::string word = text_.substr(start, pos_ - start);
    if (word == "True") return true;
    if (word == "False") return false;
    pos_ = start;
    fail(cat("the value of '", key, "' must be True or False"));
  }

  std::vector<Index> parse_shape() {
    if (peek() != '(') fail("the value of 'shape' must be a tuple such as (2, 3)");
    ++pos_;
    std::vector<Index> shape;
    for (;;) {
      skip_space();
      if (peek() == ')') break;
      if (peek() == '-') fail("the shape has a negative extent");
      if (std::isdigit(static_cast<unsigned char>(peek())) == 0) fail("expected a non-negative integer in 'shape'");
      std::uint64_t value = 0;
      while (std::isdigit(static_cast<unsigned char>(peek())) != 0) {
        const auto digit = static_cast<std::uint64_t>(peek() - '0');
        if (value > (static_cast<std::uint64_t>(std::numeric_limits<Index>::max()) - digit) / 10)
          fail("an extent in 'shape' is too large");
        value = value * 10 + digit;
        ++pos_;
      }
      if (peek() == 'L' || peek() == 'l') ++pos_;  // Python 2 long literal
      shape.push_back(static_cast<Index>(value));
      skip_space();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() != ')') fail("expected ',' or ')' in 'shape'");
    }
    ++pos_;  // ')'
    return shape;
  }

  [[noreturn]] void missing(const char* key) const {
    throw_runtime_error(
        where_, cat(io_quote(path_), ": the .npy header has no '", key, "' key (header: ", io_printable(text_), ")"));
  }

  [[noreturn]] void fail(const std::string& what) const { fail_at(pos_, what); }

  [[noreturn]] void fail_at(std::size_t at, const std::string& what) const {
    throw_runtime_error(where_, cat(io_quote(path_), ": unparsable .npy header: ", what, " at character ", at,
                                    " (header: ", io_printable(text_), ")"));
  }

  const std::string& text_;
  const std::string& path_;
  const char* where_;
  std::size_t pos_ = 0;
};

/// Fills byte_order, kind and item_size from header.descr; throws for dtypes kshot cannot read.
inline void npy_parse_descr(NpyHeader& header, const std::string& path, const char* where) {
  const std::string& descr = header.descr;
  auto unsupported = [&](const char* why) {
    throw_runtime_error(where, cat(io_quote(path), ": unsupported dtype '", descr, "' in the .npy header: ", why));
  };
  std::size_t pos = 0;
  char order = '=';
  if (!descr.empty() && (descr[0] == '<' || descr[0] == '>' || descr[0] == '|' || descr[0] == '='))
    order = descr[pos++];
  if (pos >= descr.size()) unsupported("no type code");
  const char kind = descr[pos++];
  if (std::strchr("biufc", kind) == nullptr)
    unsupported("kshot reads boolean, integer, floating-point and complex dtypes only");
  if (pos >= descr.size() || pos + 2 < descr.size()) unsupported("expected a type code and a size, such as '<f4'");
  std::size_t size = 0;
  for (; pos < descr.size(); ++pos) {
    if (std::isdigit(static_cast<unsigned char>(descr[pos])) == 0)
      unsupported("expected a type code and a size, such as '<f4'");
    size = size * 10 + static_cast<std::size_t>(descr[pos] - '0');
  }
  const bool valid_size = kind == 'b'   ? size == 1
                          : kind == 'c' ? (size == 8 || size == 16)
                          : kind == 'f' ? (size == 2 || size == 4 || size == 8)
                                        : (size == 1 || size == 2 || size == 4 || size == 8);
  if (!valid_size) unsupported("no such size for this type code");
  if (order == '=') order = size == 1 ? '|' : host_byte_order();
  if (order == '|' && size > 1) unsupported("byte order '|' (not applicable) on a multi-byte type");
  header.byte_order = order;
  header.kind = kind;
  header.item_size = size;
}

/// An open `.npy` file whose header has been read and validated; the stream is positioned at the data.
class NpyInput {
 public:
  /**
   * @throws std::runtime_error "<where>: '<path>': ..." for a missing file, a directory, an unreadable file,
   * a wrong magic string, an unsupported version, a header length past the end of the file, an unparsable or
   * incomplete header dictionary, an unsupported dtype, and a data size that differs from the file's.
   */
  NpyInput(const std::string& path, const char* where) : path_(path), where_(where) {
    std::error_code ec;
    const std::filesystem::file_status status = std::filesystem::status(path, ec);
    if (status.type() == std::filesystem::file_type::not_found) fail("cannot open the file: it does not exist");
    if (status.type() == std::filesystem::file_type::directory) fail("cannot open the file: it is a directory");
    errno = 0;
    in_.open(path, std::ios::binary);
    if (!in_) {
      const int err = errno;
      fail(cat("cannot open the file: ", io_errno_message(err)));
    }
    in_.seekg(0, std::ios::end);
    const std::streamoff end = in_.tellg();
    in_.seekg(0, std::ios::beg);
    if (end < 0 || !in_) fail("cannot determine the size of the file");
    const auto file_size = static_cast<std::uint64_t>(end);

    unsigned char preamble[8] = {};
    const std::size_t got = read_some(preamble, 8);
    static constexpr unsigned char magic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
    if (got == 0) fail("not a .npy file: the file is empty");
    if (std::memcmp(preamble, magic, std::min<std::size_t>(got, 6)) != 0 || got < 6)
      fail(cat("not a .npy file: it starts with ", io_hex_bytes(preamble, std::min<std::size_t>(got, 6)),
               " instead of the magic string 93 4e 55 4d 50 59 (\"\\x93NUMPY\")"));
    if (got < 8) fail(cat("the file ends inside the format version (the file has ", file_size, " bytes)"));
    header_.major_version = preamble[6];
    header_.minor_version = preamble[7];
    if (header_.minor_version != 0 || header_.major_version < 1 || header_.major_version > 3)
      fail(cat("unsupported .npy format version ", header_.major_version, ".", header_.minor_version,
               " (kshot reads versions 1.0, 2.0 and 3.0)"));

    // Version 1.0 stores the header length in 2 little-endian bytes, 2.0 and 3.0 in 4.
    const std::size_t length_bytes = header_.major_version == 1 ? 2 : 4;
    unsigned char length_field[4] = {};
    if (read_some(length_field, length_bytes) != length_bytes)
      fail(cat("the file ends inside the header-length field (the file has ", file_size, " bytes)"));
    std::uint64_t header_length = 0;
    for (std::size_t k = length_bytes; k-- > 0;) header_length = (header_length << 8) | length_field[k];
    const std::uint64_t data_offset = 8 + length_bytes + header_length;
    if (data_offset > file_size)
      fail(cat("the header length (", header_length,
               " bytes) runs past the end of the file: the header would end "
               "at byte ",
               data_offset, " but the file has ", file_size, " bytes"));

    std::string text(static_cast<std::size_t>(header_length), '\0');
    if (read_some(reinterpret_cast<unsigned char*>(&text[0]), text.size()) != text.size())
      fail("read error inside the header");
    NpyDictParser(text, path_, where_).parse(header_);
    npy_parse_descr(header_, path_, where_);
    header_.data_offset = static_cast<std::size_t>(data_offset);

    // product(shape) * item_size, refusing overflow, then the exact size check.
    std::uint64_t count = 1;
    bool overflow = false;
    for (Index extent : header_.shape) {
      const auto e = static_cast<std::uint64_t>(extent);
      if (e != 0 && count > std::numeric_limits<std::uint64_t>::max() / e)
        overflow = true;
      else
        count *= e;
    }
    if (overflow || count > std::numeric_limits<std::uint64_t>::max() / header_.item_size ||
        count > static_cast<std::uint64_t>(std::numeric_limits<Index>::max()))
      fail(cat("the shape ", npy_shape_string(header_.shape), " is too large"));
    const std::uint64_t data_bytes = count * header_.item_size;
    const std::uint64_t available = file_size - data_offset;
    const std::string declared = cat("shape ", npy_shape_string(header_.shape), " of ", npy_describe_dtype(header_),
                                     " = ", data_bytes, " data bytes after the ", data_offset, "-byte header");
    if (available < data_bytes)
      fail(cat("truncated data: the header declares ", declared, ", but the file has only ", available));
    if (available > data_bytes)
      fail(cat("trailing bytes: the header declares ", declared, ", but the file has ", available, " (",
               available - data_bytes, " too many)"));
    if (data_bytes > static_cast<std::uint64_t>(std::numeric_limits<std::size_t>::max()))
      fail(cat("the data (", data_bytes, " bytes) does not fit in memory on this platform"));
    header_.data_bytes = static_cast<std::size_t>(data_bytes);
  }

  const NpyHeader& header() const noexcept { return header_; }

  /// Reads the whole data block into dst (header().data_bytes bytes).
  void read_data(void* dst) {
    if (read_some(static_cast<unsigned char*>(dst), header_.data_bytes) != header_.data_bytes)
      fail(cat("read error: could not read the ", header_.data_bytes, " data bytes"));
  }

  /// True when the elements must be byte-swapped to host order.
  bool needs_swap() const noexcept { return header_.item_size > 1 && header_.byte_order != host_byte_order(); }

  [[noreturn]] void fail(const std::string& what) const {
    throw_runtime_error(where_, cat(io_quote(path_), ": ", what));
  }

 private:
  std::size_t read_some(unsigned char* dst, std::size_t n) {
    std::size_t done = 0;
    // Chunks keep each count within std::streamsize on every platform.
    constexpr std::size_t chunk = std::size_t{1} << 30;
    while (done < n) {
      const std::size_t want = std::min(chunk, n - done);
      in_.read(reinterpret_cast<char*>(dst + done), static_cast<std::streamsize>(want));
      const auto got = static_cast<std::size_t>(in_.gcount());
      done += got;
      if (got != want) break;
    }
    return done;
  }

  std::ifstream in_;
  std::string path_;
  const char* where_;
  NpyHeader header_;
};

/// Loads one element of type Stored from p, byte-swapping it when `swap`.
template <class Stored>
Stored npy_load(const unsigned char* p, bool swap) noexcept {
  unsigned char bytes[sizeof(Stored)];
  std::memcpy(bytes, p, sizeof(Stored));
  if (swap) std::reverse(bytes, bytes + sizeof(Stored));
  Stored value;
  std::memcpy(&value, bytes, sizeof(Stored));
  return value;
}

/// Carries a type through a generic lambda.
template <class T>
struct NpyTag {
  using type = T;
};

/// Calls f(NpyTag<Stored>{}) for the C++ type of a numeric dtype (float16, bool and complex excluded).
template <class F>
bool npy_visit_numeric(char kind, std::size_t size, F&& f) {
  if (kind == 'f' && size == 4)
    f(NpyTag<float>{});
  else if (kind == 'f' && size == 8)
    f(NpyTag<double>{});
  else if (kind == 'i' && size == 1)
    f(NpyTag<std::int8_t>{});
  else if (kind == 'i' && size == 2)
    f(NpyTag<std::int16_t>{});
  else if (kind == 'i' && size == 4)
    f(NpyTag<std::int32_t>{});
  else if (kind == 'i' && size == 8)
    f(NpyTag<std::int64_t>{});
  else if (kind == 'u' && size == 1)
    f(NpyTag<std::uint8_t>{});
  else if (kind == 'u' && size == 2)
    f(NpyTag<std::uint16_t>{});
  else if (kind == 'u' && size == 4)
    f(NpyTag<std::uint32_t>{});
  else if (kind == 'u' && size == 8)
    f(NpyTag<std::uint64_t>{});
  else
    return false;
  return true;
}

/// The `.npy` header for `descr` and `shape`: version 1.0 (2.0 when longer than 65535 bytes), padded with spaces
/// and a newline so that the data starts at a multiple of 64 bytes, as NumPy writes it.
inline std::string npy_make_header(const std::string& descr, const std::vector<Index>& shape) {
  std::string dict = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + npy_shape_string(shape) + ", }";
  // The header length counts the dictionary, the padding and the final newline.
  auto padded_length = [&](std::size_t preamble) { return (preamble + dict.size() + 1 + 63) / 64 * 64 - preamble; };
  const bool version1 = padded_length(10) <= 65535;
  const std::size_t length = padded_length(version1 ? 10 : 12);
  dict.append(length - dict.size() - 1, ' ');
  dict += '\n';
  std::string out("\x93NUMPY", 6);
  out += static_cast<char>(version1 ? 1 : 2);
  out += '\0';
  for (std::size_t k = 0; k < (version1 ? 2u : 4u); ++k) out += static_cast<char>((length >> (8 * k)) & 0xFFu);
  return out + dict;
}

/// Writes the header `head` then `bytes` bytes at `data`, atomically (core's write_file_atomically()).
inline void npy_write(const std::string& path, const char* where, const std::string& head, const void* data,
                      std::size_t bytes) {
  write_file_atomically(path, where, [&](std::ostream& out) {
    out.write(head.data(), static_cast<std::streamsize>(head.size()));
    if (bytes > 0) out.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
  });
}

}  // namespace detail

/**
 * @brief Reads and validates the header of a `.npy` file without reading its data.
 * @param[in] path the file.
 * @return the version, dtype, memory order, shape, data offset and data size.
 * @throws std::runtime_error "kshot::read_npy_header(): '<path>': ..." when the file does not exist, is a
 * directory or cannot be opened; does not start with the magic string "\x93NUMPY" (the bytes found are
 * shown); has a version other than 1.0, 2.0 or 3.0; has a header length that runs past the end of the file;
 * has a header dictionary that does not parse, lacks 'descr', 'fortran_order' or 'shape', or has other keys
 * (the header text is shown); declares a dtype other than a boolean, integer, floating or complex scalar
 * type (structured and string dtypes included); or holds fewer ("truncated data") or more ("trailing bytes")
 * data bytes than product(shape) * itemsize (both counts are shown).
 */
inline NpyHeader read_npy_header(const std::string& path) {
  return detail::NpyInput(path, "kshot::read_npy_header()").header();
}

/**
 * @brief Loads a 2-D `.npy` file (float32 or float64, as NumPy's `np.save` writes it) as a row-major matrix.
 * @tparam T float or double.
 * @param[in] path the file.
 * @param[in] convert the conversions allowed (default NpyConvert::none: the file must hold T, in C order).
 * NpyConvert::dtype converts float32, float64 and integer files to T with static_cast (float64 to float32
 * rounds; integers beyond 2^24 (float) or 2^53 (double) round). NpyConvert::fortran_order transposes a
 * Fortran-ordered file into row-major order. Big-endian files are always byte-swapped, which is exact.
 * @return a `shape[0] x shape[1]` matrix.
 * @throws std::runtime_error "kshot::load_npy_matrix(): '<path>': ..." on every error of read_npy_header();
 * when the array is not 2-D (its shape is shown); when the dtype is not T and `convert` lacks
 * NpyConvert::dtype ("'<path>' holds <f8 (float64) but float32 was requested; ..."); when the dtype is not
 * float32, float64 or an integer type even with NpyConvert::dtype; when the file is Fortran-ordered, has more
 * than one row and more than one column, and `convert` lacks NpyConvert::fortran_order; and on a read error.
 * @note Reads the file once. When the file holds T in C order (the common case) the data is read straight
 * into the returned matrix, with no other allocation.
 */
template <class T>
RowMatrixX<T> load_npy_matrix(const std::string& path, NpyConvert convert = NpyConvert::none) {
  static_assert(is_supported_scalar_v<T>, "kshot::load_npy_matrix<T>(): T must be float or double");
  detail::NpyInput file(path, "kshot::load_npy_matrix()");
  const NpyHeader& header = file.header();
  if (header.shape.size() != 2)
    file.fail(detail::cat("expected a 2-D array, but the file holds a ", header.shape.size(), "-D array of shape ",
                          detail::npy_shape_string(header.shape),
                          header.shape.size() == 1 ? "; reshape it to (n, 1) or (1, n) in NumPy" : ""));
  const Index rows = header.shape[0], cols = header.shape[1];
  const bool exact = header.kind == 'f' && header.item_size == sizeof(T);
  const bool convertible =
      header.kind == 'f' ? header.item_size == 4 || header.item_size == 8 : header.kind == 'i' || header.kind == 'u';
  if (!exact && (convert & NpyConvert::dtype) == NpyConvert::none)
    file.fail(detail::cat("the file holds ", detail::npy_describe_dtype(header), " but ",
                          detail::npy_requested_name<T>(), " was requested",
                          convertible ? "; pass kshot::NpyConvert::dtype to convert it" : ""));
  if (!exact && !convertible)
    file.fail(detail::cat("the file holds ", detail::npy_describe_dtype(header), ", which kshot cannot convert to ",
                          detail::npy_requested_name<T>(), " (it converts float32, float64 and integer dtypes)"));
  // With one row or one column, C and Fortran order are the same bytes.
  const bool transpose = header.fortran_order && rows > 1 && cols > 1;
  if (transpose && (convert & NpyConvert::fortran_order) == NpyConvert::none)
    file.fail(detail::cat("the array is in Fortran (column-major) order (fortran_order: True, shape ",
                          detail::npy_shape_string(header.shape),
                          "); pass kshot::NpyConvert::fortran_order to transpose it into row-major order"));

  RowMatrixX<T> matrix(rows, cols);
  const bool swap = file.needs_swap();
  if (exact && !swap && !transpose) {
    file.read_data(matrix.data());
    return matrix;
  }
  std::vector<unsigned char> raw(header.data_bytes);
  file.read_data(raw.data());
  const unsigned char* in = raw.data();
  detail::npy_visit_numeric(header.kind, header.item_size, [&](auto tag) {
    using Stored = typename decltype(tag)::type;
    std::size_t k = 0;
    if (transpose) {
      for (Index j = 0; j < cols; ++j)
        for (Index i = 0; i < rows; ++i, ++k)
          matrix(i, j) = static_cast<T>(detail::npy_load<Stored>(in + k * sizeof(Stored), swap));
    } else {
      T* out = matrix.data();
      const auto count = static_cast<std::size_t>(matrix.size());
      for (; k < count; ++k) out[k] = static_cast<T>(detail::npy_load<Stored>(in + k * sizeof(Stored), swap));
    }
  });
  return matrix;
}

/**
 * @brief Loads a 1-D `.npy` file of integers (any signed or unsigned width, either byte order) as labels.
 * @param[in] path the file, e.g. written by `np.save(path, labels)` with an int64 or uint8 array.
 * @return the labels, unchanged (no remapping to 0..C-1).
 * @throws std::runtime_error "kshot::load_npy_labels(): '<path>': ..." on every error of read_npy_header();
 * when the array is not 1-D; when the dtype is not an integer type ("labels must be integers, but the file
 * holds <f4 (float32)"); and when a value lies outside the int32 range of `Label` (its index and value are
 * shown).
 * @note An int32 file in host byte order is read straight into the result; other widths are converted with a
 * range check.
 */
inline LabelVector load_npy_labels(const std::string& path) {
  detail::NpyInput file(path, "kshot::load_npy_labels()");
  const NpyHeader& header = file.header();
  if (header.shape.size() != 1)
    file.fail(detail::cat("expected a 1-D array of labels, but the file holds a ", header.shape.size(),
                          "-D array of shape ", detail::npy_shape_string(header.shape)));
  if (header.kind != 'i' && header.kind != 'u')
    file.fail(detail::cat("labels must be integers, but the file holds ", detail::npy_describe_dtype(header)));
  LabelVector labels(header.shape[0]);
  const bool swap = file.needs_swap();
  if (header.kind == 'i' && header.item_size == sizeof(Label) && !swap) {
    file.read_data(labels.data());
    return labels;
  }
  std::vector<unsigned char> raw(header.data_bytes);
  file.read_data(raw.data());
  detail::npy_visit_numeric(header.kind, header.item_size, [&](auto tag) {
    using Stored = typename decltype(tag)::type;
    if constexpr (std::is_integral_v<Stored>) {
      for (Index i = 0; i < labels.size(); ++i) {
        const Stored value = detail::npy_load<Stored>(raw.data() + static_cast<std::size_t>(i) * sizeof(Stored), swap);
        // Compare only where Stored can exceed Label (the other comparisons are always true).
        bool fits = true;
        if constexpr (std::is_signed_v<Stored> && sizeof(Stored) > sizeof(Label))
          fits = value >= std::numeric_limits<Label>::min() && value <= std::numeric_limits<Label>::max();
        else if constexpr (std::is_unsigned_v<Stored> && sizeof(Stored) >= sizeof(Label))
          fits = value <= static_cast<Stored>(std::numeric_limits<Label>::max());
        if (!fits)
          file.fail(detail::cat("element ", i, " is ", +value, ", outside the int32 range of labels [",
                                std::numeric_limits<Label>::min(), ", ", std::numeric_limits<Label>::max(), "]"));
        labels[i] = static_cast<Label>(value);
      }
    }
  });
  return labels;
}

/**
 * @brief Saves a matrix or a vector as a `.npy` file (format 1.0, C order, host byte order) that NumPy,
 * PyTorch and `xt::load_npy` read.
 *
 * A type that is a vector at compile time (`LabelVector`, `VectorX<T>`, `RowVectorX<T>`) is saved 1-D, shape
 * (n,); any other matrix is saved 2-D, shape (rows, cols), even with one row or column.
 *
 * @tparam Derived an Eigen matrix, vector, Map, Ref, block or expression of float (saved as float32, '<f4'),
 * double (float64, '<f8') or std::int32_t (int32, '<i4', as for labels).
 * @param[in] path the file to create or replace.
 * @param[in] array the values. Contiguous row-major storage is written directly; anything else (a column-major
 * matrix, a strided block, an expression) is first copied into a row-major matrix.
 * @throws std::runtime_error "kshot::save_npy(): '<path>': ..." when `<path>.tmp` cannot be created (e.g. the
 * directory does not exist), written, flushed or closed, or cannot be renamed onto `path` (e.g. `path` is a
 * directory). The temporary file is removed in every error case and `path` is left untouched.
 * @note Writes `<path>.tmp` in the same directory, then renames it onto `path` (atomic on POSIX file systems),
 * so readers never see a half-written file. It does not fsync: after a power loss the new file may be empty.
 * Two concurrent saves to the same path race on the temporary file.
 */
template <class Derived>
void save_npy(const std::string& path, const Eigen::MatrixBase<Derived>& array) {
  using Scalar = typename Derived::Scalar;
  static_assert(std::is_same_v<Scalar, float> || std::is_same_v<Scalar, double> || std::is_same_v<Scalar, std::int32_t>,
                "kshot::save_npy(): the scalar type must be float, double or std::int32_t (kshot::Label)");
  constexpr const char* where = "kshot::save_npy()";
  constexpr bool is_vector = Derived::IsVectorAtCompileTime;
  const std::vector<Index> shape =
      is_vector ? std::vector<Index>{array.size()} : std::vector<Index>{array.rows(), array.cols()};
  const char kind = std::is_floating_point_v<Scalar> ? 'f' : 'i';
  const std::string descr = std::string(1, detail::host_byte_order()) + kind + std::to_string(sizeof(Scalar));
  const std::string head = detail::npy_make_header(descr, shape);
  const auto bytes = static_cast<std::size_t>(array.size()) * sizeof(Scalar);

  constexpr bool direct = (int(Eigen::internal::traits<Derived>::Flags) & Eigen::DirectAccessBit) != 0 &&
                          (is_vector || Derived::IsRowMajor);
  if constexpr (direct) {
    const Derived& d = array.derived();
    const bool contiguous =
        array.size() <= 1 || (d.innerStride() == 1 && (is_vector || d.rows() <= 1 || d.outerStride() == d.cols()));
    if (contiguous) {
      detail::npy_write(path, where, head, d.data(), bytes);
      return;
    }
  }
  const RowMatrixX<Scalar> copy = array;
  detail::npy_write(path, where, head, copy.data(), bytes);
}

}  // namespace kshot

#endif  // KSHOT_DATA_NPY_HPP
