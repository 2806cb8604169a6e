// SPDX-License-Identifier: MIT
// Pairwise metric matrices and their backward passes: against naive loops, central finite differences,
// degenerate inputs, bad input, thread-count determinism and zero-copy binding.
#include <kshot/distances.hpp>

#include "test_util.hpp"

#include <array>
#include <tuple>

using namespace kshot;
using kshot::test::random_matrix;

namespace {

// Naive reference in double: out(i, j) = distance(a_i, b_j).
template <class Metric, class Scalar>
RowMatrixX<double> naive(const RowMatrixX<Scalar>& a, const RowMatrixX<Scalar>& b) {
  const RowMatrixX<double> ad = a.template cast<double>(), bd = b.template cast<double>();
  RowMatrixX<double> out(a.rows(), b.rows());
  for (Index i = 0; i < a.rows(); ++i)
    for (Index j = 0; j < b.rows(); ++j) out(i, j) = distance<Metric>(ad.row(i), bd.row(j));
  return out;
}

// Tolerance for comparing a kernel against the naive double reference: the norm trick loses about
// eps * (|a|^2 + |b|^2) to cancellation, which is what torch.cdist and FAISS lose too.
template <class Metric, class Scalar>
void check_against_naive(const RowMatrixX<Scalar>& a, const RowMatrixX<Scalar>& b, const RowMatrixX<Scalar>& got) {
  const RowMatrixX<double> want = naive<Metric>(a, b);
  const double eps = std::is_same_v<Scalar, float> ? 1e-6 : 1e-14;
  double worst = 0;
  for (Index i = 0; i < a.rows(); ++i)
    for (Index j = 0; j < b.rows(); ++j) {
      const double scale = 1.0 + a.row(i).template cast<double>().squaredNorm() + b.row(j).template cast<double>().squaredNorm();
      // Euclidean near zero amplifies the cancellation through sqrt.
      const double tol = std::is_same_v<Metric, Euclidean> ? 8 * std::sqrt(eps * scale) : 16 * eps * scale;
      worst = std::max(worst, std::abs(static_cast<double>(got(i, j)) - want(i, j)) / tol);
    }
  CHECK(worst <= 1.0);
}

using AllMetrics = std::tuple<SquaredEuclidean, Euclidean, CosineSimilarity, CosineDistance, InnerProduct, Manhattan>;

template <class Scalar, class Metric>
void run_forward_cases() {
  // Shapes cross the tile boundaries (256 rows, 512 columns) and the L1 panels.
  const std::tuple<Index, Index, Index> shapes[] = {{1, 1, 1}, {3, 5, 1}, {7, 4, 3}, {300, 530, 9}, {75, 5, 64}};
  std::uint64_t seed = 11;
  for (const auto& shape : shapes) {
    // Plain variables, not structured bindings: CAPTURE's lambda cannot capture a binding before C++20.
    const Index n = std::get<0>(shape), m = std::get<1>(shape), d = std::get<2>(shape);
    CAPTURE(n);
    CAPTURE(m);
    CAPTURE(d);
    const RowMatrixX<Scalar> a = random_matrix<Scalar>(n, d, seed++), b = random_matrix<Scalar>(m, d, seed++);
    RowMatrixX<Scalar> out(n, m);
    PairwiseDistance<Scalar, Metric> engine;
    engine.compute(a, b, out);
    check_against_naive<Metric>(a, b, out);
    // Self form: symmetric, exact diagonal, and equal to the naive values elsewhere.
    RowMatrixX<Scalar> self(n, n);
    engine.compute_self(a, self);
    check_against_naive<Metric>(a, a, self);
    CHECK((self - self.transpose()).cwiseAbs().maxCoeff() == Scalar(0));
    for (Index i = 0; i < n; ++i) {
      if constexpr (std::is_same_v<Metric, CosineSimilarity>) {
        CHECK(self(i, i) == Scalar(1));
      } else if constexpr (!std::is_same_v<Metric, InnerProduct>) {
        CHECK(self(i, i) == Scalar(0));
      }
    }
  }
}

}  // namespace

