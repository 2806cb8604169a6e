// SPDX-License-Identifier: MIT
// Episodic training throughput and accuracy (peer: benchmarks/peers/easyfsl_train.py).
//
// Every benchmark is named `<label>/omp:1` and labelled `<label>`, one thread:
//   train_protonet_mlp784x256x64_adam_5w5s15q   one iteration is Trainer::train_step(): sample a 5-way 5-shot
//                               15-query episode of the Fashion-MNIST base categories (T-shirt/top, Trouser,
//                               Pullover, Dress, Coat; training images, pixels / 255 centred by the mean base
//                               image), gather its 100 rows, forward them through Linear(784, 256)-ReLU-
//                               Linear(256, 64), ProtoNet's loss (Euclidean, easyfsl's) with its gradient,
//                               backward, Adam (lr 1e-3). items = episodes.
//   train_yardstick_gemm_mlp784x256x64_5w5s15q  the same GEMM work as one training step, as five plain
//                               single-threaded Eigen products of the same shapes (forward X W1^T, H W2^T;
//                               backward dW2 = dE^T H, dH = dE W2, dW1 = dH^T X): 90.1 MFLOP. kshot's case over
//                               this one is the fraction of bare-GEMM throughput the whole step reaches.
//   train_protonet_accuracy_seed<S>             one iteration (run once) trains a fresh model (initialised from
//                               seed S, episodes from seed S) for `accuracy_episodes` steps, then evaluates (S = 1, 2, 3, or
//                               the list in KSHOT_TRAIN_SEEDS)
//                               ProtoNet on the embedded test images of the novel categories (Sandal, Shirt,
//                               Sneaker, Bag, Ankle boot): counters novel_1shot, novel_5shot (600 episodes of
//                               5-way 15-query each), base_5shot, and the untrained model's novel accuracies.
// Without the Fashion-MNIST files the throughput cases run on seeded random pixels (same speed) and the
// accuracy cases are skipped.
#include "common.hpp"

#include <kshot/core/threads.hpp>
#include <kshot/data.hpp>
#include <kshot/eval/episodic.hpp>
#include <kshot/fewshot/protonet.hpp>
#include <kshot/nn/adam.hpp>
#include <kshot/nn/sequential.hpp>
#include <kshot/sampling.hpp>
#include <kshot/train.hpp>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <vector>

