/**
 * @file kshot/nn/sgd.hpp
 * @brief Stochastic gradient descent with momentum, dampening, Nesterov momentum and L2 weight decay, on a
 * model's flat parameter vector: torch.optim.SGD's update, step for step.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_NN_SGD_HPP
#define KSHOT_NN_SGD_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/types.hpp"
#include "kshot/nn/clip.hpp"

#include <cmath>
#include <cstdint>
#include <type_traits>

namespace kshot {

/**
 * @brief SGD with optional momentum, dampening, Nesterov momentum and weight decay (torch.optim.SGD).
 *
 * One step with gradient g, parameters p, momentum buffer b (torch's single-tensor path, in this order):
 *
 * @f[ d = g + \lambda p \qquad (\text{only when } \lambda \neq 0) @f]
 * @f[ b = d \text{ at the first step with } \mu \neq 0, \quad b = \mu b + (1 - \tau) d \text{ afterwards} @f]
 * @f[ d = d + \mu b \text{ (Nesterov)}, \quad d = b \text{ (otherwise)} \qquad (\text{only when } \mu \neq 0) @f]
 * @f[ p = p - \eta d @f]
 *
 * with learning rate @f$\eta@f$ (lr), momentum @f$\mu@f$, dampening @f$\tau@f$ and weight decay
 * @f$\lambda@f$. Each expression is evaluated in Scalar in torch's operation order (the hyperparameters are
 * doubles rounded to Scalar, as torch rounds Python floats to the tensor's dtype), so in double the result
 * equals torch's up to its fused multiply-adds (a few units in the last place).
 *
 * Hyperparameters are public and may change between steps (a schedule sets lr before each step); they are
 * checked at every step().
 *
 * State: the momentum buffer (n entries), created at the first step with momentum != 0, as torch creates
 * it. The parameter count n is fixed at the first step; reset() forgets it.
 *
 * @tparam Scalar float or double.
 * @note Allocates only when the state first grows to n entries (reset() keeps the storage, so a restart with
 * at most as many parameters allocates nothing). Long vectors are updated in parallel over fixed chunks;
 * every entry is computed alone, so results are bitwise identical for any thread count. One optimizer per
 * model; not thread-safe.
 */
template <class Scalar = float>
class Sgd {
  static_assert(is_supported_scalar_v<Scalar>, "kshot::Sgd<Scalar>: Scalar must be float or double");

 public:
  double lr = 0.01;           ///< learning rate, finite and >= 0 (torch has no default; kshot's is 0.01)
  double momentum = 0.0;      ///< momentum factor, finite and >= 0
  double dampening = 0.0;     ///< dampening of the momentum, in [0, 1]
  double weight_decay = 0.0;  ///< L2 penalty added to the gradient, finite and >= 0
  bool nesterov = false;      ///< Nesterov momentum; needs momentum > 0 and dampening == 0

  /// Default hyperparameters (lr 0.01, everything else off).
  Sgd() = default;

  /**
   * @brief Sets the hyperparameters in torch.optim.SGD's argument order (checked at step()).
   * @param[in] learning_rate lr.
   * @param[in] momentum_factor momentum.
   * @param[in] dampening_factor dampening.
   * @param[in] decay weight_decay.
   * @param[in] use_nesterov nesterov.
   */
  explicit Sgd(double learning_rate, double momentum_factor = 0.0, double dampening_factor = 0.0, double decay = 0.0,
               bool use_nesterov = false)
      : lr(learning_rate),
        momentum(momentum_factor),
        dampening(dampening_factor),
        weight_decay(decay),
        nesterov(use_nesterov) {}

