/**
 * @file fuzz/fuzz_common.hpp
 * @brief What every libFuzzer harness of kshot's loaders shares: the per-process temporary file the input is
 * written to, the FNV-1a checksum fix-up of kshot's binary formats, the check that an exception is one of
 * kshot's documented ones, and the seed writer (KSHOT_FUZZ_SEEDS=<dir> makes a harness write its seed corpus
 * with kshot's own save functions and exit).
 *
 * Each harness defines
 *   - `void fuzz_one(const std::uint8_t* data, std::size_t size)`: one input; byte 0 holds the options (which
 *     entry point, scalar type, whether the harness fixes the checksum or compresses the rest), the rest is the
 *     file;
 *   - `void write_seeds(SeedWriter& seeds)`: small valid files made by kshot's save functions.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_FUZZ_FUZZ_COMMON_HPP
#define KSHOT_FUZZ_FUZZ_COMMON_HPP

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <sys/types.h>
#include <unistd.h>

namespace kshot_fuzz {

/// Prints a finding and aborts, so that libFuzzer saves the input as a crash.
[[noreturn]] inline void finding(const std::string& what) {
  std::fprintf(stderr, "kshot fuzz finding: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

/// Aborts with `what` unless `condition` holds.
inline void require(bool condition, const std::string& what) {
  if (!condition) finding(what);
}

/// The message of an exception that a loader documents must name the function: "kshot::...(): ...".
inline void check_message(const std::exception& e) {
  const char* message = e.what();
  if (std::strncmp(message, "kshot::", 7) != 0) finding(std::string("exception message without its function: ") + message);
}

/**
 * @brief Runs `load` and accepts only the exceptions kshot documents: std::invalid_argument, std::out_of_range,
 * std::length_error and std::runtime_error, each with a message that starts with "kshot::" (one from the
 * standard library, such as vector's std::length_error, aborts as a finding). Anything else (std::bad_alloc,
 * ...) escapes to libFuzzer, which reports it as a finding.
 * @return true when `load` returned normally.
 */
template <class F>
bool documented(F&& load) {
  try {
    load();
    return true;
  } catch (const std::invalid_argument& e) {
    check_message(e);
  } catch (const std::out_of_range& e) {
    check_message(e);
  } catch (const std::length_error& e) {  // kshot's own, e.g. FlatIndex::search with a k it cannot allocate
    check_message(e);
  } catch (const std::runtime_error& e) {
    check_message(e);
  }
  return false;
}

