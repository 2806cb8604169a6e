// SPDX-License-Identifier: MIT
// bfloat16 screening of FlatIndex<float> batch searches: its error bound against the instruction itself, and the
// results with screening against the results without it, which must be bitwise the same (ids, scores, counts)
// for every metric, shape, filter, history of adds and removes, extreme value and thread count.
//
// Built twice: into kshot_tests (portable, sanitized: screening_available is false there, so the comparisons run the
// exact paths twice and check set_screening() under the sanitizers) and into kshot_native_tests (-march=native, see
// tests/CMakeLists.txt), which screens where the build machine has AVX512_BF16. Without it the bound test is compiled
// out (the first test case says which path ran).
#include "test_util.hpp"

#include <kshot/core/threads.hpp>
#include <kshot/retrieval.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

using namespace kshot;
using namespace kshot::test;

namespace {

/// Gaussian rows (mode 0), small integers (mode 1: exact ties), near-duplicates of one row (mode 2: every score
/// within the screening error of the others), or Gaussian rows with extreme values planted (mode 3).
RowMatrixX<float> make_rows(Index n, Index d, int mode, RandomStream& rng, const RowVectorX<float>& base) {
  RowMatrixX<float> m(n, d);
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < d; ++j) {
      switch (mode) {
        case 1:
          m(i, j) = static_cast<float>(static_cast<int>(rng.bounded(5)) - 2);
          break;
        case 2:
          m(i, j) = base[j] * (1.0f + 1e-4f * rng.normal<float>());
          break;
        default:
          m(i, j) = rng.normal<float>();
      }
    }
  if (mode == 3 && n >= 6) {
    // Beyond the screening range (magnitudes of 2^50 and more are always scored exactly), yet within the largest
    // squared norm a FlatIndex accepts (a quarter of FLT_MAX), for any d up to 300.
    m.row(0) *= 1e17f;
    m(1, 0) = 1e-30f;      // a tiny value
    m(2, d - 1) = 1e-40f;  // a float denormal
    m.row(3).setZero();    // a zero row
    m.row(4) *= 1e-3f;
    m.row(5) = -m.row(4) * 1e3f;
  }
  return m;
}

/// Bitwise equality of two search results.
void expect_same(const SearchResult<float>& a, const SearchResult<float>& b) {
  REQUIRE(a.ids.rows() == b.ids.rows());
  REQUIRE(a.ids.cols() == b.ids.cols());
  CHECK(a.counts == b.counts);
  Index differ = 0;
  for (Index q = 0; q < a.ids.rows(); ++q)
    for (Index i = 0; i < a.ids.cols(); ++i) {
      float sa = a.scores(q, i), sb = b.scores(q, i);
      std::uint32_t ua, ub;
      std::memcpy(&ua, &sa, 4);
      std::memcpy(&ub, &sb, 4);
      if (a.ids(q, i) != b.ids(q, i) || ua != ub) ++differ;
    }
  CHECK(differ == 0);
}

}  // namespace

TEST_CASE("screening: which path this build tests") {
  MESSAGE("FlatIndex<float>::screening_available = " << FlatIndex<float>::screening_available
                                                     << " (bfloat16 screening needs an AVX512_BF16 build)");
  FlatIndex<float> index(8);
  CHECK(index.screening() == FlatIndex<float>::screening_available);
  index.set_screening(false);
  CHECK_FALSE(index.screening());
  index.set_screening(true);
  CHECK(index.screening() == FlatIndex<float>::screening_available);
  CHECK_FALSE(FlatIndex<double>::screening_available);
}

