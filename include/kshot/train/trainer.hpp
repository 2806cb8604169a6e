/**
 * @file kshot/train/trainer.hpp
 * @brief The training loop: sample, gather, forward, loss, backward, optimizer step; validation episodes,
 * early stopping on validation accuracy, the best model kept (in memory and optionally on disk), learning-rate
 * schedules, gradient clipping, callbacks and a progress bar. The same seed gives the same model, bitwise,
 * with any number of threads.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_TRAIN_TRAINER_HPP
#define KSHOT_TRAIN_TRAINER_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"
#include "kshot/eval/confidence.hpp"
#include "kshot/eval/episodic.hpp"
#include "kshot/fewshot/protonet.hpp"
#include "kshot/nn/adam.hpp"
#include "kshot/nn/clip.hpp"
#include "kshot/nn/sequential.hpp"
#include "kshot/sampling/episode.hpp"
#include "kshot/sampling/episode_sampler.hpp"
#include "kshot/train/callbacks.hpp"
#include "kshot/train/episode_loss.hpp"
#include "kshot/train/progress.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <iostream>
#include <limits>
#include <ostream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace kshot {

/**
 * @brief The options of a training run. Every member is checked when train() starts.
 *
 * | member | default | meaning |
 * |---|---|---|
 * | steps | 1000 | optimizer steps per train() call (one episode or batch each) |
 * | validate_every | 0 | validate every this many steps (0: only at the start and the end) |
 * | validate_at_start | true | validate the model before the first step of the trainer (step 0 can be the best) |
 * | patience | 0 | stop after this many validations without improvement (0: never stop early) |
 * | min_delta | 0 | an improvement must exceed the best accuracy by more than this (fraction, >= 0) |
 * | restore_best | true | at the end, put the best validated parameters back into the model |
 * | checkpoint_path | "" | if set, save the model to this file at each new best (Sequential::save, atomic) |
 * | max_grad_norm | 0 | clip the gradient's L2 norm to this before each step (0: no clipping) |
 * | step_threads | 0 | OpenMP threads for the training steps (0: the caller's setting); validation uses the caller's |
 * | learning_rate | empty | step -> learning rate (e.g. a kshot schedule); empty keeps the optimizer's lr |
 * | progress | true | draw a progress bar |
 * | progress_stream | nullptr | where the bar goes (nullptr: std::cerr) |
 * | progress_interval | 0.2 | least seconds between redraws |
 */
struct TrainerConfig {
  std::int64_t steps = 1000;            ///< optimizer steps per train() call, >= 0
  std::int64_t validate_every = 0;      ///< steps between validations, >= 0 (0: start and end only)
  bool validate_at_start = true;        ///< validate before the trainer's first step
  std::int64_t patience = 0;            ///< validations without improvement before stopping, >= 0 (0: off)
  double min_delta = 0.0;               ///< least accuracy gain that counts as improvement, finite, >= 0
  bool restore_best = true;             ///< restore the best validated parameters at the end
  std::string checkpoint_path;          ///< save the best model here ("" : in memory only)
  double max_grad_norm = 0.0;           ///< gradient L2-norm clip, finite, >= 0 (0: off)
  /// OpenMP threads for the training steps, >= 0 (0: the caller's setting). Results never depend on it; episodes
  /// of about 100 rows gain little from threads, and 1 avoids OpenMP's barriers on a busy machine.
  int step_threads = 0;
  std::function<double(std::int64_t)> learning_rate;  ///< learning rate of step t (0-based); empty: unchanged
  bool progress = true;                 ///< draw the progress bar
  std::ostream* progress_stream = nullptr;  ///< the bar's stream (nullptr: std::cerr)
  double progress_interval = 0.2;       ///< seconds between redraws, finite, >= 0

  /// Sets learning_rate from a kshot schedule (anything with `double learning_rate(std::int64_t) const`).
  template <class Schedule>
  void set_schedule(Schedule schedule) {
    learning_rate = [s = std::move(schedule)](std::int64_t t) { return s.learning_rate(t); };
  }
};

