/**
 * @file kshot/meta/detail/inner_loop.hpp
 * @brief The engine behind Maml and MetaSgd: an SGD inner loop over a slice of a model's parameters, and the
 * meta-gradient through it, exact (Hessian-vector products by the R-operator) or first order.
 *
 * SPDX-License-Identifier: MIT
 */
// IWYU pragma: private, include "kshot/meta/maml.hpp"
#ifndef KSHOT_META_DETAIL_INNER_LOOP_HPP
#define KSHOT_META_DETAIL_INNER_LOOP_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"
#include "kshot/core/workspace.hpp"
#include "kshot/meta/parameter_range.hpp"
#include "kshot/nn/sequential.hpp"

#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

namespace kshot {
namespace detail {

/**
 * @brief Saves a model's parameters and gradients into caller buffers and writes them back when destroyed,
 * so that every exit (return or exception) leaves the model as it was.
 */
template <class Scalar>
class ModelRestoreGuard {
 public:
  ModelRestoreGuard(Sequential<Scalar>& model, Scalar* params, Scalar* grads)
      : model_(model), params_(params, model.num_parameters()), grads_(grads, model.num_parameters()) {
    params_ = model_.parameters();
    grads_ = model_.gradients();
  }
  ~ModelRestoreGuard() {
    model_.parameters() = params_;
    model_.gradients() = grads_;
  }
  ModelRestoreGuard(const ModelRestoreGuard&) = delete;
  ModelRestoreGuard& operator=(const ModelRestoreGuard&) = delete;

  /// θ_0, the parameters on entry.
  const Eigen::Map<VectorX<Scalar>>& parameters() const noexcept { return params_; }

 private:
  Sequential<Scalar>& model_;
  Eigen::Map<VectorX<Scalar>> params_, grads_;
};

/**
 * @brief Inside a catch block of a batched call: rethrows the current std::invalid_argument or
 * std::out_of_range with "task <index>: " after the call's name (the inner "<where>: " prefix dropped), keeping
 * its type; any other exception propagates unchanged.
 */
[[noreturn]] inline void rethrow_for_task(const char* where, Index task) {
  auto message = [&](const char* what) {
    std::string text(what);
    const std::string prefix = std::string(where) + ": ";
    if (text.compare(0, prefix.size(), prefix) == 0) text.erase(0, prefix.size());
    return prefix + cat("task ", task, ": ", text);
  };
  try {
    throw;
  } catch (const std::out_of_range& e) {
    throw std::out_of_range(message(e.what()));
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(message(e.what()));
  }
}

/**
 * @brief Checks what every meta-learner call needs: a non-empty model with finite parameters, the inner step
 * count, the adapted range; returns the range's size.
 */
template <class Scalar>
Index check_meta_model(const Sequential<Scalar>& model, Index steps, const ParameterRange& range, const char* where) {
  KSHOT_CHECK(!model.empty(), where, "the model has no layers");
  KSHOT_CHECK(steps >= 0, where, detail::cat("inner_steps must be >= 0, got ", steps));
  detail::check_finite(model.parameters(), where, "the model's parameters");
  return range.resolve(model.num_parameters(), where);
}

/// Checks one labelled set (inputs and targets) against the model.
template <class Scalar, class Loss>
void check_task_set(const Sequential<Scalar>& model, const Loss& loss, const ConstRowMatrixRef<Scalar>& x,
                    const typename Loss::TargetRef& target, const char* where, const char* x_name,
                    const char* target_name) {
  KSHOT_CHECK(x.cols() == model.input_dim(), where,
              detail::cat(x_name, " has ", x.cols(), " columns but the model's input_dim is ", model.input_dim()));
  detail::check_finite(x, where, x_name);
  loss.check_target(target, x.rows(), model.output_dim(), where, target_name);
}

/**
 * @brief The inner loop θ_{k+1} = θ_k − α ∘ ∇L_s(θ_k) on the adapted slice [b, b + s), and its meta-gradient.
 *
 * α is a scalar (MAML) or a vector of s entries (Meta-SGD). Keeps θ_0 ... θ_K as the rows of a workspace
 * matrix and the support gradients' slices, so that the backward sweep needs no copy of the model: it sets the
 * model's parameters to θ_k, recomputes the support forward/backward there, and applies
 * (I − H_s(θ_k) diag(α) M)ᵀ to the adjoint by one R-operator pass.
 *
 * Inputs are validated by the caller. The model's parameters and gradients are restored on every exit.
 */
template <class Scalar, class Loss>
class InnerLoop {
 public:
  /// Step sizes: a scalar, or per-entry rates (`rates` non-null, s entries).
  struct Rates {
    Scalar scalar = 0;
    const Scalar* rates = nullptr;
  };

