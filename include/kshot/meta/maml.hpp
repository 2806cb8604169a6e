/**
 * @file kshot/meta/maml.hpp
 * @brief MAML (Finn et al. 2017) with exact second-order meta-gradients (Hessian-vector products through the
 * model's R-operator) or first order, and ANIL (Raghu et al. 2020: adapt only the head) as MAML over the
 * head's parameter range.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_META_MAML_HPP
#define KSHOT_META_MAML_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/types.hpp"
#include "kshot/core/workspace.hpp"
#include "kshot/meta/detail/inner_loop.hpp"
#include "kshot/meta/parameter_range.hpp"
#include "kshot/meta/task_loss.hpp"
#include "kshot/nn/sequential.hpp"

#include <cmath>

namespace kshot {

/**
 * @brief Model-Agnostic Meta-Learning over a Sequential model: an inner loop of plain SGD steps on a task's
 * support set, and the gradient of the query loss after adaptation with respect to the initial parameters.
 *
 * With θ_0 = θ (the model's parameters), α = inner_lr, M the mask of the adapted range and L_s, L_q the
 * support and query losses:
 * @f[ \theta_{k+1} = \theta_k - \alpha\, M \nabla L_s(\theta_k)\quad(k = 0..K-1),\qquad
 *     \nabla_\theta L_q(\theta_K) = \Big(\prod_{k=0}^{K-1}(I - \alpha M H_s(\theta_k))\Big)^{\!\top}
 *     \nabla L_q(\theta_K). @f]
 * The exact meta-gradient runs the product backwards, λ ← λ − α H_s(θ_k)(M λ) for k = K−1..0, each H v
 * by one forward_r / evaluate_r / backward_r pass at θ_k (Pearlmutter's R-operator: exact, no finite
 * differences). first_order drops the Hessian terms (λ = ∇L_q(θ_K), FOMAML).
 *
 * The model is used as the function: its parameters are set to θ_k in turn and restored to θ on return (even
 * when an exception is thrown); no copy of the model is made. θ_0..θ_K (K+1 vectors) and the slices of the
 * support gradients live in a workspace. The model runs in evaluation mode (forward(x, false): Dropout off).
 *
 * learn2learn equivalent: `l2l.algorithms.MAML(model, lr=inner_lr, first_order=first_order)`, `clone()`,
 * then `adapt(support_loss)` inner_steps times, then `query_loss.backward()`. Differences: the inner loop is
 * one call (inner_steps); the meta-gradient is written into a vector (not accumulated into .grad); ANIL and
 * partial adaptation use `adapted` (a parameter range) where learn2learn wraps only the head module; there is
 * no allow_unused / allow_nograd (every parameter is in the flat vector, and an unused one gets gradient 0).
 *
 * @tparam Scalar float or double.
 * @tparam Loss a TaskLoss (see CrossEntropyLoss for the concept): MseLoss<Scalar> or CrossEntropyLoss<Scalar>.
 * @note Cost per task: K + 1 forward/backward passes (first order), plus K passes of forward, backward,
 * forward_r and backward_r on the support set (second order). Memory: (K + 1) x num_parameters scalars.
 * Buffers grow and never shrink: after the first call with the same shapes the algorithm allocates nothing
 * itself (Sequential reallocates its output matrix when the support and query row counts differ). Results are
 * bitwise identical for any number of OpenMP threads (the model's products run in fixed row blocks; tasks of a
 * batch run in order). Not thread-safe: one Maml and one model per thread.
 */
template <class Scalar = float, class Loss = MseLoss<Scalar>>
class Maml {
  static_assert(is_supported_scalar_v<Scalar>, "kshot::Maml<Scalar, Loss>: Scalar must be float or double");

 public:
  double inner_lr = 0.01;    ///< α, the inner SGD learning rate; finite and >= 0 (rounded to Scalar)
  Index inner_steps = 1;     ///< K, the number of inner SGD steps; >= 0
  bool first_order = false;  ///< drop the second-order terms (FOMAML)
  ParameterRange adapted;    ///< the parameters the inner loop moves (all by default; the head for ANIL)
  Loss loss;                 ///< the task loss, on both support and query sets

  /// inner_lr 0.01, one inner step, second order, every parameter adapted.
  Maml() = default;

