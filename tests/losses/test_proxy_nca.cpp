// SPDX-License-Identifier: MIT
#include "losses/loss_checks.hpp"
#include "losses/pml_cases.hpp"

#include <kshot/losses/proxy_nca.hpp>

#include <cmath>
#include <limits>

// Everything below lives in a namespace of its own: the loss tests are compiled in unity batches (see
// tests/CMakeLists.txt), where the helpers of different files must not collide.
namespace test_proxy_nca {

using namespace kshot;
using namespace kshot::test;

namespace {

ProxyNCALoss<double> loss_of(const ReferenceCase& c) {
  const RowMatrixX<double> proxies = c.input("proxies");
  ProxyNCALoss<double> loss(static_cast<Index>(param(c, "num_classes", double(proxies.rows()))),
                            static_cast<Index>(param(c, "embedding_size", double(proxies.cols()))));
  loss.softmax_scale = param(c, "softmax_scale", 1.0);
  loss.distance = distance_of(c.json.at("distance"));
  loss.reduction = reduction_of(c.json.at("reducer"));
  REQUIRE(loss.proxies.rows() == proxies.rows());
  REQUIRE(loss.proxies.cols() == proxies.cols());
  loss.proxies = proxies;
  return loss;
}

/// The loss written out directly: -w_i log softmax(logits_i)[y_i], mean over the rows.
double naive_value(const RowMatrixX<double>& emb, const LabelVector& labels, const RowMatrixX<double>& proxies,
                   double scale, bool cosine, const std::vector<double>& w) {
  const RowMatrixX<double> x = emb.rowwise().normalized();
  const RowMatrixX<double> p = proxies.rowwise().normalized();
  double total = 0;
  for (Index i = 0; i < emb.rows(); ++i) {
    std::vector<double> z(static_cast<std::size_t>(p.rows()));
    double top = -std::numeric_limits<double>::infinity();
    for (Index c = 0; c < p.rows(); ++c) {
      const double v = cosine ? x.row(i).dot(p.row(c)) : -(x.row(i) - p.row(c)).squaredNorm();
      z[static_cast<std::size_t>(c)] = scale * v;
      top = std::max(top, scale * v);
    }
    double sum = 0;
    for (double v : z) sum += std::exp(v - top);
    total += w[static_cast<std::size_t>(i)] * (top + std::log(sum) - z[static_cast<std::size_t>(labels[i])]);
  }
  return total / double(emb.rows());
}

}  // namespace

TEST_CASE("ProxyNCALoss: pytorch-metric-learning reference cases") {
  const auto cases = pml_cases("ProxyNCALoss");
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
    CHECK(loss.stats().terms == emb.rows());
    // The per-row losses the peer recorded (every row kept: none underflowed).
    if (c.json.at("outputs").contains("sub_losses")) {
      const RowMatrixX<double> rows =
          ReferenceCase::to_matrix(c.json.at("outputs").at("sub_losses").at("loss").at("losses"));
      if (rows.size() == emb.rows() && loss.reduction == Reduction::mean && tuple.arity == 0)
        CHECK(scalar_rel_error(value, rows.mean()) <= reference_tolerance);
    }
  }
}

TEST_CASE("ProxyNCALoss: value matches the formula written out") {
  const LabelVector labels = cyclic_labels(9, 4, 3);
  const RowMatrixX<double> emb = random_matrix<double>(9, 5, 7);
  ProxyNCALoss<double> loss(4, 5, 17);
  const std::vector<double> ones(9, 1.0);
  CHECK(loss.evaluate(emb, labels) ==
        doctest::Approx(naive_value(emb, labels, loss.proxies, 1.0, false, ones)).epsilon(1e-13));
  loss.softmax_scale = 3.5;
  CHECK(loss.evaluate(emb, labels) ==
        doctest::Approx(naive_value(emb, labels, loss.proxies, 3.5, false, ones)).epsilon(1e-13));
  loss.distance = LossDistance::cosine();
  CHECK(loss.evaluate(emb, labels) ==
        doctest::Approx(naive_value(emb, labels, loss.proxies, 3.5, true, ones)).epsilon(1e-13));
  // Mined triplets weight rows by how often they are an ANCHOR (the proxies are the reference set).
  MinedTriplets t;
  t.a = {0, 0, 2, 5};
  t.p = {4, 8, 6, 1};
  t.n = {1, 3, 3, 7};
  const std::vector<double> w = {1.0, 0.0, 0.5, 0.0, 0.0, 0.5, 0.0, 0.0, 0.0};
  CHECK(loss.evaluate(emb, labels, t) ==
        doctest::Approx(naive_value(emb, labels, loss.proxies, 3.5, true, w)).epsilon(1e-13));
  // Pairs: anchors are a1 and a2.
  MinedPairs pairs;
  pairs.a1 = {3, 3};
  pairs.p = {0, 1};
  pairs.a2 = {8};
  pairs.n = {3};
  const std::vector<double> wp = {0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.5};
  CHECK(loss.evaluate(emb, labels, pairs) ==
        doctest::Approx(naive_value(emb, labels, loss.proxies, 3.5, true, wp)).epsilon(1e-13));
  // An empty tuple means no mining: all weights one.
  MinedTriplets empty;
  CHECK(loss.evaluate(emb, labels, empty) == loss.evaluate(emb, labels));
  // Sum and mean-of-nonzero reductions.
  loss.reduction = Reduction::sum;
  CHECK(loss.evaluate(emb, labels) ==
        doctest::Approx(9 * naive_value(emb, labels, loss.proxies, 3.5, true, ones)).epsilon(1e-13));
  loss.reduction = Reduction::mean_nonzero;
  CHECK(loss.evaluate(emb, labels, t) ==
        doctest::Approx(9.0 / 3.0 * naive_value(emb, labels, loss.proxies, 3.5, true, w)).epsilon(1e-13));
}

