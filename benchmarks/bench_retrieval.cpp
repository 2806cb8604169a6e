// SPDX-License-Identifier: MIT
// Exact top-k retrieval: kshot::FlatIndex (inner product) against FAISS's IndexFlatIP in the same binary and run,
// over a catalogue of random unit vectors (float, d = 128), batch (many queries) and single-query latency.
//
// Every benchmark is named `<label>/omp:<threads>` and labelled `<label>`; compare.py keys its rows on the
// label (the case) and the omp:<threads> part. Labels: retrieval_flatip_f32_<n>x<d>_q<nq>_k<k> for kshot cases,
// faiss_flatip_f32_<n>x<d>_q<nq>_k<k> for the FAISS yardstick of the same case (compiled in only when
// KSHOT_BENCH_HAVE_FAISS is defined: benchmarks/CMakeLists.txt defines it when it finds libfaiss), and, on builds
// that screen in bfloat16 (FlatIndex::screening_available), retrieval_noscreen_flatip_<tag> for the batch cases
// with screening turned off (the exact float kernel alone; the results are the same).
//
// kshot's case validates its ids once against FAISS's (counters id_mismatch: positions whose id differs;
// set_mismatch: kshot ids missing from FAISS's top-k; both exact, so only ties and last-bit rounding can
// differ) and measures both recalls@k (recall_kshot, recall_faiss) against an exact top-k computed in double
// precision for the first 100 queries. Run FAISS with OMP_WAIT_POLICY=PASSIVE on few cores, else OpenBLAS's and
// OpenMP's workers spin on the same cores.
//
// Defaults (overridable on the command line, the last flag wins): --benchmark_min_time=0.3,
// --benchmark_repetitions=5, --benchmark_display_aggregates_only=true. compare.py uses the median. The 1M case
// costs seconds per iteration: filter it out (--benchmark_filter) when iterating.

#include <kshot/core/random.hpp>
#include <kshot/core/threads.hpp>
#include <kshot/core/types.hpp>
#include <kshot/retrieval/flat_index.hpp>

#include "common.hpp"

#include <benchmark/benchmark.h>
#include <Eigen/Core>

#ifdef KSHOT_BENCH_HAVE_FAISS
#include <faiss/IndexFlat.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#ifdef KSHOT_BENCH_HAVE_FAISS
extern "C" void openblas_set_num_threads(int);  // FAISS's BLAS (OpenBLAS on Debian)
#endif

