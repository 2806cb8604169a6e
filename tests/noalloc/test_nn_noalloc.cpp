// SPDX-License-Identifier: MIT
#include "noalloc/alloc_counter.hpp"
#include "test_util.hpp"

#include <kshot/nn/sequential.hpp>
#include <kshot/nn/residual.hpp>
#include <kshot/nn/layer_norm.hpp>
#include <kshot/nn/dropout.hpp>
#include <kshot/nn/l2_normalize.hpp>

using namespace kshot;
using namespace kshot::test;

TEST_CASE_TEMPLATE("no allocation on a second call: Sequential forward, backward and R passes, same batch size", T, float, double) {
  Sequential<T> model;
  model.template add<Linear>(32, 48);
  model.template add<GELU>(48);
  model.template add<ResidualBlock>(48, 40, Activation::tanh);
  model.template add<LayerNorm>(48);
  model.template add<Dropout>(48, 0.2, 5);
  model.template add<ReLU>(48);
  model.template add<Linear>(48, 16);
  model.template add<Tanh>(16);
  model.template add<L2Normalize>(16);
  const RowMatrixX<T> support = random_matrix<T>(25, 32, 1), query = random_matrix<T>(75, 32, 2);
  const RowMatrixX<T> dys = random_matrix<T>(25, 16, 3), dyq = random_matrix<T>(75, 16, 4);
  const VectorX<T> v = random_matrix<T>(model.num_parameters(), 1, 5);
  VectorX<T> hv(model.num_parameters());
  RowMatrixX<T> dxs(25, 32), dxq(75, 32);
  check_second_call_allocates_nothing([&] {
    for (const bool big : {false, false}) {
      const RowMatrixX<T>& x = big ? query : support;
      const RowMatrixX<T>& dy = big ? dyq : dys;
      model.zero_grad();
      model.forward(x, true);
      model.backward(dy);
      model.backward(dy, big ? dxq : dxs);
      const auto& ry = model.forward_r(v);
      model.backward_r(dy, ry, hv);
    }
  });
  // Alternating sizes: forward() and forward_r() reallocate only their output matrices (n x 16).
  check_second_call_allocates_nothing([&] {
    model.forward(query, true);
    model.backward(dyq);
    model.forward_r(v);
    model.backward_r(dyq, model.forward_r(v), hv);
  });
}
