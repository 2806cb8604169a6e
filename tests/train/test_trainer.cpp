// SPDX-License-Identifier: MIT
// The trainer: an MLP trained episodically on synthetic clusters must lift novel-class accuracy from a stated
// baseline to a stated level; early stopping stops; the saved checkpoint equals the best parameters; callbacks
// come in order; the progress bar is silent when off; the same seeds give the same model bitwise at 1 and 2
// threads and across split train() calls; bad configurations throw; the metric-learning objective trains.
#include "test_util.hpp"

#include <kshot/core/threads.hpp>
#include <kshot/data/class_index.hpp>
#include <kshot/eval/episodic.hpp>
#include <kshot/fewshot/matching_networks.hpp>
#include <kshot/fewshot/protonet.hpp>
#include <kshot/losses/triplet.hpp>
#include <kshot/nn/adam.hpp>
#include <kshot/nn/lr_schedule.hpp>
#include <kshot/nn/sequential.hpp>
#include <kshot/nn/sgd.hpp>
#include <kshot/train.hpp>

#include <doctest/doctest.h>

#include <cstdio>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

using kshot::Index;
using kshot::Label;
using kshot::RowMatrixX;

namespace {

/// Synthetic product features: `classes` classes of `per_class` rows in `dim` dimensions. Each class has a
/// centre in a 16-dimensional signal subspace; every row adds strong class-independent nuisance variation
/// (standard deviation 3) in another 16-dimensional subspace and weak isotropic noise. Raw Euclidean distances
/// are dominated by the nuisance, so an untrained embedding places new classes poorly; a model that learns,
/// from the base classes, to ignore the nuisance subspace places new classes well.
template <class Scalar>
struct Clusters {
  RowMatrixX<Scalar> features;
  kshot::LabelVector labels;
};

template <class Scalar>
Clusters<Scalar> make_clusters(Index classes, Index per_class, Index dim, std::uint64_t seed) {
  constexpr Index k = 16;
  kshot::RandomStream rng(seed);
  RowMatrixX<double> signal(k, dim), nuisance(k, dim), centres(classes, k);
  rng.fill_normal(signal);
  rng.fill_normal(nuisance);
  rng.fill_normal(centres);
  signal /= std::sqrt(double(dim));
  nuisance /= std::sqrt(double(dim));
  Clusters<Scalar> out;
  out.features.resize(classes * per_class, dim);
  out.labels.resize(classes * per_class);
  kshot::RowVectorX<double> z(k), noise(dim);
  for (Index c = 0; c < classes; ++c)
    for (Index i = 0; i < per_class; ++i) {
      const Index r = c * per_class + i;
      rng.fill_normal(z);
      rng.fill_normal(noise);
      out.features.row(r) =
          (centres.row(c) * signal + 3.0 * z * nuisance + 0.05 * noise).template cast<Scalar>();
      out.labels[r] = static_cast<Label>(c);
    }
  return out;
}

std::vector<Label> range(Label begin, Label end) {
  std::vector<Label> v;
  for (Label c = begin; c < end; ++c) v.push_back(c);
  return v;
}

kshot::EpisodeConfig episode_config(Index ways, Index shots, Index queries) {
  kshot::EpisodeConfig c;
  c.ways = ways;
  c.shots = shots;
  c.queries = queries;
  return c;
}

/// 5-way accuracy of ProtoNet on model(features) (or on the raw features when model is null) over novel episodes.
template <class Scalar>
double novel_accuracy(kshot::Sequential<Scalar>* model, const Clusters<Scalar>& data, const kshot::ClassIndex& index,
                      const std::vector<Label>& novel, Index shots) {
  const kshot::EpisodeSampler sampler(index, episode_config(5, shots, 15), /*seed=*/99, novel);
  RowMatrixX<Scalar> emb = model ? RowMatrixX<Scalar>(model->forward(data.features, false)) : data.features;
  return kshot::evaluate_episodes(kshot::ProtoNet<Scalar>(), sampler, emb, 300).accuracy.mean;
}

struct Setup {
  Clusters<float> data = make_clusters<float>(20, 60, 64, 2026);
  kshot::ClassIndex index{data.labels};
  std::vector<Label> base = range(0, 10), validation = range(10, 15), novel = range(15, 20);
};

kshot::TrainerConfig quiet(std::int64_t steps) {
  kshot::TrainerConfig c;
  c.steps = steps;
  c.progress = false;
  return c;
}

}  // namespace

