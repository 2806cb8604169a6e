// SPDX-License-Identifier: MIT
#include "losses/loss_checks.hpp"
#include "losses/pml_cases.hpp"

#include <kshot/losses/contrastive.hpp>

// Everything below lives in a namespace of its own: the loss tests are compiled in unity batches (see
// tests/CMakeLists.txt), where the helpers of different files must not collide.
namespace test_contrastive {

using namespace kshot;
using namespace kshot::test;

namespace {

ContrastiveLoss<double> loss_of(const ReferenceCase& c) {
  ContrastiveLoss<double> loss;
  loss.pos_margin = param(c, "pos_margin", 0.0);
  loss.neg_margin = param(c, "neg_margin", 1.0);
  loss.distance = distance_of(c.json.at("distance"));
  loss.reduction = reduction_of(c.json.at("reducer"));
  return loss;
}

}  // namespace

TEST_CASE("ContrastiveLoss: pytorch-metric-learning reference cases") {
  const auto cases = pml_cases("ContrastiveLoss");
  REQUIRE(!cases.empty());
  for (const auto& c : cases) {
    INFO("case " << c.json.at("case").get<std::string>());
    auto loss = loss_of(c);
    const RowMatrixX<double> emb = c.input("embeddings");
    const LabelVector labels = c.labels("labels");
    const CaseTuple tuple = tuple_of(c);
    RowMatrixX<double> grad(emb.rows(), emb.cols());
    const double value = loss.evaluate(emb, labels, tuple.view(), grad);
    CHECK(scalar_rel_error(value, c.loss()) <= reference_tolerance);
    CHECK(matrix_rel_error(grad, c.grad("embeddings")) <= reference_tolerance);
    CHECK(loss.evaluate(emb, labels, tuple.view()) == value);
  }
}

TEST_CASE("ContrastiveLoss: gradient matches central differences") {
  const LabelVector labels = cyclic_labels(12, 3, 7);
  const RowMatrixX<double> emb = random_matrix<double>(12, 5, 11);
  struct Setting {
    LossDistance distance;
    double pos_margin, neg_margin;
    Reduction reduction;
  };
  const std::vector<Setting> settings = {
      {LossDistance::lp(), 0.0, 1.0, Reduction::loss_default},
      {LossDistance::lp(), 0.3, 1.2, Reduction::mean},
      {LossDistance::lp(2), 0.1, 1.5, Reduction::sum},
      {LossDistance::lp(1, false), 0.5, 4.0, Reduction::mean_nonzero},
      {LossDistance::lp(1, true, 1), 0.2, 1.0, Reduction::loss_default},
      {LossDistance::lp(1.5, true, 3), 0.1, 1.0, Reduction::mean},
      {LossDistance::cosine(), 0.9, 0.1, Reduction::loss_default},
      {LossDistance::dot_product(false), 1.0, -0.5, Reduction::mean},
      {LossDistance::cosine(2), 0.8, 0.2, Reduction::mean},
  };
  for (const auto& s : settings) {
    INFO("distance " << s.distance.describe() << " margins " << s.pos_margin << " " << s.neg_margin);
    ContrastiveLoss<double> loss;
    loss.distance = s.distance;
    loss.pos_margin = s.pos_margin;
    loss.neg_margin = s.neg_margin;
    loss.reduction = s.reduction;
    auto f = [&](const RowMatrixX<double>& x, RowMatrixX<double>* g) {
      return g != nullptr ? loss.evaluate(x, labels, *g) : loss.evaluate(x, labels);
    };
    CHECK(fd_error(f, emb) < 1e-6);
    // Near a degenerate point: classes collapsed onto one row plus small noise.
    const RowMatrixX<double> tight = collapse_classes(emb, labels, 1e-2, 3);
    CHECK(fd_error(f, tight) < 1e-6);
  }
}

TEST_CASE("ContrastiveLoss: mined pairs and triplets") {
  const LabelVector labels = cyclic_labels(10, 3, 5);
  const RowMatrixX<double> emb = random_matrix<double>(10, 4, 2);
  ContrastiveLoss<double> loss;
  MinedPairs pairs;
  pairs.a1 = {0, 1, 1};
  pairs.p = {3, 4, 4};  // a duplicate pair counts twice
  pairs.a2 = {0, 2, 5};
  pairs.n = {1, 0, 6};
  // Value by hand: Euclidean distance on normalised rows.
  RowMatrixX<double> u = emb.rowwise().normalized();
  auto d = [&](Index i, Index j) { return (u.row(i) - u.row(j)).norm(); };
  double pos_sum = 0, neg_sum = 0;
  Index pos_active = 0, neg_active = 0;
  for (std::size_t k = 0; k < pairs.a1.size(); ++k) {
    const double v = d(pairs.a1[k], pairs.p[k]);
    if (v > 0) { pos_sum += v; ++pos_active; }
  }
  for (std::size_t k = 0; k < pairs.a2.size(); ++k) {
    const double v = std::max(0.0, 1.0 - d(pairs.a2[k], pairs.n[k]));
    if (v > 0) { neg_sum += v; ++neg_active; }
  }
  const double expected = pos_sum / double(pos_active) + (neg_active > 0 ? neg_sum / double(neg_active) : 0.0);
  CHECK(loss.evaluate(emb, labels, pairs) == doctest::Approx(expected).epsilon(1e-12));
  auto f = [&](const RowMatrixX<double>& x, RowMatrixX<double>* g) {
    return g != nullptr ? loss.evaluate(x, labels, pairs, *g) : loss.evaluate(x, labels, pairs);
  };
  CHECK(fd_error(f, emb) < 1e-6);

  MinedTriplets triplets;
  triplets.a = {0, 1};
  triplets.p = {3, 4};
  triplets.n = {1, 0};
  MinedPairs as_pairs;
  as_pairs.a1 = {0, 1};
  as_pairs.p = {3, 4};
  as_pairs.a2 = {0, 1};
  as_pairs.n = {1, 0};
  CHECK(loss.evaluate(emb, labels, triplets) == loss.evaluate(emb, labels, as_pairs));

  // At most one entry in every list: pytorch-metric-learning's zero loss.
  MinedPairs single;
  single.a1 = {0};
  single.p = {3};
  single.a2 = {0};
  single.n = {1};
  RowMatrixX<double> g(10, 4);
  CHECK(loss.evaluate(emb, labels, single, g) == 0.0);
  CHECK(g.isZero(0));
}

TEST_CASE("ContrastiveLoss: degenerate batches stay finite") {
  const LabelVector labels = cyclic_labels(8, 2);
  ContrastiveLoss<double> loss;
  RowMatrixX<double> g(8, 3);
  SUBCASE("all rows zero") {
    const RowMatrixX<double> zero = RowMatrixX<double>::Zero(8, 3);
    const double v = loss.evaluate(zero, labels, g);
    CHECK(std::isfinite(v));
    CHECK(g.allFinite());
    CHECK(loss.stats().degenerate == 8);
    CHECK(v == doctest::Approx(1.0));  // every negative pair at distance 0 < margin 1
  }
  SUBCASE("identical rows") {
    RowMatrixX<double> same(8, 3);
    same.rowwise() = RowVectorX<double>::LinSpaced(3, 1.0, 3.0);
    const double v = loss.evaluate(same, labels, g);
    CHECK(v == doctest::Approx(1.0));
    CHECK(g.allFinite());
  }
  SUBCASE("one class only: no negatives") {
    const LabelVector one = LabelVector::Zero(8);
    const RowMatrixX<double> emb = random_matrix<double>(8, 3, 4);
    const double v = loss.evaluate(emb, one, g);
    CHECK(std::isfinite(v));
    CHECK(loss.stats().terms == 56);
  }
  SUBCASE("a single row") {
    RowMatrixX<double> g1(1, 3);
    CHECK(loss.evaluate(random_matrix<double>(1, 3, 1), LabelVector::Zero(1), g1) == 0.0);
    CHECK(g1.isZero(0));
  }
}

TEST_CASE("ContrastiveLoss: float agrees with double and threads do not change a bit") {
  const LabelVector labels = cyclic_labels(256, 16, 9);
  const RowMatrixX<double> emb = random_matrix<double>(256, 16, 21);
  ContrastiveLoss<double> ld;
  ContrastiveLoss<float> lf;
  ld.neg_margin = 1.3;
  lf.neg_margin = 1.3f;
  RowMatrixX<double> gd(256, 16);
  RowMatrixX<float> gf(256, 16);
  const double vd = ld.evaluate(emb, labels, gd);
  const float vf = lf.evaluate(emb.cast<float>(), labels, gf);
  CHECK(std::abs(double(vf) - vd) <= 1e-5 * std::abs(vd));
  CHECK(matrix_rel_error(gf, gd) <= 1e-4);
  const RowMatrixX<float> ef = emb.cast<float>();
  check_thread_identity<float>([&](RowMatrixX<float>* g) { return lf.evaluate(ef, labels, *g); }, 256, 16);
  check_thread_identity<double>([&](RowMatrixX<double>* g) { return ld.evaluate(emb, labels, *g); }, 256, 16);
}

TEST_CASE("ContrastiveLoss: bad input throws with the numbers") {
  ContrastiveLoss<double> loss;
  const RowMatrixX<double> emb = random_matrix<double>(6, 3, 1);
  const LabelVector labels = cyclic_labels(6, 2);
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, cyclic_labels(5, 2)), std::invalid_argument,
                              "kshot::ContrastiveLoss::evaluate()", "labels has 5 entries", "6 rows");
  RowMatrixX<double> bad = emb;
  bad(2, 1) = std::nan("");
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(bad, labels), std::invalid_argument, "embeddings", "row 2");
  RowMatrixX<double> g(5, 3);
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels, g), std::invalid_argument, "grad is 5 x 3", "6 x 3");
  MinedPairs pairs;
  pairs.a1 = {0, 9};
  pairs.p = {2, 4};
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels, pairs), std::out_of_range, "a1[1] = 9", "6 rows");
  loss.neg_margin = std::numeric_limits<double>::infinity();
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "neg_margin");
  loss.neg_margin = 1;
  loss.distance.power = 0;
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "distance.power is 0");
}

}  // namespace test_contrastive
