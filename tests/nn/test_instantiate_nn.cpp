// SPDX-License-Identifier: MIT
// Explicit instantiation of every nn, meta and train class template, so that every member compiles for float and
// double. (Compiled at -O0: this file only checks that the code compiles; see tests/CMakeLists.txt.)
#include <kshot/losses/triplet.hpp>
#include <kshot/meta.hpp>
#include <kshot/nn.hpp>
#include <kshot/train.hpp>

#include <doctest/doctest.h>

// Every member of these class templates is instantiated for float and double in the test library
// kshot_test_instances (tests/instances/instances.hpp), which every sanitized test executable links: a member that
// does not compile for one of the scalars fails the build there.

TEST_CASE("build: every nn, meta and train class template instantiates for float and double") {
  kshot::Sequential<float> model;
  CHECK(model.num_parameters() == 0);
}