TEST_CASE("Trainer: episodic ProtoNet training on synthetic clusters lifts novel-class accuracy") {
  Setup s;
  auto model = kshot::make_mlp<float>({64, 64, 32}, kshot::Activation::relu, kshot::Init::pytorch_default, 1);
  const double raw1 = novel_accuracy<float>(nullptr, s.data, s.index, s.novel, 1);
  const double untrained1 = novel_accuracy(&model, s.data, s.index, s.novel, 1);
  const double untrained5 = novel_accuracy(&model, s.data, s.index, s.novel, 5);
  kshot::EpisodicTrainer<float> trainer(model, s.data.features,
                                        kshot::EpisodeObjective<float>(kshot::EpisodeSampler(
                                            s.index, episode_config(5, 5, 15), 7, s.base)),
                                        kshot::Adam<float>(1e-3), quiet(400));
  trainer.set_validation(s.data.features, kshot::EpisodeSampler(s.index, episode_config(5, 5, 15), 8, s.validation), 100);
  trainer.config.validate_every = 100;
  const kshot::TrainResult result = trainer.train();
  const double trained1 = novel_accuracy(&model, s.data, s.index, s.novel, 1);
  const double trained5 = novel_accuracy(&model, s.data, s.index, s.novel, 5);
  MESSAGE("novel 1-shot: raw ", raw1, ", untrained MLP ", untrained1, ", trained ", trained1, "; 5-shot: untrained ",
          untrained5, ", trained ", trained5, "; ", result.steps_per_second, " episodes/s; best validation ",
          result.best_validation.mean, " at step ", result.best_step);
  // Stated levels: the nuisance subspace keeps raw and untrained accuracy low; training removes it.
  CHECK(raw1 < 0.55);
  CHECK(untrained1 < 0.55);
  CHECK(untrained5 < 0.75);
  CHECK(trained1 > 0.80);
  CHECK(trained5 > 0.92);
  CHECK(result.steps == 400);
  CHECK(result.total_steps == 400);
  CHECK(result.history.size() == 5);  // steps 0, 100, 200, 300, 400
  CHECK(result.best_validation.mean > 0.85);
  CHECK(result.restored_best);
  CHECK_FALSE(result.stopped_early);
  CHECK(std::isfinite(result.mean_loss));
}

TEST_CASE_TEMPLATE("Trainer: float and double both train (loss falls)", Scalar, float, double) {
  const Clusters<Scalar> data = make_clusters<Scalar>(12, 40, 32, 5);
  const kshot::ClassIndex index(data.labels);
  auto model = kshot::make_mlp<Scalar>({32, 32, 16}, kshot::Activation::relu, kshot::Init::pytorch_default, 3);
  kshot::EpisodicTrainer<Scalar> trainer(
      model, data.features, kshot::EpisodeObjective<Scalar>(kshot::EpisodeSampler(index, episode_config(5, 3, 5), 1)),
      kshot::Adam<Scalar>(3e-3), quiet(30));
  const double first = trainer.train().mean_loss;
  trainer.train(90);
  const double last = trainer.train(30).mean_loss;
  CHECK(trainer.steps_taken() == 150);
  CHECK(last < 0.7 * first);
}

