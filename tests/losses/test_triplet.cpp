// SPDX-License-Identifier: MIT
#include "losses/loss_checks.hpp"
#include "losses/pml_cases.hpp"

#include <kshot/distances/pairwise.hpp>
#include <kshot/losses/miners/triplet_margin.hpp>
#include <kshot/losses/triplet.hpp>

#include <chrono>

// Everything below lives in a namespace of its own: the loss tests are compiled in unity batches (see
// tests/CMakeLists.txt), where the helpers of different files must not collide.
namespace test_triplet {

using namespace kshot;
using namespace kshot::test;

namespace {

/// The loss a reference case ran, or false when its triplets cannot be reproduced (random triplets drawn
/// by torch's generator).
bool loss_of(const ReferenceCase& c, TripletMarginLoss<double>& loss) {
  loss.margin = param(c, "margin", 0.05);
  loss.swap = param_bool(c, "swap", false);
  loss.smooth_loss = param_bool(c, "smooth_loss", false);
  loss.distance = distance_of(c.json.at("distance"));
  loss.reduction = reduction_of(c.json.at("reducer"));
  const std::string tpa = param_string(c, "triplets_per_anchor", "all");
  loss.triplets_per_anchor = tpa == "all" ? 0 : std::stoll(tpa);
  return loss.triplets_per_anchor == 0 || tuple_of(c).arity != 0;
}

/// Euclidean distances between L2-normalised rows, computed directly.
RowMatrixX<double> normalized_distances(const RowMatrixX<double>& x) {
  const RowMatrixX<double> u = x.rowwise().normalized();
  RowMatrixX<double> d(x.rows(), x.rows());
  for (Index i = 0; i < x.rows(); ++i)
    for (Index j = 0; j < x.rows(); ++j) d(i, j) = (u.row(i) - u.row(j)).norm();
  return d;
}

/// Labels with the given class sizes, interleaved by a seeded shuffle.
LabelVector sized_labels(const std::vector<Index>& sizes, std::uint64_t seed) {
  Index n = 0;
  for (Index s : sizes) n += s;
  LabelVector y(n);
  Index at = 0;
  for (std::size_t c = 0; c < sizes.size(); ++c)
    for (Index k = 0; k < sizes[c]; ++k) y[at++] = static_cast<Label>(c);
  RandomStream rng(seed);
  for (Index i = n - 1; i > 0; --i) std::swap(y[i], y[static_cast<Index>(rng.bounded(std::uint64_t(i + 1)))]);
  return y;
}

/// Central differences on the entries of a few rows only: ||g - ĝ|| / ||g + ĝ|| over those entries.
template <class F>
double partial_fd_error(F&& f, const RowMatrixX<double>& x, const std::vector<Index>& rows, double h = 1e-6) {
  RowMatrixX<double> g(x.rows(), x.cols());
  f(x, &g);
  RowMatrixX<double> probe = x;
  double num = 0, den = 0;
  for (Index i : rows)
    for (Index k = 0; k < x.cols(); ++k) {
      const double keep = probe(i, k);
      probe(i, k) = keep + h;
      const double up = f(probe, nullptr);
      probe(i, k) = keep - h;
      const double down = f(probe, nullptr);
      probe(i, k) = keep;
      const double fd = (up - down) / (2 * h);
      num += (g(i, k) - fd) * (g(i, k) - fd);
      den += (g(i, k) + fd) * (g(i, k) + fd);
    }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

/// A selector that keeps every triplet: evaluate_streaming() with it runs the direct P x N loop of every
/// anchor, never the sorted path.
template <class Scalar>
struct KeepEverything {
  void prepare(ConstRowMatrixRef<Scalar>, ConstLabelRef) {}
  bool keep(Index, Index, Index) const { return true; }
};

/// Streaming over every triplet against the direct loop over the same triplets (and, when `with_list`,
/// against them as an explicit list): values, gradients and counts.
template <class Scalar>
void check_stream(TripletMarginLoss<Scalar>& loss, const RowMatrixX<Scalar>& emb, const LabelVector& labels,
                  double tol, bool with_list) {
  RowMatrixX<Scalar> g1(emb.rows(), emb.cols()), g2(emb.rows(), emb.cols());
  const Scalar v1 = loss.evaluate(emb, labels, g1);
  const LossStats s1 = loss.stats();
  KeepEverything<Scalar> every;
  const Scalar v2 = loss.evaluate_streaming(emb, labels, every, g2);
  const LossStats s2 = loss.stats();
  CHECK(s1.terms == s2.terms);
  CHECK(s1.active_terms == s2.active_terms);
  CHECK(scalar_rel_error(double(v1), double(v2)) <= tol);
  CHECK(matrix_rel_error(g1, g2) <= tol);
  CHECK(loss.evaluate(emb, labels) == v1);
  if (!with_list) return;
  const MinedTriplets list = all_triplets(labels);
  const Scalar v3 = loss.evaluate(emb, labels, list, g2);
  CHECK(s1.terms == list.size());
  CHECK(s1.active_terms == loss.stats().active_terms);
  CHECK(scalar_rel_error(double(v1), double(v3)) <= tol);
  CHECK(matrix_rel_error(g1, g2) <= tol);
}

/// A fused miner for the tests: keeps triplets whose margin under its own (cosine) similarity is below a
/// threshold, plus a deterministic pseudo-random subset of the rest.
struct TestSelector {
  double threshold = 0.3;
  RowMatrixX<double> sim;
  int prepared = 0;
  void prepare(ConstRowMatrixRef<double> emb, ConstLabelRef labels) {
    REQUIRE(labels.size() == emb.rows());
    const RowMatrixX<double> u = emb.rowwise().normalized();
    sim = u * u.transpose();
    ++prepared;
  }
  bool keep(Index a, Index p, Index n) const {
    return sim(a, p) - sim(a, n) < threshold || (a * 7 + p * 13 + n * 31) % 5 == 0;
  }
  MinedTriplets kept(const LabelVector& labels) const {
    MinedTriplets out;
    const MinedTriplets all = all_triplets(labels);
    for (std::size_t k = 0; k < all.a.size(); ++k)
      if (keep(all.a[k], all.p[k], all.n[k])) {
        out.a.push_back(all.a[k]);
        out.p.push_back(all.p[k]);
        out.n.push_back(all.n[k]);
      }
    return out;
  }
};

}  // namespace

TEST_CASE("TripletMarginLoss: pytorch-metric-learning reference cases") {
  const auto cases = pml_cases("TripletMarginLoss");
  REQUIRE(cases.size() >= 2);
  for (const auto& c : cases) {
    INFO("case " << c.json.at("case").get<std::string>());
    TripletMarginLoss<double> loss;
    if (!loss_of(c, loss)) {
      // Random triplets: torch's draw cannot be reproduced, but how many are drawn (k per anchor of every
      // label with a positive and a negative) must equal pytorch-metric-learning's count, and the loss be finite.
      const LabelVector labels = c.labels("labels");
      const double value = loss.evaluate(c.input("embeddings"), labels);
      CHECK(std::isfinite(value));
      const auto& data = c.json.at("outputs").at("sub_losses").at("loss").at("losses").at("data");
      CHECK(loss.stats().terms == Index(data.size()));
      continue;
    }
    const RowMatrixX<double> emb = c.input("embeddings");
    const LabelVector labels = c.labels("labels");
    const CaseTuple tuple = tuple_of(c);
    RowMatrixX<double> grad(emb.rows(), emb.cols());
    const double value = loss.evaluate(emb, labels, tuple.view(), grad);
    CHECK(scalar_rel_error(value, c.loss()) <= reference_tolerance);
    CHECK(matrix_rel_error(grad, c.grad("embeddings")) <= reference_tolerance);
    CHECK(loss.evaluate(emb, labels, tuple.view()) == value);
    // The per-triplet losses pytorch-metric-learning reports: their count and how many are > 0.
    const auto& out = c.json.at("outputs").at("sub_losses").at("loss").at("losses");
    const auto& data = out.at("data");
    Index positive = 0;
    for (const auto& x : data) positive += x.get<double>() > 0 ? 1 : 0;
    CHECK(loss.stats().terms == Index(data.size()));
    CHECK(loss.stats().active_terms == positive);
  }
}

TEST_CASE("TripletMarginLoss: the default case by hand") {
  const ReferenceCase c = load_reference("pml_triplet_default");
  const RowMatrixX<double> emb = c.input("embeddings");
  const LabelVector labels = c.labels("labels");
  const RowMatrixX<double> d = normalized_distances(emb);
  const MinedTriplets all = all_triplets(labels);
  double sum = 0;
  Index active = 0;
  for (std::size_t k = 0; k < all.a.size(); ++k) {
    const double v = d(all.a[k], all.p[k]) - d(all.a[k], all.n[k]) + 0.05;
    if (v > 0) { sum += v; ++active; }
  }
  TripletMarginLoss<double> loss;
  CHECK(loss.evaluate(emb, labels) == doctest::Approx(sum / double(active)).epsilon(1e-12));
  CHECK(loss.stats().terms == 576);
  CHECK(loss.stats().active_terms == active);
  CHECK(loss.stats().skipped_anchors == 0);
  CHECK(sum / double(active) == doctest::Approx(c.loss()).epsilon(1e-12));
}

TEST_CASE("TripletMarginLoss: gradient matches central differences") {
  const LabelVector labels = cyclic_labels(12, 3, 7);
  const RowMatrixX<double> emb = random_matrix<double>(12, 5, 11);
  struct Setting {
    LossDistance distance;
    double margin;
    bool swap, smooth;
    Reduction reduction;
  };
  const std::vector<Setting> settings = {
      {LossDistance::lp(), 0.05, false, false, Reduction::loss_default},
      {LossDistance::lp(), 0.3, false, false, Reduction::mean},
      {LossDistance::lp(), 0.2, true, false, Reduction::loss_default},
      {LossDistance::lp(), 0.1, false, true, Reduction::loss_default},
      {LossDistance::lp(), 0.1, true, true, Reduction::mean},
      {LossDistance::lp(2), 0.2, false, false, Reduction::sum},
      {LossDistance::lp(1, false), 0.5, true, false, Reduction::mean_nonzero},
      {LossDistance::lp(1, true, 1), 0.2, false, false, Reduction::loss_default},
      {LossDistance::lp(1.5, true, 3), 0.1, true, true, Reduction::mean},
      {LossDistance::cosine(), 0.2, false, false, Reduction::loss_default},
      {LossDistance::cosine(), 0.2, true, false, Reduction::loss_default},
      {LossDistance::dot_product(false), 0.5, true, true, Reduction::mean},
      {LossDistance::cosine(2), 0.1, false, true, Reduction::sum},
  };
  // Mined triplets: a few label triplets, one repeated (it counts twice) and one with a == p (allowed in a
  // mined tuple, as in the peer).
  const MinedTriplets all = all_triplets(labels);
  MinedTriplets mined;
  for (std::size_t k : {std::size_t(0), std::size_t(17), std::size_t(40), std::size_t(95), std::size_t(17)}) {
    mined.a.push_back(all.a[k]);
    mined.p.push_back(all.p[k]);
    mined.n.push_back(all.n[k]);
  }
  mined.a.push_back(5);
  mined.p.push_back(5);
  mined.n.push_back(labels[5] == labels[0] ? 1 : 0);
  MinedPairs pairs;
  pairs.a1 = {0, 1, 0, 2};
  pairs.p = {3, 4, 6, 8};
  pairs.a2 = {0, 0, 1, 3};
  pairs.n = {1, 2, 0, 2};
  for (const auto& s : settings) {
    INFO("distance " << s.distance.describe() << " margin " << s.margin << " swap " << s.swap << " smooth "
                     << s.smooth);
    TripletMarginLoss<double> loss;
    loss.distance = s.distance;
    loss.margin = s.margin;
    loss.swap = s.swap;
    loss.smooth_loss = s.smooth;
    loss.reduction = s.reduction;
    auto f = [&](const RowMatrixX<double>& x, RowMatrixX<double>* g) {
      return g != nullptr ? loss.evaluate(x, labels, *g) : loss.evaluate(x, labels);
    };
    CHECK(fd_error(f, emb) < 1e-6);
    const RowMatrixX<double> tight = collapse_classes(emb, labels, 1e-2, 3);
    CHECK(fd_error(f, tight) < 1e-6);
    auto fm = [&](const RowMatrixX<double>& x, RowMatrixX<double>* g) {
      return g != nullptr ? loss.evaluate(x, labels, mined, *g) : loss.evaluate(x, labels, mined);
    };
    CHECK(fd_error(fm, emb) < 1e-6);
    auto fp = [&](const RowMatrixX<double>& x, RowMatrixX<double>* g) {
      return g != nullptr ? loss.evaluate(x, labels, pairs, *g) : loss.evaluate(x, labels, pairs);
    };
    CHECK(fd_error(fp, emb) < 1e-6);
    loss.triplets_per_anchor = 3;
    loss.seed = 5;
    CHECK(fd_error(f, emb) < 1e-6);
  }
}

TEST_CASE("TripletMarginLoss: the sorted path has the direct loop's active set and values and gradient") {
  struct Setting {
    std::vector<Index> sizes;
    LossDistance distance;
    double margin;
    Reduction reduction;
  };
  // Both sides as the sorted one (more positives than negatives and the reverse), distances and
  // similarities, every reduction.
  const std::vector<Setting> settings = {
      {{400, 80}, LossDistance::lp(), 0.05, Reduction::loss_default},
      {{200, 200}, LossDistance::lp(2), 0.3, Reduction::mean},
      {{400, 80}, LossDistance::cosine(), 0.1, Reduction::sum},
      {{80, 300, 40}, LossDistance::dot_product(false), 1.0, Reduction::loss_default},
      {{200, 200}, LossDistance::lp(1, true, 1), 0.2, Reduction::mean_nonzero},
  };
  for (const auto& s : settings) {
    INFO("distance " << s.distance.describe() << " margin " << s.margin);
    const LabelVector labels = sized_labels(s.sizes, 3);
    const RowMatrixX<double> emb = random_matrix<double>(labels.size(), 6, 17);
    TripletMarginLoss<double> loss;
    loss.distance = s.distance;
    loss.margin = s.margin;
    loss.reduction = s.reduction;
    check_stream(loss, emb, labels, 1e-11, false);
    CHECK(loss.stats().active_terms > 0);
    CHECK(loss.stats().active_terms < loss.stats().terms);
  }
  SUBCASE("exact ties: integer points with squared distances and integer margins") {
    // Few distinct points and exact integer distances: many triplets sit exactly on v = 0 (inactive), many
    // share values. The sorted path must count exactly the same triplets as active.
    const LabelVector labels = sized_labels({200, 180}, 9);
    RowMatrixX<double> emb(labels.size(), 3);
    RandomStream rng(4);
    for (Index i = 0; i < emb.size(); ++i) emb.data()[i] = double(rng.bounded(3));
    for (double margin : {0.0, 1.0, 2.0, -1.0}) {
      INFO("margin " << margin);
      TripletMarginLoss<double> loss;
      loss.distance = LossDistance::lp(2, false);
      loss.margin = margin;
      check_stream(loss, emb, labels, 1e-12, false);
      loss.distance = LossDistance::dot_product(false);
      check_stream(loss, emb, labels, 1e-12, false);
    }
  }
  SUBCASE("float") {
    const LabelVector labels = sized_labels({400, 200}, 5);
    const RowMatrixX<float> emb = random_matrix<double>(labels.size(), 8, 2).cast<float>();
    TripletMarginLoss<float> loss;
    loss.margin = 0.2f;
    check_stream(loss, emb, labels, 1e-5, false);
  }
  SUBCASE("central differences on the sorted path") {
    // Integer points, squared distances (or dot products) without normalisation and a half-integer
    // margin: every violation is at least 1/2 away from the hinge, so central differences see a smooth
    // function even with ~5e6 triplets. Probes on a few rows keep it quick.
    const LabelVector labels = sized_labels({140, 140}, 1);
    RowMatrixX<double> emb(labels.size(), 3);
    RandomStream rng(6);
    for (Index i = 0; i < emb.size(); ++i) emb.data()[i] = double(rng.bounded(5));
    for (const LossDistance& dist : {LossDistance::lp(2, false), LossDistance::dot_product(false)}) {
      INFO("distance " << dist.describe());
      TripletMarginLoss<double> loss;
      loss.distance = dist;
      loss.margin = 2.5;
      auto f = [&](const RowMatrixX<double>& x, RowMatrixX<double>* g) {
        return g != nullptr ? loss.evaluate(x, labels, *g) : loss.evaluate(x, labels);
      };
      CHECK(partial_fd_error(f, emb, {0, 1, 77, 140, 279}) < 1e-6);
      CHECK(loss.stats().active_terms > 0);
      CHECK(loss.stats().active_terms < loss.stats().terms);
    }
  }
}

TEST_CASE("TripletMarginLoss: every path against a materialised list") {
  const LabelVector labels = cyclic_labels(40, 4, 3);
  const RowMatrixX<double> emb = random_matrix<double>(40, 6, 5);
  for (bool swap : {false, true})
    for (bool smooth : {false, true})
      for (Reduction r : {Reduction::loss_default, Reduction::mean, Reduction::sum}) {
        INFO("swap " << swap << " smooth " << smooth);
        TripletMarginLoss<double> loss;
        loss.swap = swap;
        loss.smooth_loss = smooth;
        loss.reduction = r;
        loss.margin = 0.3;
        check_stream(loss, emb, labels, 1e-12, true);
        loss.distance = LossDistance::cosine();
        check_stream(loss, emb, labels, 1e-12, true);
      }
}

TEST_CASE("TripletMarginLoss: swap takes the closer negative distance and splits a tie") {
  // Anchor 0 and positive 1 are the same point, so d(a, n) = d(p, n) for every n: the peer's
  // torch.minimum gives each half of the gradient.
  RowMatrixX<double> emb(4, 2);
  emb << 1, 0.2, 1, 0.2, 0.3, 1, -0.5, 0.8;
  const LabelVector labels = (LabelVector(4) << 0, 0, 1, 1).finished();
  MinedTriplets t;
  t.a = {0};
  t.p = {1};
  t.n = {2};
  TripletMarginLoss<double> with, without;
  with.swap = true;
  with.margin = without.margin = 2.0;
  RowMatrixX<double> g1(4, 2), g2(4, 2);
  const double v1 = with.evaluate(emb, labels, t, g1);
  const double v2 = without.evaluate(emb, labels, t, g2);
  CHECK(v1 == v2);
  // Without swap all of -dv/d(an) goes to d(0, 2); with the tie half goes to d(1, 2): same total on row 2.
  CHECK(matrix_rel_error(g1.row(2), g2.row(2)) <= 1e-14);
  CHECK(!(g1.row(1) - g2.row(1)).isZero(1e-12));
  // Away from the tie: move the positive, so that d(p, n) < d(a, n) and the swap picks it.
  emb.row(1) << 0.6, 0.8;
  const RowMatrixX<double> u = emb.rowwise().normalized();
  const double ap = (u.row(0) - u.row(1)).norm(), an = (u.row(0) - u.row(2)).norm(), pn = (u.row(1) - u.row(2)).norm();
  REQUIRE(pn < an);
  CHECK(with.evaluate(emb, labels, t) == doctest::Approx(ap - pn + 2.0).epsilon(1e-12));
  CHECK(without.evaluate(emb, labels, t) == doctest::Approx(ap - an + 2.0).epsilon(1e-12));
  auto f = [&](const RowMatrixX<double>& x, RowMatrixX<double>* g) {
    return g != nullptr ? with.evaluate(x, labels, t, *g) : with.evaluate(x, labels, t);
  };
  CHECK(fd_error(f, emb) < 1e-6);
}

TEST_CASE("TripletMarginLoss: smooth loss is softplus of the violation") {
  const LabelVector labels = cyclic_labels(9, 3);
  const RowMatrixX<double> emb = random_matrix<double>(9, 4, 6);
  const RowMatrixX<double> d = normalized_distances(emb);
  const MinedTriplets all = all_triplets(labels);
  double sum = 0;
  for (std::size_t k = 0; k < all.a.size(); ++k)
    sum += std::log1p(std::exp(d(all.a[k], all.p[k]) - d(all.a[k], all.n[k]) + 0.05));
  TripletMarginLoss<double> loss;
  loss.smooth_loss = true;
  CHECK(loss.evaluate(emb, labels) == doctest::Approx(sum / double(all.size())).epsilon(1e-12));
  CHECK(loss.stats().active_terms == all.size());
}

TEST_CASE("TripletMarginLoss: mined pairs become triplets per anchor") {
  const LabelVector labels = cyclic_labels(10, 3, 5);
  const RowMatrixX<double> emb = random_matrix<double>(10, 4, 2);
  MinedPairs pairs;
  pairs.a1 = {0, 1, 0};
  pairs.p = {3, 4, 6};
  pairs.a2 = {0, 1, 5, 0};
  pairs.n = {1, 0, 6, 2};
  // convert_to_triplets: every positive pair joined with every negative pair of the same anchor.
  MinedTriplets t;
  t.a = {0, 0, 1, 0, 0};
  t.p = {3, 3, 4, 6, 6};
  t.n = {1, 2, 0, 1, 2};
  TripletMarginLoss<double> loss;
  loss.margin = 0.5;
  RowMatrixX<double> g1(10, 4), g2(10, 4);
  CHECK(loss.evaluate(emb, labels, pairs, g1) == loss.evaluate(emb, labels, t, g2));
  CHECK(loss.stats().terms == 5);
  CHECK(g1 == g2);
  // No anchor in common: no triplet, zero loss.
  MinedPairs apart;
  apart.a1 = {0};
  apart.p = {3};
  apart.a2 = {1};
  apart.n = {0};
  CHECK(loss.evaluate(emb, labels, apart, g1) == 0.0);
  CHECK(g1.isZero(0));
}

TEST_CASE("TripletMarginLoss: random triplets per anchor") {
  const LabelVector labels = (LabelVector(11) << 0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 3).finished();  // class 3: one row
  const RowMatrixX<double> emb = random_matrix<double>(11, 5, 3);
  TripletMarginLoss<double> loss;
  loss.triplets_per_anchor = 4;
  loss.seed = 99;
  loss.margin = 0.4;
  RowMatrixX<double> g1(11, 5), g2(11, 5);
  const double v1 = loss.evaluate(emb, labels, g1);
  CHECK(loss.stats().terms == 10 * 4);
  CHECK(loss.stats().skipped_anchors == 1);
  // The same draw as the documented generator, evaluated as a mined list.
  MinedTriplets drawn;
  std::vector<Index> pos, neg;
  CHECK(detail::draw_random_triplets(labels, 4, 99, drawn, pos, neg) == 1);
  CHECK(drawn.size() == 40);
  for (std::size_t k = 0; k < drawn.a.size(); ++k) {
    CHECK(drawn.a[k] != drawn.p[k]);
    CHECK(labels[drawn.a[k]] == labels[drawn.p[k]]);
    CHECK(labels[drawn.a[k]] != labels[drawn.n[k]]);
  }
  const double v2 = loss.evaluate(emb, labels, drawn, g2);
  CHECK(v1 == v2);
  CHECK(g1 == g2);
  // Deterministic for a seed, different for another.
  CHECK(loss.evaluate(emb, labels) == v1);
  loss.seed = 100;
  CHECK(loss.evaluate(emb, labels) != v1);
  // The draw is uniform: over many anchors every positive and negative of anchor 0 shows up.
  MinedTriplets many;
  detail::draw_random_triplets(labels, 400, 7, many, pos, neg);
  std::vector<int> seen(11, 0);
  for (std::size_t k = 0; k < many.a.size(); ++k)
    if (many.a[k] == 0) { ++seen[std::size_t(many.p[k])]; ++seen[std::size_t(many.n[k])]; }
  for (Index j = 1; j < 11; ++j) CHECK(seen[std::size_t(j)] > 0);
  CHECK(seen[0] == 0);
  ThreadCountGuard guard(2);
  CHECK(loss.evaluate(emb, labels) == loss.evaluate(emb, labels));
}

TEST_CASE("TripletMarginLoss: streaming over a fused selector equals its materialised list") {
  const LabelVector labels = cyclic_labels(30, 4, 2);
  const RowMatrixX<double> emb = random_matrix<double>(30, 5, 8);
  for (bool swap : {false, true})
    for (bool smooth : {false, true})
      for (Reduction r : {Reduction::loss_default, Reduction::mean, Reduction::sum}) {
        INFO("swap " << swap << " smooth " << smooth);
        TripletMarginLoss<double> loss;
        loss.swap = swap;
        loss.smooth_loss = smooth;
        loss.reduction = r;
        loss.margin = 0.2;
        TestSelector sel;
        RowMatrixX<double> g1(30, 5), g2(30, 5);
        const double v1 = loss.evaluate_streaming(emb, labels, sel, g1);
        const LossStats s1 = loss.stats();
        CHECK(sel.prepared == 1);
        const MinedTriplets kept = sel.kept(labels);
        REQUIRE(kept.size() > 0);
        REQUIRE(kept.size() < all_triplets(labels).size());
        const double v2 = loss.evaluate(emb, labels, kept, g2);
        CHECK(scalar_rel_error(v1, v2) <= 1e-12);
        CHECK(matrix_rel_error(g1, g2) <= 1e-12);
        CHECK(s1.terms == kept.size());
        CHECK(s1.active_terms == loss.stats().active_terms);
        CHECK(loss.evaluate_streaming(emb, labels, sel) == v1);
        CHECK(sel.prepared == 2);
        auto f = [&](const RowMatrixX<double>& x, RowMatrixX<double>* g) {
          return g != nullptr ? loss.evaluate_streaming(x, labels, sel, *g) : loss.evaluate_streaming(x, labels, sel);
        };
        CHECK(fd_error(f, emb) < 1e-6);
      }
  SUBCASE("a selector that keeps nothing") {
    struct None {
      void prepare(ConstRowMatrixRef<float>, ConstLabelRef) {}
      bool keep(Index, Index, Index) const { return false; }
    } none;
    TripletMarginLoss<float> loss;
    RowMatrixX<float> g(30, 5);
    CHECK(loss.evaluate_streaming(emb.cast<float>(), labels, none, g) == 0.0f);
    CHECK(g.isZero(0));
    CHECK(loss.stats().terms == 0);
  }
}

TEST_CASE("TripletMarginLoss: streaming over TripletMarginMiner equals the mined list") {
  const LabelVector labels = cyclic_labels(48, 4, 6);
  const RowMatrixX<double> emb = random_matrix<double>(48, 5, 13);
  for (TripletType type : {TripletType::all, TripletType::hard, TripletType::semihard, TripletType::easy})
    for (bool swap : {false, true}) {
      INFO("type " << to_string(type) << " swap " << swap);
      TripletMarginMiner<double> miner(0.3, type);
      miner.distance = LossDistance::cosine();  // the miner's own distance, unlike the loss's
      TripletMarginLoss<double> loss;
      loss.margin = 0.2;
      loss.swap = swap;
      const MinedTriplets mined = miner.mine(emb, labels);
      REQUIRE(mined.size() > 0);
      RowMatrixX<double> g1(48, 5), g2(48, 5);
      const double v1 = loss.evaluate_streaming(emb, labels, miner, g1);
      const Index terms = loss.stats().terms;
      const double v2 = loss.evaluate(emb, labels, mined, g2);
      CHECK(terms == mined.size());
      CHECK(scalar_rel_error(v1, v2) <= 1e-12);
      CHECK(matrix_rel_error(g1, g2) <= 1e-12);
    }
}

TEST_CASE("TripletMarginLoss: a batch of 4096 with 1.3e10 triplets streams in seconds") {
  const LabelVector labels = sized_labels({1024, 1024, 1024, 1024}, 12);
  const RowMatrixX<float> emb = random_matrix<double>(4096, 16, 31).cast<float>();
  TripletMarginLoss<float> loss;
  loss.margin = 0.2f;
  RowMatrixX<float> g(4096, 16);
  const auto start = std::chrono::steady_clock::now();
  const float v = loss.evaluate(emb, labels, g);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  MESSAGE("4096 x 16, 4 classes: " << loss.stats().terms << " triplets, value and gradient in " << seconds << " s");
  CHECK(loss.stats().terms == Index(4096) * 1023 * 3072);
  CHECK(loss.stats().active_terms > 0);
  CHECK(loss.stats().active_terms < loss.stats().terms);
  CHECK(std::isfinite(v));
  CHECK(v > 0.0f);
  CHECK(g.allFinite());
  CHECK(seconds < 30.0);
}

TEST_CASE("TripletMarginLoss: degenerate batches stay finite") {
  const LabelVector labels = cyclic_labels(8, 2);
  TripletMarginLoss<double> loss;
  RowMatrixX<double> g(8, 3);
  SUBCASE("all rows zero") {
    const RowMatrixX<double> zero = RowMatrixX<double>::Zero(8, 3);
    const double v = loss.evaluate(zero, labels, g);
    CHECK(v == doctest::Approx(0.05));  // every distance is 0: v = margin for every triplet
    CHECK(g.allFinite());
    CHECK(loss.stats().degenerate == 8);
    CHECK(loss.stats().active_terms == 8 * 3 * 4);
  }
  SUBCASE("identical rows with swap and smooth") {
    RowMatrixX<double> same(8, 3);
    same.rowwise() = RowVectorX<double>::LinSpaced(3, 1.0, 3.0);
    loss.swap = true;
    loss.smooth_loss = true;
    const double v = loss.evaluate(same, labels, g);
    CHECK(v == doctest::Approx(std::log1p(std::exp(0.05))));
    CHECK(g.allFinite());
  }
  SUBCASE("one class only: no negatives") {
    const double v = loss.evaluate(random_matrix<double>(8, 3, 4), LabelVector::Zero(8), g);
    CHECK(v == 0.0);
    CHECK(g.isZero(0));
    CHECK(loss.stats().terms == 0);
    CHECK(loss.stats().skipped_anchors == 8);
  }
  SUBCASE("every label distinct: no positives") {
    const LabelVector distinct = cyclic_labels(8, 8);
    CHECK(loss.evaluate(random_matrix<double>(8, 3, 4), distinct, g) == 0.0);
    CHECK(loss.stats().skipped_anchors == 8);
    loss.triplets_per_anchor = 2;
    CHECK(loss.evaluate(random_matrix<double>(8, 3, 4), distinct, g) == 0.0);
    CHECK(loss.stats().skipped_anchors == 8);
  }
  SUBCASE("a single row") {
    RowMatrixX<double> g1(1, 3);
    CHECK(loss.evaluate(random_matrix<double>(1, 3, 1), LabelVector::Zero(1), g1) == 0.0);
    CHECK(g1.isZero(0));
  }
  SUBCASE("huge violations under smooth loss") {
    loss.smooth_loss = true;
    loss.margin = 1e6;
    const double v = loss.evaluate(random_matrix<double>(8, 3, 2), labels, g);
    CHECK(std::isfinite(v));
    CHECK(g.allFinite());
    loss.margin = -1e6;  // softplus underflows to 0: no element > 0
    CHECK(loss.evaluate(random_matrix<double>(8, 3, 2), labels, g) == 0.0);
    CHECK(g.isZero(0));
  }
}

TEST_CASE("TripletMarginLoss: float agrees with double and threads do not change a bit") {
  struct Setting {
    std::vector<Index> sizes;
    bool swap, smooth;
  };
  // Direct path, sorted path (past 320 rows, where Eigen's threaded GEMM would block differently), swap,
  // smooth.
  const std::vector<Setting> settings = {
      {{15, 15, 15, 15, 15, 15, 15, 15, 15, 15}, false, false},
      {{250, 150}, false, false},
      {{40, 40, 40, 40}, true, false},
      {{40, 40, 40, 40}, false, true},
  };
  for (const auto& s : settings) {
    INFO("swap " << s.swap << " smooth " << s.smooth);
    const LabelVector labels = sized_labels(s.sizes, 9);
    const Index n = labels.size();
    const RowMatrixX<double> emb = random_matrix<double>(n, 16, 21);
    TripletMarginLoss<double> ld;
    TripletMarginLoss<float> lf;
    ld.margin = 0.3;
    lf.margin = 0.3f;
    ld.swap = lf.swap = s.swap;
    ld.smooth_loss = lf.smooth_loss = s.smooth;
    RowMatrixX<double> gd(n, 16);
    RowMatrixX<float> gf(n, 16);
    const double vd = ld.evaluate(emb, labels, gd);
    const RowMatrixX<float> ef = emb.cast<float>();
    const float vf = lf.evaluate(ef, labels, gf);
    CHECK(std::abs(double(vf) - vd) <= 1e-5 * std::abs(vd));
    CHECK(matrix_rel_error(gf, gd) <= 1e-4);
    check_thread_identity<float>([&](RowMatrixX<float>* g) { return lf.evaluate(ef, labels, *g); }, n, 16);
    check_thread_identity<double>([&](RowMatrixX<double>* g) { return ld.evaluate(emb, labels, *g); }, n, 16);
    TestSelector sel;
    check_thread_identity<double>([&](RowMatrixX<double>* g) { return ld.evaluate_streaming(emb, labels, sel, *g); },
                                  n, 16);
  }
}

TEST_CASE("TripletMarginLoss: bad input throws with the numbers") {
  TripletMarginLoss<double> loss;
  const RowMatrixX<double> emb = random_matrix<double>(6, 3, 1);
  const LabelVector labels = cyclic_labels(6, 2);
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, cyclic_labels(5, 2)), std::invalid_argument,
                              "kshot::TripletMarginLoss::evaluate()", "labels has 5 entries", "6 rows");
  RowMatrixX<double> bad = emb;
  bad(2, 1) = std::nan("");
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(bad, labels), std::invalid_argument, "embeddings", "row 2");
  RowMatrixX<double> g(5, 3);
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels, g), std::invalid_argument, "grad is 5 x 3", "6 x 3");
  MinedTriplets t;
  t.a = {0, 1};
  t.p = {2, 3};
  t.n = {1, 6};
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels, t), std::out_of_range, "n[1] = 6", "6 rows");
  t.n = {1};
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels, t), std::invalid_argument, "2, 2 and 1 entries");
  loss.margin = std::numeric_limits<double>::infinity();
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "margin is inf");
  loss.margin = 0.05;
  loss.triplets_per_anchor = -2;
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "triplets_per_anchor is -2");
  loss.triplets_per_anchor = 0;
  loss.distance.power = 0;
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(emb, labels), std::invalid_argument, "distance.power is 0");
  loss.distance.power = 1;
  TestSelector sel;
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate_streaming(bad, labels, sel), std::invalid_argument,
                              "kshot::TripletMarginLoss::evaluate_streaming()", "row 2");
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate_streaming(emb, labels, sel, g), std::invalid_argument,
                              "evaluate_streaming()", "grad is 5 x 3");
  CHECK(sel.prepared == 0);
}