TEST_CASE("ProxyNCALoss: gradients match central differences") {
  const LabelVector labels = cyclic_labels(10, 4, 5);
  const RowMatrixX<double> emb = random_matrix<double>(10, 6, 3);
  struct Setting {
    LossDistance distance;
    double scale;
    Reduction reduction;
  };
  const std::vector<Setting> settings = {
      {LossDistance::squared_lp(), 1.0, Reduction::loss_default},
      {LossDistance::squared_lp(), 8.0, Reduction::sum},
      {LossDistance::lp(), 2.5, Reduction::mean},
      {LossDistance::squared_lp(false), 0.3, Reduction::mean},
      {LossDistance::lp(1, true, 1), 2.0, Reduction::mean},
      {LossDistance::cosine(), 5.0, Reduction::mean_nonzero},
      {LossDistance::dot_product(false), 0.7, Reduction::mean},
  };
  MinedTriplets t;
  t.a = {0, 1, 1, 7};
  t.p = {4, 5, 9, 3};
  t.n = {2, 2, 0, 6};
  for (const auto& s : settings) {
    INFO("distance " << s.distance.describe() << " scale " << s.scale);
    ProxyNCALoss<double> loss(4, 6, 9);
    loss.distance = s.distance;
    loss.softmax_scale = s.scale;
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
      // Near-degenerate: each embedding almost on its class proxy.
      RowMatrixX<double> near(10, 6);
      RandomStream rng(4);
      for (Index i = 0; i < 10; ++i)
        for (Index k = 0; k < 6; ++k) near(i, k) = proxies0(labels[i], k) * 1.7 + 1e-3 * rng.normal<double>();
      loss.proxies = proxies0;
      CHECK(fd_error(f, near) < 1e-6);
      CHECK(fd_error(fp, proxies0) < 1e-6);
      loss.proxies = proxies0;
    }
  }
}