TEST_CASE("Trainer: early stopping stops after `patience` validations without improvement") {
  Setup s;
  auto model = kshot::make_mlp<float>({64, 32, 16});
  // Learning rate 0: the model never changes, so no validation improves on the first one.
  kshot::EpisodicTrainer<float, kshot::Sgd<float>> trainer(
      model, s.data.features,
      kshot::EpisodeObjective<float>(kshot::EpisodeSampler(s.index, episode_config(5, 1, 5), 7, s.base)),
      kshot::Sgd<float>(0.0), quiet(1000));
  trainer.set_validation(s.data.features, kshot::EpisodeSampler(s.index, episode_config(5, 1, 5), 8, s.validation), 20);
  trainer.config.validate_every = 10;
  trainer.config.patience = 3;
  const kshot::TrainResult result = trainer.train();
  CHECK(result.stopped_early);
  CHECK_FALSE(result.stopped_by_callback);
  CHECK(result.steps == 30);  // validations at 0 (best), 10, 20, 30 -> three without improvement
  CHECK(result.best_step == 0);
  REQUIRE(result.history.size() == 4);
  CHECK(result.history.back().step == 30);
  CHECK(trainer.state().validations_without_improvement == 3);

  // min_delta: a real improvement smaller than it does not count.
  auto model2 = kshot::make_mlp<float>({64, 32, 16});
  kshot::EpisodicTrainer<float> trainer2(
      model2, s.data.features,
      kshot::EpisodeObjective<float>(kshot::EpisodeSampler(s.index, episode_config(5, 1, 5), 7, s.base)),
      kshot::Adam<float>(1e-3), quiet(1000));
  trainer2.set_validation(s.data.features, kshot::EpisodeSampler(s.index, episode_config(5, 1, 5), 8, s.validation), 20);
  trainer2.config.validate_every = 10;
  trainer2.config.patience = 2;
  trainer2.config.min_delta = 1.0;  // nothing can improve by a whole 100%
  const kshot::TrainResult r2 = trainer2.train();
  CHECK(r2.stopped_early);
  CHECK(r2.steps == 20);
  CHECK(r2.best_step == 0);
}

TEST_CASE("Trainer: the checkpoint file and the restored model hold the best parameters") {
  Setup s;
  const std::string path = "kshot_test_trainer_checkpoint.bin";
  std::remove(path.c_str());
  auto model = kshot::make_mlp<float>({64, 48, 16}, kshot::Activation::relu, kshot::Init::pytorch_default, 4);
  kshot::EpisodicTrainer<float> trainer(
      model, s.data.features,
      kshot::EpisodeObjective<float>(kshot::EpisodeSampler(s.index, episode_config(5, 2, 5), 7, s.base)),
      kshot::Adam<float>(1e-2), quiet(120));  // a large rate: validation accuracy goes up and down
  trainer.set_validation(s.data.features, kshot::EpisodeSampler(s.index, episode_config(5, 1, 5), 8, s.validation), 30);
  trainer.config.validate_every = 10;
  trainer.config.checkpoint_path = path;
  std::vector<kshot::VectorX<float>> params_at;  // parameters at each validation
  kshot::CallbackFunctions record;
  record.validation_end = [&](const kshot::TrainState&) {
    params_at.push_back(model.parameters());
    return true;
  };
  trainer.add_callback(record);
  const kshot::TrainResult result = trainer.train();
  REQUIRE(result.history.size() == 13);
  // The best record is the first one with the highest accuracy.
  std::size_t best = 0;
  for (std::size_t k = 1; k < result.history.size(); ++k)
    if (result.history[k].accuracy.mean > result.history[best].accuracy.mean) best = k;
  CHECK(result.best_step == result.history[best].step);
  CHECK(result.best_validation.mean == result.history[best].accuracy.mean);
  const kshot::VectorX<float>& expected = params_at[best];
  REQUIRE(trainer.best_parameters().size() == expected.size());
  CHECK(std::memcmp(trainer.best_parameters().data(), expected.data(), sizeof(float) * std::size_t(expected.size())) == 0);
  const auto loaded = kshot::Sequential<float>::load(path);
  REQUIRE(loaded.num_parameters() == expected.size());
  CHECK(std::memcmp(loaded.parameters().data(), expected.data(), sizeof(float) * std::size_t(expected.size())) == 0);
  CHECK(result.restored_best);
  CHECK(std::memcmp(model.parameters().data(), expected.data(), sizeof(float) * std::size_t(expected.size())) == 0);
  // Re-validating the restored model gives the best accuracy again.
  CHECK(trainer.validate().mean == result.best_validation.mean);
  std::FILE* tmp = std::fopen((path + ".tmp").c_str(), "rb");
  CHECK(tmp == nullptr);
  if (tmp) std::fclose(tmp);
  std::remove(path.c_str());

  // restore_best = false leaves the last parameters.
  auto model2 = kshot::make_mlp<float>({64, 48, 16}, kshot::Activation::relu, kshot::Init::pytorch_default, 4);
  kshot::EpisodicTrainer<float> trainer2(
      model2, s.data.features,
      kshot::EpisodeObjective<float>(kshot::EpisodeSampler(s.index, episode_config(5, 2, 5), 7, s.base)),
      kshot::Adam<float>(1e-2), quiet(120));
  trainer2.set_validation(s.data.features, kshot::EpisodeSampler(s.index, episode_config(5, 1, 5), 8, s.validation), 30);
  trainer2.config.validate_every = 10;
  trainer2.config.restore_best = false;
  const kshot::TrainResult r2 = trainer2.train();
  CHECK_FALSE(r2.restored_best);
  CHECK(std::memcmp(model2.parameters().data(), params_at.back().data(),
                    sizeof(float) * std::size_t(params_at.back().size())) == 0);
}