  /**
   * @brief Runs the inner loop; writes θ_K into `adapted` (num_parameters entries). Returns the support loss
   * at θ_0.
   */
  Scalar adapt(Sequential<Scalar>& model, Loss& loss, const ConstRowMatrixRef<Scalar>& x,
               const typename Loss::TargetRef& target, Index steps, Rates rates, Index begin, Index size,
               Scalar* adapted, const char* where) {
    const Index p = model.num_parameters();
    ModelRestoreGuard<Scalar> guard(model, ws_.vector(kSavedParams, p).data(), ws_.vector(kSavedGrads, p).data());
    Scalar first = run_inner(model, loss, x, target, steps, rates, begin, size, where);
    if (steps == 0) {
      model.parameters() = guard.parameters();
      first = loss.evaluate(model.forward(x, false), target);
    }
    Eigen::Map<VectorX<Scalar>>(adapted, p) = thetas_row(steps, p);
    return first;
  }

  /// The query loss at θ_K (no meta-gradient).
  Scalar evaluate(Sequential<Scalar>& model, Loss& loss, const ConstRowMatrixRef<Scalar>& x_support,
                  const typename Loss::TargetRef& y_support, const ConstRowMatrixRef<Scalar>& x_query,
                  const typename Loss::TargetRef& y_query, Index steps, Rates rates, Index begin, Index size,
                  const char* where) {
    const Index p = model.num_parameters();
    ModelRestoreGuard<Scalar> guard(model, ws_.vector(kSavedParams, p).data(), ws_.vector(kSavedGrads, p).data());
    run_inner(model, loss, x_support, y_support, steps, rates, begin, size, where);
    model.parameters() = thetas_row(steps, p);
    return loss.evaluate(model.forward(x_query, false), y_query);
  }

  /**
   * @brief The query loss after adaptation; meta_grad (num_parameters) = d L_q(θ_K) / d θ_0 and, when
   * rate_grad is non-null, rate_grad (s entries) = d L_q(θ_K) / d α. Exact unless first_order.
   */
  Scalar meta_gradient(Sequential<Scalar>& model, Loss& loss, const ConstRowMatrixRef<Scalar>& x_support,
                       const typename Loss::TargetRef& y_support, const ConstRowMatrixRef<Scalar>& x_query,
                       const typename Loss::TargetRef& y_query, Index steps, Rates rates, Index begin, Index size,
                       bool first_order, Scalar* meta_grad, Scalar* rate_grad, const char* where) {
    const Index p = model.num_parameters();
    ModelRestoreGuard<Scalar> guard(model, ws_.vector(kSavedParams, p).data(), ws_.vector(kSavedGrads, p).data());
    run_inner(model, loss, x_support, y_support, steps, rates, begin, size, where);

    // Query loss and its gradient at θ_K: the adjoint λ_K.
    Eigen::Map<VectorX<Scalar>> lambda(meta_grad, p);
    model.parameters() = thetas_row(steps, p);
    model.zero_grad();
    const RowMatrixX<Scalar>& yq = model.forward(x_query, false);
    auto dyq = ws_.matrix(kDyQuery, yq.rows(), yq.cols());
    const Scalar query_loss = loss.evaluate(yq, y_query, dyq);
    model.backward(dyq);
    lambda = model.gradients();

    auto support_grads = ws_.matrix(kSupportGrads, steps, size);
    Eigen::Map<VectorX<Scalar>> dalpha(rate_grad, rate_grad != nullptr ? size : 0);
    if (rate_grad != nullptr) dalpha.setZero();

    if (first_order) {
      // J_k ≈ I: the adjoint stays ∇L_q(θ_K); dL/dα = −Σ_k λ ∘ g_k.
      if (rate_grad != nullptr)
        for (Index k = steps; k-- > 0;)
          dalpha -= lambda.segment(begin, size).cwiseProduct(support_grads.row(k).transpose());
      return query_loss;
    }

    // Exact: λ_k = J_kᵀ λ_{k+1} with J_k = I − diag(α) M H_s(θ_k),
    // so λ_k = λ_{k+1} − H_s(θ_k) (α ∘ M λ_{k+1}); dL/dα gains −λ_{k+1} ∘ g_k (slice) at every step.
    auto direction = ws_.vector(kDirection, p);
    auto hv = ws_.vector(kHv, p);
    direction.setZero();
    for (Index k = steps; k-- > 0;) {
      if (rate_grad != nullptr) dalpha -= lambda.segment(begin, size).cwiseProduct(support_grads.row(k).transpose());
      if (rates.rates != nullptr)
        direction.segment(begin, size) =
            Eigen::Map<const VectorX<Scalar>>(rates.rates, size).cwiseProduct(lambda.segment(begin, size));
      else
        direction.segment(begin, size) = rates.scalar * lambda.segment(begin, size);
      model.parameters() = thetas_row(k, p);
      model.zero_grad();
      const RowMatrixX<Scalar>& y = model.forward(x_support, false);
      auto dy = ws_.matrix(kDy, y.rows(), y.cols());
      auto rdy = ws_.matrix(kRdy, y.rows(), y.cols());
      loss.evaluate(y, y_support, dy);
      model.backward(dy);
      const RowMatrixX<Scalar>& ry = model.forward_r(direction);
      loss.evaluate_r(y, y_support, ry, rdy);
      model.backward_r(dy, rdy, hv);
      lambda -= hv;
    }
    return query_loss;
  }

