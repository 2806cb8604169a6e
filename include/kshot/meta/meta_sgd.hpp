/**
 * @file kshot/meta/meta_sgd.hpp
 * @brief Meta-SGD (Li et al. 2017): MAML with a learned learning rate per adapted parameter, meta-trained with
 * the parameters; exact second-order meta-gradients with respect to both, or first order.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_META_META_SGD_HPP
#define KSHOT_META_META_SGD_HPP

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
 * @brief Meta-SGD over a Sequential model: the inner loop θ_{k+1} = θ_k − α ∘ ∇L_s(θ_k) on the adapted range,
 * with α a vector of learning rates (one per adapted parameter) that is meta-learned along with θ.
 *
 * meta_gradient() returns dL_q(θ_K)/dθ and dL_q(θ_K)/dα. With λ_K = ∇L_q(θ_K) and, backwards,
 * λ_k = λ_{k+1} − H_s(θ_k)(α ∘ λ_{k+1}) (zero outside the range), the exact gradients are
 * @f[ \frac{dL_q}{d\theta} = \lambda_0,\qquad \frac{dL_q}{d\alpha} = -\sum_{k=0}^{K-1}\lambda_{k+1}\circ
 *     \nabla L_s(\theta_k). @f]
 * first_order uses λ_k = λ_K for all k (learn2learn's first_order: the inner gradients are treated as
 * constants, so dL/dα = −Σ_k λ_K ∘ ∇L_s(θ_k)).
 *
 * The rates are stored here as one flat vector, learning_rates(), laid out as the adapted slice of the
 * model's parameters, so an optimizer steps them like parameters:
 * @code
 * kshot::MetaSgd<float> meta(model, 0.01);     // every parameter, rates initialised to 0.01
 * kshot::Adam<float> opt_theta, opt_alpha;
 * meta.meta_gradient(model, tasks, g_theta, g_alpha);
 * opt_theta.step(model.parameters(), g_theta);
 * opt_alpha.step(meta.learning_rates(), g_alpha);
 * @endcode
 * Rates may turn negative during meta-training, as in the paper; they are only required to be finite.
 *
 * learn2learn equivalent: `l2l.algorithms.MetaSGD(model, lr=lr, first_order=first_order)` (lr defaults to
 * 1.0 there and here), `clone()`, `adapt(loss)` inner_steps times. Differences: the rates form one flat vector
 * (learn2learn keeps one tensor per parameter tensor); the model and the rates are separate objects; the
 * range option (adapted) restricts adaptation as ANIL does.
 *
 * @tparam Scalar float or double.
 * @tparam Loss a TaskLoss (see CrossEntropyLoss for the concept).
 * @note Cost and memory as Maml (plus the rates). Buffers grow and never shrink; results are bitwise identical
 * for any number of OpenMP threads. Not thread-safe: one MetaSgd and one model per thread.
 */
template <class Scalar = float, class Loss = MseLoss<Scalar>>
class MetaSgd {
  static_assert(is_supported_scalar_v<Scalar>, "kshot::MetaSgd<Scalar, Loss>: Scalar must be float or double");

 public:
  Index inner_steps = 1;     ///< K, the number of inner steps; >= 0
  bool first_order = false;  ///< treat the inner gradients as constants
  ParameterRange adapted;    ///< the parameters the inner loop moves; its size must equal learning_rates().size()
  Loss loss;                 ///< the task loss, on both support and query sets

  /// No rates yet: call initialize() (or use a constructor that takes the model) before use.
  MetaSgd() = default;

  /**
   * @brief Rates for `model`'s adapted range, every one set to `lr` (learn2learn: MetaSGD(model, lr)).
   * @param model the model (only its parameter count is read).
   * @param lr the initial learning rate of every adapted parameter (finite).
   * @param steps inner steps.
   * @param first_order_only first order.
   * @param range the adapted range.
   * @throws std::invalid_argument if lr is not finite or the range lies outside the model's parameters.
   */
  explicit MetaSgd(const Sequential<Scalar>& model, double lr = 1.0, Index steps = 1, bool first_order_only = false,
                   ParameterRange range = {})
      : inner_steps(steps), first_order(first_order_only), adapted(range) {
    initialize(range.resolve(model.num_parameters(), "kshot::MetaSgd::MetaSgd()"), lr);
  }

