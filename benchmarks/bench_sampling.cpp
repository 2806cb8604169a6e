// SPDX-License-Identifier: MIT
// Episode sampling: kshot::EpisodeSampler's index sampling, sampling plus gathering d = 640 float features, and
// the bare memcpy of the same rows (the bandwidth yardstick of the gather). Peers outside this binary live in
// benchmarks/peers/ (numpy_sampling.py: the obvious numpy.random.Generator.choice sampler).
//
// Dataset: 60,000 examples with labels assigned round-robin (row r has class r % C), C = 10 or 1,000; features
// are 60,000 x 640 float (154 MB, drawn once). Every benchmark is named `<label>/omp:<threads>` and labelled
// `<label>`:
//   sampling_index_<N>w<K>s<Q>q_c<C>               sampler.sample(i, Episode&), i = 0, 1, 2, ... (one episode
//                                                  per iteration; items/s = episodes/s)
//   sampling_gather_<N>w<K>s<Q>q_c<C>_d640         sampler.sample<float>(i, features, GatheredEpisode&)
//                                                  (episodes/s and bytes/s of the gathered rows)
//   sampling_memcpy_rows_<N>w<K>s<Q>q_c<C>_d640    yardstick: memcpy of the same rows (the support and query
//                                                  rows of precomputed episodes, cycled) into one buffer
//   sampling_batch64_<N>w<K>s<Q>q_c<C>_d640        sampler.sample_batch(first, 64, features, out) at 1 and 2
//                                                  threads (one iteration = 64 episodes)
// The yardstick's name starts with "sampling_" so that `scripts/bench sampling` runs it too.
//
// Defaults (overridable on the command line, the last flag wins): --benchmark_min_time=0.3,
// --benchmark_repetitions=5, --benchmark_display_aggregates_only=true. compare.py uses the median.

#include <kshot/core/random.hpp>
#include <kshot/core/threads.hpp>
#include <kshot/core/types.hpp>
#include <kshot/core/version.hpp>
#include <kshot/data/class_index.hpp>
#include <kshot/sampling/episode.hpp>
#include <kshot/sampling/episode_sampler.hpp>

#include "common.hpp"

#include <benchmark/benchmark.h>
#include <Eigen/Core>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>