#if KSHOT_RETRIEVAL_HAS_SCREEN
TEST_CASE("screening: the bound holds against VDPBF16PS itself, down to the last bit") {
  // |exact float chain - screening score| <= ||q|| a_x + ||q - q~|| b_x for single pairs, over random,
  // near-cancelling and rounding-tie values.
  RandomStream rng(2026);
  for (int trial = 0; trial < 3000; ++trial) {
    const Index d = 1 + static_cast<Index>(rng.bounded(300));
    const Index pairs = (d + 1) / 2;
    std::vector<float> q(static_cast<std::size_t>(d)), x(static_cast<std::size_t>(d));
    const int kind = trial % 3;
    for (Index k = 0; k < d; ++k) {
      const auto kk = static_cast<std::size_t>(k);
      q[kk] = rng.normal<float>();
      x[kk] = rng.normal<float>();
      if (kind == 1) x[kk] = (k % 2 == 0 ? 1.0f : -1.0f) * std::fabs(q[kk]) * (1.0f + 1e-3f * rng.normal<float>());
      if (kind == 2) {  // halfway between two bfloat16 values: the rounding ties
        q[kk] =
            (1.0f + (2.0f * static_cast<float>(rng.bounded(128)) + 1.0f) / 256.0f) * (rng.bounded(2) ? 1.0f : -1.0f);
        x[kk] = 1.0f + 1.0f / 256.0f;
      }
    }
    alignas(64) std::uint32_t qpack[64 * 160] = {};
    alignas(64) float e1[64], e2[64];
    REQUIRE(pairs <= 160);
    detail::pack_screen_group(q.data(), d, 1, d, qpack, e1, e2);
    std::vector<std::uint32_t> xb(static_cast<std::size_t>(pairs));
    float ab[2];
    detail::pack_screen_row(x.data(), d, detail::screen_chain_factor(d), xb.data(), ab);
    __m512 acc[detail::kernel_vectors][1];
    detail::screen_tile<1>(qpack, xb.data(), pairs, pairs, acc);
    alignas(64) float lanes[16];
    _mm512_store_ps(lanes, acc[0][0]);
    float exact = 0.0f;
    for (Index k = 0; k < d; ++k)
      exact = std::fma(q[static_cast<std::size_t>(k)], x[static_cast<std::size_t>(k)], exact);
    const double error = std::fabs(static_cast<double>(exact) - static_cast<double>(lanes[0]));
    const double bound = static_cast<double>(e1[0]) * ab[0] + static_cast<double>(e2[0]) * ab[1];
    INFO("trial " << trial << ", d " << d << ", kind " << kind << ": error " << error << ", bound " << bound);
    REQUIRE(error <= bound);
    for (int lane = 1; lane < 16; ++lane) REQUIRE(lanes[lane] == 0.0f);  // unused lanes stay zero
  }
}
#endif

TEST_CASE("screening: results equal the unscreened search bitwise (metrics, shapes, ties, extremes, filters)") {
  RandomStream rng(7);
  for (int trial = 0; trial < 48; ++trial) {
    const int mode = trial % 4;
    const Index d = 1 + static_cast<Index>(rng.bounded(70));
    const Index n = 1 + static_cast<Index>(rng.bounded(2500));
    const Index nq = 33 + static_cast<Index>(rng.bounded(150));  // above lazy_queries: the batch kernel
    const Index k = 1 + static_cast<Index>(rng.bounded(40));
    RowVectorX<float> base(d);
    for (Index j = 0; j < d; ++j) base[j] = rng.normal<float>();
    const RowMatrixX<float> items = make_rows(n, d, mode, rng, base);
    // Mode 3 plants extremes in the queries too: row 0 times 1e17 against item row 0 times 1e17 gives scores near
    // 1e34, far beyond the screening range.
    const RowMatrixX<float> queries = make_rows(nq, d, mode == 2 ? 0 : mode, rng, base);
    std::vector<ItemId> ids(static_cast<std::size_t>(n));
    for (Index i = 0; i < n; ++i) ids[static_cast<std::size_t>(i)] = (i * 7919) % 100003;
    const SearchMetric metric = trial % 3 == 0   ? SearchMetric::inner_product
                                : trial % 3 == 1 ? SearchMetric::cosine
                                                 : SearchMetric::squared_euclidean;
    INFO("trial " << trial << ", mode " << mode << ", n " << n << ", d " << d << ", nq " << nq << ", k " << k);
    FlatIndex<float> screened(d, metric), plain(d, metric);
    screened.add(items, ids);
    plain.add(items, ids);
    plain.set_screening(false);
    expect_same(screened.search(queries, k), plain.search(queries, k));

    // Filters: an allow-bitset over half the ids and per-query exclusions.
    IdBitset allowed(100003);
    for (Index i = 0; i < n; i += 2) allowed.set(ids[static_cast<std::size_t>(i)]);
    std::vector<std::vector<ItemId>> lists(static_cast<std::size_t>(nq));
    for (Index q = 0; q < nq; ++q)
      for (int e = 0; e < 3; ++e)
        lists[static_cast<std::size_t>(q)].push_back(
            ids[static_cast<std::size_t>(rng.bounded(static_cast<std::uint64_t>(n)))]);
    const ExclusionLists exclude(lists);
    SearchOptions options;
    options.allowed = &allowed;
    options.exclude = &exclude;
    expect_same(screened.search(queries, k, options), plain.search(queries, k, options));
  }
}