/// One validation of a training run.
struct ValidationRecord {
  std::int64_t step = 0;      ///< optimizer steps taken when it ran
  MeanInterval accuracy;      ///< mean episode accuracy ± 95% interval
  double mean_loss = std::numeric_limits<double>::quiet_NaN();  ///< mean training loss since the previous one
};

/// What one train() call did.
struct TrainResult {
  std::int64_t steps = 0;            ///< steps taken by this call
  std::int64_t total_steps = 0;      ///< the trainer's step count at the end
  bool stopped_early = false;        ///< patience ran out
  bool stopped_by_callback = false;  ///< a callback returned false
  double seconds = 0;                ///< wall time of the call (validations included)
  double train_seconds = 0;          ///< wall time of the training steps alone
  double steps_per_second = 0;       ///< steps / train_seconds
  double mean_loss = std::numeric_limits<double>::quiet_NaN();  ///< mean loss of the call's steps
  bool has_validation = false;       ///< a validation set was configured
  MeanInterval best_validation;      ///< the best validation accuracy of the trainer so far
  std::int64_t best_step = -1;       ///< its step (-1: none)
  bool restored_best = false;        ///< the model was reset to the best parameters at the end
  std::vector<ValidationRecord> history;  ///< the validations of this call, in order
};

/**
 * @brief Trains a Sequential model with an objective (an episodic few-shot loss or a metric loss) and an
 * optimizer.
 *
 * Step t (counted from the trainer's construction, continued across train() calls) runs
 * `objective.step(t, features, model)` (episode or batch t of the objective's sampler: a pure function of
 * its seed and t), optionally clips the gradient norm, sets the optimizer's learning rate from the schedule,
 * and runs `optimizer.step(model.parameters(), model.gradients())`.
 *
 * With a validation set (set_validation), the model is scored on a fixed list of validation episodes at the
 * start, every `validate_every` steps and at the end. The best validation keeps a copy of the parameters (and
 * saves the model to `checkpoint_path` if set); `patience` validations without improvement stop the run;
 * `restore_best` puts the best parameters back at the end. The optimizer's state (moments, step count) is
 * kept in the trainer across train() calls and is not rolled back with the parameters.
 *
 * Determinism: the episodes, the model's products (fixed row blocks) and the validation (episode-ordered
 * reductions) do not depend on the number of OpenMP threads, so the same seeds give the same model, bitwise,
 * with 1 or N threads.
 *
 * @code
 * kshot::Sequential<float> model = kshot::make_mlp<float>({784, 256, 64});
 * kshot::EpisodeSampler sampler(index, config, 42, split.base);
 * kshot::EpisodicTrainer<float> trainer(model, features, kshot::EpisodeObjective<float>(sampler),
 *                                       kshot::Adam<float>(1e-3));
 * trainer.set_validation(features, kshot::EpisodeSampler(index, config, 7, split.validation), 200);
 * trainer.config.steps = 5000;
 * trainer.config.validate_every = 500;
 * trainer.config.patience = 4;
 * kshot::TrainResult result = trainer.train();
 * @endcode
 *
 * @tparam Scalar float or double.
 * @tparam Objective EpisodeObjective<Scalar, Classifier> or MetricObjective<Scalar, Loss> (or any type with
 * their step(), check_rows(), max_rows(), unit(), validation_classifier()).
 * @tparam Optimizer a kshot optimizer: a public `double lr` and `step(VectorRef, ConstVectorRef)` (Adam,
 * AdamW, Sgd).
 * @note The trainer keeps references to the model and to the training features: both must outlive it. After
 * the first step of a given shape a training step allocates nothing (the model's, objective's and optimizer's
 * buffers are reused); validation and the progress bar's redraws allocate. Not thread-safe; not copyable.
 */
template <class Scalar, class Objective, class Optimizer = Adam<Scalar>>
class Trainer {
  static_assert(is_supported_scalar_v<Scalar>, "kshot::Trainer<Scalar>: Scalar must be float or double");

 public:
  /// The run's options (checked at train()).
  TrainerConfig config;

