// SPDX-License-Identifier: MIT
/**
 * @file examples/metric_learning.cpp
 * @brief Train a linear product embedding with a miner and a metric-learning loss, then place new product
 * lines with it from a few examples.
 *
 * The old product lines (T-shirt/top, Trouser, Pullover, Dress, Coat) train a linear map W from 784 centred
 * pixels to 64 dimensions: each step draws an m-per-class batch, mines its hardest triplets
 * (BatchHardMiner), evaluates TripletMarginLoss(margin = 0.2) with its gradient dL/dE, chains it through
 * E = X W (dL/dW = X^T dL/dE) and takes an SGD step with momentum. Every few hundred steps it reports the
 * loss, the miner's counts, and 5-way ProtoNet accuracy on the embedding, next to raw pixels: on the test
 * images of the old lines (what the loss optimises) and of the new ones (Sandal, Shirt, Sneaker, Bag, Ankle
 * boot), which training never sees. With only five old lines to learn from, the embedding specialises in
 * them: old-line accuracy rises while new-line accuracy falls below raw pixels (docs/losses.md).
 *
 * Usage: metric_learning [fashion-mnist-directory] [steps]
 */
#include <kshot/data.hpp>
#include <kshot/eval/episodic.hpp>
#include <kshot/fewshot.hpp>
#include <kshot/losses/miners.hpp>
#include <kshot/losses/triplet.hpp>
#include <kshot/sampling.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

namespace {

using Matrix = kshot::RowMatrixX<float>;

/// 5-way accuracy (mean over 300 episodes) of ProtoNet on the given features of the test images of `classes`.
double accuracy(const Matrix& features, const kshot::ClassIndex& index, const std::vector<kshot::Label>& classes,
                kshot::Index shots) {
  kshot::EpisodeConfig config;
  config.ways = 5;
  config.shots = shots;
  config.queries = 15;
  const kshot::EpisodeSampler sampler(index, config, /*seed=*/2026, classes);
  return kshot::evaluate_episodes(kshot::ProtoNet<float>(), sampler, features, 300).accuracy.mean;
}

/// Rows embedded by W and L2-normalised (the loss compares normalised embeddings too).
Matrix embed(const Matrix& x, const Matrix& w) {
  Matrix e = x * w;
  e.rowwise().normalize();
  return e;
}

}  // namespace

int main(int argc, char** argv) try {
  const std::string directory = argc > 1 ? argv[1] : kshot::fashion_mnist_default_directory();
  const kshot::Index steps = argc > 2 ? std::atol(argv[2]) : 2000;
  auto train = kshot::load_fashion_mnist<float>(directory, kshot::FashionMnistSplit::train);
  auto test = kshot::load_fashion_mnist<float>(directory, kshot::FashionMnistSplit::test);
  const kshot::ClassSplit split = kshot::make_class_split({0, 1, 2, 3, 4}, {}, {5, 6, 7, 8, 9}, 10);

  // Centre every image by the mean base training image.
  const kshot::ClassIndex train_index(train.labels);
  kshot::RowVectorX<float> mean = kshot::RowVectorX<float>::Zero(train.features.cols());
  const auto base_rows = kshot::rows_of_classes(train_index, split.base);
  for (kshot::Index r : base_rows) mean += train.features.row(r);
  mean /= static_cast<float>(base_rows.size());
  train.features.rowwise() -= mean;
  test.features.rowwise() -= mean;
  const kshot::ClassIndex test_index(test.labels);

  // The model: E = X W, W (784 x 64) from a seeded normal with variance 1/784.
  const kshot::Index in = train.features.cols(), out = 64;
  Matrix w(in, out), velocity = Matrix::Zero(in, out);
  kshot::RandomStream rng(/*seed=*/7);
  rng.fill_normal(w);
  w /= std::sqrt(static_cast<float>(in));

  // Batches of 16 images from each of the 5 base categories; the miner and the loss (pytorch-metric-learning's
  // TripletMarginLoss(margin=0.2) with BatchHardMiner(), Euclidean distance on normalised embeddings).
  const kshot::MPerClassSampler batches(train_index, /*m=*/16, /*batch_size=*/80, /*seed=*/11,
                                        kshot::SmallClassPolicy::throw_error, split.base);
  kshot::BatchHardMiner<float> miner;
  kshot::TripletMarginLoss<float> loss;
  loss.margin = 0.2f;
  kshot::MinedTriplets triplets;
  kshot::Batch batch;
  Matrix x(80, in), e(80, out), grad_e(80, out), grad_w(in, out);
  const float learning_rate = 0.05f, momentum = 0.9f;

  Matrix normalised_pixels = test.features;
  normalised_pixels.rowwise().normalize();
  std::printf("kshot %s: a linear embedding trained with BatchHardMiner + TripletMarginLoss\n",
              kshot::Version::string());
  std::printf("5-way ProtoNet accuracy on test images, 1-shot / 5-shot (300 episodes each)\n");
  std::printf("raw pixels   old lines %5.1f%% / %5.1f%%   new lines %5.1f%% / %5.1f%%\n",
              100 * accuracy(normalised_pixels, test_index, split.base, 1),
              100 * accuracy(normalised_pixels, test_index, split.base, 5),
              100 * accuracy(normalised_pixels, test_index, split.novel, 1),
              100 * accuracy(normalised_pixels, test_index, split.novel, 5));
  const auto start = std::chrono::steady_clock::now();
  double running = 0;
  kshot::Index since = 0;
  for (kshot::Index step = 0; step < steps; ++step) {
    batches.sample(step, batch);
    kshot::gather_rows<float>(train.features, batch.rows, x);
    e.noalias() = x * w;
    miner.mine(e, batch.label_vector(), triplets);
    running += loss.evaluate(e, batch.label_vector(), triplets, grad_e);
    ++since;
    grad_w.noalias() = x.transpose() * grad_e;  // dL/dW = X^T dL/dE
    velocity = momentum * velocity - learning_rate * grad_w;
    w += velocity;
    if ((step + 1) % 1000 == 0 || step + 1 == steps) {
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      const Matrix embedded = embed(test.features, w);
      std::printf("step %5lld   old lines %5.1f%% / %5.1f%%   new lines %5.1f%% / %5.1f%%   loss %.4f (%lld triplets)  %.1f s\n",
                  static_cast<long long>(step + 1), 100 * accuracy(embedded, test_index, split.base, 1),
                  100 * accuracy(embedded, test_index, split.base, 5), 100 * accuracy(embedded, test_index, split.novel, 1),
                  100 * accuracy(embedded, test_index, split.novel, 5), running / static_cast<double>(since),
                  static_cast<long long>(triplets.size()), seconds);
      running = 0;
      since = 0;
    }
  }
  return 0;
} catch (const std::exception& ex) {
  std::fprintf(stderr, "metric_learning: %s\n", ex.what());
  return 1;
}