  /**
   * @brief One SGD step: updates `params` in place from `grads`.
   * @param[in,out] params the flat parameter vector (n entries).
   * @param[in] grads dL/dparams (n entries).
   * @throws std::invalid_argument if a hyperparameter is out of range (see the members); if grads does not
   * have params.size() entries; if n differs from the parameter count of the first step (both named; call
   * reset() to start over); if params or grads has a non-finite entry. Nothing is changed then.
   */
  void step(VectorRef<Scalar> params, ConstVectorRef<Scalar> grads) { run(params, grads, nullptr); }

  /**
   * @brief One SGD step with a learning rate per parameter: entry i moves by lr * lr_scale[i] (Meta-SGD's
   * per-parameter learning rates). Equals torch.optim.SGD with one parameter group of lr * lr_scale[i] per
   * entry.
   * @param[in,out] params the flat parameter vector (n entries).
   * @param[in] grads dL/dparams (n entries).
   * @param[in] lr_scale n finite factors of lr (any sign: a learned learning rate may turn negative).
   * @throws std::invalid_argument as step(params, grads), and if lr_scale does not have n entries or has a
   * non-finite entry.
   */
  void step(VectorRef<Scalar> params, ConstVectorRef<Scalar> grads, ConstVectorRef<Scalar> lr_scale) {
    run(params, grads, &lr_scale);
  }

  /// Forgets the state (momentum buffer, step count, parameter count); keeps the storage.
  void reset() noexcept {
    steps_ = 0;
    n_ = -1;
    has_buffer_ = false;
  }

  /// The number of successful step() calls since construction or reset() (or as set by set_state()).
  std::int64_t steps() const noexcept { return steps_; }

  /// The parameter count fixed by the first step or by set_state(), or -1 when none is fixed yet.
  Index num_parameters() const noexcept { return n_; }

  /// The number of entries state() returns: n when the momentum buffer exists, else 0.
  Index state_size() const noexcept { return has_buffer_ ? n_ : 0; }

  /**
   * @brief The optimizer's state for a checkpoint: the momentum buffer (n entries), or an empty vector
   * when it does not exist (momentum was 0 at every step so far, or no step was taken).
   * @note Allocates the returned vector.
   */
  VectorX<Scalar> state() const {
    if (!has_buffer_) return VectorX<Scalar>();
    return buffer_.head(n_);
  }

  /**
   * @brief Restores a checkpoint taken with steps() and state(); the next step() continues bitwise as the
   * original optimizer would have.
   * @param[in] steps the step count, >= 0.
   * @param[in] state the momentum buffer (n entries, which fixes the parameter count), or an empty vector
   * for none (the parameter count is then fixed by the next step).
   * @throws std::invalid_argument if steps < 0 or state has a non-finite entry. The optimizer is unchanged
   * then.
   * @note Allocates only when state is longer than any earlier state.
   */
  void set_state(std::int64_t steps, ConstVectorRef<Scalar> state) {
    constexpr const char* where = "kshot::Sgd::set_state()";
    KSHOT_CHECK(steps >= 0, where, detail::cat("steps must be >= 0, got ", steps));
    detail::check_finite_vector(state, where, "state");
    if (state.size() == 0) {
      reset();
      steps_ = steps;
      return;
    }
    grow(state.size());
    buffer_.head(state.size()) = state;
    n_ = state.size();
    has_buffer_ = true;
    steps_ = steps;
  }

 private:
  void check_hyperparameters(const char* where) const {
    KSHOT_CHECK(std::isfinite(lr) && lr >= 0.0, where, detail::cat("lr must be finite and >= 0, got ", lr));
    KSHOT_CHECK(std::isfinite(momentum) && momentum >= 0.0, where,
                detail::cat("momentum must be finite and >= 0, got ", momentum));
    KSHOT_CHECK(dampening >= 0.0 && dampening <= 1.0, where,
                detail::cat("dampening must be in [0, 1], got ", dampening));
    KSHOT_CHECK(std::isfinite(weight_decay) && weight_decay >= 0.0, where,
                detail::cat("weight_decay must be finite and >= 0, got ", weight_decay));
    KSHOT_CHECK(!nesterov || (momentum > 0.0 && dampening == 0.0), where,
                detail::cat("nesterov requires momentum > 0 and dampening == 0, got momentum ", momentum,
                            " and dampening ", dampening));
  }

