// SPDX-License-Identifier: MIT
// Helpers of the file-format tests (tests/data/test_npy_csv.cpp, tests/data/test_idx.cpp) and of the xtensor
// interchange tests (tests/interop/test_io.cpp): the NumPy fixtures, a temporary directory, raw file bytes, hand-made
// .npy files.
#ifndef KSHOT_TESTS_DATA_FILE_TEST_UTIL_HPP
#define KSHOT_TESTS_DATA_FILE_TEST_UTIL_HPP

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <system_error>
#include <vector>

namespace kshot_file_test {

namespace fs = std::filesystem;


/// The directory of the committed .npy fixtures (tests/data/npy_files), from CMake or next to this file.
inline std::string fixture(const std::string& name) {
#ifdef KSHOT_NPY_TEST_DIR
  const fs::path directory = KSHOT_NPY_TEST_DIR;
#else
  const fs::path directory = fs::path(__FILE__).parent_path() / "npy_files";
#endif
  return (directory / name).string();
}

/// A fresh directory under the system's temporary directory, removed with everything in it at scope exit.
class TempDir {
 public:
  TempDir() {
    static std::atomic<unsigned> counter{0};
    std::random_device device;
    do {
      path_ = fs::temp_directory_path() /
              ("kshot_test_io_" + std::to_string(device()) + "_" + std::to_string(counter++));
    } while (!fs::create_directory(path_));
    text_ = path_.string();
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  /// A reference, so that `path().c_str()` outlives the full expression it appears in.
  const std::string& path() const { return text_; }
  /// The names of the entries in the directory, sorted.
  std::vector<std::string> entries() const {
    std::vector<std::string> names;
    for (const auto& entry : fs::directory_iterator(path_)) names.push_back(entry.path().filename().string());
    std::sort(names.begin(), names.end());
    return names;
  }

 private:
  fs::path path_;
  std::string text_;
};

inline void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

/// A .npy file with an arbitrary header dictionary (padded to 64 bytes, as NumPy does) and data bytes.
inline std::string npy_bytes(const std::string& dict, const std::string& data, int major = 1) {
  const std::size_t preamble = major == 1 ? 10 : 12;
  std::string header = dict;
  while ((preamble + header.size() + 1) % 64 != 0) header += ' ';
  header += '\n';
  std::string out("\x93NUMPY", 6);
  out += static_cast<char>(major);
  out += '\0';
  for (std::size_t k = 0; k < (major == 1 ? 2u : 4u); ++k) out += static_cast<char>((header.size() >> (8 * k)) & 0xFFu);
  return out + header + data;
}

/// The bytes of values, in host (little-endian) order.
template <class T>
std::string raw(const std::vector<T>& values) {
  std::string out(values.size() * sizeof(T), '\0');
  if (!values.empty()) std::memcpy(&out[0], values.data(), out.size());
  return out;
}

/// Bitwise equality of two matrices (distinguishes -0 from 0 and compares NaNs).
template <class A, class B>
bool same_bits(const A& a, const B& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() &&
         std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.size()) * sizeof(typename A::Scalar)) == 0;
}

}  // namespace kshot_file_test

#endif  // KSHOT_TESTS_DATA_FILE_TEST_UTIL_HPP
