// SPDX-License-Identifier: MIT
// Few-shot classifiers: the prototypical-network episode loss with its gradients (kshot::ProtoNet<float>,
// Euclidean scores as easyfsl), and episodic evaluation throughput (kshot::evaluate_episodes). The peer lives in
// benchmarks/peers/easyfsl_protonet.py (easyfsl's PrototypicalNetworks with an identity backbone, forward and
// backward in PyTorch, or the same formula in plain PyTorch when easyfsl's source is not available).
//
// Every benchmark is named `<label>/omp:<threads>` and labelled `<label>`:
//   fewshot_protonet_loss_grad_5w5s15q_d<D>   (D = 64, 640, 1600; 1 thread) one pre-generated 5-way 5-shot
//                                             15-query episode (support 25 x D, query 75 x D, float standard
//                                             normals), a reused ProtoNet<float> and gradient buffers; one
//                                             iteration is loss(support, labels, query, labels, grad_support,
//                                             grad_query) (items/s = episodes/s)
//   fewshot_eval_protonet_5w5s15q_d640        (1 and 2 threads) evaluate_episodes(ProtoNet<float>(), sampler,
//                                             features, 10000) over 60,000 x 640 float features with 10 classes
//                                             (round-robin labels); one iteration is 10,000 episodes (items/s =
//                                             episodes/s), run once per repetition, 3 repetitions
//
// Defaults (overridable on the command line, the last flag wins): --benchmark_min_time=0.3,
// --benchmark_repetitions=5, --benchmark_display_aggregates_only=true; the evaluation cases fix their own
// iterations (1) and repetitions (3). compare.py uses the median.

#include <kshot/core/random.hpp>
#include <kshot/core/threads.hpp>
#include <kshot/core/types.hpp>
#include <kshot/data/class_index.hpp>
#include <kshot/eval/episodic.hpp>
#include <kshot/fewshot/protonet.hpp>
#include <kshot/sampling/episode.hpp>
#include <kshot/sampling/episode_sampler.hpp>

#include "common.hpp"

#include <benchmark/benchmark.h>
#include <Eigen/Core>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace {

using kshot::Index;
using kshot::Label;
template <class Scalar>
using Matrix = kshot::RowMatrixX<Scalar>;

constexpr Index ways = 5, shots = 5, queries = 15;
constexpr Index loss_dims[] = {64, 640, 1600};
constexpr std::uint64_t episode_seed = 20240611;

constexpr Index eval_examples = 60000;
constexpr Index eval_dim = 640;
constexpr Index eval_classes = 10;
constexpr Index eval_episodes = 10000;
constexpr std::uint64_t eval_data_seed = 20240612;
constexpr std::uint64_t eval_sampler_seed = 42;
constexpr int eval_thread_counts[] = {1, 2};

const std::string episode_tag = std::to_string(ways) + "w" + std::to_string(shots) + "s" + std::to_string(queries) + "q";

// ---- (a) the episode loss with gradients ------------------------------------------------------------------

// One episode: support rows grouped by label (shots each), query rows grouped by label (queries each), standard
// normal features drawn from a stream seeded per dimension.
struct LossEpisode {
  Matrix<float> support, query;
  kshot::LabelVector support_labels, query_labels;
};

const LossEpisode& loss_episode(Index d) {
  static std::map<Index, LossEpisode> cache;
  auto it = cache.find(d);
  if (it == cache.end()) {
    LossEpisode e;
    e.support.resize(ways * shots, d);
    e.query.resize(ways * queries, d);
    kshot::RandomStream rng(episode_seed, static_cast<std::uint64_t>(d));
    rng.fill_normal(e.support);
    rng.fill_normal(e.query);
    e.support_labels.resize(ways * shots);
    e.query_labels.resize(ways * queries);
    for (Index j = 0; j < ways * shots; ++j) e.support_labels[j] = static_cast<Label>(j / shots);
    for (Index j = 0; j < ways * queries; ++j) e.query_labels[j] = static_cast<Label>(j / queries);
    it = cache.emplace(d, std::move(e)).first;
  }
  return it->second;
}

template <class A, class B>
double max_rel_diff(const A& a, const B& b) {
  const double scale = std::max(1e-30, b.cwiseAbs().maxCoeff());
  return (a - b).cwiseAbs().maxCoeff() / scale;
}

