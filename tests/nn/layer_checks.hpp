/**
 * @file tests/nn/layer_checks.hpp
 * @brief The checks every nn layer gets: backward (input and parameter gradients) and both halves of the
 * R-operator against central finite differences in double precision.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_TESTS_NN_LAYER_CHECKS_HPP
#define KSHOT_TESTS_NN_LAYER_CHECKS_HPP

#include "test_util.hpp"

#include <kshot/core/random.hpp>
#include <kshot/core/types.hpp>
#include <kshot/nn/layer.hpp>

#include <doctest/doctest.h>

#include <cstdint>
#include <memory>

namespace kshot {
namespace test {

/// Errors of one layer's derivatives against central differences (each ||g - ĝ|| / ||g + ĝ||).
struct LayerCheckErrors {
  double input_grad = 0;      ///< dL/dx from backward()
  double param_grad = 0;      ///< dL/dparameters from backward()
  double forward_r = 0;       ///< R{y} from forward_r()
  double backward_r_param = 0;  ///< R{dL/dparameters} from backward_r()
  double backward_r_input = 0;  ///< R{dL/dx} from backward_r()
};

/**
 * @brief A layer bound to its own parameter and gradient vectors, for tests of one layer alone.
 */
struct BoundLayer {
  std::unique_ptr<Layer<double>> layer;
  VectorX<double> params, grads;

  explicit BoundLayer(std::unique_ptr<Layer<double>> l) : layer(std::move(l)) {
    params = VectorX<double>::Zero(layer->num_parameters());
    grads = VectorX<double>::Zero(layer->num_parameters());
    layer->bind(params.data(), grads.data());
  }

  RowMatrixX<double> forward(const RowMatrixX<double>& x, bool training) {
    RowMatrixX<double> y(x.rows(), layer->output_dim());
    layer->forward(x, y, training);
    return y;
  }
};

/**
 * @brief Checks backward() and the R-operator of `layer` at a random point.
 *
 * The scalar under test is L = sum(dy ∘ y(x, θ)) for a fixed random dy, so backward's outputs are its exact
 * gradients. The R-operator is checked as the directional derivative along (rx, v, rdy) of forward's y and
 * of backward's outputs g(θ, x, dy), by central differences of whole forward/backward runs.
 *
 * @param layer the layer (double), unbound; it is bound here and initialized from `seed`, then its
 * parameters are perturbed by `param_noise` so that tests do not sit at special values (ones, zeros).
 * @param x the input batch (rows x input_dim()). Inputs are used as given: choose them away from kinks.
 * @param training forward's training flag (Dropout: the same mask must be drawn at every probe, so a
 * layer whose mask changes per call must be checked with training false or made repeatable by the test).
 */
inline LayerCheckErrors check_layer(std::unique_ptr<Layer<double>> layer, const RowMatrixX<double>& x, std::uint64_t seed,
                                    bool training = false, double param_noise = 0.1, double h = 1e-6) {
  BoundLayer b(std::move(layer));
  RandomStream rng(seed, 1);
  b.layer->initialize(rng);
  for (Index i = 0; i < b.params.size(); ++i) b.params[i] += param_noise * rng.normal<double>();
  const VectorX<double> theta = b.params;
  const Index n = x.rows(), din = b.layer->input_dim(), dout = b.layer->output_dim();
  REQUIRE(x.cols() == din);

  const RowMatrixX<double> dy = random_matrix<double>(n, dout, seed + 11);
  const RowMatrixX<double> rx = random_matrix<double>(n, din, seed + 12);
  const RowMatrixX<double> rdy = random_matrix<double>(n, dout, seed + 13);
  VectorX<double> v(b.params.size());
  for (Index i = 0; i < v.size(); ++i) v[i] = rng.normal<double>();

  // Analytic values at (theta, x).
  b.params = theta;
  b.grads.setZero();
  const RowMatrixX<double> y0 = b.forward(x, training);
  RowMatrixX<double> dx(n, din);
  b.layer->backward(dy, dx, true);
  const VectorX<double> g_param = b.grads;
  RowMatrixX<double> ry(n, dout);
  b.layer->forward_r(rx, v.data(), ry);
  VectorX<double> r_param = VectorX<double>::Zero(b.params.size());
  RowMatrixX<double> rdx(n, din);
  b.layer->backward_r(dy, rdy, v.data(), r_param.data(), rdx, true);

  LayerCheckErrors e;
  // dL/dx and dL/dθ by central differences of L = sum(dy ∘ y).
  auto loss_at = [&](const RowMatrixX<double>& probe_x, const VectorX<double>& probe_theta) {
    b.params = probe_theta;
    return (dy.array() * b.forward(probe_x, training).array()).sum();
  };
  e.input_grad = gradient_rel_error(dx, numeric_gradient([&](const RowMatrixX<double>& p) { return loss_at(p, theta); }, x, h));
  if (theta.size() > 0) {
    VectorX<double> num(theta.size());
    VectorX<double> probe = theta;
    for (Index i = 0; i < theta.size(); ++i) {
      probe[i] = theta[i] + h;
      const double up = loss_at(x, probe);
      probe[i] = theta[i] - h;
      const double down = loss_at(x, probe);
      probe[i] = theta[i];
      num[i] = (up - down) / (2 * h);
    }
    e.param_grad = gradient_rel_error(g_param, num);
  }

  // Directional derivatives along (rx, v, rdy) of y, dL/dθ and dL/dx.
  auto run_at = [&](double t, RowMatrixX<double>& y, VectorX<double>& gp, RowMatrixX<double>& gx) {
    b.params = theta + t * v;
    b.grads.setZero();
    const RowMatrixX<double> xt = x + t * rx;
    y = b.forward(xt, training);
    const RowMatrixX<double> dyt = dy + t * rdy;
    gx.resize(n, din);
    b.layer->backward(dyt, gx, true);
    gp = b.grads;
  };
  RowMatrixX<double> y_up, y_down, gx_up, gx_down;
  VectorX<double> gp_up, gp_down;
  run_at(h, y_up, gp_up, gx_up);
  run_at(-h, y_down, gp_down, gx_down);
  e.forward_r = gradient_rel_error(ry, (y_up - y_down) / (2 * h));
  e.backward_r_input = gradient_rel_error(rdx, (gx_up - gx_down) / (2 * h));
  if (theta.size() > 0) e.backward_r_param = gradient_rel_error(r_param, (gp_up - gp_down) / (2 * h));

  b.params = theta;
  (void)y0;
  return e;
}

/// check_layer with every error asserted below `tol`.
inline void require_layer_derivatives(std::unique_ptr<Layer<double>> layer, const RowMatrixX<double>& x,
                                      std::uint64_t seed, bool training = false, double tol = 1e-6) {
  const LayerCheckErrors e = check_layer(std::move(layer), x, seed, training);
  INFO("input_grad " << e.input_grad << " param_grad " << e.param_grad << " forward_r " << e.forward_r
                     << " backward_r_param " << e.backward_r_param << " backward_r_input " << e.backward_r_input);
  CHECK(e.input_grad < tol);
  CHECK(e.param_grad < tol);
  CHECK(e.forward_r < tol);
  CHECK(e.backward_r_param < tol);
  CHECK(e.backward_r_input < tol);
}

}  // namespace test
}  // namespace kshot

#endif  // KSHOT_TESTS_NN_LAYER_CHECKS_HPP
