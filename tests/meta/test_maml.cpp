// SPDX-License-Identifier: MIT
// Task losses (value, gradient, R-operator) and MAML / ANIL: Hessian-vector products of an MLP through the
// task loss, the exact second-order meta-gradient against central differences of the whole inner loop, first
// order against the query gradient at the adapted parameters, ANIL's adapted range, restoring the model,
// meta-batches, bitwise identity at 1 and 2 threads, bad input.
#include "meta/meta_checks.hpp"
#include "test_util.hpp"

#include <kshot/core/threads.hpp>
#include <kshot/meta/maml.hpp>
#include <kshot/meta/meta_sgd.hpp>
#include <kshot/meta/task_loss.hpp>
#include <kshot/nn/sequential.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <vector>

using kshot::CrossEntropyLoss;
using kshot::Index;
using kshot::LabelVector;
using kshot::Maml;
using kshot::MseLoss;
using kshot::RowMatrixX;
using kshot::Sequential;
using kshot::VectorX;
using kshot::test::gradient_rel_error;
using kshot::test::numeric_vector_gradient;
using kshot::test::smooth_mlp;
using kshot::test::random_matrix;

namespace {

LabelVector random_labels(Index n, Index classes, std::uint64_t seed) {
  kshot::RandomStream rng(seed);
  LabelVector t(n);
  for (Index i = 0; i < n; ++i) t[i] = static_cast<kshot::Label>(rng.uniform_index(classes));
  return t;
}

/// The meta-gradient of `maml` against central differences of maml.evaluate() over the parameters.
template <class Loss>
double meta_gradient_error(Maml<double, Loss>& maml, Sequential<double>& model, const RowMatrixX<double>& xs,
                           const typename Loss::Target& ys, const RowMatrixX<double>& xq,
                           const typename Loss::Target& yq) {
  const VectorX<double> theta = model.parameters();
  VectorX<double> g(model.num_parameters());
  const double value = maml.meta_gradient(model, xs, ys, xq, yq, g);
  CHECK(value == doctest::Approx(maml.evaluate(model, xs, ys, xq, yq)).epsilon(1e-12));
  const VectorX<double> num = numeric_vector_gradient(
      [&](const VectorX<double>& p) {
        model.parameters() = p;
        return static_cast<double>(maml.evaluate(model, xs, ys, xq, yq));
      },
      theta);
  model.parameters() = theta;
  return gradient_rel_error(g, num);
}

}  // namespace

TEST_CASE_TEMPLATE("MseLoss: value, gradient and R-operator", Scalar, float, double) {
  RowMatrixX<Scalar> y(2, 2), t(2, 2), dy(2, 2), rdy(2, 2);
  y << 1, 2, 3, 4;
  t << 0, 2, 5, 4;
  MseLoss<Scalar> loss;
  CHECK(loss.evaluate(y, t) == doctest::Approx(5.0 / 4.0));  // (1 + 0 + 4 + 0) / 4
  CHECK(loss.evaluate(y, t, dy) == doctest::Approx(1.25));
  CHECK(dy(0, 0) == doctest::Approx(0.5));   // 2 * 1 / 4
  CHECK(dy(1, 0) == doctest::Approx(-1.0));  // 2 * (-2) / 4
  loss.evaluate_r(y, t, y, rdy);
  CHECK(rdy(1, 1) == doctest::Approx(2.0));  // 2 * 4 / 4
  // Empty output: 0, finite.
  RowMatrixX<Scalar> e(0, 3), de(0, 3);
  CHECK(loss.evaluate(e, e, de) == Scalar(0));
}