namespace {

using kshot::Index;
using kshot::Label;
using Matrix = kshot::RowMatrixX<float>;

constexpr Index num_examples = 60000;
constexpr Index feature_dim = 640;
constexpr Index batch_size = 64;
constexpr std::uint64_t data_seed = 20240611;
constexpr std::uint64_t sampler_seed = 42;
constexpr Index yardstick_episodes = 4096;  // episodes whose rows the memcpy yardstick cycles through

struct Case {
  Index ways, shots, queries, classes;
};

// Only valid combinations: a 20-way episode needs at least 20 classes.
constexpr Case cases[] = {{5, 5, 15, 10}, {5, 5, 15, 1000}, {20, 1, 15, 1000}};
constexpr int batch_thread_counts[] = {1, 2};

std::string case_tag(const Case& c) {
  return std::to_string(c.ways) + "w" + std::to_string(c.shots) + "s" + std::to_string(c.queries) + "q_c" +
         std::to_string(c.classes);
}

Index rows_per_episode(const Case& c) { return c.ways * (c.shots + c.queries); }

double bytes_per_episode(const Case& c) {
  return double(rows_per_episode(c)) * double(feature_dim) * double(sizeof(float));
}

// The class index and sampler of a case, cached (Google Benchmark calls a benchmark function once per trial run
// and per repetition).
struct Setup {
  kshot::ClassIndex index;
  std::unique_ptr<kshot::EpisodeSampler> sampler;
};

const Setup& setup_of(const Case& c) {
  static std::map<std::string, Setup> cache;
  const std::string key = case_tag(c);
  auto it = cache.find(key);
  if (it == cache.end()) {
    kshot::LabelVector labels(num_examples);
    for (Index r = 0; r < num_examples; ++r) labels[r] = static_cast<Label>(r % c.classes);
    Setup s;
    s.index = kshot::ClassIndex(labels, c.classes);
    s.sampler = std::make_unique<kshot::EpisodeSampler>(s.index, kshot::EpisodeConfig{c.ways, c.shots, c.queries},
                                                        sampler_seed);
    it = cache.emplace(key, std::move(s)).first;
  }
  return it->second;
}

// 60,000 x 640 standard normals, drawn once.
const Matrix& features() {
  static const Matrix m = [] {
    Matrix x(num_examples, feature_dim);
    kshot::RandomStream rng(data_seed, 1);
    rng.fill_normal(x);
    return x;
  }();
  return m;
}

// Checks one episode's shape and contents: `ways` distinct classes, shots and queries per label, every row of
// the class its label names (labels are round-robin: row r has class r % C), and no row twice.
std::string check_episode(const kshot::Episode& e, const Case& c, Index i) {
  if (e.index != i) return "episode index is " + std::to_string(e.index) + ", expected " + std::to_string(i);
  if (e.ways() != c.ways) return "episode has " + std::to_string(e.ways()) + " classes";
  if (static_cast<Index>(e.support_rows.size()) != c.ways * c.shots ||
      static_cast<Index>(e.support_labels.size()) != c.ways * c.shots)
    return "support set has the wrong size";
  if (static_cast<Index>(e.query_rows.size()) != c.ways * c.queries ||
      static_cast<Index>(e.query_labels.size()) != c.ways * c.queries)
    return "query set has the wrong size";
  std::set<Label> classes(e.classes.begin(), e.classes.end());
  if (static_cast<Index>(classes.size()) != c.ways) return "episode classes repeat";
  std::set<Index> seen;
  auto check_rows = [&](const std::vector<Index>& rows, const std::vector<Label>& labels) -> std::string {
    for (std::size_t k = 0; k < rows.size(); ++k) {
      const Index r = rows[k];
      const Label l = labels[k];
      if (r < 0 || r >= num_examples) return "row " + std::to_string(r) + " is out of range";
      if (l < 0 || l >= c.ways) return "label " + std::to_string(l) + " is out of range";
      if (r % c.classes != e.classes[static_cast<std::size_t>(l)])
        return "row " + std::to_string(r) + " is not of class " + std::to_string(e.classes[static_cast<std::size_t>(l)]);
      if (!seen.insert(r).second) return "row " + std::to_string(r) + " appears twice";
    }
    return {};
  };
  std::string error = check_rows(e.support_rows, e.support_labels);
  if (error.empty()) error = check_rows(e.query_rows, e.query_labels);
  return error;
}

bool same_rows(const kshot::Episode& a, const kshot::Episode& b) {
  return a.classes == b.classes && a.support_rows == b.support_rows && a.query_rows == b.query_rows &&
         a.support_labels == b.support_labels && a.query_labels == b.query_labels;
}

// Checks a gathered episode: its episode is valid, equals a fresh sample of the same i, and every gathered row
// equals its source row bit for bit.
std::string check_gathered(const kshot::GatheredEpisode<float>& g, const kshot::EpisodeSampler& sampler,
                           const Case& c, Index i) {
  std::string error = check_episode(g.episode, c, i);
  if (!error.empty()) return error;
  if (!same_rows(g.episode, sampler.sample(i))) return "episode " + std::to_string(i) + " does not regenerate";
  const Matrix& x = features();
  const auto support = g.support();
  const auto query = g.query();
  if (support.rows() != c.ways * c.shots || query.rows() != c.ways * c.queries || support.cols() != feature_dim ||
      query.cols() != feature_dim)
    return "gathered features have the wrong shape";
  const auto row_bytes = static_cast<std::size_t>(feature_dim) * sizeof(float);
  for (Index k = 0; k < support.rows(); ++k)
    if (std::memcmp(support.row(k).data(), x.row(g.episode.support_rows[static_cast<std::size_t>(k)]).data(), row_bytes))
      return "support row " + std::to_string(k) + " differs from its source row";
  for (Index k = 0; k < query.rows(); ++k)
    if (std::memcmp(query.row(k).data(), x.row(g.episode.query_rows[static_cast<std::size_t>(k)]).data(), row_bytes))
      return "query row " + std::to_string(k) + " differs from its source row";
  return {};
}

// items_per_second (episodes/s) and, where rows are gathered, bytes_per_second (of the gathered rows).
void set_rates(benchmark::State& state, Index episodes_per_iteration, double bytes_per_iteration) {
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * episodes_per_iteration);
  if (bytes_per_iteration > 0)
    state.SetBytesProcessed(static_cast<std::int64_t>(double(state.iterations()) * bytes_per_iteration));
}