  /**
   * @brief A trainer of `model` on `features` (N x D, the rows the objective's sampler indexes).
   * @param model the model to train (kept by reference).
   * @param features training features (a row-major matrix, Map or row block), viewed without a copy: keep it
   * alive and unchanged while the trainer is used. A column-major matrix or an expression is copied once
   * into the trainer instead.
   * @param objective what one step computes (copied).
   * @param optimizer its hyperparameters and state (copied; reach it with optimizer()).
   * @param options the run's options.
   * @throws std::invalid_argument if the model is empty, features does not have model.input_dim() columns,
   * or features holds a non-finite value; std::out_of_range if the first episode or batch refers to a row
   * outside features.
   */
  template <class Derived>
  Trainer(Sequential<Scalar>& model, const Eigen::MatrixBase<Derived>& features, Objective objective,
          Optimizer optimizer = Optimizer(), TrainerConfig options = TrainerConfig())
      : config(std::move(options)),
        model_(model),
        features_(features.derived()),
        objective_(std::move(objective)),
        optimizer_(std::move(optimizer)) {
    static_assert(std::is_same_v<typename Derived::Scalar, Scalar>,
                  "kshot::Trainer<Scalar>: features must hold the trainer's Scalar (float or double)");
    constexpr const char* where = "kshot::Trainer::Trainer()";
    KSHOT_CHECK(!model.empty(), where, "the model has no layers");
    KSHOT_CHECK(features_.cols() == model.input_dim(), where,
                detail::cat("features has ", features_.cols(), " columns but the model's input_dim is ",
                            model.input_dim()));
    KSHOT_CHECK(features_.rows() > 0, where, "features has no rows");
    detail::check_finite(features_, where, "features");
    objective_.check_rows(features_, where);
    model_.reserve(objective_.max_rows());
  }

  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  /**
   * @brief Validation on `episodes` episodes (first .. first + episodes - 1) of `sampler` over `features`.
   *
   * The rows those episodes use are gathered once here (a copy), so `features` need not outlive the call.
   * Each validation embeds them with a copy of the model (forward with training = false), and scores the
   * episodes with the objective's validation classifier (evaluate_episodes: in parallel over episodes,
   * identical for any thread count).
   * @throws std::invalid_argument if episodes < 1, first < 0, features does not have the model's input_dim
   * columns, or holds a non-finite value among the gathered rows; std::out_of_range if an episode refers to
   * a row outside features.
   */
  void set_validation(ConstRowMatrixRef<Scalar> features, EpisodeSampler sampler, Index episodes, Index first = 0) {
    constexpr const char* where = "kshot::Trainer::set_validation()";
    KSHOT_CHECK(episodes >= 1, where, detail::cat("episodes must be at least 1, got ", episodes));
    KSHOT_CHECK(first >= 0, where, detail::cat("first must be >= 0, got ", first));
    KSHOT_CHECK(features.cols() == model_.input_dim(), where,
                detail::cat("features has ", features.cols(), " columns but the model's input_dim is ",
                            model_.input_dim()));
    std::vector<char> used(static_cast<std::size_t>(features.rows()), 0);
    Episode episode;
    for (Index e = 0; e < episodes; ++e) {
      sampler.sample(first + e, episode);
      for (const auto* rows : {&episode.support_rows, &episode.query_rows})
        for (Index r : *rows) {
          KSHOT_CHECK_RANGE(r >= 0 && r < features.rows(), where,
                            detail::cat("validation episode ", first + e, " uses row ", r, " but features has ",
                                        features.rows(), " rows"));
          used[static_cast<std::size_t>(r)] = 1;
        }
    }
    std::vector<Index> rows;
    for (Index r = 0; r < features.rows(); ++r)
      if (used[static_cast<std::size_t>(r)]) rows.push_back(r);
    RowMatrixX<Scalar> x(static_cast<Index>(rows.size()), features.cols());
    gather_rows<Scalar>(features, rows, x);
    detail::check_finite(x, where, "features");
    val_rows_ = std::move(rows);
    val_x_ = std::move(x);
    val_sampler_.clear();
    val_sampler_.push_back(std::move(sampler));
    val_episodes_ = episodes;
    val_first_ = first;
    val_dataset_rows_ = features.rows();
    val_emb_.resize(0, 0);
  }

