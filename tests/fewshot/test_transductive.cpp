// SPDX-License-Identifier: MIT
// Transductive few-shot classifiers (BD-CSPN, TIM, LaplacianShot, PT-MAP, soft k-means): easyfsl 1.5.0
// reference cases, TIM's objective gradient against central differences, separable clusters, a
// hand-computed soft k-means case, invariants, degenerate inputs, bad input and float against double.
#include <kshot/fewshot/bd_cspn.hpp>
#include <kshot/fewshot/laplacian_shot.hpp>
#include <kshot/fewshot/pt_map.hpp>
#include <kshot/fewshot/soft_kmeans.hpp>
#include <kshot/fewshot/tim.hpp>

#include "reference.hpp"
#include "test_util.hpp"

#include <cmath>
#include <stdexcept>
#include <string>
#include <type_traits>

using namespace kshot;
using kshot::test::gradient_rel_error;
using kshot::test::max_rel_error;
using kshot::test::numeric_gradient;
using kshot::test::random_matrix;

static_assert(std::is_copy_constructible_v<BDCSPN<float>> && std::is_copy_assignable_v<TIM<double>> &&
                  std::is_copy_constructible_v<LaplacianShot<double>> && std::is_copy_constructible_v<PTMAP<float>> &&
                  std::is_copy_constructible_v<SoftKMeans<double>>,
              "the transductive classifiers are copyable");

