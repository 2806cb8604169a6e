/**
 * @file kshot/data/detail/io_messages.hpp
 * @brief Internal: how the file loaders of data/ quote paths, errno values and file bytes in their messages.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_DATA_DETAIL_IO_MESSAGES_HPP
#define KSHOT_DATA_DETAIL_IO_MESSAGES_HPP

#include <cstddef>
#include <cstdint>
#include <string>
#include <system_error>
#include <type_traits>

namespace kshot {
namespace detail {

/// "'path'", the form in which every message names a file.
inline std::string io_quote(const std::string& path) { return "'" + path + "'"; }

/// The message of errno value `err` ("No such file or directory").
inline std::string io_errno_message(int err) {
  return err != 0 ? std::error_code(err, std::generic_category()).message() : std::string("unknown error");
}

/// `text` made printable (newlines as \n, other control bytes as \xNN), cut at ~160 characters, for messages.
inline std::string io_printable(const std::string& text) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (char c : text) {
    if (out.size() >= 160) {
      out += "...";
      break;
    }
    const auto byte = static_cast<unsigned char>(c);
    if (c == '\n')
      out += "\\n";
    else if (byte >= 0x20 && byte < 0x7F)
      out += c;
    else {
      out += "\\x";
      out += digits[byte >> 4];
      out += digits[byte & 0x0F];
    }
  }
  return out;
}

/// "93 4e 55 4d": bytes as lower-case hex pairs.
inline std::string io_hex_bytes(const unsigned char* bytes, std::size_t count) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string text;
  for (std::size_t k = 0; k < count; ++k) {
    if (k > 0) text += ' ';
    text += digits[bytes[k] >> 4];
    text += digits[bytes[k] & 0x0F];
  }
  return text;
}

/// The dtype name kshot uses for a C++ scalar in messages.
template <class T>
const char* npy_requested_name() noexcept {
  if constexpr (std::is_same_v<T, float>)
    return "float32";
  else if constexpr (std::is_same_v<T, double>)
    return "float64";
  else if constexpr (std::is_same_v<T, std::int32_t>)
    return "int32";
  else
    return "unknown";
}

}  // namespace detail
}  // namespace kshot

#endif  // KSHOT_DATA_DETAIL_IO_MESSAGES_HPP
