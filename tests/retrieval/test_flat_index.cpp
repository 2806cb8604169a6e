// SPDX-License-Identifier: MIT
// FlatIndex against a full-sort reference (all metrics, filters, exclusions, ties, add / remove), thread
// determinism, save / load, and every documented error.
#include "test_util.hpp"

#include <kshot/retrieval.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <sstream>
#include <string>
#include <vector>

using namespace kshot;
using namespace kshot::test;

// Every member compiles for both scalars.
template class kshot::FlatIndex<float>;
template class kshot::FlatIndex<double>;

namespace {

/// Small integer values (exact products in float and double): many exact ties.
template <class Scalar>
RowMatrixX<Scalar> integer_matrix(Index n, Index d, RandomStream& rng, int range = 2) {
  RowMatrixX<Scalar> m(n, d);
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < d; ++j)
      m(i, j) = static_cast<Scalar>(static_cast<int>(rng.bounded(static_cast<std::uint64_t>(2 * range + 1))) - range);
  return m;
}

/// Rows with exactly 4 entries of +-1 (norm 2, so unit rows are exact), or zero rows now and then: cosine
/// scores are multiples of 1/4, exact in float and double.
template <class Scalar>
RowMatrixX<Scalar> cosine_matrix(Index n, Index d, RandomStream& rng) {
  RowMatrixX<Scalar> m = RowMatrixX<Scalar>::Zero(n, d);
  for (Index i = 0; i < n; ++i) {
    if (rng.bounded(10) == 0) continue;  // a zero vector
    for (int t = 0; t < 4; ++t) {
      const auto j = static_cast<Index>(rng.bounded(static_cast<std::uint64_t>(d)));
      m(i, j) += rng.bounded(2) == 0 ? Scalar(1) : Scalar(-1);
    }
    // Collisions can break the norm-2 pattern: make the row exactly (+-1 at four distinct places) again.
    Index nonzero = 0;
    for (Index j = 0; j < d; ++j) {
      if (m(i, j) != 0) m(i, j) = m(i, j) > 0 ? Scalar(1) : Scalar(-1);
      if (m(i, j) != 0) ++nonzero;
    }
    for (Index j = 0; j < d && nonzero < 4; ++j)
      if (m(i, j) == 0) {
        m(i, j) = Scalar(1);
        ++nonzero;
      }
    for (Index j = d - 1; j >= 0 && nonzero > 4; --j)
      if (m(i, j) != 0) {
        m(i, j) = 0;
        --nonzero;
      }
  }
  return m;
}

/// The filters of one reference search.
struct RefFilter {
  const IdBitset* allowed = nullptr;
  std::function<bool(ItemId)> predicate;
  const std::vector<ItemId>* exclude = nullptr;
  bool pass(ItemId id) const {
    if (allowed != nullptr && !allowed->test(id)) return false;
    if (predicate && !predicate(id)) return false;
    if (exclude != nullptr && std::find(exclude->begin(), exclude->end(), id) != exclude->end()) return false;
    return true;
  }
};

/// Exact score in double; the same value the index computes when the data is exact.
double reference_score(SearchMetric metric, const RowVectorX<double>& q, const RowVectorX<double>& x) {
  switch (metric) {
    case SearchMetric::inner_product:
      return q.dot(x);
    case SearchMetric::cosine: {
      const double a = q.norm(), b = x.norm();
      return a > 0 && b > 0 ? q.dot(x) / (a * b) : 0.0;
    }
    case SearchMetric::squared_euclidean:
      return (q - x).squaredNorm();
  }
  return 0.0;
}

/// Full sort of every item that passes the filter: best first, ties to the lower id.
std::vector<std::pair<double, ItemId>> reference_search(SearchMetric metric,
                                                        const std::map<ItemId, RowVectorX<double>>& items,
                                                        const RowVectorX<double>& q, const RefFilter& filter) {
  std::vector<std::pair<double, ItemId>> all;
  for (const auto& [id, x] : items)
    if (filter.pass(id)) all.emplace_back(reference_score(metric, q, x), id);
  const bool distance = metric == SearchMetric::squared_euclidean;
  std::sort(all.begin(), all.end(), [&](const auto& a, const auto& b) {
    if (a.first != b.first) return distance ? a.first < b.first : a.first > b.first;
    return a.second < b.second;
  });
  return all;
}