TEST_CASE("ProxyNCALoss: initialisation and degenerate batches and underflow stay finite") {
  SUBCASE("standard normal proxies from the seed") {
    ProxyNCALoss<double> a(50, 40, 1), b(50, 40, 1), c(50, 40, 2);
    CHECK(a.proxies == b.proxies);
    CHECK(a.proxies != c.proxies);
    CHECK(a.num_classes() == 50);
    CHECK(a.embedding_size() == 40);
    const double mean = a.proxies.mean();
    const double var = (a.proxies.array() - mean).square().mean();
    CHECK(std::abs(mean) < 0.05);
    CHECK(std::abs(var - 1.0) < 0.08);
  }
  ProxyNCALoss<double> loss(3, 4, 2);
  RowMatrixX<double> g(6, 4), gp(3, 4);
  const LabelVector labels = cyclic_labels(6, 3);
  SUBCASE("zero rows and a zero proxy") {
    loss.proxies.row(1).setZero();
    const double v = loss.evaluate(RowMatrixX<double>::Zero(6, 4), labels, g, gp);
    CHECK(std::isfinite(v));
    CHECK(g.allFinite());
    CHECK(gp.allFinite());
    CHECK(loss.stats().degenerate == 7);
    // Every distance is |0 - p̂|^2 = 1 except to the zero proxy (0): a fixed value.
    const double lse = std::log(2 * std::exp(-1.0) + 1.0);
    CHECK(v == doctest::Approx((4 * (lse + 1.0) + 2 * lse) / 6.0).epsilon(1e-12));
  }
  SUBCASE("identical rows and one class and a single row") {
    RowMatrixX<double> same(6, 4);
    same.rowwise() = RowVectorX<double>::LinSpaced(4, 1.0, 4.0);
    CHECK(std::isfinite(loss.evaluate(same, labels, g, gp)));
    CHECK(g.allFinite());
    const double v1 = loss.evaluate(same, LabelVector::Zero(6), g, gp);
    CHECK(std::isfinite(v1));
    CHECK(gp.row(1).norm() > 0);  // the other proxies are pushed away even without their class in the batch
    RowMatrixX<double> g1(1, 4);
    const double single = loss.evaluate(same.topRows(1), LabelVector::Constant(1, 2), g1, gp);
    CHECK(single > 0);
    CHECK(g1.allFinite());
  }
  SUBCASE("a target probability that underflows stays finite and is counted") {
    // The peer drops such a row (log of 0); kshot keeps its log-softmax value.
    RowMatrixX<double> emb = loss.proxies.topRows(2);
    LabelVector y(2);
    y << 1, 0;  // each row sits on the OTHER class's proxy
    loss.softmax_scale = 2000;
    RowMatrixX<double> g2(2, 4);
    const double v = loss.evaluate(emb, y, g2, gp);
    CHECK(std::isfinite(v));
    CHECK(v > 100);
    CHECK(g2.allFinite());
    CHECK(gp.allFinite());
    CHECK(loss.stats().degenerate == 2);
  }
}

TEST_CASE("ProxyNCALoss: float agrees with double and threads do not change a bit") {
  const Index n = 400, d = 340, C = 40;
  const LabelVector labels = cyclic_labels(n, C, 9);
  const RowMatrixX<double> emb = random_matrix<double>(n, d, 21);
  ProxyNCALoss<double> ld(C, d, 5);
  ProxyNCALoss<float> lf(C, d, 5);
  ld.softmax_scale = 4;
  lf.softmax_scale = 4;
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

TEST_CASE("ProxyNCALoss: bad input throws with the numbers") {
  ProxyNCALoss<double> loss(3, 4);
  const RowMatrixX<double> emb = random_matrix<double>(6, 4, 1);
  const LabelVector labels = cyclic_labels(6, 3);
  KSHOT_CHECK_THROWS_WITH_ALL(ProxyNCALoss<double>(0, 4), std::invalid_argument, "kshot::ProxyNCALoss::ProxyNCALoss()",
                              "num_classes is 0");
  KSHOT_CHECK_THROWS_WITH_ALL(ProxyNCALoss<double>(3, -1), std::invalid_argument, "embedding_size is -1");
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, cyclic_labels(5, 3)), std::invalid_argument,
                              "kshot::ProxyNCALoss::evaluate()", "labels has 5 entries", "6 rows");
  LabelVector bad_labels = labels;
  bad_labels[4] = 3;
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, bad_labels), std::out_of_range, "labels[4] = 3", "[0, 3)");
  bad_labels[4] = -1;
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, bad_labels), std::out_of_range, "labels[4] = -1");
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(random_matrix<double>(6, 5, 1), labels), std::invalid_argument,
                              "embeddings has 5 columns", "proxies is 3 x 4");
  RowMatrixX<double> bad = emb;
  bad(2, 1) = std::nan("");
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(bad, labels), std::invalid_argument, "embeddings", "row 2");
  RowMatrixX<double> g(5, 4), gp(3, 4), gp_bad(4, 3), g_ok(6, 4);
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels, g, gp), std::invalid_argument, "grad is 5 x 4", "6 x 4");
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels, g_ok, gp_bad), std::invalid_argument, "grad_proxies is 4 x 3",
                              "3 x 4");
  MinedTriplets t;
  t.a = {0, 7};
  t.p = {3, 3};
  t.n = {1, 1};
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels, t), std::out_of_range, "a[1] = 7", "6 rows");
  loss.softmax_scale = std::numeric_limits<double>::infinity();
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "softmax_scale is inf");
  loss.softmax_scale = 1;
  loss.proxies(2, 3) = std::numeric_limits<double>::infinity();
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "proxies", "row 2", "column 3");
  loss.proxies.resize(3, 5);
  loss.proxies.setOnes();
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "embeddings has 4 columns",
                              "proxies is 3 x 5");
}

}  // namespace test_proxy_nca
