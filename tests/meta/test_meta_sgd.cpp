// SPDX-License-Identifier: MIT
// Meta-SGD: the meta-gradients with respect to the parameters and to the learned learning rates against
// central differences of the whole inner loop (second order), the first-order formula, equality with MAML
// when every rate equals MAML's learning rate, meta-batches, bitwise identity at 1 and 2 threads, bad input.
#include "meta/meta_checks.hpp"
#include "test_util.hpp"

#include <kshot/core/threads.hpp>
#include <kshot/meta/maml.hpp>
#include <kshot/meta/meta_sgd.hpp>
#include <kshot/meta/task_loss.hpp>
#include <kshot/nn/adam.hpp>
#include <kshot/nn/sequential.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <stdexcept>
#include <vector>

using kshot::CrossEntropyLoss;
using kshot::Index;
using kshot::LabelVector;
using kshot::MetaSgd;
using kshot::MseLoss;
using kshot::RowMatrixX;
using kshot::Sequential;
using kshot::VectorX;
using kshot::test::gradient_rel_error;
using kshot::test::numeric_vector_gradient;
using kshot::test::smooth_mlp;
using kshot::test::random_matrix;

namespace {

/// Rates drawn around `mean`, so that each rate matters separately.
void randomize_rates(MetaSgd<double, MseLoss<double>>& meta, double mean, std::uint64_t seed) {
  kshot::RandomStream rng(seed);
  for (Index i = 0; i < meta.learning_rates().size(); ++i)
    meta.learning_rates()[i] = mean * (1.0 + 0.5 * rng.uniform<double>(-1.0, 1.0));
}

struct Errors {
  double theta, alpha;
};

Errors meta_sgd_errors(MetaSgd<double, MseLoss<double>>& meta, Sequential<double>& model, const RowMatrixX<double>& xs,
                       const RowMatrixX<double>& ys, const RowMatrixX<double>& xq, const RowMatrixX<double>& yq) {
  const VectorX<double> theta = model.parameters();
  const VectorX<double> alpha = meta.learning_rates();
  VectorX<double> g(model.num_parameters()), ga(alpha.size());
  meta.meta_gradient(model, xs, ys, xq, yq, g, ga);
  const VectorX<double> num_theta = numeric_vector_gradient(
      [&](const VectorX<double>& p) {
        model.parameters() = p;
        return meta.evaluate(model, xs, ys, xq, yq);
      },
      theta);
  model.parameters() = theta;
  const VectorX<double> num_alpha = numeric_vector_gradient(
      [&](const VectorX<double>& a) {
        meta.learning_rates() = a;
        return meta.evaluate(model, xs, ys, xq, yq);
      },
      alpha);
  meta.learning_rates() = alpha;
  return {gradient_rel_error(g, num_theta), gradient_rel_error(ga, num_alpha)};
}

}  // namespace

TEST_CASE("MetaSgd: exact meta-gradients with respect to theta and alpha match central differences") {
  Sequential<double> model = smooth_mlp({2, 7, 6, 2}, 5);
  const RowMatrixX<double> xs = random_matrix<double>(6, 2, 6), xq = random_matrix<double>(8, 2, 7);
  const RowMatrixX<double> ys = random_matrix<double>(6, 2, 8), yq = random_matrix<double>(8, 2, 9);
  for (Index steps : {1, 2, 3}) {
    CAPTURE(steps);
    SUBCASE("every parameter") {
      MetaSgd<double> meta(model, 0.1, steps);
      randomize_rates(meta, 0.1, 10);
      const Errors e = meta_sgd_errors(meta, model, xs, ys, xq, yq);
      INFO("theta " << e.theta << " alpha " << e.alpha);
      CHECK(e.theta < 1e-7);
      CHECK(e.alpha < 1e-7);
    }
    SUBCASE("head only") {
      MetaSgd<double> meta(model, 0.1, steps, false, kshot::head_range(model));
      CHECK(meta.learning_rates().size() == 6 * 2 + 2);
      randomize_rates(meta, 0.1, 11);
      const Errors e = meta_sgd_errors(meta, model, xs, ys, xq, yq);
      INFO("theta " << e.theta << " alpha " << e.alpha);
      CHECK(e.theta < 1e-7);
      CHECK(e.alpha < 1e-7);
    }
  }
}