TEST_CASE_TEMPLATE("distances.pairwise: every metric matches a naive loop in cross and self form", Scalar, float, double) {
  run_forward_cases<Scalar, SquaredEuclidean>();
  run_forward_cases<Scalar, Euclidean>();
  run_forward_cases<Scalar, CosineSimilarity>();
  run_forward_cases<Scalar, CosineDistance>();
  run_forward_cases<Scalar, InnerProduct>();
  run_forward_cases<Scalar, Manhattan>();
}

TEST_CASE("distances.pairwise: hand-computed values") {
  RowMatrixX<double> a(2, 2), b(2, 2);
  a << 0, 0, 3, 4;
  b << 1, 0, 0, -2;
  const auto sq = pairwise_distances(a, b);
  CHECK(sq(0, 0) == 1.0);
  CHECK(sq(0, 1) == 4.0);
  CHECK(sq(1, 0) == 20.0);
  CHECK(sq(1, 1) == 45.0);
  const auto eu = pairwise_distances(a, b, Euclidean{});
  CHECK(eu(1, 1) == doctest::Approx(std::sqrt(45.0)).epsilon(1e-15));
  const auto cs = pairwise_distances(a, b, CosineSimilarity{});
  CHECK(cs(0, 0) == 0.0);  // zero vector: similarity 0
  CHECK(cs(1, 0) == doctest::Approx(0.6).epsilon(1e-15));
  CHECK(cs(1, 1) == doctest::Approx(-0.8).epsilon(1e-15));
  const auto cd = pairwise_distances(a, b, CosineDistance{});
  CHECK(cd(0, 1) == 1.0);
  CHECK(cd(1, 1) == doctest::Approx(1.8).epsilon(1e-15));
  const auto ip = pairwise_distances(a, b, InnerProduct{});
  CHECK(ip(1, 0) == 3.0);
  CHECK(ip(1, 1) == -8.0);
  const auto l1 = pairwise_distances(a, b, Manhattan{});
  CHECK(l1(1, 0) == 6.0);
  CHECK(l1(1, 1) == 9.0);
}

namespace {

// Central differences of L = sum(W .* D(A, B)) with respect to A and B, against backward().
template <class Metric>
void check_cross_gradient(const RowMatrixX<double>& a, const RowMatrixX<double>& b, double tol = 1e-7, double h = 1e-6) {
  const RowMatrixX<double> w = random_matrix<double>(a.rows(), b.rows(), 99);
  PairwiseDistance<double, Metric> engine;
  RowMatrixX<double> dist(a.rows(), b.rows()), ga(a.rows(), a.cols()), gb(b.rows(), b.cols());
  engine.compute(a, b, dist);
  engine.backward(a, b, dist, w, ga, gb);
    // The reference loss uses the direct formula, not the norm trick, whose rounding noise would swamp
  // the finite differences near zero distance.
  auto loss_a = [&](const RowMatrixX<double>& x) { return (w.array() * naive<Metric>(x, b).array()).sum(); };
  auto loss_b = [&](const RowMatrixX<double>& y) { return (w.array() * naive<Metric>(a, y).array()).sum(); };
  const double ea = kshot::test::gradient_rel_error(ga, kshot::test::numeric_gradient(loss_a, a, h));
  const double eb = kshot::test::gradient_rel_error(gb, kshot::test::numeric_gradient(loss_b, b, h));
  INFO(std::string(Metric::name));
  CHECK(ea < tol);
  CHECK(eb < tol);
}

template <class Metric>
void check_self_gradient(const RowMatrixX<double>& a, double tol = 1e-7, double h = 1e-6) {
  const RowMatrixX<double> w = random_matrix<double>(a.rows(), a.rows(), 77);
  PairwiseDistance<double, Metric> engine;
  RowMatrixX<double> dist(a.rows(), a.rows()), ga(a.rows(), a.cols());
  engine.compute_self(a, dist);
  engine.backward_self(a, dist, w, ga);
  auto loss = [&](const RowMatrixX<double>& x) {
    RowMatrixX<double> d = naive<Metric>(x, x);
    if constexpr (std::is_same_v<Metric, CosineSimilarity> || std::is_same_v<Metric, CosineDistance>)
      for (Index i = 0; i < x.rows(); ++i) d(i, i) = self_distances(x.row(i), Metric{})(0, 0);
    return (w.array() * d.array()).sum();
  };
  INFO(std::string(Metric::name));
  CHECK(kshot::test::gradient_rel_error(ga, kshot::test::numeric_gradient(loss, a, h)) < tol);
}

}  // namespace