  /**
   * @brief learn2learn's argument order: MAML(model, lr, first_order), plus the inner step count.
   * @note Values are checked when used.
   */
  explicit Maml(double lr, bool first_order_only = false, Index steps = 1, ParameterRange range = {})
      : inner_lr(lr), inner_steps(steps), first_order(first_order_only), adapted(range) {}

  /**
   * @brief The inner loop alone: K SGD steps on the support set from the model's parameters θ; writes the
   * adapted parameters θ_K into `adapted_parameters` and leaves the model's parameters at θ.
   * @param model the model (parameters and gradients restored on return).
   * @param x_support support inputs, n x model.input_dim().
   * @param y_support support targets, as the loss defines them for n x model.output_dim() outputs.
   * @param adapted_parameters model.num_parameters() entries, overwritten with θ_K.
   * @return the support loss at θ (before adaptation).
   * @throws std::invalid_argument if the model is empty or has a non-finite parameter, inner_steps < 0,
   * inner_lr is negative or not finite, the adapted range lies outside the parameters, x_support has the wrong
   * number of columns or a non-finite value, y_support does not fit (std::out_of_range for a class id out of
   * range), adapted_parameters has the wrong size, or the parameters become non-finite during adaptation.
   */
  Scalar adapt(Sequential<Scalar>& model, ConstRowMatrixRef<Scalar> x_support, typename Loss::TargetRef y_support,
               VectorRef<Scalar> adapted_parameters) {
    constexpr const char* where = "kshot::Maml::adapt()";
    const Index size = check(model, where);
    detail::check_task_set(model, loss, x_support, y_support, where, "x_support", "y_support");
    KSHOT_CHECK(adapted_parameters.size() == model.num_parameters(), where,
                detail::cat("adapted_parameters has ", adapted_parameters.size(), " entries but the model has ",
                            model.num_parameters(), " parameters"));
    return engine_.adapt(model, loss, x_support, y_support, inner_steps, rates(), adapted.begin, size,
                         adapted_parameters.data(), where);
  }

  /**
   * @brief The query loss after adaptation, without the meta-gradient (for evaluation): adapts on the support
   * set as adapt() does and returns L_q(θ_K); the model's parameters stay θ.
   * @param model the model at θ (parameters and gradients restored on return).
   * @param x_support, y_support the support set.
   * @param x_query, y_query the query set.
   * @throws std::invalid_argument as adapt(), for either set.
   * @note Costs K + 1 forward and K backward passes.
   */
  Scalar evaluate(Sequential<Scalar>& model, ConstRowMatrixRef<Scalar> x_support, typename Loss::TargetRef y_support,
                  ConstRowMatrixRef<Scalar> x_query, typename Loss::TargetRef y_query) {
    constexpr const char* where = "kshot::Maml::evaluate()";
    const Index size = check(model, where);
    detail::check_task_set(model, loss, x_support, y_support, where, "x_support", "y_support");
    detail::check_task_set(model, loss, x_query, y_query, where, "x_query", "y_query");
    return engine_.evaluate(model, loss, x_support, y_support, x_query, y_query, inner_steps, rates(), adapted.begin,
                            size, where);
  }

  /**
   * @brief One task's meta-gradient: adapts on the support set, evaluates the query loss L_q(θ_K) and
   * overwrites meta_grad with dL_q(θ_K)/dθ (exact, or first order).
   * @param model the model at θ (parameters and gradients restored on return).
   * @param x_support, y_support the support set (adaptation).
   * @param x_query, y_query the query set (evaluation); its row count may differ from the support's.
   * @param meta_grad model.num_parameters() entries, overwritten.
   * @return the query loss after adaptation.
   * @throws std::invalid_argument as adapt(), for either set, and if meta_grad has the wrong size.
   */
  Scalar meta_gradient(Sequential<Scalar>& model, ConstRowMatrixRef<Scalar> x_support,
                       typename Loss::TargetRef y_support, ConstRowMatrixRef<Scalar> x_query,
                       typename Loss::TargetRef y_query, VectorRef<Scalar> meta_grad) {
    constexpr const char* where = "kshot::Maml::meta_gradient()";
    const Index size = check(model, where);
    detail::check_task_set(model, loss, x_support, y_support, where, "x_support", "y_support");
    detail::check_task_set(model, loss, x_query, y_query, where, "x_query", "y_query");
    KSHOT_CHECK(meta_grad.size() == model.num_parameters(), where,
                detail::cat("meta_grad has ", meta_grad.size(), " entries but the model has ", model.num_parameters(),
                            " parameters"));
    return engine_.meta_gradient(model, loss, x_support, y_support, x_query, y_query, inner_steps, rates(),
                                 adapted.begin, size, first_order, meta_grad.data(), nullptr, where);
  }