/// Checks row q of `result` against the reference list exactly (ids, scores, count, padding); one assertion
/// per row, naming the first difference.
template <class Scalar>
void check_row(const SearchResult<Scalar>& result, Index q, const std::vector<std::pair<double, ItemId>>& expected,
               SearchMetric metric, Index k) {
  const Index count = std::min<Index>(k, static_cast<Index>(expected.size()));
  REQUIRE(result.counts[q] == count);
  const Scalar pad = metric == SearchMetric::squared_euclidean ? std::numeric_limits<Scalar>::max()
                                                               : std::numeric_limits<Scalar>::lowest();
  Index first_bad = -1;
  for (Index i = 0; i < k && first_bad < 0; ++i) {
    const bool ok = i < count
                        ? result.ids(q, i) == expected[static_cast<std::size_t>(i)].second &&
                              static_cast<double>(result.scores(q, i)) == expected[static_cast<std::size_t>(i)].first
                        : result.ids(q, i) == -1 && result.scores(q, i) == pad;
    if (!ok) first_bad = i;
  }
  INFO("query " << q << ", first differing rank " << first_bad);
  if (first_bad >= 0) {
    INFO("got id " << result.ids(q, first_bad) << " score " << result.scores(q, first_bad));
    if (first_bad < count)
      INFO("expected id " << expected[static_cast<std::size_t>(first_bad)].second << " score "
                          << expected[static_cast<std::size_t>(first_bad)].first);
  }
  CHECK(first_bad == -1);
}

template <class Scalar>
RowMatrixX<Scalar> make_data(SearchMetric metric, Index n, Index d, RandomStream& rng) {
  return metric == SearchMetric::cosine ? cosine_matrix<Scalar>(n, d, rng) : integer_matrix<Scalar>(n, d, rng);
}

constexpr SearchMetric all_metrics[] = {SearchMetric::inner_product, SearchMetric::cosine,
                                        SearchMetric::squared_euclidean};

}  // namespace

TEST_CASE_TEMPLATE("FlatIndex: top-k equals a full sort (metrics, k, filters, exclusions, ties)", Scalar, float,
                   double) {
  RandomStream rng(2024);
  int cases = 0;
  for (SearchMetric metric : all_metrics) {
    for (int trial = 0; trial < 24; ++trial) {
      const Index n = 1 + static_cast<Index>(rng.bounded(trial < 20 ? 60 : 2500));
      const Index d = (metric == SearchMetric::cosine ? 4 : 1) + static_cast<Index>(rng.bounded(9));
      const Index nq = 1 + static_cast<Index>(rng.bounded(trial % 4 == 0 ? 300 : 5));
      const RowMatrixX<Scalar> x = make_data<Scalar>(metric, n, d, rng);
      const RowMatrixX<Scalar> queries = make_data<Scalar>(metric, nq, d, rng);
      // Ids: distinct, with gaps, in random order.
      std::vector<ItemId> ids(static_cast<std::size_t>(n));
      for (Index i = 0; i < n; ++i) ids[static_cast<std::size_t>(i)] = 3 * i + static_cast<ItemId>(rng.bounded(3));
      rng.shuffle(ids.begin(), ids.end());
      FlatIndex<Scalar> index(d, metric);
      index.add(x, ids);
      std::map<ItemId, RowVectorX<double>> items;
      for (Index i = 0; i < n; ++i) items[ids[static_cast<std::size_t>(i)]] = x.row(i).template cast<double>();

      // Filters: a bitset over half the ids, a predicate, exclusions (with ids not in the index).
      IdBitset allowed(3 * n + 3);
      for (ItemId id : ids)
        if (rng.bounded(2) == 0) allowed.set(id);
      // Every pair of the three options is set together in some trials (and all three in trial 7 of every 12).
      const bool use_bitset = trial % 3 == 1, use_predicate = trial % 4 >= 2, use_exclude = trial % 2 == 1;
      std::vector<std::vector<ItemId>> lists(static_cast<std::size_t>(nq));
      for (auto& list : lists) {
        const auto len = rng.bounded(static_cast<std::uint64_t>(std::min<Index>(n, 8)) + 1);
        for (std::uint64_t t = 0; t < len; ++t) list.push_back(ids[rng.bounded(static_cast<std::uint64_t>(n))]);
        list.push_back(3 * n + 7);  // not in the index: ignored
      }
      const ExclusionLists exclusions(lists);
      SearchOptions options;
      if (use_bitset) options.allowed = &allowed;
      if (use_predicate) options.predicate = [](ItemId id) { return id % 3 != 1; };
      if (use_exclude) options.exclude = &exclusions;

      for (Index k : {Index(1), Index(7), n - 1, n, n + 3}) {
        if (k < 1) continue;
        const SearchResult<Scalar> result = index.search(queries, k, options);
        REQUIRE(result.ids.rows() == nq);
        REQUIRE(result.ids.cols() == k);
        for (Index q = 0; q < nq; ++q) {
          RefFilter filter;
          filter.allowed = options.allowed;
          filter.predicate = options.predicate;
          if (use_exclude) filter.exclude = &lists[static_cast<std::size_t>(q)];
          const auto expected = reference_search(metric, items, queries.row(q).template cast<double>(), filter);
          check_row(result, q, expected, metric, k);
        }
        ++cases;
      }
    }
  }
  CHECK(cases > 300);
}

