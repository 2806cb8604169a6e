/**
 * @file kshot/meta/reptile.hpp
 * @brief Reptile (Nichol, Achiam and Schulman 2018): train on a task with a few steps of an ordinary optimizer,
 * then move the initialisation towards the adapted parameters.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_META_REPTILE_HPP
#define KSHOT_META_REPTILE_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/types.hpp"
#include "kshot/core/workspace.hpp"
#include "kshot/meta/detail/inner_loop.hpp"
#include "kshot/meta/parameter_range.hpp"
#include "kshot/meta/task_loss.hpp"
#include "kshot/nn/sequential.hpp"
#include "kshot/nn/sgd.hpp"

#include <cmath>

namespace kshot {

/**
 * @brief Reptile over a Sequential model.
 *
 * For one task, θ' is the result of inner_steps steps of the inner optimizer (fresh state per task:
 * reset() first) on the task's data, full batch, from θ; on the adapted range only. The meta step with step
 * size ε = outer_lr is
 * @f[ \theta \leftarrow \theta + \varepsilon\,(\bar\theta' - \theta),\qquad \bar\theta' = \frac1T\sum_{t=1}^T
 *     \theta'_t \text{ over the tasks of a batch.} @f]
 * meta_gradient() returns θ − θ̄' instead, learn2learn's example convention (the script accumulates
 * `p.grad = p - p_adapted`, averages over the batch and hands it to a meta-optimizer), so any optimizer (SGD
 * with lr ε reproduces step(); Adam) can take the meta step.
 *
 * learn2learn equivalent: its Reptile example script (examples/vision/reptile_miniimagenet.py; learn2learn has no
 * Reptile class) deep-copies the model, trains the copy with Adam (betas (0, 0.999)) on random mini-batches of
 * the task, accumulates `p.grad = p - p_adapted` over the meta-batch, divides by its size and steps
 * torch.optim.SGD with meta_lr: meta_gradient() then Sgd, or step() with outer_lr = meta_lr. Differences: each
 * inner step here is full batch on the data given (pass a mini-batch per call for the script's random
 * mini-batches); the inner optimizer is a template parameter; its state is reset for every task unless
 * keep_inner_state is set (the script keeps it).
 *
 * @tparam Scalar float or double.
 * @tparam Loss a TaskLoss (see CrossEntropyLoss for the concept); only evaluate(y, t, dy) is used.
 * @tparam Optimizer the inner optimizer: default-constructible, with reset() and
 * step(VectorRef<Scalar> params, ConstVectorRef<Scalar> grads) (Sgd<Scalar>, Adam<Scalar>, AdamW<Scalar>).
 * @note Memory: two parameter vectors plus the optimizer's state. Buffers grow and never shrink: after the
 * first task nothing allocates (with the same shapes). Results are bitwise identical for any number of OpenMP
 * threads (tasks in index order). Not thread-safe: one Reptile and one model per thread.
 */
template <class Scalar = float, class Loss = MseLoss<Scalar>, class Optimizer = Sgd<Scalar>>
class Reptile {
  static_assert(is_supported_scalar_v<Scalar>,
                "kshot::Reptile<Scalar, Loss, Optimizer>: Scalar must be float or double");

 public:
  Index inner_steps = 5;   ///< inner optimizer steps per task; >= 0
  double outer_lr = 0.1;   ///< ε, the meta step size of step(); finite and >= 0
  ParameterRange adapted;  ///< the parameters the inner loop trains (all by default)
  Loss loss;               ///< the task loss
  Optimizer inner;         ///< the inner optimizer (its hyperparameters: inner.lr, ...)
  /// false (default): inner.reset() before every task, so each task starts from a fresh optimizer state and
  /// the tasks are independent. true: the state carries over from task to task, as learn2learn's Reptile script
  /// does with its inner Adam (it saves and reloads the optimizer's state_dict around every task).
  bool keep_inner_state = false;

  /// Five inner steps of the default inner optimizer (Sgd: lr 0.01), outer_lr 0.1.
  Reptile() = default;

  /**
   * @brief Sets the inner learning rate (inner.lr), the inner step count and ε.
   * @param inner_lr the inner optimizer's lr.
   * @param steps inner_steps.
   * @param meta_lr outer_lr.
   * @note Values are checked when used.
   */
  Reptile(double inner_lr, Index steps, double meta_lr) : inner_steps(steps), outer_lr(meta_lr) { inner.lr = inner_lr; }