TEST_CASE("screening: adds and removes between searches keep the screening copy in step") {
  RandomStream rng(11);
  const Index d = 37, nq = 70, k = 15;
  FlatIndex<float> screened(d), plain(d);
  plain.set_screening(false);
  RowVectorX<float> base(d);
  const RowMatrixX<float> queries = make_rows(nq, d, 0, rng, base);
  ItemId next = 0;
  for (int round = 0; round < 12; ++round) {
    INFO("round " << round);
    const Index m = 50 + static_cast<Index>(rng.bounded(400));
    const RowMatrixX<float> items = make_rows(m, d, round % 2, rng, base);
    std::vector<ItemId> ids;
    for (Index i = 0; i < m; ++i) ids.push_back(next++);
    screened.add(items, ids);
    plain.add(items, ids);
    expect_same(screened.search(queries, k), plain.search(queries, k));
    // Remove a random third of what is there (storage order changes; converted and unconverted rows move).
    std::vector<ItemId> gone;
    for (ItemId id : screened.ids())
      if (rng.bounded(3) == 0) gone.push_back(id);
    screened.remove(gone);
    plain.remove(gone);
    expect_same(screened.search(queries, k), plain.search(queries, k));
    if (round == 5) {  // off and on again: the copy is freed and rebuilt
      screened.set_screening(false);
      expect_same(screened.search(queries, k), plain.search(queries, k));
      screened.set_screening(true);
    }
  }
  screened.clear();
  plain.clear();
  const RowMatrixX<float> items = make_rows(300, d, 0, rng, base);
  std::vector<ItemId> ids;
  for (Index i = 0; i < 300; ++i) ids.push_back(i);
  screened.add(items, ids);
  plain.add(items, ids);
  expect_same(screened.search(queries, k), plain.search(queries, k));
}

TEST_CASE("screening: results are bitwise identical at 1 and 2 threads") {
  RandomStream rng(5);
  const Index n = 20000, d = 64, nq = 300, k = 20;
  RowVectorX<float> base(d);
  const RowMatrixX<float> items = make_rows(n, d, 0, rng, base), queries = make_rows(nq, d, 0, rng, base);
  std::vector<ItemId> ids;
  for (Index i = 0; i < n; ++i) ids.push_back(i);
  FlatIndex<float> index(d);
  index.add(items, ids);
  SearchResult<float> one, two;
  {
    ThreadCountGuard guard(1);
    index.search(queries, k, one);
  }
  {
    ThreadCountGuard guard(2);
    index.search(queries, k, two);
  }
  expect_same(one, two);
  FlatIndex<float> plain(d);
  plain.set_screening(false);
  plain.add(items, ids);
  expect_same(one, plain.search(queries, k));
}
