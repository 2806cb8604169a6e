// SPDX-License-Identifier: MIT
#include "losses/loss_checks.hpp"
#include "losses/pml_cases.hpp"

#include <kshot/losses/npairs.hpp>

#include <algorithm>
#include <cmath>
#include <map>

// Everything below lives in a namespace of its own: the loss tests are compiled in unity batches (see
// tests/CMakeLists.txt), where the helpers of different files must not collide.
namespace test_npairs {

using namespace kshot;
using namespace kshot::test;

namespace {

NPairsLoss<double> loss_of(const ReferenceCase& c) {
  NPairsLoss<double> loss;
  loss.distance = distance_of(c.json.at("distance"));
  loss.reduction = reduction_of(c.json.at("reducer"));
  return loss;
}

/// Rows normalised as pytorch-metric-learning does (x / max(|x|_p, 1e-12)) when the distance asks for it.
RowMatrixX<double> normalized(const RowMatrixX<double>& x, const LossDistance& dist) {
  RowMatrixX<double> out = x;
  if (!dist.normalizes()) return out;
  for (Index i = 0; i < x.rows(); ++i) {
    double s = 0;
    for (Index k = 0; k < x.cols(); ++k) s += std::pow(std::abs(x(i, k)), dist.p);
    out.row(i) /= std::max(std::pow(s, 1.0 / dist.p), 1e-12);
  }
  return out;
}

/// dist(X, Y) by direct loops (independent of kshot's GEMM path).
RowMatrixX<double> naive_matrix(const LossDistance& dist, const RowMatrixX<double>& X, const RowMatrixX<double>& Y) {
  const RowMatrixX<double> a = normalized(X, dist), b = normalized(Y, dist);
  RowMatrixX<double> m(X.rows(), Y.rows());
  for (Index i = 0; i < X.rows(); ++i)
    for (Index j = 0; j < Y.rows(); ++j) {
      double v = 0;
      if (dist.kind == DistanceKind::lp) {
        for (Index k = 0; k < X.cols(); ++k) v += std::pow(std::abs(a(i, k) - b(j, k)), dist.p);
        v = std::pow(v, 1.0 / dist.p);
      } else {
        v = a.row(i).dot(b.row(j));
      }
      m(i, j) = std::pow(v, dist.power);
    }
  return m;
}

/// The N-pairs loss as pytorch-metric-learning defines it, by brute force over the pair list.
double naive_npairs(const RowMatrixX<double>& emb, const LabelVector& labels, const Mined& mined,
                    const LossDistance& dist, Reduction reduction) {
  std::vector<Index> a1, p;
  if (mined.pairs() != nullptr) {
    a1 = mined.pairs()->a1;
    p = mined.pairs()->p;
  } else if (mined.triplets() != nullptr) {
    a1 = mined.triplets()->a;
    p = mined.triplets()->p;
  } else {
    for (Index i = 0; i < emb.rows(); ++i)
      for (Index j = 0; j < emb.rows(); ++j)
        if (i != j && labels[i] == labels[j]) { a1.push_back(i); p.push_back(j); }
  }
  std::map<Label, std::size_t> first;  // ascending labels
  for (std::size_t k = 0; k < a1.size(); ++k) first.emplace(labels[a1[k]], k);
  const Index K = static_cast<Index>(first.size());
  if (K == 0) return 0.0;
  RowMatrixX<double> A(K, emb.cols()), P(K, emb.cols());
  Index t = 0;
  for (const auto& kv : first) {
    A.row(t) = emb.row(a1[kv.second]);
    P.row(t) = emb.row(p[kv.second]);
    ++t;
  }
  const RowMatrixX<double> S = naive_matrix(dist, A, P);
  std::vector<double> v;
  for (Index r = 0; r < K; ++r) {
    double s = 0;
    for (Index u = 0; u < K; ++u) s += std::exp(dist.is_inverted() ? S(r, u) : -S(r, u));
    v.push_back(std::log(s) - (dist.is_inverted() ? S(r, r) : -S(r, r)));
  }
  double sum = 0, active_sum = 0;
  Index active = 0;
  for (double x : v) {
    sum += x;
    if (x > 0) { active_sum += x; ++active; }
  }
  if (reduction == Reduction::sum) return sum;
  if (reduction == Reduction::mean_nonzero) return active > 0 ? active_sum / double(active) : 0.0;
  return sum / double(K);
}

}  // namespace

TEST_CASE("NPairsLoss: pytorch-metric-learning reference cases") {
  const auto cases = pml_cases("NPairsLoss");
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
    // The recorded anchors (outputs.sub_losses.loss.indices) are the ones kshot selects.
    const auto& out = c.json.at("outputs").at("sub_losses").at("loss");
    if (out.contains("indices") && out.at("indices").is_array() && out.at("indices").size() == 1) {
      const std::vector<Index> expected = to_indices(out.at("indices")[0]);
      CHECK(loss.anchors() == expected);
    }
  }
}