TEST_CASE("MseLoss and CrossEntropyLoss: gradient and R-operator against central differences") {
  const RowMatrixX<double> y = random_matrix<double>(5, 4, 1);
  const RowMatrixX<double> ry = random_matrix<double>(5, 4, 2);
  RowMatrixX<double> dy(5, 4), rdy(5, 4), up(5, 4), down(5, 4);
  const double h = 1e-6;
  SUBCASE("mse") {
    const RowMatrixX<double> t = random_matrix<double>(5, 4, 3);
    MseLoss<double> loss;
    loss.evaluate(y, t, dy);
    CHECK(gradient_rel_error(dy, kshot::test::numeric_gradient(
                                     [&](const RowMatrixX<double>& p) { return loss.evaluate(p, t); }, y)) < 1e-8);
    loss.evaluate_r(y, t, ry, rdy);
    loss.evaluate(y + h * ry, t, up);
    loss.evaluate(y - h * ry, t, down);
    CHECK(gradient_rel_error(rdy, (up - down) / (2 * h)) < 1e-8);
  }
  SUBCASE("cross entropy") {
    const LabelVector t = random_labels(5, 4, 3);
    CrossEntropyLoss<double> loss;
    const double value = loss.evaluate(y, t, dy);
    CHECK(value == doctest::Approx(loss.evaluate(y, t)).epsilon(1e-14));
    CHECK(gradient_rel_error(dy, kshot::test::numeric_gradient(
                                     [&](const RowMatrixX<double>& p) { return loss.evaluate(p, t); }, y)) < 1e-8);
    loss.evaluate_r(y, t, ry, rdy);
    loss.evaluate(y + h * ry, t, up);
    loss.evaluate(y - h * ry, t, down);
    CHECK(gradient_rel_error(rdy, (up - down) / (2 * h)) < 1e-8);
  }
}

TEST_CASE_TEMPLATE("CrossEntropyLoss: hand values, large logits stay finite", Scalar, float, double) {
  RowMatrixX<Scalar> y(2, 2), dy(2, 2);
  y << 0, 0, Scalar(1000), Scalar(-1000);
  LabelVector t(2);
  t << 0, 1;
  CrossEntropyLoss<Scalar> loss;
  // Row 0: log 2; row 1: 2000 (log-sum-exp keeps it finite). Mean over rows.
  CHECK(loss.evaluate(y, t, dy) == doctest::Approx((std::log(2.0) + 2000.0) / 2.0));
  CHECK(dy(0, 0) == doctest::Approx(-0.25));
  CHECK(dy(1, 1) == doctest::Approx(-0.5));
  CHECK(kshot::detail::all_finite(dy));
}

TEST_CASE("Hessian-vector product of an MLP through the task losses matches central differences of the gradient") {
  Sequential<double> model = smooth_mlp({3, 6, 5, 4}, 7);
  const RowMatrixX<double> x = random_matrix<double>(8, 3, 8);
  VectorX<double> v(model.num_parameters());
  kshot::RandomStream rng(9);
  for (Index i = 0; i < v.size(); ++i) v[i] = rng.normal<double>();
  const VectorX<double> theta = model.parameters();
  auto check_loss = [&](auto& loss, const auto& target) {
    auto gradient = [&](const VectorX<double>& p) {
      model.parameters() = p;
      model.zero_grad();
      const RowMatrixX<double>& y = model.forward(x, false);
      RowMatrixX<double> dy(y.rows(), y.cols());
      loss.evaluate(y, target, dy);
      model.backward(dy);
      return VectorX<double>(model.gradients());
    };
    model.parameters() = theta;
    model.zero_grad();
    const RowMatrixX<double> y = model.forward(x, false);
    RowMatrixX<double> dy(y.rows(), y.cols()), rdy(y.rows(), y.cols());
    loss.evaluate(y, target, dy);
    model.backward(dy);
    const RowMatrixX<double> ry = model.forward_r(v);
    loss.evaluate_r(y, target, ry, rdy);
    VectorX<double> hv(theta.size());
    model.backward_r(dy, rdy, hv);
    const double h = 1e-6;
    const VectorX<double> num = (gradient(theta + h * v) - gradient(theta - h * v)) / (2 * h);
    model.parameters() = theta;
    return gradient_rel_error(hv, num);
  };
  MseLoss<double> mse;
  CrossEntropyLoss<double> ce;
  const double e_mse = check_loss(mse, random_matrix<double>(8, 4, 10));
  const double e_ce = check_loss(ce, random_labels(8, 4, 11));
  INFO("mse " << e_mse << " ce " << e_ce);
  CHECK(e_mse < 1e-7);
  CHECK(e_ce < 1e-7);
}