  void grow(Index n) {
    if (buffer_.size() < n) buffer_.resize(n);
  }

  void run(VectorRef<Scalar>& params, const ConstVectorRef<Scalar>& grads, const ConstVectorRef<Scalar>* scale) {
    constexpr const char* where = "kshot::Sgd::step()";
    check_hyperparameters(where);
    const Index n = params.size();
    KSHOT_CHECK(grads.size() == n, where, detail::cat("grads has ", grads.size(), " entries but params has ", n));
    KSHOT_CHECK(n_ < 0 || n == n_, where,
                detail::cat("params has ", n, " entries but the optimizer's state is for ", n_,
                            " parameters (fixed at its first step; call reset() for another model)"));
    if (scale != nullptr) {
      KSHOT_CHECK(scale->size() == n, where,
                  detail::cat("lr_scale has ", scale->size(), " entries but params has ", n));
      detail::check_finite_vector(*scale, where, "lr_scale");
    }
    detail::check_finite_vector(params, where, "params");
    detail::check_finite_vector(grads, where, "grads");

    const bool use_momentum = momentum != 0.0;
    const bool first = use_momentum && !has_buffer_;
    if (first) grow(n);
    n_ = n;

    const Chunk c{static_cast<Scalar>(-lr),
                  static_cast<Scalar>(momentum),
                  static_cast<Scalar>(1.0 - dampening),
                  static_cast<Scalar>(weight_decay),
                  use_momentum,
                  first,
                  nesterov};
    detail::for_each_chunk(n, 6.0, [&](Index, Index start, Index length) {
      auto p = params.segment(start, length).array();
      const auto g = grads.segment(start, length).array();
      const Scalar* s = scale != nullptr ? scale->data() + start : nullptr;
      if (weight_decay != 0.0) {
        update(c, p, g + c.weight_decay * p, start, length, s);
      } else {
        update(c, p, g, start, length, s);
      }
    });
    if (use_momentum) has_buffer_ = true;
    ++steps_;
  }

  // The step's constants in Scalar (torch rounds its Python-float hyperparameters the same way).
  struct Chunk {
    Scalar neg_lr, momentum, one_minus_dampening, weight_decay;
    bool use_momentum, first, nesterov;
  };

  // d: the (weight-decayed) gradient expression of one chunk; p: the chunk's parameters.
  template <class P, class D>
  void update(const Chunk& c, P& p, const D& d, Index start, Index length, const Scalar* s) {
    if (!c.use_momentum) {
      apply(c, p, d, length, s);
      return;
    }
    auto b = buffer_.segment(start, length).array();
    if (c.first) {
      b = d;
    } else {
      b = b * c.momentum + c.one_minus_dampening * d;
    }
    if (c.nesterov) {
      apply(c, p, d + c.momentum * b, length, s);
    } else {
      apply(c, p, b, length, s);
    }
  }

  // p = p - lr * u (torch: param.add_(u, alpha=-lr)), with lr * s[i] per entry when s is given.
  template <class P, class U>
  static void apply(const Chunk& c, P& p, const U& u, Index length, const Scalar* s) {
    if (s != nullptr) {
      const Eigen::Map<const Eigen::Array<Scalar, Eigen::Dynamic, 1>> scale(s, length);
      p = p + (c.neg_lr * scale) * u;
    } else {
      p = p + c.neg_lr * u;
    }
  }

  VectorX<Scalar> buffer_;  // momentum buffer; grows, never shrinks (entries [0, n_) are live)
  std::int64_t steps_ = 0;
  Index n_ = -1;
  bool has_buffer_ = false;
};

}  // namespace kshot

#endif  // KSHOT_NN_SGD_HPP