TEST_CASE_TEMPLATE("FlatIndex: all-equal scores go to the lower ids", Scalar, float, double) {
  for (SearchMetric metric : all_metrics) {
    const Index n = 50, d = 3;
    RowMatrixX<Scalar> x = RowMatrixX<Scalar>::Ones(n, d);  // identical items
    std::vector<ItemId> ids;
    for (Index i = 0; i < n; ++i) ids.push_back(1000 - 7 * i);
    FlatIndex<Scalar> index(d, metric);
    index.add(x, ids);
    const RowMatrixX<Scalar> q = RowMatrixX<Scalar>::Constant(1, d, Scalar(2));
    const auto result = index.search(q, 5);
    for (Index i = 0; i < 5; ++i) CHECK(result.ids(0, i) == 1000 - 7 * (n - 1) + 7 * i);
  }
}

TEST_CASE("FlatIndex: cosine zero vectors score 0 and squared Euclidean self-distance is exactly 0") {
  FlatIndex<float> cosine(2, SearchMetric::cosine);
  RowMatrixX<float> x(3, 2);
  x << 0, 0, 3, 4, -3, -4;
  cosine.add(x, std::vector<ItemId>{10, 11, 12});
  CHECK(cosine.vector(10).isZero());
  CHECK(cosine.vector(11)(0) == doctest::Approx(0.6));
  RowMatrixX<float> zero = RowMatrixX<float>::Zero(1, 2);
  const auto r = cosine.search(zero, 3);
  CHECK(r.ids(0, 0) == 10);
  CHECK(r.ids(0, 1) == 11);
  CHECK(r.ids(0, 2) == 12);
  for (Index i = 0; i < 3; ++i) CHECK(r.scores(0, i) == 0.0f);

  FlatIndex<float> l2(2, SearchMetric::squared_euclidean);
  l2.add(x, std::vector<ItemId>{10, 11, 12});
  RowMatrixX<float> q(1, 2);
  q << 3, 4;
  const auto s = l2.search(q, 3);
  CHECK(s.ids(0, 0) == 11);
  CHECK(s.scores(0, 0) == 0.0f);
  CHECK(!std::signbit(s.scores(0, 0)));
  CHECK(s.ids(0, 1) == 10);
  CHECK(s.scores(0, 1) == 25.0f);
  CHECK(s.scores(0, 2) == 100.0f);
}

TEST_CASE_TEMPLATE("FlatIndex: add and remove give the index built from the surviving items", Scalar, float, double) {
  RandomStream rng(77);
  for (SearchMetric metric : all_metrics) {
    for (int trial = 0; trial < 6; ++trial) {
      const Index d = (metric == SearchMetric::cosine ? 4 : 1) + static_cast<Index>(rng.bounded(6));
      FlatIndex<Scalar> index(d, metric);
      std::map<ItemId, RowVectorX<Scalar>> alive;
      ItemId next = 0;
      for (int round = 0; round < 8; ++round) {
        const Index m = static_cast<Index>(rng.bounded(trial == 5 ? 900 : 40));
        const RowMatrixX<Scalar> x = make_data<Scalar>(metric, m, d, rng);
        std::vector<ItemId> ids;
        for (Index i = 0; i < m; ++i) {
          next += 1 + static_cast<ItemId>(rng.bounded(3));
          ids.push_back(next);
          alive[next] = x.row(i);
        }
        index.add(x, ids);
        // Remove about a third of the survivors, in random order.
        std::vector<ItemId> remove;
        for (const auto& [id, v] : alive)
          if (rng.bounded(3) == 0) remove.push_back(id);
        rng.shuffle(remove.begin(), remove.end());
        index.remove(remove);
        for (ItemId id : remove) alive.erase(id);
        REQUIRE(index.size() == static_cast<Index>(alive.size()));
        for (ItemId id : remove) CHECK(!index.contains(id));
      }
      // The same survivors added from scratch in id order.
      FlatIndex<Scalar> fresh(d, metric);
      RowMatrixX<Scalar> xs(static_cast<Index>(alive.size()), d);
      std::vector<ItemId> ids;
      Index row = 0;
      for (const auto& [id, v] : alive) {
        xs.row(row++) = v;
        ids.push_back(id);
      }
      fresh.add(xs, ids);
      for (ItemId id : ids) CHECK(index.contains(id));
      const RowMatrixX<Scalar> queries = make_data<Scalar>(metric, 40, d, rng);
      const Index k = std::max<Index>(1, index.size() / 2 + 1);
      const auto a = index.search(queries, k);
      const auto b = fresh.search(queries, k);
      CHECK(a.ids == b.ids);
      CHECK(a.scores == b.scores);
      CHECK(a.counts == b.counts);
      std::map<ItemId, RowVectorX<double>> items;
      for (const auto& [id, v] : alive) items[id] = v.template cast<double>();
      for (Index q = 0; q < queries.rows(); ++q)
        check_row(a, q, reference_search(metric, items, queries.row(q).template cast<double>(), {}), metric, k);
    }
  }
}