namespace {

// Tolerance against the easyfsl references (double): max |a - b| / max(1, |b|) per entry.
constexpr double reference_tolerance = 1e-9;

LabelVector cyclic_labels(Index n, Index classes) {
  LabelVector l(n);
  for (Index i = 0; i < n; ++i) l[i] = static_cast<Label>(i % classes);
  return l;
}

struct TestEpisode {
  RowMatrixX<double> support, query;
  LabelVector support_labels, query_labels;
};

TestEpisode reference_episode(const kshot::test::ReferenceCase& ref) {
  return {ref.input("support_features"), ref.input("query_features"), ref.labels("support_labels"),
          ref.labels("query_labels")};
}

void check_predictions(const LabelVector& predicted, const RowMatrixX<double>& want) {
  REQUIRE(predicted.size() == want.rows());
  for (Index i = 0; i < predicted.size(); ++i) CHECK(predicted[i] == static_cast<Label>(want(i, 0)));
}

// Runs `model` on the reference case; checks outputs, predictions and prototypes_after.
template <class Model>
void check_reference(Model model, const char* name, const char* output_name) {
  const auto ref = kshot::test::load_reference(name);
  const TestEpisode e = reference_episode(ref);
  model.fit(e.support, e.support_labels);
  const RowMatrixX<double> out = model.scores(e.query);
  const double output_error = max_rel_error(out, ref.output(output_name));
  const double prototype_error = max_rel_error(model.prototypes(), ref.output("prototypes_after"));
  INFO(std::string(name) << ": output error " << output_error << ", prototype error " << prototype_error);
  CHECK(output_error < reference_tolerance);
  CHECK(prototype_error < reference_tolerance);
  check_predictions(model.predict(e.query), ref.output("predictions"));
}

// k well-separated non-negative clusters (PT-MAP's power transform needs the signal in positive values).
TestEpisode separated_clusters(Index classes, Index shots, Index queries_per_class, Index dim, std::uint64_t seed) {
  TestEpisode e;
  e.support = 0.05 * random_matrix<double>(classes * shots, dim, seed);
  e.query = 0.05 * random_matrix<double>(classes * queries_per_class, dim, seed + 1);
  e.support_labels = cyclic_labels(classes * shots, classes);
  e.query_labels = cyclic_labels(classes * queries_per_class, classes);
  for (Index i = 0; i < e.support.rows(); ++i) e.support(i, e.support_labels[i]) += 3.0;
  for (Index i = 0; i < e.query.rows(); ++i) e.query(i, e.query_labels[i]) += 3.0;
  e.support = e.support.array() + 0.5;
  e.query = e.query.array() + 0.5;
  return e;
}

template <class Model>
void check_separated(Model model) {
  const TestEpisode e = separated_clusters(5, 3, 4, 8, 77);
  model.fit(e.support, e.support_labels);
  const LabelVector predicted = model.predict(e.query);
  for (Index i = 0; i < predicted.size(); ++i) CHECK(predicted[i] == e.query_labels[i]);
}

template <class Model>
void check_finite_outputs(Model model, const RowMatrixX<double>& support, const LabelVector& labels,
                          const RowMatrixX<double>& query) {
  model.fit(support, labels);
  const RowMatrixX<double> out = model.scores(query);
  CHECK(out.rows() == query.rows());
  CHECK(out.cols() == model.num_classes());
  CHECK(out.allFinite());
  CHECK(model.prototypes().allFinite());
}

template <class Model>
void check_degenerate(Model model) {
  const LabelVector labels = cyclic_labels(6, 3);
  // identical features everywhere
  check_finite_outputs(model, RowMatrixX<double>::Constant(6, 4, 0.7), labels, RowMatrixX<double>::Constant(5, 4, 0.7));
  // zero vectors (cosine of a zero vector; PT-MAP maps them to 1e-3)
  check_finite_outputs(model, RowMatrixX<double>::Zero(6, 4), labels, RowMatrixX<double>::Zero(5, 4));
  // one query
  check_finite_outputs(model, random_matrix<double>(6, 4, 5), labels, random_matrix<double>(1, 4, 6));
  // far-away queries (kernels underflow)
  check_finite_outputs(model, random_matrix<double>(6, 4, 5), labels, 1e3 * random_matrix<double>(4, 4, 8).cwiseAbs());
}

// Permuting the queries permutes the output rows: the result does not depend on the query order.
template <class Model>
void check_query_permutation(Model model) {
  const RowMatrixX<double> s = random_matrix<double>(9, 6, 11).cwiseAbs(), q = random_matrix<double>(12, 6, 12).cwiseAbs();
  model.fit(s, cyclic_labels(9, 3));
  const RowMatrixX<double> out = model.scores(q);
  const RowMatrixX<double> prototypes = model.prototypes();
  RowMatrixX<double> reversed = q.colwise().reverse();
  const RowMatrixX<double> out_reversed = model.scores(reversed);
  CHECK(max_rel_error(out_reversed.colwise().reverse(), out) < 1e-12);
  CHECK(max_rel_error(model.prototypes(), prototypes) < 1e-12);
}

// The float path against the double path on the same episode.
template <template <class> class Model>
void check_float_matches_double(const char* reference, double tolerance) {
  const TestEpisode e = reference_episode(kshot::test::load_reference(reference));
  Model<double> d;
  Model<float> f;
  d.fit(e.support, e.support_labels);
  f.fit(e.support.cast<float>(), e.support_labels);
  const RowMatrixX<double> out_d = d.scores(e.query);
  const RowMatrixX<float> out_f = f.scores(e.query.cast<float>());
  const double error = max_rel_error(out_f, out_d);
  INFO(std::string(reference) << ": float against double " << error);
  CHECK(error < tolerance);
  CHECK(max_rel_error(f.prototypes(), d.prototypes()) < tolerance);
}

template <class Model>
void check_bad_input(Model model, const char* fit_name, const char* scores_name) {
  const RowMatrixX<double> s = random_matrix<double>(6, 4, 1), q = random_matrix<double>(5, 4, 2);
  LabelVector missing(6);
  missing << 0, 2, 0, 2, 0, 2;
  KSHOT_CHECK_THROWS_WITH_ALL(model.fit(s, missing), std::invalid_argument, fit_name, "class 1 has no support example");
  LabelVector negative = cyclic_labels(6, 3);
  negative[4] = -2;
  KSHOT_CHECK_THROWS_WITH_ALL(model.fit(s, negative), std::invalid_argument, fit_name, "negative label (-2)");
  KSHOT_CHECK_THROWS_WITH_ALL(model.fit(s, cyclic_labels(5, 3)), std::invalid_argument, fit_name, "5 entries", "6 rows");
  Model unfitted = model;
  KSHOT_CHECK_THROWS_WITH_ALL(unfitted.scores(q), std::invalid_argument, scores_name, "fit() has not been called");
  model.fit(s, cyclic_labels(6, 3));
  const RowMatrixX<double> wide = random_matrix<double>(5, 7, 3);
  KSHOT_CHECK_THROWS_WITH_ALL(model.scores(wide), std::invalid_argument, scores_name, "query has 7 columns", "support had 4");
  RowMatrixX<double> wrong_out(5, 2);
  KSHOT_CHECK_THROWS_WITH_ALL(model.scores(q, wrong_out), std::invalid_argument, scores_name, "out is 5 x 2", "5 x 3");
  RowMatrixX<double> non_finite = q;
  non_finite(3, 1) = std::nan("");
  KSHOT_CHECK_THROWS_WITH_ALL(model.scores(non_finite), std::invalid_argument, scores_name, "non-finite", "row 3");
}

}  // namespace

