// libFuzzer harness of kshot's retrieval index files: FlatIndex<float/double>::load(path)
// (kshot/retrieval/flat_index.hpp, kshot/retrieval/detail/index_file.hpp, kshot/core/binary_io.hpp).
//
// Input: byte 0 = options, the rest = the index file.
//   bit 0: the harness recomputes the file's checksum (its last 8 bytes) first, so that half the inputs reach
//          the checks behind the checksum (ids, values, metric contracts)
//   bit 1: FlatIndex<double> (else FlatIndex<float>)
//   bits 2-4: k - 1 of the search after a successful load
// After a successful load: save() then load() must give the same bytes again, a search of no query must run
// (within the memory limits whatever the dimension), and a search of two queries must return min(k, size())
// distinct stored ids per query, best first, padded with -1, with cosine scores in [-1, 1] (cosine rows are
// unit vectors), when the index is small enough for the harness to build queries.
//
// SPDX-License-Identifier: MIT

#include "fuzz_common.hpp"

#include "kshot/retrieval/flat_index.hpp"

#include <cmath>
#include <memory>
#include <set>

namespace {

using kshot_fuzz::require;

template <class Scalar>
void search(kshot::FlatIndex<Scalar>& index, kshot::Index k) {
  using kshot::Index;
  const Index dim = index.dim(), n = index.size();
  // No query: costs the harness nothing whatever the dimension, so a loaded dimension that makes search()
  // itself allocate gigabytes shows up (as an allocation over -malloc_limit_mb).
  kshot_fuzz::documented([&] {
    const kshot::SearchResult<Scalar> none = index.search(kshot::RowMatrixX<Scalar>(0, dim), k);
    require(none.queries() == 0, "search() of no query returned rows");
  });
  if (dim > (Index{1} << 16) || n * dim > (Index{1} << 20)) return;
  kshot::RowMatrixX<Scalar> queries(2, dim);
  for (Index j = 0; j < dim; ++j) {
    queries(0, j) = Scalar(1);
    queries(1, j) = j % 2 == 0 ? Scalar(0.5) : Scalar(-2);
  }
  kshot_fuzz::documented([&] {
    const kshot::SearchResult<Scalar> result = index.search(queries, k);
    require(result.queries() == 2 && result.k() == k && result.counts.size() == 2, "search() result shape");
    const bool similarity = index.metric() != kshot::SearchMetric::squared_euclidean;
    for (Index q = 0; q < 2; ++q) {
      require(result.counts[q] == std::min(k, n),
              "search() returned " + std::to_string(result.counts[q]) + " results for k = " + std::to_string(k) +
                  " over " + std::to_string(n) + " items without a filter");
      std::set<kshot::ItemId> seen;
      for (Index r = 0; r < k; ++r) {
        const kshot::ItemId id = result.ids(q, r);
        if (r >= result.counts[q]) {
          require(id == -1, "padding is not -1");
          continue;
        }
        require(index.contains(id), "search() returned an id that is not stored");
        require(seen.insert(id).second, "search() returned an id twice");
        const Scalar score = result.scores(q, r);
        if (index.metric() == kshot::SearchMetric::cosine)
          require(!(std::abs(static_cast<double>(score)) > 1.001),
                  "cosine score " + std::to_string(static_cast<double>(score)) + " outside [-1, 1]");
        if (r > 0) {
          const Scalar previous = result.scores(q, r - 1);
          require(!(similarity ? score > previous : score < previous), "search() results are not best first");
        }
      }
    }
  });
}

template <class Scalar>
void run(const kshot_fuzz::TempFile& file, const std::vector<std::uint8_t>& bytes, std::uint8_t options) {
  static const kshot_fuzz::TempFile copy("index_copy");
  std::unique_ptr<kshot::FlatIndex<Scalar>> index;
  kshot_fuzz::documented(
      [&] { index = std::make_unique<kshot::FlatIndex<Scalar>>(kshot::FlatIndex<Scalar>::load(file.path())); });
  if (!index) return;
  require(kshot_fuzz::checksum_ok(bytes), "a file whose checksum is wrong loaded");
  require(index->dim() >= 1, "an index of dimension 0 loaded");
  // The round trip: what save() writes must load, and saving that again must give the same bytes.
  index->save(copy.path());
  const std::vector<std::uint8_t> first = copy.read();
  kshot::FlatIndex<Scalar> again = kshot::FlatIndex<Scalar>::load(copy.path());
  require(again.size() == index->size() && again.dim() == index->dim() && again.metric() == index->metric(),
          "the reloaded index differs");
  again.save(copy.path());
  require(copy.read() == first, "save(load(save(index))) differs from save(index)");
  search(*index, static_cast<kshot::Index>(1 + ((options >> 2) & 7)));
}

}  // namespace

void fuzz_one(const std::uint8_t* data, std::size_t size) {
  static const kshot_fuzz::TempFile file("index");
  kshot_fuzz::checksummed_file(data, size,
                               [&](auto scalar, std::uint8_t options, const std::vector<std::uint8_t>& bytes) {
                                 file.write(bytes);
                                 run<decltype(scalar)>(file, bytes, options);
                               });
}

namespace {

template <class Scalar>
void seeds_of(kshot_fuzz::SeedWriter& seeds, const char* tag, std::uint8_t scalar_bit) {
  static const kshot_fuzz::TempFile file("index_seed");
  using kshot::SearchMetric;
  const SearchMetric metrics[] = {SearchMetric::inner_product, SearchMetric::cosine, SearchMetric::squared_euclidean};
  const char* names[] = {"ip", "cos", "l2"};
  for (int m = 0; m < 3; ++m) {
    kshot::FlatIndex<Scalar> index(3, metrics[m]);
    kshot::RowMatrixX<Scalar> items(4, 3);
    items << 1, 0, 0, 0, 1, 0, 0.5, 0.5, 0.5, -1, 2, 0.25;
    kshot::IdVector ids(4);
    ids << 7, 0, 42, 3;
    index.add(items, ids);
    index.remove(std::vector<kshot::ItemId>{42});
    index.save(file.path());
    const auto full = file.read();
    kshot::FlatIndex<Scalar> empty(2, metrics[m]);
    empty.save(file.path());
    const auto none = file.read();
    const std::string t = std::string(names[m]) + "_" + tag;
    for (std::uint8_t fix : {0, 1}) {
      const std::string f = std::to_string(fix);
      seeds.add(t + "_" + f, static_cast<std::uint8_t>(fix | scalar_bit | (m << 2)), full);
      seeds.add(t + "_empty_" + f, static_cast<std::uint8_t>(fix | scalar_bit), none);
    }
  }
}

}  // namespace

void write_seeds(kshot_fuzz::SeedWriter& seeds) {
  seeds_of<float>(seeds, "f32", 0);
  seeds_of<double>(seeds, "f64", 2);
}