TEST_CASE("TripletMarginLoss: a short mined list takes the sparse path and matches the definition") {
  // 64 rows and one triplet per anchor: 3 * 64 * 8 < 64^2, so the distances of the list are computed
  // directly instead of through the n x n matrix.
  const Index n = 64;
  const LabelVector labels = cyclic_labels(n, 16, 3);
  const RowMatrixX<double> emb = random_matrix<double>(n, 6, 17);
  MinedTriplets list;
  for (Index a = 0; a < n; ++a) {
    Index p = -1, q = -1;
    for (Index j = 0; j < n && (p < 0 || q < 0); ++j) {
      if (j == a) continue;
      if (labels[j] == labels[a] && p < 0) p = j;
      if (labels[j] != labels[a] && q < 0) q = (j * 7 + a) % n;
    }
    if (labels[q] == labels[a]) q = (q + 1) % n;
    if (labels[q] == labels[a]) continue;
    list.a.push_back(a);
    list.p.push_back(p);
    list.n.push_back(q);
  }
  REQUIRE(list.size() > 32);
  struct Setting {
    LossDistance distance;
    bool swap, smooth;
    double margin;
  };
  const std::vector<Setting> settings = {
      {LossDistance::lp(), false, false, 0.3},  {LossDistance::lp(), true, false, 0.3},
      {LossDistance::lp(), false, true, 0.1},   {LossDistance::cosine(), false, false, 0.2},
      {LossDistance::cosine(), true, true, 0.2}, {LossDistance::lp(2), false, false, 0.5},
      {LossDistance::lp(1, true, 1), false, false, 0.4}, {LossDistance::dot_product(false), false, false, 1.0},
  };
  for (const auto& st : settings) {
    INFO(st.distance.describe() << " swap " << st.swap << " smooth " << st.smooth);
    TripletMarginLoss<double> loss;
    loss.distance = st.distance;
    loss.swap = st.swap;
    loss.smooth_loss = st.smooth;
    loss.margin = st.margin;
    // The definition, with PML's distances on normalised rows.
    auto dist = [&](const RowMatrixX<double>& x, Index i, Index j) {
      RowVectorX<double> u = x.row(i), v = x.row(j);
      if (st.distance.normalizes()) {
        const double pu = st.distance.p == 1 ? u.cwiseAbs().sum() : u.norm();
        const double pv = st.distance.p == 1 ? v.cwiseAbs().sum() : v.norm();
        u /= pu;
        v /= pv;
      }
      const double base = st.distance.is_inverted() ? u.dot(v)
                          : st.distance.p == 1     ? (u - v).cwiseAbs().sum()
                                                   : (u - v).norm();
      return std::pow(base, st.distance.power);
    };
    const bool inv = st.distance.is_inverted();
    double sum = 0;
    Index active = 0;
    for (Index k = 0; k < list.size(); ++k) {
      const auto uk = static_cast<std::size_t>(k);
      const double ap = dist(emb, list.a[uk], list.p[uk]);
      double an = dist(emb, list.a[uk], list.n[uk]);
      if (st.swap) {
        const double pn = dist(emb, list.p[uk], list.n[uk]);
        an = inv ? std::max(an, pn) : std::min(an, pn);
      }
      const double v = (inv ? an - ap : ap - an) + st.margin;
      const double l = st.smooth ? (v > 20 ? v : std::log1p(std::exp(v))) : std::max(v, 0.0);
      if (l > 0) { sum += l; ++active; }
    }
    const double expected = active > 0 ? sum / double(active) : 0.0;
    RowMatrixX<double> g(n, 6);
    CHECK(loss.evaluate(emb, labels, list, g) == doctest::Approx(expected).epsilon(1e-12));
    CHECK(loss.evaluate(emb, labels, list) == doctest::Approx(expected).epsilon(1e-12));
    auto f = [&](const RowMatrixX<double>& x, RowMatrixX<double>* gg) {
      return gg != nullptr ? loss.evaluate(x, labels, list, *gg) : loss.evaluate(x, labels, list);
    };
    CHECK(fd_error(f, emb) < 1e-6);
  }
}

}  // namespace test_triplet