namespace {

using kshot::Index;
using kshot::ItemId;
using Matrix = kshot::RowMatrixX<float>;
#ifdef KSHOT_BENCH_HAVE_FAISS
using FaissId = faiss::Index::idx_t;  // faiss 1.7.3 (Debian 12) has it in Index; later versions also as faiss::idx_t
#endif

constexpr int thread_counts[] = {1, 2};

struct Case {
  Index n, d, nq, k;
};

const Case cases[] = {
    {100000, 128, 1000, 100},
    {100000, 128, 1, 100},
    {1000000, 128, 1000, 100},
    {1000000, 128, 1, 100},
};

std::string tag(const Case& c) {
  return "f32_" + std::to_string(c.n) + "x" + std::to_string(c.d) + "_q" + std::to_string(c.nq) + "_k" +
         std::to_string(c.k);
}

/// queries_per_s, and GFLOP/s of the score products (2 n nq d per call), which compare.py reports.
void set_rates(benchmark::State& state, const Case& c) {
  state.counters["queries_per_s"] =
      benchmark::Counter(static_cast<double>(c.nq), benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP/s"] =
      benchmark::Counter(2.0 * static_cast<double>(c.n) * static_cast<double>(c.nq) * static_cast<double>(c.d) * 1e-9,
                         benchmark::Counter::kIsIterationInvariantRate);
}

/// Rows of standard normal values scaled to unit length.
Matrix unit_rows(Index n, Index d, std::uint64_t seed) {
  Matrix m(n, d);
  kshot::RandomStream rng(seed);
  rng.fill_normal(m);
  m.rowwise().normalize();
  return m;
}

/// The catalogue, queries and both indexes of a (n, d) catalogue, built once per process.
struct Data {
  Matrix catalogue;  // kept for the double-precision reference
  Matrix queries;    // the largest query batch of the catalogue's cases
  std::unique_ptr<kshot::FlatIndex<float>> index;
#ifdef KSHOT_BENCH_HAVE_FAISS
  std::unique_ptr<faiss::IndexFlatIP> faiss;
#endif
};

Data& data_for(Index n, Index d) {
  static std::map<std::pair<Index, Index>, Data> all;
  auto it = all.find({n, d});
  if (it != all.end()) return it->second;
  Data& data = all[{n, d}];
  data.catalogue = unit_rows(n, d, 42 + static_cast<std::uint64_t>(n));
  data.queries = unit_rows(1000, d, 7);
  data.index = std::make_unique<kshot::FlatIndex<float>>(d, kshot::SearchMetric::inner_product);
  kshot::IdVector ids = kshot::IdVector::LinSpaced(n, 0, n - 1);
  data.index->add(data.catalogue, ids);
#ifdef KSHOT_BENCH_HAVE_FAISS
  data.faiss = std::make_unique<faiss::IndexFlatIP>(static_cast<FaissId>(d));
  data.faiss->add(static_cast<FaissId>(n), data.catalogue.data());
#endif
  return data;
}

/**
 * The exact top-k ids of the first min(nq, 100) queries, from a double-precision index of the same catalogue
 * (built once per catalogue and k, then the catalogue's double copy is dropped): the reference both recalls are
 * measured against.
 */
const std::vector<std::vector<ItemId>>& reference_ids(const Case& c) {
  static std::map<std::tuple<Index, Index, Index, Index>, std::vector<std::vector<ItemId>>> all;
  const Index m = std::min<Index>(c.nq, 100);
  const auto key = std::make_tuple(c.n, c.d, m, c.k);
  auto it = all.find(key);
  if (it != all.end()) return it->second;
  Data& data = data_for(c.n, c.d);
  kshot::FlatIndex<double> exact(c.d, kshot::SearchMetric::inner_product);
  exact.reserve(c.n);
  for (Index r0 = 0; r0 < c.n; r0 += 65536) {
    const Index rows = std::min<Index>(65536, c.n - r0);
    const kshot::RowMatrixX<double> block = data.catalogue.middleRows(r0, rows).cast<double>();
    exact.add(block, kshot::IdVector::LinSpaced(rows, r0, r0 + rows - 1));
  }
  const kshot::RowMatrixX<double> queries = data.queries.topRows(m).cast<double>();
  const kshot::SearchResult<double> truth = exact.search(queries, c.k);
  std::vector<std::vector<ItemId>> ids(static_cast<std::size_t>(m));
  for (Index q = 0; q < m; ++q)
    for (Index i = 0; i < c.k; ++i) ids[static_cast<std::size_t>(q)].push_back(truth.ids(q, i));
  return all[key] = std::move(ids);
}

/// Recall@k of `ids` (row q: query q's k ids) against reference_ids(c), over its queries.
template <class Ids>
double recall(const Case& c, const Ids& ids) {
  const auto& truth = reference_ids(c);
  double hits = 0, total = 0;
  for (std::size_t q = 0; q < truth.size(); ++q) {
    const std::set<ItemId> expected(truth[q].begin(), truth[q].end());
    for (Index i = 0; i < c.k; ++i) hits += static_cast<double>(expected.count(ids(static_cast<Index>(q), i)));
    total += static_cast<double>(c.k);
  }
  return hits / total;
}

void set_threads(int threads) {
  kshot::set_num_threads(threads);
#ifdef KSHOT_BENCH_HAVE_FAISS
  openblas_set_num_threads(threads);
#endif
}

void bm_kshot(benchmark::State& state, Case c, int threads, std::string label, bool screening) {
  state.SetLabel(label);
  Data& data = data_for(c.n, c.d);
  set_threads(threads);
  data.index->set_screening(screening);
  const auto queries = data.queries.topRows(c.nq);
  kshot::SearchResult<float> result;
  data.index->search(queries, c.k, result);  // grows the buffers
  state.counters["recall_kshot"] = recall(c, [&](Index q, Index i) { return result.ids(q, i); });
#ifdef KSHOT_BENCH_HAVE_FAISS
  {
    std::vector<float> distances(static_cast<std::size_t>(c.nq * c.k));
    std::vector<FaissId> labels(static_cast<std::size_t>(c.nq * c.k));
    data.faiss->search(static_cast<FaissId>(c.nq), queries.data(), static_cast<FaissId>(c.k), distances.data(),
                       labels.data());
    double id_mismatch = 0, set_mismatch = 0;
    for (Index q = 0; q < c.nq; ++q) {
      std::set<ItemId> theirs;
      for (Index i = 0; i < c.k; ++i) theirs.insert(labels[static_cast<std::size_t>(q * c.k + i)]);
      for (Index i = 0; i < c.k; ++i) {
        if (result.ids(q, i) != labels[static_cast<std::size_t>(q * c.k + i)]) ++id_mismatch;
        if (theirs.count(result.ids(q, i)) == 0) ++set_mismatch;
      }
    }
    state.counters["id_mismatch"] = id_mismatch;
    state.counters["set_mismatch"] = set_mismatch;
    state.counters["recall_faiss"] =
        recall(c, [&](Index q, Index i) { return static_cast<ItemId>(labels[static_cast<std::size_t>(q * c.k + i)]); });
  }
#endif
  for (auto _ : state) {
    data.index->search(queries, c.k, result);
    benchmark::DoNotOptimize(result.ids.data());
    benchmark::ClobberMemory();
  }
  set_rates(state, c);
}

#ifdef KSHOT_BENCH_HAVE_FAISS
void bm_faiss(benchmark::State& state, Case c, int threads, std::string label) {
  state.SetLabel(label);
  Data& data = data_for(c.n, c.d);
  set_threads(threads);
  const auto queries = data.queries.topRows(c.nq);
  std::vector<float> distances(static_cast<std::size_t>(c.nq * c.k));
  std::vector<FaissId> labels(static_cast<std::size_t>(c.nq * c.k));
  data.faiss->search(static_cast<FaissId>(c.nq), queries.data(), static_cast<FaissId>(c.k), distances.data(),
                     labels.data());
  for (auto _ : state) {
    data.faiss->search(static_cast<FaissId>(c.nq), queries.data(), static_cast<FaissId>(c.k), distances.data(),
                       labels.data());
    benchmark::DoNotOptimize(labels.data());
    benchmark::ClobberMemory();
  }
  set_rates(state, c);
}
#endif

template <class Fn, class... Extra>
void register_case(const std::string& label, Fn fn, const Case& c, int threads, Extra... extra) {
  const std::string name = label + "/omp:" + std::to_string(threads);
  benchmark::RegisterBenchmark(name.c_str(), fn, c, threads, label, extra...)
      ->UseRealTime()
      ->Unit(c.nq == 1 ? benchmark::kMicrosecond : benchmark::kMillisecond);
}

void register_all() {
  for (const Case& c : cases) {
    for (int t : thread_counts) {
      register_case("retrieval_flatip_" + tag(c), bm_kshot, c, t, true);
      // Where the build screens in bfloat16 (the default), the same search without it: the exact float kernel alone.
      if (kshot::FlatIndex<float>::screening_available && c.nq > kshot::FlatIndex<float>::lazy_queries)
        register_case("retrieval_noscreen_flatip_" + tag(c), bm_kshot, c, t, false);
#ifdef KSHOT_BENCH_HAVE_FAISS
      register_case("faiss_flatip_" + tag(c), bm_faiss, c, t);
#endif
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  return kshot::bench::run(argc, argv, {std::begin(thread_counts), std::end(thread_counts)}, register_all, [] {
#ifdef KSHOT_BENCH_HAVE_FAISS
    benchmark::AddCustomContext("faiss", "IndexFlatIP (libfaiss, in-run yardstick)");
#else
    benchmark::AddCustomContext("faiss", "not found at build time");
#endif
  });
}