  /**
   * @brief Trains on one task from the model's parameters θ; writes θ' into adapted_parameters and leaves the
   * model at θ (the inner optimizer's state is left as the task ended it).
   * @param model the model (parameters and gradients restored on return).
   * @param x, y the task's data (inputs n x input_dim(), targets as the loss defines them).
   * @param adapted_parameters model.num_parameters() entries, overwritten with θ'.
   * @return the task loss at θ (before training).
   * @throws std::invalid_argument if the model is empty or has a non-finite parameter, inner_steps < 0, the
   * adapted range lies outside the parameters, x or y does not fit (std::out_of_range for a class id out of
   * range), adapted_parameters has the wrong size, the inner optimizer rejects its hyperparameters, or the
   * parameters become non-finite.
   */
  Scalar adapt(Sequential<Scalar>& model, ConstRowMatrixRef<Scalar> x, typename Loss::TargetRef y,
               VectorRef<Scalar> adapted_parameters) {
    constexpr const char* where = "kshot::Reptile::adapt()";
    const Index size = check(model, where);
    detail::check_task_set(model, loss, x, y, where, "x", "y");
    check_vector(model, adapted_parameters, where, "adapted_parameters");
    return train(model, x, y, size, adapted_parameters.data(), where);
  }

  /**
   * @brief One task's meta-gradient θ − θ' (learn2learn's example convention); returns the task loss at θ.
   * @param model the model at θ (restored on return).
   * @param x, y the task's data.
   * @param meta_grad model.num_parameters() entries, overwritten.
   * @throws std::invalid_argument as adapt(), and if meta_grad has the wrong size.
   */
  Scalar meta_gradient(Sequential<Scalar>& model, ConstRowMatrixRef<Scalar> x, typename Loss::TargetRef y,
                       VectorRef<Scalar> meta_grad) {
    constexpr const char* where = "kshot::Reptile::meta_gradient()";
    const Index size = check(model, where);
    detail::check_task_set(model, loss, x, y, where, "x", "y");
    check_vector(model, meta_grad, where, "meta_grad");
    const Scalar value = train(model, x, y, size, meta_grad.data(), where);
    meta_grad = model.parameters() - meta_grad;
    return value;
  }

  /**
   * @brief A batch: meta_grad = θ − mean of the tasks' θ' (tasks in index order); returns the mean task loss
   * at θ. Each task trains on its x_support / y_support (pass all of a task's data as its support set).
   * @param model the model at θ (restored on return).
   * @param tasks a container with size() and operator[] of MetaTask-like elements (x_support, y_support used).
   * @param meta_grad model.num_parameters() entries, overwritten.
   * @throws std::invalid_argument if tasks is empty, and as adapt() for each task (the message names the task;
   * std::out_of_range for a class id out of range).
   */
  template <class Tasks>
  Scalar meta_gradient(Sequential<Scalar>& model, const Tasks& tasks, VectorRef<Scalar> meta_grad) {
    constexpr const char* where = "kshot::Reptile::meta_gradient()";
    check_vector(model, meta_grad, where, "meta_grad");
    const Scalar value = train_batch(model, tasks, meta_grad.data(), where);
    meta_grad = model.parameters() - meta_grad;
    return value;
  }

  /**
   * @brief The meta step on one task: θ ← θ + outer_lr (θ' − θ). Returns the task loss at the old θ.
   * @param model the model, moved in place (its gradients are restored).
   * @param x, y the task's data.
   * @throws std::invalid_argument as adapt(), and if outer_lr is negative or not finite (nothing changes then).
   */
  Scalar step(Sequential<Scalar>& model, ConstRowMatrixRef<Scalar> x, typename Loss::TargetRef y) {
    constexpr const char* where = "kshot::Reptile::step()";
    check_outer_lr(where);
    const Index size = check(model, where);
    detail::check_task_set(model, loss, x, y, where, "x", "y");
    auto target = ws_.vector(kTarget, model.num_parameters());
    const Scalar value = train(model, x, y, size, target.data(), where);
    move_towards(model, target);
    return value;
  }