  /// True when set_validation() was called.
  bool has_validation() const noexcept { return !val_sampler_.empty(); }

  /// Registers a callback (kept by pointer: it must outlive the train() calls).
  void add_callback(TrainCallback& callback) { callbacks_.push_back(&callback); }
  /// Removes every callback.
  void clear_callbacks() noexcept { callbacks_.clear(); }

  /// The model being trained.
  Sequential<Scalar>& model() noexcept { return model_; }
  /// The optimizer, with its state (moments, step count).
  Optimizer& optimizer() noexcept { return optimizer_; }
  /// The objective (its sampler and loss).
  Objective& objective() noexcept { return objective_; }
  /// Optimizer steps taken so far (the index of the next training episode or batch).
  std::int64_t steps_taken() const noexcept { return step_; }
  /// The state callbacks saw last.
  const TrainState& state() const noexcept { return state_; }
  /// The parameters of the best validation (empty before one).
  const VectorX<Scalar>& best_parameters() const noexcept { return best_; }

  /**
   * @brief One training step (episode or batch steps_taken()), without validation, callbacks or progress.
   * @return the step's loss.
   * @throws std::invalid_argument as train() (invalid max_grad_norm or learning rate), and whatever the
   * objective or the optimizer throws (a non-finite loss gradient, for one).
   */
  Scalar train_step() {
    constexpr const char* where = "kshot::Trainer::train_step()";
    KSHOT_CHECK(std::isfinite(config.max_grad_norm) && config.max_grad_norm >= 0, where,
                detail::cat("config.max_grad_norm must be finite and >= 0, got ", config.max_grad_norm));
    return step_impl(where);
  }

  /**
   * @brief Scores the current model on the validation episodes (no side effect on the best model).
   * @throws std::invalid_argument if no validation set was given.
   */
  MeanInterval validate() {
    KSHOT_CHECK(has_validation(), "kshot::Trainer::validate()", "no validation set: call set_validation() first");
    if (eval_model_.num_parameters() != model_.num_parameters() || eval_model_.size() != model_.size())
      eval_model_ = model_;
    else
      eval_model_.parameters() = model_.parameters();
    const RowMatrixX<Scalar>& emb = eval_model_.forward(val_x_, false);
    if (val_emb_.rows() != val_dataset_rows_ || val_emb_.cols() != emb.cols())
      val_emb_ = RowMatrixX<Scalar>::Zero(val_dataset_rows_, emb.cols());
    for (std::size_t k = 0; k < val_rows_.size(); ++k) val_emb_.row(val_rows_[k]) = emb.row(static_cast<Index>(k));
    const EpisodicEvaluation result =
        evaluate_episodes(objective_.validation_classifier(), val_sampler_.front(), val_emb_, val_episodes_, val_first_);
    return result.accuracy;
  }

  /// Runs config.steps steps (see train(std::int64_t)).
  TrainResult train() { return train(config.steps); }