// ---- easyfsl references (double, every output entry within 1e-9 relative, predictions exact) ----------

TEST_CASE("fewshot.transductive: BDCSPN matches easyfsl BDCSPN on the reference case") {
  check_reference(BDCSPN<double>(), "easyfsl_bdcspn_default", "scores");
}

TEST_CASE("fewshot.transductive: TIM matches easyfsl TIM on the reference case") {
  const auto params = kshot::test::load_reference("easyfsl_tim_default").params();
  TIM<double> tim;
  CHECK(tim.fine_tuning_steps == params.at("fine_tuning_steps").get<Index>());
  CHECK(tim.fine_tuning_lr == params.at("fine_tuning_lr").get<double>());
  CHECK(tim.cross_entropy_weight == params.at("cross_entropy_weight").get<double>());
  CHECK(tim.marginal_entropy_weight == params.at("marginal_entropy_weight").get<double>());
  CHECK(tim.conditional_entropy_weight == params.at("conditional_entropy_weight").get<double>());
  CHECK(tim.temperature == params.at("temperature").get<double>());
  check_reference(tim, "easyfsl_tim_default", "scores");
}

TEST_CASE("fewshot.transductive: LaplacianShot matches easyfsl LaplacianShot on the reference case") {
  const auto params = kshot::test::load_reference("easyfsl_laplacianshot_default").params();
  LaplacianShot<double> model;
  CHECK(model.inference_steps == params.at("inference_steps").get<Index>());
  CHECK(model.knn == params.at("knn").get<Index>());
  CHECK(model.lambda_regularization == params.at("lambda_regularization").get<double>());
  check_reference(model, "easyfsl_laplacianshot_default", "soft_assignments");
}

TEST_CASE("fewshot.transductive: PTMAP matches easyfsl PTMAP on the reference case") {
  const auto params = kshot::test::load_reference("easyfsl_ptmap_default").params();
  PTMAP<double> model;
  CHECK(model.fine_tuning_steps == params.at("fine_tuning_steps").get<Index>());
  CHECK(model.fine_tuning_lr == params.at("fine_tuning_lr").get<double>());
  CHECK(model.lambda_regularization == params.at("lambda_regularization").get<double>());
  CHECK(model.power_factor == params.at("power_factor").get<double>());
  check_reference(model, "easyfsl_ptmap_default", "soft_assignments");
}

// ---- TIM's analytic gradient -------------------------------------------------------------------------