TEST_CASE("Maml: exact second-order meta-gradient matches central differences of the whole inner loop") {
  Sequential<double> model = smooth_mlp({2, 8, 8, 3}, 21);
  const RowMatrixX<double> xs = random_matrix<double>(6, 2, 22), xq = random_matrix<double>(9, 2, 23);
  for (Index steps : {1, 2, 3}) {
    CAPTURE(steps);
    SUBCASE("mse, every parameter") {
      Maml<double> maml(0.1, false, steps);
      const double e =
          meta_gradient_error(maml, model, xs, random_matrix<double>(6, 3, 24), xq, random_matrix<double>(9, 3, 25));
      INFO("relative error " << e);
      CHECK(e < 1e-7);
    }
    SUBCASE("mse, first order is measurably different (the check sees the Hessian terms)") {
      Maml<double> fomaml(0.1, true, steps);
      const double e =
          meta_gradient_error(fomaml, model, xs, random_matrix<double>(6, 3, 24), xq, random_matrix<double>(9, 3, 25));
      INFO("relative error " << e);
      CHECK(e > 1e-3);
    }
    SUBCASE("cross entropy, every parameter") {
      Maml<double, CrossEntropyLoss<double>> maml(0.5, false, steps);
      const double e = meta_gradient_error(maml, model, xs, random_labels(6, 3, 26), xq, random_labels(9, 3, 27));
      INFO("relative error " << e);
      CHECK(e < 1e-7);
    }
    SUBCASE("mse, ANIL (head only)") {
      auto anil = kshot::make_anil(model, 0.1, steps);
      CHECK(anil.adapted.begin == model.parameter_offset(4));
      const double e =
          meta_gradient_error(anil, model, xs, random_matrix<double>(6, 3, 28), xq, random_matrix<double>(9, 3, 29));
      INFO("relative error " << e);
      CHECK(e < 1e-7);
    }
    SUBCASE("mse, a middle range") {
      Maml<double> maml(0.1, false, steps, kshot::ParameterRange{5, 40});
      const double e =
          meta_gradient_error(maml, model, xs, random_matrix<double>(6, 3, 30), xq, random_matrix<double>(9, 3, 31));
      INFO("relative error " << e);
      CHECK(e < 1e-7);
    }
  }
}

TEST_CASE("Maml: ReLU MLP meta-gradient (Hessian through piecewise-linear layers) against central differences") {
  Sequential<double> model =
      kshot::make_mlp<double>({1, 40, 40, 1}, kshot::Activation::relu, kshot::Init::pytorch_default, 3);
  const RowMatrixX<double> xs = 5.0 * random_matrix<double>(10, 1, 4), xq = 5.0 * random_matrix<double>(10, 1, 5);
  const RowMatrixX<double> ys = xs.array().sin(), yq = xq.array().sin();
  Maml<double> maml(0.01, false, 2);
  const double e = meta_gradient_error(maml, model, xs, ys, xq, yq);
  INFO("relative error " << e);
  CHECK(e < 1e-6);
}