  /**
   * @brief Sets `count` rates, all equal to `lr`.
   * @throws std::invalid_argument if count < 0 or lr is not finite.
   * @note Allocates when count grows.
   */
  void initialize(Index count, double lr) {
    constexpr const char* where = "kshot::MetaSgd::initialize()";
    KSHOT_CHECK(count >= 0, where, detail::cat("count must be >= 0, got ", count));
    KSHOT_CHECK(std::isfinite(lr), where, detail::cat("lr must be finite, got ", lr));
    rates_.setConstant(count, static_cast<Scalar>(lr));
  }

  /// The learned learning rates α, one per adapted parameter (writable: hand it to an optimizer).
  Eigen::Map<VectorX<Scalar>> learning_rates() noexcept { return {rates_.data(), rates_.size()}; }
  /// The learned learning rates, read-only.
  Eigen::Map<const VectorX<Scalar>> learning_rates() const noexcept { return {rates_.data(), rates_.size()}; }

  /**
   * @brief The inner loop alone; writes θ_K into adapted_parameters and leaves the model at θ.
   * @param model the model (parameters and gradients restored on return).
   * @param x_support support inputs, n x model.input_dim().
   * @param y_support support targets, as the loss defines them for n x model.output_dim() outputs.
   * @param adapted_parameters model.num_parameters() entries, overwritten with θ_K.
   * @return the support loss at θ (before adaptation).
   * @throws std::invalid_argument as Maml::adapt(), if learning_rates() does not have one entry per adapted
   * parameter, or if a rate is not finite.
   */
  Scalar adapt(Sequential<Scalar>& model, ConstRowMatrixRef<Scalar> x_support, typename Loss::TargetRef y_support,
               VectorRef<Scalar> adapted_parameters) {
    constexpr const char* where = "kshot::MetaSgd::adapt()";
    const Index size = check(model, where);
    detail::check_task_set(model, loss, x_support, y_support, where, "x_support", "y_support");
    KSHOT_CHECK(adapted_parameters.size() == model.num_parameters(), where,
                detail::cat("adapted_parameters has ", adapted_parameters.size(), " entries but the model has ",
                            model.num_parameters(), " parameters"));
    return engine_.adapt(model, loss, x_support, y_support, inner_steps, rates(), adapted.begin, size,
                         adapted_parameters.data(), where);
  }

  /**
   * @brief The query loss after adaptation, without meta-gradients (for evaluation); the model stays at θ.
   * @param model the model at θ.
   * @param x_support, y_support the support set.
   * @param x_query, y_query the query set.
   * @throws std::invalid_argument as adapt(), for either set.
   */
  Scalar evaluate(Sequential<Scalar>& model, ConstRowMatrixRef<Scalar> x_support, typename Loss::TargetRef y_support,
                  ConstRowMatrixRef<Scalar> x_query, typename Loss::TargetRef y_query) {
    constexpr const char* where = "kshot::MetaSgd::evaluate()";
    const Index size = check(model, where);
    detail::check_task_set(model, loss, x_support, y_support, where, "x_support", "y_support");
    detail::check_task_set(model, loss, x_query, y_query, where, "x_query", "y_query");
    return engine_.evaluate(model, loss, x_support, y_support, x_query, y_query, inner_steps, rates(), adapted.begin,
                            size, where);
  }