  /**
   * @brief Runs `steps` optimizer steps (fewer if stopped early), validating, checkpointing and calling back
   * as configured.
   * @throws std::invalid_argument if steps < 0 or a config member is out of range (named with its value);
   * if patience > 0 or checkpoint_path is set without a validation set; if the learning-rate schedule gives a
   * negative or non-finite rate (naming the step); std::runtime_error if the checkpoint cannot be written;
   * whatever the objective, the optimizer or a callback throws. The model keeps the parameters of the last
   * completed step then.
   */
  TrainResult train(std::int64_t steps) {
    constexpr const char* where = "kshot::Trainer::train()";
    check_config(steps, where);
    const auto start = std::chrono::steady_clock::now();
    TrainResult result;
    result.has_validation = has_validation();
    state_.end_step = step_ + steps;
    state_.elapsed_seconds = 0;
    state_.checkpoint_path = config.checkpoint_path;
    ProgressBar bar(config.progress ? (config.progress_stream ? config.progress_stream : &std::cerr) : nullptr,
                    objective_.unit(), config.progress_interval);
    bar.start(steps);
    if (state_.has_validation) bar.set_validation(state_.validation.mean, state_.validation.half_width);
    for (TrainCallback* cb : callbacks_) cb->on_train_begin(state_);

    double loss_sum = 0, window_sum = 0;
    std::int64_t window_count = 0;
    double train_seconds = 0;
    bool stop = false;
    auto validation_round = [&]() {
      const ValidationRecord record = run_validation(window_count > 0 ? window_sum / double(window_count)
                                                                      : std::numeric_limits<double>::quiet_NaN());
      result.history.push_back(record);
      last_validated_ = step_;
      window_sum = 0;
      window_count = 0;
      bar.set_validation(record.accuracy.mean, record.accuracy.half_width);
      if (improved_) {
        for (TrainCallback* cb : callbacks_) cb->on_new_best(state_);
      }
      bool go_on = true;
      for (TrainCallback* cb : callbacks_) go_on = cb->on_validation_end(state_) && go_on;
      if (!go_on) {
        result.stopped_by_callback = true;
        stop = true;
      }
      if (config.patience > 0 && state_.validations_without_improvement >= config.patience) {
        result.stopped_early = true;
        stop = true;
      }
    };

    if (has_validation() && config.validate_at_start && last_validated_ != step_) validation_round();
    std::int64_t taken = 0;
    while (!stop && taken < steps) {
      const auto t0 = std::chrono::steady_clock::now();
      double loss;
      if (config.step_threads > 0) {
        const ThreadCountGuard guard(config.step_threads);
        loss = static_cast<double>(step_impl(where));
      } else {
        loss = static_cast<double>(step_impl(where));
      }
      train_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      ++taken;
      loss_sum += loss;
      window_sum += loss;
      ++window_count;
      state_.loss = loss;
      state_.mean_loss = window_sum / double(window_count);
      state_.elapsed_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      bar.set_loss(state_.mean_loss);
      bar.update(taken);
      bool go_on = true;
      for (TrainCallback* cb : callbacks_) go_on = cb->on_step_end(state_) && go_on;
      if (!go_on) {
        result.stopped_by_callback = true;
        stop = true;
      }
      if (!stop && has_validation() && config.validate_every > 0 && step_ % config.validate_every == 0)
        validation_round();
    }
    if (has_validation() && last_validated_ != step_) validation_round();

    if (config.restore_best && has_validation() && state_.best_step >= 0 && best_.size() == model_.num_parameters()) {
      model_.parameters() = best_;
      result.restored_best = true;
    }
    state_.elapsed_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    bar.update(taken);
    bar.finish();
    result.steps = taken;
    result.total_steps = step_;
    result.seconds = state_.elapsed_seconds;
    result.train_seconds = train_seconds;
    result.steps_per_second = train_seconds > 0 ? double(taken) / train_seconds : 0.0;
    result.mean_loss = taken > 0 ? loss_sum / double(taken) : std::numeric_limits<double>::quiet_NaN();
    result.best_validation = state_.best_validation;
    result.best_step = state_.best_step;
    for (TrainCallback* cb : callbacks_) cb->on_train_end(state_);
    return result;
  }

 private:
  void check_config(std::int64_t steps, const char* where) const {
    KSHOT_CHECK(steps >= 0, where, detail::cat("steps must be >= 0, got ", steps));
    KSHOT_CHECK(config.validate_every >= 0, where,
                detail::cat("config.validate_every must be >= 0, got ", config.validate_every));
    KSHOT_CHECK(config.patience >= 0, where, detail::cat("config.patience must be >= 0, got ", config.patience));
    KSHOT_CHECK(std::isfinite(config.min_delta) && config.min_delta >= 0, where,
                detail::cat("config.min_delta must be finite and >= 0, got ", config.min_delta));
    KSHOT_CHECK(std::isfinite(config.max_grad_norm) && config.max_grad_norm >= 0, where,
                detail::cat("config.max_grad_norm must be finite and >= 0, got ", config.max_grad_norm));
    KSHOT_CHECK(config.step_threads >= 0, where,
                detail::cat("config.step_threads must be >= 0, got ", config.step_threads));
    KSHOT_CHECK(std::isfinite(config.progress_interval) && config.progress_interval >= 0, where,
                detail::cat("config.progress_interval must be finite and >= 0, got ", config.progress_interval));
    KSHOT_CHECK(config.patience == 0 || has_validation(), where,
                detail::cat("config.patience is ", config.patience,
                            " but there is no validation set to stop on: call set_validation() first"));
    KSHOT_CHECK(config.checkpoint_path.empty() || has_validation(), where,
                detail::cat("config.checkpoint_path is '", config.checkpoint_path,
                            "' but there is no validation set to choose the best model: call set_validation() first"));
  }