TEST_CASE("fewshot.transductive: TIM objective gradient matches central differences") {
  const RowMatrixX<double> s = random_matrix<double>(9, 5, 21), q = random_matrix<double>(8, 5, 22);
  TIM<double> tim;
  tim.fit(s, cyclic_labels(9, 3));
  SUBCASE("at random prototypes with the default weights") {
    const RowMatrixX<double> p = random_matrix<double>(3, 5, 23);
    RowMatrixX<double> g(3, 5);
    const double value = tim.objective(q, p, g);
    CHECK(std::abs(value - tim.objective(q, p)) < 1e-14);
    TIM<double> probe = tim;
    const RowMatrixX<double> numeric = numeric_gradient([&](const RowMatrixX<double>& x) { return probe.objective(q, x); }, p);
    CHECK(gradient_rel_error(g, numeric) < 1e-7);
  }
  SUBCASE("with other weights, a low temperature and a small prototype") {
    tim.cross_entropy_weight = 0.3;
    tim.marginal_entropy_weight = 2.0;
    tim.conditional_entropy_weight = 0.7;
    tim.temperature = 2.5;
    tim.fit(s, cyclic_labels(9, 3));
    RowMatrixX<double> p = random_matrix<double>(3, 5, 24);
    p.row(1) *= 1e-2;
    RowMatrixX<double> g(3, 5);
    tim.objective(q, p, g);
    TIM<double> probe = tim;
    const RowMatrixX<double> numeric =
        numeric_gradient([&](const RowMatrixX<double>& x) { return probe.objective(q, x); }, p, 1e-8);
    CHECK(gradient_rel_error(g, numeric) < 1e-6);
  }
  SUBCASE("at the class means, where fine-tuning starts") {
    RowMatrixX<double> g(3, 5);
    tim.objective(q, tim.prototypes(), g);
    TIM<double> probe = tim;
    const RowMatrixX<double> numeric =
        numeric_gradient([&](const RowMatrixX<double>& x) { return probe.objective(q, x); }, tim.prototypes());
    CHECK(gradient_rel_error(g, numeric) < 1e-7);
  }
}

TEST_CASE("fewshot.transductive: TIM fine-tuning lowers its objective") {
  const RowMatrixX<double> s = random_matrix<double>(12, 6, 31), q = random_matrix<double>(15, 6, 32);
  TIM<double> tim;
  tim.fine_tuning_lr = 1e-2;
  tim.fit(s, cyclic_labels(12, 4));
  const RowMatrixX<double> means = tim.prototypes();
  const double before = tim.objective(q, means);
  tim.scores(q);
  CHECK(tim.objective(q, tim.prototypes()) < before);
  tim.fine_tuning_steps = 0;
  tim.scores(q);
  CHECK(max_rel_error(tim.prototypes(), means) == 0.0);
}

// ---- soft k-means ------------------------------------------------------------------------------------

TEST_CASE("fewshot.transductive: SoftKMeans matches a hand-computed one-dimensional case") {
  // Support: 0 (class 0) and 4 (class 1); one query at 1. Squared distances 1 and 9, so
  // z = (1, e^-8) / (1 + e^-8); p_0 = z_0 / (1 + z_0), p_1 = (4 + z_1) / (1 + z_1).
  RowMatrixX<double> s(2, 1), q(1, 1);
  s << 0.0, 4.0;
  q << 1.0;
  LabelVector l(2);
  l << 0, 1;
  SoftKMeans<double> model;
  CHECK(model.refinement_steps == 1);
  model.fit(s, l);
  const RowMatrixX<double> out = model.scores(q);
  const double z0 = 1.0 / (1.0 + std::exp(-8.0)), z1 = 1.0 - z0;
  const double p0 = z0 / (1.0 + z0), p1 = (4.0 + z1) / (1.0 + z1);
  CHECK(std::abs(model.prototypes()(0, 0) - p0) < 1e-15);
  CHECK(std::abs(model.prototypes()(1, 0) - p1) < 1e-15);
  CHECK(std::abs(model.assignments()(0, 0) - z0) < 1e-15);
  CHECK(std::abs(out(0, 0) + (1.0 - p0) * (1.0 - p0)) < 1e-14);
  CHECK(std::abs(out(0, 1) + (1.0 - p1) * (1.0 - p1)) < 1e-14);
  // A second step starts again from the support sums, with assignments to the refined prototypes.
  model.refinement_steps = 2;
  model.scores(q);
  const double a = -(1.0 - p0) * (1.0 - p0), b = -(1.0 - p1) * (1.0 - p1);
  const double y0 = 1.0 / (1.0 + std::exp(b - a)), y1 = 1.0 - y0;
  CHECK(std::abs(model.prototypes()(0, 0) - y0 / (1.0 + y0)) < 1e-15);
  CHECK(std::abs(model.prototypes()(1, 0) - (4.0 + y1) / (1.0 + y1)) < 1e-15);
}

