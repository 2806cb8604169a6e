// SPDX-License-Identifier: MIT
#include "losses/loss_checks.hpp"
#include "losses/pml_cases.hpp"

#include <kshot/losses/arcface.hpp>

#include <cmath>
#include <limits>

// Everything below lives in a namespace of its own: the loss tests are compiled in unity batches (see
// tests/CMakeLists.txt), where the helpers of different files must not collide.
namespace test_arcface {

using namespace kshot;
using namespace kshot::test;

namespace {

constexpr double pi = 3.14159265358979323846;

ArcFaceLoss<double> loss_of(const ReferenceCase& c) {
  const RowMatrixX<double> W = c.input("W");
  ArcFaceLoss<double> loss(static_cast<Index>(param(c, "num_classes", double(W.cols()))),
                           static_cast<Index>(param(c, "embedding_size", double(W.rows()))));
  // The peer's constructor argument `margin` is in degrees; the cases record it as margin_degrees.
  loss.margin_degrees = param(c, "margin_degrees", param(c, "margin", 28.6));
  loss.scale = param(c, "scale", 64.0);
  loss.distance = distance_of(c.json.at("distance"));
  loss.reduction = reduction_of(c.json.at("reducer"));
  REQUIRE(loss.W.rows() == W.rows());
  REQUIRE(loss.W.cols() == W.cols());
  loss.W = W;
  return loss;
}

/// The loss written out: cosines, the angular margin on the target, cross-entropy, mean.
double naive_value(const RowMatrixX<double>& emb, const LabelVector& labels, const RowMatrixX<double>& W,
                   double margin_degrees, double scale, const std::vector<double>& w) {
  const double m = margin_degrees * pi / 180.0;
  const RowMatrixX<double> x = emb.rowwise().normalized();
  const RowMatrixX<double> wc = W.colwise().normalized();
  double total = 0;
  for (Index i = 0; i < x.rows(); ++i) {
    std::vector<double> z;
    for (Index c = 0; c < W.cols(); ++c) {
      double cosine = x.row(i).dot(wc.col(c));
      if (c == labels[i]) {
        const double theta = std::acos(std::min(1.0, std::max(-1.0, cosine)));
        cosine = theta <= pi - m ? std::cos(theta + m) : std::cos(theta) - m * std::sin(m);
      }
      z.push_back(scale * cosine);
    }
    double top = *std::max_element(z.begin(), z.end()), sum = 0;
    for (double v : z) sum += std::exp(v - top);
    total += w[std::size_t(i)] * (top + std::log(sum) - z[std::size_t(labels[i])]);
  }
  return total / double(x.rows());
}

/// Rows of `emb` replaced by a unit vector at angle theta from their class's column of W (times `norm`).
RowMatrixX<double> at_angle(const RowMatrixX<double>& emb, const LabelVector& labels, const RowMatrixX<double>& W,
                            Index row, double theta, double norm) {
  RowMatrixX<double> out = emb;
  const VectorX<double> u = W.col(labels[row]).normalized();
  VectorX<double> v = emb.row(row).transpose();
  v -= u.dot(v) * u;
  v.normalize();
  out.row(row) = norm * (std::cos(theta) * u + std::sin(theta) * v).transpose();
  return out;
}

/**
 * fd_error with Richardson extrapolation, (8 D(h/4) - 6 D(h/2) + D(h)) / 3 with D the central difference,
 * for points at the apex of the cone: with c = 1 exactly the target logit behaves like cos m - θ sin m, not
 * differentiable, and a coordinate step has a radial part that makes the central difference err by O(h)
 * (not O(h²)), while small steps lose digits in acos near 1. The extrapolation cancels the O(h) and O(h²)
 * terms, so moderate steps can be used.
 */
template <class F>
double fd_error_apex(F&& f, const RowMatrixX<double>& x, double h = 4e-3) {
  RowMatrixX<double> g(x.rows(), x.cols());
  f(x, &g);
  auto value = [&](const RowMatrixX<double>& probe) { return f(probe, nullptr); };
  const RowMatrixX<double> num =
      (8 * numeric_gradient(value, x, h / 4) - 6 * numeric_gradient(value, x, h / 2) + numeric_gradient(value, x, h)) /
      3;
  return gradient_rel_error(g, num);
}

}  // namespace

TEST_CASE("ArcFaceLoss: pytorch-metric-learning reference cases") {
  const auto cases = pml_cases("ArcFaceLoss");
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

TEST_CASE("ArcFaceLoss: value matches the formula written out") {
  const LabelVector labels = cyclic_labels(9, 4, 3);
  const RowMatrixX<double> emb = random_matrix<double>(9, 5, 7);
  ArcFaceLoss<double> loss(4, 5, 17);
  const std::vector<double> ones(9, 1.0);
  CHECK(loss.evaluate(emb, labels) == doctest::Approx(naive_value(emb, labels, loss.W, 28.6, 64, ones)).epsilon(1e-12));
  loss.margin_degrees = 50;  // some targets past pi - m: the fallback branch
  loss.scale = 3;
  CHECK(loss.evaluate(emb, labels) == doctest::Approx(naive_value(emb, labels, loss.W, 50, 3, ones)).epsilon(1e-12));
  MinedTriplets t;
  t.a = {0, 0, 2};
  t.p = {4, 8, 6};
  t.n = {1, 3, 3};
  // counts over every index: 0 -> 2, 1 -> 1, 2 -> 1, 3 -> 2, 4, 6, 8 -> 1 (max 2)
  const std::vector<double> w = {1.0, 0.5, 0.5, 1.0, 0.5, 0.0, 0.5, 0.0, 0.5};
  CHECK(loss.evaluate(emb, labels, t) == doctest::Approx(naive_value(emb, labels, loss.W, 50, 3, w)).epsilon(1e-12));
  loss.reduction = Reduction::sum;
  CHECK(loss.evaluate(emb, labels, t) ==
        doctest::Approx(9 * naive_value(emb, labels, loss.W, 50, 3, w)).epsilon(1e-12));
  loss.reduction = Reduction::mean_nonzero;
  CHECK(loss.evaluate(emb, labels, t) ==
        doctest::Approx(9.0 / 7.0 * naive_value(emb, labels, loss.W, 50, 3, w)).epsilon(1e-12));
  // W is used through its normalised columns: scaling a column changes nothing.
  loss.reduction = Reduction::mean;
  const double before = loss.evaluate(emb, labels);
  loss.W.col(2) *= 7.0;
  CHECK(loss.evaluate(emb, labels) == doctest::Approx(before).epsilon(1e-13));
}

TEST_CASE("ArcFaceLoss: the target logit and its derivative at and beyond cos = +-1") {
  const double m = 28.6 * pi / 180.0;
  const detail::ArcFaceTarget<double> f(m);
  double d = 0;
  Index deg = 0;
  // Interior: the derivative matches central differences on both branches.
  for (double c : {-0.999, -0.95, -0.5, 0.0, 0.3, 0.9, 0.999999}) {
    INFO("c = " << c);
    const double h = 1e-7 * (1 - std::abs(c)) + 1e-12;
    double dd = 0;
    const double up = f(c + h, dd, deg), down = f(c - h, dd, deg);
    f(c, d, deg);
    CHECK(d == doctest::Approx((up - down) / (2 * h)).epsilon(1e-5));
  }
  CHECK(deg == 0);
  // c = 1 exactly: f = cos m, finite derivative cos m (the smooth part), counted.
  CHECK(f(1.0, d, deg) == doctest::Approx(std::cos(m)).epsilon(1e-15));
  CHECK(d == doctest::Approx(std::cos(m)).epsilon(1e-15));
  CHECK(deg == 1);
  // Beyond 1 (rounding): clamped, zero derivative as torch's clamp gives, counted.
  CHECK(f(1.0 + 1e-15, d, deg) == doctest::Approx(std::cos(m)).epsilon(1e-15));
  CHECK(d == 0.0);
  CHECK(deg == 2);
  // c = -1 exactly: theta = pi > pi - m, the fallback -1 - m sin m with derivative 1, not counted.
  CHECK(f(-1.0, d, deg) == doctest::Approx(-1.0 - m * std::sin(m)).epsilon(1e-15));
  CHECK(d == 1.0);
  CHECK(deg == 2);
  CHECK(f(-1.0 - 1e-15, d, deg) == doctest::Approx(-1.0 - m * std::sin(m)).epsilon(1e-15));
  CHECK(d == 0.0);
  CHECK(deg == 3);
  // Just below 1 torch's derivative is finite and huge: kshot gives the same.
  const double c = 1.0 - 1e-12;
  f(c, d, deg);
  CHECK(d == doctest::Approx(std::sin(std::acos(c) + m) / std::sqrt((1 - c) * (1 + c))).epsilon(1e-12));
  CHECK(d > 1e5);
  // The branch switch at theta = pi - m.
  CHECK(f(std::cos(pi - m) + 1e-9, d, deg) == doctest::Approx(-1.0).epsilon(1e-7));
  CHECK(f(std::cos(pi - m) - 1e-9, d, deg) == doctest::Approx(std::cos(pi - m) - m * std::sin(m)).epsilon(1e-7));
}

TEST_CASE("ArcFaceLoss: gradients match central differences") {
  const LabelVector labels = cyclic_labels(10, 4, 5);
  const RowMatrixX<double> emb = random_matrix<double>(10, 6, 3);
  struct Setting {
    double margin_degrees, scale;
    Reduction reduction;
    int power;
  };
  const std::vector<Setting> settings = {
      {28.6, 64.0, Reduction::loss_default, 1}, {28.6, 8.0, Reduction::sum, 1},
      {60.0, 4.0, Reduction::mean, 1},  // many targets on the fallback branch
      {10.0, 16.0, Reduction::mean_nonzero, 1}, {0.0, 2.0, Reduction::mean, 1},
      {20.0, 3.0, Reduction::mean, 2},
  };
  MinedPairs pairs;
  pairs.a1 = {0, 1, 1};
  pairs.p = {4, 5, 9};
  pairs.a2 = {2, 7};
  pairs.n = {0, 6};
  for (const auto& s : settings) {
    INFO("margin " << s.margin_degrees << " scale " << s.scale << " power " << s.power);
    ArcFaceLoss<double> loss(4, 6, 9);
    loss.margin_degrees = s.margin_degrees;
    loss.scale = s.scale;
    loss.reduction = s.reduction;
    loss.distance = LossDistance::cosine(s.power);
    for (int mined = 0; mined < 2; ++mined) {
      const Mined m = mined != 0 ? Mined(pairs) : Mined();
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
      loss.W = W0;
    }
  }
}

TEST_CASE("ArcFaceLoss: targets at and near cos = +-1 stay finite and match central differences") {
  const LabelVector labels = cyclic_labels(8, 3, 2);
  const RowMatrixX<double> emb = random_matrix<double>(8, 5, 6);
  ArcFaceLoss<double> loss(3, 5, 4);
  loss.scale = 4;  // moderate, so that every row contributes to the gradient
  RowMatrixX<double> g(8, 5), gw(5, 3);
  auto f = [&](const RowMatrixX<double>& x, RowMatrixX<double>* gr) {
    return gr != nullptr ? loss.evaluate(x, labels, *gr) : loss.evaluate(x, labels);
  };
  const RowMatrixX<double> W0 = loss.W;
  auto fw_at = [&](const RowMatrixX<double>& x) {
    return [&loss, &labels, x](const RowMatrixX<double>& W, RowMatrixX<double>* gr) {
      RowMatrixX<double> ge(x.rows(), x.cols());
      loss.W = W;
      return gr != nullptr ? loss.evaluate(x, labels, ge, *gr) : loss.evaluate(x, labels);
    };
  };
  SUBCASE("an embedding exactly equal to its class weight column and one exactly opposite") {
    RowMatrixX<double> x = emb;
    x.row(0) = loss.W.col(labels[0]).transpose();
    x.row(3) = -2.5 * loss.W.col(labels[3]).transpose();
    const double v = loss.evaluate(x, labels, g, gw);
    CHECK(std::isfinite(v));
    CHECK(g.allFinite());
    CHECK(gw.allFinite());
    CHECK(fd_error_apex(f, x) < 1e-6);
    CHECK(fd_error_apex(fw_at(x), W0) < 1e-6);
    loss.W = W0;
    // The same at the default scale 64.
    loss.scale = 64;
    CHECK(std::isfinite(loss.evaluate(x, labels, g, gw)));
    CHECK(g.allFinite());
    CHECK(gw.allFinite());
    CHECK(fd_error_apex(f, x) < 1e-6);
    CHECK(fd_error_apex(fw_at(x), W0) < 1e-6);
    loss.W = W0;
  }
  SUBCASE("every embedding on its class column: exactly +1 everywhere") {
    RowMatrixX<double> x(8, 5);
    for (Index i = 0; i < 8; ++i) x.row(i) = loss.W.col(labels[i]).transpose() * double(i + 1);
    const double v = loss.evaluate(x, labels, g, gw);
    CHECK(std::isfinite(v));
    CHECK(g.allFinite());
    CHECK(gw.allFinite());
    // Rounding puts some cosines at exactly 1 (floored derivative) or just above (clamped): both counted.
    CHECK(loss.stats().degenerate >= 1);
    CHECK(loss.stats().degenerate <= 8);
    CHECK(fd_error_apex(f, x) < 1e-6);
    CHECK(fd_error_apex(fw_at(x), W0) < 1e-6);
    loss.W = W0;
  }
  SUBCASE("small angles to the class column and angles near pi") {
    for (double theta : {1e-2, 1e-3, pi - 1e-3, pi - 1e-2}) {
      INFO("theta " << theta);
      RowMatrixX<double> x = at_angle(emb, labels, loss.W, 1, theta, 1.3);
      x = at_angle(x, labels, loss.W, 6, theta, 0.7);
      CHECK(std::isfinite(loss.evaluate(x, labels, g, gw)));
      CHECK(loss.stats().degenerate == 0);
      CHECK(fd_error(f, x) < 1e-6);
      CHECK(fd_error(fw_at(x), W0) < 1e-6);
      loss.W = W0;
    }
  }
  SUBCASE("zero rows and a zero column and identical rows and one class and a single row") {
    loss.W.col(1).setZero();
    const double v = loss.evaluate(RowMatrixX<double>::Zero(8, 5), labels, g, gw);
    CHECK(std::isfinite(v));
    CHECK(g.allFinite());
    CHECK(gw.allFinite());
    CHECK(loss.stats().degenerate == 9);
    // Every cosine 0: target cos(pi/2 + m) = -sin m, others 0.
    const double m = 28.6 * pi / 180.0;
    const double zt = -4 * std::sin(m);
    CHECK(v == doctest::Approx(std::log(std::exp(zt) + 2.0) - zt).epsilon(1e-12));
    loss.W = W0;
    RowMatrixX<double> same(8, 5);
    same.rowwise() = RowVectorX<double>::LinSpaced(5, 1.0, 5.0);
    CHECK(std::isfinite(loss.evaluate(same, LabelVector::Zero(8), g, gw)));
    CHECK(g.allFinite());
    RowMatrixX<double> g1(1, 5);
    CHECK(loss.evaluate(emb.topRows(1), LabelVector::Constant(1, 2), g1, gw) > 0);
    CHECK(g1.allFinite());
  }
}

TEST_CASE("ArcFaceLoss: initialisation and float against double and threads do not change a bit") {
  ArcFaceLoss<double> a(60, 40, 3), b(60, 40, 3);
  CHECK(a.W == b.W);
  CHECK(a.W.rows() == 40);
  CHECK(a.W.cols() == 60);
  CHECK(a.num_classes() == 60);
  CHECK(a.embedding_size() == 40);
  CHECK(std::abs(a.W.mean()) < 0.05);
  CHECK(std::abs(a.W.array().square().mean() - 1.0) < 0.08);

  const Index n = 400, d = 340, C = 40;
  const LabelVector labels = cyclic_labels(n, C, 9);
  const RowMatrixX<double> emb = random_matrix<double>(n, d, 21);
  ArcFaceLoss<double> ld(C, d, 5);
  ArcFaceLoss<float> lf(C, d, 5);
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

TEST_CASE("ArcFaceLoss: bad input throws with the numbers") {
  ArcFaceLoss<double> loss(3, 4);
  const RowMatrixX<double> emb = random_matrix<double>(6, 4, 1);
  const LabelVector labels = cyclic_labels(6, 3);
  KSHOT_CHECK_THROWS_WITH_ALL(ArcFaceLoss<double>(0, 4), std::invalid_argument, "kshot::ArcFaceLoss::ArcFaceLoss()",
                              "num_classes is 0");
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, cyclic_labels(4, 3)), std::invalid_argument,
                              "kshot::ArcFaceLoss::evaluate()", "labels has 4 entries", "6 rows");
  LabelVector bad_labels = labels;
  bad_labels[1] = 3;
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, bad_labels), std::out_of_range, "labels[1] = 3", "[0, 3)");
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(random_matrix<double>(6, 3, 1), labels), std::invalid_argument,
                              "embeddings has 3 columns", "W is 4 x 3");
  RowMatrixX<double> g(6, 4), gw_bad(3, 4), gw(4, 3), g_bad(6, 3);
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels, g, gw_bad), std::invalid_argument, "grad_W is 3 x 4", "4 x 3");
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels, g_bad, gw), std::invalid_argument, "grad is 6 x 3", "6 x 4");
  MinedTriplets t;
  t.a = {0};
  t.p = {3};
  t.n = {};
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels, t), std::invalid_argument, "a, p and n have 1, 1 and 0");
  loss.distance = LossDistance::lp();
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "LpDistance", "CosineSimilarity");
  loss.distance = LossDistance::dot_product();
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "DotProductSimilarity");
  loss.distance = LossDistance::cosine();
  loss.margin_degrees = std::numeric_limits<double>::infinity();
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "margin_degrees is inf");
  loss.margin_degrees = 28.6;
  loss.scale = std::nan("");
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "scale is nan");
  loss.scale = 64;
  loss.W(3, 2) = std::nan("");
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "W", "row 3", "column 2");
}

}  // namespace test_arcface