TEST_CASE("Maml: zero inner steps give the query gradient; first order gives the query gradient at theta_K") {
  Sequential<double> model = smooth_mlp({3, 5, 2}, 41);
  const RowMatrixX<double> xs = random_matrix<double>(4, 3, 42), xq = random_matrix<double>(7, 3, 43);
  const RowMatrixX<double> ys = random_matrix<double>(4, 2, 44), yq = random_matrix<double>(7, 2, 45);
  const Index p = model.num_parameters();
  auto query_gradient_at = [&](const VectorX<double>& params) {
    Sequential<double> copy = model;
    copy.parameters() = params;
    copy.zero_grad();
    const RowMatrixX<double>& y = copy.forward(xq, false);
    RowMatrixX<double> dy(y.rows(), y.cols());
    MseLoss<double>().evaluate(y, yq, dy);
    copy.backward(dy);
    return VectorX<double>(copy.gradients());
  };
  Maml<double> maml(0.05, true, 3);
  VectorX<double> adapted(p), g(p);
  maml.adapt(model, xs, ys, adapted);
  maml.meta_gradient(model, xs, ys, xq, yq, g);
  CHECK(kshot::test::max_rel_error(g, query_gradient_at(adapted)) < 1e-13);
  // The hand-written inner loop: θ ← θ − α ∇L_s(θ), three times.
  VectorX<double> theta = model.parameters();
  for (int k = 0; k < 3; ++k) {
    Sequential<double> copy = model;
    copy.parameters() = theta;
    copy.zero_grad();
    const RowMatrixX<double>& y = copy.forward(xs, false);
    RowMatrixX<double> dy(y.rows(), y.cols());
    MseLoss<double>().evaluate(y, ys, dy);
    copy.backward(dy);
    theta -= 0.05 * copy.gradients();
  }
  CHECK(kshot::test::max_rel_error(adapted, theta) < 1e-14);
  maml.inner_steps = 0;
  maml.first_order = false;
  maml.meta_gradient(model, xs, ys, xq, yq, g);
  CHECK(kshot::test::max_rel_error(g, query_gradient_at(model.parameters())) < 1e-14);
}

TEST_CASE("Maml: the model's parameters and gradients are restored; ANIL moves only the head") {
  Sequential<double> model = smooth_mlp({3, 6, 4, 2}, 51);
  model.gradients().setConstant(0.25);
  const VectorX<double> theta = model.parameters(), grads = model.gradients();
  const RowMatrixX<double> xs = random_matrix<double>(5, 3, 52), xq = random_matrix<double>(5, 3, 53);
  const RowMatrixX<double> ys = random_matrix<double>(5, 2, 54), yq = random_matrix<double>(5, 2, 55);
  auto anil = kshot::make_anil(model, 0.1, 2);
  const kshot::ParameterRange head = anil.adapted;
  CHECK(head.begin == model.parameter_offset(4));
  CHECK(head.size == 4 * 2 + 2);
  VectorX<double> adapted(model.num_parameters()), g(model.num_parameters());
  anil.adapt(model, xs, ys, adapted);
  CHECK(adapted.head(head.begin) == theta.head(head.begin));
  CHECK((adapted.tail(head.size) - theta.tail(head.size)).norm() > 1e-3);
  anil.meta_gradient(model, xs, ys, xq, yq, g);
  CHECK(g.head(head.begin).norm() > 0);  // the body still gets a meta-gradient
  CHECK(std::memcmp(model.parameters().data(), theta.data(), sizeof(double) * static_cast<std::size_t>(theta.size())) ==
        0);
  CHECK(std::memcmp(model.gradients().data(), grads.data(), sizeof(double) * static_cast<std::size_t>(grads.size())) ==
        0);
  // Also after an exception in the middle (a diverging inner loop).
  Maml<double> wild(1e300, false, 3);
  CHECK_THROWS_AS(wild.meta_gradient(model, xs, ys, xq, yq, g), std::invalid_argument);
  CHECK(model.parameters() == theta);
  CHECK(model.gradients() == grads);
}