TEST_CASE("fewshot.transductive: SoftKMeans invariants") {
  const RowMatrixX<double> s = random_matrix<double>(10, 4, 41), q = random_matrix<double>(7, 4, 42);
  const LabelVector l = cyclic_labels(10, 5);
  SoftKMeans<double> model;
  model.fit(s, l);
  RowMatrixX<double> means(5, 4);
  class_means<double>(s, l, 5, means);
  SUBCASE("zero steps give the class means and minus the squared distance") {
    model.refinement_steps = 0;
    const RowMatrixX<double> out = model.scores(q);
    CHECK(max_rel_error(model.prototypes(), means) == 0.0);
    CHECK(max_rel_error(out, -pairwise_distances(q, means, SquaredEuclidean{})) < 1e-12);
  }
  SUBCASE("the refined prototype is the weighted mean of its support and the queries") {
    model.refinement_steps = 3;
    model.scores(q);
    const RowMatrixX<double>& z = model.assignments();
    CHECK(max_rel_error(z.rowwise().sum(), VectorX<double>::Ones(7)) < 1e-14);
    // The assignments of the last step are to the prototypes of step 2; rebuild step 3 from them.
    for (Index c = 0; c < 5; ++c) {
      RowVectorX<double> numerator = z.col(c).transpose() * q;
      double mass = z.col(c).sum();
      for (Index i = 0; i < 10; ++i)
        if (l[i] == c) {
          numerator += s.row(i);
          mass += 1.0;
        }
      CHECK(max_rel_error(model.prototypes().row(c), numerator / mass) < 1e-13);
    }
  }
  SUBCASE("queries on top of the class means leave the means unchanged") {
    model.refinement_steps = 2;
    RowMatrixX<double> on_means = 100.0 * means;  // scaled apart so that each query belongs to one class
    SoftKMeans<double> spread;
    spread.fit(100.0 * s, l);
    spread.refinement_steps = 2;
    spread.scores(on_means);
    CHECK(max_rel_error(spread.prototypes(), on_means) < 1e-12);
  }
}

// ---- behaviour shared by every method ----------------------------------------------------------------

TEST_CASE("fewshot.transductive: well-separated clusters are classified perfectly by every method") {
  check_separated(BDCSPN<double>());
  check_separated(TIM<double>());
  check_separated(LaplacianShot<double>());
  check_separated(PTMAP<double>());
  check_separated(SoftKMeans<double>());
}

TEST_CASE("fewshot.transductive: the output does not depend on the order of the queries") {
  check_query_permutation(BDCSPN<double>());
  check_query_permutation(TIM<double>());
  check_query_permutation(LaplacianShot<double>());
  check_query_permutation(PTMAP<double>());
  check_query_permutation(SoftKMeans<double>());
}

TEST_CASE("fewshot.transductive: degenerate inputs give finite outputs") {
  check_degenerate(BDCSPN<double>());
  check_degenerate(TIM<double>());
  check_degenerate(LaplacianShot<double>());
  check_degenerate(PTMAP<double>());
  check_degenerate(SoftKMeans<double>());
}

TEST_CASE("fewshot.transductive: soft assignments are distributions") {
  const TestEpisode e = reference_episode(kshot::test::load_reference("easyfsl_ptmap_default"));
  LaplacianShot<double> laplacian;
  laplacian.fit(e.support, e.support_labels);
  const RowMatrixX<double> y = laplacian.scores(e.query);
  CHECK(max_rel_error(y.rowwise().sum(), VectorX<double>::Ones(y.rows())) < 1e-14);
  CHECK(y.minCoeff() >= 0.0);
  PTMAP<double> ptmap;
  ptmap.fit(e.support, e.support_labels);
  const RowMatrixX<double> m = ptmap.scores(e.query);
  // Sinkhorn stops when the row sums move by less than 1e-6 per iteration; they are then within ~1e-4 of 1.
  CHECK(max_rel_error(m.rowwise().sum(), VectorX<double>::Ones(m.rows())) < 1e-4);
  CHECK(max_rel_error(m.colwise().sum(), RowVectorX<double>::Constant(4, 5.0)) < 1e-9);
  // fewer queries than classes: columns sum to Q / N instead of easyfsl's 0
  const RowMatrixX<double> two = ptmap.scores(e.query.topRows(2));
  CHECK(max_rel_error(two.colwise().sum(), RowVectorX<double>::Constant(4, 0.5)) < 1e-9);
}