TEST_CASE("FlatIndex: results are bitwise identical at 1 and 2 threads (batch and single-query paths)") {
  const Index n = 10000, d = 32;
  const RowMatrixX<float> x = random_matrix<float>(n, d, 5);
  std::vector<ItemId> ids(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i) ids[static_cast<std::size_t>(i)] = (i * 7919) % 20011;
  for (SearchMetric metric : all_metrics) {
    FlatIndex<float> index(d, metric);
    index.add(x, ids);
    std::vector<std::vector<ItemId>> lists(600);
    for (std::size_t q = 0; q < lists.size(); ++q) lists[q] = {ids[q], ids[q + 1], 5};
    ExclusionLists exclusions(lists);
    for (Index nq : {Index(1), Index(3), Index(200), Index(600)}) {
      const RowMatrixX<float> queries = random_matrix<float>(nq, d, 100 + static_cast<std::uint64_t>(nq));
      ExclusionLists ex;
      for (Index q = 0; q < nq; ++q) ex.add_list(lists[static_cast<std::size_t>(q)]);
      SearchOptions options;
      options.exclude = &ex;
      options.predicate = [](ItemId id) { return id % 5 != 0; };
      SearchResult<float> one, two;
      {
        ThreadCountGuard guard(1);
        index.search(queries, 50, one, options);
      }
      {
        ThreadCountGuard guard(2);
        index.search(queries, 50, two, options);
      }
      CHECK(one.ids == two.ids);
      CHECK(std::memcmp(one.scores.data(), two.scores.data(),
                        sizeof(float) * static_cast<std::size_t>(one.scores.size())) == 0);
      CHECK((one.counts.array() == 50).all());
      // Approximate check against a double reference on the returned items.
      Index unordered = 0;
      for (Index q = 0; q < nq; ++q)
        for (Index i = 0; i + 1 < 50; ++i) {
          const float a = one.scores(q, i), b = one.scores(q, i + 1);
          if (!(metric == SearchMetric::squared_euclidean ? a <= b : a >= b)) ++unordered;
        }
      CHECK(unordered == 0);
    }
  }
}

TEST_CASE("FlatIndex: a row block and a Map of queries bind without a copy and give the same results") {
  const RowMatrixX<float> x = random_matrix<float>(300, 8, 1);
  FlatIndex<float> index(8);
  IdVector ids = IdVector::LinSpaced(300, 0, 299);
  index.add(x, ids);
  const RowMatrixX<float> big = random_matrix<float>(10, 8, 2);
  const auto a = index.search(big.middleRows(2, 3), 4);
  const RowMatrixX<float> copy = big.middleRows(2, 3);
  const auto b = index.search(copy, 4);
  CHECK(a.ids == b.ids);
  CHECK(a.scores == b.scores);
}

TEST_CASE("FlatIndex: empty index and empty query batch") {
  FlatIndex<float> index(4, SearchMetric::squared_euclidean);
  const RowMatrixX<float> q = RowMatrixX<float>::Ones(2, 4);
  const auto r = index.search(q, 3);
  CHECK(r.counts.isZero());
  CHECK((r.ids.array() == -1).all());
  CHECK((r.scores.array() == std::numeric_limits<float>::max()).all());
  const auto e = index.search(RowMatrixX<float>(0, 4), 3);
  CHECK(e.ids.rows() == 0);
  index.add(q.topRows(1), std::vector<ItemId>{4});
  index.remove(std::vector<ItemId>{4});
  CHECK(index.empty());
  index.add(q.topRows(1), std::vector<ItemId>{4});
  index.clear();
  CHECK(index.size() == 0);
  CHECK(!index.contains(4));
}