  /// Pre-sizes the buffers for a model of p parameters, `steps` inner steps and batches of up to `rows` rows
  /// with `outputs` columns.
  void reserve(Index p, Index steps, Index rows, Index outputs) {
    ws_.reserve(kThetas, (steps + 1) * p);
    ws_.reserve(kSupportGrads, steps * p);
    for (std::size_t slot : {kSavedParams, kSavedGrads, kDirection, kHv}) ws_.reserve(slot, p);
    for (std::size_t slot : {kDy, kRdy, kDyQuery}) ws_.reserve(slot, rows * outputs);
  }

 private:
  enum Slot : std::size_t { kThetas, kSupportGrads, kSavedParams, kSavedGrads, kDirection, kHv, kDy, kRdy, kDyQuery };

  /// θ_k, row k of the matrix that run_inner() filled (the slot is never shrunk, so asking for 0 entries
  /// returns its storage unchanged).
  Eigen::Map<VectorX<Scalar>> thetas_row(Index k, Index p) {
    return Eigen::Map<VectorX<Scalar>>(ws_.vector(kThetas, 0).data() + k * p, p);
  }

  /// θ_0 = the model's parameters; θ_{k+1} = θ_k − α ∘ g_k on the slice. Keeps θ_k and the slices of g_k.
  /// Returns the support loss at θ_0 (0 when steps = 0). Leaves the model's parameters unspecified.
  Scalar run_inner(Sequential<Scalar>& model, Loss& loss, const ConstRowMatrixRef<Scalar>& x,
                   const typename Loss::TargetRef& target, Index steps, Rates rates, Index begin, Index size,
                   const char* where) {
    const Index p = model.num_parameters();
    auto thetas = ws_.matrix(kThetas, steps + 1, p);
    auto support_grads = ws_.matrix(kSupportGrads, steps, size);
    thetas.row(0) = model.parameters().transpose();
    Scalar first = 0;
    for (Index k = 0; k < steps; ++k) {
      model.parameters() = thetas.row(k).transpose();
      model.zero_grad();
      const RowMatrixX<Scalar>& y = model.forward(x, false);
      auto dy = ws_.matrix(kDy, y.rows(), y.cols());
      const Scalar value = loss.evaluate(y, target, dy);
      if (k == 0) first = value;
      model.backward(dy);
      support_grads.row(k) = model.gradients().segment(begin, size).transpose();
      thetas.row(k + 1) = thetas.row(k);
      if (rates.rates != nullptr)
        thetas.row(k + 1).segment(begin, size) -=
            Eigen::Map<const RowVectorX<Scalar>>(rates.rates, size).cwiseProduct(support_grads.row(k));
      else
        thetas.row(k + 1).segment(begin, size) -= rates.scalar * support_grads.row(k);
      KSHOT_CHECK(detail::all_finite(thetas.row(k + 1)), where,
                  detail::cat("the parameters became non-finite at inner step ", k + 1,
                              " (the inner learning rate is too large)"));
    }
    return first;
  }

