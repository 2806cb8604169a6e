// SPDX-License-Identifier: MIT
// Matching networks and the closed-form heads (R2D2's ridge head, the logistic-regression baseline):
// the easyfsl reference case, central finite differences for every gradient, toy cases with known
// answers, convergence, bad input and float against double.
#include <kshot/fewshot/common.hpp>
#include <kshot/fewshot/logistic_head.hpp>
#include <kshot/fewshot/matching_networks.hpp>
#include <kshot/fewshot/ridge_head.hpp>

#include "reference.hpp"
#include "test_util.hpp"

#include <cmath>
#include <limits>
#include <type_traits>

using namespace kshot;
using kshot::test::gradient_rel_error;
using kshot::test::max_rel_error;
using kshot::test::numeric_gradient;
using kshot::test::random_matrix;

static_assert(std::is_copy_constructible_v<MatchingNetworks<float>> && std::is_copy_assignable_v<MatchingNetworks<double>>);
static_assert(std::is_copy_constructible_v<RidgeHead<float>> && std::is_copy_assignable_v<RidgeHead<double>>);
static_assert(std::is_copy_constructible_v<LogisticHead<float>> && std::is_copy_assignable_v<LogisticHead<double>>);

namespace {

LabelVector cyclic_labels(Index n, Index classes) {
  LabelVector l(n);
  for (Index i = 0; i < n; ++i) l[i] = static_cast<Label>(i % classes);
  return l;
}

/// Central difference of a scalar function of one scalar.
template <class F>
double numeric_derivative(F&& f, double x, double h = 1e-6) {
  return (f(x + h) - f(x - h)) / (2 * h);
}

/// Support and query gradients of `model.loss` against central differences.
template <class Model>
void check_embedding_gradients(Model model, const RowMatrixX<double>& s, const LabelVector& sl, const RowMatrixX<double>& q,
                               const LabelVector& ql, double tol = 1e-6) {
  RowMatrixX<double> gs(s.rows(), s.cols()), gq(q.rows(), q.cols());
  if constexpr (std::is_same_v<Model, RidgeHead<double>>) {
    RidgeHeadGradient<double> gp;
    model.loss(s, sl, q, ql, gs, gq, gp);
  } else {
    model.loss(s, sl, q, ql, gs, gq);
  }
  REQUIRE(gs.allFinite());
  REQUIRE(gq.allFinite());
  Model probe = model;
  const RowMatrixX<double> ns = numeric_gradient([&](const RowMatrixX<double>& x) { return probe.loss(x, sl, q, ql); }, s);
  const RowMatrixX<double> nq = numeric_gradient([&](const RowMatrixX<double>& x) { return probe.loss(s, sl, x, ql); }, q);
  const double es = gradient_rel_error(gs, ns), eq = gradient_rel_error(gq, nq);
  INFO("support error " << es << ", query error " << eq);
  CHECK(es < tol);
  CHECK(eq < tol);
}

/// Ridge gradients with respect to scale, bias and lambda against central differences.
void check_ridge_parameter_gradients(const RidgeHead<double>& head, const RowMatrixX<double>& s, const LabelVector& sl,
                                     const RowMatrixX<double>& q, const LabelVector& ql) {
  RidgeHead<double> model = head;
  RowMatrixX<double> gs(s.rows(), s.cols()), gq(q.rows(), q.cols());
  RidgeHeadGradient<double> gp;
  model.loss(s, sl, q, ql, gs, gq, gp);
  auto at = [&](auto setter, double value) {
    RidgeHead<double> probe = head;
    setter(probe, value);
    return probe.loss(s, sl, q, ql);
  };
  const double n_scale = numeric_derivative([&](double v) { return at([](RidgeHead<double>& m, double x) { m.set_scale(x); }, v); },
                                            head.scale());
  const double n_lambda = numeric_derivative(
      [&](double v) { return at([](RidgeHead<double>& m, double x) { m.set_lambda(x); }, v); }, head.lambda(),
      1e-4 * head.lambda());
  const double n_bias = numeric_derivative([&](double v) { return at([](RidgeHead<double>& m, double x) { m.set_bias(x); }, v); },
                                           head.bias());
  const double e_scale = std::abs(gp.scale - n_scale) / std::abs(gp.scale + n_scale);
  const double e_lambda = std::abs(gp.lambda - n_lambda) / std::abs(gp.lambda + n_lambda);
  INFO("dscale " << gp.scale << " vs " << n_scale << ", dlambda " << gp.lambda << " vs " << n_lambda << ", dbias "
                 << gp.bias << " vs " << n_bias);
  CHECK(e_scale < 1e-6);
  CHECK(e_lambda < 1e-6);
  // A shared logit offset cancels in the softmax: both derivatives vanish.
  CHECK(std::abs(gp.bias) < 1e-12);
  CHECK(std::abs(n_bias) < 1e-8);
}

/// `classes` tight clusters far apart: support and query draws around the same centres.
struct Clusters {
  RowMatrixX<double> support, query;
  LabelVector support_labels, query_labels;
};

Clusters make_clusters(Index classes, Index shots, Index queries, Index dim, std::uint64_t seed) {
  const RowMatrixX<double> centres = 10.0 * random_matrix<double>(classes, dim, seed);
  Clusters c;
  c.support_labels = cyclic_labels(classes * shots, classes);
  c.query_labels = cyclic_labels(classes * queries, classes);
  c.support = 0.1 * random_matrix<double>(classes * shots, dim, seed + 1);
  c.query = 0.1 * random_matrix<double>(classes * queries, dim, seed + 2);
  for (Index i = 0; i < c.support.rows(); ++i) c.support.row(i) += centres.row(c.support_labels[i]);
  for (Index i = 0; i < c.query.rows(); ++i) c.query.row(i) += centres.row(c.query_labels[i]);
  return c;
}

template <class Model>
double accuracy(Model& model, const RowMatrixX<double>& s, const LabelVector& sl, const RowMatrixX<double>& q,
                const LabelVector& ql) {
  model.fit(s, sl);
  const LabelVector predicted = model.predict(q);
  return double((predicted.array() == ql.array()).count()) / double(ql.size());
}

}  // namespace

