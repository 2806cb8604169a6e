// SPDX-License-Identifier: MIT
#include "losses/loss_checks.hpp"
#include "losses/pml_cases.hpp"

#include <kshot/losses/margin.hpp>

// Everything below lives in a namespace of its own: the loss tests are compiled in unity batches (see
// tests/CMakeLists.txt), where the helpers of different files must not collide.
namespace test_margin {

using namespace kshot;
using namespace kshot::test;

namespace {

/// The loss a reference case ran, or false when its triplets cannot be reproduced (random triplets drawn
/// by torch's generator).
bool loss_of(const ReferenceCase& c, MarginLoss<double>& loss) {
  loss.margin = param(c, "margin", 0.2);
  loss.nu = param(c, "nu", 0.0);
  loss.learn_beta = param_bool(c, "learn_beta", false);
  const auto& inputs = c.json.at("inputs");
  const auto& params = c.params();
  if (inputs.contains("beta") && !inputs.at("beta").is_null()) {
    const RowMatrixX<double> b = c.input("beta");
    loss.beta = Eigen::Map<const VectorX<double>>(b.data(), b.size());
  } else if (params.contains("beta") && params.at("beta").is_array()) {
    const RowMatrixX<double> b = ReferenceCase::to_matrix(params.at("beta"));
    loss.beta = Eigen::Map<const VectorX<double>>(b.data(), b.size());
  } else {
    const double beta = param(c, "beta", 1.2);
    const auto classes = static_cast<Index>(param(c, "num_classes", 0.0));
    loss.beta = VectorX<double>::Constant(classes > 0 ? classes : 1, beta);
  }
  loss.distance = distance_of(c.json.at("distance"));
  loss.reduction = reduction_of(c.json.at("reducer"));
  const std::string tpa = param_string(c, "triplets_per_anchor", "all");
  loss.triplets_per_anchor = tpa == "all" ? 0 : std::stoll(tpa);
  return loss.triplets_per_anchor == 0 || tuple_of(c).arity != 0;
}

/// The margin loss by its definition, over explicit triplets and a given distance matrix, for any
/// reduction (the test's own reference).
double by_definition(const MarginLoss<double>& loss, const RowMatrixX<double>& D, const LabelVector& labels,
                     const MinedTriplets& t) {
  const bool inv = loss.distance.is_inverted();
  double sum = 0, reg_sum = 0, reg_active_sum = 0;
  Index pos_active = 0, neg_active = 0, active = 0, reg_active = 0;
  for (std::size_t k = 0; k < t.a.size(); ++k) {
    const double b = loss.beta.size() == 1 ? loss.beta[0] : loss.beta[labels[t.a[k]]];
    const double ap = D(t.a[k], t.p[k]), an = D(t.a[k], t.n[k]);
    const double pos = std::max(0.0, (inv ? b - ap : ap - b) + loss.margin);
    const double neg = std::max(0.0, (inv ? an - b : b - an) + loss.margin);
    sum += pos + neg;
    pos_active += pos > 0;
    neg_active += neg > 0;
    active += pos + neg > 0;
    const double r = b * loss.nu;
    reg_sum += r;
    if (r > 0) { reg_active_sum += r; ++reg_active; }
  }
  const double T = double(t.size());
  if (T == 0) return 0;
  const double divisor = double(pos_active + neg_active);
  double value = 0, reg = 0;
  switch (loss.reduction) {
    case Reduction::loss_default:
      value = divisor > 0 ? sum / divisor : 0;
      reg = divisor > 0 ? reg_sum / divisor : 0;
      break;
    case Reduction::mean:
      value = sum / T;
      reg = reg_sum / T;
      break;
    case Reduction::sum:
      value = sum;
      reg = reg_sum;
      break;
    case Reduction::mean_nonzero:
      value = active > 0 ? sum / double(active) : 0;
      reg = reg_active > 0 ? reg_active_sum / double(reg_active) : 0;
      break;
  }
  if (loss.learn_beta) value += loss.beta.size() == 1 ? loss.beta[0] * loss.nu : reg;
  return value;
}

/// Euclidean distances between L2-normalised rows, or cosine similarities, computed directly.
RowMatrixX<double> direct_matrix(const RowMatrixX<double>& x, bool cosine) {
  const RowMatrixX<double> u = x.rowwise().normalized();
  RowMatrixX<double> d(x.rows(), x.rows());
  for (Index i = 0; i < x.rows(); ++i)
    for (Index j = 0; j < x.rows(); ++j) d(i, j) = cosine ? u.row(i).dot(u.row(j)) : (u.row(i) - u.row(j)).norm();
  return d;
}

/// d loss / d beta by central differences.
VectorX<double> numeric_beta_gradient(MarginLoss<double>& loss, const RowMatrixX<double>& emb, const LabelVector& labels,
                                      const Mined& mined, double h = 1e-6) {
  VectorX<double> g(loss.beta.size());
  for (Index c = 0; c < loss.beta.size(); ++c) {
    const double keep = loss.beta[c];
    loss.beta[c] = keep + h;
    const double up = loss.evaluate(emb, labels, mined);
    loss.beta[c] = keep - h;
    const double down = loss.evaluate(emb, labels, mined);
    loss.beta[c] = keep;
    g[c] = (up - down) / (2 * h);
  }
  return g;
}

}  // namespace

TEST_CASE("MarginLoss: pytorch-metric-learning reference cases") {
  const auto cases = pml_cases("MarginLoss");
  REQUIRE(!cases.empty());
  for (const auto& c : cases) {
    INFO("case " << c.json.at("case").get<std::string>());
    MarginLoss<double> loss;
    if (!loss_of(c, loss)) {
      MESSAGE("skipped: random triplets drawn by torch's generator cannot be reproduced");
      continue;
    }
    const RowMatrixX<double> emb = c.input("embeddings");
    const LabelVector labels = c.labels("labels");
    const CaseTuple tuple = tuple_of(c);
    RowMatrixX<double> grad(emb.rows(), emb.cols());
    VectorX<double> grad_beta(loss.beta.size());
    const double value = loss.evaluate(emb, labels, tuple.view(), grad, grad_beta);
    CHECK(scalar_rel_error(value, c.loss()) <= reference_tolerance);
    CHECK(matrix_rel_error(grad, c.grad("embeddings")) <= reference_tolerance);
    if (c.json.at("grad").contains("beta")) {
      const RowMatrixX<double> gb = c.grad("beta");
      CHECK(matrix_rel_error(grad_beta, Eigen::Map<const VectorX<double>>(gb.data(), gb.size())) <=
            reference_tolerance);
    }
    CHECK(loss.evaluate(emb, labels, tuple.view()) == value);
    // The divisor pytorch-metric-learning recorded, and its number of triplets.
    const auto& sub = c.json.at("outputs").at("sub_losses").at("margin_loss");
    if (sub.contains("divisor")) {
      const auto& losses = sub.at("losses").at("data");
      CHECK(loss.stats().terms == Index(losses.size()));
      Index positive = 0;
      for (const auto& x : losses) positive += x.get<double>() > 0 ? 1 : 0;
      CHECK(loss.stats().active_terms == positive);
    }
  }
}

TEST_CASE("MarginLoss: the default case by its definition") {
  const ReferenceCase c = load_reference("pml_margin_default");
  const RowMatrixX<double> emb = c.input("embeddings");
  const LabelVector labels = c.labels("labels");
  MarginLoss<double> loss;
  const double expected = by_definition(loss, direct_matrix(emb, false), labels, all_triplets(labels));
  CHECK(loss.evaluate(emb, labels) == doctest::Approx(expected).epsilon(1e-12));
  CHECK(expected == doctest::Approx(c.loss()).epsilon(1e-12));
  CHECK(loss.stats().terms == 288);
}

TEST_CASE("MarginLoss: every reduction with shared and per-class beta streamed and as a list") {
  const LabelVector labels = cyclic_labels(30, 4, 3);
  const RowMatrixX<double> emb = random_matrix<double>(30, 6, 5);
  const MinedTriplets list = all_triplets(labels);
  for (bool cosine : {false, true})
    for (bool per_class : {false, true})
      for (bool learn : {false, true})
        for (Reduction r : {Reduction::loss_default, Reduction::mean, Reduction::sum, Reduction::mean_nonzero}) {
          INFO("cosine " << cosine << " per_class " << per_class << " learn_beta " << learn << " reduction "
                         << int(r));
          MarginLoss<double> loss;
          loss.distance = cosine ? LossDistance::cosine() : LossDistance::lp();
          loss.beta = per_class ? (VectorX<double>(4) << 0.9, 1.1, 1.3, 1.0).finished()
                                : VectorX<double>::Constant(1, cosine ? 0.2 : 1.2);
          if (cosine && per_class) loss.beta.array() -= 0.9;
          loss.learn_beta = learn;
          loss.nu = 0.3;
          loss.reduction = r;
          const double expected = by_definition(loss, direct_matrix(emb, cosine), labels, list);
          RowMatrixX<double> g1(30, 6), g2(30, 6);
          VectorX<double> b1(loss.beta.size()), b2(loss.beta.size());
          const double v1 = loss.evaluate(emb, labels, Mined{}, g1, b1);
          const LossStats s1 = loss.stats();
          const double v2 = loss.evaluate(emb, labels, list, g2, b2);
          CHECK(v1 == doctest::Approx(expected).epsilon(1e-12));
          CHECK(scalar_rel_error(v1, v2) <= 1e-12);
          CHECK(matrix_rel_error(g1, g2) <= 1e-12);
          CHECK(matrix_rel_error(b1, b2) <= 1e-12);
          CHECK(s1.terms == list.size());
          CHECK(s1.active_terms == loss.stats().active_terms);
          CHECK(s1.active_terms > 0);
          CHECK(s1.active_terms < s1.terms);
        }
}

TEST_CASE("MarginLoss: gradients for embeddings and beta match central differences") {
  const LabelVector labels = cyclic_labels(12, 3, 7);
  const RowMatrixX<double> emb = random_matrix<double>(12, 5, 11);
  struct Setting {
    LossDistance distance;
    VectorX<double> beta;
    double margin, nu;
    bool learn;
    Reduction reduction;
  };
  const VectorX<double> shared = VectorX<double>::Constant(1, 1.2);
  const VectorX<double> classes = (VectorX<double>(3) << 1.0, 1.3, 1.15).finished();
  const std::vector<Setting> settings = {
      {LossDistance::lp(), shared, 0.2, 0.0, false, Reduction::loss_default},
      {LossDistance::lp(), shared, 0.2, 0.1, true, Reduction::loss_default},
      {LossDistance::lp(), classes, 0.2, 0.1, true, Reduction::loss_default},
      {LossDistance::lp(), classes, 0.3, 0.2, true, Reduction::mean},
      {LossDistance::lp(), classes, 0.1, 0.05, true, Reduction::sum},
      {LossDistance::lp(), classes, 0.2, 0.1, true, Reduction::mean_nonzero},
      {LossDistance::lp(), classes, 0.2, 0.0, false, Reduction::loss_default},
      {LossDistance::lp(2), VectorX<double>::Constant(1, 2.0), 0.5, 0.1, true, Reduction::mean},
      {LossDistance::lp(1, false), VectorX<double>::Constant(1, 3.0), 1.0, 0.1, true, Reduction::loss_default},
      {LossDistance::lp(1.5, true, 3), classes, 0.2, 0.1, true, Reduction::loss_default},
      {LossDistance::cosine(), VectorX<double>::Constant(1, 0.1), 0.2, 0.1, true, Reduction::loss_default},
      {LossDistance::cosine(), (VectorX<double>(3) << 0.0, 0.2, -0.1).finished(), 0.2, 0.1, true, Reduction::mean},
      {LossDistance::dot_product(false), VectorX<double>::Constant(1, 0.5), 1.0, 0.1, true, Reduction::sum},
  };
  MinedTriplets mined;
  const MinedTriplets all = all_triplets(labels);
  for (std::size_t k : {std::size_t(0), std::size_t(17), std::size_t(40), std::size_t(95), std::size_t(17)}) {
    mined.a.push_back(all.a[k]);
    mined.p.push_back(all.p[k]);
    mined.n.push_back(all.n[k]);
  }
  MinedPairs pairs;
  pairs.a1 = {0, 1, 0, 2};
  pairs.p = {3, 4, 6, 8};
  pairs.a2 = {0, 0, 1, 3};
  pairs.n = {1, 2, 0, 2};
  for (const auto& s : settings) {
    INFO("distance " << s.distance.describe() << " beta entries " << s.beta.size() << " learn_beta " << s.learn
                     << " reduction " << int(s.reduction));
    MarginLoss<double> loss;
    loss.distance = s.distance;
    loss.beta = s.beta;
    loss.margin = s.margin;
    loss.nu = s.nu;
    loss.learn_beta = s.learn;
    loss.reduction = s.reduction;
    for (int which = 0; which < 4; ++which) {
      INFO("triplets: " << (which == 0 ? "all" : which == 1 ? "mined" : which == 2 ? "pairs" : "random"));
      Mined m = which == 1 ? Mined(mined) : which == 2 ? Mined(pairs) : Mined();
      loss.triplets_per_anchor = which == 3 ? 3 : 0;
      auto f = [&](const RowMatrixX<double>& x, RowMatrixX<double>* g) {
        return g != nullptr ? loss.evaluate(x, labels, m, *g) : loss.evaluate(x, labels, m);
      };
      CHECK(fd_error(f, emb) < 1e-6);
      RowMatrixX<double> g(12, 5);
      VectorX<double> gb(loss.beta.size());
      loss.evaluate(emb, labels, m, g, gb);
      CHECK(gradient_rel_error(gb, numeric_beta_gradient(loss, emb, labels, m)) < 1e-6);
      CHECK(!gb.isZero(0));
    }
    const RowMatrixX<double> tight = collapse_classes(emb, labels, 1e-2, 3);
    auto f = [&](const RowMatrixX<double>& x, RowMatrixX<double>* g) {
      return g != nullptr ? loss.evaluate(x, labels, *g) : loss.evaluate(x, labels);
    };
    CHECK(fd_error(f, tight) < 1e-6);
  }
}

TEST_CASE("MarginLoss: the regulariser beta * nu") {
  const LabelVector labels = cyclic_labels(10, 2, 4);
  const RowMatrixX<double> emb = random_matrix<double>(10, 4, 8);
  MarginLoss<double> loss;
  const double base = loss.evaluate(emb, labels);
  SUBCASE("off unless learn_beta") {
    loss.nu = 0.5;
    CHECK(loss.evaluate(emb, labels) == base);
  }
  SUBCASE("shared beta: added as is with every reduction") {
    loss.learn_beta = true;
    loss.nu = 0.5;
    CHECK(loss.evaluate(emb, labels) == doctest::Approx(base + 1.2 * 0.5).epsilon(1e-14));
    loss.reduction = Reduction::mean;
    const double mean_base = [&] {
      MarginLoss<double> plain;
      plain.reduction = Reduction::mean;
      return plain.evaluate(emb, labels);
    }();
    CHECK(loss.evaluate(emb, labels) == doctest::Approx(mean_base + 0.6).epsilon(1e-14));
    RowMatrixX<double> g(10, 4);
    VectorX<double> gb(1);
    loss.evaluate(emb, labels, Mined{}, g, gb);
    VectorX<double> gb0(1);
    loss.learn_beta = false;
    loss.evaluate(emb, labels, Mined{}, g, gb0);
    CHECK(gb[0] == doctest::Approx(gb0[0] + 0.5).epsilon(1e-14));
  }
  SUBCASE("no element > 0: the divisor is 0 and the shared regulariser stays") {
    loss.margin = -5;  // every pos and neg term is 0
    loss.learn_beta = true;
    loss.nu = 0.25;
    RowMatrixX<double> g(10, 4);
    VectorX<double> gb(1);
    CHECK(loss.evaluate(emb, labels, Mined{}, g, gb) == doctest::Approx(1.2 * 0.25).epsilon(1e-15));
    CHECK(g.isZero(0));
    CHECK(gb[0] == 0.25);
    CHECK(loss.stats().active_terms == 0);
    loss.beta = VectorX<double>::Constant(2, 1.2);  // per class: divided by the same zero divisor
    VectorX<double> gb2(2);
    CHECK(loss.evaluate(emb, labels, Mined{}, g, gb2) == 0.0);
    CHECK(gb2.isZero(0));
  }
  SUBCASE("no triplet at all: zero with the regulariser") {
    loss.learn_beta = true;
    loss.nu = 0.25;
    RowMatrixX<double> g(10, 4);
    VectorX<double> gb(1);
    CHECK(loss.evaluate(emb, LabelVector::Zero(10), Mined{}, g, gb) == 0.0);
    CHECK(gb.isZero(0));
    CHECK(loss.stats().skipped_anchors == 10);
  }
}

TEST_CASE("MarginLoss: per-class beta follows the anchor's label") {
  const LabelVector labels = (LabelVector(6) << 0, 0, 1, 1, 2, 2).finished();
  const RowMatrixX<double> emb = random_matrix<double>(6, 3, 2);
  MarginLoss<double> loss;
  loss.beta = (VectorX<double>(3) << 1.2, 1.2, 1.2).finished();
  MarginLoss<double> one;
  // The same value in every entry: the same loss as a shared beta.
  CHECK(loss.evaluate(emb, labels) == doctest::Approx(one.evaluate(emb, labels)).epsilon(1e-14));
  // A mined triplet list whose anchors are all of class 1: only beta[1] has a gradient.
  MinedTriplets t;
  t.a = {2, 3, 2};
  t.p = {3, 2, 3};
  t.n = {0, 5, 4};
  loss.margin = 1.5;  // every term active
  RowMatrixX<double> g(6, 3);
  VectorX<double> gb(3);
  loss.evaluate(emb, labels, t, g, gb);
  CHECK(gb[0] == 0.0);
  CHECK(gb[2] == 0.0);
  // d/d beta of sum(pos + neg) / divisor: -1 per pos term, +1 per neg term, so 0 with both all active.
  CHECK(gb[1] == doctest::Approx(0.0).epsilon(1e-15));
  loss.learn_beta = true;
  loss.nu = 0.5;
  loss.evaluate(emb, labels, t, g, gb);
  CHECK(gb[1] == doctest::Approx(0.5 * 3.0 / 6.0).epsilon(1e-14));  // nu * triplets / divisor
}

TEST_CASE("MarginLoss: degenerate batches stay finite") {
  const LabelVector labels = cyclic_labels(8, 2);
  MarginLoss<double> loss;
  RowMatrixX<double> g(8, 3);
  VectorX<double> gb(1);
  SUBCASE("all rows zero") {
    const double v = loss.evaluate(RowMatrixX<double>::Zero(8, 3), labels, Mined{}, g, gb);
    // d = 0: pos = relu(0 - 1.2 + 0.2) = 0, neg = relu(1.2 - 0 + 0.2) = 1.4 for every triplet.
    CHECK(v == doctest::Approx(1.4));
    CHECK(g.allFinite());
    CHECK(loss.stats().degenerate == 8);
  }
  SUBCASE("identical rows") {
    RowMatrixX<double> same(8, 3);
    same.rowwise() = RowVectorX<double>::LinSpaced(3, 1.0, 3.0);
    CHECK(loss.evaluate(same, labels, Mined{}, g, gb) == doctest::Approx(1.4));
    CHECK(g.allFinite());
    CHECK(gb[0] == doctest::Approx(1.0));
  }
  SUBCASE("one class only") {
    CHECK(loss.evaluate(random_matrix<double>(8, 3, 4), LabelVector::Zero(8), g) == 0.0);
    CHECK(g.isZero(0));
    CHECK(loss.stats().skipped_anchors == 8);
    CHECK(loss.stats().terms == 0);
  }
  SUBCASE("a single row") {
    RowMatrixX<double> g1(1, 3);
    CHECK(loss.evaluate(random_matrix<double>(1, 3, 1), LabelVector::Zero(1), g1) == 0.0);
    CHECK(g1.isZero(0));
  }
  SUBCASE("random triplets skip anchors without a positive or a negative") {
    const LabelVector y = (LabelVector(8) << 0, 0, 0, 1, 1, 2, 3, 3).finished();
    loss.triplets_per_anchor = 5;
    const double v = loss.evaluate(random_matrix<double>(8, 3, 4), y, g);
    CHECK(std::isfinite(v));
    CHECK(loss.stats().terms == 7 * 5);
    CHECK(loss.stats().skipped_anchors == 1);
  }
}

TEST_CASE("MarginLoss: float agrees with double and threads do not change a bit") {
  const Index n = 400;  // past 320 rows, where Eigen's threaded GEMM would block differently
  const LabelVector labels = cyclic_labels(n, 7, 9);
  const RowMatrixX<double> emb = random_matrix<double>(n, 16, 21);
  for (bool per_class : {false, true}) {
    INFO("per_class " << per_class);
    MarginLoss<double> ld;
    MarginLoss<float> lf;
    if (per_class) {
      ld.beta = VectorX<double>::LinSpaced(7, 1.0, 1.4);
      lf.beta = ld.beta.cast<float>();
    }
    ld.learn_beta = lf.learn_beta = true;
    ld.nu = 0.1;
    lf.nu = 0.1f;
    RowMatrixX<double> gd(n, 16);
    RowMatrixX<float> gf(n, 16);
    VectorX<double> bd(ld.beta.size());
    VectorX<float> bf(lf.beta.size());
    const double vd = ld.evaluate(emb, labels, Mined{}, gd, bd);
    const RowMatrixX<float> ef = emb.cast<float>();
    const float vf = lf.evaluate(ef, labels, Mined{}, gf, bf);
    CHECK(std::abs(double(vf) - vd) <= 1e-5 * std::abs(vd));
    CHECK(matrix_rel_error(gf, gd) <= 1e-4);
    CHECK(matrix_rel_error(bf, bd) <= 1e-4);
    check_thread_identity<float>([&](RowMatrixX<float>* g) { return lf.evaluate(ef, labels, *g); }, n, 16);
    check_thread_identity<double>([&](RowMatrixX<double>* g) { return ld.evaluate(emb, labels, *g); }, n, 16);
    VectorX<double> b1(ld.beta.size()), b2(ld.beta.size());
    {
      ThreadCountGuard guard(1);
      RowMatrixX<double> g(n, 16);
      ld.evaluate(emb, labels, Mined{}, g, b1);
    }
    {
      ThreadCountGuard guard(2);
      RowMatrixX<double> g(n, 16);
      ld.evaluate(emb, labels, Mined{}, g, b2);
    }
    CHECK(b1 == b2);
  }
}

TEST_CASE("MarginLoss: bad input throws with the numbers") {
  MarginLoss<double> loss;
  const RowMatrixX<double> emb = random_matrix<double>(6, 3, 1);
  const LabelVector labels = cyclic_labels(6, 3);
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, cyclic_labels(5, 2)), std::invalid_argument,
                              "kshot::MarginLoss::evaluate()", "labels has 5 entries", "6 rows");
  RowMatrixX<double> bad = emb;
  bad(4, 0) = std::numeric_limits<double>::infinity();
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(bad, labels), std::invalid_argument, "embeddings", "row 4");
  RowMatrixX<double> g(6, 2);
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels, g), std::invalid_argument, "grad is 6 x 2", "6 x 3");
  RowMatrixX<double> g6(6, 3);
  VectorX<double> gb(2);
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels, Mined{}, g6, gb), std::invalid_argument,
                              "grad_beta has 2 entries but beta has 1");
  MinedPairs pairs;
  pairs.a1 = {0};
  pairs.p = {3};
  pairs.a2 = {0, 1};
  pairs.n = {1, -1};
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels, pairs), std::out_of_range, "n[1] = -1", "6 rows");
  loss.beta = VectorX<double>::Constant(2, 1.2);  // per class, but labels run to 2
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::out_of_range, "labels[2] = 2", "2 classes");
  loss.beta = VectorX<double>(0);
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "beta is empty");
  loss.beta = (VectorX<double>(3) << 1.0, std::nan(""), 1.0).finished();
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "beta[1] is nan");
  loss.beta = VectorX<double>::Constant(1, 1.2);
  loss.nu = std::numeric_limits<double>::infinity();
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "nu is inf");
  loss.nu = 0;
  loss.margin = std::nan("");
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "margin is nan");
  loss.margin = 0.2;
  loss.triplets_per_anchor = -1;
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "triplets_per_anchor is -1");
  loss.triplets_per_anchor = 0;
  loss.distance = LossDistance::cosine(1.5);
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "distance.power is 1.5");
}

}  // namespace test_margin