TEST_CASE("Trainer: callbacks are called in order, and a callback can stop the run") {
  Setup s;
  auto model = kshot::make_mlp<float>({64, 32, 16});
  kshot::EpisodicTrainer<float> trainer(
      model, s.data.features,
      kshot::EpisodeObjective<float>(kshot::EpisodeSampler(s.index, episode_config(5, 1, 5), 7, s.base)),
      kshot::Adam<float>(1e-3), quiet(6));
  trainer.set_validation(s.data.features, kshot::EpisodeSampler(s.index, episode_config(5, 1, 5), 8, s.validation), 10);
  trainer.config.validate_every = 3;
  std::vector<std::string> events;
  kshot::CallbackFunctions cb;
  cb.train_begin = [&](const kshot::TrainState& st) { events.push_back("begin@" + std::to_string(st.step)); };
  cb.step_end = [&](const kshot::TrainState& st) {
    events.push_back("step@" + std::to_string(st.step));
    return true;
  };
  cb.new_best = [&](const kshot::TrainState& st) { events.push_back("best@" + std::to_string(st.step)); };
  cb.validation_end = [&](const kshot::TrainState& st) {
    events.push_back("val@" + std::to_string(st.step));
    return true;
  };
  cb.train_end = [&](const kshot::TrainState& st) { events.push_back("end@" + std::to_string(st.step)); };
  trainer.add_callback(cb);
  trainer.train();
  // Remove the optional "best" events to check the fixed skeleton, then check where bests may appear.
  std::vector<std::string> skeleton;
  for (const auto& e : events)
    if (e.rfind("best@", 0) != 0) skeleton.push_back(e);
  const std::vector<std::string> expected = {"begin@0", "val@0",  "step@1", "step@2", "step@3", "val@3",
                                             "step@4",  "step@5", "step@6", "val@6",  "end@6"};
  CHECK(skeleton == expected);
  REQUIRE(events.size() >= 3);
  CHECK(events[1] == "best@0");  // the first validation is always a new best, announced before val@0
  for (std::size_t k = 0; k + 1 < events.size(); ++k)
    if (events[k].rfind("best@", 0) == 0) CHECK(events[k + 1] == "val@" + events[k].substr(5));

  // A step callback returning false stops after that step; a final validation still scores the model.
  events.clear();
  cb.step_end = [&](const kshot::TrainState& st) {
    events.push_back("step@" + std::to_string(st.step));
    return st.step < 8;
  };
  const kshot::TrainResult r = trainer.train(100);
  CHECK(r.stopped_by_callback);
  CHECK(r.steps == 2);
  CHECK(trainer.steps_taken() == 8);
  CHECK(events.back() == "end@8");
}