// ---- matching networks ---------------------------------------------------------------------------

TEST_CASE("fewshot.matching: matches easyfsl MatchingNetworks with zero LSTMs on the reference case") {
  const auto ref = kshot::test::load_reference("easyfsl_matching_zero_lstm");
  const RowMatrixX<double> s = ref.input("support_features"), q = ref.input("query_features");
  const LabelVector sl = ref.labels("support_labels"), ql = ref.labels("query_labels");
  MatchingNetworks<double> net;
  net.fit(s, sl);
  CHECK(net.num_classes() == 4);
  const RowMatrixX<double> scores = net.scores(q);
  const double scores_error = max_rel_error(scores, ref.output("scores"));
  MESSAGE("scores max rel error " << scores_error);
  CHECK(scores_error < 1e-12);
  const LabelVector predicted = net.predict(q);
  const RowMatrixX<double> want = ref.output("predictions");
  for (Index i = 0; i < predicted.size(); ++i) CHECK(predicted[i] == static_cast<Label>(want(i, 0)));
  RowMatrixX<double> gs(s.rows(), s.cols()), gq(q.rows(), q.cols());
  const double loss = net.loss(s, sl, q, ql, gs, gq);
  CHECK(loss == doctest::Approx(net.loss(s, sl, q, ql)).epsilon(1e-15));
  const double loss_error = std::abs(loss - ref.loss()) / std::abs(ref.loss());
  const double gs_error = gradient_rel_error(gs, ref.grad("support_features"));
  const double gq_error = gradient_rel_error(gq, ref.grad("query_features"));
  MESSAGE("loss rel error " << loss_error << ", support grad error " << gs_error << ", query grad error " << gq_error);
  CHECK(loss_error < 1e-12);
  CHECK(gs_error < 1e-9);
  CHECK(gq_error < 1e-9);
}

