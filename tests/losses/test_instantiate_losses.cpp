// SPDX-License-Identifier: MIT
// Explicit instantiation of every loss and miner class template, so that every member compiles for float and
// double. (Compiled at -O0: this file only checks that the code compiles; see tests/CMakeLists.txt.)
#include <kshot/losses.hpp>

#include <doctest/doctest.h>

// Every member of these class templates is instantiated for float and double in the test library
// kshot_test_instances (tests/instances/instances.hpp), which every sanitized test executable links: a member that
// does not compile for one of the scalars fails the build there.

TEST_CASE("build: every loss and miner class template instantiates for float and double") {
  kshot::ContrastiveLoss<float> loss;
  CHECK(loss.neg_margin == 1.0f);
}
