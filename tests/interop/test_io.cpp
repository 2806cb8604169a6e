/**
 * @file tests/interop/test_io.cpp
 * @brief kshot's .npy and .csv files against xtensor's own readers and writers, both ways (the I/O itself is tested
 * in tests/data/test_npy_csv.cpp).
 *
 * SPDX-License-Identifier: MIT
 */
#include "test_util.hpp"
#include "data/file_test_util.hpp"

#include <kshot/interop/xtensor.hpp>
#include <kshot/data/csv.hpp>
#include <kshot/data/npy.hpp>

// xnpy.hpp includes <regex>, whose std::function members trip a known false positive of GCC 12's
// -Wmaybe-uninitialized under sanitizers (GCC PR 105562); the warning is in libstdc++, not in kshot.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#if __has_include(<xtensor/io/xnpy.hpp>)
#include <xtensor/io/xcsv.hpp>
#include <xtensor/io/xnpy.hpp>
#else
#include <xtensor/xcsv.hpp>
#include <xtensor/xnpy.hpp>
#endif

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

using namespace kshot_file_test;

}  // namespace

TEST_CASE("interop.io: .npy files are interchangeable with xtensor's xt::load_npy and xt::dump_npy") {
  TempDir dir;
  kshot::RowMatrixX<float> matrix(2, 3);
  matrix << 1.f, 2.5f, -3.f, 4.f, 0.125f, 6.f;
  const std::string ours = dir.file("ours.npy");
  kshot::save_npy(ours, matrix);
  const auto by_xtensor = xt::load_npy<float>(ours);
  REQUIRE(by_xtensor.dimension() == 2);
  CHECK(by_xtensor.shape()[0] == 2);
  CHECK(by_xtensor.shape()[1] == 3);
  CHECK(by_xtensor(0, 1) == 2.5f);
  CHECK(by_xtensor(1, 2) == 6.f);

  xt::xtensor<double, 2> tensor = {{0.5, -1.0}, {2.0, 1e-300}, {3.0, 4.0}};
  const std::string theirs = dir.file("theirs.npy");
  xt::dump_npy(theirs, tensor);
  const kshot::RowMatrixX<double> loaded = kshot::load_npy_matrix<double>(theirs);
  CHECK(loaded == kshot::as_eigen(tensor));
  // ... and a kshot matrix saved from an xtensor map.
  kshot::save_npy(ours, kshot::as_eigen(tensor));
  CHECK(read_file(ours).substr(128) == read_file(theirs).substr(read_file(theirs).size() - 48));
}

TEST_CASE("interop.io: load_csv_matrix gives the values of xtensor's xt::load_csv on a well-formed file") {
  TempDir dir;
  const std::string path = dir.file("values.csv");
  write_file(path, "0.1,0.2,0.3\n1.5,-2.75,1e10\n");
  std::ifstream stream(path);
  const auto by_xtensor = xt::load_csv<double>(stream);
  CHECK(kshot::load_csv_matrix<double>(path) == kshot::as_eigen(by_xtensor));
}