TEST_CASE("IdBitset and ExclusionLists") {
  IdBitset a(130);
  a.set(0);
  a.set(64);
  a.set(129);
  CHECK(a.count() == 3);
  CHECK(a.test(129));
  CHECK(!a.test(130));
  CHECK(!a.test(-1));
  IdBitset b(100);
  b.set_all();
  CHECK(b.count() == 100);
  a &= b;
  CHECK(a.count() == 2);
  a |= b;
  CHECK(a.count() == 100);
  a.reset(5);
  CHECK(!a.test(5));
  a.resize(10);
  CHECK(a.count() == 9);
  a.clear_all();
  CHECK(a.count() == 0);
  const IdBitset c(10, IdVector::LinSpaced(3, 2, 4));
  CHECK(c.count() == 3);

  ExclusionLists lists(std::vector<std::vector<ItemId>>{{5, 1, 3}, {}, {2}});
  CHECK(lists.lists() == 3);
  CHECK(lists.excludes(0, 3));
  CHECK(!lists.excludes(0, 2));
  CHECK(!lists.excludes(1, 2));
  CHECK(lists.excludes(2, 2));
  lists.clear();
  CHECK(lists.lists() == 0);
}

TEST_CASE_TEMPLATE("FlatIndex: save and load round trip", Scalar, float, double) {
  for (SearchMetric metric : all_metrics) {
    const RowMatrixX<Scalar> x = random_matrix<Scalar>(500, 7, 3);
    FlatIndex<Scalar> index(7, metric);
    std::vector<ItemId> ids;
    for (ItemId i = 0; i < 500; ++i) ids.push_back(i * 13 + 1);
    index.add(x, ids);
    index.remove(std::vector<ItemId>{14, 27, 1});
    const std::string path = "kshot_test_flat_index.bin";
    index.save(path);
    const FlatIndex<Scalar> loaded = FlatIndex<Scalar>::load(path);
    std::remove(path.c_str());
    CHECK(loaded.size() == index.size());
    CHECK(loaded.dim() == 7);
    CHECK(loaded.metric() == metric);
    CHECK(loaded.ids() == index.ids());
    FlatIndex<Scalar> copy = loaded;
    const RowMatrixX<Scalar> q = random_matrix<Scalar>(5, 7, 4);
    const auto a = index.search(q, 20);
    const auto b = copy.search(q, 20);
    CHECK(a.ids == b.ids);
    CHECK(a.scores == b.scores);
  }
}

TEST_CASE("FlatIndex::load: corrupt, truncated and foreign files throw naming the file") {
  const RowMatrixX<float> x = random_matrix<float>(20, 3, 3);
  FlatIndex<float> index(3, SearchMetric::cosine);
  index.add(x, IdVector::LinSpaced(20, 0, 19));
  const std::string path = "kshot_test_flat_index_bad.bin";
  index.save(path);
  std::string bytes;
  {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  auto write = [&](const std::string& content) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
  };
  std::string corrupt = bytes;
  corrupt[100] = static_cast<char>(corrupt[100] ^ 0x10);
  write(corrupt);
  KSHOT_CHECK_THROWS_WITH_ALL(FlatIndex<float>::load(path), std::runtime_error, "kshot::FlatIndex::load()",
                              path.c_str(), "checksum mismatch");
  write(bytes.substr(0, bytes.size() - 5));
  KSHOT_CHECK_THROWS_WITH_ALL(FlatIndex<float>::load(path), std::runtime_error, path.c_str(), "truncated");
  write(bytes.substr(0, 30));
  KSHOT_CHECK_THROWS_WITH_ALL(FlatIndex<float>::load(path), std::runtime_error, path.c_str(), "truncated");
  std::string magic = bytes;
  magic[0] = 'X';
  write(magic);
  KSHOT_CHECK_THROWS_WITH_ALL(FlatIndex<float>::load(path), std::runtime_error, path.c_str(), "wrong magic");
  write(bytes + "extra");
  KSHOT_CHECK_THROWS_WITH_ALL(FlatIndex<float>::load(path), std::runtime_error, "5 bytes of trailing data");
  write(bytes);
  KSHOT_CHECK_THROWS_WITH_ALL(FlatIndex<double>::load(path), std::runtime_error, "4-byte scalars", "8-byte scalars");
  std::string huge = bytes;
  huge[39] = static_cast<char>(0x7f);  // the item count's high byte
  write(huge);
  KSHOT_CHECK_THROWS_WITH_ALL(FlatIndex<float>::load(path), std::runtime_error, "item count");
  std::remove(path.c_str());
  KSHOT_CHECK_THROWS_WITH_ALL(FlatIndex<float>::load(path), std::runtime_error, path.c_str(), "cannot open");
  KSHOT_CHECK_THROWS_WITH_ALL(index.save("kshot_no_such_directory/index.bin"), std::runtime_error,
                              "kshot::FlatIndex::save()", "kshot_no_such_directory/index.bin",
                              "cannot create the temporary file", "No such file or directory");
}