TEST_CASE("distances.pairwise: backward matches central differences at random points") {
  // 7 x 5 against 6 x 5: small enough for finite differences, large enough to mix every term.
  const RowMatrixX<double> a = random_matrix<double>(7, 5, 1), b = random_matrix<double>(6, 5, 2);
  check_cross_gradient<SquaredEuclidean>(a, b);
  check_cross_gradient<Euclidean>(a, b);
  check_cross_gradient<CosineSimilarity>(a, b);
  check_cross_gradient<CosineDistance>(a, b);
  check_cross_gradient<InnerProduct>(a, b);
  check_cross_gradient<Manhattan>(a, b);
  check_self_gradient<SquaredEuclidean>(a);
  check_self_gradient<Euclidean>(a);
  check_self_gradient<CosineSimilarity>(a);
  check_self_gradient<CosineDistance>(a);
  check_self_gradient<InnerProduct>(a);
  check_self_gradient<Manhattan>(a);
}

TEST_CASE("distances.pairwise: backward across tile boundaries matches central differences") {
  // 260 rows cross the 256-row panels; d = 2 keeps finite differences cheap.
  const RowMatrixX<double> a = random_matrix<double>(260, 2, 5), b = random_matrix<double>(3, 2, 6);
  check_cross_gradient<SquaredEuclidean>(a, b);
  check_cross_gradient<CosineSimilarity>(a, b);
  check_cross_gradient<Euclidean>(b, a);
}

TEST_CASE("distances.pairwise: backward near degenerate points") {
  SUBCASE("nearly identical rows (tiny but non-zero distances)") {
    RowMatrixX<double> a = random_matrix<double>(4, 3, 8);
    a.row(1) = a.row(0) + RowVectorX<double>::Constant(3, 1e-3);
    check_cross_gradient<SquaredEuclidean>(a, a.topRows(2));
    // Distances of 1e-3: the third derivative grows like 1/d^2, so a smaller step keeps the central
    // difference's truncation error below the tolerance.
    check_cross_gradient<Euclidean>(a, a.bottomRows(3) * 1.0001, 1e-7, 1e-8);
    check_self_gradient<SquaredEuclidean>(a);
    check_self_gradient<Euclidean>(a, 1e-7, 1e-8);
    check_self_gradient<CosineDistance>(a);
  }
  SUBCASE("Euclidean at exactly zero distance: that pair contributes nothing, the rest is exact") {
    RowMatrixX<double> a = random_matrix<double>(3, 4, 9);
    RowMatrixX<double> b = random_matrix<double>(2, 4, 10);
    b.row(0) = a.row(1);  // d(a_1, b_0) = 0
    PairwiseDistance<double, Euclidean> engine;
    RowMatrixX<double> dist(3, 2), ga(3, 4), gb(2, 4);
    engine.compute(a, b, dist);
    CHECK(dist(1, 0) == 0.0);
    RowMatrixX<double> w = random_matrix<double>(3, 2, 11);
    engine.backward(a, b, dist, w, ga, gb);
    CHECK(ga.allFinite());
    CHECK(gb.allFinite());
    // Same gradients as with that pair's weight removed (its subgradient is taken as 0).
    RowMatrixX<double> w0 = w;
    w0(1, 0) = 0;
    RowMatrixX<double> ga0(3, 4), gb0(2, 4);
    engine.backward(a, b, dist, w0, ga0, gb0);
    CHECK(ga == ga0);
    CHECK(gb == gb0);
    // And the other pairs' gradients are right: finite differences of the loss without that pair.
    auto loss_a = [&](const RowMatrixX<double>& x) { return (w0.array() * pairwise_distances(x, b, Euclidean{}).array()).sum(); };
    CHECK(kshot::test::gradient_rel_error(ga, kshot::test::numeric_gradient(loss_a, a)) < 1e-7);
  }
  SUBCASE("cosine with a zero row: finite values, zero gradient for the zero row, exact elsewhere") {
    RowMatrixX<double> a = random_matrix<double>(3, 4, 12);
    a.row(2).setZero();
    const RowMatrixX<double> b = random_matrix<double>(2, 4, 13);
    PairwiseDistance<double, CosineSimilarity> engine;
    RowMatrixX<double> dist(3, 2), ga(3, 4), gb(2, 4);
    engine.compute(a, b, dist);
    CHECK(dist.row(2).isZero(0));
    const RowMatrixX<double> w = random_matrix<double>(3, 2, 14);
    engine.backward(a, b, dist, w, ga, gb);
    CHECK(ga.row(2).isZero(0));
    auto loss_b = [&](const RowMatrixX<double>& y) { return (w.array() * pairwise_distances(a, y, CosineSimilarity{}).array()).sum(); };
    CHECK(kshot::test::gradient_rel_error(gb, kshot::test::numeric_gradient(loss_b, b)) < 1e-7);
    RowMatrixX<double> self(3, 3);
    engine.compute_self(a, self);
    CHECK(self(2, 2) == 0.0);
    CHECK(self(0, 0) == 1.0);
  }
}

