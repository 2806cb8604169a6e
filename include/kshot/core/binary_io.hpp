/**
 * @file kshot/core/binary_io.hpp
 * @brief Little-endian, checksummed binary reading and writing (FNV-1a 64 over every byte) shared by kshot's
 * file formats (models: nn/serialize.hpp; retrieval indexes: retrieval/detail/index_file.hpp), with read errors
 * that name the source and the byte offset.
 *
 * SPDX-License-Identifier: MIT
 */
// IWYU pragma: private
#ifndef KSHOT_CORE_BINARY_IO_HPP
#define KSHOT_CORE_BINARY_IO_HPP

#include "kshot/core/check.hpp"

#include <algorithm>
#include <cstdint>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <istream>
#include <ostream>
#include <string>
#include <system_error>
#include <type_traits>
#include <utility>

namespace kshot {
namespace detail {

/// FNV-1a, 64 bits: offset basis and prime.
inline constexpr std::uint64_t fnv_offset = 0xcbf29ce484222325ull;
inline constexpr std::uint64_t fnv_prime = 0x100000001b3ull;

/// Continues an FNV-1a 64 hash over n bytes.
inline std::uint64_t fnv1a(std::uint64_t hash, const unsigned char* bytes, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) {
    hash ^= bytes[i];
    hash *= fnv_prime;
  }
  return hash;
}

/// Writes little-endian numbers to a stream while hashing every byte written.
class BinaryWriter {
 public:
  explicit BinaryWriter(std::ostream& out) : out_(out) {}

  void bytes(const void* data, std::size_t n) {
    hash_ = fnv1a(hash_, static_cast<const unsigned char*>(data), n);
    out_.write(static_cast<const char*>(data), static_cast<std::streamsize>(n));
  }
  void u32(std::uint32_t v) { unsigned_value(v); }
  void u64(std::uint64_t v) { unsigned_value(v); }
  void f64(double v) {
    std::uint64_t u;
    std::memcpy(&u, &v, 8);
    u64(u);
  }

  /// n values of a 4- or 8-byte arithmetic type, each as its little-endian bytes, written in chunks.
  template <class T>
  void values(const T* p, std::size_t n) {
    static_assert(std::is_arithmetic_v<T> && (sizeof(T) == 4 || sizeof(T) == 8), "4- or 8-byte values");
    using Bits = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
    constexpr std::size_t chunk = 512;
    unsigned char buffer[chunk * sizeof(T)];
    for (std::size_t start = 0; start < n; start += chunk) {
      const std::size_t count = std::min(chunk, n - start);
      for (std::size_t i = 0; i < count; ++i) {
        Bits u;
        std::memcpy(&u, p + start + i, sizeof(T));
        for (std::size_t b = 0; b < sizeof(T); ++b) buffer[i * sizeof(T) + b] = static_cast<unsigned char>(u >> (8 * b));
      }
      bytes(buffer, count * sizeof(T));
    }
  }

  /// Appends the checksum of every byte written before it.
  void finish() {
    const std::uint64_t h = hash_;
    u64(h);
  }

 private:
  template <class U>
  void unsigned_value(U v) {
    unsigned char b[sizeof(U)];
    for (std::size_t i = 0; i < sizeof(U); ++i) b[i] = static_cast<unsigned char>(v >> (8 * i));
    bytes(b, sizeof(U));
  }

  std::ostream& out_;
  std::uint64_t hash_ = fnv_offset;
};

/**
 * @brief Reads little-endian numbers from a stream, hashing every byte read; every failure throws
 * std::runtime_error "<where>: <name>: <what> (at byte <offset>)".
 */
class BinaryReader {
 public:
  /// `limit`: bytes the source holds from here (files), or -1 when unknown (streams).
  BinaryReader(std::istream& in, const char* where, std::string name, std::int64_t limit)
      : in_(in), where_(where), name_(std::move(name)), limit_(limit) {}

  [[noreturn]] void fail(const std::string& what) const {
    throw_runtime_error(where_, cat(name_, ": ", what, " (at byte ", offset_, ")"));
  }

