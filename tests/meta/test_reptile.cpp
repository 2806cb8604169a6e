// SPDX-License-Identifier: MIT
// Reptile: inner SGD steps and the meta step by hand on a one-weight linear model, the batched step averages
// the adapted parameters, the meta-gradient convention (theta - theta'), Adam as the inner optimizer with a
// fresh state per task, the adapted range, bitwise identity at 1 and 2 threads, bad input.
#include "test_util.hpp"

#include <kshot/core/threads.hpp>
#include <kshot/meta/reptile.hpp>
#include <kshot/meta/task_loss.hpp>
#include <kshot/nn/adam.hpp>
#include <kshot/nn/linear.hpp>
#include <kshot/nn/sequential.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

using kshot::Index;
using kshot::MseLoss;
using kshot::Reptile;
using kshot::RowMatrixX;
using kshot::Sequential;
using kshot::VectorX;
using kshot::test::random_matrix;

namespace {

/// y = w x + b, parameters [w, b].
template <class Scalar>
Sequential<Scalar> line(Scalar w, Scalar b) {
  Sequential<Scalar> model;
  model.template add<kshot::Linear<Scalar>>(1, 1);
  model.parameters() << w, b;
  return model;
}

/// One SGD step of lr on the mean squared error of y = w x + b, by hand.
void sgd_step_by_hand(double& w, double& b, const RowMatrixX<double>& x, const RowMatrixX<double>& t, double lr) {
  double dw = 0, db = 0;
  const auto n = static_cast<double>(x.rows());
  for (Index i = 0; i < x.rows(); ++i) {
    const double r = w * x(i, 0) + b - t(i, 0);
    dw += 2 * r * x(i, 0) / n;
    db += 2 * r / n;
  }
  w -= lr * dw;
  b -= lr * db;
}

}  // namespace

TEST_CASE("Reptile: inner steps and the meta step by hand on y = w x + b") {
  Sequential<double> model = line(0.5, -0.25);
  RowMatrixX<double> x(3, 1), t(3, 1);
  x << 1, 2, -1;
  t << 2, 3, 0.5;
  Reptile<double> reptile(0.1, 3, 0.5);
  double w = 0.5, b = -0.25;
  for (int k = 0; k < 3; ++k) sgd_step_by_hand(w, b, x, t, 0.1);
  VectorX<double> adapted(2), g(2);
  const double loss0 = reptile.adapt(model, x, t, adapted);
  CHECK(loss0 ==
        doctest::Approx(((0.25 - 2) * (0.25 - 2) + (0.75 - 3) * (0.75 - 3) + (-0.75 - 0.5) * (-0.75 - 0.5)) / 3));
  CHECK(adapted[0] == doctest::Approx(w).epsilon(1e-14));
  CHECK(adapted[1] == doctest::Approx(b).epsilon(1e-14));
  CHECK(model.parameters()[0] == 0.5);  // the model is left at theta
  reptile.meta_gradient(model, x, t, g);
  CHECK(g[0] == doctest::Approx(0.5 - w).epsilon(1e-14));
  CHECK(g[1] == doctest::Approx(-0.25 - b).epsilon(1e-14));
  reptile.step(model, x, t);
  CHECK(model.parameters()[0] == doctest::Approx(0.5 + 0.5 * (w - 0.5)).epsilon(1e-14));
  CHECK(model.parameters()[1] == doctest::Approx(-0.25 + 0.5 * (b + 0.25)).epsilon(1e-14));
}

TEST_CASE("Reptile: the batched step moves towards the mean adapted parameters; only the adapted range moves") {
  Sequential<double> model = line(1.0, 0.0);
  std::vector<kshot::MetaTask<double, MseLoss<double>>> tasks(2);
  tasks[0].x_support = RowMatrixX<double>::Constant(2, 1, 1.0);
  tasks[0].y_support = RowMatrixX<double>::Constant(2, 1, 3.0);
  tasks[1].x_support = RowMatrixX<double>::Constant(2, 1, -1.0);
  tasks[1].y_support = RowMatrixX<double>::Constant(2, 1, 0.0);
  Reptile<double> reptile(0.05, 2, 1.0);
  double w0 = 1, b0 = 0, w1 = 1, b1 = 0;
  for (int k = 0; k < 2; ++k) {
    sgd_step_by_hand(w0, b0, tasks[0].x_support, tasks[0].y_support, 0.05);
    sgd_step_by_hand(w1, b1, tasks[1].x_support, tasks[1].y_support, 0.05);
  }
  VectorX<double> g(2);
  reptile.meta_gradient(model, tasks, g);
  CHECK(g[0] == doctest::Approx(1.0 - (w0 + w1) / 2).epsilon(1e-14));
  CHECK(g[1] == doctest::Approx(0.0 - (b0 + b1) / 2).epsilon(1e-14));
  reptile.step(model, tasks);  // outer_lr 1: theta becomes the mean
  CHECK(model.parameters()[0] == doctest::Approx((w0 + w1) / 2).epsilon(1e-14));
  CHECK(model.parameters()[1] == doctest::Approx((b0 + b1) / 2).epsilon(1e-14));

  Sequential<double> other = line(1.0, 0.0);
  reptile.adapted = kshot::ParameterRange{1, 1};  // the bias only
  VectorX<double> adapted(2);
  reptile.adapt(other, tasks[0].x_support, tasks[0].y_support, adapted);
  CHECK(adapted[0] == 1.0);
  CHECK(adapted[1] != 0.0);
}