// (a) sampler.sample(i, Episode&) with a reused Episode, i = 0, 1, 2, ...
void bm_index(benchmark::State& state, Case c, std::string label) {
  state.SetLabel(label);
  kshot::ThreadCountGuard guard(1);
  const kshot::EpisodeSampler& sampler = *setup_of(c).sampler;
  kshot::Episode episode;
  try {
    sampler.sample(0, episode);  // warm-up: the episode's vectors and the shuffle's table grow
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  std::string error = check_episode(episode, c, 0);
  if (error.empty()) {
    sampler.sample(12345, episode);
    error = check_episode(episode, c, 12345);
    if (error.empty() && !same_rows(episode, sampler.sample(12345))) error = "episode 12345 does not regenerate";
  }
  if (!error.empty()) {
    state.SkipWithError(("validation failed: " + error).c_str());
    return;
  }
  Index i = 0;
  for (auto _ : state) {
    sampler.sample(i++, episode);
    benchmark::DoNotOptimize(episode.query_rows.data());
    benchmark::ClobberMemory();
  }
  set_rates(state, 1, 0.0);
}

// (b) sampler.sample<float>(i, features, GatheredEpisode<float>&) with a reused GatheredEpisode.
void bm_gather(benchmark::State& state, Case c, std::string label) {
  state.SetLabel(label);
  kshot::ThreadCountGuard guard(1);
  const kshot::EpisodeSampler& sampler = *setup_of(c).sampler;
  const kshot::ConstRowMatrixRef<float> x(features());
  kshot::GatheredEpisode<float> out;
  try {
    sampler.sample<float>(0, x, out);  // warm-up
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  std::string error = check_gathered(out, sampler, c, 0);
  if (error.empty()) {
    sampler.sample<float>(777, x, out);
    error = check_gathered(out, sampler, c, 777);
  }
  if (!error.empty()) {
    state.SkipWithError(("validation failed: " + error).c_str());
    return;
  }
  Index i = 0;
  for (auto _ : state) {
    sampler.sample<float>(i++, x, out);
    benchmark::DoNotOptimize(out.query().data());
    benchmark::ClobberMemory();
  }
  set_rates(state, 1, bytes_per_episode(c));
}

// The rows (support then query) of episodes 0 .. yardstick_episodes - 1, cached: the yardstick copies exactly
// the rows the sampler gathers, without the sampling.
const std::vector<Index>& yardstick_rows(const Case& c) {
  static std::map<std::string, std::vector<Index>> cache;
  const std::string key = case_tag(c);
  auto it = cache.find(key);
  if (it == cache.end()) {
    const kshot::EpisodeSampler& sampler = *setup_of(c).sampler;
    std::vector<Index> rows;
    rows.reserve(static_cast<std::size_t>(yardstick_episodes * rows_per_episode(c)));
    kshot::Episode e;
    for (Index i = 0; i < yardstick_episodes; ++i) {
      sampler.sample(i, e);
      rows.insert(rows.end(), e.support_rows.begin(), e.support_rows.end());
      rows.insert(rows.end(), e.query_rows.begin(), e.query_rows.end());
    }
    it = cache.emplace(key, std::move(rows)).first;
  }
  return it->second;
}

// (c) the yardstick: per iteration, memcpy the rows of one precomputed episode from the features into one
// (rows x 640) buffer, cycling through yardstick_episodes episodes.
void bm_memcpy_rows(benchmark::State& state, Case c, std::string label) {
  state.SetLabel(label);
  const Matrix& x = features();
  const std::vector<Index>& rows = yardstick_rows(c);
  const Index per_episode = rows_per_episode(c);
  const auto row_bytes = static_cast<std::size_t>(feature_dim) * sizeof(float);
  Matrix buffer(per_episode, feature_dim);
  auto copy = [&](Index e) {
    const Index* r = rows.data() + e * per_episode;
    for (Index k = 0; k < per_episode; ++k) std::memcpy(buffer.row(k).data(), x.row(r[k]).data(), row_bytes);
  };
  copy(1);  // warm-up, and validate: the buffer holds episode 1's rows
  for (Index k = 0; k < per_episode; ++k) {
    if (buffer.row(k) != x.row(rows[static_cast<std::size_t>(per_episode + k)])) {
      state.SkipWithError("validation failed: a copied row differs from its source row");
      return;
    }
  }
  Index e = 0;
  for (auto _ : state) {
    copy(e);
    if (++e == yardstick_episodes) e = 0;
    benchmark::DoNotOptimize(buffer.data());
    benchmark::ClobberMemory();
  }
  set_rates(state, 1, bytes_per_episode(c));
}

// (d) sampler.sample_batch(first, 64, features, out) at `threads` threads, first = 0, 64, 128, ...
void bm_batch(benchmark::State& state, Case c, int threads, std::string label) {
  state.SetLabel(label);
  kshot::ThreadCountGuard guard(threads);
  const kshot::EpisodeSampler& sampler = *setup_of(c).sampler;
  const kshot::ConstRowMatrixRef<float> x(features());
  std::vector<kshot::GatheredEpisode<float>> out;
  try {
    sampler.sample_batch<float>(0, batch_size, x, out);  // warm-up
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  std::string error = static_cast<Index>(out.size()) == batch_size ? "" : "the batch has the wrong size";
  for (Index b : {Index(0), Index(1), batch_size - 1})
    if (error.empty()) error = check_gathered(out[static_cast<std::size_t>(b)], sampler, c, b);
  if (!error.empty()) {
    state.SkipWithError(("validation failed: " + error).c_str());
    return;
  }
  Index first = 0;
  for (auto _ : state) {
    sampler.sample_batch<float>(first, batch_size, x, out);
    first += batch_size;
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  set_rates(state, batch_size, double(batch_size) * bytes_per_episode(c));
}

template <class Fn, class... Args>
void register_case(const std::string& label, int threads, Fn fn, Args... args) {
  const std::string name = label + "/omp:" + std::to_string(threads);
  benchmark::RegisterBenchmark(name.c_str(), fn, args..., label)->UseRealTime()->Unit(benchmark::kMicrosecond);
}

void register_all() {
  for (const Case& c : cases) register_case("sampling_index_" + case_tag(c), 1, bm_index, c);
  for (const Case& c : cases) {
    const std::string tag = case_tag(c) + "_d" + std::to_string(feature_dim);
    register_case("sampling_gather_" + tag, 1, bm_gather, c);
    register_case("sampling_memcpy_rows_" + tag, 1, bm_memcpy_rows, c);
  }
  const Case& c = cases[0];
  const std::string tag = case_tag(c) + "_d" + std::to_string(feature_dim);
  for (int t : batch_thread_counts) register_case("sampling_batch64_" + tag, t, bm_batch, c, t);
}

}  // namespace

int main(int argc, char** argv) {
  return kshot::bench::run(argc, argv, {std::begin(batch_thread_counts), std::end(batch_thread_counts)}, register_all, [] {
    benchmark::AddCustomContext("sampling_dataset", std::to_string(num_examples) +
                                                        " examples, round-robin labels, d = " +
                                                        std::to_string(feature_dim) + " float");
  });
}