TEST_CASE_TEMPLATE("Maml: a meta-batch is the mean of the tasks' meta-gradients, in float and double", Scalar, float,
                   double) {
  Sequential<Scalar> model =
      kshot::make_mlp<Scalar>({2, 10, 1}, kshot::Activation::tanh, kshot::Init::pytorch_default, 61);
  std::vector<kshot::MetaTask<Scalar, MseLoss<Scalar>>> tasks(3);
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    tasks[i].x_support = random_matrix<Scalar>(5, 2, 100 + i);
    tasks[i].y_support = random_matrix<Scalar>(5, 1, 200 + i);
    tasks[i].x_query = random_matrix<Scalar>(8, 2, 300 + i);
    tasks[i].y_query = random_matrix<Scalar>(8, 1, 400 + i);
  }
  Maml<Scalar> maml(0.1, false, 2);
  VectorX<Scalar> mean(model.num_parameters()), one(model.num_parameters()), sum(model.num_parameters());
  const Scalar value = maml.meta_gradient(model, tasks, mean);
  sum.setZero();
  Scalar total = 0;
  for (const auto& t : tasks) {
    total += maml.meta_gradient(model, t.x_support, t.y_support, t.x_query, t.y_query, one);
    sum += one;
  }
  CHECK(value == doctest::Approx(total / 3).epsilon(1e-6));
  CHECK(kshot::test::max_rel_error(mean, sum / Scalar(3)) < kshot::test::Tolerances<Scalar>::rel);

  // float agrees with double.
  if constexpr (std::is_same_v<Scalar, float>) {
    Sequential<double> md =
        kshot::make_mlp<double>({2, 10, 1}, kshot::Activation::tanh, kshot::Init::pytorch_default, 61);
    md.parameters() = model.parameters().template cast<double>();
    std::vector<kshot::MetaTask<double, MseLoss<double>>> td(3);
    for (std::size_t i = 0; i < 3; ++i) {
      td[i].x_support = tasks[i].x_support.template cast<double>();
      td[i].y_support = tasks[i].y_support.template cast<double>();
      td[i].x_query = tasks[i].x_query.template cast<double>();
      td[i].y_query = tasks[i].y_query.template cast<double>();
    }
    Maml<double> maml_d(0.1, false, 2);
    VectorX<double> gd(md.num_parameters());
    maml_d.meta_gradient(md, td, gd);
    CHECK(kshot::test::max_rel_error(mean.template cast<double>(), gd) < 1e-4);
  }
}

TEST_CASE_TEMPLATE("Maml: bitwise identical meta-gradients at 1 and 2 threads", Scalar, float, double) {
  // 512 x 256 support and query sets through 256-wide layers: the model's products take their parallel path.
  Sequential<Scalar> model =
      kshot::make_mlp<Scalar>({256, 256, 256, 4}, kshot::Activation::tanh, kshot::Init::pytorch_default, 71);
  REQUIRE(kshot::detail::worth_parallel(512, 512.0 * 256 * 256) == (kshot::max_threads() > 1));
  const RowMatrixX<Scalar> xs = random_matrix<Scalar>(512, 256, 72), xq = random_matrix<Scalar>(512, 256, 73);
  const RowMatrixX<Scalar> ys = random_matrix<Scalar>(512, 4, 74), yq = random_matrix<Scalar>(512, 4, 75);
  auto run = [&](int threads) {
    kshot::ThreadCountGuard guard(threads);
    Maml<Scalar> maml(0.05, false, 2);
    VectorX<Scalar> g(model.num_parameters());
    maml.meta_gradient(model, xs, ys, xq, yq, g);
    return g;
  };
  const VectorX<Scalar> one = run(1), two = run(2);
  CHECK(std::memcmp(one.data(), two.data(), sizeof(Scalar) * static_cast<std::size_t>(one.size())) == 0);
  CHECK(one.norm() > 0);
}

