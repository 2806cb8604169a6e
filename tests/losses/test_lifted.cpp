// SPDX-License-Identifier: MIT
#include "losses/loss_checks.hpp"
#include "losses/pml_cases.hpp"

#include <kshot/losses/lifted.hpp>

#include <algorithm>
#include <cmath>
#include <limits>

// Everything below lives in a namespace of its own: the loss tests are compiled in unity batches (see
// tests/CMakeLists.txt), where the helpers of different files must not collide.
namespace test_lifted {

using namespace kshot;
using namespace kshot::test;

namespace {

template <class Loss>
Loss loss_of(const ReferenceCase& c) {
  Loss loss;
  loss.pos_margin = param(c, "pos_margin", 0.0);
  loss.neg_margin = param(c, "neg_margin", 1.0);
  loss.distance = distance_of(c.json.at("distance"));
  loss.reduction = reduction_of(c.json.at("reducer"));
  return loss;
}

template <class Loss>
void check_reference_cases(const std::string& name) {
  const auto cases = pml_cases(name);
  for (const auto& c : cases) {
    INFO("case " << c.json.at("case").get<std::string>());
    auto loss = loss_of<Loss>(c);
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

/// dist(X, X) by direct loops on rows normalised as pytorch-metric-learning does.
RowMatrixX<double> naive_matrix(const LossDistance& dist, const RowMatrixX<double>& X) {
  RowMatrixX<double> a = X;
  if (dist.normalizes())
    for (Index i = 0; i < X.rows(); ++i) {
      double s = 0;
      for (Index k = 0; k < X.cols(); ++k) s += std::pow(std::abs(X(i, k)), dist.p);
      a.row(i) /= std::max(std::pow(s, 1.0 / dist.p), 1e-12);
    }
  RowMatrixX<double> m(X.rows(), X.rows());
  for (Index i = 0; i < X.rows(); ++i)
    for (Index j = 0; j < X.rows(); ++j) {
      double v = 0;
      if (dist.kind == DistanceKind::lp) {
        for (Index k = 0; k < X.cols(); ++k) v += std::pow(std::abs(a(i, k) - a(j, k)), dist.p);
        v = std::pow(v, 1.0 / dist.p);
      } else {
        v = a.row(i).dot(a.row(j));
      }
      m(i, j) = std::pow(v, dist.power);
    }
  return m;
}

/// The pair lists pytorch-metric-learning's convert_to_pairs gives.
MinedPairs naive_pairs(const LabelVector& labels, const Mined& mined) {
  MinedPairs out;
  if (mined.pairs() != nullptr) return *mined.pairs();
  if (mined.triplets() != nullptr) {
    out.a1 = out.a2 = mined.triplets()->a;
    out.p = mined.triplets()->p;
    out.n = mined.triplets()->n;
    return out;
  }
  for (Index i = 0; i < labels.size(); ++i)
    for (Index j = 0; j < labels.size(); ++j) {
      if (labels[i] == labels[j] && i != j) { out.a1.push_back(i); out.p.push_back(j); }
      if (labels[i] != labels[j]) { out.a2.push_back(i); out.n.push_back(j); }
    }
  return out;
}

double reduce_naive(const std::vector<double>& v, Reduction r) {
  double sum = 0, active_sum = 0;
  Index active = 0;
  for (double x : v) {
    sum += x;
    if (x > 0) { active_sum += x; ++active; }
  }
  if (v.empty()) return 0.0;
  if (r == Reduction::sum) return sum;
  if (r == Reduction::mean_nonzero) return active > 0 ? active_sum / double(active) : 0.0;
  return sum / double(v.size());
}

double margin(const LossDistance& d, double x, double y) { return d.is_inverted() ? y - x : x - y; }

double log_sum_exp(const std::vector<double>& v) {
  if (v.empty()) return 0.0;  // pytorch-metric-learning's masked log-sum-exp of an empty row
  const double mx = *std::max_element(v.begin(), v.end());
  double s = 0;
  for (double x : v) s += std::exp(x - mx);
  return mx + std::log(s);
}

/// LiftedStructureLoss by brute force over (positive pair, negative pair), as pytorch-metric-learning.
double naive_lifted(const RowMatrixX<double>& emb, const LabelVector& labels, const Mined& mined,
                    const LossDistance& dist, double pos_margin, double neg_margin, Reduction r) {
  const MinedPairs pr = naive_pairs(labels, mined);
  if (pr.a1.size() <= 1 && pr.a2.size() <= 1) return 0.0;
  if (pr.a1.empty() || pr.a2.empty()) return 0.0;
  const RowMatrixX<double> M = naive_matrix(dist, emb);
  std::vector<double> v;
  for (std::size_t k = 0; k < pr.a1.size(); ++k) {
    std::vector<double> neg;
    for (std::size_t j = 0; j < pr.a2.size(); ++j)
      if (pr.a2[j] == pr.a1[k] || pr.a2[j] == pr.p[k]) neg.push_back(margin(dist, neg_margin, M(pr.a2[j], pr.n[j])));
    const double J = log_sum_exp(neg) + margin(dist, M(pr.a1[k], pr.p[k]), pos_margin);
    v.push_back(J > 0 ? J * J / 2 : 0.0);
  }
  return reduce_naive(v, r);
}

/// GeneralizedLiftedStructureLoss by brute force over 0/1 masks, as pytorch-metric-learning.
double naive_generalized(const RowMatrixX<double>& emb, const LabelVector& labels, const Mined& mined,
                         const LossDistance& dist, double pos_margin, double neg_margin, Reduction r) {
  const MinedPairs pr = naive_pairs(labels, mined);
  if (pr.a1.size() <= 1 && pr.a2.size() <= 1) return 0.0;
  const Index n = emb.rows();
  const RowMatrixX<double> M = naive_matrix(dist, emb);
  Eigen::MatrixXi pos = Eigen::MatrixXi::Zero(n, n), negm = Eigen::MatrixXi::Zero(n, n);
  for (std::size_t k = 0; k < pr.a1.size(); ++k) pos(pr.a1[k], pr.p[k]) = 1;
  for (std::size_t k = 0; k < pr.a2.size(); ++k) negm(pr.a2[k], pr.n[k]) = 1;
  std::vector<double> v;
  for (Index i = 0; i < n; ++i) {
    std::vector<double> a, b;
    for (Index j = 0; j < n; ++j) {
      if (pos(i, j)) a.push_back(margin(dist, M(i, j), pos_margin));
      if (negm(i, j)) b.push_back(margin(dist, neg_margin, M(i, j)));
    }
    const double x = log_sum_exp(a) + log_sum_exp(b);
    v.push_back(x > 0 ? x : 0.0);
  }
  return reduce_naive(v, r);
}

struct Setting {
  LossDistance distance;
  double pos_margin, neg_margin;
  Reduction reduction;
};

const std::vector<Setting>& settings() {
  static const std::vector<Setting> s = {
      {LossDistance::lp(), 0.0, 1.0, Reduction::loss_default},
      {LossDistance::lp(), 0.3, 0.2, Reduction::mean_nonzero},
      {LossDistance::lp(2), 0.1, 1.5, Reduction::sum},
      {LossDistance::lp(1, false), 0.5, 4.0, Reduction::mean},
      {LossDistance::lp(1, true, 1), 0.2, 1.0, Reduction::loss_default},
      {LossDistance::lp(1.5, true, 3), 0.1, 1.0, Reduction::mean},
      {LossDistance::cosine(), 0.9, 0.1, Reduction::loss_default},
      {LossDistance::dot_product(false), 1.0, -0.5, Reduction::mean},
      {LossDistance::cosine(2), 0.8, 0.2, Reduction::mean_nonzero},
  };
  return s;
}

MinedPairs example_pairs() {
  MinedPairs pairs;
  pairs.a1 = {0, 1, 1, 4, 7, 2};
  pairs.p = {3, 4, 4, 4, 8, 5};     // (1, 4) twice counts twice; (4, 4) has a == p
  pairs.a2 = {0, 2, 5, 4, 3, 0, 6};
  pairs.n = {1, 0, 6, 0, 1, 1, 2};  // (0, 1) twice; row 7 and row 8 have no negative pair
  return pairs;
}

MinedTriplets example_triplets() {
  MinedTriplets t;
  t.a = {0, 1, 2, 0};
  t.p = {3, 4, 5, 6};
  t.n = {1, 0, 6, 2};
  return t;
}

}  // namespace

TEST_CASE("LiftedStructureLoss: pytorch-metric-learning reference cases") {
  REQUIRE(!pml_cases("LiftedStructureLoss").empty());
  check_reference_cases<LiftedStructureLoss<double>>("LiftedStructureLoss");
}

TEST_CASE("GeneralizedLiftedStructureLoss: pytorch-metric-learning reference cases when present") {
  // No case ships yet; any pml_*.json for this class dropped into either reference directory runs here.
  check_reference_cases<GeneralizedLiftedStructureLoss<double>>("GeneralizedLiftedStructureLoss");
}

TEST_CASE("LiftedStructureLoss: agrees with a brute-force evaluation") {
  const LabelVector labels = cyclic_labels(11, 3, 5);
  const RowMatrixX<double> emb = random_matrix<double>(11, 4, 2);
  const MinedPairs pairs = example_pairs();
  const MinedTriplets triplets = example_triplets();
  for (const auto& s : settings()) {
    INFO(s.distance.describe() << " margins " << s.pos_margin << " " << s.neg_margin);
    LiftedStructureLoss<double> loss;
    loss.distance = s.distance;
    loss.pos_margin = s.pos_margin;
    loss.neg_margin = s.neg_margin;
    loss.reduction = s.reduction;
    for (const Mined& m : {Mined(), Mined(pairs), Mined(triplets)}) {
      const double expected =
          naive_lifted(emb, labels, m, s.distance, s.pos_margin, s.neg_margin, s.reduction);
      CHECK(expected > 0);
      CHECK(loss.evaluate(emb, labels, m) == doctest::Approx(expected).epsilon(1e-12));
    }
  }
  // Pairs 7-8 and 4-4 see no negative pair: counted, with their log-sum-exp taken as 0.
  LiftedStructureLoss<double> loss;
  loss.evaluate(emb, labels, pairs);
  CHECK(loss.stats().terms == 6);
  CHECK(loss.stats().skipped_anchors == 1);  // (7, 8): (4, 4) has row 4's negative pair (4, 0)
}

TEST_CASE("GeneralizedLiftedStructureLoss: agrees with a brute-force evaluation") {
  const LabelVector labels = cyclic_labels(11, 3, 5);
  const RowMatrixX<double> emb = random_matrix<double>(11, 4, 2);
  const MinedPairs pairs = example_pairs();
  const MinedTriplets triplets = example_triplets();
  for (const auto& s : settings()) {
    INFO(s.distance.describe() << " margins " << s.pos_margin << " " << s.neg_margin);
    GeneralizedLiftedStructureLoss<double> loss;
    loss.distance = s.distance;
    loss.pos_margin = s.pos_margin;
    loss.neg_margin = s.neg_margin;
    loss.reduction = s.reduction;
    for (const Mined& m : {Mined(), Mined(pairs), Mined(triplets)}) {
      const double expected =
          naive_generalized(emb, labels, m, s.distance, s.pos_margin, s.neg_margin, s.reduction);
      CHECK(expected > 0);
      CHECK(loss.evaluate(emb, labels, m) == doctest::Approx(expected).epsilon(1e-12));
    }
  }
  GeneralizedLiftedStructureLoss<double> loss;
  loss.evaluate(emb, labels);
  CHECK(loss.stats().terms == 11);
  CHECK(loss.stats().skipped_anchors == 0);
  loss.evaluate(emb, labels, pairs);
  CHECK(loss.stats().terms == 11);
  CHECK(loss.stats().skipped_anchors == 11 - 3);  // only rows 0, 2 and 4 have a positive and a negative pair
}

TEST_CASE("LiftedStructureLoss: gradient matches central differences") {
  const LabelVector labels = cyclic_labels(12, 3, 7);
  const RowMatrixX<double> emb = random_matrix<double>(12, 5, 11);
  const MinedPairs pairs = example_pairs();
  const MinedTriplets triplets = example_triplets();
  for (const auto& s : settings()) {
    INFO("distance " << s.distance.describe() << " margins " << s.pos_margin << " " << s.neg_margin);
    LiftedStructureLoss<double> loss;
    loss.distance = s.distance;
    loss.pos_margin = s.pos_margin;
    loss.neg_margin = s.neg_margin;
    loss.reduction = s.reduction;
    auto f = [&](const RowMatrixX<double>& x, RowMatrixX<double>* g) {
      return g != nullptr ? loss.evaluate(x, labels, *g) : loss.evaluate(x, labels);
    };
    CHECK(fd_error(f, emb) < 1e-6);
    const RowMatrixX<double> tight = collapse_classes(emb, labels, 1e-2, 3);
    CHECK(fd_error(f, tight) < 1e-6);
    for (const Mined& m : {Mined(pairs), Mined(triplets)}) {
      auto fm = [&](const RowMatrixX<double>& x, RowMatrixX<double>* g) {
        return g != nullptr ? loss.evaluate(x, labels, m, *g) : loss.evaluate(x, labels, m);
      };
      CHECK(fd_error(fm, emb) < 1e-6);
    }
  }
}

TEST_CASE("GeneralizedLiftedStructureLoss: gradient matches central differences") {
  const LabelVector labels = cyclic_labels(12, 3, 7);
  const RowMatrixX<double> emb = random_matrix<double>(12, 5, 11);
  const MinedPairs pairs = example_pairs();
  MinedPairs overlapping = pairs;  // (0, 3) is listed as a positive and as a negative pair
  overlapping.a2.push_back(0);
  overlapping.n.push_back(3);
  for (const auto& s : settings()) {
    INFO("distance " << s.distance.describe() << " margins " << s.pos_margin << " " << s.neg_margin);
    GeneralizedLiftedStructureLoss<double> loss;
    loss.distance = s.distance;
    loss.pos_margin = s.pos_margin;
    loss.neg_margin = s.neg_margin;
    loss.reduction = s.reduction;
    auto f = [&](const RowMatrixX<double>& x, RowMatrixX<double>* g) {
      return g != nullptr ? loss.evaluate(x, labels, *g) : loss.evaluate(x, labels);
    };
    CHECK(fd_error(f, emb) < 1e-6);
    const RowMatrixX<double> tight = collapse_classes(emb, labels, 1e-2, 3);
    CHECK(fd_error(f, tight) < 1e-6);
    for (const Mined& m : {Mined(pairs), Mined(overlapping)}) {
      auto fm = [&](const RowMatrixX<double>& x, RowMatrixX<double>* g) {
        return g != nullptr ? loss.evaluate(x, labels, m, *g) : loss.evaluate(x, labels, m);
      };
      CHECK(fd_error(fm, emb) < 1e-6);
    }
    CHECK(loss.evaluate(emb, labels, overlapping) ==
          doctest::Approx(naive_generalized(emb, labels, overlapping, s.distance, s.pos_margin, s.neg_margin,
                                            s.reduction))
              .epsilon(1e-12));
  }
}

TEST_CASE("LiftedStructureLoss: large margins and similarities do not overflow") {
  const LabelVector labels = cyclic_labels(10, 3, 2);
  const RowMatrixX<double> emb = 40.0 * random_matrix<double>(10, 4, 9);
  LiftedStructureLoss<double> loss;
  loss.distance = LossDistance::dot_product(false);
  loss.neg_margin = -900;  // exp(s - m) would overflow without the row maxima
  RowMatrixX<double> g(10, 4);
  const double v = loss.evaluate(emb, labels, g);
  CHECK(std::isfinite(v));
  CHECK(g.allFinite());
  CHECK(v == doctest::Approx(naive_lifted(emb, labels, Mined(), loss.distance, 0.0, -900.0, Reduction::mean))
                 .epsilon(1e-12));
  // Rows of one class whose largest negative similarities are more than ~708 apart: the per-class
  // shortcut would underflow, and the exact pairwise log-sum-exp takes over. Check the gradient there.
  const RowMatrixX<double> big = 25.0 * random_matrix<double>(10, 4, 9);
  double widest = 0;
  for (Index i = 0; i < 10; ++i)
    for (Index j = 0; j < 10; ++j) {
      if (labels[i] != labels[j]) continue;
      double mi = -1e300, mj = -1e300;
      for (Index q = 0; q < 10; ++q) {
        if (labels[q] != labels[i]) mi = std::max(mi, big.row(i).dot(big.row(q)));
        if (labels[q] != labels[j]) mj = std::max(mj, big.row(j).dot(big.row(q)));
      }
      widest = std::max(widest, std::abs(mi - mj));
    }
  REQUIRE(widest > 750);
  LiftedStructureLoss<double> wide;
  wide.distance = LossDistance::dot_product(false);
  auto fw = [&](const RowMatrixX<double>& x, RowMatrixX<double>* gw) {
    return gw != nullptr ? wide.evaluate(x, labels, *gw) : wide.evaluate(x, labels);
  };
  CHECK(fd_error(fw, big, 1e-5) < 1e-6);
  CHECK(wide.evaluate(big, labels) ==
        doctest::Approx(naive_lifted(big, labels, Mined(), wide.distance, 0.0, 1.0, Reduction::mean)).epsilon(1e-12));

  GeneralizedLiftedStructureLoss<double> gen;
  gen.distance = LossDistance::dot_product(false);
  gen.neg_margin = -900;
  gen.pos_margin = 900;
  const double w = gen.evaluate(emb, labels, g);
  CHECK(std::isfinite(w));
  CHECK(g.allFinite());
  CHECK(w == doctest::Approx(naive_generalized(emb, labels, Mined(), gen.distance, 900.0, -900.0, Reduction::mean))
                 .epsilon(1e-12));
}

TEST_CASE("LiftedStructureLoss: degenerate batches stay finite") {
  const LabelVector labels = cyclic_labels(8, 2);
  LiftedStructureLoss<double> loss;
  GeneralizedLiftedStructureLoss<double> gen;
  RowMatrixX<double> g(8, 3);
  SUBCASE("all rows zero") {
    const RowMatrixX<double> zero = RowMatrixX<double>::Zero(8, 3);
    // Every distance 0: J = log(8 negatives * e^1) = 1 + log 8 for every positive pair.
    const double J = 1 + std::log(8.0);
    CHECK(loss.evaluate(zero, labels, g) == doctest::Approx(J * J / 2));
    CHECK(g.allFinite());
    CHECK(loss.stats().degenerate == 8);
    CHECK(gen.evaluate(zero, labels, g) == doctest::Approx(std::log(3.0) + 1 + std::log(4.0)));
    CHECK(g.allFinite());
  }
  SUBCASE("identical rows") {
    RowMatrixX<double> same(8, 3);
    same.rowwise() = RowVectorX<double>::LinSpaced(3, 1.0, 3.0);
    const double J = 1 + std::log(8.0);
    CHECK(loss.evaluate(same, labels, g) == doctest::Approx(J * J / 2));
    CHECK(g.allFinite());
    CHECK(std::isfinite(gen.evaluate(same, labels, g)));
    CHECK(g.allFinite());
  }
  SUBCASE("one class only: no negatives") {
    const LabelVector one = LabelVector::Zero(8);
    const RowMatrixX<double> emb = random_matrix<double>(8, 3, 4);
    CHECK(loss.evaluate(emb, one, g) == 0.0);
    CHECK(g.isZero(0));
    // The generalised form still has its positive term (pytorch-metric-learning's mask-based loss).
    const double v = gen.evaluate(emb, one, g);
    CHECK(v == doctest::Approx(naive_generalized(emb, one, Mined(), gen.distance, 0.0, 1.0, Reduction::mean))
                   .epsilon(1e-12));
    CHECK(g.allFinite());
    CHECK(gen.stats().skipped_anchors == 8);
  }
  SUBCASE("all classes distinct: no positives") {
    const LabelVector distinct = cyclic_labels(8, 8);
    const RowMatrixX<double> emb = random_matrix<double>(8, 3, 4);
    CHECK(loss.evaluate(emb, distinct, g) == 0.0);
    CHECK(g.isZero(0));
    const double v = gen.evaluate(emb, distinct, g);
    CHECK(v == doctest::Approx(naive_generalized(emb, distinct, Mined(), gen.distance, 0.0, 1.0, Reduction::mean))
                   .epsilon(1e-12));
    CHECK(g.allFinite());
  }
  SUBCASE("duplicated rows within and across classes") {
    RowMatrixX<double> emb = random_matrix<double>(8, 3, 5);
    emb.row(2) = emb.row(0);  // same class
    emb.row(3) = emb.row(0);  // other class
    CHECK(std::isfinite(loss.evaluate(emb, labels, g)));
    CHECK(g.allFinite());
    CHECK(std::isfinite(gen.evaluate(emb, labels, g)));
    CHECK(g.allFinite());
  }
  SUBCASE("at most one entry per list: zero loss") {
    const RowMatrixX<double> emb = random_matrix<double>(8, 3, 5);
    MinedPairs single;
    single.a1 = {0};
    single.p = {2};
    single.a2 = {0};
    single.n = {1};
    CHECK(loss.evaluate(emb, labels, single, g) == 0.0);
    CHECK(g.isZero(0));
    CHECK(gen.evaluate(emb, labels, single, g) == 0.0);
    CHECK(g.isZero(0));
    MinedPairs no_neg;
    no_neg.a1 = {0, 2};
    no_neg.p = {2, 0};
    CHECK(loss.evaluate(emb, labels, no_neg, g) == 0.0);
    CHECK(g.isZero(0));
  }
  SUBCASE("a single row") {
    RowMatrixX<double> g1(1, 3);
    CHECK(loss.evaluate(random_matrix<double>(1, 3, 1), LabelVector::Zero(1), g1) == 0.0);
    CHECK(g1.isZero(0));
    CHECK(gen.evaluate(random_matrix<double>(1, 3, 1), LabelVector::Zero(1), g1) == 0.0);
    CHECK(g1.isZero(0));
  }
}

TEST_CASE("LiftedStructureLoss: float agrees with double, and threads do not change a bit") {
  const LabelVector labels = cyclic_labels(200, 10, 9);
  const RowMatrixX<double> emb = random_matrix<double>(200, 16, 21);
  const RowMatrixX<float> ef = emb.cast<float>();
  {
    LiftedStructureLoss<double> ld;
    LiftedStructureLoss<float> lf;
    RowMatrixX<double> gd(200, 16);
    RowMatrixX<float> gf(200, 16);
    const double vd = ld.evaluate(emb, labels, gd);
    const float vf = lf.evaluate(ef, labels, gf);
    CHECK(std::abs(double(vf) - vd) <= 1e-5 * std::abs(vd));
    CHECK(matrix_rel_error(gf, gd) <= 1e-4);
    check_thread_identity<float>([&](RowMatrixX<float>* g) { return lf.evaluate(ef, labels, *g); }, 200, 16);
    check_thread_identity<double>([&](RowMatrixX<double>* g) { return ld.evaluate(emb, labels, *g); }, 200, 16);
  }
  {
    GeneralizedLiftedStructureLoss<double> ld;
    GeneralizedLiftedStructureLoss<float> lf;
    RowMatrixX<double> gd(200, 16);
    RowMatrixX<float> gf(200, 16);
    const double vd = ld.evaluate(emb, labels, gd);
    const float vf = lf.evaluate(ef, labels, gf);
    CHECK(std::abs(double(vf) - vd) <= 1e-5 * std::abs(vd));
    CHECK(matrix_rel_error(gf, gd) <= 1e-4);
    check_thread_identity<float>([&](RowMatrixX<float>* g) { return lf.evaluate(ef, labels, *g); }, 200, 16);
    check_thread_identity<double>([&](RowMatrixX<double>* g) { return ld.evaluate(emb, labels, *g); }, 200, 16);
  }
}

TEST_CASE("LiftedStructureLoss: bad input throws with the numbers") {
  const RowMatrixX<double> emb = random_matrix<double>(6, 3, 1);
  const LabelVector labels = cyclic_labels(6, 2);
  LiftedStructureLoss<double> loss;
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, cyclic_labels(5, 2)), std::invalid_argument,
                              "kshot::LiftedStructureLoss::evaluate()", "labels has 5 entries", "6 rows");
  RowMatrixX<double> bad = emb;
  bad(2, 1) = std::nan("");
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(bad, labels), std::invalid_argument, "embeddings", "row 2");
  RowMatrixX<double> g(5, 3);
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels, g), std::invalid_argument, "grad is 5 x 3", "6 x 3");
  MinedPairs pairs;
  pairs.a1 = {0, 2};
  pairs.p = {2, 4};
  pairs.a2 = {0, 6};
  pairs.n = {1, 1};
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels, pairs), std::out_of_range, "a2[1] = 6", "6 rows");
  loss.pos_margin = std::numeric_limits<double>::quiet_NaN();
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "pos_margin is nan");

  GeneralizedLiftedStructureLoss<double> gen;
  KSHOT_CHECK_THROWS_WITH_ALL(gen.evaluate(emb, cyclic_labels(7, 2)), std::invalid_argument,
                              "kshot::GeneralizedLiftedStructureLoss::evaluate()", "labels has 7 entries");
  gen.neg_margin = -std::numeric_limits<double>::infinity();
  KSHOT_CHECK_THROWS_WITH_ALL(gen.evaluate(emb, labels), std::invalid_argument, "neg_margin is -inf");
  gen.neg_margin = 1;
  gen.distance.p = 0.5;
  KSHOT_CHECK_THROWS_WITH_ALL(gen.evaluate(emb, labels), std::invalid_argument, "distance.p is 0.5");
}

}  // namespace test_lifted