TEST_CASE("Trainer: the progress bar prints nothing when off and rate, ETA and loss when on") {
  Setup s;
  auto model = kshot::make_mlp<float>({64, 32, 16});
  std::ostringstream sink;
  kshot::EpisodicTrainer<float> trainer(
      model, s.data.features,
      kshot::EpisodeObjective<float>(kshot::EpisodeSampler(s.index, episode_config(5, 1, 5), 7, s.base)),
      kshot::Adam<float>(1e-3), quiet(20));
  trainer.set_validation(s.data.features, kshot::EpisodeSampler(s.index, episode_config(5, 1, 5), 8, s.validation), 10);
  trainer.config.progress_stream = &sink;
  trainer.config.progress = false;
  trainer.train();
  CHECK(sink.str().empty());
  trainer.config.progress = true;
  trainer.config.progress_interval = 0;
  trainer.train();
  const std::string text = sink.str();
  MESSAGE("progress line: ", text.substr(text.rfind('\r') + 1));
  CHECK(text.find("20/20") != std::string::npos);
  CHECK(text.find("ep/s") != std::string::npos);
  CHECK(text.find("ETA") != std::string::npos);
  CHECK(text.find("loss") != std::string::npos);
  CHECK(text.find("val") != std::string::npos);
  CHECK(text.back() == '\n');

  kshot::ProgressBar off;
  off.start(10);
  off.update(5);
  off.finish();
  CHECK_FALSE(off.enabled());
}

TEST_CASE("Trainer: the same seeds give the same model bitwise with 1 and 2 threads, and in split runs") {
  // 100-row episodes through 64 -> 128 -> 32: each Linear's work passes detail::worth_parallel, so the
  // products run in parallel row blocks at 2 threads; validation runs episodes in parallel.
  Setup s;
  auto run = [&](int threads, std::vector<std::int64_t> chunks, bool validate) {
    kshot::ThreadCountGuard guard(threads);
    auto model = kshot::make_mlp<float>({64, 128, 32}, kshot::Activation::relu, kshot::Init::pytorch_default, 11);
    kshot::EpisodicTrainer<float> trainer(
        model, s.data.features,
        kshot::EpisodeObjective<float>(kshot::EpisodeSampler(s.index, episode_config(5, 5, 15), 7, s.base)),
        kshot::Adam<float>(2e-3), quiet(0));
    trainer.config.max_grad_norm = 5.0;
    trainer.config.set_schedule(kshot::CosineLr(2e-3, 60));
    if (validate) {
      trainer.set_validation(s.data.features, kshot::EpisodeSampler(s.index, episode_config(5, 1, 15), 8, s.validation), 40);
      trainer.config.validate_every = 20;
      trainer.config.restore_best = false;
    }
    double best = 0;
    for (std::int64_t n : chunks) best = trainer.train(n).best_validation.mean;
    return std::make_pair(kshot::VectorX<float>(model.parameters()), best);
  };
  const auto one = run(1, {60}, true);
  const auto two = run(2, {60}, true);
  REQUIRE(one.first.size() == two.first.size());
  CHECK(std::memcmp(one.first.data(), two.first.data(), sizeof(float) * std::size_t(one.first.size())) == 0);
  CHECK(one.second == two.second);
  const auto split = run(1, {25, 0, 35}, false);
  // 5-way episodes: chance is 0.2, and the best of four validations of a broken evaluation can pass 0.2 by luck.
  // This run reaches about 0.9.
  CHECK(one.second > 0.6);
  const auto whole = run(2, {60}, false);
  CHECK(std::memcmp(split.first.data(), whole.first.data(), sizeof(float) * std::size_t(whole.first.size())) == 0);
  // Validation never changes the training trajectory (restore_best off).
  CHECK(std::memcmp(one.first.data(), whole.first.data(), sizeof(float) * std::size_t(whole.first.size())) == 0);
}