TEST_CASE("fewshot.matching: loss gradients match central differences at random points") {
  const RowMatrixX<double> s = random_matrix<double>(9, 5, 31), q = random_matrix<double>(7, 5, 32);
  check_embedding_gradients(MatchingNetworks<double>(), s, cyclic_labels(9, 3), q, cyclic_labels(7, 3));
  // Unequal shots and a larger epsilon.
  const LabelVector uneven = (LabelVector(7) << 0, 1, 1, 2, 2, 2, 2).finished();
  const RowMatrixX<double> s7 = 2.0 * random_matrix<double>(7, 5, 33);
  check_embedding_gradients(MatchingNetworks<double>(1e-2), s7, uneven, q, cyclic_labels(7, 3));
}

TEST_CASE("fewshot.matching: near-degenerate episodes keep finite exact gradients") {
  RowMatrixX<double> s = random_matrix<double>(6, 4, 41);
  s.row(1) = s.row(0);  // duplicated support rows with different labels
  s.row(4) = s.row(3);  // and with the same label (3 and 4 are classes 0 and 1; 0 and 3 share class 0)
  RowMatrixX<double> q = random_matrix<double>(3, 4, 42);
  q.row(0).setZero();  // a zero query attends uniformly
  check_embedding_gradients(MatchingNetworks<double>(), s, cyclic_labels(6, 3), q, cyclic_labels(3, 3));
  // Every query zero.
  check_embedding_gradients(MatchingNetworks<double>(), s, cyclic_labels(6, 3), RowMatrixX<double>::Zero(3, 4),
                            cyclic_labels(3, 3));
  // A zero support row: finite values, and it gets a zero gradient by convention.
  s.row(2).setZero();
  MatchingNetworks<double> net;
  RowMatrixX<double> gs(6, 4), gq(3, 4);
  const double loss = net.loss(s, cyclic_labels(6, 3), q, cyclic_labels(3, 3), gs, gq);
  CHECK(std::isfinite(loss));
  CHECK(gs.allFinite());
  CHECK(gq.allFinite());
  CHECK(gs.row(2).isZero(0));
  CHECK(net.normalized_support().row(2).isZero(0));
  CHECK(net.scores(q).allFinite());
}

TEST_CASE("fewshot.matching: float agrees with double") {
  const RowMatrixX<double> s = random_matrix<double>(10, 6, 51), q = random_matrix<double>(8, 6, 52);
  const LabelVector sl = cyclic_labels(10, 4), ql = cyclic_labels(8, 4);
  MatchingNetworks<double> net_d;
  MatchingNetworks<float> net_f;
  RowMatrixX<double> gs_d(10, 6), gq_d(8, 6);
  RowMatrixX<float> gs_f(10, 6), gq_f(8, 6);
  const double loss_d = net_d.loss(s, sl, q, ql, gs_d, gq_d);
  const float loss_f = net_f.loss(s.cast<float>(), sl, q.cast<float>(), ql, gs_f, gq_f);
  CHECK(std::abs(double(loss_f) - loss_d) < 1e-5 * std::max(1.0, std::abs(loss_d)));
  CHECK(max_rel_error(net_f.scores(q.cast<float>()), net_d.scores(q)) < 1e-4);
  CHECK(gradient_rel_error(gs_f.cast<double>(), gs_d) < 1e-4);
  CHECK(gradient_rel_error(gq_f.cast<double>(), gq_d) < 1e-4);
}

// ---- ridge head ----------------------------------------------------------------------------------

TEST_CASE("fewshot.heads: ridge gradients to support and query match central differences") {
  const RowMatrixX<double> s = random_matrix<double>(9, 5, 61), q = random_matrix<double>(7, 5, 62);
  const LabelVector sl = cyclic_labels(9, 3), ql = cyclic_labels(7, 3);
  check_embedding_gradients(RidgeHead<double>(), s, sl, q, ql);
  check_embedding_gradients(RidgeHead<double>(0.1, 3.0, -0.5), s, sl, q, ql);
  // More support rows than dimensions (X X^T singular without lambda).
  const RowMatrixX<double> s12 = random_matrix<double>(12, 4, 63), q4 = random_matrix<double>(6, 4, 64);
  check_embedding_gradients(RidgeHead<double>(0.5, 2.0), s12, cyclic_labels(12, 4), q4, cyclic_labels(6, 4));
}