TEST_CASE_TEMPLATE("distances.pairwise: degenerate inputs give finite documented values", Scalar, float, double) {
  SUBCASE("identical rows") {
    RowMatrixX<Scalar> a = RowMatrixX<Scalar>::Constant(5, 3, Scalar(0.7));
    CHECK(self_distances(a, SquaredEuclidean{}).isZero(0));
    CHECK(self_distances(a, Euclidean{}).isZero(0));
    CHECK(pairwise_distances(a, a, SquaredEuclidean{}).isZero(0));  // clamped at zero, never negative
    CHECK(pairwise_distances(a, a, Euclidean{}).allFinite());
    const auto cs = pairwise_distances(a, a, CosineSimilarity{});
    CHECK(cs.maxCoeff() <= Scalar(1));
    CHECK(cs.minCoeff() >= Scalar(1) - Scalar(1e-6));
  }
  SUBCASE("all-zero inputs") {
    const RowMatrixX<Scalar> z = RowMatrixX<Scalar>::Zero(4, 6);
    CHECK(pairwise_distances(z, z, CosineSimilarity{}).isZero(0));
    CHECK((pairwise_distances(z, z, CosineDistance{}).array() == Scalar(1)).all());
    CHECK(self_distances(z, CosineDistance{}).isOnes(0));
    RowMatrixX<Scalar> ga(4, 6), gb(4, 6);
    const RowMatrixX<Scalar> dist = pairwise_distances(z, z, CosineDistance{});
    pairwise_backward(z, z, dist, RowMatrixX<Scalar>::Ones(4, 4), ga, gb, CosineDistance{});
    CHECK(ga.isZero(0));
    CHECK(gb.isZero(0));
    const RowMatrixX<Scalar> de = pairwise_distances(z, z, Euclidean{});
    pairwise_backward(z, z, de, RowMatrixX<Scalar>::Ones(4, 4), ga, gb, Euclidean{});
    CHECK(ga.isZero(0));
  }
  SUBCASE("one row, d = 1") {
    RowMatrixX<Scalar> a(1, 1), b(1, 1);
    a << Scalar(2);
    b << Scalar(-1);
    CHECK(pairwise_distances(a, b)(0, 0) == Scalar(9));
    CHECK(pairwise_distances(a, b, Manhattan{})(0, 0) == Scalar(3));
    CHECK(pairwise_distances(a, b, CosineSimilarity{})(0, 0) == Scalar(-1));
    CHECK(self_distances(a)(0, 0) == Scalar(0));
  }
  SUBCASE("empty sets") {
    const RowMatrixX<Scalar> a(0, 3), b = random_matrix<Scalar>(2, 3, 1);
    CHECK(pairwise_distances(a, b).rows() == 0);
    CHECK(pairwise_distances(b, a).cols() == 0);
  }
}

