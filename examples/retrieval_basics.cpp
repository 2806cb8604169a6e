// SPDX-License-Identifier: MIT
// The code block of docs/retrieval.md, compiled and run as it stands in the docs: a FlatIndex over five products
// under cosine similarity, a filtered search for two shoppers (in-stock bitset, bought-items exclusion and a
// predicate), incremental remove/add, and a save/load round trip. It prints the output quoted in the docs.
#include <kshot/retrieval.hpp>

#include <cstdio>
#include <vector>

int main() {
  // A catalogue of 5 products in 3 dimensions, under the shop's own product ids.
  kshot::RowMatrixX<float> items(5, 3);
  items << 1, 0, 0,
           0, 1, 0,
           1, 1, 0,
           0, 0, 1,
           1, 1, 1;
  kshot::FlatIndex<float> index(3, kshot::SearchMetric::cosine);
  index.add(items, std::vector<kshot::ItemId>{101, 102, 103, 104, 105});

  // Two shoppers' taste vectors.
  kshot::RowMatrixX<float> users(2, 3);
  users << 1, 0.5f, 0,
           0, 0, 1;

  // Only in-stock products (a bitset over ids), never a product the shopper already bought.
  kshot::IdBitset in_stock(200);
  for (kshot::ItemId id : {101, 103, 104, 105}) in_stock.set(id);
  kshot::ExclusionLists bought(std::vector<std::vector<kshot::ItemId>>{{103}, {}});
  kshot::SearchOptions options;
  options.allowed = &in_stock;
  options.exclude = &bought;
  options.predicate = [](kshot::ItemId id) { return id != 999; };  // any thread-safe rule

  kshot::SearchResult<float> top;                // reused call after call
  index.search(users, 3, top, options);
  for (kshot::Index q = 0; q < top.queries(); ++q)
    for (kshot::Index i = 0; i < top.counts[q]; ++i)
      std::printf("user %ld: #%ld product %lld (cosine %.3f)\n", static_cast<long>(q), static_cast<long>(i),
                  static_cast<long long>(top.ids(q, i)), static_cast<double>(top.scores(q, i)));

  // Incremental updates under the same ids, then save and load.
  index.remove(std::vector<kshot::ItemId>{104});
  index.add(kshot::RowMatrixX<float>::Ones(1, 3), std::vector<kshot::ItemId>{106});
  index.save("catalogue.kshotix");
  kshot::FlatIndex<float> loaded = kshot::FlatIndex<float>::load("catalogue.kshotix");
  std::printf("%ld items, contains 104: %d\n", static_cast<long>(loaded.size()), loaded.contains(104) ? 1 : 0);
  std::remove("catalogue.kshotix");
}
