/**
 * @file kshot/train/callbacks.hpp
 * @brief What a trainer tells its callbacks (TrainState), the callback interface (TrainCallback) and a
 * callback made of functions (CallbackFunctions).
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_TRAIN_CALLBACKS_HPP
#define KSHOT_TRAIN_CALLBACKS_HPP

#include "kshot/eval/confidence.hpp"

#include <cstdint>
#include <functional>
#include <limits>
#include <string>

namespace kshot {

/**
 * @brief The state of a training run as callbacks see it (all numbers in double, whatever the Scalar).
 *
 * `step` counts the optimizer steps taken by the trainer since it was made (train() calls continue the
 * count); step s trained on episode (or batch) s - 1 of the sampler.
 */
struct TrainState {
  std::int64_t step = 0;          ///< optimizer steps taken so far
  std::int64_t end_step = 0;      ///< the step the current train() call runs to (if not stopped early)
  double loss = std::numeric_limits<double>::quiet_NaN();  ///< the loss of the last step
  double mean_loss = std::numeric_limits<double>::quiet_NaN();  ///< mean loss since the last validation
  double learning_rate = 0;       ///< the learning rate of the last step
  double grad_norm = std::numeric_limits<double>::quiet_NaN();  ///< L2 norm before clipping (NaN: clipping off)
  bool has_validation = false;    ///< true once a validation ran
  MeanInterval validation;        ///< the last validation accuracy ± 95% interval
  MeanInterval best_validation;   ///< the best validation accuracy so far
  std::int64_t best_step = -1;    ///< the step of the best validation (-1: none yet)
  std::int64_t validations_without_improvement = 0;  ///< since the best one
  double elapsed_seconds = 0;     ///< wall time of the current train() call
  std::string checkpoint_path;    ///< the file the best model was saved to ("" when no file is configured)
};

/**
 * @brief Hooks a trainer calls, in this order within one train() call:
 * on_train_begin; then per step on_step_end; after each validation on_validation_end, preceded by
 * on_new_best when the validation improved on the best (after the best model was stored); finally
 * on_train_end (after the best model was restored, if configured).
 *
 * Return false from on_step_end or on_validation_end to stop training after that point (the run then ends
 * as if stopped early, and on_train_end is still called).
 *
 * @note The trainer keeps a pointer: a callback must outlive the train() calls it is registered for.
 */
class TrainCallback {
 public:
  virtual ~TrainCallback() = default;
  /// Before the first step of a train() call.
  virtual void on_train_begin(const TrainState& state) { (void)state; }
  /// After each optimizer step. Return false to stop.
  virtual bool on_step_end(const TrainState& state) {
    (void)state;
    return true;
  }
  /// After the best model was updated by an improving validation (and written, if a file is configured).
  virtual void on_new_best(const TrainState& state) { (void)state; }
  /// After each validation. Return false to stop.
  virtual bool on_validation_end(const TrainState& state) {
    (void)state;
    return true;
  }
  /// At the end of a train() call, also after an early stop.
  virtual void on_train_end(const TrainState& state) { (void)state; }
};

/**
 * @brief A TrainCallback made of std::functions; an empty function is skipped (and counts as "continue").
 *
 * @code
 * kshot::CallbackFunctions log;
 * log.validation_end = [](const kshot::TrainState& s) { std::printf("%lld %.3f\n", (long long)s.step, s.validation.mean); return true; };
 * trainer.add_callback(log);
 * @endcode
 */
class CallbackFunctions : public TrainCallback {
 public:
  std::function<void(const TrainState&)> train_begin;       ///< on_train_begin
  std::function<bool(const TrainState&)> step_end;          ///< on_step_end
  std::function<void(const TrainState&)> new_best;          ///< on_new_best
  std::function<bool(const TrainState&)> validation_end;    ///< on_validation_end
  std::function<void(const TrainState&)> train_end;         ///< on_train_end

  void on_train_begin(const TrainState& state) override {
    if (train_begin) train_begin(state);
  }
  bool on_step_end(const TrainState& state) override { return step_end ? step_end(state) : true; }
  void on_new_best(const TrainState& state) override {
    if (new_best) new_best(state);
  }
  bool on_validation_end(const TrainState& state) override {
    return validation_end ? validation_end(state) : true;
  }
  void on_train_end(const TrainState& state) override {
    if (train_end) train_end(state);
  }
};

}  // namespace kshot

#endif  // KSHOT_TRAIN_CALLBACKS_HPP
