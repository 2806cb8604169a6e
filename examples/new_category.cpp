// SPDX-License-Identifier: MIT
/**
 * @file examples/new_category.cpp
 * @brief Place new Fashion-MNIST product lines from 1 and from 5 examples each, and report few-shot
 * accuracy with its 95% confidence interval over 600 episodes.
 *
 * The old product lines (base) are T-shirt/top, Trouser, Pullover, Dress and Coat: only their mean image
 * is used here (to centre the pixels). The new product lines (novel) are Sandal, Shirt, Sneaker, Bag and
 * Ankle boot, drawn from the test images, which nothing else has seen. Features are raw pixels, centred by
 * the base mean and L2-normalised (no training: that comes with the trainer).
 *
 * Usage: new_category [fashion-mnist-directory]
 */
#include <kshot/data.hpp>
#include <kshot/eval/episodic.hpp>
#include <kshot/fewshot.hpp>
#include <kshot/sampling.hpp>

#include <chrono>
#include <cstdio>
#include <exception>
#include <string>

namespace {

template <class Classifier>
void report(const char* name, const Classifier& classifier, const kshot::EpisodeSampler& sampler,
            const kshot::RowMatrixX<float>& features) {
  const auto start = std::chrono::steady_clock::now();
  const kshot::EpisodicEvaluation result = kshot::evaluate_episodes(classifier, sampler, features, 600);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  std::printf("  %-28s %6.2f%% +- %.2f%%   (%5.1f ms)\n", name, 100 * result.accuracy.mean,
              100 * result.accuracy.half_width, ms);
}

}  // namespace

int main(int argc, char** argv) try {
  const std::string directory = argc > 1 ? argv[1] : kshot::fashion_mnist_default_directory();
  const auto train = kshot::load_fashion_mnist<float>(directory, kshot::FashionMnistSplit::train);
  auto test = kshot::load_fashion_mnist<float>(directory, kshot::FashionMnistSplit::test);
  const kshot::ClassSplit split = kshot::make_class_split({0, 1, 2, 3, 4}, {}, {5, 6, 7, 8, 9}, 10);

  // Centre by the mean base image, then L2-normalise every image.
  kshot::RowVectorX<float> base_mean = kshot::RowVectorX<float>::Zero(train.features.cols());
  const auto base_rows = kshot::rows_of_classes(kshot::ClassIndex(train.labels), split.base);
  for (kshot::Index r : base_rows) base_mean += train.features.row(r);
  base_mean /= static_cast<float>(base_rows.size());
  test.features.rowwise() -= base_mean;
  test.features.rowwise().normalize();

  const kshot::ClassIndex index(test.labels);
  std::printf("kshot %s: new product lines on Fashion-MNIST (%d threads)\n", kshot::Version::string(),
              kshot::max_threads());
  std::printf("novel categories:");
  for (kshot::Label c : split.novel) std::printf(" %s;", kshot::fashion_mnist_class_name(c));
  std::printf(" 600 episodes of 5-way 15 queries each, accuracy +- 95%% interval\n");
  for (kshot::Index shots : {1, 5}) {
    kshot::EpisodeConfig config;
    config.ways = 5;
    config.shots = shots;
    config.queries = 15;
    const kshot::EpisodeSampler sampler(index, config, /*seed=*/2026, split.novel);
    std::printf("%lld-shot:\n", static_cast<long long>(shots));
    report("ProtoNet (Euclidean)", kshot::ProtoNet<float>(), sampler, test.features);
    report("ProtoNet (cosine)", kshot::ProtoNet<float>(kshot::ProtoDistance::cosine, 10.0f), sampler, test.features);
    report("SimpleShot", kshot::SimpleShot<float>(), sampler, test.features);
    // Transductive: these also use the unlabelled queries of the episode.
    report("soft k-means (transductive)", kshot::SoftKMeans<float>(), sampler, test.features);
    report("BD-CSPN (transductive)", kshot::BDCSPN<float>(), sampler, test.features);
    report("TIM (transductive)", kshot::TIM<float>(), sampler, test.features);
    report("LaplacianShot (transductive)", kshot::LaplacianShot<float>(), sampler, test.features);
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "new_category: %s\n", e.what());
  return 1;
}