TEST_CASE("TripletMarginLoss: rows whose distances could overflow are refused like pairwise_distances (issue 17)") {
  using kshot::LabelVector;
  using kshot::RowMatrixX;
  RowMatrixX<float> emb(4, 2);
  emb << 1, 0, 0.8f, 0.6f, -1, 0, 0, -1;
  const LabelVector labels = (LabelVector(4) << 0, 0, 1, 1).finished();
  kshot::TripletMarginLoss<float> loss;  // L2-normalised Euclidean: invariant to the scale of the rows
  RowMatrixX<float> grad(4, 2), grad_scaled(4, 2);
  const float reference = loss.evaluate(emb, labels, grad);
  // Just inside the bound (squared norm <= max / 4) the loss and its gradient are the scale-free ones.
  const float inside = 0.99f * std::sqrt(std::numeric_limits<float>::max() / 4);
  const RowMatrixX<float> large = emb * inside;
  CHECK(loss.evaluate(large, labels, grad_scaled) == doctest::Approx(reference).epsilon(1e-5));
  CHECK(grad_scaled.allFinite());
  CHECK((grad_scaled * inside - grad).cwiseAbs().maxCoeff() < 1e-4f);
  // Beyond it the norms overflowed: the rows became zero and the loss a wrong finite 0.05 (or, without
  // normalisation, a NaN gradient). pairwise_distances() rejects the same rows.
  const RowMatrixX<float> huge = emb * 1e20f;
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(huge, labels, grad_scaled), std::invalid_argument,
                              "kshot::TripletMarginLoss::evaluate()", "embeddings row 0 is finite but its squared norm",
                              "rescale the data");
  CHECK_THROWS_AS(kshot::pairwise_distances(huge, huge), std::invalid_argument);
  loss.distance = kshot::LossDistance::lp(1, false);
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(huge, labels, grad_scaled), std::invalid_argument,
                              "embeddings row 0 is finite");
}