TEST_CASE("FlatIndex: bad input throws naming the function, the argument and the numbers") {
  KSHOT_CHECK_THROWS_WITH_ALL(FlatIndex<float>(0), std::invalid_argument, "kshot::FlatIndex::FlatIndex()",
                              "dim must be >= 1, got 0");
  KSHOT_CHECK_THROWS_WITH_ALL(FlatIndex<float>(3, static_cast<SearchMetric>(7)), std::invalid_argument,
                              "metric has the unknown value 7");
  FlatIndex<float> index(3);
  const RowMatrixX<float> x = RowMatrixX<float>::Ones(4, 3);
  index.add(x, std::vector<ItemId>{1, 2, 3, 4});
  KSHOT_CHECK_THROWS_WITH_ALL(index.add(RowMatrixX<float>::Ones(2, 4), std::vector<ItemId>{7, 8}),
                              std::invalid_argument, "kshot::FlatIndex::add()",
                              "vectors has 4 columns but the index dimension is 3");
  KSHOT_CHECK_THROWS_WITH_ALL(index.add(x.topRows(2), std::vector<ItemId>{7}), std::invalid_argument,
                              "ids has 1 entries but vectors has 2 rows");
  KSHOT_CHECK_THROWS_WITH_ALL(index.add(x.topRows(2), std::vector<ItemId>{7, 7}), std::invalid_argument,
                              "id 7 appears more than once in ids");
  KSHOT_CHECK_THROWS_WITH_ALL(index.add(x.topRows(2), std::vector<ItemId>{7, 3}), std::invalid_argument,
                              "id 3 (ids[1]) is already in the index");
  KSHOT_CHECK_THROWS_WITH_ALL(index.add(x.topRows(1), std::vector<ItemId>{-2}), std::invalid_argument,
                              "ids[0] is -2 but ids must be >= 0");
  RowMatrixX<float> bad = x.topRows(2);
  bad(1, 2) = std::numeric_limits<float>::quiet_NaN();
  KSHOT_CHECK_THROWS_WITH_ALL(index.add(bad, std::vector<ItemId>{7, 8}), std::invalid_argument,
                              "vectors has a non-finite value", "row 1, column 2");
  CHECK(index.size() == 4);  // nothing changed
  KSHOT_CHECK_THROWS_WITH_ALL(index.remove(std::vector<ItemId>{1, 9}), std::invalid_argument,
                              "kshot::FlatIndex::remove()", "id 9 (ids[1]) is not in the index");
  KSHOT_CHECK_THROWS_WITH_ALL(index.remove(std::vector<ItemId>{2, 2}), std::invalid_argument,
                              "id 2 appears more than once in ids");
  CHECK(index.size() == 4);
  KSHOT_CHECK_THROWS_WITH_ALL(index.vector(9), std::invalid_argument, "kshot::FlatIndex::vector()", "id 9");
  KSHOT_CHECK_THROWS_WITH_ALL(index.search(x, 0), std::invalid_argument, "kshot::FlatIndex::search()",
                              "k must be >= 1, got 0");
  KSHOT_CHECK_THROWS_WITH_ALL(index.search(x, -3), std::invalid_argument, "k must be >= 1, got -3");
  KSHOT_CHECK_THROWS_WITH_ALL(index.search(RowMatrixX<float>::Ones(2, 5), 2), std::invalid_argument,
                              "queries has 5 columns but the index dimension is 3");
  RowMatrixX<float> q = x;
  q(3, 0) = std::numeric_limits<float>::infinity();
  KSHOT_CHECK_THROWS_WITH_ALL(index.search(q, 2), std::invalid_argument, "queries has a non-finite value",
                              "row 3, column 0");
  ExclusionLists lists(std::vector<std::vector<ItemId>>{{1}, {2}});
  SearchOptions options;
  options.exclude = &lists;
  KSHOT_CHECK_THROWS_WITH_ALL(index.search(x, 2, options), std::invalid_argument,
                              "options.exclude has 2 lists but queries has 4 rows");
  KSHOT_CHECK_THROWS_WITH_ALL(index.reserve(-1), std::invalid_argument, "items must be >= 0, got -1");
  IdBitset bits(10);
  KSHOT_CHECK_THROWS_WITH_ALL(bits.set(10), std::invalid_argument, "kshot::IdBitset::set()",
                              "id 10 is outside [0, 10)");
  KSHOT_CHECK_THROWS_WITH_ALL(IdBitset(-1), std::invalid_argument, "universe must be >= 0, got -1");
  ExclusionLists ex;
  const ItemId negative[] = {3, -4};
  KSHOT_CHECK_THROWS_WITH_ALL(ex.add_list(negative, 2), std::invalid_argument, "kshot::ExclusionLists::add_list()",
                              "id -4 at position 1 of list 0 is negative");
  KSHOT_CHECK_THROWS_WITH_ALL(ex.add_list(nullptr, 2), std::invalid_argument, "ids is null but count is 2");
  // An exception from the predicate propagates out of search().
  SearchOptions throwing;
  throwing.predicate = [](ItemId id) -> bool {
    if (id == 3) throw std::runtime_error("predicate failed on 3");
    return true;
  };
  KSHOT_CHECK_THROWS_WITH_ALL(index.search(x, 4, throwing), std::runtime_error, "predicate failed on 3");
  // k larger than the catalogue is not an error: padding, as documented.
  const auto r = index.search(x.topRows(1), 6);
  CHECK(r.counts[0] == 4);
  CHECK(r.ids(0, 4) == -1);
  CHECK(r.ids(0, 0) == 1);
}

