/**
 * @file kshot/data/csv.hpp
 * @brief Reading numeric `.csv` files as kshot matrices, locale-independent, with every error naming the
 * function, the path, the line and the column.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_DATA_CSV_HPP
#define KSHOT_DATA_CSV_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/types.hpp"
#include "kshot/data/detail/io_messages.hpp"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstddef>
#include <filesystem>
#include <fstream>
#include <ios>
#include <limits>
#include <string>
#include <system_error>
#include <vector>

#if defined(__has_include)
#if __has_include(<charconv>)
#include <charconv>
#endif
#endif
#if !defined(__cpp_lib_to_chars) || __cpp_lib_to_chars < 201611L
#include <locale>
#include <sstream>
#endif

namespace kshot {
namespace detail {

/// True for delimiters that cannot be part of a number, a comment or a line break.
inline bool csv_valid_delimiter(char delimiter) noexcept {
  const auto byte = static_cast<unsigned char>(delimiter);
  return delimiter != '\0' && delimiter != '\n' && delimiter != '\r' && delimiter != '#' && delimiter != '"' &&
         delimiter != '+' && delimiter != '-' && delimiter != '.' && std::isalnum(byte) == 0;
}

/// How a CSV cell failed to parse.
enum class CsvParse { ok, empty, invalid, out_of_range };

/// Parses a whole trimmed cell as T (locale-independent); underflow gives a signed zero, as NumPy does.
template <class T>
CsvParse csv_parse_cell(const char* first, const char* last, T& value) {
  if (first == last) return CsvParse::empty;
  const bool negative_exponent = [&] {
    for (const char* p = first; p + 1 < last; ++p)
      if ((*p == 'e' || *p == 'E') && p[1] == '-') return true;
    return false;
  }();
  if (*first == '+' && last - first > 1 && (std::isdigit(static_cast<unsigned char>(first[1])) != 0 || first[1] == '.'))
    ++first;  // from_chars refuses a leading '+', NumPy accepts it
#if defined(__cpp_lib_to_chars) && __cpp_lib_to_chars >= 201611L
  const std::from_chars_result result = std::from_chars(first, last, value);
  if (result.ec == std::errc::invalid_argument || result.ptr != last) return CsvParse::invalid;
  if (result.ec == std::errc::result_out_of_range) {
    if (!negative_exponent) return CsvParse::out_of_range;
    value = *first == '-' ? -T(0) : T(0);
  }
  return CsvParse::ok;
#else
  std::istringstream in(std::string(first, last));
  in.imbue(std::locale::classic());
  in >> value;
  if (in.fail()) {
    // A value outside the range of T sets failbit with +-max (C++11 num_get); tell it from garbage by re-reading
    // it as long double.
    std::istringstream wide(std::string(first, last));
    wide.imbue(std::locale::classic());
    long double probe = 0;
    wide >> probe;
    if (wide.fail() || wide.peek() != std::char_traits<char>::eof()) return CsvParse::invalid;
    if (!negative_exponent) return CsvParse::out_of_range;
    value = *first == '-' ? -T(0) : T(0);
    return CsvParse::ok;
  }
  return in.peek() == std::char_traits<char>::eof() ? CsvParse::ok : CsvParse::invalid;
#endif
}

}  // namespace detail

/**
 * @brief Loads a numeric CSV file (one sample per line, no quoting) as a row-major matrix.
 *
 * Lines are split at every `delimiter`; spaces and tabs around a cell are ignored; a trailing '\r' (Windows
 * line ends) is removed. Blank lines and lines whose first non-blank character is '#' are skipped. Cells are
 * parsed without the locale, as NumPy's `loadtxt` does: "1.5", "-2e-3", "+4", "nan", "inf" are numbers;
 * a value too small for T becomes 0.
 *
 * @tparam T float or double.
 * @param[in] path the file.
 * @param[in] delimiter the cell separator (',' by default; ';', '\t', ' ', '|' ... work). With ' ' or '\t', put
 * exactly one between cells. Must not be a letter, a digit, '+', '-', '.', '#', '"', '\0', '\n' or '\r'.
 * @param[in] skip_rows the number of lines skipped at the start of the file (e.g. 1 for a header line), before
 * any other rule; must be >= 0.
 * @return one row per data line; every data line must have the same number of cells.
 * @throws std::invalid_argument "kshot::load_csv_matrix(): ..." when `delimiter` or `skip_rows` is invalid.
 * @throws std::runtime_error "kshot::load_csv_matrix(): '<path>': ..." when the file does not exist, is a
 * directory or cannot be read; when a data line has a different number of cells than the first data line
 * (both line numbers and counts are shown); when a cell is empty, is not a number, or is out of the range of
 * T ("line 3, column 2: cannot parse \"abc\" as float32"; line and column numbers are 1-based and count every
 * line of the file); and when the file has no data line.
 */