TEST_CASE("fewshot.heads: ridge gradients to scale and bias and lambda match central differences") {
  const RowMatrixX<double> s = random_matrix<double>(9, 5, 71), q = random_matrix<double>(7, 5, 72);
  const LabelVector sl = cyclic_labels(9, 3), ql = cyclic_labels(7, 3);
  check_ridge_parameter_gradients(RidgeHead<double>(), s, sl, q, ql);
  check_ridge_parameter_gradients(RidgeHead<double>(0.05, 4.0, 1.5), s, sl, q, ql);
  check_ridge_parameter_gradients(RidgeHead<double>(50.0, 20.0), s, sl, q, ql);
}

TEST_CASE("fewshot.heads: ridge gradients stay exact near degenerate episodes") {
  RowMatrixX<double> s = random_matrix<double>(6, 4, 81);
  s.row(1) = s.row(0);
  s.row(3) = s.row(0);
  RowMatrixX<double> q = random_matrix<double>(3, 4, 82);
  q.row(0).setZero();
  const LabelVector sl = cyclic_labels(6, 3), ql = cyclic_labels(3, 3);
  check_embedding_gradients(RidgeHead<double>(), s, sl, q, ql);
  check_embedding_gradients(RidgeHead<double>(1e-2, 5.0), s, sl, q, ql);
  check_ridge_parameter_gradients(RidgeHead<double>(1e-2, 5.0), s, sl, q, ql);
  check_embedding_gradients(RidgeHead<double>(), s, sl, RowMatrixX<double>::Zero(3, 4), ql);
  // A zero support row and an all-zero support: finite, W = 0 in the second case.
  s.row(2).setZero();
  check_embedding_gradients(RidgeHead<double>(), s, sl, q, ql);
  RidgeHead<double> head;
  RowMatrixX<double> gs(6, 4), gq(3, 4);
  RidgeHeadGradient<double> gp;
  const double loss = head.loss(RowMatrixX<double>::Zero(6, 4), sl, q, ql, gs, gq, gp);
  CHECK(loss == doctest::Approx(std::log(3.0)));
  CHECK(head.weights().isZero(0));
  CHECK(gs.allFinite());
  CHECK(gq.allFinite());
  CHECK(std::isfinite(gp.lambda));
}

TEST_CASE("fewshot.heads: ridge with lambda near zero gives the least-squares interpolant") {
  // X = [1 0 1; 0 1 1], Y = I: X X^T = [2 1; 1 2], (X X^T)^{-1} = [2 -1; -1 2] / 3 and
  // W = X^T (X X^T)^{-1} = [2 -1; -1 2; 1 1] / 3, the minimum-norm solution of X W = Y.
  RowMatrixX<double> x(2, 3);
  x << 1, 0, 1, 0, 1, 1;
  const LabelVector labels = (LabelVector(2) << 0, 1).finished();
  RowMatrixX<double> want(3, 2);
  want << 2, -1, -1, 2, 1, 1;
  want /= 3.0;
  RidgeHead<double> head(1e-10);
  head.fit(x, labels);
  CHECK(max_rel_error(head.weights(), want) < 1e-9);
  // It interpolates the support: its logits are the one-hot targets.
  CHECK(max_rel_error(head.scores(x), RowMatrixX<double>::Identity(2, 2)) < 1e-9);
  // With lambda = 1: (X X^T + I)^{-1} = [3 -1; -1 3] / 8, W = X^T that.
  RidgeHead<double> one(1.0, 2.0, 0.25);
  one.fit(x, labels);
  RowMatrixX<double> want_one(3, 2);
  want_one << 3, -1, -1, 3, 2, 2;
  want_one /= 8.0;
  CHECK(max_rel_error(one.weights(), want_one) < 1e-14);
  const RowMatrixX<double> want_scores = (2.0 * x * want_one).array() + 0.25;
  CHECK(max_rel_error(one.scores(x), want_scores) < 1e-14);
}

