// SPDX-License-Identifier: MIT
#include "losses/loss_checks.hpp"
#include "losses/pml_cases.hpp"

#include <kshot/losses/multi_similarity.hpp>

#include <algorithm>
#include <limits>
#include <vector>

// Everything below lives in a namespace of its own: the loss tests are compiled in unity batches (see
// tests/CMakeLists.txt), where the helpers of different files must not collide.
namespace test_multi_similarity {

using namespace kshot;
using namespace kshot::test;

namespace {

MultiSimilarityLoss<double> loss_of(const ReferenceCase& c) {
  MultiSimilarityLoss<double> loss;
  loss.alpha = param(c, "alpha", 2.0);
  loss.beta = param(c, "beta", 50.0);
  loss.base = param(c, "base", 0.5);
  loss.distance = distance_of(c.json.at("distance"));
  loss.reduction = reduction_of(c.json.at("reducer"));
  return loss;
}

using BoolMatrix = Eigen::Matrix<bool, Eigen::Dynamic, Eigen::Dynamic>;

/// Positive and negative masks (duplicates collapse) of the labels or of a mined tuple.
void masks_of(const LabelVector& labels, const MinedPairs* pairs, BoolMatrix& pos, BoolMatrix& neg) {
  const Index n = labels.size();
  pos = BoolMatrix::Constant(n, n, false);
  neg = BoolMatrix::Constant(n, n, false);
  if (pairs == nullptr) {
    for (Index i = 0; i < n; ++i)
      for (Index j = 0; j < n; ++j) {
        pos(i, j) = i != j && labels[i] == labels[j];
        neg(i, j) = labels[i] != labels[j];
      }
    return;
  }
  for (std::size_t k = 0; k < pairs->a1.size(); ++k) pos(pairs->a1[k], pairs->p[k]) = true;
  for (std::size_t k = 0; k < pairs->a2.size(); ++k) neg(pairs->a2[k], pairs->n[k]) = true;
}

/// Multi-similarity straight from its definition, mean over all rows. `cosine`: similarity; otherwise the
/// Euclidean distance on normalised rows (the exponents flip).
double ms_by_hand(const RowMatrixX<double>& x, const LabelVector& labels, const MinedPairs* pairs, double alpha,
                  double beta, double base, bool cosine) {
  BoolMatrix pos, neg;
  masks_of(labels, pairs, pos, neg);
  const RowMatrixX<double> u = x.rowwise().normalized();
  const Index n = x.rows();
  long double total = 0;
  for (Index i = 0; i < n; ++i) {
    long double sp = 0, sn = 0;
    bool any_p = false, any_n = false;
    for (Index j = 0; j < n; ++j) {
      const long double s = cosine ? u.row(i).dot(u.row(j)) : (u.row(i) - u.row(j)).norm();
      const long double sign = cosine ? 1 : -1;
      if (pos(i, j)) {
        sp += std::exp(-alpha * sign * (s - base));
        any_p = true;
      }
      if (neg(i, j)) {
        sn += std::exp(beta * sign * (s - base));
        any_n = true;
      }
    }
    if (any_p) total += std::log1p(sp) / alpha;
    if (any_n) total += std::log1p(sn) / beta;
  }
  return static_cast<double>(total / n);
}

}  // namespace

TEST_CASE("MultiSimilarityLoss: pytorch-metric-learning reference cases") {
  const auto cases = pml_cases("MultiSimilarityLoss");
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

TEST_CASE("MultiSimilarityLoss: value from the definition with labels and with mined pairs") {
  const LabelVector labels = cyclic_labels(11, 3, 4);
  const RowMatrixX<double> emb = random_matrix<double>(11, 6, 8);
  MinedPairs all;
  detail::pairs_from(Mined{}, labels, all);
  // Duplicates collapse; (2, 5) is both positive and negative; (4, 4) pairs a row with itself.
  MinedPairs mined;
  mined.a1 = {0, 0, 1, 2, 3, 4};
  mined.p = {3, 3, 7, 5, 6, 4};
  mined.a2 = {0, 1, 1, 2, 4, 0};
  mined.n = {1, 2, 2, 5, 9, 1};
  struct Setting {
    double alpha, beta, base;
  };
  for (const Setting p : {Setting{2, 50, 0.5}, Setting{1, 5, 0.2}, Setting{0.5, 10, -0.3}}) {
    for (const bool cosine : {true, false}) {
      INFO("alpha " << p.alpha << " beta " << p.beta << " base " << p.base << " cosine " << cosine);
      MultiSimilarityLoss<double> loss;
      loss.alpha = p.alpha;
      loss.beta = p.beta;
      loss.base = p.base;
      if (!cosine) loss.distance = LossDistance::lp();
      RowMatrixX<double> g1(11, 6), g2(11, 6);
      const double v1 = loss.evaluate(emb, labels, g1);
      CHECK(v1 == doctest::Approx(ms_by_hand(emb, labels, nullptr, p.alpha, p.beta, p.base, cosine)).epsilon(1e-12));
      CHECK(loss.stats().terms == 11);
      const double v2 = loss.evaluate(emb, labels, all, g2);
      CHECK(v2 == doctest::Approx(v1).epsilon(1e-13));
      CHECK(matrix_rel_error(g2, g1) <= 1e-12);
      const double v3 = loss.evaluate(emb, labels, mined);
      CHECK(v3 == doctest::Approx(ms_by_hand(emb, labels, &mined, p.alpha, p.beta, p.base, cosine)).epsilon(1e-12));
      CHECK(loss.stats().skipped_anchors == 11 - 5);  // rows 0..4 have pairs
      auto f = [&](const RowMatrixX<double>& x, RowMatrixX<double>* g) {
        return g != nullptr ? loss.evaluate(x, labels, mined, *g) : loss.evaluate(x, labels, mined);
      };
      CHECK(fd_error(f, emb) < 1e-6);
    }
  }
}

TEST_CASE("MultiSimilarityLoss: gradient matches central differences") {
  const LabelVector labels = cyclic_labels(12, 3, 7);
  const RowMatrixX<double> emb = random_matrix<double>(12, 5, 11);
  struct Setting {
    LossDistance distance;
    double alpha, beta, base;
    Reduction reduction;
  };
  const std::vector<Setting> settings = {
      {LossDistance::cosine(), 2, 50, 0.5, Reduction::loss_default},
      {LossDistance::cosine(), 1, 10, 0.0, Reduction::sum},
      {LossDistance::cosine(), 4, 20, 0.3, Reduction::mean_nonzero},
      {LossDistance::cosine(2), 2, 10, 0.5, Reduction::mean},
      {LossDistance::dot_product(false), 0.5, 2, 0.5, Reduction::mean},
      {LossDistance::dot_product(true), 2, 50, 0.5, Reduction::loss_default},
      {LossDistance::lp(), 2, 50, 0.5, Reduction::loss_default},
      {LossDistance::lp(), 2, 10, 1.0, Reduction::mean},
      {LossDistance::lp(2), 3, 10, 1.0, Reduction::sum},
      {LossDistance::lp(1, false), 0.5, 2, 2.0, Reduction::mean},
      {LossDistance::lp(1, true, 1), 1, 5, 1.5, Reduction::mean},
      {LossDistance::lp(1.5, true, 3), 1, 5, 0.7, Reduction::mean},
  };
  for (const auto& s : settings) {
    INFO("distance " << s.distance.describe() << " alpha " << s.alpha << " beta " << s.beta << " base " << s.base);
    MultiSimilarityLoss<double> loss;
    loss.distance = s.distance;
    loss.alpha = s.alpha;
    loss.beta = s.beta;
    loss.base = s.base;
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

TEST_CASE("MultiSimilarityLoss: rows far inside the margin are exactly 0 as in the peer") {
  // Positives identical (s = 1), negatives opposite (s = -1): the row is (1/alpha) log(1 + exp(-alpha / 2))
  // + (1/beta) log(1 + 2 exp(-1.5 beta)). With alpha = 100 and beta = 50 both sums are below the rounding
  // of 1: the peer's row is exactly 0 and mean_nonzero leaves it out.
  const LabelVector labels = cyclic_labels(4, 2);
  RowMatrixX<double> emb(4, 2);
  emb << 1, 0.5, -1, -0.5, 1, 0.5, -1, -0.5;
  MultiSimilarityLoss<double> loss;
  loss.alpha = 100;
  loss.reduction = Reduction::mean_nonzero;
  RowMatrixX<double> g(4, 2);
  CHECK(loss.evaluate(emb, labels, g) == 0.0);
  CHECK(loss.stats().active_terms == 0);
  CHECK(g.isZero(0));
  // alpha = 2: the positive part keeps every digit of log1p(e^-1) / 2, the negative part of 2 e^-75 too.
  loss.alpha = 2;
  loss.beta = 10;
  CHECK(loss.evaluate(emb, labels, g) ==
        doctest::Approx(std::log1p(std::exp(-1.0)) / 2 + std::log1p(2 * std::exp(-15.0)) / 10).epsilon(1e-14));
  CHECK(loss.stats().active_terms == 4);
}

TEST_CASE("MultiSimilarityLoss: mined pairs and triplets") {
  const LabelVector labels = cyclic_labels(10, 3, 5);
  const RowMatrixX<double> emb = random_matrix<double>(10, 4, 2);
  MultiSimilarityLoss<double> loss;
  MinedTriplets triplets;
  triplets.a = {0, 1, 0, 0};
  triplets.p = {3, 4, 6, 3};
  triplets.n = {1, 0, 2, 1};
  MinedPairs as_pairs;
  as_pairs.a1 = triplets.a;
  as_pairs.p = triplets.p;
  as_pairs.a2 = triplets.a;
  as_pairs.n = triplets.n;
  RowMatrixX<double> gt(10, 4), gp(10, 4);
  const double vt = loss.evaluate(emb, labels, triplets, gt);
  CHECK(vt == loss.evaluate(emb, labels, as_pairs, gp));
  CHECK(gt == gp);
  CHECK(vt == doctest::Approx(ms_by_hand(emb, labels, &as_pairs, 2, 50, 0.5, true)).epsilon(1e-12));
  // Mean over all 10 rows (8 of them empty) against the sum and the mean over the rows > 0.
  loss.reduction = Reduction::sum;
  CHECK(loss.evaluate(emb, labels, triplets) == doctest::Approx(vt * 10).epsilon(1e-12));
  loss.reduction = Reduction::mean_nonzero;
  CHECK(loss.evaluate(emb, labels, triplets) == doctest::Approx(vt * 10 / 2).epsilon(1e-12));
  for (const Reduction r : {Reduction::loss_default, Reduction::mean_nonzero, Reduction::sum}) {
    loss.reduction = r;
    auto f = [&](const RowMatrixX<double>& x, RowMatrixX<double>* g) {
      return g != nullptr ? loss.evaluate(x, labels, triplets, *g) : loss.evaluate(x, labels, triplets);
    };
    CHECK(fd_error(f, emb) < 1e-6);
  }
  loss.reduction = Reduction::loss_default;

  // At most one entry in every list: zero. Positive pairs only: the positive parts alone.
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
  CHECK(loss.evaluate(emb, labels, no_neg, g) == doctest::Approx(ms_by_hand(emb, labels, &no_neg, 2, 50, 0.5, true)));
  CHECK(loss.evaluate(emb, labels, no_neg) > 0.0);
}

TEST_CASE("MultiSimilarityLoss: degenerate batches stay finite") {
  const LabelVector labels = cyclic_labels(8, 2);
  MultiSimilarityLoss<double> loss;
  RowMatrixX<double> g(8, 3);
  SUBCASE("all rows zero") {
    const RowMatrixX<double> zero = RowMatrixX<double>::Zero(8, 3);
    const double v = loss.evaluate(zero, labels, g);
    CHECK(g.allFinite());
    CHECK(loss.stats().degenerate == 8);
    // Every similarity 0: (1/2) log(1 + 3 e^1) + (1/50) log(1 + 4 e^-25).
    CHECK(v == doctest::Approx(0.5 * std::log1p(3 * std::exp(1.0)) + std::log1p(4 * std::exp(-25.0)) / 50));
  }
  SUBCASE("one class only: the positive parts alone") {
    const double v = loss.evaluate(random_matrix<double>(8, 3, 4), LabelVector::Zero(8), g);
    CHECK(v > 0.0);
    CHECK(g.allFinite());
    CHECK(!g.isZero(0));
  }
  SUBCASE("every label different: the negative parts alone") {
    CHECK(loss.evaluate(random_matrix<double>(8, 3, 4), cyclic_labels(8, 8), g) > 0.0);
    CHECK(g.allFinite());
  }
  SUBCASE("a single row") {
    RowMatrixX<double> g1(1, 3);
    CHECK(loss.evaluate(random_matrix<double>(1, 3, 1), LabelVector::Zero(1), g1) == 0.0);
    CHECK(g1.isZero(0));
  }
  SUBCASE("huge and tiny scales") {
    const RowMatrixX<double> emb = random_matrix<double>(8, 3, 6);
    struct Scale {
      double alpha, beta;
    };
    for (const Scale sc : {Scale{1e4, 1e6}, Scale{1e-6, 1e-6}, Scale{1e3, 1e-3}}) {
      for (const LossDistance d : {LossDistance::cosine(), LossDistance::lp(), LossDistance::dot_product(false)}) {
        INFO("alpha " << sc.alpha << " beta " << sc.beta << " " << d.describe());
        loss.alpha = sc.alpha;
        loss.beta = sc.beta;
        loss.distance = d;
        const double v = loss.evaluate(emb, labels, g);
        CHECK(std::isfinite(v));
        CHECK(g.allFinite());
        MultiSimilarityLoss<float> lf;
        lf.alpha = static_cast<float>(sc.alpha);
        lf.beta = static_cast<float>(sc.beta);
        lf.distance = d;
        RowMatrixX<float> gf(8, 3);
        CHECK(std::isfinite(lf.evaluate(emb.cast<float>(), labels, gf)));
        CHECK(gf.allFinite());
      }
    }
  }
}

TEST_CASE("MultiSimilarityLoss: the order of the rows does not matter") {
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
    MultiSimilarityLoss<double> loss;
    loss.distance = d;
    loss.reserve(13, 5);
    RowMatrixX<double> g1(13, 5), g2(13, 5);
    const double v1 = loss.evaluate(emb, labels, g1);
    const double v2 = loss.evaluate(sorted_emb, sorted_labels, g2);
    CHECK(v2 == doctest::Approx(v1).epsilon(1e-14));
    for (Index r = 0; r < 13; ++r) CHECK(max_rel_error(g2.row(r), g1.row(order[static_cast<std::size_t>(r)])) <= 1e-13);
  }
}

TEST_CASE("MultiSimilarityLoss: float agrees with double and threads do not change a bit") {
  // n = 200: the row loop runs in parallel at 2 threads (its work estimate passes config::omp_min_work).
  const LabelVector labels = cyclic_labels(200, 10, 9);
  const RowMatrixX<double> emb = random_matrix<double>(200, 16, 21);
  MultiSimilarityLoss<double> ld;
  MultiSimilarityLoss<float> lf;
  ld.beta = 10;
  lf.beta = 10;
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
  MinedPairs all;
  detail::pairs_from(Mined{}, labels, all);
  check_thread_identity<double>([&](RowMatrixX<double>* g) { return ld.evaluate(emb, labels, all, *g); }, 200, 16);
}

TEST_CASE("MultiSimilarityLoss: bad input throws with the numbers") {
  MultiSimilarityLoss<double> loss;
  const RowMatrixX<double> emb = random_matrix<double>(6, 3, 1);
  const LabelVector labels = cyclic_labels(6, 2);
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, cyclic_labels(5, 2)), std::invalid_argument,
                              "kshot::MultiSimilarityLoss::evaluate()", "labels has 5 entries", "6 rows");
  RowMatrixX<double> bad = emb;
  bad(5, 2) = -std::numeric_limits<double>::infinity();
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(bad, labels), std::invalid_argument, "embeddings", "row 5");
  RowMatrixX<double> g(5, 3);
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels, g), std::invalid_argument, "grad is 5 x 3", "6 x 3");
  MinedPairs pairs;
  pairs.a1 = {0, 1};
  pairs.p = {8, 3};
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels, pairs), std::out_of_range, "p[0] = 8", "6 rows");
  loss.alpha = 0;
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "alpha is 0");
  loss.alpha = 2;
  loss.beta = -1;
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "beta is -1");
  loss.beta = 50;
  loss.base = std::numeric_limits<double>::infinity();
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "base is inf");
}

}  // namespace test_multi_similarity
