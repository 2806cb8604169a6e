// SPDX-License-Identifier: MIT
// A second FlatIndex::search with the same (or smaller) shapes allocates nothing: every metric, with and without
// filters and exclusions, on the lazy-product path (few queries) and the GEMM path (one and several query blocks).
#include "noalloc/alloc_counter.hpp"
#include "test_util.hpp"

#include <kshot/retrieval/flat_index.hpp>

#include <doctest/doctest.h>

#include <vector>

using namespace kshot;
using namespace kshot::test;

TEST_CASE("FlatIndex::search: a second search allocates nothing") {
  const Index n = 3000, d = 16;
  const RowMatrixX<float> x = random_matrix<float>(n, d, 1);
  std::vector<ItemId> ids(static_cast<std::size_t>(n));
  for (Index i = 0; i < n; ++i) ids[static_cast<std::size_t>(i)] = 2 * i + 1;
  IdBitset allowed(2 * n + 2);
  for (ItemId id : ids)
    if (id % 3 != 0) allowed.set(id);
  for (SearchMetric metric : {SearchMetric::inner_product, SearchMetric::cosine, SearchMetric::squared_euclidean}) {
    FlatIndex<float> index(d, metric);
    index.add(x, ids);
    for (Index nq : {Index(5), Index(100), Index(300)}) {
      const RowMatrixX<float> queries = random_matrix<float>(nq, d, 2 + static_cast<std::uint64_t>(nq));
      ExclusionLists exclusions;
      for (Index q = 0; q < nq; ++q)
        exclusions.add_list(std::vector<ItemId>{ids[static_cast<std::size_t>(q)], 7, 99999});
      SearchOptions filtered;
      filtered.allowed = &allowed;
      filtered.predicate = [](ItemId id) { return id % 5 != 0; };
      filtered.exclude = &exclusions;
      SearchResult<float> result;
      check_second_call_allocates_nothing([&] { index.search(queries, 20, result); });
      check_second_call_allocates_nothing([&] { index.search(queries, 20, result, filtered); });
      // A smaller batch afterwards: the first call resizes the result, the second allocates nothing.
      check_second_call_allocates_nothing([&] { index.search(queries.topRows(nq / 2 + 1), 20, result, {}); });
    }
  }
}
