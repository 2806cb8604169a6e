// SPDX-License-Identifier: MIT
/**
 * @file examples/nearest_category.cpp
 * @brief The first kshot demo: place each Fashion-MNIST test product in the category whose mean
 * training image is nearest, under cosine similarity and under squared Euclidean distance.
 *
 * Usage: nearest_category [fashion-mnist-directory]
 * (default: /usr/share/datasets/fashion-mnist, from Debian's dataset-fashion-mnist package)
 */
#include <kshot/data.hpp>
#include <kshot/distances.hpp>

#include <chrono>
#include <cstdio>
#include <exception>
#include <string>

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Centre by the training mean, then scale every row to unit L2 norm (zero rows stay zero).
void centre_and_normalise(kshot::RowMatrixX<float>& x, const kshot::RowVectorX<float>& mean) {
  x.rowwise() -= mean;
  for (kshot::Index i = 0; i < x.rows(); ++i) {
    const float norm = x.row(i).norm();
    if (norm > 0.0f) x.row(i) /= norm;
  }
}

// Per-row index of the best score: the largest for a similarity, the smallest for a distance.
kshot::LabelVector best_category(const kshot::RowMatrixX<float>& scores, bool larger_is_closer) {
  kshot::LabelVector predicted(scores.rows());
  for (kshot::Index i = 0; i < scores.rows(); ++i) {
    kshot::Index best = 0;
    if (larger_is_closer) {
      scores.row(i).maxCoeff(&best);
    } else {
      scores.row(i).minCoeff(&best);
    }
    predicted[i] = static_cast<kshot::Label>(best);
  }
  return predicted;
}

double accuracy(const kshot::LabelVector& predicted, const kshot::LabelVector& truth) {
  return static_cast<double>((predicted.array() == truth.array()).count()) / static_cast<double>(truth.size());
}

}  // namespace

int main(int argc, char** argv) try {
  const std::string directory = argc > 1 ? argv[1] : kshot::fashion_mnist_default_directory();
  std::printf("kshot %s: nearest category on Fashion-MNIST (%d OpenMP threads)\n", kshot::Version::string(),
              kshot::max_threads());

  auto start = Clock::now();
  auto train = kshot::load_fashion_mnist<float>(directory, kshot::FashionMnistSplit::train);
  auto test = kshot::load_fashion_mnist<float>(directory, kshot::FashionMnistSplit::test);
  std::printf("loaded %lld training and %lld test images of %lld pixels from %s in %.2f s\n",
              static_cast<long long>(train.features.rows()), static_cast<long long>(test.features.rows()),
              static_cast<long long>(train.features.cols()), directory.c_str(), seconds_since(start));

  // Centre and normalise with statistics of the training images only.
  start = Clock::now();
  const kshot::RowVectorX<float> mean = train.features.colwise().mean();
  centre_and_normalise(train.features, mean);
  centre_and_normalise(test.features, mean);

  // One prototype per category: the mean of its training images.
  const kshot::Index classes = kshot::fashion_mnist_num_classes;
  kshot::RowMatrixX<float> prototypes = kshot::RowMatrixX<float>::Zero(classes, train.features.cols());
  Eigen::VectorXd counts = Eigen::VectorXd::Zero(classes);
  for (kshot::Index i = 0; i < train.features.rows(); ++i) {
    prototypes.row(train.labels[i]) += train.features.row(i);
    counts[train.labels[i]] += 1.0;
  }
  for (kshot::Index c = 0; c < classes; ++c) prototypes.row(c) /= static_cast<float>(counts[c]);
  std::printf("prepared features and %lld category prototypes in %.1f ms\n\n", static_cast<long long>(classes),
              1e3 * seconds_since(start));

  // Classify the 10,000 test images under both metrics.
  kshot::RowMatrixX<float> scores(test.features.rows(), classes);
  kshot::PairwiseDistance<float, kshot::CosineSimilarity> cosine;
  kshot::PairwiseDistance<float, kshot::SquaredEuclidean> squared;

  start = Clock::now();
  cosine.compute(test.features, prototypes, scores);
  const kshot::LabelVector by_cosine = best_category(scores, true);
  const double cosine_ms = 1e3 * seconds_since(start);

  start = Clock::now();
  squared.compute(test.features, prototypes, scores);
  const kshot::LabelVector by_squared = best_category(scores, false);
  const double squared_ms = 1e3 * seconds_since(start);

  std::printf("%-20s %9s %12s\n", "metric", "accuracy", "time");
  std::printf("%-20s %8.2f%% %9.2f ms\n", "cosine", 100.0 * accuracy(by_cosine, test.labels), cosine_ms);
  std::printf("%-20s %8.2f%% %9.2f ms\n\n", "squared Euclidean", 100.0 * accuracy(by_squared, test.labels),
              squared_ms);

  std::printf("per-category accuracy (cosine):\n");
  for (kshot::Index c = 0; c < classes; ++c) {
    const auto is_c = (test.labels.array() == static_cast<kshot::Label>(c));
    const auto hits = (is_c && (by_cosine.array() == static_cast<kshot::Label>(c))).count();
    std::printf("  %-12s %6.2f%%\n", kshot::fashion_mnist_class_name(static_cast<kshot::Label>(c)),
                100.0 * static_cast<double>(hits) / static_cast<double>(is_c.count()));
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "nearest_category: %s\n", e.what());
  return 1;
}
