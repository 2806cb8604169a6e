// SPDX-License-Identifier: MIT
// Traits that every class template relies on (the instantiation of every member for float and double is in
// tests/instances/).
#include <kshot/kshot.hpp>

#include "test_util.hpp"

// Every member of these class templates is instantiated for float and double in the test library
// kshot_test_instances (tests/instances/instances.hpp), which every sanitized test executable links: a member that
// does not compile for one of the scalars fails the build there.

TEST_CASE("build: every class template instantiates for float and double") {
  CHECK(kshot::is_metric_v<kshot::Manhattan>);
  CHECK(!kshot::is_metric_v<int>);
  CHECK(kshot::is_supported_scalar_v<float>);
  CHECK(!kshot::is_supported_scalar_v<int>);
}