  Scalar step_impl(const char* where) {
    if (config.learning_rate) {
      const double lr = config.learning_rate(step_);
      KSHOT_CHECK(std::isfinite(lr) && lr >= 0, where,
                  detail::cat("the learning-rate schedule gave ", lr, " at step ", step_, " (must be finite and >= 0)"));
      optimizer_.lr = lr;
    }
    model_.zero_grad();
    const Scalar loss = objective_.step(static_cast<Index>(step_), features_, model_);
    if (config.max_grad_norm > 0) state_.grad_norm = clip_grad_norm(model_.gradients(), config.max_grad_norm);
    optimizer_.step(model_.parameters(), model_.gradients());
    state_.learning_rate = optimizer_.lr;
    ++step_;
    state_.step = step_;
    return loss;
  }

  ValidationRecord run_validation(double mean_loss) {
    ValidationRecord record;
    record.step = step_;
    record.mean_loss = mean_loss;
    record.accuracy = validate();
    state_.has_validation = true;
    state_.validation = record.accuracy;
    improved_ = state_.best_step < 0 || record.accuracy.mean > state_.best_validation.mean + config.min_delta;
    if (improved_) {
      state_.best_validation = record.accuracy;
      state_.best_step = step_;
      state_.validations_without_improvement = 0;
      best_ = model_.parameters();
      if (!config.checkpoint_path.empty()) model_.save(config.checkpoint_path);
    } else {
      ++state_.validations_without_improvement;
    }
    return record;
  }

  Sequential<Scalar>& model_;
  ConstRowMatrixRef<Scalar> features_;  // a view of the caller's features (or, for column-major ones, a copy)
  Objective objective_;
  Optimizer optimizer_;
  std::vector<TrainCallback*> callbacks_;
  std::int64_t step_ = 0;
  std::int64_t last_validated_ = -1;  // the step of the last validation (-1: none)
  TrainState state_;
  bool improved_ = false;
  VectorX<Scalar> best_;
  // Validation: the rows its episodes use (gathered once), their embeddings scattered into a matrix indexed
  // like the validation features, a model copy for the forward, and the sampler (a vector: no default ctor).
  std::vector<Index> val_rows_;
  RowMatrixX<Scalar> val_x_, val_emb_;
  std::vector<EpisodeSampler> val_sampler_;
  Index val_episodes_ = 0, val_first_ = 0, val_dataset_rows_ = 0;
  Sequential<Scalar> eval_model_;
};

/**
 * @brief The episodic trainer: `EpisodicTrainer<float>` trains with ProtoNet's loss and Adam;
 * `EpisodicTrainer<float, Sgd<float>, MatchingNetworks<float>>` with another optimizer and classifier.
 */
template <class Scalar, class Optimizer = Adam<Scalar>, class Classifier = ProtoNet<Scalar>>
using EpisodicTrainer = Trainer<Scalar, EpisodeObjective<Scalar, Classifier>, Optimizer>;

/// The metric-learning trainer: m-per-class batches and a metric loss (`MetricTrainer<float, TripletMarginLoss<float>>`).
template <class Scalar, class Loss, class Optimizer = Adam<Scalar>>
using MetricTrainer = Trainer<Scalar, MetricObjective<Scalar, Loss>, Optimizer>;

}  // namespace kshot

#endif  // KSHOT_TRAIN_TRAINER_HPP