namespace {

/// The bytes of an index file (format version 1) with the given header fields, ids and float vectors.
std::string index_file_bytes(std::uint32_t metric, std::uint64_t dim, const std::vector<ItemId>& ids,
                             const std::vector<float>& vectors) {
  std::ostringstream out(std::ios::binary);
  kshot::detail::BinaryWriter writer(out);
  writer.bytes("KSHOTIX1", 8);
  writer.u32(1);
  writer.u32(4);
  writer.u32(metric);
  writer.u32(0);
  writer.u64(dim);
  writer.u64(ids.size());
  writer.values(ids.data(), ids.size());
  writer.values(vectors.data(), vectors.size());
  writer.finish();
  return out.str();
}

void write_index_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

}  // namespace

TEST_CASE("FlatIndex::search: a k whose result cannot be allocated is a named std::length_error (issue 17)") {
  FlatIndex<float> index(2);
  index.add(RowMatrixX<float>::Ones(3, 2), std::vector<ItemId>{1, 2, 3});
  const RowMatrixX<float> q = RowMatrixX<float>::Ones(1, 2);
  // k = 2^40 ended in a bare std::bad_alloc; now refused before any allocation, naming k and the query count.
  const Index k = Index(1) << 40;
  KSHOT_CHECK_THROWS_WITH_ALL(index.search(q, k), std::length_error, "kshot::FlatIndex::search()",
                              "k = 1099511627776 results for each of 1 queries need", "bytes, more than");
  SearchResult<float> result;
  KSHOT_CHECK_THROWS_WITH_ALL(index.search(q, k, result), std::length_error, "k = 1099511627776");
  CHECK(result.ids.size() == 0);  // nothing was sized
  // k > size() stays valid: padded rows.
  const auto padded = index.search(q, 5);
  CHECK(padded.counts[0] == 3);
  CHECK(padded.ids(0, 3) == -1);
  CHECK(padded.ids(0, 4) == -1);
  // No query: nothing to allocate, whatever k.
  CHECK(index.search(RowMatrixX<float>(0, 2), k).queries() == 0);
}

