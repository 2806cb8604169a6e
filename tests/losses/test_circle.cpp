// SPDX-License-Identifier: MIT
#include "losses/loss_checks.hpp"
#include "losses/pml_cases.hpp"

#include <kshot/losses/circle.hpp>

#include <algorithm>
#include <limits>
#include <vector>

// Everything below lives in a namespace of its own: the loss tests are compiled in unity batches (see
// tests/CMakeLists.txt), where the helpers of different files must not collide.
namespace test_circle {

using namespace kshot;
using namespace kshot::test;

namespace {

CircleLoss<double> loss_of(const ReferenceCase& c) {
  CircleLoss<double> loss;
  loss.m = param(c, "m", 0.4);
  loss.gamma = param(c, "gamma", 80.0);
  loss.distance = distance_of(c.json.at("distance"));
  loss.reduction = reduction_of(c.json.at("reducer"));
  return loss;
}

using BoolMatrix = Eigen::Matrix<bool, Eigen::Dynamic, Eigen::Dynamic>;

/// The similarity matrix of a similarity LossDistance, computed directly.
RowMatrixX<double> similarities(const RowMatrixX<double>& x, const LossDistance& d) {
  const RowMatrixX<double> u = d.normalizes() ? RowMatrixX<double>(x.rowwise().normalized()) : x;
  RowMatrixX<double> s = u * u.transpose();
  if (d.power != 1) s = s.array().pow(d.power).matrix();
  return s;
}

/**
 * Circle loss straight from its definition. The relu weights come from `x0` and the logits from `x`: with
 * x0 = x this is the loss, and as a function of x with x0 fixed its derivative at x0 is the gradient the
 * peer returns (weights detached). A pair in both masks takes the negative's logit.
 */
double circle_by_hand(const RowMatrixX<double>& x, const RowMatrixX<double>& x0, const LabelVector& labels,
                      const MinedPairs* pairs, double m, double gamma, const LossDistance& d = LossDistance::cosine(),
                      Reduction r = Reduction::loss_default) {
  const Index n = x.rows();
  BoolMatrix pos = BoolMatrix::Constant(n, n, false), neg = BoolMatrix::Constant(n, n, false);
  if (pairs == nullptr) {
    for (Index i = 0; i < n; ++i)
      for (Index j = 0; j < n; ++j) {
        pos(i, j) = i != j && labels[i] == labels[j];
        neg(i, j) = labels[i] != labels[j];
      }
  } else {
    for (std::size_t k = 0; k < pairs->a1.size(); ++k) pos(pairs->a1[k], pairs->p[k]) = true;
    for (std::size_t k = 0; k < pairs->a2.size(); ++k) neg(pairs->a2[k], pairs->n[k]) = true;
  }
  const RowMatrixX<double> S = similarities(x, d), S0 = similarities(x0, d);
  long double total = 0;
  Index active = 0;
  for (Index i = 0; i < n; ++i) {
    long double sp = 0, sn = 0;
    bool any_p = false, any_n = false;
    for (Index j = 0; j < n; ++j) {
      const long double s = S(i, j), s0 = S0(i, j);
      const long double a_neg = gamma * std::max(s0 + m, 0.0L) * (s - m);
      const long double a_pos = neg(i, j) ? a_neg : -gamma * std::max(1 + m - s0, 0.0L) * (s - (1 - m));
      if (pos(i, j)) {
        sp += std::exp(a_pos);
        any_p = true;
      }
      if (neg(i, j)) {
        sn += std::exp(a_neg);
        any_n = true;
      }
    }
    if (!any_p || !any_n) continue;
    const long double z = std::log(sp) + std::log(sn);
    const long double v = z > 20 ? z : std::log1p(std::exp(z));
    if (v > 0 || r == Reduction::mean || r == Reduction::sum) total += v;
    if (v > 0) ++active;
  }
  if (r == Reduction::sum) return static_cast<double>(total);
  if (r == Reduction::mean) return static_cast<double>(total / n);
  return active > 0 ? static_cast<double>(total / active) : 0.0;
}

double circle_by_hand(const RowMatrixX<double>& x, const LabelVector& labels, const MinedPairs* pairs, double m,
                      double gamma, const LossDistance& d = LossDistance::cosine()) {
  return circle_by_hand(x, x, labels, pairs, m, gamma, d);
}

/// fd_error's function for circle loss: kshot's gradient at x, and the loss with the weights frozen at x
/// for the central differences.
template <class Loss>
double circle_fd_error(Loss& loss, const RowMatrixX<double>& x, const LabelVector& labels,
                       const MinedPairs* pairs = nullptr) {
  auto f = [&](const RowMatrixX<double>& probe, RowMatrixX<double>* g) {
    if (g != nullptr)
      return pairs != nullptr ? loss.evaluate(probe, labels, *pairs, *g) : loss.evaluate(probe, labels, *g);
    return circle_by_hand(probe, x, labels, pairs, loss.m, loss.gamma, loss.distance, loss.reduction);
  };
  return fd_error(f, x);
}

}  // namespace

TEST_CASE("CircleLoss: pytorch-metric-learning reference cases") {
  const auto cases = pml_cases("CircleLoss");
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

TEST_CASE("CircleLoss: value from the definition with labels and with mined pairs") {
  const LabelVector labels = cyclic_labels(11, 3, 4);
  const RowMatrixX<double> emb = random_matrix<double>(11, 6, 8);
  MinedPairs all;
  detail::pairs_from(Mined{}, labels, all);
  // Duplicates collapse; (2, 5) is both positive and negative; (4, 4) pairs a row with itself; row 3 has a
  // positive but no negative (it gives 0).
  MinedPairs mined;
  mined.a1 = {0, 0, 1, 2, 3, 4, 2};
  mined.p = {3, 3, 7, 5, 6, 4, 8};
  mined.a2 = {0, 1, 1, 2, 4, 0};
  mined.n = {1, 2, 2, 5, 9, 1};
  struct Setting {
    double m, gamma;
  };
  for (const Setting p : {Setting{0.4, 80}, Setting{0.25, 256}, Setting{0.1, 4}, Setting{-0.2, 10}}) {
    INFO("m " << p.m << " gamma " << p.gamma);
    CircleLoss<double> loss;
    loss.m = p.m;
    loss.gamma = p.gamma;
    RowMatrixX<double> g1(11, 6), g2(11, 6);
    const double v1 = loss.evaluate(emb, labels, g1);
    CHECK(v1 == doctest::Approx(circle_by_hand(emb, labels, nullptr, p.m, p.gamma)).epsilon(1e-12));
    CHECK(loss.stats().terms == 11);
    const double v2 = loss.evaluate(emb, labels, all, g2);
    CHECK(v2 == doctest::Approx(v1).epsilon(1e-13));
    CHECK(matrix_rel_error(g2, g1) <= 1e-12);
    const double v3 = loss.evaluate(emb, labels, mined);
    CHECK(v3 == doctest::Approx(circle_by_hand(emb, labels, &mined, p.m, p.gamma)).epsilon(1e-12));
    CHECK(loss.stats().skipped_anchors == 11 - 4);  // rows 0, 1, 2 and 4 have both kinds
    CHECK(circle_fd_error(loss, emb, labels, &mined) < 1e-6);
    loss.distance = LossDistance::dot_product(false);
    const RowMatrixX<double> small = emb * 0.3;
    CHECK(loss.evaluate(small, labels) ==
          doctest::Approx(circle_by_hand(small, labels, nullptr, p.m, p.gamma, loss.distance)).epsilon(1e-12));
  }
}

TEST_CASE("CircleLoss: gradient matches central differences") {
  const LabelVector labels = cyclic_labels(12, 3, 7);
  const RowMatrixX<double> emb = random_matrix<double>(12, 5, 11);
  struct Setting {
    LossDistance distance;
    double m, gamma;
    Reduction reduction;
  };
  const std::vector<Setting> settings = {
      {LossDistance::cosine(), 0.4, 80, Reduction::loss_default},
      {LossDistance::cosine(), 0.25, 256, Reduction::mean},
      {LossDistance::cosine(), 0.1, 4, Reduction::sum},
      {LossDistance::cosine(2), 0.3, 20, Reduction::mean},
      {LossDistance::cosine(3), 0.3, 20, Reduction::mean_nonzero},
      {LossDistance::dot_product(true), 0.4, 30, Reduction::loss_default},
      {LossDistance::dot_product(false), 0.4, 2, Reduction::mean},
  };
  for (const auto& s : settings) {
    INFO("distance " << s.distance.describe() << " m " << s.m << " gamma " << s.gamma);
    CircleLoss<double> loss;
    loss.distance = s.distance;
    loss.m = s.m;
    loss.gamma = s.gamma;
    loss.reduction = s.reduction;
    const RowMatrixX<double> x = s.distance.normalizes() ? emb : RowMatrixX<double>(emb * 0.4);
    CHECK(circle_fd_error(loss, x, labels) < 1e-6);
    const RowMatrixX<double> tight = collapse_classes(x, labels, 1e-2, 3);
    CHECK(circle_fd_error(loss, tight, labels) < 1e-6);
    RowMatrixX<double> one_point = random_matrix<double>(12, 5, 5) * 1e-2;
    one_point.rowwise() += x.row(0);
    CHECK(circle_fd_error(loss, one_point, labels) < 1e-6);
  }
}

TEST_CASE("CircleLoss: the relu weights carry no gradient") {
  // Differences of the loss itself see the weights move; the gradient (the peer's) holds them fixed, so it
  // matches differences of the loss with frozen weights and not those of the loss.
  const LabelVector labels = cyclic_labels(6, 2);
  const RowMatrixX<double> emb = random_matrix<double>(6, 3, 3);
  CircleLoss<double> loss;
  loss.gamma = 4;
  auto f = [&](const RowMatrixX<double>& x, RowMatrixX<double>* gr) {
    return gr != nullptr ? loss.evaluate(x, labels, *gr) : loss.evaluate(x, labels);
  };
  CHECK(fd_error(f, emb) > 1e-3);
  CHECK(circle_fd_error(loss, emb, labels) < 1e-6);
}

TEST_CASE("CircleLoss: mined pairs and triplets") {
  const LabelVector labels = cyclic_labels(10, 3, 5);
  const RowMatrixX<double> emb = random_matrix<double>(10, 4, 2);
  CircleLoss<double> loss;
  loss.gamma = 16;
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
  CHECK(vt == doctest::Approx(circle_by_hand(emb, labels, &as_pairs, 0.4, 16)).epsilon(1e-12));
  loss.reduction = Reduction::mean;
  CHECK(loss.evaluate(emb, labels, triplets) == doctest::Approx(vt * 2 / 10).epsilon(1e-12));
  loss.reduction = Reduction::sum;
  CHECK(loss.evaluate(emb, labels, triplets) == doctest::Approx(vt * 2).epsilon(1e-12));
  for (const Reduction r : {Reduction::loss_default, Reduction::mean, Reduction::sum}) {
    loss.reduction = r;
    CHECK(circle_fd_error(loss, emb, labels, &as_pairs) < 1e-6);
  }
  loss.reduction = Reduction::loss_default;
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
  CHECK(loss.stats().skipped_anchors == 10);
}

TEST_CASE("CircleLoss: degenerate batches stay finite") {
  const LabelVector labels = cyclic_labels(8, 2);
  CircleLoss<double> loss;
  RowMatrixX<double> g(8, 3);
  SUBCASE("all rows zero") {
    const RowMatrixX<double> zero = RowMatrixX<double>::Zero(8, 3);
    const double v = loss.evaluate(zero, labels, g);
    CHECK(g.allFinite());
    CHECK(loss.stats().degenerate == 8);
    // s = 0 everywhere: a_p = -80 * 1.4 * (-0.6) = 67.2, a_n = 80 * 0.4 * (-0.4) = -12.8.
    CHECK(v == doctest::Approx(67.2 + std::log(3.0) - 12.8 + std::log(4.0)));
  }
  SUBCASE("identical rows") {
    RowMatrixX<double> same(8, 3);
    same.rowwise() = RowVectorX<double>::LinSpaced(3, 1.0, 3.0);
    // s = 1: a_p = -80 * 0.4 * 0.4 = -12.8, a_n = 80 * 1.4 * 0.6 = 67.2.
    CHECK(loss.evaluate(same, labels, g) == doctest::Approx(-12.8 + std::log(3.0) + 67.2 + std::log(4.0)));
    CHECK(g.allFinite());
  }
  SUBCASE("one class only or every label different or a single row: zero") {
    CHECK(loss.evaluate(random_matrix<double>(8, 3, 4), LabelVector::Zero(8), g) == 0.0);
    CHECK(g.isZero(0));
    CHECK(loss.evaluate(random_matrix<double>(8, 3, 4), cyclic_labels(8, 8), g) == 0.0);
    CHECK(g.isZero(0));
    RowMatrixX<double> g1(1, 3);
    CHECK(loss.evaluate(random_matrix<double>(1, 3, 1), LabelVector::Zero(1), g1) == 0.0);
    CHECK(g1.isZero(0));
  }
  SUBCASE("a class of one: its row is skipped") {
    LabelVector y = labels;
    y[7] = 5;
    CHECK(std::isfinite(loss.evaluate(random_matrix<double>(8, 3, 4), y, g)));
    CHECK(loss.stats().skipped_anchors == 1);
  }
  SUBCASE("huge and tiny scales") {
    const RowMatrixX<double> emb = random_matrix<double>(8, 3, 6);
    for (const double gamma : {1e-6, 1.0, 1e4, 1e6}) {
      for (const LossDistance d : {LossDistance::cosine(), LossDistance::dot_product(false)}) {
        INFO("gamma " << gamma << " " << d.describe());
        loss.gamma = gamma;
        loss.distance = d;
        const double v = loss.evaluate(emb, labels, g);
        CHECK(std::isfinite(v));
        CHECK(g.allFinite());
        CircleLoss<float> lf;
        lf.gamma = static_cast<float>(gamma);
        lf.distance = d;
        RowMatrixX<float> gf(8, 3);
        CHECK(std::isfinite(lf.evaluate(emb.cast<float>(), labels, gf)));
        CHECK(gf.allFinite());
      }
    }
  }
}

TEST_CASE("CircleLoss: the order of the rows does not matter") {
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
  for (const LossDistance d : {LossDistance::cosine(), LossDistance::dot_product(true)}) {
    INFO(d.describe());
    CircleLoss<double> loss;
    loss.distance = d;
    loss.reserve(13, 5);
    RowMatrixX<double> g1(13, 5), g2(13, 5);
    const double v1 = loss.evaluate(emb, labels, g1);
    const double v2 = loss.evaluate(sorted_emb, sorted_labels, g2);
    CHECK(v2 == doctest::Approx(v1).epsilon(1e-14));
    for (Index r = 0; r < 13; ++r) CHECK(max_rel_error(g2.row(r), g1.row(order[static_cast<std::size_t>(r)])) <= 1e-13);
  }
}

TEST_CASE("CircleLoss: float agrees with double and threads do not change a bit") {
  // n = 200: the row loop runs in parallel at 2 threads (its work estimate passes config::omp_min_work).
  const LabelVector labels = cyclic_labels(200, 10, 9);
  const RowMatrixX<double> emb = random_matrix<double>(200, 16, 21);
  CircleLoss<double> ld;
  CircleLoss<float> lf;
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

TEST_CASE("CircleLoss: bad input throws with the numbers") {
  CircleLoss<double> loss;
  const RowMatrixX<double> emb = random_matrix<double>(6, 3, 1);
  const LabelVector labels = cyclic_labels(6, 2);
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, cyclic_labels(5, 2)), std::invalid_argument,
                              "kshot::CircleLoss::evaluate()", "labels has 5 entries", "6 rows");
  RowMatrixX<double> bad = emb;
  bad(1, 1) = std::nan("");
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(bad, labels), std::invalid_argument, "embeddings", "row 1");
  RowMatrixX<double> g(5, 3);
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels, g), std::invalid_argument, "grad is 5 x 3", "6 x 3");
  MinedTriplets triplets;
  triplets.a = {0, 7};
  triplets.p = {2, 3};
  triplets.n = {1, 1};
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels, triplets), std::out_of_range, "a[1] = 7", "6 rows");
  loss.distance = LossDistance::lp();
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "kshot::CircleLoss::evaluate()",
                              "distance is LpDistance(p=2, power=1", "needs a similarity");
  loss.distance = LossDistance::cosine();
  loss.gamma = 0;
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "gamma is 0");
  loss.gamma = 80;
  loss.m = std::numeric_limits<double>::quiet_NaN();
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "m is nan");
}

}  // namespace test_circle
