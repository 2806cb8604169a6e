// libFuzzer harness of kshot's CSV reader (kshot/data/csv.hpp): load_csv_matrix<float/double> with
// every kind of delimiter and skip_rows.
//
// Input: byte 0 = options, the rest = the CSV file.
//   bits 0-2: the delimiter: ',', ';', '\t', ' ', '|', ':', '/'; 7 an invalid one ('.' or '\n', by bit 7)
//   bits 3-4: skip_rows 0, 1, 2; 3 means 3, or the invalid -1 when bit 7 is set
//   bit 5: load_csv_matrix<double> (else <float>)
// After a successful load: the matrix is not empty, and writing it back as CSV (shortest round-trip digits)
// and loading that gives the same values (NaN for NaN).
//
// SPDX-License-Identifier: MIT

#include "fuzz_common.hpp"

#include "kshot/data/csv.hpp"

#include <cmath>
#include <cstdio>

namespace {

using kshot_fuzz::require;

char delimiter_of(std::uint8_t options) {
  static const char delimiters[] = {',', ';', '\t', ' ', '|', ':', '/'};
  const int k = options & 7;
  if (k < 7) return delimiters[k];
  return (options & 128) != 0 ? '\n' : '.';
}

template <class T>
void run(const kshot_fuzz::TempFile& file, char delimiter, kshot::Index skip_rows) {
  static const kshot_fuzz::TempFile copy("csv_copy");
  kshot::RowMatrixX<T> m;
  if (!kshot_fuzz::documented([&] { m = kshot::load_csv_matrix<T>(file.path(), delimiter, skip_rows); })) return;
  require(m.rows() >= 1 && m.cols() >= 1, "load_csv_matrix() returned an empty matrix");
  std::string text;
  char cell[64];
  for (kshot::Index i = 0; i < m.rows(); ++i) {
    for (kshot::Index j = 0; j < m.cols(); ++j) {
      std::snprintf(cell, sizeof(cell), "%.*g", std::is_same_v<T, float> ? 9 : 17, static_cast<double>(m(i, j)));
      if (j > 0) text += ',';
      text += cell;
    }
    text += '\n';
  }
  copy.write(text.data(), text.size());
  const kshot::RowMatrixX<T> again = kshot::load_csv_matrix<T>(copy.path());
  require(again.rows() == m.rows() && again.cols() == m.cols(), "the rewritten CSV has another shape");
  for (kshot::Index k = 0; k < m.size(); ++k) {
    const T a = m.data()[k], b = again.data()[k];
    require((std::isnan(a) && std::isnan(b)) || (a == b && std::signbit(a) == std::signbit(b)),
            "the rewritten CSV has another value at " + std::to_string(k));
  }
}

}  // namespace

void fuzz_one(const std::uint8_t* data, std::size_t size) {
  static const kshot_fuzz::TempFile file("csv");
  const std::uint8_t options = data[0];
  const int skip = (options >> 3) & 3;
  const kshot::Index skip_rows = skip == 3 && (options & 128) != 0 ? -1 : skip;
  file.write(data + 1, size - 1);
  if ((options & 32) != 0)
    run<double>(file, delimiter_of(options), skip_rows);
  else
    run<float>(file, delimiter_of(options), skip_rows);
}

void write_seeds(kshot_fuzz::SeedWriter& seeds) {
  // kshot has no CSV writer: the files are written here, one per delimiter, with the features the reader
  // documents (header lines, comments, blank lines, CRLF, blanks around cells, nan, inf, +4, exponents).
  const char* delimiters = ",;\t |:/";
  for (int k = 0; k < 7; ++k) {
    const std::string d(1, delimiters[k]);
    const std::string body = "1" + d + "-2.5" + d + "3e-3\n# a comment\n\n+4" + d + "nan" + d + "-inf\r\n" + "0.1" +
                             d + "1e-50" + d + "-0\n";
    for (std::uint8_t type : {0, 32}) {
      const std::string t = std::to_string(k) + "_" + std::to_string(type);
      seeds.add("plain_" + t, static_cast<std::uint8_t>(k | type), kshot_fuzz::bytes_of(body));
      seeds.add("header_" + t, static_cast<std::uint8_t>(k | type | (1 << 3)),
                kshot_fuzz::bytes_of("x" + d + "y" + d + "z\n" + body));
    }
  }
  seeds.add("blanks", 0, kshot_fuzz::bytes_of("  1 ,\t2\t\n 3,4  \n"));
  seeds.add("one_cell_skip2", static_cast<std::uint8_t>(2 << 3), kshot_fuzz::bytes_of("a\nb\n1.5\n"));
  seeds.add("large_double", 32, kshot_fuzz::bytes_of("1e308,-1.7976931348623157e308\n4.9e-324,2\n"));
}