TEST_CASE("NPairsLoss: pair selection follows pytorch-metric-learning") {
  //                 row: 0  1  2  3  4  5  6  7
  const LabelVector labels = (LabelVector(8) << 5, 2, 5, 7, 2, 9, 5, 2).finished();
  const RowMatrixX<double> emb = random_matrix<double>(8, 4, 3);
  NPairsLoss<double> loss;
  loss.evaluate(emb, labels);
  // Labels 2, 5, 7, 9 ascending; 7 and 9 have one row each and give no pair.
  CHECK(loss.anchors() == std::vector<Index>{1, 0});
  CHECK(loss.positives() == std::vector<Index>{4, 2});
  CHECK(loss.stats().terms == 2);
  CHECK(loss.stats().skipped_anchors == 2);

  // A mined tuple: the first pair in list order for each anchor label.
  MinedPairs pairs;
  pairs.a1 = {6, 2, 4, 3, 0};
  pairs.p = {2, 6, 7, 3, 6};
  pairs.a2 = {0};
  pairs.n = {1};
  loss.evaluate(emb, labels, pairs);
  CHECK(loss.anchors() == std::vector<Index>{4, 6, 3});  // labels 2, 5, 7
  CHECK(loss.positives() == std::vector<Index>{7, 2, 3});
  CHECK(loss.evaluate(emb, labels, pairs) ==
        doctest::Approx(naive_npairs(emb, labels, pairs, loss.distance, Reduction::mean)).epsilon(1e-12));

  MinedTriplets triplets;
  triplets.a = {2, 1};
  triplets.p = {0, 7};
  triplets.n = {3, 3};
  loss.evaluate(emb, labels, triplets);
  CHECK(loss.anchors() == std::vector<Index>{1, 2});
  CHECK(loss.positives() == std::vector<Index>{7, 0});
}

TEST_CASE("NPairsLoss: agrees with a brute-force evaluation") {
  const LabelVector labels = cyclic_labels(21, 6, 4);
  const RowMatrixX<double> emb = random_matrix<double>(21, 5, 8);
  const std::vector<LossDistance> distances = {LossDistance::dot_product(true), LossDistance::dot_product(false),
                                               LossDistance::cosine(), LossDistance::lp(),
                                               LossDistance::lp(2, false), LossDistance::lp(1, true, 3),
                                               LossDistance::cosine(3)};
  MinedPairs pairs;
  pairs.a1 = {3, 0, 5, 5, 9, 12};
  pairs.p = {8, 0, 11, 2, 1, 20};
  MinedTriplets triplets;
  triplets.a = {7, 7, 2, 16};
  triplets.p = {14, 1, 19, 3};
  triplets.n = {0, 1, 2, 3};
  for (const auto& dist : distances)
    for (Reduction r : {Reduction::loss_default, Reduction::mean_nonzero, Reduction::sum}) {
      INFO(dist.describe() << " reduction " << int(r));
      NPairsLoss<double> loss;
      loss.distance = dist;
      loss.reduction = r;
      for (const Mined& m : {Mined(), Mined(pairs), Mined(triplets)}) {
        const double expected = naive_npairs(emb, labels, m, dist, r);
        CHECK(expected > 0);
        CHECK(loss.evaluate(emb, labels, m) == doctest::Approx(expected).epsilon(1e-12));
      }
    }
}

TEST_CASE("NPairsLoss: gradient matches central differences") {
  const LabelVector labels = cyclic_labels(14, 5, 7);
  const RowMatrixX<double> emb = random_matrix<double>(14, 5, 11);
  struct Setting {
    LossDistance distance;
    Reduction reduction;
  };
  const std::vector<Setting> settings = {
      {LossDistance::dot_product(true), Reduction::loss_default},
      {LossDistance::dot_product(false), Reduction::mean},
      {LossDistance::cosine(), Reduction::sum},
      {LossDistance::cosine(2), Reduction::mean_nonzero},
      {LossDistance::lp(), Reduction::loss_default},
      {LossDistance::lp(2, false), Reduction::mean},
      {LossDistance::lp(1.5, true, 3), Reduction::mean},
  };
  MinedPairs pairs;
  pairs.a1 = {0, 2, 4, 4, 6};
  pairs.p = {5, 9, 1, 4, 6};  // (4, 4) and (6, 6): anchor and positive on the same row
  for (const auto& s : settings) {
    INFO("distance " << s.distance.describe());
    NPairsLoss<double> loss;
    loss.distance = s.distance;
    loss.reduction = s.reduction;
    auto f = [&](const RowMatrixX<double>& x, RowMatrixX<double>* g) {
      return g != nullptr ? loss.evaluate(x, labels, *g) : loss.evaluate(x, labels);
    };
    CHECK(fd_error(f, emb) < 1e-6);
    // Near a degenerate point: classes collapsed onto one row plus small noise.
    const RowMatrixX<double> tight = collapse_classes(emb, labels, 1e-2, 3);
    CHECK(fd_error(f, tight) < 1e-6);
    auto fm = [&](const RowMatrixX<double>& x, RowMatrixX<double>* g) {
      return g != nullptr ? loss.evaluate(x, labels, pairs, *g) : loss.evaluate(x, labels, pairs);
    };
    CHECK(fd_error(fm, emb) < 1e-6);
  }
}