TEST_CASE("fewshot.transductive: LaplacianShot graph has knn - 1 nearest other queries") {
  RowMatrixX<double> q(5, 1);
  q << 0.0, 1.0, 3.0, 7.0, 7.5;
  RowMatrixX<double> s(2, 1);
  s << 0.0, 7.0;
  LabelVector l(2);
  l << 0, 1;
  LaplacianShot<double> model;
  model.fit(s, l);
  model.scores(q);
  const auto& nn = model.neighbours();
  REQUIRE(nn.size() == 5);
  CHECK(nn[0] == std::vector<Index>{1, 2});
  CHECK(nn[2] == std::vector<Index>{1, 0});
  CHECK(nn[3] == std::vector<Index>{4, 2});
  model.knn = 1;
  model.scores(q);
  CHECK(model.neighbours()[0].empty());
  model.knn = 10;  // more than the queries: every other query
  model.scores(q);
  CHECK(model.neighbours()[4].size() == 4);
}

TEST_CASE("fewshot.transductive: copies and repeated calls give identical results") {
  const TestEpisode e = reference_episode(kshot::test::load_reference("easyfsl_tim_default"));
  TIM<double> tim;
  tim.fit(e.support, e.support_labels);
  TIM<double> copy = tim;
  const RowMatrixX<double> first = tim.scores(e.query);
  CHECK((tim.scores(e.query).array() == first.array()).all());
  CHECK((copy.scores(e.query).array() == first.array()).all());
  PTMAP<double> ptmap;
  ptmap.fit(e.support.cwiseAbs(), e.support_labels);
  const RowMatrixX<double> m = ptmap.scores(e.query.cwiseAbs());
  PTMAP<double> ptmap_copy = ptmap;
  CHECK((ptmap_copy.scores(e.query.cwiseAbs()).array() == m.array()).all());
}

TEST_CASE("fewshot.transductive: float agrees with double") {
  check_float_matches_double<BDCSPN>("easyfsl_bdcspn_default", 1e-5);
  check_float_matches_double<TIM>("easyfsl_tim_default", 1e-4);
  check_float_matches_double<LaplacianShot>("easyfsl_laplacianshot_default", 1e-4);
  check_float_matches_double<PTMAP>("easyfsl_ptmap_default", 1e-4);
  check_float_matches_double<SoftKMeans>("easyfsl_bdcspn_default", 1e-4);
}

// ---- bad input ---------------------------------------------------------------------------------------

TEST_CASE("fewshot.transductive: bad input throws naming the function and the numbers") {
  check_bad_input(BDCSPN<double>(), "kshot::BDCSPN::fit()", "kshot::BDCSPN::scores()");
  check_bad_input(TIM<double>(), "kshot::TIM::fit()", "kshot::TIM::scores()");
  check_bad_input(LaplacianShot<double>(), "kshot::LaplacianShot::fit()", "kshot::LaplacianShot::scores()");
  check_bad_input(PTMAP<double>(), "kshot::PTMAP::fit()", "kshot::PTMAP::scores()");
  check_bad_input(SoftKMeans<double>(), "kshot::SoftKMeans::fit()", "kshot::SoftKMeans::scores()");
}