TEST_CASE("Trainer: other classifiers and a metric-learning loss train through the same loop") {
  Setup s;
  {
    auto model = kshot::make_mlp<float>({64, 64, 32}, kshot::Activation::relu, kshot::Init::pytorch_default, 1);
    const double before = novel_accuracy(&model, s.data, s.index, s.novel, 5);
    kshot::EpisodicTrainer<float, kshot::Adam<float>, kshot::MatchingNetworks<float>> trainer(
        model, s.data.features,
        kshot::EpisodeObjective<float, kshot::MatchingNetworks<float>>(
            kshot::EpisodeSampler(s.index, episode_config(5, 5, 15), 7, s.base)),
        kshot::Adam<float>(1e-3), quiet(300));
    trainer.set_validation(s.data.features, kshot::EpisodeSampler(s.index, episode_config(5, 5, 15), 8, s.validation), 50);
    const kshot::TrainResult r = trainer.train();
    const double after = novel_accuracy(&model, s.data, s.index, s.novel, 5);
    MESSAGE("MatchingNetworks: novel 5-shot ", before, " -> ", after);
    CHECK(r.history.size() == 2);
    CHECK(after > before + 0.1);
  }
  {
    auto model = kshot::make_mlp<float>({64, 64, 32}, kshot::Activation::relu, kshot::Init::pytorch_default, 1);
    const double before = novel_accuracy(&model, s.data, s.index, s.novel, 5);
    kshot::TripletMarginLoss<float> loss;
    loss.margin = 0.2f;
    kshot::MetricTrainer<float, kshot::TripletMarginLoss<float>> trainer(
        model, s.data.features,
        kshot::MetricObjective<float, kshot::TripletMarginLoss<float>>(
            kshot::MPerClassSampler(s.index, 8, 64, 3, kshot::SmallClassPolicy::throw_error, s.base), loss),
        kshot::Adam<float>(1e-3), quiet(300));
    trainer.set_validation(s.data.features, kshot::EpisodeSampler(s.index, episode_config(5, 5, 15), 8, s.validation), 50);
    const kshot::TrainResult r = trainer.train();
    const double after = novel_accuracy(&model, s.data, s.index, s.novel, 5);
    MESSAGE("TripletMarginLoss: novel 5-shot ", before, " -> ", after, ", validation ", r.best_validation.mean);
    CHECK(after > before + 0.1);
  }
}

