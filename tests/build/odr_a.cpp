// SPDX-License-Identifier: MIT
// Two translation units that both include the umbrella header are linked into one program (ODR check).
#include <kshot/kshot.hpp>

#include "test_util.hpp"

float kshot_odr_b(const kshot::RowMatrixX<float>& a);

static float kshot_odr_a(const kshot::RowMatrixX<float>& a) { return kshot::self_distances(a).sum(); }

TEST_CASE("build: two translation units that include kshot.hpp link and agree") {
  kshot::RowMatrixX<float> a(2, 2);
  a << 1, 2, 3, 4;
  CHECK(kshot_odr_a(a) == 16.0f);
  CHECK(kshot_odr_b(a) == 16.0f);
}
