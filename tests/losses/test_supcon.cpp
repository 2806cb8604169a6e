// SPDX-License-Identifier: MIT
#include "losses/loss_checks.hpp"
#include "losses/pml_cases.hpp"

#include <kshot/losses/supcon.hpp>

#include <algorithm>
#include <limits>
#include <vector>

// Everything below lives in a namespace of its own: the loss tests are compiled in unity batches (see
// tests/CMakeLists.txt), where the helpers of different files must not collide.
namespace test_supcon {

using namespace kshot;
using namespace kshot::test;

namespace {

SupConLoss<double> loss_of(const ReferenceCase& c) {
  SupConLoss<double> loss;
  loss.temperature = param(c, "temperature", 0.1);
  loss.distance = distance_of(c.json.at("distance"));
  loss.reduction = reduction_of(c.json.at("reducer"));
  return loss;
}

/// Positive and negative masks (duplicates collapse) of the labels or of a mined tuple.
struct Masks {
  Eigen::Matrix<bool, Eigen::Dynamic, Eigen::Dynamic> pos, neg;
};

Masks masks_of(const LabelVector& labels, const MinedPairs* pairs) {
  const Index n = labels.size();
  Masks m{decltype(Masks::pos)::Constant(n, n, false), decltype(Masks::neg)::Constant(n, n, false)};
  if (pairs == nullptr) {
    for (Index i = 0; i < n; ++i)
      for (Index j = 0; j < n; ++j) {
        m.pos(i, j) = i != j && labels[i] == labels[j];
        m.neg(i, j) = labels[i] != labels[j];
      }
    return m;
  }
  for (std::size_t k = 0; k < pairs->a1.size(); ++k) m.pos(pairs->a1[k], pairs->p[k]) = true;
  for (std::size_t k = 0; k < pairs->a2.size(); ++k) m.neg(pairs->a2[k], pairs->n[k]) = true;
  return m;
}

/// SupCon straight from its definition (cosine, or minus the Euclidean distance on normalised rows),
/// reduced over the rows > 0.
double supcon_by_hand(const RowMatrixX<double>& x, const Masks& m, double t, bool cosine) {
  const RowMatrixX<double> u = x.rowwise().normalized();
  const Index n = x.rows();
  long double total = 0;
  Index active = 0;
  for (Index i = 0; i < n; ++i) {
    long double denom = 0, acc = 0;
    Index np = 0;
    auto s = [&](Index j) {
      return static_cast<long double>(cosine ? u.row(i).dot(u.row(j)) : -(u.row(i) - u.row(j)).norm()) / t;
    };
    for (Index j = 0; j < n; ++j)
      if (m.pos(i, j) || m.neg(i, j)) denom += std::exp(s(j));
    for (Index j = 0; j < n; ++j)
      if (m.pos(i, j)) {
        acc += s(j) - std::log(denom);
        ++np;
      }
    if (np == 0) continue;
    const long double v = -acc / np;
    if (v > 1e-15L) {  // a row whose only kept pair is its positive has exactly 0 in kshot and the peer
      total += v;
      ++active;
    }
  }
  return active > 0 ? static_cast<double>(total / active) : 0.0;
}

}  // namespace

TEST_CASE("SupConLoss: pytorch-metric-learning reference cases") {
  const auto cases = pml_cases("SupConLoss");
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

TEST_CASE("SupConLoss: value from the definition with labels and with mined pairs") {
  const LabelVector labels = cyclic_labels(11, 3, 4);
  const RowMatrixX<double> emb = random_matrix<double>(11, 6, 8);
  MinedPairs all;
  detail::pairs_from(Mined{}, labels, all);
  // Duplicates collapse; (2, 5) is both positive and negative; (4, 4) pairs a row with itself; row 3 has a
  // positive but no negative.
  MinedPairs mined;
  mined.a1 = {0, 0, 1, 2, 3, 4};
  mined.p = {3, 3, 7, 5, 6, 4};
  mined.a2 = {0, 1, 1, 2, 4, 0};
  mined.n = {1, 2, 2, 5, 9, 1};
  for (const double t : {0.1, 0.5, 3.0}) {
    for (const bool cosine : {true, false}) {
      INFO("t " << t << " cosine " << cosine);
      SupConLoss<double> loss;
      loss.temperature = t;
      if (!cosine) loss.distance = LossDistance::lp();
      RowMatrixX<double> g1(11, 6), g2(11, 6);
      const double v1 = loss.evaluate(emb, labels, g1);
      CHECK(v1 == doctest::Approx(supcon_by_hand(emb, masks_of(labels, nullptr), t, cosine)).epsilon(1e-12));
      CHECK(loss.stats().terms == 11);
      // The mined path over every pair: the same masks, value and gradient.
      const double v2 = loss.evaluate(emb, labels, all, g2);
      CHECK(v2 == doctest::Approx(v1).epsilon(1e-13));
      CHECK(matrix_rel_error(g2, g1) <= 1e-12);
      const double v3 = loss.evaluate(emb, labels, mined);
      CHECK(v3 == doctest::Approx(supcon_by_hand(emb, masks_of(labels, &mined), t, cosine)).epsilon(1e-12));
      CHECK(loss.stats().skipped_anchors == 11 - 5);
      auto f = [&](const RowMatrixX<double>& x, RowMatrixX<double>* g) {
        return g != nullptr ? loss.evaluate(x, labels, mined, *g) : loss.evaluate(x, labels, mined);
      };
      CHECK(fd_error(f, emb) < 1e-6);
    }
  }
}

TEST_CASE("SupConLoss: gradient matches central differences") {
  const LabelVector labels = cyclic_labels(12, 3, 7);
  const RowMatrixX<double> emb = random_matrix<double>(12, 5, 11);
  struct Setting {
    LossDistance distance;
    double temperature;
    Reduction reduction;
  };
  const std::vector<Setting> settings = {
      {LossDistance::cosine(), 0.1, Reduction::loss_default},
      {LossDistance::cosine(), 0.07, Reduction::mean},
      {LossDistance::cosine(), 0.5, Reduction::sum},
      {LossDistance::cosine(2), 0.3, Reduction::mean},
      {LossDistance::dot_product(false), 2.0, Reduction::mean},
      {LossDistance::dot_product(true), 0.1, Reduction::loss_default},
      {LossDistance::lp(), 0.1, Reduction::loss_default},
      {LossDistance::lp(2), 0.4, Reduction::sum},
      {LossDistance::lp(1, false), 3.0, Reduction::mean},
      {LossDistance::lp(1, true, 1), 0.3, Reduction::mean_nonzero},
      {LossDistance::lp(1.5, true, 3), 0.3, Reduction::mean},
  };
  for (const auto& s : settings) {
    INFO("distance " << s.distance.describe() << " temperature " << s.temperature);
    SupConLoss<double> loss;
    loss.distance = s.distance;
    loss.temperature = s.temperature;
    loss.reduction = s.reduction;
    auto f = [&](const RowMatrixX<double>& x, RowMatrixX<double>* g) {
      return g != nullptr ? loss.evaluate(x, labels, *g) : loss.evaluate(x, labels);
    };
    CHECK(fd_error(f, emb) < 1e-6);
    // Near degenerate points. Classes collapsed: the loss sits at about log |P(i)| with a gradient 1e5 times
    // smaller, so the step is larger to lift the differences above the value's rounding (the error of a
    // central difference at h = 1e-6 scales as 1 / h there: rounding, not the gradient).
    const RowMatrixX<double> tight = collapse_classes(emb, labels, 1e-2, 3);
    if (s.temperature >= 0.1) CHECK(fd_error(f, tight, 1e-5) < 1e-6);
    // The whole batch within 1e-2 of one point: every similarity near 1 (or every distance near 0).
    RowMatrixX<double> one_point = random_matrix<double>(12, 5, 5) * 1e-2;
    one_point.rowwise() += emb.row(0);
    CHECK(fd_error(f, one_point) < 1e-6);
  }
}

TEST_CASE("SupConLoss: rows far inside the margin are exactly 0 as in the peer") {
  // One positive per row, identical to the anchor; the negatives opposite. The log-sum-exp is
  // x_p + log(1 + 2 exp(-2 / t)): at t = 0.05 the second term is below the rounding of 1, the peer's row is
  // exactly 0 and mean_nonzero leaves it out.
  const LabelVector labels = cyclic_labels(4, 2);
  RowMatrixX<double> emb(4, 2);
  emb << 1, 0.5, -1, -0.5, 1, 0.5, -1, -0.5;
  SupConLoss<double> loss;
  RowMatrixX<double> g(4, 2);
  loss.temperature = 0.05;
  CHECK(loss.evaluate(emb, labels, g) == 0.0);
  CHECK(loss.stats().terms == 4);
  CHECK(loss.stats().active_terms == 0);
  CHECK(g.isZero(0));
  loss.temperature = 0.5;
  CHECK(loss.evaluate(emb, labels, g) == doctest::Approx(std::log1p(2 * std::exp(-4.0))).epsilon(1e-14));
  CHECK(loss.stats().active_terms == 4);
  loss.temperature = 0.1;
  CHECK(loss.evaluate(emb, labels) == doctest::Approx(std::log1p(2 * std::exp(-20.0))).epsilon(1e-12));
}

TEST_CASE("SupConLoss: mined pairs and triplets") {
  const LabelVector labels = cyclic_labels(10, 3, 5);
  const RowMatrixX<double> emb = random_matrix<double>(10, 4, 2);
  SupConLoss<double> loss;
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
  CHECK(vt == doctest::Approx(supcon_by_hand(emb, masks_of(labels, &as_pairs), 0.1, true)).epsilon(1e-12));
  CHECK(loss.stats().terms == 10);
  for (const Reduction r : {Reduction::loss_default, Reduction::mean, Reduction::sum}) {
    loss.reduction = r;
    auto f = [&](const RowMatrixX<double>& x, RowMatrixX<double>* g) {
      return g != nullptr ? loss.evaluate(x, labels, triplets, *g) : loss.evaluate(x, labels, triplets);
    };
    CHECK(fd_error(f, emb) < 1e-6);
  }
  // Mean over all 10 rows against mean over the 2 rows > 0.
  loss.reduction = Reduction::mean;
  CHECK(loss.evaluate(emb, labels, triplets) == doctest::Approx(vt * 2 / 10).epsilon(1e-12));
  loss.reduction = Reduction::loss_default;

  // At most one entry in every list: zero. Positives but no negative pair at all: zero.
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
}

TEST_CASE("SupConLoss: degenerate batches stay finite") {
  const LabelVector labels = cyclic_labels(8, 2);
  SupConLoss<double> loss;
  RowMatrixX<double> g(8, 3);
  SUBCASE("all rows zero") {
    const RowMatrixX<double> zero = RowMatrixX<double>::Zero(8, 3);
    const double v = loss.evaluate(zero, labels, g);
    CHECK(g.allFinite());
    CHECK(loss.stats().degenerate == 8);
    CHECK(v == doctest::Approx(std::log(7.0)));  // every similarity 0: -log(1 / 7) per positive
  }
  SUBCASE("identical rows") {
    RowMatrixX<double> same(8, 3);
    same.rowwise() = RowVectorX<double>::LinSpaced(3, 1.0, 3.0);
    CHECK(loss.evaluate(same, labels, g) == doctest::Approx(std::log(7.0)));
    CHECK(g.allFinite());
  }
  SUBCASE("one class only: no negatives") {
    CHECK(loss.evaluate(random_matrix<double>(8, 3, 4), LabelVector::Zero(8), g) == 0.0);
    CHECK(g.isZero(0));
  }
  SUBCASE("every label different: no positives") {
    CHECK(loss.evaluate(random_matrix<double>(8, 3, 4), cyclic_labels(8, 8), g) == 0.0);
    CHECK(g.isZero(0));
  }
  SUBCASE("a class of one: its row is skipped") {
    LabelVector y = labels;
    y[7] = 5;
    CHECK(std::isfinite(loss.evaluate(random_matrix<double>(8, 3, 4), y, g)));
    CHECK(loss.stats().skipped_anchors == 1);
    CHECK(loss.stats().terms == 8);
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
        CHECK(v >= 0.0);
        CHECK(g.allFinite());
        SupConLoss<float> lf;
        lf.temperature = static_cast<float>(t);
        lf.distance = d;
        RowMatrixX<float> gf(8, 3);
        CHECK(std::isfinite(lf.evaluate(emb.cast<float>(), labels, gf)));
        CHECK(gf.allFinite());
      }
    }
  }
}