  /**
   * @brief The meta step on a batch: θ ← θ + outer_lr (mean θ' − θ). Returns the mean task loss at the old θ.
   * @param model the model, moved in place (its gradients are restored).
   * @param tasks a container of MetaTask-like elements (x_support, y_support used).
   * @throws std::invalid_argument as meta_gradient(model, tasks, ...) and if outer_lr is negative or not finite.
   */
  template <class Tasks>
  Scalar step(Sequential<Scalar>& model, const Tasks& tasks) {
    constexpr const char* where = "kshot::Reptile::step()";
    check_outer_lr(where);
    auto target = ws_.vector(kTarget, model.num_parameters());
    const Scalar value = train_batch(model, tasks, target.data(), where);
    move_towards(model, target);
    return value;
  }

 private:
  enum Slot : std::size_t { kSavedParams, kSavedGrads, kTarget, kOne };

  Index check(const Sequential<Scalar>& model, const char* where) const {
    return detail::check_meta_model(model, inner_steps, adapted, where);
  }

  void check_outer_lr(const char* where) const {
    KSHOT_CHECK(std::isfinite(outer_lr) && outer_lr >= 0, where,
                detail::cat("outer_lr must be finite and >= 0, got ", outer_lr));
  }

  static void check_vector(const Sequential<Scalar>& model, const VectorRef<Scalar>& v, const char* where,
                           const char* name) {
    KSHOT_CHECK(
        v.size() == model.num_parameters(), where,
        detail::cat(name, " has ", v.size(), " entries but the model has ", model.num_parameters(), " parameters"));
  }

  void move_towards(Sequential<Scalar>& model, const ConstVectorRef<Scalar>& target) const {
    const auto eps = static_cast<Scalar>(outer_lr);
    auto params = model.parameters();
    params += eps * (target - params);
  }

  /// θ' of one task into out (num_parameters); the model is restored. Returns the loss at θ.
  Scalar train(Sequential<Scalar>& model, const ConstRowMatrixRef<Scalar>& x, const typename Loss::TargetRef& y,
               Index size, Scalar* out, const char* where) {
    const Index p = model.num_parameters();
    const Index begin = adapted.begin;
    detail::ModelRestoreGuard<Scalar> guard(model, ws_.vector(kSavedParams, p).data(),
                                            ws_.vector(kSavedGrads, p).data());
    if (!keep_inner_state) inner.reset();
    Scalar first = 0;
    for (Index k = 0; k < inner_steps; ++k) {
      model.zero_grad();
      const RowMatrixX<Scalar>& out_y = model.forward(x, false);
      auto dy = dy_ws_.matrix(0, out_y.rows(), out_y.cols());
      const Scalar value = loss.evaluate(out_y, y, dy);
      if (k == 0) first = value;
      model.backward(dy);
      inner.step(model.parameters().segment(begin, size), model.gradients().segment(begin, size));
      KSHOT_CHECK(detail::all_finite(model.parameters()), where,
                  detail::cat("the parameters became non-finite at inner step ", k + 1,
                              " (the inner learning rate is too large)"));
    }
    if (inner_steps == 0) first = loss.evaluate(model.forward(x, false), y);
    Eigen::Map<VectorX<Scalar>>(out, p) = model.parameters();
    return first;
  }

  /// The mean θ' over the tasks into out; returns the mean loss at θ.
  template <class Tasks>
  Scalar train_batch(Sequential<Scalar>& model, const Tasks& tasks, Scalar* out, const char* where) {
    const auto count = static_cast<Index>(tasks.size());
    KSHOT_CHECK(count >= 1, where, "tasks is empty");
    const Index size = check(model, where);
    const Index p = model.num_parameters();
    Eigen::Map<VectorX<Scalar>> mean(out, p);
    auto one = ws_.vector(kOne, p);
    Scalar total = 0;
    for (Index i = 0; i < count; ++i) {
      const auto& task = tasks[static_cast<std::size_t>(i)];
      try {
        detail::check_task_set<Scalar, Loss>(model, loss, task.x_support, task.y_support, where, "x_support",
                                             "y_support");
        total += train(model, task.x_support, task.y_support, size, one.data(), where);
      } catch (...) {
        detail::rethrow_for_task(where, i);
      }
      if (i == 0)
        mean = one;
      else
        mean += one;
    }
    mean /= static_cast<Scalar>(count);
    return total / static_cast<Scalar>(count);
  }

  detail::Workspace<Scalar> ws_, dy_ws_;
};

}  // namespace kshot

#endif  // KSHOT_META_REPTILE_HPP