  void bytes(void* data, std::size_t n, const char* what) {
    in_.read(static_cast<char*>(data), static_cast<std::streamsize>(n));
    const auto got = static_cast<std::size_t>(in_.gcount());
    if (got != n) {
      offset_ += static_cast<std::int64_t>(got);
      fail(cat("truncated: the data ends inside ", what));
    }
    hash_ = fnv1a(hash_, static_cast<const unsigned char*>(data), n);
    offset_ += static_cast<std::int64_t>(n);
  }
  std::uint32_t u32(const char* what) { return unsigned_value<std::uint32_t>(what); }
  std::uint64_t u64(const char* what) { return unsigned_value<std::uint64_t>(what); }
  double f64(const char* what) {
    const std::uint64_t u = u64(what);
    double v;
    std::memcpy(&v, &u, 8);
    return v;
  }

  /// Reads n values of a 4- or 8-byte arithmetic type into p, in chunks.
  template <class T>
  void values(T* p, std::size_t n, const char* what) {
    static_assert(std::is_arithmetic_v<T> && (sizeof(T) == 4 || sizeof(T) == 8), "4- or 8-byte values");
    using Bits = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
    constexpr std::size_t chunk = 512;
    unsigned char buffer[chunk * sizeof(T)];
    for (std::size_t start = 0; start < n; start += chunk) {
      const std::size_t count = std::min(chunk, n - start);
      bytes(buffer, count * sizeof(T), what);
      for (std::size_t i = 0; i < count; ++i) {
        Bits u = 0;
        for (std::size_t b = 0; b < sizeof(T); ++b)
          u = static_cast<Bits>(u | (static_cast<Bits>(buffer[i * sizeof(T) + b]) << (8 * b)));
        std::memcpy(p + start + i, &u, sizeof(T));
      }
    }
  }

  /// Throws unless n more bytes can still be in the source (sources of known size only).
  void require_available(std::uint64_t n, const char* what) const {
    if (limit_ >= 0 && n > static_cast<std::uint64_t>(limit_ - offset_))
      fail(cat("truncated: ", what, " needs ", n, " bytes but only ", limit_ - offset_, " remain"));
  }

  std::uint64_t hash() const noexcept { return hash_; }
  std::int64_t offset() const noexcept { return offset_; }
  /// The source's size in bytes from where reading started (-1: unknown).
  std::int64_t limit() const noexcept { return limit_; }
  const std::string& name() const noexcept { return name_; }

 private:
  template <class U>
  U unsigned_value(const char* what) {
    unsigned char b[sizeof(U)];
    bytes(b, sizeof(U), what);
    U v = 0;
    for (std::size_t i = 0; i < sizeof(U); ++i) v = static_cast<U>(v | (static_cast<U>(b[i]) << (8 * i)));
    return v;
  }

  std::istream& in_;
  const char* where_;
  std::string name_;
  std::int64_t limit_;
  std::int64_t offset_ = 0;
  std::uint64_t hash_ = fnv_offset;
};

/**
 * @brief Writes a file through `path + ".tmp"`, renamed over `path` at the end, so that a failure never leaves a
 * half-written file: write(out) fills the temporary (an std::ostream in binary mode); on any failure the temporary is
 * removed and std::runtime_error "<where>: '<path>': ..." names what failed (open, write, rename). An exception
 * thrown by write() removes the temporary too, and propagates.
 */
template <class Write>
void write_file_atomically(const std::string& path, const char* where, Write&& write) {
  const std::string tmp = path + ".tmp";
  // ": No such file or directory" when the failed call set errno, nothing otherwise.
  auto reason = [](int err) {
    return err != 0 ? ": " + std::error_code(err, std::generic_category()).message() : std::string();
  };
  {
    errno = 0;
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) {
      const int err = errno;
      throw_runtime_error(where, cat("'", path, "': cannot create the temporary file '", tmp, "'", reason(err)));
    }
    try {
      write(static_cast<std::ostream&>(out));
    } catch (...) {
      out.close();
      std::remove(tmp.c_str());
      throw;
    }
    errno = 0;
    out.flush();
    out.close();
    if (!out) {
      const int err = errno;
      std::remove(tmp.c_str());
      throw_runtime_error(where, cat("'", path, "': writing the temporary file '", tmp, "' failed", reason(err)));
    }
  }
  errno = 0;
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    std::remove(tmp.c_str());
    throw_runtime_error(where, cat("'", path, "': cannot rename '", tmp, "' onto it", reason(err)));
  }
}

}  // namespace detail
}  // namespace kshot

#endif  // KSHOT_CORE_BINARY_IO_HPP