TEST_CASE("fewshot.transductive: bad hyperparameters throw at fit time") {
  const RowMatrixX<double> s = random_matrix<double>(6, 4, 1);
  const LabelVector l = cyclic_labels(6, 3);
  {
    TIM<double> m;
    m.fine_tuning_steps = -1;
    KSHOT_CHECK_THROWS_WITH_ALL(m.fit(s, l), std::invalid_argument, "kshot::TIM::fit()", "fine_tuning_steps", "-1");
    m = TIM<double>();
    m.fine_tuning_lr = 0.0;
    KSHOT_CHECK_THROWS_WITH_ALL(m.fit(s, l), std::invalid_argument, "kshot::TIM::fit()", "fine_tuning_lr", "got 0");
    m = TIM<double>();
    m.temperature = -2.0;
    KSHOT_CHECK_THROWS_WITH_ALL(m.fit(s, l), std::invalid_argument, "kshot::TIM::fit()", "temperature", "-2");
    m = TIM<double>();
    m.conditional_entropy_weight = -0.5;
    KSHOT_CHECK_THROWS_WITH_ALL(m.fit(s, l), std::invalid_argument, "conditional_entropy_weight", "-0.5");
    m = TIM<double>();
    m.adam_beta2 = 1.0;
    KSHOT_CHECK_THROWS_WITH_ALL(m.fit(s, l), std::invalid_argument, "adam_beta2", "got 1");
    m = TIM<double>();
    m.fit(s, l);
    m.fine_tuning_lr = -1e-3;  // changed after fit: scores() checks again
    KSHOT_CHECK_THROWS_WITH_ALL(m.scores(s), std::invalid_argument, "kshot::TIM::scores()", "fine_tuning_lr", "-0.001");
    RowMatrixX<double> wrong(2, 4);
    m = TIM<double>();
    m.fit(s, l);
    KSHOT_CHECK_THROWS_WITH_ALL(m.objective(s, wrong), std::invalid_argument, "kshot::TIM::objective()", "prototypes is 2 x 4",
                                "3 x 4");
  }
  {
    LaplacianShot<double> m;
    m.knn = 0;
    KSHOT_CHECK_THROWS_WITH_ALL(m.fit(s, l), std::invalid_argument, "kshot::LaplacianShot::fit()", "knn must be >= 1", "got 0");
    m = LaplacianShot<double>();
    m.inference_steps = -3;
    KSHOT_CHECK_THROWS_WITH_ALL(m.fit(s, l), std::invalid_argument, "inference_steps", "-3");
    m = LaplacianShot<double>();
    m.lambda_regularization = -0.25;
    KSHOT_CHECK_THROWS_WITH_ALL(m.fit(s, l), std::invalid_argument, "lambda_regularization", "-0.25");
  }
  {
    PTMAP<double> m;
    m.fine_tuning_steps = -4;
    KSHOT_CHECK_THROWS_WITH_ALL(m.fit(s, l), std::invalid_argument, "kshot::PTMAP::fit()", "fine_tuning_steps", "-4");
    m = PTMAP<double>();
    m.fine_tuning_lr = -0.2;
    KSHOT_CHECK_THROWS_WITH_ALL(m.fit(s, l), std::invalid_argument, "fine_tuning_lr", "-0.2");
    m = PTMAP<double>();
    m.lambda_regularization = 0.0;
    KSHOT_CHECK_THROWS_WITH_ALL(m.fit(s, l), std::invalid_argument, "lambda_regularization", "got 0");
    m = PTMAP<double>();
    m.power_factor = -0.5;
    KSHOT_CHECK_THROWS_WITH_ALL(m.fit(s, l), std::invalid_argument, "power_factor", "-0.5");
    m = PTMAP<double>();
    m.sinkhorn_max_iterations = 0;
    KSHOT_CHECK_THROWS_WITH_ALL(m.fit(s, l), std::invalid_argument, "sinkhorn_max_iterations", "got 0");
  }
  {
    SoftKMeans<double> m;
    m.refinement_steps = -1;
    KSHOT_CHECK_THROWS_WITH_ALL(m.fit(s, l), std::invalid_argument, "kshot::SoftKMeans::fit()", "refinement_steps", "-1");
  }
}

// Every member of every class compiles in both precisions.
template class kshot::BDCSPN<float>;
template class kshot::BDCSPN<double>;
template class kshot::TIM<float>;
template class kshot::TIM<double>;
template class kshot::LaplacianShot<float>;
template class kshot::LaplacianShot<double>;
template class kshot::PTMAP<float>;
template class kshot::PTMAP<double>;
template class kshot::SoftKMeans<float>;
template class kshot::SoftKMeans<double>;