TEST_CASE("fewshot.heads: ridge float agrees with double") {
  const RowMatrixX<double> s = random_matrix<double>(10, 6, 91), q = random_matrix<double>(8, 6, 92);
  const LabelVector sl = cyclic_labels(10, 4), ql = cyclic_labels(8, 4);
  RidgeHead<double> head_d(0.5, 2.0, 0.1);
  RidgeHead<float> head_f(0.5f, 2.0f, 0.1f);
  RowMatrixX<double> gs_d(10, 6), gq_d(8, 6);
  RowMatrixX<float> gs_f(10, 6), gq_f(8, 6);
  RidgeHeadGradient<double> gp_d;
  RidgeHeadGradient<float> gp_f;
  const double loss_d = head_d.loss(s, sl, q, ql, gs_d, gq_d, gp_d);
  const float loss_f = head_f.loss(s.cast<float>(), sl, q.cast<float>(), ql, gs_f, gq_f, gp_f);
  CHECK(std::abs(double(loss_f) - loss_d) < 1e-5 * std::max(1.0, std::abs(loss_d)));
  CHECK(max_rel_error(head_f.scores(q.cast<float>()), head_d.scores(q)) < 1e-4);
  CHECK(gradient_rel_error(gs_f.cast<double>(), gs_d) < 1e-4);
  CHECK(gradient_rel_error(gq_f.cast<double>(), gq_d) < 1e-4);
  CHECK(std::abs(double(gp_f.scale) - gp_d.scale) < 1e-4 * std::max(1.0, std::abs(gp_d.scale)));
  CHECK(std::abs(double(gp_f.lambda) - gp_d.lambda) < 1e-4 * std::max(1.0, std::abs(gp_d.lambda)));
}

// ---- logistic head -------------------------------------------------------------------------------

TEST_CASE("fewshot.heads: logistic head converges on separable data") {
  const Clusters c = make_clusters(5, 3, 4, 8, 101);
  LogisticHead<double> head;
  head.fit(c.support, c.support_labels);
  const LogisticFitReport& report = head.report();
  INFO("iterations " << report.iterations << ", gradient " << report.gradient_max);
  CHECK(report.converged);
  CHECK(report.gradient_max <= head.options().tolerance);
  CHECK(report.iterations < head.options().max_iterations);
  REQUIRE(report.objective.size() >= 2);
  CHECK(report.objective.front() == doctest::Approx(std::log(5.0)));
  for (std::size_t k = 1; k < report.objective.size(); ++k) CHECK(report.objective[k] < report.objective[k - 1]);
  CHECK(report.objective.back() < 0.1 * report.objective.front());
  CHECK((head.predict(c.support).array() == c.support_labels.array()).all());
  CHECK(head.weights().rows() == 5);
  CHECK(head.weights().cols() == 8);
  CHECK(head.bias().size() == 5);
  // The gradient of J in the original coordinates vanishes at the returned weights and biases.
  {
    const double n = double(c.support.rows()), l2 = head.options().l2;
    RowMatrixX<double> logits = c.support * head.weights().transpose();
    logits.rowwise() += head.bias().transpose();
    RowMatrixX<double> g(logits.rows(), logits.cols());
    softmax_rows<double>(logits, g);
    for (Index j = 0; j < g.rows(); ++j) g(j, c.support_labels[j]) -= 1.0;
    g /= n;
    const RowMatrixX<double> grad_w = g.transpose() * c.support + l2 * head.weights();
    const VectorX<double> grad_b = g.colwise().sum().transpose();
    CHECK(grad_w.cwiseAbs().maxCoeff() < 1e-5);
    CHECK(grad_b.cwiseAbs().maxCoeff() < 1e-5);
    CHECK(std::abs(head.bias().sum()) < 1e-9);
  }
  // Deterministic: a second fit (and a copy) give bitwise the same weights.
  LogisticHead<double> copy = head;
  copy.fit(c.support, c.support_labels);
  CHECK(copy.weights() == head.weights());
  CHECK(copy.bias() == head.bias());
  // The iteration cap is honoured.
  LogisticHeadOptions capped;
  capped.max_iterations = 3;
  LogisticHead<double> short_run(capped);
  short_run.fit(c.support, c.support_labels);
  CHECK(short_run.report().iterations == 3);
  CHECK_FALSE(short_run.report().converged);
}