TEST_CASE("FlatIndex: rows whose scores could overflow are refused, never dropped (issue 17)") {
  const float limit = std::sqrt(std::numeric_limits<float>::max() / 4);  // the largest allowed norm, ~9.2e18
  // Squared Euclidean: items of norm 1.2e19 were accepted, and a query at one end lost the item at the other end
  // (its squared distance 5.8e38 overflowed float): k = 3 over 3 items returned 2 and padding.
  FlatIndex<float> index(2, SearchMetric::squared_euclidean);
  RowMatrixX<float> far(3, 2);
  far << 1.2e19f, 0, 0, 0, -1.2e19f, 0;
  KSHOT_CHECK_THROWS_WITH_ALL(index.add(far, std::vector<ItemId>{1, 2, 3}), std::invalid_argument,
                              "kshot::FlatIndex::add()", "vectors row 0 is finite but its squared norm",
                              "rescale the data");
  CHECK(index.size() == 0);
  // Within the bound every squared distance is finite and every item is returned.
  RowMatrixX<float> near(3, 2);
  near << 0.99f * limit, 0, 0, 0, -0.99f * limit, 0;
  index.add(near, std::vector<ItemId>{1, 2, 3});
  const RowMatrixX<float> q = near.topRows(1);
  const auto result = index.search(q, 3);
  CHECK(result.counts[0] == 3);
  CHECK(result.ids(0, 0) == 1);
  CHECK(result.ids(0, 1) == 2);
  CHECK(result.ids(0, 2) == 3);
  CHECK(std::isfinite(result.scores(0, 2)));
  CHECK(result.scores(0, 2) == doctest::Approx(4.0 * 0.99 * 0.99 * double(limit) * double(limit)).epsilon(1e-5));
  RowMatrixX<float> big_query(1, 2);
  big_query << -1.2e19f, 0;
  KSHOT_CHECK_THROWS_WITH_ALL(index.search(big_query, 3), std::invalid_argument, "kshot::FlatIndex::search()",
                              "queries row 0 is finite but its squared norm");
  // Inner product: the same bound.
  FlatIndex<float> ip(2, SearchMetric::inner_product);
  KSHOT_CHECK_THROWS_WITH_ALL(ip.add(far, std::vector<ItemId>{1, 2, 3}), std::invalid_argument,
                              "vectors row 0 is finite but its squared norm");
  ip.add(near, std::vector<ItemId>{1, 2, 3});
  KSHOT_CHECK_THROWS_WITH_ALL(ip.search(big_query, 3), std::invalid_argument, "queries row 0");
  // Cosine normalises: huge rows are fine there, even in double beyond 1e154.
  FlatIndex<double> cosine(2, SearchMetric::cosine);
  RowMatrixX<double> huge(2, 2);
  huge << 1e200, 0, 3e200, 4e200;
  cosine.add(huge, std::vector<ItemId>{5, 6});
  CHECK(cosine.vector(5)(0) == doctest::Approx(1.0));
  CHECK(cosine.vector(6)(0) == doctest::Approx(0.6));
  CHECK(cosine.vector(6)(1) == doctest::Approx(0.8));
}

TEST_CASE("FlatIndex::load: payloads the checksum cannot vouch for are refused (issue 17)") {
  const std::string path = "kshot_test_flat_index_payload.bin";
  // A cosine file whose rows are not unit length loaded and scored 100 (3, 4 against itself: 25 x 4).
  write_index_file(path, index_file_bytes(1, 2, {7, 8}, {3.0f, 4.0f, 0.6f, 0.8f}));
  KSHOT_CHECK_THROWS_WITH_ALL(FlatIndex<float>::load(path), std::runtime_error, "kshot::FlatIndex::load()",
                              path.c_str(), "vector 0 (id 7) has squared norm 25",
                              "a cosine index stores unit rows");
  // Unit and zero rows load.
  write_index_file(path, index_file_bytes(1, 2, {7, 8}, {0.0f, 0.0f, 0.6f, 0.8f}));
  const FlatIndex<float> unit = FlatIndex<float>::load(path);
  CHECK(unit.size() == 2);
  // A 48-byte file declared an empty index of dimension 2^31.
  const std::string empty_huge = index_file_bytes(0, std::uint64_t(1) << 31, {}, {});
  CHECK(empty_huge.size() == 48);
  write_index_file(path, empty_huge);
  KSHOT_CHECK_THROWS_WITH_ALL(FlatIndex<float>::load(path), std::runtime_error, path.c_str(),
                              "dimension 2147483648 with no stored vector", "at most 16777216");
  write_index_file(path, index_file_bytes(0, std::uint64_t(1) << 24, {}, {}));
  CHECK(FlatIndex<float>::load(path).dim() == (Index(1) << 24));
  // Inner product and squared Euclidean rows must respect the norm bound.
  write_index_file(path, index_file_bytes(2, 1, {1}, {2e19f}));
  KSHOT_CHECK_THROWS_WITH_ALL(FlatIndex<float>::load(path), std::runtime_error, path.c_str(),
                              "vector 0 (id 1) has squared norm", "so its scores could overflow");
  std::remove(path.c_str());
}