TEST_CASE("distances.pairwise: bad input throws naming the function and the argument and the numbers") {
  const RowMatrixX<float> a = random_matrix<float>(4, 3, 1), b = random_matrix<float>(5, 2, 2);
  PairwiseDistance<float> engine;
  RowMatrixX<float> out(4, 5);
  KSHOT_CHECK_THROWS_WITH_ALL(engine.compute(a, b, out), std::invalid_argument,
                              "kshot::PairwiseDistance::compute()", "a has 3 columns but b has 2");
  const RowMatrixX<float> b3 = random_matrix<float>(5, 3, 3);
  RowMatrixX<float> wrong(4, 4);
  KSHOT_CHECK_THROWS_WITH_ALL(engine.compute(a, b3, wrong), std::invalid_argument, "out is 4 x 4 but must be 4 x 5");
  RowMatrixX<float> nan_a = a;
  nan_a(2, 1) = std::numeric_limits<float>::quiet_NaN();
  KSHOT_CHECK_THROWS_WITH_ALL(engine.compute(nan_a, b3, out), std::invalid_argument, "a has a non-finite value",
                              "row 2, column 1");
  RowMatrixX<float> inf_b = b3;
  inf_b(4, 0) = std::numeric_limits<float>::infinity();
  KSHOT_CHECK_THROWS_WITH_ALL(engine.compute(a, inf_b, out), std::invalid_argument, "b has a non-finite value",
                              "row 4, column 0");
  PairwiseDistance<float, Manhattan> l1;
  KSHOT_CHECK_THROWS_WITH_ALL(l1.compute(nan_a, b3, out), std::invalid_argument, "row 2, column 1");
  PairwiseDistance<float, InnerProduct> ip;
  KSHOT_CHECK_THROWS_WITH_ALL(ip.compute(a, inf_b, out), std::invalid_argument, "row 4, column 0");
  const RowMatrixX<float> empty_d(3, 0);
  RowMatrixX<float> out3(3, 3);
  KSHOT_CHECK_THROWS_WITH_ALL(engine.compute(empty_d, empty_d, out3), std::invalid_argument, "d must be at least 1, got 0");
  RowMatrixX<float> dist(4, 5), ga(4, 3), gb(5, 3), g(4, 5);
  g.setOnes();
  engine.compute(a, b3, dist);
  RowMatrixX<float> ga_bad(3, 3);
  KSHOT_CHECK_THROWS_WITH_ALL(engine.backward(a, b3, dist, g, ga_bad, gb), std::invalid_argument,
                              "kshot::PairwiseDistance::backward()", "grad_a is 3 x 3 but must be 4 x 3");
  g(0, 0) = std::numeric_limits<float>::infinity();
  KSHOT_CHECK_THROWS_WITH_ALL(engine.backward(a, b3, dist, g, ga, gb), std::invalid_argument,
                              "grad_distances has a non-finite value");
  KSHOT_CHECK_THROWS_WITH_ALL(engine.compute_chunked(a, b3, 0, [](Index, const auto&) {}), std::invalid_argument,
                              "chunk_rows must be at least 1, got 0");
  // Finite rows whose squared norm overflows cannot be handled by the norm trick: say so.
  RowMatrixX<float> huge = a;
  huge(1, 0) = 1e30f;
  KSHOT_CHECK_THROWS_WITH_ALL(engine.compute(huge, b3, out), std::invalid_argument, "row 1 is finite but its squared norm overflows");
}

TEST_CASE_TEMPLATE("distances.pairwise: results are bitwise identical for 1 and 2 threads", Scalar, float, double) {
  // Large enough that every kernel runs its parallel path (n*m*d well above config::omp_min_work).
  const RowMatrixX<Scalar> a = random_matrix<Scalar>(600, 40, 21), b = random_matrix<Scalar>(530, 40, 22);
  const RowMatrixX<Scalar> w = random_matrix<Scalar>(600, 530, 23), ws = random_matrix<Scalar>(600, 600, 24);
  auto run = [&](int threads, auto metric) {
    using Metric = decltype(metric);
    ThreadCountGuard guard(threads);
    PairwiseDistance<Scalar, Metric> engine;
    RowMatrixX<Scalar> d(600, 530), s(600, 600), ga(600, 40), gb(530, 40), gs(600, 40);
    // How many parallel regions each call opened (kshot::detail::parallel_regions_opened): at 2 threads every
    // call must take its parallel path, or comparing it with 1 thread proves nothing.
    std::array<long long, 4> regions{};
    auto count = [&](std::size_t k, auto&& call) {
      const long long before = kshot::detail::parallel_regions_opened().load();
      call();
      regions[k] = kshot::detail::parallel_regions_opened().load() - before;
    };
    count(0, [&] { engine.compute(a, b, d); });
    count(1, [&] { engine.compute_self(a, s); });
    count(2, [&] { engine.backward(a, b, d, w, ga, gb); });
    count(3, [&] { engine.backward_self(a, s, ws, gs); });
    return std::make_tuple(d, s, ga, gb, gs, regions);
  };
  auto check_metric = [&](auto metric) {
    INFO(std::string(decltype(metric)::name));
    const auto one = run(1, metric);
    const auto two = run(2, metric);
    CHECK(std::get<0>(one) == std::get<0>(two));
    CHECK(std::get<1>(one) == std::get<1>(two));
    CHECK(std::get<2>(one) == std::get<2>(two));
    CHECK(std::get<3>(one) == std::get<3>(two));
    CHECK(std::get<4>(one) == std::get<4>(two));
#if KSHOT_HAS_OPENMP
    for (std::size_t k = 0; k < 4; ++k) {
      CAPTURE(k);
      CHECK(std::get<5>(one)[k] == 0);
      CHECK(std::get<5>(two)[k] > 0);
    }
#endif
  };
  check_metric(SquaredEuclidean{});
  check_metric(Euclidean{});
  check_metric(CosineSimilarity{});
  check_metric(InnerProduct{});
  check_metric(Manhattan{});
}