TEST_CASE("fewshot.heads: logistic head converges on embeddings with a large common component") {
  // Unit rows sharing one dominant direction, scaled by 30: ill-conditioned without the centring.
  const RowMatrixX<double> common = random_matrix<double>(1, 64, 131);
  RowMatrixX<double> x = 0.1 * random_matrix<double>(25, 64, 132);
  for (Index i = 0; i < x.rows(); ++i) {
    x.row(i) += common;
    x.row(i).normalize();
    x.row(i) *= 30.0;
  }
  const LabelVector labels = cyclic_labels(25, 5);
  LogisticHead<double> head;
  head.fit(x, labels);
  CHECK(head.report().converged);
  CHECK(head.report().iterations < 100);
  CHECK((head.predict(x).array() == labels.array()).all());
}

TEST_CASE("fewshot.heads: logistic head is finite on degenerate support sets") {
  // Identical rows with different labels (not separable) and a zero support: the optimum is W = 0 with
  // the biases at the log class frequencies.
  RowMatrixX<double> s = RowMatrixX<double>::Ones(6, 3);
  const LabelVector sl = (LabelVector(6) << 0, 1, 1, 2, 2, 2).finished();
  LogisticHead<double> head;
  head.fit(s, sl);
  CHECK(head.report().converged);
  const RowMatrixX<double> scores = head.scores(RowMatrixX<double>::Ones(1, 3));
  CHECK(scores.allFinite());
  RowMatrixX<double> probs(1, 3);
  softmax_rows<double>(scores, probs);
  CHECK(probs(0, 0) == doctest::Approx(1.0 / 6.0).epsilon(1e-5));
  CHECK(probs(0, 2) == doctest::Approx(0.5).epsilon(1e-5));
  head.fit(RowMatrixX<double>::Zero(6, 3), sl);
  CHECK(head.weights().isZero(0));
  CHECK(head.scores(s).allFinite());
  // l2 = 0 is allowed; on separable data it stops at the cap or a stall, still finite.
  LogisticHeadOptions no_penalty;
  no_penalty.l2 = 0;
  no_penalty.max_iterations = 50;
  LogisticHead<double> free_head(no_penalty);
  const Clusters c = make_clusters(3, 2, 2, 4, 111);
  free_head.fit(c.support, c.support_labels);
  CHECK(free_head.weights().allFinite());
  CHECK((free_head.predict(c.support).array() == c.support_labels.array()).all());
}

TEST_CASE("fewshot.heads: logistic float agrees with double") {
  const Clusters c = make_clusters(4, 3, 5, 6, 121);
  LogisticHead<double> head_d;
  LogisticHead<float> head_f;
  head_d.fit(c.support, c.support_labels);
  head_f.fit(c.support.cast<float>(), c.support_labels);
  CHECK(head_f.report().converged);
  CHECK(max_rel_error(head_f.scores(c.query.cast<float>()), head_d.scores(c.query)) < 1e-4);
}

// ---- all three -----------------------------------------------------------------------------------

TEST_CASE("fewshot.heads: well-separated clusters give 100 percent accuracy for all three classifiers") {
  for (std::uint64_t seed : {201u, 202u, 203u}) {
    const Clusters c = make_clusters(5, 5, 10, 16, seed);
    MatchingNetworks<double> matching;
    RidgeHead<double> ridge;
    LogisticHead<double> logistic;
    CHECK(accuracy(matching, c.support, c.support_labels, c.query, c.query_labels) == 1.0);
    CHECK(accuracy(ridge, c.support, c.support_labels, c.query, c.query_labels) == 1.0);
    CHECK(accuracy(logistic, c.support, c.support_labels, c.query, c.query_labels) == 1.0);
    CHECK(matching.num_classes() == 5);
    CHECK(ridge.num_classes() == 5);
    CHECK(logistic.num_classes() == 5);
    MatchingNetworks<float> matching_f;
    RidgeHead<float> ridge_f;
    LogisticHead<float> logistic_f;
    const RowMatrixX<float> sf = c.support.cast<float>(), qf = c.query.cast<float>();
    matching_f.fit(sf, c.support_labels);
    ridge_f.fit(sf, c.support_labels);
    logistic_f.fit(sf, c.support_labels);
    CHECK(matching_f.predict(qf) == c.query_labels);
    CHECK(ridge_f.predict(qf) == c.query_labels);
    CHECK(logistic_f.predict(qf) == c.query_labels);
  }
}

