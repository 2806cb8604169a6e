// SPDX-License-Identifier: MIT
/**
 * @file examples/train_protonet.cpp
 * @brief Train a prototypical network (MLP 784 -> 256 -> 64, Adam) episodically on the old Fashion-MNIST
 * product lines, with validation episodes, early stopping and a best-model checkpoint, then place the new
 * product lines from 1 and 5 examples, against the untrained-pixel baseline; save the model.
 *
 * Data: base (old lines) = T-shirt/top, Trouser, Pullover, Dress, Coat; novel (new lines) = Sandal, Shirt,
 * Sneaker, Bag, Ankle boot. Pixels / 255, centred by the mean base training image.
 *  - training: 5-way 5-shot 15-query episodes of the base categories' training images;
 *  - validation (early stopping, best checkpoint): 5-way 1-shot 15-query episodes of the novel categories'
 *    *training-file* images. Fashion-MNIST has only ten categories, so no category is left over for
 *    validation: these images are disjoint from the test images every reported number uses, but choosing
 *    the stopping point on the new categories is optimistic by the selection (docs/trainer.md);
 *  - reported: 600 test episodes (5-way, 15 queries) of the novel and of the base categories' test images,
 *    for the untrained-pixel baseline (centred, L2-normalised pixels: examples/new_category.cpp), the
 *    untrained MLP, the model after the last step, and the best validated model (which is saved).
 *
 * Usage: train_protonet [fashion-mnist-directory] [steps] [model-file]
 *   defaults: Debian's dataset directory, 6000 steps, train_protonet.kshotnn in the working directory.
 */
#include <kshot/data.hpp>
#include <kshot/eval/episodic.hpp>
#include <kshot/fewshot.hpp>
#include <kshot/nn/adam.hpp>
#include <kshot/nn/sequential.hpp>
#include <kshot/sampling.hpp>
#include <kshot/train.hpp>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

namespace {

using Matrix = kshot::RowMatrixX<float>;

kshot::EpisodeConfig episodes(kshot::Index shots) {
  kshot::EpisodeConfig config;
  config.ways = 5;
  config.shots = shots;
  config.queries = 15;
  return config;
}

/// ProtoNet accuracy ± 95% interval over 600 test episodes of `classes` on the given test features.
kshot::MeanInterval accuracy(const Matrix& features, const kshot::ClassIndex& index,
                             const std::vector<kshot::Label>& classes, kshot::Index shots) {
  const kshot::EpisodeSampler sampler(index, episodes(shots), /*seed=*/2026, classes);
  return kshot::evaluate_episodes(kshot::ProtoNet<float>(), sampler, features, 600).accuracy;
}

void report(const char* name, const Matrix& features, const kshot::ClassIndex& index, const kshot::ClassSplit& split) {
  const auto n1 = accuracy(features, index, split.novel, 1), n5 = accuracy(features, index, split.novel, 5);
  const auto b1 = accuracy(features, index, split.base, 1), b5 = accuracy(features, index, split.base, 5);
  std::printf("  %-26s %6.2f%% +- %.2f   %6.2f%% +- %.2f   %6.2f%% +- %.2f   %6.2f%% +- %.2f\n", name,
              100 * n1.mean, 100 * n1.half_width, 100 * n5.mean, 100 * n5.half_width, 100 * b1.mean,
              100 * b1.half_width, 100 * b5.mean, 100 * b5.half_width);
}

}  // namespace

int main(int argc, char** argv) try {
  const std::string directory = argc > 1 ? argv[1] : kshot::fashion_mnist_default_directory();
  const std::int64_t steps = argc > 2 ? std::atoll(argv[2]) : 6000;
  const std::string model_path = argc > 3 ? argv[3] : "train_protonet.kshotnn";
  auto train = kshot::load_fashion_mnist<float>(directory, kshot::FashionMnistSplit::train);
  auto test = kshot::load_fashion_mnist<float>(directory, kshot::FashionMnistSplit::test);
  const kshot::ClassSplit split = kshot::make_class_split({0, 1, 2, 3, 4}, {}, {5, 6, 7, 8, 9}, 10);

  // Centre every image by the mean base training image.
  const kshot::ClassIndex train_index(train.labels), test_index(test.labels);
  kshot::RowVectorX<float> mean = kshot::RowVectorX<float>::Zero(train.features.cols());
  const auto base_rows = kshot::rows_of_classes(train_index, split.base);
  for (kshot::Index r : base_rows) mean += train.features.row(r);
  mean /= static_cast<float>(base_rows.size());
  train.features.rowwise() -= mean;
  test.features.rowwise() -= mean;

  std::printf("kshot %s: episodic ProtoNet training on the old Fashion-MNIST product lines (%d threads)\n",
              kshot::Version::string(), kshot::max_threads());
  std::printf("5-way ProtoNet accuracy on test images, 600 episodes of 15 queries, +- 95%% interval\n");
  std::printf("  %-26s %-17s %-17s %-17s %-17s\n", "features", "new 1-shot", "new 5-shot", "old 1-shot", "old 5-shot");
  Matrix pixels = test.features;
  pixels.rowwise().normalize();
  report("pixels (untrained)", pixels, test_index, split);

  kshot::Sequential<float> model = kshot::make_mlp<float>({784, 256, 64}, kshot::Activation::relu,
                                                          kshot::Init::pytorch_default, /*seed=*/1);
  report("MLP, untrained", model.forward(test.features, false), test_index, split);

  // Train on base episodes; validate every 250 steps on 300 1-shot episodes; stop after 8 validations
  // without improvement; keep the best parameters (and write them to model_path at each new best).
  kshot::TrainerConfig options;
  options.steps = steps;
  options.validate_every = 250;
  options.patience = 8;
  options.restore_best = false;  // restored by hand below, after the last model is scored
  options.checkpoint_path = model_path;
  options.step_threads = 1;  // 100-row episodes gain little from threads (validation still uses them all)
  kshot::EpisodicTrainer<float> trainer(
      model, train.features,
      kshot::EpisodeObjective<float>(kshot::EpisodeSampler(train_index, episodes(5), /*seed=*/1, split.base)),
      kshot::Adam<float>(1e-3), options);
  trainer.set_validation(train.features, kshot::EpisodeSampler(train_index, episodes(1), /*seed=*/7, split.novel), 300);
  const kshot::TrainResult result = trainer.train();

  report("MLP, last step", model.forward(test.features, false), test_index, split);
  model.set_parameters(trainer.best_parameters());
  report("MLP, best validated", model.forward(test.features, false), test_index, split);

  std::printf("\ntraining: %lld steps in %.1f s (%.0f episodes/s on the training steps alone)%s\n",
              static_cast<long long>(result.steps), result.seconds, result.steps_per_second,
              result.stopped_early ? ", stopped early" : "");
  std::printf("validation (new lines, training-file images, 1-shot):");
  for (const auto& v : result.history)
    std::printf(" %lld:%.1f%%", static_cast<long long>(v.step), 100 * v.accuracy.mean);
  std::printf("\nbest: step %lld, %.2f%% +- %.2f%%; model saved to %s\n", static_cast<long long>(result.best_step),
              100 * result.best_validation.mean, 100 * result.best_validation.half_width, model_path.c_str());
  const kshot::Sequential<float> loaded = kshot::Sequential<float>::load(model_path);
  std::printf("reloaded: %lld layers, %lld parameters, identical to the best: %s\n",
              static_cast<long long>(loaded.size()), static_cast<long long>(loaded.num_parameters()),
              loaded.parameters() == model.parameters() ? "yes" : "no");
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "train_protonet: %s\n", e.what());
  return 1;
}
