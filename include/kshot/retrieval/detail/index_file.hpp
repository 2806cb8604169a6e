/**
 * @file kshot/retrieval/detail/index_file.hpp
 * @brief Little-endian, checksummed reading and writing of retrieval index files (FNV-1a 64 over every
 * byte), with messages that name the file and the byte offset.
 *
 * SPDX-License-Identifier: MIT
 */
// IWYU pragma: private, include "kshot/retrieval.hpp"
#ifndef KSHOT_RETRIEVAL_DETAIL_INDEX_FILE_HPP
#define KSHOT_RETRIEVAL_DETAIL_INDEX_FILE_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/types.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <istream>
#include <ostream>
#include <string>
#include <type_traits>
#include <utility>

namespace kshot {
namespace detail {

/// Magic bytes of a retrieval index file.
inline constexpr char index_file_magic[8] = {'K', 'S', 'H', 'O', 'T', 'I', 'X', '1'};
/// The index file format version written (and the only one read).
inline constexpr std::uint32_t index_file_version = 1;

/// Continues a 64-bit FNV-1a hash over n bytes.
inline std::uint64_t index_file_hash(std::uint64_t hash, const unsigned char* bytes, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) {
    hash ^= bytes[i];
    hash *= 0x100000001b3ull;
  }
  return hash;
}

/// FNV-1a 64 offset basis.
inline constexpr std::uint64_t index_file_hash_start = 0xcbf29ce484222325ull;

/// Writes little-endian values, hashing every byte.
class IndexFileWriter {
 public:
  explicit IndexFileWriter(std::ostream& out) : out_(out) {}

  void bytes(const void* data, std::size_t n) {
    hash_ = index_file_hash(hash_, static_cast<const unsigned char*>(data), n);
    out_.write(static_cast<const char*>(data), static_cast<std::streamsize>(n));
  }

  void u32(std::uint32_t v) { unsigned_value(v); }
  void u64(std::uint64_t v) { unsigned_value(v); }

  /// n values of an arithmetic type, each as its little-endian bytes, written in chunks.
  template <class T>
  void values(const T* p, std::size_t n) {
    static_assert(std::is_arithmetic_v<T> && (sizeof(T) == 4 || sizeof(T) == 8), "4- or 8-byte values");
    using Bits = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
    constexpr std::size_t chunk = 1024;
    unsigned char buffer[chunk * sizeof(T)];
    for (std::size_t start = 0; start < n; start += chunk) {
      const std::size_t count = std::min(chunk, n - start);
      for (std::size_t i = 0; i < count; ++i) {
        Bits u;
        std::memcpy(&u, p + start + i, sizeof(T));
        for (std::size_t b = 0; b < sizeof(T); ++b)
          buffer[i * sizeof(T) + b] = static_cast<unsigned char>(u >> (8 * b));
      }
      bytes(buffer, count * sizeof(T));
    }
  }

  /// Appends the hash of everything written so far.
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
  std::uint64_t hash_ = index_file_hash_start;
};

/// Reads little-endian values, hashing every byte; every failure throws std::runtime_error naming the file.
class IndexFileReader {
 public:
  IndexFileReader(std::istream& in, const char* where, std::string name, std::int64_t size)
      : in_(in), where_(where), name_(std::move(name)), size_(size) {}

  [[noreturn]] void fail(const std::string& what) const {
    throw_runtime_error(where_, cat(name_, ": ", what, " (at byte ", offset_, ")"));
  }

  void bytes(void* data, std::size_t n, const char* what) {
    in_.read(static_cast<char*>(data), static_cast<std::streamsize>(n));
    const auto got = static_cast<std::size_t>(in_.gcount());
    if (got != n) {
      offset_ += static_cast<std::int64_t>(got);
      fail(cat("truncated: the file ends inside ", what));
    }
    hash_ = index_file_hash(hash_, static_cast<const unsigned char*>(data), n);
    offset_ += static_cast<std::int64_t>(n);
  }

  std::uint32_t u32(const char* what) { return unsigned_value<std::uint32_t>(what); }
  std::uint64_t u64(const char* what) { return unsigned_value<std::uint64_t>(what); }

  /// Reads n values of an arithmetic type into p, in chunks.
  template <class T>
  void values(T* p, std::size_t n, const char* what) {
    using Bits = std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t>;
    constexpr std::size_t chunk = 1024;
    unsigned char buffer[chunk * sizeof(T)];
    for (std::size_t start = 0; start < n; start += chunk) {
      const std::size_t count = std::min(chunk, n - start);
      bytes(buffer, count * sizeof(T), what);
      for (std::size_t i = 0; i < count; ++i) {
        Bits u = 0;
        for (std::size_t b = 0; b < sizeof(T); ++b)
          u |= static_cast<Bits>(static_cast<Bits>(buffer[i * sizeof(T) + b]) << (8 * b));
        std::memcpy(p + start + i, &u, sizeof(T));
      }
    }
  }

  /// Throws unless n more bytes remain in the file.
  void require(std::uint64_t n, const char* what) const {
    if (n > static_cast<std::uint64_t>(size_ - offset_))
      fail(cat("truncated: ", what, " needs ", n, " bytes but only ", size_ - offset_, " remain"));
  }

  std::uint64_t hash() const noexcept { return hash_; }
  std::int64_t offset() const noexcept { return offset_; }
  std::int64_t size() const noexcept { return size_; }

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
  std::int64_t size_;
  std::int64_t offset_ = 0;
  std::uint64_t hash_ = index_file_hash_start;
};

}  // namespace detail
}  // namespace kshot

#endif  // KSHOT_RETRIEVAL_DETAIL_INDEX_FILE_HPP