  Workspace<Scalar> ws_;
};

/**
 * @brief Meta-batches for Maml and MetaSgd: the mean of the tasks' meta-gradients, with the tasks spread over
 * OpenMP threads when the batch is large enough.
 *
 * Each thread works on its own copy of the model (made once, refreshed when another model is passed; its
 * parameters are copied from the model at every call), its own InnerLoop and its own copy of the loss. Task i's
 * gradients go to row i of a workspace matrix and are summed in index order afterwards, exactly as the serial
 * path sums them, so the result is bitwise identical for any number of threads. Inside the region every model
 * product runs single-threaded, in the same fixed row blocks as outside.
 */
template <class Scalar, class Loss>
class MetaBatch {
 public:
  /**
   * @brief The mean query loss; meta_grad (num_parameters) and, when rate_grad is non-null, rate_grad (size) get
   * the means of the tasks' gradients. `serial` runs a task on the caller's model, for the serial path.
   * @note Validates every task before any work (naming the task), so nothing throws from inside the region but
   * a diverging inner loop.
   */
  template <class Tasks>
  Scalar run(Sequential<Scalar>& model, Loss& loss, InnerLoop<Scalar, Loss>& serial, const Tasks& tasks, Index steps,
             typename InnerLoop<Scalar, Loss>::Rates rates, Index begin, Index size, bool first_order,
             Scalar* meta_grad, Scalar* rate_grad, const char* where) {
    const auto count = static_cast<Index>(tasks.size());
    const Index p = model.num_parameters();
    const Index s = rate_grad != nullptr ? size : 0;
    double work = 0;
    for (Index i = 0; i < count; ++i) {
      const auto& task = tasks[static_cast<std::size_t>(i)];
      try {
        check_task_set<Scalar, Loss>(model, loss, task.x_support, task.y_support, where, "x_support", "y_support");
        check_task_set<Scalar, Loss>(model, loss, task.x_query, task.y_query, where, "x_query", "y_query");
      } catch (...) {
        rethrow_for_task(where, i);
      }
      // About 2 p flops per row and pass; (2K + 1) forward/backward pairs and K R-passes on the support set.
      work += 2.0 * static_cast<double>(p) *
              (static_cast<double>(3 * steps + 1) * static_cast<double>(task.x_support.rows()) +
               static_cast<double>(task.x_query.rows()));
    }
    Eigen::Map<VectorX<Scalar>> mean(meta_grad, p);
    Eigen::Map<VectorX<Scalar>> rate_mean(rate_grad, s);
    auto losses = ws_.vector(kLosses, count);
    if (worth_parallel(count, work)) {
      auto grads = ws_.matrix(kGrads, count, p);
      auto rate_grads = ws_.matrix(kRateGrads, count, s);
      std::vector<Worker>& workers = acquire(model, max_threads());
      for (Worker& w : workers) w.loss = loss;
      parallel_for(count, true, [&](Index i) {
        Worker& w = workers[static_cast<std::size_t>(thread_index())];
        const auto& task = tasks[static_cast<std::size_t>(i)];
        try {
          losses[i] = w.engine.meta_gradient(w.model, w.loss, task.x_support, task.y_support, task.x_query,
                                             task.y_query, steps, rates, begin, size, first_order, grads.row(i).data(),
                                             s > 0 ? rate_grads.row(i).data() : nullptr, where);
        } catch (...) {
          rethrow_for_task(where, i);
        }
      });
      mean = grads.row(0).transpose();
      if (s > 0) rate_mean = rate_grads.row(0).transpose();
      for (Index i = 1; i < count; ++i) {
        mean += grads.row(i).transpose();
        if (s > 0) rate_mean += rate_grads.row(i).transpose();
      }
    } else {
      auto one = ws_.vector(kOne, p);
      auto one_rate = ws_.vector(kOneRate, s);
      for (Index i = 0; i < count; ++i) {
        const auto& task = tasks[static_cast<std::size_t>(i)];
        try {
          losses[i] = serial.meta_gradient(model, loss, task.x_support, task.y_support, task.x_query, task.y_query,
                                           steps, rates, begin, size, first_order, one.data(),
                                           s > 0 ? one_rate.data() : nullptr, where);
        } catch (...) {
          rethrow_for_task(where, i);
        }
        if (i == 0) {
          mean = one;
          if (s > 0) rate_mean = one_rate;
        } else {
          mean += one;
          if (s > 0) rate_mean += one_rate;
        }
      }
    }
    mean /= static_cast<Scalar>(count);
    if (s > 0) rate_mean /= static_cast<Scalar>(count);
    Scalar total = 0;
    for (Index i = 0; i < count; ++i) total += losses[i];
    return total / static_cast<Scalar>(count);
  }

 private:
  struct Worker {
    Sequential<Scalar> model;
    InnerLoop<Scalar, Loss> engine;
    Loss loss;
  };
  enum Slot : std::size_t { kLosses, kGrads, kRateGrads, kOne, kOneRate };

  /// At least `threads` workers whose models have `model`'s layers and parameters.
  std::vector<Worker>& acquire(const Sequential<Scalar>& model, int threads) {
    if (source_ != &model || source_parameters_ != model.num_parameters() || source_layers_ != model.size()) {
      workers_.clear();
      source_ = &model;
      source_parameters_ = model.num_parameters();
      source_layers_ = model.size();
    }
    while (workers_.size() < static_cast<std::size_t>(threads)) {
      workers_.emplace_back();
      workers_.back().model = model;
    }
    for (Worker& w : workers_) w.model.parameters() = model.parameters();
    return workers_;
  }

  Workspace<Scalar> ws_;
  std::vector<Worker> workers_;
  const void* source_ = nullptr;
  Index source_parameters_ = -1, source_layers_ = -1;
};

}  // namespace detail
}  // namespace kshot

#endif  // KSHOT_META_DETAIL_INNER_LOOP_HPP