TEST_CASE("MetaSgd: first order is the query gradient at theta_K and -sum_k lambda_K o g_k for the rates") {
  Sequential<double> model = smooth_mlp({3, 5, 2}, 21);
  const RowMatrixX<double> xs = random_matrix<double>(4, 3, 22), xq = random_matrix<double>(6, 3, 23);
  const RowMatrixX<double> ys = random_matrix<double>(4, 2, 24), yq = random_matrix<double>(6, 2, 25);
  MetaSgd<double> meta(model, 0.05, 2, true);
  randomize_rates(meta, 0.05, 26);
  const VectorX<double> alpha = meta.learning_rates();
  const Index p = model.num_parameters();
  // By hand.
  auto gradient_at = [&](const VectorX<double>& params, const RowMatrixX<double>& x, const RowMatrixX<double>& t) {
    Sequential<double> copy = model;
    copy.parameters() = params;
    copy.zero_grad();
    const RowMatrixX<double>& y = copy.forward(x, false);
    RowMatrixX<double> dy(y.rows(), y.cols());
    MseLoss<double>().evaluate(y, t, dy);
    copy.backward(dy);
    return VectorX<double>(copy.gradients());
  };
  const VectorX<double> theta0 = model.parameters();
  const VectorX<double> g0 = gradient_at(theta0, xs, ys);
  const VectorX<double> theta1 = theta0 - alpha.cwiseProduct(g0);
  const VectorX<double> g1 = gradient_at(theta1, xs, ys);
  const VectorX<double> theta2 = theta1 - alpha.cwiseProduct(g1);
  const VectorX<double> lambda = gradient_at(theta2, xq, yq);
  VectorX<double> g(p), ga(p), adapted(p);
  meta.adapt(model, xs, ys, adapted);
  CHECK(kshot::test::max_rel_error(adapted, theta2) < 1e-14);
  meta.meta_gradient(model, xs, ys, xq, yq, g, ga);
  CHECK(kshot::test::max_rel_error(g, lambda) < 1e-13);
  CHECK(kshot::test::max_rel_error(ga, -(lambda.cwiseProduct(g1) + lambda.cwiseProduct(g0))) < 1e-13);
}

TEST_CASE("MetaSgd: with every rate equal to MAML's learning rate, the theta meta-gradient is MAML's") {
  Sequential<double> model = smooth_mlp({2, 6, 1}, 31);
  const RowMatrixX<double> xs = random_matrix<double>(5, 2, 32), xq = random_matrix<double>(5, 2, 33);
  const RowMatrixX<double> ys = random_matrix<double>(5, 1, 34), yq = random_matrix<double>(5, 1, 35);
  MetaSgd<double> meta(model, 0.125, 2);
  kshot::Maml<double> maml(0.125, false, 2);
  VectorX<double> g(model.num_parameters()), ga(model.num_parameters()), gm(model.num_parameters());
  const double a = meta.meta_gradient(model, xs, ys, xq, yq, g, ga);
  const double b = maml.meta_gradient(model, xs, ys, xq, yq, gm);
  CHECK(a == b);
  CHECK(kshot::test::max_rel_error(g, gm) < 1e-14);
}