template <class T>
RowMatrixX<T> load_csv_matrix(const std::string& path, char delimiter = ',', Index skip_rows = 0) {
  static_assert(is_supported_scalar_v<T>, "kshot::load_csv_matrix<T>(): T must be float or double");
  constexpr const char* where = "kshot::load_csv_matrix()";
  KSHOT_CHECK(detail::csv_valid_delimiter(delimiter), where,
              detail::cat("delimiter (character code ", static_cast<int>(static_cast<unsigned char>(delimiter)),
                          ") must not be a letter, a digit, '+', '-', '.', '#', '\"', NUL or a line break"));
  KSHOT_CHECK(skip_rows >= 0, where, detail::cat("skip_rows must be >= 0, got ", skip_rows));
  auto fail = [&](const std::string& what) {
    detail::throw_runtime_error(where, detail::io_quote(path) + ": " + what);
  };

  std::error_code ec;
  const std::filesystem::file_status status = std::filesystem::status(path, ec);
  if (status.type() == std::filesystem::file_type::not_found) fail("cannot open the file: it does not exist");
  if (status.type() == std::filesystem::file_type::directory) fail("cannot open the file: it is a directory");
  errno = 0;
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    const int err = errno;
    fail(detail::cat("cannot open the file: ", detail::io_errno_message(err)));
  }

  std::vector<T> values;
  std::string line;
  Index line_number = 0, rows = 0, cols = -1, first_data_line = 0;
  while (std::getline(in, line)) {
    ++line_number;
    if (line_number <= skip_rows) continue;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    const std::size_t first = line.find_first_not_of(" \t");
    if (first == std::string::npos || line[first] == '#') continue;
    line.erase(line.find_last_not_of(" \t") + 1);
    line.erase(0, first);

    Index cells = 0;
    std::size_t start = 0;
    for (;;) {
      std::size_t stop = line.find(delimiter, start);
      const bool last_cell = stop == std::string::npos;
      if (last_cell) stop = line.size();
      std::size_t a = start, b = stop;
      while (a < b && (line[a] == ' ' || line[a] == '\t')) ++a;
      while (b > a && (line[b - 1] == ' ' || line[b - 1] == '\t')) --b;
      ++cells;
      T value{};
      const detail::CsvParse parsed = detail::csv_parse_cell(line.data() + a, line.data() + b, value);
      if (parsed != detail::CsvParse::ok) {
        const std::string cell = line.substr(a, b - a);
        const std::string at = detail::cat("line ", line_number, ", column ", cells, ": ");
        if (parsed == detail::CsvParse::empty) fail(at + "empty cell");
        if (parsed == detail::CsvParse::out_of_range)
          fail(detail::cat(at, cell, " is out of the range of ", detail::npy_requested_name<T>()));
        fail(detail::cat(at, "cannot parse \"", detail::io_printable(cell), "\" as ", detail::npy_requested_name<T>()));
      }
      if (cols >= 0 && cells > cols)
        fail(detail::cat("line ", line_number, " has more than ", cols, " cells but line ", first_data_line,
                         " (the first data line) has ", cols));
      values.push_back(value);
      if (last_cell) break;
      start = stop + 1;
    }
    if (cols < 0) {
      cols = cells;
      first_data_line = line_number;
    } else if (cells != cols) {
      fail(detail::cat("line ", line_number, " has ", cells, " cells but line ", first_data_line,
                       " (the first data line) has ", cols));
    }
    ++rows;
  }
  if (in.bad()) fail(detail::cat("read error after line ", line_number));
  if (rows == 0)
    fail(skip_rows > 0
             ? detail::cat("no data line after skipping ", skip_rows, " lines (the file has ", line_number, " lines)")
             : std::string("no data line (the file is empty or holds only blank and comment lines)"));
  return Eigen::Map<const RowMatrixX<T>>(values.data(), rows, cols);
}

}  // namespace kshot

#endif  // KSHOT_DATA_CSV_HPP
