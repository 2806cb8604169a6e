// SPDX-License-Identifier: MIT
/**
 * @file examples/episodes.cpp
 * @brief The usage example of docs/sampling.md, compiled: split Fashion-MNIST's categories into old and
 * new product lines, then draw reproducible 5-way 5-shot 15-query episodes of the new ones.
 *
 * Usage: episodes [fashion-mnist-directory]
 */
#include <kshot/data.hpp>
#include <kshot/sampling.hpp>

#include <cstdio>
#include <exception>
#include <string>

int main(int argc, char** argv) try {
  const std::string directory = argc > 1 ? argv[1] : kshot::fashion_mnist_default_directory();
  const auto train = kshot::load_fashion_mnist<float>(directory, kshot::FashionMnistSplit::train);

  // Old product lines (base), one for validation, and new product lines (novel).
  const kshot::ClassSplit split = kshot::make_class_split({0, 1, 2, 3, 4}, {5}, {6, 7, 8, 9}, 10);
  const kshot::DatasetView<float> data(train.features, train.labels);  // no copy

  // 4-way 5-shot 15-query episodes of the novel categories, seed 42: episode i is always the same.
  kshot::EpisodeConfig config;
  config.ways = 4;
  config.shots = 5;
  config.queries = 15;
  const kshot::EpisodeSampler sampler(data.class_index(), config, /*seed=*/42, split.novel);

  kshot::GatheredEpisode<float> episode;  // reused: no allocation after the first episode
  sampler.sample<float>(7, data.features(), episode);
  std::printf("episode 7: %lld support x %lld features, %lld queries; classes", static_cast<long long>(episode.support().rows()),
              static_cast<long long>(episode.support().cols()), static_cast<long long>(episode.query().rows()));
  for (kshot::Label c : episode.episode.classes) std::printf(" %s;", kshot::fashion_mnist_class_name(c));
  std::printf("\n");

  // A batch of episodes gathered in parallel; identical for any number of threads.
  std::vector<kshot::GatheredEpisode<float>> batch;
  sampler.sample_batch<float>(/*first=*/0, /*count=*/32, data.features(), batch);

  // Epoch mode: every novel image is a query exactly once per epoch.
  const kshot::EpochPlan plan = sampler.plan_epoch(/*epoch=*/0);
  kshot::Episode indices;
  kshot::Index queries = 0;
  for (kshot::Index i = 0; i < plan.num_episodes(); ++i) {
    sampler.sample_epoch(plan, i, indices);
    queries += static_cast<kshot::Index>(indices.query_rows.size());
  }
  std::printf("epoch 0: %lld episodes, %lld queries (= %lld novel images)\n", static_cast<long long>(plan.num_episodes()),
              static_cast<long long>(queries), static_cast<long long>(kshot::rows_of_classes(data.class_index(), split.novel).size()));

  // Metric-learning batches of the base categories: 8 images of each of 5 categories.
  const kshot::MPerClassSampler batches(data.class_index(), /*m=*/8, /*batch_size=*/40, /*seed=*/1,
                                        kshot::SmallClassPolicy::throw_error, split.base);
  const kshot::Batch first = batches.sample(0);
  std::printf("batch 0: %zu rows, first label %d\n", first.rows.size(), first.labels.front());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "episodes: %s\n", e.what());
  return 1;
}