// Validates the float loss and gradients against a double run on the same (widened) data, and the double
// gradients against central differences of the double loss on one support and one query coordinate.
std::string check_loss(const LossEpisode& e, float loss, const Matrix<float>& grad_support,
                       const Matrix<float>& grad_query) {
  if (!std::isfinite(loss) || !grad_support.allFinite() || !grad_query.allFinite())
    return "the loss or a gradient is not finite";
  Matrix<double> support = e.support.cast<double>(), query = e.query.cast<double>();
  Matrix<double> gs(support.rows(), support.cols()), gq(query.rows(), query.cols());
  kshot::ProtoNet<double> net;
  const double ref = net.loss(support, e.support_labels, query, e.query_labels, gs, gq);
  if (std::abs(double(loss) - ref) > 1e-4 * std::max(1.0, std::abs(ref)))
    return "float loss " + std::to_string(loss) + " differs from the double loss " + std::to_string(ref);
  const double ds = max_rel_diff(grad_support.cast<double>(), gs), dq = max_rel_diff(grad_query.cast<double>(), gq);
  if (ds > 1e-3 || dq > 1e-3)
    return "float gradients differ from double ones (relative " + std::to_string(std::max(ds, dq)) + ")";
  const double h = 1e-5;
  auto central = [&](Matrix<double>& m, Index r, Index c) {
    const double x = m(r, c);
    m(r, c) = x + h;
    const double up = net.loss(support, e.support_labels, query, e.query_labels);
    m(r, c) = x - h;
    const double down = net.loss(support, e.support_labels, query, e.query_labels);
    m(r, c) = x;
    return (up - down) / (2 * h);
  };
  const Index col = support.cols() / 3;
  const double fs = central(support, 7, col), fq = central(query, 31, col);
  const double scale = std::max({1e-6, std::abs(fs), std::abs(fq)});
  if (std::abs(fs - gs(7, col)) > 1e-5 * scale + 1e-9 || std::abs(fq - gq(31, col)) > 1e-5 * scale + 1e-9)
    return "analytic gradients disagree with central differences (support " + std::to_string(gs(7, col)) + " vs " +
           std::to_string(fs) + ", query " + std::to_string(gq(31, col)) + " vs " + std::to_string(fq) + ")";
  return {};
}