/// A temporary file of this process (mkstemp under $TMPDIR or /tmp), removed at exit.
class TempFile {
 public:
  explicit TempFile(const char* tag) {
    const char* dir = std::getenv("TMPDIR");
    std::string pattern = std::string(dir != nullptr && *dir != '\0' ? dir : "/tmp") + "/kshot_fuzz_" + tag + "_XXXXXX";
    std::vector<char> name(pattern.begin(), pattern.end());
    name.push_back('\0');
    const int fd = mkstemp(name.data());
    if (fd < 0) finding("mkstemp failed for " + pattern);
    close(fd);
    path_ = name.data();
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  ~TempFile() {
    std::remove(path_.c_str());
    std::remove((path_ + ".tmp").c_str());
  }

  /// Replaces the file's contents with n bytes: written over the old ones, then cut to n bytes (not truncated
  /// first: ext4 flushes a file that was truncated to 0 and rewritten when it is closed, which made every
  /// input cost milliseconds; scripts/fuzz also points TMPDIR at /dev/shm).
  void write(const void* data, std::size_t n) const {
    const int fd = open(path_.c_str(), O_WRONLY | O_CREAT, 0600);
    if (fd < 0) finding("cannot write the temporary file " + path_);
    std::size_t done = 0;
    while (done < n) {
      const ssize_t got = pwrite(fd, static_cast<const char*>(data) + done, n - done, static_cast<off_t>(done));
      if (got <= 0) finding("short write to " + path_);
      done += static_cast<std::size_t>(got);
    }
    if (ftruncate(fd, static_cast<off_t>(n)) != 0) finding("cannot resize " + path_);
    close(fd);
  }
  void write(const std::vector<std::uint8_t>& bytes) const { write(bytes.data(), bytes.size()); }

  /// The file's contents.
  std::vector<std::uint8_t> read() const {
    std::ifstream in(path_, std::ios::binary);
    return std::vector<std::uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }

  const std::string& path() const noexcept { return path_; }

 private:
  std::string path_;
};

/// FNV-1a 64 of n bytes, as kshot/core/binary_io.hpp computes it (written here again so that a bug there
/// cannot hide itself).
inline std::uint64_t fnv1a64(const std::uint8_t* p, std::size_t n) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (std::size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

/// Overwrites the last 8 bytes with the little-endian FNV-1a 64 of the bytes before them, so that a file whose
/// structure ends where the data ends passes the checksum and mutations reach the checks behind it.
inline void fix_checksum(std::vector<std::uint8_t>& file) {
  if (file.size() < 8) return;
  const std::size_t n = file.size() - 8;
  const std::uint64_t h = fnv1a64(file.data(), n);
  for (std::size_t b = 0; b < 8; ++b) file[n + b] = static_cast<std::uint8_t>(h >> (8 * b));
}

/// True when the last 8 bytes are the FNV-1a 64 of the bytes before them.
inline bool checksum_ok(const std::vector<std::uint8_t>& file) {
  std::vector<std::uint8_t> copy = file;
  fix_checksum(copy);
  return copy == file;
}

/**
 * The front of the checksummed-format harnesses (model and index files): byte 0 of the input holds the options
 * (bit 0: recompute the checksum over the rest; bit 1: double rather than float; higher bits are the harness's
 * own), the rest is the file. Calls run(Scalar{}, options, bytes) with Scalar float or double.
 */
template <class Run>
void checksummed_file(const std::uint8_t* data, std::size_t size, Run&& run) {
  const std::uint8_t options = data[0];
  std::vector<std::uint8_t> bytes(data + 1, data + size);
  if ((options & 1) != 0) fix_checksum(bytes);
  if ((options & 2) != 0)
    run(double{}, options, bytes);
  else
    run(float{}, options, bytes);
}

/// Writes the seed corpus: one file per seed, named <dir>/<name>.
class SeedWriter {
 public:
  explicit SeedWriter(std::string dir) : dir_(std::move(dir)) {}

  /// One seed: the options byte, then the file's bytes.
  void add(const std::string& name, std::uint8_t options, const std::vector<std::uint8_t>& file) {
    std::vector<std::uint8_t> input;
    input.reserve(file.size() + 1);
    input.push_back(options);
    input.insert(input.end(), file.begin(), file.end());
    add_raw(name, input);
  }
  /// One seed, exactly these bytes.
  void add_raw(const std::string& name, const std::vector<std::uint8_t>& input) {
    const std::string path = dir_ + "/" + name;
    std::FILE* f = std::fopen(path.c_str(), "wb");
    if (f == nullptr) finding("cannot create the seed " + path);
    if (!input.empty() && std::fwrite(input.data(), 1, input.size(), f) != input.size()) finding("short write " + path);
    std::fclose(f);
    ++count_;
  }
  int count() const noexcept { return count_; }

 private:
  std::string dir_;
  int count_ = 0;
};

/// Bytes of a string literal or std::string.
inline std::vector<std::uint8_t> bytes_of(const std::string& s) { return std::vector<std::uint8_t>(s.begin(), s.end()); }

}  // namespace kshot_fuzz

/// Defined by each harness.
void fuzz_one(const std::uint8_t* data, std::size_t size);
void write_seeds(kshot_fuzz::SeedWriter& seeds);

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // KSHOT_FUZZ_SEEDS=<dir>: write the seed corpus into <dir> (which must exist) and exit.
  if (const char* dir = std::getenv("KSHOT_FUZZ_SEEDS")) {
    kshot_fuzz::SeedWriter seeds(dir);
    write_seeds(seeds);
    std::printf("wrote %d seeds to %s\n", seeds.count(), dir);
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  fuzz_one(data, size);
  return 0;
}

#endif  // KSHOT_FUZZ_FUZZ_COMMON_HPP
