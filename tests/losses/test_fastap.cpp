// SPDX-License-Identifier: MIT
#include "losses/loss_checks.hpp"
#include "losses/pml_cases.hpp"

#include <kshot/losses/fastap.hpp>

#include <algorithm>
#include <cmath>
#include <limits>

// Everything below lives in a namespace of its own: the loss tests are compiled in unity batches (see
// tests/CMakeLists.txt), where the helpers of different files must not collide.
namespace test_fastap {

using namespace kshot;
using namespace kshot::test;

namespace {

FastAPLoss<double> loss_of(const ReferenceCase& c) {
  FastAPLoss<double> loss;
  loss.num_bins = static_cast<int>(param(c, "num_bins", 10.0));
  loss.distance = distance_of(c.json.at("distance"));
  loss.reduction = reduction_of(c.json.at("reducer"));
  return loss;
}

/// FastAP as pytorch-metric-learning computes it, by brute force: every kernel at every distance.
double naive_fastap(const RowMatrixX<double>& emb, const LabelVector& labels, const Mined& mined, int num_bins,
                    double power, Reduction r) {
  const Index n = emb.rows();
  RowMatrixX<double> u = emb;
  for (Index i = 0; i < n; ++i) u.row(i) /= std::max(emb.row(i).norm(), 1e-12);
  std::vector<double> w(static_cast<std::size_t>(n), 1.0);
  std::vector<Index> all;
  if (const MinedPairs* p = mined.pairs()) {
    for (const auto* v : {&p->a1, &p->p, &p->a2, &p->n}) all.insert(all.end(), v->begin(), v->end());
  } else if (const MinedTriplets* t = mined.triplets()) {
    for (const auto* v : {&t->a, &t->p, &t->n}) all.insert(all.end(), v->begin(), v->end());
  }
  if (!all.empty()) {
    std::vector<double> count(static_cast<std::size_t>(n), 0.0);
    for (Index i : all) count[static_cast<std::size_t>(i)] += 1;
    const double mx = *std::max_element(count.begin(), count.end());
    for (Index i = 0; i < n; ++i) w[static_cast<std::size_t>(i)] = count[static_cast<std::size_t>(i)] / mx;
  }
  const double hmax = std::pow(2.0, power), delta = hmax / num_bins;
  std::vector<double> v;
  bool any_safe = false;
  for (Index i = 0; i < n; ++i) {
    Index npos = 0;
    for (Index j = 0; j < n; ++j) npos += (j != i && labels[j] == labels[i]) ? 1 : 0;
    if (npos == 0) continue;
    double Hp = 0, H = 0, F = 0;
    for (int b = 0; b <= num_bins; ++b) {
      const double t = hmax * b / num_bins;
      double hp = 0, hn = 0;
      for (Index j = 0; j < n; ++j) {
        if (j == i) continue;
        const double d = std::pow((u.row(i) - u.row(j)).norm(), power);
        const double k = std::max(0.0, 1.0 - std::abs(d - t) / delta);
        (labels[j] == labels[i] ? hp : hn) += k;
      }
      Hp += hp;
      H += hp + hn;
      if (hp * Hp > 0 && H > 0) {
        F += hp * Hp / H;
        any_safe = true;
      }
    }
    v.push_back((1 - F / double(npos)) * w[static_cast<std::size_t>(i)]);
  }
  if (v.empty() || !any_safe) return 0.0;
  double sum = 0, active_sum = 0;
  Index active = 0;
  for (double x : v) {
    sum += x;
    if (x > 0) { active_sum += x; ++active; }
  }
  if (r == Reduction::sum) return sum;
  if (r == Reduction::mean_nonzero) return active > 0 ? active_sum / double(active) : 0.0;
  return sum / double(v.size());
}

/// The smallest gap between a distance of the batch and a kernel knot, in units of the bin width.
double knot_gap(const RowMatrixX<double>& emb, int num_bins, double power) {
  const double hmax = std::pow(2.0, power), delta = hmax / num_bins;
  double gap = std::numeric_limits<double>::infinity();
  for (Index i = 0; i < emb.rows(); ++i)
    for (Index j = 0; j < emb.rows(); ++j) {
      if (i == j) continue;
      const double d = std::pow((emb.row(i).normalized() - emb.row(j).normalized()).norm(), power) / delta;
      // Distances never go below 0, so the first kernel is smooth on (0, delta): only a zero distance
      // sits on that knot (and a small positive one stays positive under the probe).
      if (std::round(d) == 0) gap = std::min(gap, d > 1e-9 ? 1.0 : d);
      else gap = std::min(gap, std::abs(d - std::round(d)));
    }
  return gap;
}

}  // namespace

TEST_CASE("FastAPLoss: pytorch-metric-learning reference cases") {
  const auto cases = pml_cases("FastAPLoss");
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

TEST_CASE("FastAPLoss: agrees with a brute-force evaluation") {
  const LabelVector labels = cyclic_labels(13, 4, 5);
  const RowMatrixX<double> emb = random_matrix<double>(13, 4, 2);
  MinedTriplets triplets;
  triplets.a = {0, 1, 1, 5};
  triplets.p = {4, 9, 9, 9};
  triplets.n = {2, 2, 3, 2};
  MinedPairs pairs;
  pairs.a1 = {3, 3};
  pairs.p = {7, 11};
  pairs.a2 = {3, 6};
  pairs.n = {0, 12};
  for (int bins : {10, 1, 3, 25})
    for (double power : {2.0, 1.0, 0.5, 3.0})
      for (Reduction r : {Reduction::loss_default, Reduction::mean_nonzero, Reduction::sum}) {
        INFO("num_bins " << bins << " power " << power << " reduction " << int(r));
        FastAPLoss<double> loss;
        loss.num_bins = bins;
        loss.distance = LossDistance::lp(power);
        loss.reduction = r;
        for (const Mined& m : {Mined(), Mined(triplets), Mined(pairs)}) {
          const double expected = naive_fastap(emb, labels, m, bins, power, r);
          CHECK(expected > 0);
          CHECK(loss.evaluate(emb, labels, m) == doctest::Approx(expected).epsilon(1e-12));
        }
      }
}

TEST_CASE("FastAPLoss: miner weights scale each anchor's term") {
  const LabelVector labels = cyclic_labels(10, 3, 8);
  const RowMatrixX<double> emb = random_matrix<double>(10, 5, 3);
  FastAPLoss<double> loss;
  loss.reduction = Reduction::sum;
  MinedTriplets triplets;  // rows 0, 1, 2 once each: weights 1, 1, 1, others 0
  triplets.a = {0};
  triplets.p = {1};
  triplets.n = {2};
  MinedTriplets twice = triplets;
  twice.a.push_back(0);
  twice.p.push_back(0);
  twice.n.push_back(0);
  const double one = loss.evaluate(emb, labels, triplets);
  CHECK(one == doctest::Approx(naive_fastap(emb, labels, triplets, 10, 2.0, Reduction::sum)).epsilon(1e-12));
  // Row 0 counted four times: weights 1, 1/4, 1/4; anchor 0 keeps its term, rows 1 and 2 shrink.
  const double v = loss.evaluate(emb, labels, twice);
  CHECK(v == doctest::Approx(naive_fastap(emb, labels, twice, 10, 2.0, Reduction::sum)).epsilon(1e-12));
  CHECK(v < one);
  // Positives come from the labels, not from the tuple: the gradient reaches rows outside it.
  RowMatrixX<double> g(10, 5);
  loss.evaluate(emb, labels, triplets, g);
  Index touched = 0;
  for (Index i = 0; i < 10; ++i) touched += g.row(i).norm() > 0 ? 1 : 0;
  CHECK(touched > 3);
}

TEST_CASE("FastAPLoss: gradient matches central differences") {
  const LabelVector labels = cyclic_labels(12, 3, 7);
  const RowMatrixX<double> emb = random_matrix<double>(12, 5, 11);
  // Near-degenerate: rows pushed onto each other in groups that cut across the classes, so that tiny
  // distances fall in the first bin for positives and negatives alike. (Collapsing the classes
  // themselves gives a perfect ranking, where FastAP is flat.)
  const RowMatrixX<double> tight = collapse_classes(emb, cyclic_labels(12, 4, 99), 1e-2, 3);
  MinedPairs pairs;
  pairs.a1 = {0, 2, 4};
  pairs.p = {5, 9, 1};
  pairs.a2 = {0, 0};
  pairs.n = {1, 3};
  for (int bins : {10, 4, 17})
    for (double power : {2.0, 1.0, 1.25})
      for (Reduction r : {Reduction::loss_default, Reduction::sum, Reduction::mean_nonzero}) {
        INFO("num_bins " << bins << " power " << power);
        // Central differences move a distance by about 1e-6: keep every distance away from a kernel knot.
        REQUIRE(knot_gap(emb, bins, power) > 1e-4);
        REQUIRE(knot_gap(tight, bins, power) > 1e-4);
        FastAPLoss<double> loss;
        loss.num_bins = bins;
        loss.distance = LossDistance::lp(power);
        loss.reduction = r;
        auto f = [&](const RowMatrixX<double>& x, RowMatrixX<double>* g) {
          return g != nullptr ? loss.evaluate(x, labels, *g) : loss.evaluate(x, labels);
        };
        CHECK(fd_error(f, emb) < 1e-6);
        CHECK(fd_error(f, tight) < 1e-6);
        RowMatrixX<double> gt(12, 5);
        CHECK(loss.evaluate(tight, labels, gt) > 0.05);  // not a flat point
        CHECK(gt.norm() > 1e-3);
        auto fm = [&](const RowMatrixX<double>& x, RowMatrixX<double>* g) {
          return g != nullptr ? loss.evaluate(x, labels, pairs, *g) : loss.evaluate(x, labels, pairs);
        };
        CHECK(fd_error(fm, emb) < 1e-6);
      }
}

TEST_CASE("FastAPLoss: kernel peaks give no gradient, as torch") {
  // Two classes of two rows on a circle: the squared distances are exactly 2 and 4, kernel centres of a
  // 4-bin histogram (t_2, t_4; centres and width exact in binary), where torch's |x| and relu give zero
  // slope. (With 10 bins the centres 1.6 and 2.4 are inexact and leave slivers of kernels 4 and 6.)
  RowMatrixX<double> emb(4, 2);
  emb << 1, 0, 0, 1, -1, 0, 0, -1;
  const LabelVector labels = (LabelVector(4) << 0, 1, 0, 1).finished();
  FastAPLoss<double> loss;
  loss.num_bins = 4;
  RowMatrixX<double> g(4, 2);
  const double v = loss.evaluate(emb, labels, g);
  // Each anchor: its positive at distance 4 (bin 4), negatives at 2 (bin 2): AP = 1/3.
  CHECK(v == doctest::Approx(1.0 - 1.0 / 3.0).epsilon(1e-12));
  CHECK(g.isZero(0));
}

TEST_CASE("FastAPLoss: degenerate batches stay finite") {
  const LabelVector labels = cyclic_labels(8, 2);
  FastAPLoss<double> loss;
  RowMatrixX<double> g(8, 3);
  SUBCASE("all rows zero") {
    // Every distance 0: all mass in bin 0, AP = h+ / (h+ + h-) = 3 / 7.
    const double v = loss.evaluate(RowMatrixX<double>::Zero(8, 3), labels, g);
    CHECK(v == doctest::Approx(1.0 - 3.0 / 7.0).epsilon(1e-12));
    CHECK(g.allFinite());
    CHECK(loss.stats().degenerate == 8);
  }
  SUBCASE("identical rows") {
    RowMatrixX<double> same(8, 3);
    same.rowwise() = RowVectorX<double>::LinSpaced(3, 1.0, 3.0);
    CHECK(loss.evaluate(same, labels, g) == doctest::Approx(1.0 - 3.0 / 7.0).epsilon(1e-12));
    CHECK(g.allFinite());
  }
  SUBCASE("one class only: no negatives, perfect AP") {
    const RowMatrixX<double> emb = random_matrix<double>(8, 3, 4);
    const double v = loss.evaluate(emb, LabelVector::Zero(8), g);
    CHECK(v == doctest::Approx(0.0).epsilon(1e-12).scale(1.0));
    CHECK(g.allFinite());
    CHECK(loss.stats().terms == 8);
  }
  SUBCASE("all classes distinct: no anchor has a positive") {
    CHECK(loss.evaluate(random_matrix<double>(8, 3, 4), cyclic_labels(8, 8), g) == 0.0);
    CHECK(g.isZero(0));
    CHECK(loss.stats().skipped_anchors == 8);
  }
  SUBCASE("a class of one is skipped") {
    const LabelVector some = (LabelVector(8) << 0, 1, 0, 1, 2, 0, 1, 3).finished();
    const RowMatrixX<double> emb = random_matrix<double>(8, 3, 4);
    const double v = loss.evaluate(emb, some, g);
    CHECK(v == doctest::Approx(naive_fastap(emb, some, Mined(), 10, 2.0, Reduction::mean)).epsilon(1e-12));
    CHECK(loss.stats().terms == 6);
    CHECK(loss.stats().skipped_anchors == 2);
  }
  SUBCASE("duplicated rows") {
    RowMatrixX<double> emb = random_matrix<double>(8, 3, 5);
    emb.row(2) = emb.row(0);
    emb.row(3) = emb.row(0);
    CHECK(std::isfinite(loss.evaluate(emb, labels, g)));
    CHECK(g.allFinite());
  }
  SUBCASE("a single row") {
    RowMatrixX<double> g1(1, 3);
    CHECK(loss.evaluate(random_matrix<double>(1, 3, 1), LabelVector::Zero(1), g1) == 0.0);
    CHECK(g1.isZero(0));
  }
}

TEST_CASE("FastAPLoss: float agrees with double, and threads do not change a bit") {
  const LabelVector labels = cyclic_labels(200, 10, 9);
  const RowMatrixX<double> emb = random_matrix<double>(200, 16, 21);
  FastAPLoss<double> ld;
  FastAPLoss<float> lf;
  RowMatrixX<double> gd(200, 16);
  RowMatrixX<float> gf(200, 16);
  const double vd = ld.evaluate(emb, labels, gd);
  const RowMatrixX<float> ef = emb.cast<float>();
  const float vf = lf.evaluate(ef, labels, gf);
  CHECK(std::abs(double(vf) - vd) <= 1e-5 * std::abs(vd));
  CHECK(matrix_rel_error(gf, gd) <= 1e-4);
  check_thread_identity<float>([&](RowMatrixX<float>* g) { return lf.evaluate(ef, labels, *g); }, 200, 16);
  check_thread_identity<double>([&](RowMatrixX<double>* g) { return ld.evaluate(emb, labels, *g); }, 200, 16);
}

TEST_CASE("FastAPLoss: bad input throws with the numbers") {
  FastAPLoss<double> loss;
  const RowMatrixX<double> emb = random_matrix<double>(6, 3, 1);
  const LabelVector labels = cyclic_labels(6, 2);
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, cyclic_labels(5, 2)), std::invalid_argument,
                              "kshot::FastAPLoss::evaluate()", "labels has 5 entries", "6 rows");
  RowMatrixX<double> bad = emb;
  bad(4, 0) = -std::numeric_limits<double>::infinity();
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(bad, labels), std::invalid_argument, "embeddings", "row 4");
  RowMatrixX<double> g(6, 2);
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels, g), std::invalid_argument, "grad is 6 x 2", "6 x 3");
  MinedPairs pairs;
  pairs.a1 = {0};
  pairs.p = {-1};
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels, pairs), std::out_of_range, "p[0] = -1", "6 rows");
  loss.num_bins = 0;
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "num_bins is 0");
  loss.num_bins = 10;
  loss.distance = LossDistance::cosine();
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "CosineSimilarity",
                              "FastAP needs LpDistance with normalize_embeddings and p = 2");
  loss.distance = LossDistance::squared_lp(false);
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "normalize_embeddings=false");
  loss.distance = LossDistance::lp(2, true, 3);
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "p=3");
}

}  // namespace test_fastap