TEST_CASE("SupConLoss: the order of the rows does not matter") {
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
    SupConLoss<double> loss;
    loss.distance = d;
    loss.reserve(13, 5);
    RowMatrixX<double> g1(13, 5), g2(13, 5);
    const double v1 = loss.evaluate(emb, labels, g1);
    const double v2 = loss.evaluate(sorted_emb, sorted_labels, g2);
    CHECK(v2 == doctest::Approx(v1).epsilon(1e-14));
    for (Index r = 0; r < 13; ++r) CHECK(max_rel_error(g2.row(r), g1.row(order[static_cast<std::size_t>(r)])) <= 1e-13);
  }
}

TEST_CASE("SupConLoss: float agrees with double and threads do not change a bit") {
  // n = 200: the row loop runs in parallel at 2 threads (its work estimate passes config::omp_min_work).
  const LabelVector labels = cyclic_labels(200, 10, 9);
  const RowMatrixX<double> emb = random_matrix<double>(200, 16, 21);
  SupConLoss<double> ld;
  SupConLoss<float> lf;
  RowMatrixX<double> gd(200, 16);
  RowMatrixX<float> gf(200, 16);
  const double vd = ld.evaluate(emb, labels, gd);
  const float vf = lf.evaluate(emb.cast<float>(), labels, gf);
  CHECK(std::abs(double(vf) - vd) <= 1e-5 * std::abs(vd));
  CHECK(matrix_rel_error(gf, gd) <= 1e-4);
  const RowMatrixX<float> ef = emb.cast<float>();
  check_thread_identity<float>([&](RowMatrixX<float>* g) { return lf.evaluate(ef, labels, *g); }, 200, 16);
  check_thread_identity<double>([&](RowMatrixX<double>* g) { return ld.evaluate(emb, labels, *g); }, 200, 16);
  MinedPairs all;
  detail::pairs_from(Mined{}, labels, all);
  check_thread_identity<double>([&](RowMatrixX<double>* g) { return ld.evaluate(emb, labels, all, *g); }, 200, 16);
}

TEST_CASE("SupConLoss: bad input throws with the numbers") {
  SupConLoss<double> loss;
  const RowMatrixX<double> emb = random_matrix<double>(6, 3, 1);
  const LabelVector labels = cyclic_labels(6, 2);
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, cyclic_labels(7, 2)), std::invalid_argument,
                              "kshot::SupConLoss::evaluate()", "labels has 7 entries", "6 rows");
  RowMatrixX<double> bad = emb;
  bad(4, 0) = std::nan("");
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(bad, labels), std::invalid_argument, "embeddings", "row 4");
  RowMatrixX<double> g(6, 2);
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels, g), std::invalid_argument, "grad is 6 x 2", "6 x 3");
  MinedPairs pairs;
  pairs.a1 = {0, 1};
  pairs.p = {2, 3};
  pairs.a2 = {0, 6};
  pairs.n = {1, 1};
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels, pairs), std::out_of_range, "a2[1] = 6", "6 rows");
  loss.temperature = -0.5;
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "temperature is -0.5");
  loss.temperature = 0.1;
  loss.distance.p = 0.5;
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "distance.p is 0.5");
}

}  // namespace test_supcon