TEST_CASE("Trainer: bad configurations throw with the argument and the numbers") {
  Setup s;
  auto model = kshot::make_mlp<float>({64, 32, 16});
  const kshot::EpisodeObjective<float> objective(kshot::EpisodeSampler(s.index, episode_config(5, 1, 5), 7, s.base));
  using Trainer = kshot::EpisodicTrainer<float>;
  const RowMatrixX<float> narrow = RowMatrixX<float>::Zero(s.data.features.rows(), 10);
  KSHOT_CHECK_THROWS_WITH_ALL(Trainer(model, narrow, objective), std::invalid_argument, "kshot::Trainer::Trainer()",
                              "features has 10 columns", "input_dim is 64");
  kshot::Sequential<float> empty;
  KSHOT_CHECK_THROWS_WITH_ALL(Trainer(empty, s.data.features, objective), std::invalid_argument, "no layers");
  RowMatrixX<float> nan = s.data.features;
  nan(3, 4) = std::nanf("");
  KSHOT_CHECK_THROWS_WITH_ALL(Trainer(model, nan, objective), std::invalid_argument, "features", "row 3, column 4");

  Trainer trainer(model, s.data.features, objective, kshot::Adam<float>(1e-3), quiet(10));
  KSHOT_CHECK_THROWS_WITH_ALL(trainer.train(-1), std::invalid_argument, "kshot::Trainer::train()", "steps must be >= 0, got -1");
  trainer.config.patience = 2;
  KSHOT_CHECK_THROWS_WITH_ALL(trainer.train(), std::invalid_argument, "config.patience is 2", "set_validation()");
  trainer.config.patience = 0;
  trainer.config.checkpoint_path = "x.bin";
  KSHOT_CHECK_THROWS_WITH_ALL(trainer.train(), std::invalid_argument, "config.checkpoint_path", "set_validation()");
  trainer.config.checkpoint_path.clear();
  trainer.config.min_delta = -0.5;
  KSHOT_CHECK_THROWS_WITH_ALL(trainer.train(), std::invalid_argument, "config.min_delta", "-0.5");
  trainer.config.min_delta = 0;
  trainer.config.max_grad_norm = -1;
  KSHOT_CHECK_THROWS_WITH_ALL(trainer.train(), std::invalid_argument, "config.max_grad_norm", "-1");
  trainer.config.max_grad_norm = 0;
  trainer.config.validate_every = -3;
  KSHOT_CHECK_THROWS_WITH_ALL(trainer.train(), std::invalid_argument, "config.validate_every", "-3");
  trainer.config.validate_every = 0;
  trainer.config.step_threads = -2;
  KSHOT_CHECK_THROWS_WITH_ALL(trainer.train(), std::invalid_argument, "config.step_threads", "-2");
  trainer.config.step_threads = 0;
  trainer.config.learning_rate = [](std::int64_t t) { return t < 2 ? 1e-3 : -1.0; };
  KSHOT_CHECK_THROWS_WITH_ALL(trainer.train(), std::invalid_argument, "learning-rate schedule gave -1", "at step 2");
  CHECK(trainer.steps_taken() == 2);
  trainer.config.learning_rate = nullptr;

  const kshot::EpisodeSampler val(s.index, episode_config(5, 1, 5), 8, s.validation);
  KSHOT_CHECK_THROWS_WITH_ALL(trainer.set_validation(s.data.features, val, 0), std::invalid_argument,
                              "kshot::Trainer::set_validation()", "episodes must be at least 1, got 0");
  KSHOT_CHECK_THROWS_WITH_ALL(trainer.set_validation(narrow, val, 5), std::invalid_argument, "features has 10 columns");
  KSHOT_CHECK_THROWS_WITH_ALL(trainer.set_validation(s.data.features.topRows(100), val, 5), std::out_of_range,
                              "features has 100 rows");
  KSHOT_CHECK_THROWS_WITH_ALL(trainer.validate(), std::invalid_argument, "no validation set");
  // Too few classes for the episode: the sampler refuses (named by the sampler).
  CHECK_THROWS_AS(kshot::EpisodeSampler(s.index, episode_config(6, 1, 5), 8, s.validation), std::invalid_argument);

  // Training rows outside the features: caught at construction (first episode).
  const RowMatrixX<float> few = s.data.features.topRows(50);
  CHECK_THROWS_AS(Trainer(model, few, objective), std::out_of_range);
  CHECK_THROWS_AS(kshot::ProgressBar(nullptr, "ep", -1.0), std::invalid_argument);
}

TEST_CASE("Trainer: column-major features are copied once and train the same model as row-major ones") {
  Setup s;
  auto run = [&](const auto& features) {
    auto model = kshot::make_mlp<float>({64, 32, 16}, kshot::Activation::relu, kshot::Init::pytorch_default, 2);
    kshot::EpisodicTrainer<float> trainer(
        model, features,
        kshot::EpisodeObjective<float>(kshot::EpisodeSampler(s.index, episode_config(5, 2, 5), 7, s.base)),
        kshot::Adam<float>(1e-3), quiet(20));
    trainer.train();
    return kshot::VectorX<float>(model.parameters());
  };
  const Eigen::MatrixXf column_major = s.data.features;
  const auto a = run(s.data.features);
  const auto b = run(column_major);
  CHECK(std::memcmp(a.data(), b.data(), sizeof(float) * std::size_t(a.size())) == 0);
}