namespace {

using kshot::Index;
using kshot::Label;
using Matrix = kshot::RowMatrixX<float>;

constexpr const char* tag = "mlp784x256x64_5w5s15q";
constexpr kshot::Index accuracy_episodes = 2000;
constexpr double step_flop = 2.0 * (100.0 * 784 * 256 + 100.0 * 256 * 64 + 64.0 * 100 * 256 + 100.0 * 64 * 256 +
                                    256.0 * 100 * 784);

struct Data {
  Matrix train, test;  // centred pixels
  kshot::LabelVector train_labels, test_labels;
  bool real = false;
  std::vector<Label> base{0, 1, 2, 3, 4}, novel{5, 6, 7, 8, 9};
};

const Data& data() {
  static const std::unique_ptr<Data> d = [] {
    auto out = std::make_unique<Data>();
    try {
      auto train = kshot::load_fashion_mnist<float>(kshot::fashion_mnist_default_directory(), kshot::FashionMnistSplit::train);
      auto test = kshot::load_fashion_mnist<float>(kshot::fashion_mnist_default_directory(), kshot::FashionMnistSplit::test);
      out->train = std::move(train.features);
      out->train_labels = std::move(train.labels);
      out->test = std::move(test.features);
      out->test_labels = std::move(test.labels);
      out->real = true;
    } catch (const std::exception&) {
      kshot::RandomStream rng(5);
      out->train.resize(6000, 784);
      rng.fill_uniform(out->train, 0.0f, 1.0f);
      out->train_labels.resize(6000);
      for (Index i = 0; i < 6000; ++i) out->train_labels[i] = static_cast<Label>(i % 10);
    }
    // Centre by the mean base training image (both splits).
    const kshot::ClassIndex index(out->train_labels);
    kshot::RowVectorX<float> mean = kshot::RowVectorX<float>::Zero(784);
    const auto rows = kshot::rows_of_classes(index, out->base);
    for (Index r : rows) mean += out->train.row(r);
    mean /= static_cast<float>(rows.size());
    out->train.rowwise() -= mean;
    if (out->test.size() > 0) out->test.rowwise() -= mean;
    return out;
  }();
  return *d;
}

kshot::EpisodeConfig config(Index shots) {
  kshot::EpisodeConfig c;
  c.ways = 5;
  c.shots = shots;
  c.queries = 15;
  return c;
}

void bm_train_step(benchmark::State& state, std::string label) {
  state.SetLabel(label);
  kshot::ThreadCountGuard guard(1);
  const Data& d = data();
  const kshot::ClassIndex index(d.train_labels);
  auto model = kshot::make_mlp<float>({784, 256, 64});
  kshot::EpisodicTrainer<float> trainer(model, d.train,
                                        kshot::EpisodeObjective<float>(kshot::EpisodeSampler(index, config(5), 1, d.base)),
                                        kshot::Adam<float>(1e-3));
  for (int k = 0; k < 20; ++k) trainer.train_step();  // warm-up: buffers grow
  float loss = 0;
  float* address = &loss;
  for (auto _ : state) {
    loss = trainer.train_step();
    benchmark::DoNotOptimize(address);
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  state.counters["GFLOP/s"] = benchmark::Counter(step_flop * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["data"] = d.real ? 1 : 0;
}

void bm_yardstick(benchmark::State& state, std::string label) {
  state.SetLabel(label);
  kshot::ThreadCountGuard guard(1);
  kshot::RandomStream rng(3);
  Matrix x(100, 784), w1(256, 784), w2(64, 256), h(100, 256), e(100, 64), de(100, 64), dh(100, 256), dw1(256, 784),
      dw2(64, 256);
  rng.fill_normal(x);
  rng.fill_normal(w1);
  rng.fill_normal(w2);
  rng.fill_normal(de);
  h.setZero();
  for (auto _ : state) {
    h.noalias() = x * w1.transpose();
    e.noalias() = h * w2.transpose();
    dw2.noalias() = de.transpose() * h;
    dh.noalias() = de * w2;
    dw1.noalias() = dh.transpose() * x;
    benchmark::DoNotOptimize(e.data());
    benchmark::DoNotOptimize(dw1.data());
    benchmark::DoNotOptimize(dw2.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()));
  state.counters["GFLOP/s"] = benchmark::Counter(step_flop * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

double novel_accuracy(kshot::Sequential<float>& model, const Data& d, const std::vector<Label>& classes, Index shots) {
  const kshot::ClassIndex index(d.test_labels);
  const kshot::EpisodeSampler sampler(index, config(shots), /*seed=*/2026, classes);
  const Matrix emb = model.forward(d.test, false);
  return kshot::evaluate_episodes(kshot::ProtoNet<float>(), sampler, emb, 600).accuracy.mean;
}

void bm_accuracy(benchmark::State& state, std::uint64_t seed, std::string label) {
  state.SetLabel(label);
  const Data& d = data();
  if (!d.real) {
    state.SkipWithError("Fashion-MNIST not found");
    return;
  }
  kshot::ThreadCountGuard guard(1);
  const kshot::ClassIndex index(d.train_labels);
  for (auto _ : state) {
    auto model = kshot::make_mlp<float>({784, 256, 64}, kshot::Activation::relu, kshot::Init::pytorch_default, seed);
    state.counters["untrained_novel_1shot"] = novel_accuracy(model, d, d.novel, 1);
    state.counters["untrained_novel_5shot"] = novel_accuracy(model, d, d.novel, 5);
    kshot::TrainerConfig options;
    options.steps = accuracy_episodes;
    options.progress = false;
    kshot::EpisodicTrainer<float> trainer(
        model, d.train, kshot::EpisodeObjective<float>(kshot::EpisodeSampler(index, config(5), seed, d.base)),
        kshot::Adam<float>(1e-3), options);
    const kshot::TrainResult r = trainer.train();
    state.counters["episodes"] = double(r.steps);
    state.counters["train_episodes_per_s"] = r.steps_per_second;
    state.counters["novel_1shot"] = novel_accuracy(model, d, d.novel, 1);
    state.counters["novel_5shot"] = novel_accuracy(model, d, d.novel, 5);
    state.counters["base_5shot"] = novel_accuracy(model, d, d.base, 5);
  }
}

void register_all() {
  const std::string step = "train_protonet_mlp784x256x64_adam_5w5s15q";
  benchmark::RegisterBenchmark((step + "/omp:1").c_str(), bm_train_step, step)->UseRealTime()->Unit(benchmark::kMicrosecond);
  const std::string yard = std::string("train_yardstick_gemm_") + tag;
  benchmark::RegisterBenchmark((yard + "/omp:1").c_str(), bm_yardstick, yard)->UseRealTime()->Unit(benchmark::kMicrosecond);
  // KSHOT_TRAIN_SEEDS=4,5,6 picks other seeds, as in benchmarks/peers/easyfsl_train.py.
  std::vector<std::uint64_t> seeds;
  const std::string list = kshot::bench::env_or("KSHOT_TRAIN_SEEDS", "1,2,3");
  for (std::size_t start = 0; start < list.size();) {
    const std::size_t end = std::min(list.find(',', start), list.size());
    if (end > start) seeds.push_back(std::stoull(list.substr(start, end - start)));
    start = end + 1;
  }
  for (std::uint64_t seed : seeds) {
    const std::string label = "train_protonet_accuracy_seed" + std::to_string(seed);
    benchmark::RegisterBenchmark((label + "/omp:1").c_str(), bm_accuracy, seed, label)
        ->UseRealTime()
        ->Unit(benchmark::kSecond)
        ->Iterations(1)
        ->Repetitions(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  return kshot::bench::run(argc, argv, {1}, register_all, [] {
    benchmark::AddCustomContext("train_data", data().real ? "Fashion-MNIST (pixels / 255, centred by the base mean)"
                                                          : "seeded random pixels (Fashion-MNIST not found)");
    benchmark::AddCustomContext("train_accuracy_episodes", std::to_string(accuracy_episodes));
  });
}