TEST_CASE_TEMPLATE("Maml and MetaSgd: sine-sized meta-batches run their tasks in parallel, bitwise as serially", Scalar,
                   float, double) {
  // 25 tasks of 10 + 10 points on a 1-40-40-1 MLP: enough work for the task-parallel path at 2 threads.
  Sequential<Scalar> model =
      kshot::make_mlp<Scalar>({1, 40, 40, 1}, kshot::Activation::relu, kshot::Init::pytorch_default, 91);
  std::vector<kshot::MetaTask<Scalar, MseLoss<Scalar>>> tasks(25);
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    tasks[i].x_support = Scalar(5) * random_matrix<Scalar>(10, 1, 1000 + i);
    tasks[i].y_support = random_matrix<Scalar>(10, 1, 2000 + i);
    tasks[i].x_query = Scalar(5) * random_matrix<Scalar>(10, 1, 3000 + i);
    tasks[i].y_query = random_matrix<Scalar>(10, 1, 4000 + i);
  }
  const Index p = model.num_parameters();
  const std::size_t bytes = sizeof(Scalar) * static_cast<std::size_t>(p);
  Maml<Scalar> maml(0.01, false, 2);
  kshot::MetaSgd<Scalar> meta(model, 0.01, 2);
  auto run = [&](int threads, VectorX<Scalar>& g, VectorX<Scalar>& gm, VectorX<Scalar>& ga, Scalar& value) {
    kshot::ThreadCountGuard guard(threads);
    value = maml.meta_gradient(model, tasks, g);
    meta.meta_gradient(model, tasks, gm, ga);
  };
  VectorX<Scalar> g1(p), g2(p), gm1(p), gm2(p), ga1(p), ga2(p);
  Scalar v1 = 0, v2 = 0;
  run(1, g1, gm1, ga1, v1);
  run(2, g2, gm2, ga2, v2);
  CHECK(std::memcmp(g1.data(), g2.data(), bytes) == 0);
  CHECK(std::memcmp(gm1.data(), gm2.data(), bytes) == 0);
  CHECK(std::memcmp(ga1.data(), ga2.data(), bytes) == 0);
  CHECK(std::memcmp(&v1, &v2, sizeof(Scalar)) == 0);
  // The same bits as single-task calls summed in order.
  VectorX<Scalar> one(p), sum(p);
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    maml.meta_gradient(model, tasks[i].x_support, tasks[i].y_support, tasks[i].x_query, tasks[i].y_query, one);
    if (i == 0)
      sum = one;
    else
      sum += one;
  }
  sum /= Scalar(25);
  CHECK(std::memcmp(sum.data(), g2.data(), bytes) == 0);
  // A second model of another shape gets fresh worker copies.
  Sequential<Scalar> other = kshot::make_mlp<Scalar>({1, 30, 1}, kshot::Activation::tanh);
  VectorX<Scalar> go1(other.num_parameters()), go2(other.num_parameters());
  {
    kshot::ThreadCountGuard guard(1);
    maml.meta_gradient(other, tasks, go1);
  }
  {
    kshot::ThreadCountGuard guard(2);
    maml.meta_gradient(other, tasks, go2);
  }
  CHECK(go1 == go2);
}