TEST_CASE("fewshot.heads: bad input throws with messages naming the call and the numbers") {
  const RowMatrixX<double> s = random_matrix<double>(6, 4, 301), q = random_matrix<double>(3, 4, 302);
  const LabelVector sl = cyclic_labels(6, 3), ql = cyclic_labels(3, 3);
  RowMatrixX<double> gs(6, 4), gq(3, 4), wrong(2, 2);
  const double nan = std::numeric_limits<double>::quiet_NaN();

  // Matching networks.
  MatchingNetworks<double> matching;
  KSHOT_CHECK_THROWS_WITH_ALL(matching.scores(q), std::invalid_argument, "kshot::MatchingNetworks::scores()",
                              "fit() has not been called");
  KSHOT_CHECK_THROWS_WITH_ALL(MatchingNetworks<double>(0.0).fit(s, sl), std::invalid_argument,
                              "kshot::MatchingNetworks::fit()", "epsilon must be finite and > 0, got 0");
  KSHOT_CHECK_THROWS_WITH_ALL(MatchingNetworks<double>(nan).fit(s, sl), std::invalid_argument, "epsilon", "nan");
  KSHOT_CHECK_THROWS_WITH_ALL(matching.fit(s, cyclic_labels(5, 3)), std::invalid_argument,
                              "kshot::MatchingNetworks::fit()", "support_labels has 5 entries but support has 6 rows");
  KSHOT_CHECK_THROWS_WITH_ALL(matching.fit(s, (LabelVector(6) << 0, 2, 0, 2, 0, 2).finished()), std::invalid_argument,
                              "class 1 has no support example");
  matching.fit(s, sl);
  KSHOT_CHECK_THROWS_WITH_ALL(matching.scores(random_matrix<double>(3, 5, 303)), std::invalid_argument,
                              "kshot::MatchingNetworks::scores()", "query has 5 columns but the support had 4");
  KSHOT_CHECK_THROWS_WITH_ALL(matching.scores(q, wrong), std::invalid_argument, "out is 2 x 2 but must be 3 x 3");
  KSHOT_CHECK_THROWS_WITH_ALL(matching.loss(s, sl, q, (LabelVector(3) << 0, 7, 1).finished()), std::invalid_argument,
                              "kshot::MatchingNetworks::loss()", "query_labels[1] = 7 is outside [0, 3)");
  KSHOT_CHECK_THROWS_WITH_ALL(matching.loss(s, sl, q, cyclic_labels(2, 3)), std::invalid_argument,
                              "query_labels has 2 entries but query has 3 rows");
  KSHOT_CHECK_THROWS_WITH_ALL(matching.loss(s, sl, RowMatrixX<double>(0, 4), LabelVector(0)), std::invalid_argument,
                              "the query set is empty");
  KSHOT_CHECK_THROWS_WITH_ALL(matching.loss(s, sl, q, ql, wrong, gq), std::invalid_argument,
                              "kshot::MatchingNetworks::loss()", "grad_support is 2 x 2 but must be 6 x 4");
  KSHOT_CHECK_THROWS_WITH_ALL(matching.loss(s, sl, q, ql, gs, wrong), std::invalid_argument,
                              "grad_query is 2 x 2 but must be 3 x 4");
  RowMatrixX<double> bad_q = q;
  bad_q(2, 1) = nan;
  KSHOT_CHECK_THROWS_WITH_ALL(matching.loss(s, sl, bad_q, ql), std::invalid_argument, "query has a non-finite value",
                              "row 2, column 1");

  // Ridge head.
  RidgeHead<double> ridge;
  RidgeHeadGradient<double> gp;
  KSHOT_CHECK_THROWS_WITH_ALL(ridge.scores(q), std::invalid_argument, "kshot::RidgeHead::scores()",
                              "fit() has not been called");
  KSHOT_CHECK_THROWS_WITH_ALL(RidgeHead<double>(-1.0).fit(s, sl), std::invalid_argument, "kshot::RidgeHead::fit()",
                              "lambda must be finite and > 0, got -1");
  KSHOT_CHECK_THROWS_WITH_ALL(RidgeHead<double>(0.0).loss(s, sl, q, ql), std::invalid_argument,
                              "kshot::RidgeHead::loss()", "lambda must be finite and > 0, got 0");
  KSHOT_CHECK_THROWS_WITH_ALL(RidgeHead<double>(1.0, nan).fit(s, sl), std::invalid_argument, "scale must be finite, got nan");
  KSHOT_CHECK_THROWS_WITH_ALL(RidgeHead<double>(1.0, 1.0, std::numeric_limits<double>::infinity()).fit(s, sl),
                              std::invalid_argument, "bias must be finite, got inf");
  KSHOT_CHECK_THROWS_WITH_ALL(ridge.loss(s, sl, q, ql, gs, wrong, gp), std::invalid_argument, "kshot::RidgeHead::loss()",
                              "grad_query is 2 x 2 but must be 3 x 4");
  KSHOT_CHECK_THROWS_WITH_ALL(ridge.loss(s, sl, q, (LabelVector(3) << 0, 1, -1).finished()), std::invalid_argument,
                              "query_labels[2] = -1 is outside [0, 3)");
  KSHOT_CHECK_THROWS_WITH_ALL(ridge.fit(s, (LabelVector(6) << 0, 1, 2, 0, 1, -2).finished()), std::invalid_argument,
                              "kshot::RidgeHead::fit()", "support_labels has a negative label (-2)");
  ridge.fit(s, sl);
  KSHOT_CHECK_THROWS_WITH_ALL(ridge.predict(random_matrix<double>(2, 3, 304)), std::invalid_argument,
                              "query has 3 columns but the support had 4");

  // Logistic head.
  auto with = [](auto change) {
    LogisticHeadOptions o;
    change(o);
    return LogisticHead<double>(o);
  };
  KSHOT_CHECK_THROWS_WITH_ALL(LogisticHead<double>().scores(q), std::invalid_argument, "kshot::LogisticHead::scores()",
                              "fit() has not been called");
  KSHOT_CHECK_THROWS_WITH_ALL(with([](LogisticHeadOptions& o) { o.l2 = -1; }).fit(s, sl), std::invalid_argument,
                              "kshot::LogisticHead::fit()", "l2 must be finite and >= 0, got -1");
  KSHOT_CHECK_THROWS_WITH_ALL(with([](LogisticHeadOptions& o) { o.max_iterations = 0; }).fit(s, sl), std::invalid_argument,
                              "max_iterations must be >= 1, got 0");
  KSHOT_CHECK_THROWS_WITH_ALL(with([](LogisticHeadOptions& o) { o.tolerance = 0; }).fit(s, sl), std::invalid_argument,
                              "tolerance must be finite and > 0, got 0");
  KSHOT_CHECK_THROWS_WITH_ALL(with([](LogisticHeadOptions& o) { o.history = 0; }).fit(s, sl), std::invalid_argument,
                              "history must be >= 1, got 0");
  KSHOT_CHECK_THROWS_WITH_ALL(LogisticHead<double>().fit(RowMatrixX<double>(0, 4), LabelVector(0)), std::invalid_argument,
                              "kshot::LogisticHead::fit()", "the support set is empty");
  LogisticHead<double> logistic;
  logistic.fit(s, sl);
  RowMatrixX<double> wrong_out(3, 2);
  KSHOT_CHECK_THROWS_WITH_ALL(logistic.scores(q, wrong_out), std::invalid_argument, "out is 3 x 2 but must be 3 x 3");
}