  /**
   * @brief One task: the query loss after adaptation; overwrites meta_grad with dL_q/dθ and rate_grad with
   * dL_q/dα (exact, or first order).
   * @param model the model at θ (parameters and gradients restored on return).
   * @param x_support, y_support the support set.
   * @param x_query, y_query the query set.
   * @param meta_grad model.num_parameters() entries, overwritten.
   * @param rate_grad learning_rates().size() entries, overwritten.
   * @throws std::invalid_argument as adapt(), for either set, and if meta_grad or rate_grad has the wrong size.
   */
  Scalar meta_gradient(Sequential<Scalar>& model, ConstRowMatrixRef<Scalar> x_support,
                       typename Loss::TargetRef y_support, ConstRowMatrixRef<Scalar> x_query,
                       typename Loss::TargetRef y_query, VectorRef<Scalar> meta_grad, VectorRef<Scalar> rate_grad) {
    constexpr const char* where = "kshot::MetaSgd::meta_gradient()";
    const Index size = check(model, where);
    detail::check_task_set(model, loss, x_support, y_support, where, "x_support", "y_support");
    detail::check_task_set(model, loss, x_query, y_query, where, "x_query", "y_query");
    check_outputs(model, meta_grad, rate_grad, where);
    return engine_.meta_gradient(model, loss, x_support, y_support, x_query, y_query, inner_steps, rates(),
                                 adapted.begin, size, first_order, meta_grad.data(), rate_grad.data(), where);
  }

  /**
   * @brief A meta-batch: the means of the tasks' gradients (tasks in index order: deterministic); returns the
   * mean query loss.
   * @param model the model at θ (parameters and gradients restored on return).
   * @param tasks a container with size() and operator[] of MetaTask-like elements.
   * @param meta_grad model.num_parameters() entries, overwritten with the mean dL_q/dθ.
   * @param rate_grad learning_rates().size() entries, overwritten with the mean dL_q/dα.
   * @throws std::invalid_argument if tasks is empty, and as meta_gradient() for each task (the message names
   * the task; std::out_of_range for a class id out of range).
   */
  template <class Tasks>
  Scalar meta_gradient(Sequential<Scalar>& model, const Tasks& tasks, VectorRef<Scalar> meta_grad,
                       VectorRef<Scalar> rate_grad) {
    constexpr const char* where = "kshot::MetaSgd::meta_gradient()";
    KSHOT_CHECK(tasks.size() >= 1, where, "tasks is empty");
    const Index size = check(model, where);
    check_outputs(model, meta_grad, rate_grad, where);
    return batch_.run(model, loss, engine_, tasks, inner_steps, rates(), adapted.begin, size, first_order,
                      meta_grad.data(), rate_grad.data(), where);
  }

 private:
  Index check(const Sequential<Scalar>& model, const char* where) const {
    const Index size = detail::check_meta_model(model, inner_steps, adapted, where);
    KSHOT_CHECK(rates_.size() == size, where,
                detail::cat("learning_rates() has ", rates_.size(), " entries but the adapted range has ", size,
                            " parameters (call initialize())"));
    detail::check_finite(rates_, where, "learning_rates()");
    return size;
  }

  void check_outputs(const Sequential<Scalar>& model, const VectorRef<Scalar>& meta_grad,
                     const VectorRef<Scalar>& rate_grad, const char* where) const {
    KSHOT_CHECK(meta_grad.size() == model.num_parameters(), where,
                detail::cat("meta_grad has ", meta_grad.size(), " entries but the model has ", model.num_parameters(),
                            " parameters"));
    KSHOT_CHECK(
        rate_grad.size() == rates_.size(), where,
        detail::cat("rate_grad has ", rate_grad.size(), " entries but there are ", rates_.size(), " learning rates"));
  }

  typename detail::InnerLoop<Scalar, Loss>::Rates rates() const noexcept { return {Scalar(0), rates_.data()}; }

  VectorX<Scalar> rates_;
  detail::InnerLoop<Scalar, Loss> engine_;
  detail::MetaBatch<Scalar, Loss> batch_;
};

}  // namespace kshot

#endif  // KSHOT_META_META_SGD_HPP