void bm_loss_grad(benchmark::State& state, Index d, std::string label) {
  state.SetLabel(label);
  kshot::ThreadCountGuard guard(1);
  const LossEpisode& e = loss_episode(d);
  kshot::ProtoNet<float> net;
  Matrix<float> grad_support(e.support.rows(), d), grad_query(e.query.rows(), d);
  float loss = 0;
  // DoNotOptimize on a float lvalue itself ("+m,r") is miscompiled by GCC (it read back garbage in this
  // file); escaping its address and clobbering memory keeps every store of the loss instead.
  float* loss_address = &loss;
  try {
    // warm-up (scratch matrices grow), and the value validated below
    loss = net.loss(e.support, e.support_labels, e.query, e.query_labels, grad_support, grad_query);
  } catch (const std::exception& ex) {
    state.SkipWithError(ex.what());
    return;
  }
  const std::string error = check_loss(e, loss, grad_support, grad_query);
  if (!error.empty()) {
    state.SkipWithError(("validation failed: " + error).c_str());
    return;
  }
  for (auto _ : state) {
    loss = net.loss(e.support, e.support_labels, e.query, e.query_labels, grad_support, grad_query);
    benchmark::DoNotOptimize(loss_address);
    benchmark::DoNotOptimize(grad_support.data());
    benchmark::DoNotOptimize(grad_query.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
}

// ---- (b) episodic evaluation --------------------------------------------------------------------------------

struct EvalSetup {
  kshot::ClassIndex index;
  std::unique_ptr<kshot::EpisodeSampler> sampler;
  Matrix<float> features;
};

const EvalSetup& eval_setup() {
  static const std::unique_ptr<EvalSetup> setup = [] {
    auto s = std::make_unique<EvalSetup>();
    kshot::LabelVector labels(eval_examples);
    for (Index r = 0; r < eval_examples; ++r) labels[r] = static_cast<Label>(r % eval_classes);
    s->index = kshot::ClassIndex(labels, eval_classes);
    s->sampler = std::make_unique<kshot::EpisodeSampler>(s->index, kshot::EpisodeConfig{ways, shots, queries},
                                                         eval_sampler_seed);
    s->features.resize(eval_examples, eval_dim);
    kshot::RandomStream rng(eval_data_seed, 1);
    rng.fill_normal(s->features);
    return s;
  }();
  return *setup;
}

// Checks a short evaluation: shapes and counts, and each episode's accuracy against a direct fit and predict
// of a fresh ProtoNet<float> on the same gathered episode.
std::string check_eval(const kshot::EpisodicEvaluation& r, const EvalSetup& s, Index episodes) {
  if (static_cast<Index>(r.episode_accuracy.size()) != episodes) return "wrong number of episode accuracies";
  if (r.confusion.rows() != eval_classes || r.confusion.cols() != eval_classes) return "wrong confusion shape";
  if (r.confusion.sum() != episodes * ways * queries) return "confusion counts do not add up to the queries";
  if (!(r.accuracy.mean >= 0.0 && r.accuracy.mean <= 1.0)) return "mean accuracy outside [0, 1]";
  kshot::GatheredEpisode<float> g;
  for (Index e = 0; e < episodes; ++e) {
    s.sampler->sample<float>(e, s.features, g);
    kshot::ProtoNet<float> net;
    net.fit(g.support(), g.support_labels());
    const kshot::LabelVector predicted = net.predict(g.query());
    Index correct = 0;
    for (Index q = 0; q < predicted.size(); ++q)
      correct += predicted[q] == g.episode.query_labels[static_cast<std::size_t>(q)] ? 1 : 0;
    const double expected = double(correct) / double(predicted.size());
    if (r.episode_accuracy[static_cast<std::size_t>(e)] != expected)
      return "episode " + std::to_string(e) + " accuracy " + std::to_string(r.episode_accuracy[static_cast<std::size_t>(e)]) +
             " differs from a direct fit/predict (" + std::to_string(expected) + ")";
  }
  return {};
}

void bm_eval(benchmark::State& state, int threads, std::string label) {
  state.SetLabel(label);
  const EvalSetup& s = eval_setup();
  kshot::ThreadCountGuard guard(threads);
  const kshot::ProtoNet<float> classifier;
  kshot::EpisodicEvaluation result;
  try {
    result = kshot::evaluate_episodes(classifier, *s.sampler, s.features, 64);  // warm-up
  } catch (const std::exception& ex) {
    state.SkipWithError(ex.what());
    return;
  }
  const std::string error = check_eval(result, s, 64);
  if (!error.empty()) {
    state.SkipWithError(("validation failed: " + error).c_str());
    return;
  }
  for (auto _ : state) {
    result = kshot::evaluate_episodes(classifier, *s.sampler, s.features, eval_episodes);
    benchmark::DoNotOptimize(result.episode_accuracy.data());
    benchmark::ClobberMemory();
  }
  if (static_cast<Index>(result.episode_accuracy.size()) != eval_episodes ||
      result.confusion.sum() != eval_episodes * ways * queries) {
    state.SkipWithError("validation failed: the timed evaluation has the wrong counts");
    return;
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * eval_episodes);
  state.counters["accuracy"] = result.accuracy.mean;
}

void register_all() {
  for (Index d : loss_dims) {
    const std::string label = "fewshot_protonet_loss_grad_" + episode_tag + "_d" + std::to_string(d);
    benchmark::RegisterBenchmark((label + "/omp:1").c_str(), bm_loss_grad, d, label)
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
  }
  const std::string label = "fewshot_eval_protonet_" + episode_tag + "_d" + std::to_string(eval_dim);
  for (int t : eval_thread_counts)
    benchmark::RegisterBenchmark((label + "/omp:" + std::to_string(t)).c_str(), bm_eval, t, label)
        ->UseRealTime()
        ->Iterations(1)
        ->Repetitions(3)
        ->Unit(benchmark::kMillisecond);
}

}  // namespace

int main(int argc, char** argv) {
  return kshot::bench::run(argc, argv, {std::begin(eval_thread_counts), std::end(eval_thread_counts)}, register_all, [] {
    benchmark::AddCustomContext("fewshot_loss_episode", episode_tag + ", standard normal float features");
    benchmark::AddCustomContext("fewshot_eval_dataset", std::to_string(eval_examples) + " examples, " +
                                                            std::to_string(eval_classes) +
                                                            " classes (round-robin labels), d = " +
                                                            std::to_string(eval_dim) + " float; " +
                                                            std::to_string(eval_episodes) + " episodes per call");
  });
}