TEST_CASE("distances.pairwise: the chunked form equals the full matrix and bounds memory") {
  const RowMatrixX<float> a = random_matrix<float>(1000, 16, 31), b = random_matrix<float>(70, 16, 32);
  const RowMatrixX<float> full = pairwise_distances(a, b, CosineDistance{});
  PairwiseDistance<float, CosineDistance> engine;
  RowMatrixX<float> joined(1000, 70);
  Index calls = 0, next_row = 0, widest = 0;
  engine.compute_chunked(a, b, 128, [&](Index row_begin, const auto& block) {
    CHECK(row_begin == next_row);
    widest = std::max(widest, block.rows());
    joined.middleRows(row_begin, block.rows()) = block;
    next_row += block.rows();
    ++calls;
  });
  CHECK(calls == 8);
  CHECK(widest == 128);
  CHECK(next_row == 1000);
  CHECK(joined == full);
}

TEST_CASE("distances.pairwise: Maps and row blocks bind without a copy and column-major input gives the same values") {
  std::vector<float> storage(6 * 4);
  for (std::size_t i = 0; i < storage.size(); ++i) storage[i] = static_cast<float>(i % 7) - 3.0f;
  Eigen::Map<RowMatrixX<float>> map(storage.data(), 6, 4);
  ConstRowMatrixRef<float> ref_map(map);
  CHECK(ref_map.data() == storage.data());
  const RowMatrixX<float> m = map;
  ConstRowMatrixRef<float> ref_block(m.middleRows(2, 3));
  CHECK(ref_block.data() == m.data() + 2 * 4);
  // A block of rows of a row-major output is writable in place.
  RowMatrixX<float> out = RowMatrixX<float>::Constant(6, 6, -1.0f);
  pairwise_distances(map.topRows(3), map, out.topRows(3));
  CHECK(out.topRows(3) == pairwise_distances(m.topRows(3), m));
  CHECK((out.bottomRows(3).array() == -1.0f).all());
  const Eigen::MatrixXf col_major = m;  // copied into a row-major temporary on binding
  CHECK(pairwise_distances(col_major, col_major) == pairwise_distances(m, m));
}

TEST_CASE("distances.pairwise: float agrees with double") {
  const RowMatrixX<double> a = random_matrix<double>(50, 32, 41), b = random_matrix<double>(40, 32, 42);
  const RowMatrixX<float> af = a.cast<float>(), bf = b.cast<float>();
  const RowMatrixX<double> w = random_matrix<double>(50, 40, 43);
  RowMatrixX<double> d(50, 40), ga(50, 32), gb(40, 32);
  RowMatrixX<float> df(50, 40), gaf(50, 32), gbf(40, 32);
  PairwiseDistance<double, CosineSimilarity> ed;
  PairwiseDistance<float, CosineSimilarity> ef;
  ed.compute(a, b, d);
  ef.compute(af, bf, df);
  CHECK(kshot::test::max_rel_error(df, d) < 1e-5);
  ed.backward(a, b, d, w, ga, gb);
  ef.backward(af, bf, df, w.cast<float>(), gaf, gbf);
  CHECK(kshot::test::gradient_rel_error(gaf.cast<double>(), ga) < 1e-5);
  CHECK(kshot::test::gradient_rel_error(gbf.cast<double>(), gb) < 1e-5);
}