TEST_CASE("NPairsLoss: unused rows get no gradient") {
  const LabelVector labels = (LabelVector(7) << 0, 1, 0, 1, 0, 2, 1).finished();
  const RowMatrixX<double> emb = random_matrix<double>(7, 3, 5);
  NPairsLoss<double> loss;
  RowMatrixX<double> g(7, 3);
  const double v = loss.evaluate(emb, labels, g);
  CHECK(v > 0);
  for (Index i : {4, 5, 6}) CHECK(g.row(i).isZero(0));
  for (Index i : {0, 1, 2, 3}) CHECK(g.row(i).norm() > 0);
}

TEST_CASE("NPairsLoss: degenerate batches stay finite") {
  NPairsLoss<double> loss;
  RowMatrixX<double> g(8, 3);
  const LabelVector labels = cyclic_labels(8, 2);
  SUBCASE("all rows zero") {
    const double v = loss.evaluate(RowMatrixX<double>::Zero(8, 3), labels, g);
    CHECK(v == doctest::Approx(std::log(2.0)));  // every logit 0, two classes
    CHECK(g.allFinite());
    CHECK(loss.stats().degenerate == 4);  // two anchors and two positives
  }
  SUBCASE("identical rows") {
    RowMatrixX<double> same(8, 3);
    same.rowwise() = RowVectorX<double>::LinSpaced(3, 1.0, 3.0);
    CHECK(loss.evaluate(same, labels, g) == doctest::Approx(std::log(2.0)));
    CHECK(g.allFinite());
  }
  SUBCASE("one class only: one pair, zero loss") {
    const double v = loss.evaluate(random_matrix<double>(8, 3, 4), LabelVector::Zero(8), g);
    CHECK(v == 0.0);
    CHECK(loss.stats().terms == 1);
    CHECK(g.allFinite());
    CHECK(g.isZero(1e-15));
  }
  SUBCASE("all classes distinct: no pair") {
    const LabelVector distinct = cyclic_labels(8, 8);
    CHECK(loss.evaluate(random_matrix<double>(8, 3, 4), distinct, g) == 0.0);
    CHECK(g.isZero(0));
    CHECK(loss.stats().skipped_anchors == 8);
  }
  SUBCASE("duplicated rows and large dot products") {
    RowMatrixX<double> emb = 300.0 * random_matrix<double>(8, 3, 6);
    emb.row(2) = emb.row(0);
    loss.distance = LossDistance::dot_product(false);
    const double v = loss.evaluate(emb, labels, g);
    CHECK(std::isfinite(v));
    CHECK(g.allFinite());
  }
  SUBCASE("a single row") {
    RowMatrixX<double> g1(1, 3);
    CHECK(loss.evaluate(random_matrix<double>(1, 3, 1), LabelVector::Zero(1), g1) == 0.0);
    CHECK(g1.isZero(0));
  }
}

TEST_CASE("NPairsLoss: float agrees with double, and threads do not change a bit") {
  const LabelVector labels = cyclic_labels(400, 200, 9);
  const RowMatrixX<double> emb = random_matrix<double>(400, 16, 21);
  NPairsLoss<double> ld;
  NPairsLoss<float> lf;
  RowMatrixX<double> gd(400, 16);
  RowMatrixX<float> gf(400, 16);
  const double vd = ld.evaluate(emb, labels, gd);
  const float vf = lf.evaluate(emb.cast<float>(), labels, gf);
  CHECK(ld.stats().terms == 200);
  CHECK(std::abs(double(vf) - vd) <= 1e-5 * std::abs(vd));
  CHECK(matrix_rel_error(gf, gd) <= 1e-4);
  const RowMatrixX<float> ef = emb.cast<float>();
  check_thread_identity<float>([&](RowMatrixX<float>* g) { return lf.evaluate(ef, labels, *g); }, 400, 16);
  check_thread_identity<double>([&](RowMatrixX<double>* g) { return ld.evaluate(emb, labels, *g); }, 400, 16);
}

TEST_CASE("NPairsLoss: bad input throws with the numbers") {
  NPairsLoss<double> loss;
  const RowMatrixX<double> emb = random_matrix<double>(6, 3, 1);
  const LabelVector labels = cyclic_labels(6, 2);
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, cyclic_labels(5, 2)), std::invalid_argument,
                              "kshot::NPairsLoss::evaluate()", "labels has 5 entries", "6 rows");
  RowMatrixX<double> bad = emb;
  bad(3, 2) = std::numeric_limits<double>::infinity();
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(bad, labels), std::invalid_argument, "embeddings", "row 3");
  RowMatrixX<double> g(6, 4);
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels, g), std::invalid_argument, "grad is 6 x 4", "6 x 3");
  MinedTriplets triplets;
  triplets.a = {0, 1};
  triplets.p = {2, 3};
  triplets.n = {1, 7};
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels, triplets), std::out_of_range, "n[1] = 7", "6 rows");
  loss.distance = LossDistance::cosine(1.5);
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "distance.power is 1.5");
}

}  // namespace test_npairs