TEST_CASE("Maml: bad input throws naming the call, the argument and the numbers") {
  Sequential<double> model = smooth_mlp({3, 4, 2}, 81);
  const RowMatrixX<double> xs = random_matrix<double>(5, 3, 82), ys = random_matrix<double>(5, 2, 83);
  VectorX<double> g(model.num_parameters()), short_g(3);
  Maml<double> maml;
  maml.inner_steps = -1;
  KSHOT_CHECK_THROWS_WITH_ALL(maml.meta_gradient(model, xs, ys, xs, ys, g), std::invalid_argument,
                              "kshot::Maml::meta_gradient()", "inner_steps must be >= 0, got -1");
  maml.inner_steps = 1;
  maml.inner_lr = -0.5;
  KSHOT_CHECK_THROWS_WITH_ALL(maml.adapt(model, xs, ys, g), std::invalid_argument, "kshot::Maml::adapt()",
                              "inner_lr must be finite and >= 0, got -0.5");
  maml.inner_lr = std::nan("");
  CHECK_THROWS_AS(maml.adapt(model, xs, ys, g), std::invalid_argument);
  maml.inner_lr = 0.1;
  maml.adapted = kshot::ParameterRange{10, 100};
  KSHOT_CHECK_THROWS_WITH_ALL(maml.adapt(model, xs, ys, g), std::invalid_argument, "the adapted range [10, 110)",
                              "26 parameters");
  maml.adapted = kshot::ParameterRange{-1, 2};
  KSHOT_CHECK_THROWS_WITH_ALL(maml.adapt(model, xs, ys, g), std::invalid_argument, "begins at -1");
  maml.adapted = {};
  KSHOT_CHECK_THROWS_WITH_ALL(maml.meta_gradient(model, xs, ys, xs, ys, short_g), std::invalid_argument,
                              "meta_grad has 3 entries but the model has 26 parameters");
  KSHOT_CHECK_THROWS_WITH_ALL(maml.adapt(model, xs, ys, short_g), std::invalid_argument,
                              "adapted_parameters has 3 entries");
  const RowMatrixX<double> wide = random_matrix<double>(5, 4, 84);
  KSHOT_CHECK_THROWS_WITH_ALL(maml.meta_gradient(model, wide, ys, xs, ys, g), std::invalid_argument,
                              "x_support has 4 columns but the model's input_dim is 3");
  const RowMatrixX<double> short_y = random_matrix<double>(4, 2, 85);
  KSHOT_CHECK_THROWS_WITH_ALL(maml.meta_gradient(model, xs, ys, xs, short_y, g), std::invalid_argument,
                              "y_query is 4 x 2 but must be 5 x 2");
  RowMatrixX<double> bad = xs;
  bad(2, 1) = std::nan("");
  KSHOT_CHECK_THROWS_WITH_ALL(maml.meta_gradient(model, xs, ys, bad, ys, g), std::invalid_argument,
                              "x_query has a non-finite value", "row 2, column 1");
  Maml<double, CrossEntropyLoss<double>> ce;
  LabelVector labels(5);
  labels << 0, 1, 2, 1, 0;
  KSHOT_CHECK_THROWS_WITH_ALL(ce.meta_gradient(model, xs, labels, xs, labels, g), std::out_of_range,
                              "y_support[2] = 2 is outside [0, 2)");
  std::vector<kshot::MetaTask<double, CrossEntropyLoss<double>>> ce_tasks(1);
  ce_tasks[0] = {xs, labels, xs, labels};
  KSHOT_CHECK_THROWS_WITH_ALL(ce.meta_gradient(model, ce_tasks, g), std::out_of_range,
                              "kshot::Maml::meta_gradient(): task 0: y_support[2] = 2 is outside [0, 2)");
  std::vector<kshot::MetaTask<double, MseLoss<double>>> none;
  KSHOT_CHECK_THROWS_WITH_ALL(maml.meta_gradient(model, none, g), std::invalid_argument, "tasks is empty");
  std::vector<kshot::MetaTask<double, MseLoss<double>>> tasks(2);
  tasks[0] = {xs, ys, xs, ys};
  tasks[1] = {xs, short_y, xs, ys};
  KSHOT_CHECK_THROWS_WITH_ALL(maml.meta_gradient(model, tasks, g), std::invalid_argument,
                              "kshot::Maml::meta_gradient(): task 1: y_support is 4 x 2");
  Sequential<double> empty;
  KSHOT_CHECK_THROWS_WITH_ALL(maml.meta_gradient(empty, xs, ys, xs, ys, g), std::invalid_argument,
                              "the model has no layers");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::head_range(model, 3), std::invalid_argument, "layers is 3",
                              "only 2 layers with parameters");
}