TEST_CASE_TEMPLATE("MetaSgd: meta-batch mean, an optimizer steps the rates, bitwise at 1 and 2 threads", Scalar, float,
                   double) {
  Sequential<Scalar> model =
      kshot::make_mlp<Scalar>({256, 256, 256, 4}, kshot::Activation::tanh, kshot::Init::pytorch_default, 41);
  std::vector<kshot::MetaTask<Scalar, MseLoss<Scalar>>> tasks(2);
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    tasks[i].x_support = random_matrix<Scalar>(512, 256, 50 + i);
    tasks[i].y_support = random_matrix<Scalar>(512, 4, 60 + i);
    tasks[i].x_query = random_matrix<Scalar>(512, 256, 70 + i);
    tasks[i].y_query = random_matrix<Scalar>(512, 4, 80 + i);
  }
  MetaSgd<Scalar> meta(model, 0.05, 1);
  VectorX<Scalar> g(model.num_parameters()), ga(model.num_parameters());
  auto run = [&](int threads) {
    kshot::ThreadCountGuard guard(threads);
    meta.meta_gradient(model, tasks, g, ga);
    VectorX<Scalar> both(2 * g.size());
    both << g, ga;
    return both;
  };
  const VectorX<Scalar> one = run(1), two = run(2);
  CHECK(std::memcmp(one.data(), two.data(), sizeof(Scalar) * static_cast<std::size_t>(one.size())) == 0);
  VectorX<Scalar> g0(g.size()), ga0(g.size()), g1(g.size()), ga1(g.size());
  meta.meta_gradient(model, tasks[0].x_support, tasks[0].y_support, tasks[0].x_query, tasks[0].y_query, g0, ga0);
  meta.meta_gradient(model, tasks[1].x_support, tasks[1].y_support, tasks[1].x_query, tasks[1].y_query, g1, ga1);
  CHECK(kshot::test::max_rel_error(one.head(g.size()), (g0 + g1) / Scalar(2)) < kshot::test::Tolerances<Scalar>::rel);
  CHECK(kshot::test::max_rel_error(one.tail(g.size()), (ga0 + ga1) / Scalar(2)) < kshot::test::Tolerances<Scalar>::rel);
  kshot::Adam<Scalar> opt(1e-3);
  const VectorX<Scalar> before = meta.learning_rates();
  opt.step(meta.learning_rates(), ga);
  CHECK((meta.learning_rates() - before).norm() > 0);
}

TEST_CASE("MetaSgd: bad input") {
  Sequential<double> model = smooth_mlp({3, 4, 2}, 91);
  const RowMatrixX<double> xs = random_matrix<double>(5, 3, 92), ys = random_matrix<double>(5, 2, 93);
  VectorX<double> g(model.num_parameters()), ga(model.num_parameters()), short_v(2);
  MetaSgd<double> unset;
  KSHOT_CHECK_THROWS_WITH_ALL(unset.meta_gradient(model, xs, ys, xs, ys, g, ga), std::invalid_argument,
                              "kshot::MetaSgd::meta_gradient()", "learning_rates() has 0 entries",
                              "adapted range has 26 parameters");
  MetaSgd<double> meta(model, 0.1);
  KSHOT_CHECK_THROWS_WITH_ALL(meta.meta_gradient(model, xs, ys, xs, ys, g, short_v), std::invalid_argument,
                              "rate_grad has 2 entries but there are 26 learning rates");
  meta.inner_steps = -2;
  KSHOT_CHECK_THROWS_WITH_ALL(meta.adapt(model, xs, ys, g), std::invalid_argument, "kshot::MetaSgd::adapt()",
                              "inner_steps must be >= 0, got -2");
  meta.inner_steps = 1;
  meta.learning_rates()[3] = std::numeric_limits<double>::infinity();
  KSHOT_CHECK_THROWS_WITH_ALL(meta.adapt(model, xs, ys, g), std::invalid_argument, "learning_rates() has a non-finite");
  KSHOT_CHECK_THROWS_WITH_ALL(meta.initialize(3, std::nan("")), std::invalid_argument, "lr must be finite");
  KSHOT_CHECK_THROWS_WITH_ALL(MetaSgd<double>(model, 0.1, 1, false, kshot::ParameterRange{20, 10}),
                              std::invalid_argument, "kshot::MetaSgd::MetaSgd()", "[20, 30)");
}
