// SPDX-License-Identifier: MIT
#include "losses/loss_checks.hpp"
#include "losses/pml_cases.hpp"

#include <kshot/losses/proxy_anchor.hpp>

#include <cmath>
#include <limits>

// Everything below lives in a namespace of its own: the loss tests are compiled in unity batches (see
// tests/CMakeLists.txt), where the helpers of different files must not collide.
namespace test_proxy_anchor {

using namespace kshot;
using namespace kshot::test;

namespace {

ProxyAnchorLoss<double> loss_of(const ReferenceCase& c) {
  const RowMatrixX<double> proxies = c.input("proxies");
  ProxyAnchorLoss<double> loss(static_cast<Index>(param(c, "num_classes", double(proxies.rows()))),
                               static_cast<Index>(param(c, "embedding_size", double(proxies.cols()))));
  loss.margin = param(c, "margin", 0.1);
  loss.alpha = param(c, "alpha", 32.0);
  loss.distance = distance_of(c.json.at("distance"));
  loss.reduction = reduction_of(c.json.at("reducer"));
  REQUIRE(loss.proxies.rows() == proxies.rows());
  REQUIRE(loss.proxies.cols() == proxies.cols());
  loss.proxies = proxies;
  return loss;
}

/// log(1 + sum exp(v)) written out (v may be empty: 0).
double log1p_sum_exp(const std::vector<double>& v) {
  if (v.empty()) return 0.0;
  double s = 1.0;
  for (double x : v) s += std::exp(x);
  return std::log(s);
}

/// The cosine loss written out with the DivisorReducer, miner weights w.
double naive_value(const RowMatrixX<double>& emb, const LabelVector& labels, const RowMatrixX<double>& proxies,
                   double margin, double alpha, const std::vector<double>& w) {
  const RowMatrixX<double> x = emb.rowwise().normalized();
  const RowMatrixX<double> p = proxies.rowwise().normalized();
  double pos = 0, neg = 0;
  Index with_pos = 0;
  for (Index c = 0; c < p.rows(); ++c) {
    std::vector<double> vp, vn;
    for (Index i = 0; i < x.rows(); ++i) {
      const double s = x.row(i).dot(p.row(c));
      if (labels[i] == c)
        vp.push_back(-alpha * (s - margin) + w[std::size_t(i)] - 1);
      else
        vn.push_back(alpha * (s + margin) + w[std::size_t(i)] - 1);
    }
    if (!vp.empty()) ++with_pos;
    pos += log1p_sum_exp(vp);
    neg += log1p_sum_exp(vn);
  }
  return (with_pos > 0 ? pos / double(with_pos) : 0.0) + neg / double(p.rows());
}

}  // namespace

TEST_CASE("ProxyAnchorLoss: pytorch-metric-learning reference cases") {
  const auto cases = pml_cases("ProxyAnchorLoss");
  REQUIRE(!cases.empty());
  for (const auto& c : cases) {
    INFO("case " << c.json.at("case").get<std::string>());
    auto loss = loss_of(c);
    const RowMatrixX<double> emb = c.input("embeddings");
    const LabelVector labels = c.labels("labels");
    const CaseTuple tuple = tuple_of(c);
    RowMatrixX<double> grad(emb.rows(), emb.cols());
    RowMatrixX<double> grad_proxies(loss.proxies.rows(), loss.proxies.cols());
    const double value = loss.evaluate(emb, labels, tuple.view(), grad, grad_proxies);
    CHECK(scalar_rel_error(value, c.loss()) <= reference_tolerance);
    CHECK(matrix_rel_error(grad, c.grad("embeddings")) <= reference_tolerance);
    CHECK(matrix_rel_error(grad_proxies, c.grad("proxies")) <= reference_tolerance);
    CHECK(loss.evaluate(emb, labels, tuple.view()) == value);
    RowMatrixX<double> grad_only(emb.rows(), emb.cols());
    CHECK(loss.evaluate(emb, labels, tuple.view(), grad_only) == value);
    CHECK(grad_only == grad);
    CHECK(loss.stats().terms == 2 * loss.proxies.rows());
  }
}

TEST_CASE("ProxyAnchorLoss: value matches the formula written out") {
  const LabelVector labels = cyclic_labels(11, 3, 4);  // class 3 of 4 never appears
  const RowMatrixX<double> emb = random_matrix<double>(11, 5, 8);
  ProxyAnchorLoss<double> loss(4, 5, 3);
  const std::vector<double> ones(11, 1.0);
  CHECK(loss.evaluate(emb, labels) ==
        doctest::Approx(naive_value(emb, labels, loss.proxies, 0.1, 32, ones)).epsilon(1e-13));
  CHECK(loss.stats().skipped_anchors == 1);
  loss.margin = -0.2;
  loss.alpha = 7.5;
  CHECK(loss.evaluate(emb, labels) ==
        doctest::Approx(naive_value(emb, labels, loss.proxies, -0.2, 7.5, ones)).epsilon(1e-13));
  // Mined pairs: weights from every index of the tuple, entering the exponent as w - 1.
  MinedPairs pairs;
  pairs.a1 = {0, 0};
  pairs.p = {3, 6};
  pairs.a2 = {0, 2};
  pairs.n = {1, 1};
  // counts: 0 -> 3, 1 -> 2, 2 -> 1, 3 -> 1, 6 -> 1 (max 3)
  std::vector<double> w(11, 0.0);
  w[0] = 1.0;
  w[1] = 2.0 / 3.0;
  w[2] = w[3] = w[6] = 1.0 / 3.0;
  CHECK(loss.evaluate(emb, labels, pairs) ==
        doctest::Approx(naive_value(emb, labels, loss.proxies, -0.2, 7.5, w)).epsilon(1e-13));
  // Other reducers: each part over the num_classes proxies.
  loss.reduction = Reduction::sum;
  const double sum_value = loss.evaluate(emb, labels);
  loss.reduction = Reduction::mean;
  CHECK(loss.evaluate(emb, labels) == doctest::Approx(sum_value / 4).epsilon(1e-13));
  // mean_nonzero: the absent class's pos part is 0, so pos is averaged over 3 and neg over 4, as the divisors do.
  loss.reduction = Reduction::loss_default;
  const double divisor_value = loss.evaluate(emb, labels);
  loss.reduction = Reduction::mean_nonzero;
  CHECK(loss.evaluate(emb, labels) == doctest::Approx(divisor_value).epsilon(1e-13));
}

TEST_CASE("ProxyAnchorLoss: gradients match central differences") {
  const LabelVector labels = cyclic_labels(10, 3, 5);  // 4 proxies, one without a positive
  const RowMatrixX<double> emb = random_matrix<double>(10, 6, 3);
  struct Setting {
    LossDistance distance;
    double margin, alpha;
    Reduction reduction;
  };
  const std::vector<Setting> settings = {
      {LossDistance::cosine(), 0.1, 32.0, Reduction::loss_default},
      {LossDistance::cosine(), 0.3, 4.0, Reduction::mean},
      {LossDistance::cosine(2), 0.2, 6.0, Reduction::sum},
      {LossDistance::lp(), 0.5, 3.0, Reduction::loss_default},
      {LossDistance::squared_lp(false), 1.0, 0.5, Reduction::mean_nonzero},
      {LossDistance::dot_product(false), 0.1, 1.5, Reduction::loss_default},
  };
  MinedTriplets t;
  t.a = {0, 1, 1, 7};
  t.p = {4, 5, 9, 3};
  t.n = {2, 2, 0, 6};
  for (const auto& s : settings) {
    INFO("distance " << s.distance.describe() << " margin " << s.margin << " alpha " << s.alpha);
    ProxyAnchorLoss<double> loss(4, 6, 9);
    loss.distance = s.distance;
    loss.margin = s.margin;
    loss.alpha = s.alpha;
    loss.reduction = s.reduction;
    for (int mined = 0; mined < 2; ++mined) {
      const Mined m = mined != 0 ? Mined(t) : Mined();
      auto f = [&](const RowMatrixX<double>& x, RowMatrixX<double>* g) {
        return g != nullptr ? loss.evaluate(x, labels, m, *g) : loss.evaluate(x, labels, m);
      };
      CHECK(fd_error(f, emb) < 1e-6);
      CHECK(fd_error(f, collapse_classes(emb, labels, 1e-2, 3)) < 1e-6);
      const RowMatrixX<double> proxies0 = loss.proxies;
      RowMatrixX<double> ge(10, 6);
      auto fp = [&](const RowMatrixX<double>& p, RowMatrixX<double>* g) {
        loss.proxies = p;
        return g != nullptr ? loss.evaluate(emb, labels, m, ge, *g) : loss.evaluate(emb, labels, m);
      };
      CHECK(fd_error(fp, proxies0) < 1e-6);
      // Near-degenerate: each embedding almost on its proxy, so exponents reach alpha (1 + margin).
      RowMatrixX<double> near(10, 6);
      RandomStream rng(4);
      for (Index i = 0; i < 10; ++i)
        for (Index k = 0; k < 6; ++k) near(i, k) = proxies0(labels[i], k) * 0.6 + 1e-3 * rng.normal<double>();
      loss.proxies = proxies0;
      CHECK(fd_error(f, near) < 1e-6);
      loss.proxies = proxies0;
    }
  }
}

TEST_CASE("ProxyAnchorLoss: initialisation and degenerate batches stay finite") {
  SUBCASE("kaiming normal with fan_out = num_classes") {
    ProxyAnchorLoss<double> a(200, 30, 1), b(200, 30, 1);
    CHECK(a.proxies == b.proxies);
    const double mean = a.proxies.mean();
    const double var = (a.proxies.array() - mean).square().mean();
    CHECK(std::abs(mean) < 0.01);
    CHECK(std::abs(var / (2.0 / 200) - 1.0) < 0.08);
    ProxyAnchorLoss<double> c(2, 3000, 1);
    CHECK(std::abs((c.proxies.array().square().mean()) - 1.0) < 0.05);
  }
  ProxyAnchorLoss<double> loss(3, 4, 2);
  RowMatrixX<double> g(6, 4), gp(3, 4);
  const LabelVector labels = cyclic_labels(6, 3);
  SUBCASE("zero rows and a zero proxy") {
    loss.proxies.row(2).setZero();
    const double v = loss.evaluate(RowMatrixX<double>::Zero(6, 4), labels, g, gp);
    CHECK(std::isfinite(v));
    CHECK(g.allFinite());
    CHECK(gp.allFinite());
    CHECK(loss.stats().degenerate == 7);
    // Every cosine is 0: pos_c = log(1 + 2 e^{3.2}), neg_c = log(1 + 4 e^{3.2}).
    CHECK(v == doctest::Approx(std::log(1 + 2 * std::exp(3.2)) + std::log(1 + 4 * std::exp(3.2))).epsilon(1e-12));
  }
  SUBCASE("one class only without negatives and a single row") {
    const RowMatrixX<double> emb = random_matrix<double>(6, 4, 4);
    const double v = loss.evaluate(emb, LabelVector::Constant(6, 1), g, gp);
    CHECK(std::isfinite(v));
    CHECK(g.allFinite());
    CHECK(loss.stats().skipped_anchors == 2);
    RowMatrixX<double> g1(1, 4);
    const double single = loss.evaluate(emb.topRows(1), LabelVector::Constant(1, 0), g1, gp);
    CHECK(std::isfinite(single));
    CHECK(g1.allFinite());
    CHECK(g1.norm() > 0);
  }
  SUBCASE("identical rows on a proxy with a huge alpha") {
    RowMatrixX<double> same(6, 4);
    same.rowwise() = loss.proxies.row(0);
    loss.alpha = 1e4;
    const double v = loss.evaluate(same, labels, g, gp);
    CHECK(std::isfinite(v));
    CHECK(v > 1e3);
    CHECK(g.allFinite());
    CHECK(gp.allFinite());
  }
}

TEST_CASE("ProxyAnchorLoss: float agrees with double and threads do not change a bit") {
  const Index n = 400, d = 340, C = 40;
  const LabelVector labels = cyclic_labels(n, C, 9);
  const RowMatrixX<double> emb = random_matrix<double>(n, d, 21);
  ProxyAnchorLoss<double> ld(C, d, 5);
  ProxyAnchorLoss<float> lf(C, d, 5);
  lf.proxies = ld.proxies.cast<float>();
  RowMatrixX<double> gd(n, d), gpd(C, d);
  RowMatrixX<float> gf(n, d), gpf(C, d);
  const double vd = ld.evaluate(emb, labels, gd, gpd);
  const float vf = lf.evaluate(emb.cast<float>(), labels, gf, gpf);
  CHECK(std::abs(double(vf) - vd) <= 1e-5 * std::abs(vd));
  CHECK(matrix_rel_error(gf, gd) <= 1e-4);
  CHECK(matrix_rel_error(gpf, gpd) <= 1e-4);
  // n and d above Eigen's multi-threaded inner block (320) on purpose: the products must not change bits.
  const RowMatrixX<float> ef = emb.cast<float>();
  RowMatrixX<float> pf1(C, d), pf2(C, d);
  int call = 0;
  check_thread_identity<float>(
      [&](RowMatrixX<float>* g) { return lf.evaluate(ef, labels, *g, call++ == 0 ? pf1 : pf2); }, n, d);
  CHECK(pf1 == pf2);
  RowMatrixX<double> pd1(C, d), pd2(C, d);
  call = 0;
  check_thread_identity<double>(
      [&](RowMatrixX<double>* g) { return ld.evaluate(emb, labels, *g, call++ == 0 ? pd1 : pd2); }, n, d);
  CHECK(pd1 == pd2);
}

TEST_CASE("ProxyAnchorLoss: bad input throws with the numbers") {
  ProxyAnchorLoss<double> loss(3, 4);
  const RowMatrixX<double> emb = random_matrix<double>(6, 4, 1);
  const LabelVector labels = cyclic_labels(6, 3);
  KSHOT_CHECK_THROWS_WITH_ALL(ProxyAnchorLoss<double>(-2, 4), std::invalid_argument,
                              "kshot::ProxyAnchorLoss::ProxyAnchorLoss()", "num_classes is -2");
  KSHOT_CHECK_THROWS_WITH_ALL(ProxyAnchorLoss<double>(3, 0), std::invalid_argument, "embedding_size is 0");
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, cyclic_labels(7, 3)), std::invalid_argument,
                              "kshot::ProxyAnchorLoss::evaluate()", "labels has 7 entries", "6 rows");
  LabelVector bad_labels = labels;
  bad_labels[5] = 9;
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, bad_labels), std::out_of_range, "labels[5] = 9", "[0, 3)");
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(random_matrix<double>(6, 2, 1), labels), std::invalid_argument,
                              "embeddings has 2 columns", "proxies is 3 x 4");
  RowMatrixX<double> bad = emb;
  bad(4, 0) = -std::numeric_limits<double>::infinity();
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(bad, labels), std::invalid_argument, "embeddings", "row 4");
  RowMatrixX<double> g(6, 4), gp_bad(3, 5);
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels, g, gp_bad), std::invalid_argument, "grad_proxies is 3 x 5",
                              "3 x 4");
  RowMatrixX<double> g_bad(6, 5);
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels, g_bad), std::invalid_argument, "grad is 6 x 5", "6 x 4");
  MinedPairs pairs;
  pairs.a1 = {0};
  pairs.p = {3};
  pairs.a2 = {1};
  pairs.n = {6};
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels, pairs), std::out_of_range, "n[0] = 6", "6 rows");
  loss.alpha = std::nan("");
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "alpha is nan");
  loss.alpha = 32;
  loss.margin = std::numeric_limits<double>::infinity();
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "margin is inf");
  loss.margin = 0.1;
  loss.proxies(0, 0) = std::nan("");
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "proxies", "row 0", "column 0");
}

}  // namespace test_proxy_anchor
