// SPDX-License-Identifier: MIT
#include <kshot/kshot.hpp>

float kshot_odr_b(const kshot::RowMatrixX<float>& a);

float kshot_odr_b(const kshot::RowMatrixX<float>& a) {
  kshot::RowMatrixX<float> d(a.rows(), a.rows());
  kshot::self_distances(a, d);
  return d.sum();
}