  /**
   * @brief A meta-batch: the mean of the tasks' meta-gradients (tasks processed in index order, so the sum
   * is deterministic) into meta_grad; returns the mean query loss.
   * @param model the model at θ (parameters and gradients restored on return).
   * @param tasks a container with size() and operator[], whose elements have x_support, y_support, x_query
   * and y_query members (MetaTask<Scalar, Loss>).
   * @param meta_grad model.num_parameters() entries, overwritten with the mean meta-gradient.
   * @throws std::invalid_argument if tasks is empty, and as meta_gradient() for each task (the message names
   * the task; std::out_of_range for a class id out of range).
   */
  template <class Tasks>
  Scalar meta_gradient(Sequential<Scalar>& model, const Tasks& tasks, VectorRef<Scalar> meta_grad) {
    constexpr const char* where = "kshot::Maml::meta_gradient()";
    KSHOT_CHECK(tasks.size() >= 1, where, "tasks is empty");
    const Index size = check(model, where);
    KSHOT_CHECK(meta_grad.size() == model.num_parameters(), where,
                detail::cat("meta_grad has ", meta_grad.size(), " entries but the model has ", model.num_parameters(),
                            " parameters"));
    return batch_.run(model, loss, engine_, tasks, inner_steps, rates(), adapted.begin, size, first_order,
                      meta_grad.data(), nullptr, where);
  }

  /**
   * @brief Pre-sizes the single-task buffers for a model of `num_parameters` parameters, the current
   * inner_steps and sets of up to `rows` rows of `outputs` outputs: the first single-task call then allocates
   * nothing in Maml itself (the model's own buffers: Sequential::reserve(); meta-batches size theirs at the
   * first batch).
   * @param num_parameters the model's parameter count.
   * @param rows the largest set.
   * @param outputs the model's output_dim().
   */
  void reserve(Index num_parameters, Index rows, Index outputs) {
    engine_.reserve(num_parameters, inner_steps, rows, outputs);
  }

 private:
  Index check(const Sequential<Scalar>& model, const char* where) const {
    KSHOT_CHECK(std::isfinite(inner_lr) && inner_lr >= 0, where,
                detail::cat("inner_lr must be finite and >= 0, got ", inner_lr));
    return detail::check_meta_model(model, inner_steps, adapted, where);
  }
  typename detail::InnerLoop<Scalar, Loss>::Rates rates() const noexcept {
    return {static_cast<Scalar>(inner_lr), nullptr};
  }

  detail::InnerLoop<Scalar, Loss> engine_;
  detail::MetaBatch<Scalar, Loss> batch_;
};

/**
 * @brief ANIL (Almost No Inner Loop, Raghu et al. 2020): a Maml whose inner loop adapts only the model's
 * head, the parameters of its last `head_layers` layers with parameters (head_range()). The meta-gradient
 * still reaches every parameter (the body through the query loss and, second order, through the inner loop).
 *
 * learn2learn equivalent: `features = body; head = l2l.algorithms.MAML(head, lr)`, adapting head clones on
 * `head(features(x))` and back-propagating into both.
 *
 * @param model the model whose head is adapted (only its layout is read).
 * @param inner_lr, inner_steps, first_order as Maml's members.
 * @param head_layers how many parameterised layers, from the end, form the head (1: the last Linear).
 * @throws std::invalid_argument as head_range().
 */
template <class Scalar, class Loss = MseLoss<Scalar>>
Maml<Scalar, Loss> make_anil(const Sequential<Scalar>& model, double inner_lr = 0.01, Index inner_steps = 1,
                             bool first_order = false, Index head_layers = 1) {
  return Maml<Scalar, Loss>(inner_lr, first_order, inner_steps, head_range(model, head_layers));
}

}  // namespace kshot

#endif  // KSHOT_META_MAML_HPP
