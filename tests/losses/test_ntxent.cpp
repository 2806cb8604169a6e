// SPDX-License-Identifier: MIT
#include "losses/loss_checks.hpp"
#include "losses/pml_cases.hpp"

#include <kshot/losses/ntxent.hpp>

#include <algorithm>
#include <limits>
#include <vector>

// Everything below lives in a namespace of its own: the loss tests are compiled in unity batches (see
// tests/CMakeLists.txt), where the helpers of different files must not collide.
namespace test_ntxent {

using namespace kshot;
using namespace kshot::test;

namespace {

NTXentLoss<double> loss_of(const ReferenceCase& c) {
  NTXentLoss<double> loss;
  loss.temperature = param(c, "temperature", 0.07);
  loss.distance = distance_of(c.json.at("distance"));
  loss.reduction = reduction_of(c.json.at("reducer"));
  return loss;
}

/// Cosine similarity (or minus the Euclidean distance on normalised rows) computed directly.
double sim(const RowMatrixX<double>& x, Index i, Index j, bool cosine) {
  const RowVectorX<double> a = x.row(i) / x.row(i).norm(), b = x.row(j) / x.row(j).norm();
  return cosine ? a.dot(b) : -(a - b).norm();
}

/// NT-Xent straight from its definition over explicit pair lists (mean over positive pairs).
double ntxent_by_hand(const RowMatrixX<double>& x, const MinedPairs& pr, double t, bool cosine) {
  long double total = 0;
  for (std::size_t k = 0; k < pr.a1.size(); ++k) {
    const long double pos = std::exp(static_cast<long double>(sim(x, pr.a1[k], pr.p[k], cosine) / t));
    long double neg = 0;
    for (std::size_t j = 0; j < pr.a2.size(); ++j)
      if (pr.a2[j] == pr.a1[k]) neg += std::exp(static_cast<long double>(sim(x, pr.a2[j], pr.n[j], cosine) / t));
    total += -std::log(pos / (pos + neg));
  }
  return static_cast<double>(total / static_cast<long double>(pr.a1.size()));
}

MinedPairs all_pairs_of(const LabelVector& labels) {
  MinedPairs out;
  detail::pairs_from(Mined{}, labels, out);
  return out;
}

}  // namespace

TEST_CASE("NTXentLoss: pytorch-metric-learning reference cases") {
  const auto cases = pml_cases("NTXentLoss");
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

TEST_CASE("NTXentLoss: value from the definition and both code paths agree") {
  const LabelVector labels = cyclic_labels(11, 3, 4);
  const RowMatrixX<double> emb = random_matrix<double>(11, 6, 8);
  const MinedPairs all = all_pairs_of(labels);
  for (const double t : {0.07, 0.5, 3.0}) {
    for (const bool cosine : {true, false}) {
      INFO("t " << t << " cosine " << cosine);
      NTXentLoss<double> loss;
      loss.temperature = t;
      if (!cosine) loss.distance = LossDistance::lp();
      RowMatrixX<double> g1(11, 6), g2(11, 6);
      const double v1 = loss.evaluate(emb, labels, g1);
      CHECK(v1 == doctest::Approx(ntxent_by_hand(emb, all, t, cosine)).epsilon(1e-12));
      CHECK(loss.stats().terms == all.positive_count());
      // The mined path over the same pairs: same value and gradient.
      const double v2 = loss.evaluate(emb, labels, all, g2);
      CHECK(v2 == doctest::Approx(v1).epsilon(1e-13));
      CHECK(matrix_rel_error(g2, g1) <= 1e-12);
    }
  }
}

TEST_CASE("NTXentLoss: gradient matches central differences") {
  const LabelVector labels = cyclic_labels(12, 3, 7);
  const RowMatrixX<double> emb = random_matrix<double>(12, 5, 11);
  struct Setting {
    LossDistance distance;
    double temperature;
    Reduction reduction;
  };
  const std::vector<Setting> settings = {
      {LossDistance::cosine(), 0.07, Reduction::loss_default},
      {LossDistance::cosine(), 0.5, Reduction::sum},
      {LossDistance::cosine(), 0.2, Reduction::mean_nonzero},
      {LossDistance::cosine(2), 0.3, Reduction::mean},
      {LossDistance::dot_product(false), 2.0, Reduction::mean},
      {LossDistance::dot_product(true), 0.1, Reduction::loss_default},
      {LossDistance::lp(), 0.1, Reduction::loss_default},
      {LossDistance::lp(2), 0.4, Reduction::sum},
      {LossDistance::lp(1, false), 3.0, Reduction::mean},
      {LossDistance::lp(1, true, 1), 0.3, Reduction::mean},
      {LossDistance::lp(1.5, true, 3), 0.3, Reduction::mean},
  };
  for (const auto& s : settings) {
    INFO("distance " << s.distance.describe() << " temperature " << s.temperature);
    NTXentLoss<double> loss;
    loss.distance = s.distance;
    loss.temperature = s.temperature;
    loss.reduction = s.reduction;
    auto f = [&](const RowMatrixX<double>& x, RowMatrixX<double>* g) {
      return g != nullptr ? loss.evaluate(x, labels, *g) : loss.evaluate(x, labels);
    };
    CHECK(fd_error(f, emb) < 1e-6);
    const RowMatrixX<double> tight = collapse_classes(emb, labels, 1e-2, 3);
    CHECK(fd_error(f, tight) < 1e-6);
    RowMatrixX<double> one_point = random_matrix<double>(12, 5, 5) * 1e-2;
    one_point.rowwise() += emb.row(0);
    CHECK(fd_error(f, one_point) < 1e-6);
  }
}

TEST_CASE("NTXentLoss: pairs far inside the margin are exactly 0 as in the peer") {
  // Positives identical, negatives opposite: q = 1 / (1 + 2 exp(-2 / t)). At t = 0.05 the second term is
  // below the rounding of 1, the peer's -log(q + tiny) is exactly 0 and mean_nonzero leaves the pair out.
  const LabelVector labels = cyclic_labels(4, 2);
  RowMatrixX<double> emb(4, 2);
  emb << 1, 0.5, -1, -0.5, 1, 0.5, -1, -0.5;
  NTXentLoss<double> loss;
  loss.reduction = Reduction::mean_nonzero;
  RowMatrixX<double> g(4, 2);
  loss.temperature = 0.05;
  CHECK(loss.evaluate(emb, labels, g) == 0.0);
  CHECK(loss.stats().terms == 4);
  CHECK(loss.stats().active_terms == 0);
  CHECK(g.isZero(0));
  // At t = 0.5 every pair is active: log(1 + 2 e^-4) each.
  loss.temperature = 0.5;
  CHECK(loss.evaluate(emb, labels, g) == doctest::Approx(std::log1p(2 * std::exp(-4.0))).epsilon(1e-14));
  CHECK(loss.stats().active_terms == 4);
  // Just inside the rounding of 1 (t = 0.1: 2 e^-20 = 4e-9) the value keeps its digits.
  loss.temperature = 0.1;
  CHECK(loss.evaluate(emb, labels) == doctest::Approx(std::log1p(2 * std::exp(-20.0))).epsilon(1e-12));
}

TEST_CASE("NTXentLoss: mined pairs and triplets") {
  const LabelVector labels = cyclic_labels(10, 3, 5);
  const RowMatrixX<double> emb = random_matrix<double>(10, 4, 2);
  NTXentLoss<double> loss;
  loss.temperature = 0.3;
  MinedPairs pairs;
  pairs.a1 = {0, 1, 1, 2};
  pairs.p = {3, 4, 4, 7};  // a duplicate positive pair is two elements
  pairs.a2 = {0, 0, 1, 5, 0};
  pairs.n = {1, 2, 6, 6, 1};  // a duplicate negative pair counts twice in the denominator; anchor 2 has none
  // Anchor 2 has no negative pair: its element is -log(1 + tiny) = 0, still counted in the mean.
  long double total = 0;
  for (std::size_t k = 0; k < 3; ++k) {
    MinedPairs one = pairs;
    one.a1 = {pairs.a1[k]};
    one.p = {pairs.p[k]};
    total += ntxent_by_hand(emb, one, 0.3, true);
  }
  const double expected = static_cast<double>(total / 4);
  CHECK(loss.evaluate(emb, labels, pairs) == doctest::Approx(expected).epsilon(1e-12));
  CHECK(loss.stats().terms == 4);
  CHECK(loss.stats().skipped_anchors == 10 - 2);  // only rows 0 and 1 anchor both kinds
  for (const Reduction r : {Reduction::loss_default, Reduction::sum, Reduction::mean_nonzero}) {
    loss.reduction = r;
    auto f = [&](const RowMatrixX<double>& x, RowMatrixX<double>* g) {
      return g != nullptr ? loss.evaluate(x, labels, pairs, *g) : loss.evaluate(x, labels, pairs);
    };
    CHECK(fd_error(f, emb) < 1e-6);
  }
  loss.reduction = Reduction::sum;
  CHECK(loss.evaluate(emb, labels, pairs) == doctest::Approx(expected * 4).epsilon(1e-12));
  loss.reduction = Reduction::mean_nonzero;
  CHECK(loss.evaluate(emb, labels, pairs) == doctest::Approx(expected * 4 / 3).epsilon(1e-12));
  loss.reduction = Reduction::loss_default;

  MinedTriplets triplets;
  triplets.a = {0, 1, 0};
  triplets.p = {3, 4, 6};
  triplets.n = {1, 0, 2};
  MinedPairs as_pairs;
  as_pairs.a1 = triplets.a;
  as_pairs.p = triplets.p;
  as_pairs.a2 = triplets.a;
  as_pairs.n = triplets.n;
  RowMatrixX<double> gt(10, 4), gp(10, 4);
  CHECK(loss.evaluate(emb, labels, triplets, gt) == loss.evaluate(emb, labels, as_pairs, gp));
  CHECK(gt == gp);
  auto ft = [&](const RowMatrixX<double>& x, RowMatrixX<double>* g) {
    return g != nullptr ? loss.evaluate(x, labels, triplets, *g) : loss.evaluate(x, labels, triplets);
  };
  CHECK(fd_error(ft, emb) < 1e-6);
  loss.distance = LossDistance::lp();
  CHECK(fd_error(ft, emb) < 1e-6);
  loss.distance = LossDistance::cosine();

  // At most one entry in every list: pytorch-metric-learning's zero loss. No negative pair: zero too.
  MinedPairs single;
  single.a1 = {0};
  single.p = {3};
  single.a2 = {0};
  single.n = {1};
  RowMatrixX<double> g(10, 4);
  CHECK(loss.evaluate(emb, labels, single, g) == 0.0);
  CHECK(g.isZero(0));
  MinedPairs no_neg;
  no_neg.a1 = {0, 1};
  no_neg.p = {3, 4};
  CHECK(loss.evaluate(emb, labels, no_neg, g) == 0.0);
  CHECK(g.isZero(0));
  MinedTriplets one_triplet;
  one_triplet.a = {0};
  one_triplet.p = {3};
  one_triplet.n = {1};
  CHECK(loss.evaluate(emb, labels, one_triplet, g) == 0.0);
}

TEST_CASE("NTXentLoss: degenerate batches stay finite") {
  const LabelVector labels = cyclic_labels(8, 2);
  NTXentLoss<double> loss;
  RowMatrixX<double> g(8, 3);
  SUBCASE("all rows zero") {
    const RowMatrixX<double> zero = RowMatrixX<double>::Zero(8, 3);
    const double v = loss.evaluate(zero, labels, g);
    CHECK(g.allFinite());
    CHECK(loss.stats().degenerate == 8);
    CHECK(v == doctest::Approx(std::log(5.0)));  // every similarity 0: -log(1 / (1 + 4))
  }
  SUBCASE("identical rows") {
    RowMatrixX<double> same(8, 3);
    same.rowwise() = RowVectorX<double>::LinSpaced(3, 1.0, 3.0);
    CHECK(loss.evaluate(same, labels, g) == doctest::Approx(std::log(5.0)));
    CHECK(g.allFinite());
  }
  SUBCASE("one class only: no negatives") {
    const RowMatrixX<double> emb = random_matrix<double>(8, 3, 4);
    CHECK(loss.evaluate(emb, LabelVector::Zero(8), g) == 0.0);
    CHECK(g.isZero(0));
  }
  SUBCASE("every label different: no positives") {
    const RowMatrixX<double> emb = random_matrix<double>(8, 3, 4);
    CHECK(loss.evaluate(emb, cyclic_labels(8, 8), g) == 0.0);
    CHECK(g.isZero(0));
  }
  SUBCASE("a class of one: its row is skipped") {
    LabelVector y = labels;
    y[7] = 5;
    const RowMatrixX<double> emb = random_matrix<double>(8, 3, 4);
    CHECK(std::isfinite(loss.evaluate(emb, y, g)));
    CHECK(loss.stats().skipped_anchors == 1);
  }
  SUBCASE("a single row") {
    RowMatrixX<double> g1(1, 3);
    CHECK(loss.evaluate(random_matrix<double>(1, 3, 1), LabelVector::Zero(1), g1) == 0.0);
    CHECK(g1.isZero(0));
  }
  SUBCASE("tiny and huge temperatures") {
    const RowMatrixX<double> emb = random_matrix<double>(8, 3, 6);
    for (const double t : {1e-3, 1e-6, 1e6}) {
      for (const LossDistance d : {LossDistance::cosine(), LossDistance::lp(), LossDistance::dot_product(false)}) {
        INFO("t " << t << " " << d.describe());
        loss.temperature = t;
        loss.distance = d;
        const double v = loss.evaluate(emb, labels, g);
        CHECK(std::isfinite(v));
        CHECK(g.allFinite());
        NTXentLoss<float> lf;
        lf.temperature = static_cast<float>(t);
        lf.distance = d;
        RowMatrixX<float> gf(8, 3);
        CHECK(std::isfinite(lf.evaluate(emb.cast<float>(), labels, gf)));
        CHECK(gf.allFinite());
      }
    }
    // At t = 1e-6 every ratio of a pair whose negative is closer underflows: the tiny floor is counted.
    loss.temperature = 1e-6;
    loss.distance = LossDistance::cosine();
    CHECK(loss.evaluate(emb, labels) > 0.0);
    CHECK(loss.stats().degenerate > 0);
  }
}

TEST_CASE("NTXentLoss: the order of the rows does not matter") {
  // The batch sorted by label (kshot then works on it in place) and shuffled (kshot sorts a copy) give the
  // same value and the same gradient rows.
  const LabelVector labels = cyclic_labels(13, 4, 3);
  const RowMatrixX<double> emb = random_matrix<double>(13, 5, 17);
  std::vector<Index> order(13);
  for (Index i = 0; i < 13; ++i) order[static_cast<std::size_t>(i)] = i;
  std::stable_sort(order.begin(), order.end(), [&](Index a, Index b) { return labels[a] < labels[b]; });
  RowMatrixX<double> sorted_emb(13, 5);
  LabelVector sorted_labels(13);
  for (Index r = 0; r < 13; ++r) {
    sorted_emb.row(r) = emb.row(order[static_cast<std::size_t>(r)]);
    sorted_labels[r] = labels[order[static_cast<std::size_t>(r)]];
  }
  for (const LossDistance d : {LossDistance::cosine(), LossDistance::lp()}) {
    INFO(d.describe());
    NTXentLoss<double> loss;
    loss.distance = d;
    loss.reserve(13, 5);
    RowMatrixX<double> g1(13, 5), g2(13, 5);
    const double v1 = loss.evaluate(emb, labels, g1);
    const double v2 = loss.evaluate(sorted_emb, sorted_labels, g2);
    CHECK(v2 == doctest::Approx(v1).epsilon(1e-14));
    for (Index r = 0; r < 13; ++r) CHECK(max_rel_error(g2.row(r), g1.row(order[static_cast<std::size_t>(r)])) <= 1e-13);
  }
}

TEST_CASE("NTXentLoss: float agrees with double and threads do not change a bit") {
  // n = 200: the row loop runs in parallel at 2 threads (its work estimate passes config::omp_min_work).
  const LabelVector labels = cyclic_labels(200, 10, 9);
  const RowMatrixX<double> emb = random_matrix<double>(200, 16, 21);
  NTXentLoss<double> ld;
  NTXentLoss<float> lf;
  ld.temperature = 0.2;
  lf.temperature = 0.2f;
  RowMatrixX<double> gd(200, 16);
  RowMatrixX<float> gf(200, 16);
  const double vd = ld.evaluate(emb, labels, gd);
  const float vf = lf.evaluate(emb.cast<float>(), labels, gf);
  CHECK(std::abs(double(vf) - vd) <= 1e-5 * std::abs(vd));
  CHECK(matrix_rel_error(gf, gd) <= 1e-4);
  const RowMatrixX<float> ef = emb.cast<float>();
  check_thread_identity<float>([&](RowMatrixX<float>* g) { return lf.evaluate(ef, labels, *g); }, 200, 16);
  check_thread_identity<double>([&](RowMatrixX<double>* g) { return ld.evaluate(emb, labels, *g); }, 200, 16);
  ld.distance = LossDistance::lp();
  check_thread_identity<double>([&](RowMatrixX<double>* g) { return ld.evaluate(emb, labels, *g); }, 200, 16);
  MinedPairs all = all_pairs_of(labels);
  check_thread_identity<double>([&](RowMatrixX<double>* g) { return ld.evaluate(emb, labels, all, *g); }, 200, 16);
}

TEST_CASE("NTXentLoss: bad input throws with the numbers") {
  NTXentLoss<double> loss;
  const RowMatrixX<double> emb = random_matrix<double>(6, 3, 1);
  const LabelVector labels = cyclic_labels(6, 2);
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, cyclic_labels(5, 2)), std::invalid_argument,
                              "kshot::NTXentLoss::evaluate()", "labels has 5 entries", "6 rows");
  RowMatrixX<double> bad = emb;
  bad(2, 1) = std::numeric_limits<double>::infinity();
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(bad, labels), std::invalid_argument, "embeddings", "row 2");
  RowMatrixX<double> g(5, 3);
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels, g), std::invalid_argument, "grad is 5 x 3", "6 x 3");
  MinedTriplets triplets;
  triplets.a = {0, 1};
  triplets.p = {2, 3};
  triplets.n = {1, -1};
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels, triplets), std::out_of_range, "n[1] = -1", "6 rows");
  loss.temperature = 0;
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "temperature is 0");
  loss.temperature = std::nan("");
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "temperature is nan");
  loss.temperature = 0.1;
  loss.distance.power = 1.5;
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "distance.power is 1.5");
}

}  // namespace test_ntxent
