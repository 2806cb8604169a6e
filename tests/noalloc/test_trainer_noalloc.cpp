// SPDX-License-Identifier: MIT
// The trainer's steady state allocates nothing: a second training step (and a second train() call without
// validation or progress) with the same episode shape, with ProtoNet's loss and with a metric loss.
#include "noalloc/alloc_counter.hpp"
#include "test_util.hpp"

#include <kshot/data/class_index.hpp>
#include <kshot/fewshot/protonet.hpp>
#include <kshot/losses/triplet.hpp>
#include <kshot/nn/adam.hpp>
#include <kshot/nn/sequential.hpp>
#include <kshot/train.hpp>

using namespace kshot;
using namespace kshot::test;

TEST_CASE_TEMPLATE("no allocation on a second training step: EpisodicTrainer and MetricTrainer", T, float, double) {
  const RowMatrixX<T> features = random_matrix<T>(400, 32, 1);
  const LabelVector labels = labels_of(400, 10);
  const ClassIndex index(labels);
  EpisodeConfig config;
  config.ways = 5;
  config.shots = 5;
  config.queries = 15;
  auto model = make_mlp<T>({32, 48, 16});
  TrainerConfig options;
  options.progress = false;
  options.max_grad_norm = 1.0;
  EpisodicTrainer<T> trainer(model, features, EpisodeObjective<T>(EpisodeSampler(index, config, 3)), Adam<T>(1e-3),
                             options);
  // ProtoNet::loss alone allocates nothing on a second call of the same shape.
  {
    ProtoNet<T> protonet;
    const RowMatrixX<T> emb = random_matrix<T>(100, 16, 2);
    RowMatrixX<T> grad(100, 16);
    Episode episode = EpisodeSampler(index, config, 3).sample(0);
    const LabelVector support_labels = episode.support_label_vector(), query_labels = episode.query_label_vector();
    ThreadCountGuard threads(1);
    check_second_call_allocates_nothing([&] {
      protonet.loss(emb.topRows(25), support_labels, emb.bottomRows(75), query_labels, grad.topRows(25),
                    grad.bottomRows(75));
    });
  }
  auto second_call_news = [&](auto&& f) {
    ThreadCountGuard threads(1);
    f();
    AllocationGuard guard;
    f();
    return guard.news();
  };
  CHECK(second_call_news([&] { trainer.train_step(); }) == 0);
  CHECK(second_call_news([&] { trainer.train(3); }) == 0);

  auto model2 = make_mlp<T>({32, 48, 16});
  MetricTrainer<T, TripletMarginLoss<T>> metric(
      model2, features, MetricObjective<T, TripletMarginLoss<T>>(MPerClassSampler(index, 4, 40, 5), TripletMarginLoss<T>()),
      Adam<T>(1e-3), options);
  check_second_call_allocates_nothing([&] { metric.train_step(); });
}
