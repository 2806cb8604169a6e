// SPDX-License-Identifier: MIT
#include "losses/loss_checks.hpp"
#include "losses/pml_cases.hpp"

#include <kshot/losses/cosface.hpp>

#include <cmath>
#include <limits>

// Everything below lives in a namespace of its own: the loss tests are compiled in unity batches (see
// tests/CMakeLists.txt), where the helpers of different files must not collide.
namespace test_cosface {

using namespace kshot;
using namespace kshot::test;

namespace {

CosFaceLoss<double> loss_of(const ReferenceCase& c) {
  const RowMatrixX<double> W = c.input("W");
  CosFaceLoss<double> loss(static_cast<Index>(param(c, "num_classes", double(W.cols()))),
                           static_cast<Index>(param(c, "embedding_size", double(W.rows()))));
  loss.margin = param(c, "margin", 0.35);
  loss.scale = param(c, "scale", 64.0);
  loss.distance = distance_of(c.json.at("distance"));
  loss.reduction = reduction_of(c.json.at("reducer"));
  REQUIRE(loss.W.rows() == W.rows());
  REQUIRE(loss.W.cols() == W.cols());
  loss.W = W;
  return loss;
}

/// The loss written out: cosines, margin off the target, cross-entropy, mean.
double naive_value(const RowMatrixX<double>& emb, const LabelVector& labels, const RowMatrixX<double>& W, double margin,
                   double scale, const std::vector<double>& w) {
  const RowMatrixX<double> x = emb.rowwise().normalized();
  const RowMatrixX<double> wc = W.colwise().normalized();
  double total = 0;
  for (Index i = 0; i < x.rows(); ++i) {
    std::vector<double> z;
    for (Index c = 0; c < W.cols(); ++c)
      z.push_back(scale * (x.row(i).dot(wc.col(c)) - (c == labels[i] ? margin : 0.0)));
    double top = *std::max_element(z.begin(), z.end()), sum = 0;
    for (double v : z) sum += std::exp(v - top);
    total += w[std::size_t(i)] * (top + std::log(sum) - z[std::size_t(labels[i])]);
  }
  return total / double(x.rows());
}

}  // namespace

TEST_CASE("CosFaceLoss: pytorch-metric-learning reference cases") {
  const auto cases = pml_cases("CosFaceLoss");
  REQUIRE(!cases.empty());
  for (const auto& c : cases) {
    INFO("case " << c.json.at("case").get<std::string>());
    auto loss = loss_of(c);
    const RowMatrixX<double> emb = c.input("embeddings");
    const LabelVector labels = c.labels("labels");
    const CaseTuple tuple = tuple_of(c);
    RowMatrixX<double> grad(emb.rows(), emb.cols());
    RowMatrixX<double> grad_W(loss.W.rows(), loss.W.cols());
    const double value = loss.evaluate(emb, labels, tuple.view(), grad, grad_W);
    CHECK(scalar_rel_error(value, c.loss()) <= reference_tolerance);
    CHECK(matrix_rel_error(grad, c.grad("embeddings")) <= reference_tolerance);
    CHECK(matrix_rel_error(grad_W, c.grad("W")) <= reference_tolerance);
    CHECK(loss.evaluate(emb, labels, tuple.view()) == value);
    RowMatrixX<double> grad_only(emb.rows(), emb.cols());
    CHECK(loss.evaluate(emb, labels, tuple.view(), grad_only) == value);
    CHECK(grad_only == grad);
    CHECK(loss.stats().terms == emb.rows());
  }
}

TEST_CASE("CosFaceLoss: value matches the formula written out") {
  const LabelVector labels = cyclic_labels(9, 4, 3);
  const RowMatrixX<double> emb = random_matrix<double>(9, 5, 7);
  CosFaceLoss<double> loss(4, 5, 17);
  const std::vector<double> ones(9, 1.0);
  CHECK(loss.evaluate(emb, labels) == doctest::Approx(naive_value(emb, labels, loss.W, 0.35, 64, ones)).epsilon(1e-12));
  loss.margin = -0.2;
  loss.scale = 5;
  CHECK(loss.evaluate(emb, labels) == doctest::Approx(naive_value(emb, labels, loss.W, -0.2, 5, ones)).epsilon(1e-12));
  MinedPairs pairs;
  pairs.a1 = {0, 1};
  pairs.p = {4, 5};
  pairs.a2 = {0};
  pairs.n = {2};
  // counts: 0 -> 2, 1, 2, 4, 5 -> 1 (max 2)
  const std::vector<double> w = {1.0, 0.5, 0.5, 0.0, 0.5, 0.5, 0.0, 0.0, 0.0};
  CHECK(loss.evaluate(emb, labels, pairs) ==
        doctest::Approx(naive_value(emb, labels, loss.W, -0.2, 5, w)).epsilon(1e-12));
  loss.reduction = Reduction::sum;
  CHECK(loss.evaluate(emb, labels, pairs) ==
        doctest::Approx(9 * naive_value(emb, labels, loss.W, -0.2, 5, w)).epsilon(1e-12));
  loss.reduction = Reduction::mean_nonzero;
  CHECK(loss.evaluate(emb, labels, pairs) ==
        doctest::Approx(9.0 / 5.0 * naive_value(emb, labels, loss.W, -0.2, 5, w)).epsilon(1e-12));
  // margin 0, scale 1: plain softmax cross-entropy over the cosines.
  loss.reduction = Reduction::mean;
  loss.margin = 0;
  loss.scale = 1;
  CHECK(loss.evaluate(emb, labels) == doctest::Approx(naive_value(emb, labels, loss.W, 0, 1, ones)).epsilon(1e-12));
}

TEST_CASE("CosFaceLoss: gradients match central differences") {
  const LabelVector labels = cyclic_labels(10, 4, 5);
  const RowMatrixX<double> emb = random_matrix<double>(10, 6, 3);
  struct Setting {
    double margin, scale;
    Reduction reduction;
    int power;
  };
  const std::vector<Setting> settings = {
      {0.35, 64.0, Reduction::loss_default, 1}, {0.35, 8.0, Reduction::sum, 1}, {0.8, 4.0, Reduction::mean, 1},
      {0.1, 16.0, Reduction::mean_nonzero, 1},  {0.0, 2.0, Reduction::mean, 1}, {0.3, 3.0, Reduction::mean, 3},
  };
  MinedTriplets t;
  t.a = {0, 1, 1, 7};
  t.p = {4, 5, 9, 3};
  t.n = {2, 2, 0, 6};
  for (const auto& s : settings) {
    INFO("margin " << s.margin << " scale " << s.scale << " power " << s.power);
    CosFaceLoss<double> loss(4, 6, 9);
    loss.margin = s.margin;
    loss.scale = s.scale;
    loss.reduction = s.reduction;
    loss.distance = LossDistance::cosine(s.power);
    for (int mined = 0; mined < 2; ++mined) {
      const Mined m = mined != 0 ? Mined(t) : Mined();
      auto f = [&](const RowMatrixX<double>& x, RowMatrixX<double>* g) {
        return g != nullptr ? loss.evaluate(x, labels, m, *g) : loss.evaluate(x, labels, m);
      };
      CHECK(fd_error(f, emb) < 1e-6);
      CHECK(fd_error(f, collapse_classes(emb, labels, 1e-2, 3)) < 1e-6);
      const RowMatrixX<double> W0 = loss.W;
      RowMatrixX<double> ge(10, 6);
      auto fw = [&](const RowMatrixX<double>& W, RowMatrixX<double>* g) {
        loss.W = W;
        return g != nullptr ? loss.evaluate(emb, labels, m, ge, *g) : loss.evaluate(emb, labels, m);
      };
      CHECK(fd_error(fw, W0) < 1e-6);
      // Near-degenerate: embeddings close to (or opposite) their class columns.
      RowMatrixX<double> near(10, 6);
      RandomStream rng(4);
      for (Index i = 0; i < 10; ++i)
        for (Index k = 0; k < 6; ++k)
          near(i, k) = (i % 3 == 0 ? -1.0 : 1.0) * W0(k, labels[i]) + 1e-3 * rng.normal<double>();
      loss.W = W0;
      CHECK(fd_error(f, near) < 1e-6);
      CHECK(fd_error(fw, W0) < 1e-6);
      loss.W = W0;
    }
  }
}

TEST_CASE("CosFaceLoss: cos = +-1 exactly and degenerate batches stay finite") {
  const LabelVector labels = cyclic_labels(8, 3, 2);
  const RowMatrixX<double> emb = random_matrix<double>(8, 5, 6);
  CosFaceLoss<double> loss(3, 5, 4);
  RowMatrixX<double> g(8, 5), gw(5, 3);
  auto f = [&](const RowMatrixX<double>& x, RowMatrixX<double>* gr) {
    return gr != nullptr ? loss.evaluate(x, labels, *gr) : loss.evaluate(x, labels);
  };
  SUBCASE("an embedding exactly equal to its class weight column and one exactly opposite") {
    RowMatrixX<double> x = emb;
    x.row(0) = loss.W.col(labels[0]).transpose();
    x.row(3) = -2.5 * loss.W.col(labels[3]).transpose();
    loss.scale = 4;
    CHECK(std::isfinite(loss.evaluate(x, labels, g, gw)));
    CHECK(g.allFinite());
    CHECK(gw.allFinite());
    CHECK(fd_error(f, x) < 1e-6);
    loss.scale = 64;
    CHECK(std::isfinite(loss.evaluate(x, labels, g, gw)));
    CHECK(g.allFinite());
    CHECK(gw.allFinite());
    CHECK(fd_error(f, x) < 1e-6);
  }
  SUBCASE("zero rows and a zero column") {
    loss.W.col(0).setZero();
    const double v = loss.evaluate(RowMatrixX<double>::Zero(8, 5), labels, g, gw);
    CHECK(std::isfinite(v));
    CHECK(g.allFinite());
    CHECK(gw.allFinite());
    CHECK(loss.stats().degenerate == 9);
    const double zt = -64 * 0.35;
    CHECK(v == doctest::Approx(std::log(std::exp(zt) + 2.0) - zt).epsilon(1e-12));
  }
  SUBCASE("identical rows and one class and a single row and a huge scale") {
    RowMatrixX<double> same(8, 5);
    same.rowwise() = RowVectorX<double>::LinSpaced(5, 1.0, 5.0);
    CHECK(std::isfinite(loss.evaluate(same, LabelVector::Zero(8), g, gw)));
    CHECK(g.allFinite());
    RowMatrixX<double> g1(1, 5);
    CHECK(loss.evaluate(emb.topRows(1), LabelVector::Constant(1, 2), g1, gw) > 0);
    CHECK(g1.allFinite());
    loss.scale = 1e4;
    RowMatrixX<double> x = emb;
    x.row(2) = -loss.W.col(labels[2]).transpose();
    const double v = loss.evaluate(x, labels, g, gw);
    CHECK(std::isfinite(v));
    CHECK(v > 100);
    CHECK(g.allFinite());
    CHECK(gw.allFinite());
  }
}

TEST_CASE("CosFaceLoss: initialisation and float against double and threads do not change a bit") {
  CosFaceLoss<double> a(60, 40, 3), b(60, 40, 3), c(60, 40, 4);
  CHECK(a.W == b.W);
  CHECK(a.W != c.W);
  CHECK(a.W.rows() == 40);
  CHECK(a.W.cols() == 60);
  CHECK(std::abs(a.W.mean()) < 0.05);
  CHECK(std::abs(a.W.array().square().mean() - 1.0) < 0.08);

  const Index n = 400, d = 340, C = 40;
  const LabelVector labels = cyclic_labels(n, C, 9);
  const RowMatrixX<double> emb = random_matrix<double>(n, d, 21);
  CosFaceLoss<double> ld(C, d, 5);
  CosFaceLoss<float> lf(C, d, 5);
  lf.W = ld.W.cast<float>();
  ld.scale = 16;
  lf.scale = 16;
  RowMatrixX<double> gd(n, d), gwd(d, C);
  RowMatrixX<float> gf(n, d), gwf(d, C);
  const double vd = ld.evaluate(emb, labels, gd, gwd);
  const float vf = lf.evaluate(emb.cast<float>(), labels, gf, gwf);
  CHECK(std::abs(double(vf) - vd) <= 1e-5 * std::abs(vd));
  CHECK(matrix_rel_error(gf, gd) <= 1e-4);
  CHECK(matrix_rel_error(gwf, gwd) <= 1e-4);
  // n and d above Eigen's multi-threaded inner block (320) on purpose: the products must not change bits.
  const RowMatrixX<float> ef = emb.cast<float>();
  RowMatrixX<float> wf1(d, C), wf2(d, C);
  int call = 0;
  check_thread_identity<float>(
      [&](RowMatrixX<float>* g) { return lf.evaluate(ef, labels, *g, call++ == 0 ? wf1 : wf2); }, n, d);
  CHECK(wf1 == wf2);
  RowMatrixX<double> wd1(d, C), wd2(d, C);
  call = 0;
  check_thread_identity<double>(
      [&](RowMatrixX<double>* g) { return ld.evaluate(emb, labels, *g, call++ == 0 ? wd1 : wd2); }, n, d);
  CHECK(wd1 == wd2);
}

TEST_CASE("CosFaceLoss: bad input throws with the numbers") {
  CosFaceLoss<double> loss(3, 4);
  const RowMatrixX<double> emb = random_matrix<double>(6, 4, 1);
  const LabelVector labels = cyclic_labels(6, 3);
  KSHOT_CHECK_THROWS_WITH_ALL(CosFaceLoss<double>(2, 0), std::invalid_argument, "kshot::CosFaceLoss::CosFaceLoss()",
                              "embedding_size is 0");
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, cyclic_labels(8, 3)), std::invalid_argument,
                              "kshot::CosFaceLoss::evaluate()", "labels has 8 entries", "6 rows");
  LabelVector bad_labels = labels;
  bad_labels[0] = -3;
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, bad_labels), std::out_of_range, "labels[0] = -3", "[0, 3)");
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(random_matrix<double>(6, 7, 1), labels), std::invalid_argument,
                              "embeddings has 7 columns", "W is 4 x 3");
  RowMatrixX<double> g(6, 4), gw_bad(4, 4);
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels, g, gw_bad), std::invalid_argument, "grad_W is 4 x 4", "4 x 3");
  RowMatrixX<double> bad = emb;
  bad(5, 3) = std::nan("");
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(bad, labels), std::invalid_argument, "embeddings", "row 5");
  loss.distance = LossDistance::lp(2);
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "LpDistance", "CosineSimilarity");
  loss.distance = LossDistance::cosine();
  loss.margin = std::numeric_limits<double>::infinity();
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "margin is inf");
  loss.margin = 0.35;
  loss.scale = -std::numeric_limits<double>::infinity();
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "scale is -inf");
  loss.scale = 64;
  loss.W.resize(5, 3);
  loss.W.setOnes();
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "embeddings has 4 columns",
                              "W is 5 x 3");
}

}  // namespace test_cosface