TEST_CASE("Reptile: Adam as the inner optimizer starts afresh for every task, or keeps its state") {
  Sequential<double> model = kshot::make_mlp<double>({2, 8, 1}, kshot::Activation::tanh);
  const RowMatrixX<double> x = random_matrix<double>(6, 2, 1), t = random_matrix<double>(6, 1, 2);
  Reptile<double, MseLoss<double>, kshot::Adam<double>> reptile;
  reptile.inner.lr = 0.01;
  reptile.inner.beta1 = 0.0;  // learn2learn's Reptile script: Adam(betas=(0, 0.999))
  VectorX<double> a(model.num_parameters()), b(model.num_parameters());
  reptile.adapt(model, x, t, a);
  reptile.adapt(model, x, t, b);
  CHECK(a == b);
  CHECK((a - model.parameters()).norm() > 0);
  // learn2learn's script keeps the inner Adam's state from one task to the next.
  reptile.keep_inner_state = true;
  reptile.inner.reset();
  reptile.adapt(model, x, t, a);
  reptile.adapt(model, x, t, b);
  CHECK(reptile.inner.steps() == 2 * reptile.inner_steps);
  CHECK(a != b);
}

TEST_CASE_TEMPLATE("Reptile: bitwise identical at 1 and 2 threads", Scalar, float, double) {
  Sequential<Scalar> model =
      kshot::make_mlp<Scalar>({256, 256, 256, 4}, kshot::Activation::relu, kshot::Init::pytorch_default, 5);
  std::vector<kshot::MetaTask<Scalar, MseLoss<Scalar>>> tasks(2);
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    tasks[i].x_support = random_matrix<Scalar>(512, 256, 10 + i);
    tasks[i].y_support = random_matrix<Scalar>(512, 4, 20 + i);
  }
  auto run = [&](int threads) {
    kshot::ThreadCountGuard guard(threads);
    Sequential<Scalar> copy = model;
    Reptile<Scalar> reptile(0.01, 2, 0.5);
    reptile.step(copy, tasks);
    return VectorX<Scalar>(copy.parameters());
  };
  const VectorX<Scalar> one = run(1), two = run(2);
  CHECK(std::memcmp(one.data(), two.data(), sizeof(Scalar) * static_cast<std::size_t>(one.size())) == 0);
  CHECK((one - model.parameters()).norm() > 0);
}

TEST_CASE("Reptile: bad input") {
  Sequential<double> model = line(1.0, 0.0);
  const RowMatrixX<double> x = random_matrix<double>(4, 1, 1), t = random_matrix<double>(4, 1, 2);
  VectorX<double> g(2), short_g(1);
  Reptile<double> reptile;
  reptile.inner_steps = -1;
  KSHOT_CHECK_THROWS_WITH_ALL(reptile.adapt(model, x, t, g), std::invalid_argument, "kshot::Reptile::adapt()",
                              "inner_steps must be >= 0, got -1");
  reptile.inner_steps = 2;
  reptile.outer_lr = -1;
  KSHOT_CHECK_THROWS_WITH_ALL(reptile.step(model, x, t), std::invalid_argument, "kshot::Reptile::step()",
                              "outer_lr must be finite and >= 0, got -1");
  reptile.outer_lr = 0.1;
  reptile.inner.lr = -0.5;
  CHECK_THROWS_AS(reptile.step(model, x, t), std::invalid_argument);
  CHECK(model.parameters()[0] == 1.0);
  reptile.inner.lr = 0.01;
  KSHOT_CHECK_THROWS_WITH_ALL(reptile.meta_gradient(model, x, t, short_g), std::invalid_argument,
                              "meta_grad has 1 entries but the model has 2 parameters");
  reptile.adapted = kshot::ParameterRange{1, 5};
  KSHOT_CHECK_THROWS_WITH_ALL(reptile.adapt(model, x, t, g), std::invalid_argument, "[1, 6)", "2 parameters");
  reptile.adapted = {};
  const RowMatrixX<double> wrong_t = random_matrix<double>(3, 1, 3);
  KSHOT_CHECK_THROWS_WITH_ALL(reptile.adapt(model, x, wrong_t, g), std::invalid_argument,
                              "y is 3 x 1 but must be 4 x 1");
  std::vector<kshot::MetaTask<double, MseLoss<double>>> tasks(2);
  tasks[0].x_support = x;
  tasks[0].y_support = t;
  tasks[1].x_support = x;
  tasks[1].y_support = wrong_t;
  KSHOT_CHECK_THROWS_WITH_ALL(reptile.step(model, tasks), std::invalid_argument, "task 1", "y_support is 3 x 1");
  CHECK(model.parameters()[0] == 1.0);
  tasks.clear();
  KSHOT_CHECK_THROWS_WITH_ALL(reptile.step(model, tasks), std::invalid_argument, "tasks is empty");
}
