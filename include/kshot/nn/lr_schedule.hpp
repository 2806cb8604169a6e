/**
 * @file kshot/nn/lr_schedule.hpp
 * @brief Learning-rate schedules as small value types with a closed form, learning_rate(step), so that any
 * step's rate can be recomputed (after a checkpoint resume, say); and LrSchedule, which holds any of them.
 *
 * Steps count optimizer updates from 0: learning_rate(t) is the rate of the (t + 1)-th update, which is what
 * torch's scheduler.get_last_lr() reports after t calls of scheduler.step(). A trainer sets
 * `opt.lr = schedule.learning_rate(opt.steps())` before each `opt.step(...)`.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_NN_LR_SCHEDULE_HPP
#define KSHOT_NN_LR_SCHEDULE_HPP

#include "kshot/core/check.hpp"

#include <cmath>
#include <cstdint>
#include <functional>
#include <string>
#include <type_traits>
#include <utility>

namespace kshot {
namespace detail {

/// Throws unless step >= 0.
inline void check_schedule_step(std::int64_t step, const char* where) {
  KSHOT_CHECK(step >= 0, where, cat("step must be >= 0, got ", step));
}

/// Throws unless a rate is finite and >= 0, naming it.
inline void check_base_lr(double base_lr, const char* where, const char* name = "base_lr") {
  KSHOT_CHECK(std::isfinite(base_lr) && base_lr >= 0.0, where, cat(name, " must be finite and >= 0, got ", base_lr));
}

}  // namespace detail

/**
 * @brief The same learning rate at every step (torch: no scheduler).
 * @note Not torch's ConstantLR, which multiplies the rate by a factor for a number of steps.
 */
class ConstantLr {
 public:
  double base_lr = 1e-3;  ///< the rate, finite and >= 0

  /// A constant rate of 1e-3.
  ConstantLr() = default;

  /**
   * @brief A constant rate.
   * @param[in] lr the rate, finite and >= 0.
   * @throws std::invalid_argument if lr is negative or not finite.
   */
  explicit ConstantLr(double lr) : base_lr(lr) { detail::check_base_lr(base_lr, "kshot::ConstantLr::ConstantLr()"); }

  /**
   * @brief The rate at `step`: base_lr.
   * @throws std::invalid_argument if step < 0 or base_lr is out of range.
   */
  double learning_rate(std::int64_t step) const {
    constexpr const char* where = "kshot::ConstantLr::learning_rate()";
    detail::check_schedule_step(step, where);
    detail::check_base_lr(base_lr, where);
    return base_lr;
  }
};

/**
 * @brief Step decay, torch.optim.lr_scheduler.StepLR: @f$\eta_t = \eta_0\,\gamma^{\lfloor t / s \rfloor}@f$.
 *
 * Computed in closed form with std::pow (torch's scheduler multiplies by gamma at each boundary; the two agree
 * to a few units in the last place).
 */
class StepLr {
 public:
  double base_lr = 1e-3;       ///< @f$\eta_0@f$, finite and >= 0
  std::int64_t step_size = 1;  ///< s, steps between decays, >= 1
  double gamma = 0.1;          ///< decay factor, finite and >= 0 (torch's default 0.1)

  /// base_lr 1e-3, step_size 1, gamma 0.1.
  StepLr() = default;

  /**
   * @brief Step decay.
   * @param[in] lr base_lr.
   * @param[in] steps_per_decay step_size, >= 1.
   * @param[in] factor gamma, finite and >= 0.
   * @throws std::invalid_argument if an argument is out of range.
   */
  StepLr(double lr, std::int64_t steps_per_decay, double factor = 0.1)
      : base_lr(lr), step_size(steps_per_decay), gamma(factor) {
    check("kshot::StepLr::StepLr()");
  }

  /**
   * @brief The rate at `step`.
   * @throws std::invalid_argument if step < 0, a member is out of range, or the rate overflows (gamma > 1).
   */
  double learning_rate(std::int64_t step) const {
    constexpr const char* where = "kshot::StepLr::learning_rate()";
    detail::check_schedule_step(step, where);
    check(where);
    const double lr = base_lr * std::pow(gamma, static_cast<double>(step / step_size));
    KSHOT_CHECK(std::isfinite(lr), where,
                detail::cat("the rate overflows at step ", step, " (base_lr ", base_lr, ", gamma ", gamma, ")"));
    return lr;
  }

 private:
  void check(const char* where) const {
    detail::check_base_lr(base_lr, where);
    KSHOT_CHECK(step_size >= 1, where, detail::cat("step_size must be >= 1, got ", step_size));
    KSHOT_CHECK(std::isfinite(gamma) && gamma >= 0.0, where, detail::cat("gamma must be finite and >= 0, got ", gamma));
  }
};

/**
 * @brief Cosine annealing, torch.optim.lr_scheduler.CosineAnnealingLR's closed form:
 * @f$\eta_t = \eta_{min} + (\eta_0 - \eta_{min})\,(1 + \cos(\pi t / T)) / 2@f$ for @f$t \le T@f$.
 *
 * After total_steps the rate stays at min_lr (a deliberate difference: torch's formula turns back up, a
 * cosine of period 2T, which a training run that outlives its schedule rarely wants).
 */
class CosineLr {
 public:
  double base_lr = 1e-3;         ///< @f$\eta_0@f$, finite and >= 0
  std::int64_t total_steps = 1;  ///< T (torch's T_max), >= 1
  double min_lr = 0.0;           ///< @f$\eta_{min}@f$ (torch's eta_min), finite and >= 0

  /// base_lr 1e-3, total_steps 1, min_lr 0.
  CosineLr() = default;

  /**
   * @brief Cosine annealing from lr to minimum over steps.
   * @param[in] lr base_lr.
   * @param[in] steps total_steps, >= 1.
   * @param[in] minimum min_lr, finite and >= 0 (it may exceed lr: the rate then rises along the cosine).
   * @throws std::invalid_argument if an argument is out of range.
   */
  CosineLr(double lr, std::int64_t steps, double minimum = 0.0) : base_lr(lr), total_steps(steps), min_lr(minimum) {
    check("kshot::CosineLr::CosineLr()");
  }

  /**
   * @brief The rate at `step` (min_lr from total_steps on).
   * @throws std::invalid_argument if step < 0 or a member is out of range.
   */
  double learning_rate(std::int64_t step) const {
    constexpr const char* where = "kshot::CosineLr::learning_rate()";
    detail::check_schedule_step(step, where);
    check(where);
    if (step >= total_steps) return min_lr;
    constexpr double pi = 3.141592653589793238462643383279502884;
    // torch: eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * last_epoch / T_max)) / 2
    return min_lr + (base_lr - min_lr) *
                        (1.0 + std::cos(pi * static_cast<double>(step) / static_cast<double>(total_steps))) / 2.0;
  }

 private:
  void check(const char* where) const {
    detail::check_base_lr(base_lr, where);
    KSHOT_CHECK(total_steps >= 1, where, detail::cat("total_steps must be >= 1, got ", total_steps));
    detail::check_base_lr(min_lr, where, "min_lr");
  }
};

/**
 * @brief Linear warm-up in front of another schedule: torch's SequentialLR([LinearLR(start_factor,
 * end_factor=1, total_iters=W), inner], milestones=[W]).
 *
 * @f[ \eta_t = \eta^{inner}_0 \left(f + (1 - f)\,\frac{t}{W}\right) \text{ for } t < W, \qquad
 *     \eta_t = \eta^{inner}_{t - W} \text{ for } t \ge W. @f]
 *
 * The ramp goes from start_factor times the inner schedule's first rate up to that rate, and the inner
 * schedule is **shifted**: it starts its own step 0 when the warm-up ends, as SequentialLR restarts it at the
 * milestone (so a CosineLr inside still spans its full total_steps after the warm-up). With warmup_steps 0
 * the schedule is the inner one.
 *
 * @tparam Inner any schedule: a type with `double learning_rate(std::int64_t) const` (ConstantLr, StepLr,
 * CosineLr, LrSchedule, another LinearWarmup).
 */
template <class Inner>
class LinearWarmup {
 public:
  std::int64_t warmup_steps = 0;  ///< W, >= 0
  double start_factor = 0.0;      ///< f, in [0, 1] (torch's LinearLR needs f > 0; kshot also allows 0)
  Inner inner;                    ///< the schedule after the warm-up

  /**
   * @brief A warm-up of `steps` steps from factor * inner's first rate.
   * @param[in] steps warmup_steps, >= 0.
   * @param[in] factor start_factor, in [0, 1].
   * @param[in] schedule the inner schedule.
   * @throws std::invalid_argument if an argument is out of range.
   */
  LinearWarmup(std::int64_t steps, double factor, Inner schedule)
      : warmup_steps(steps), start_factor(factor), inner(std::move(schedule)) {
    check("kshot::LinearWarmup::LinearWarmup()");
  }

  /**
   * @brief The rate at `step`.
   * @throws std::invalid_argument if step < 0 or a member is out of range, and whatever the inner
   * schedule throws.
   */
  double learning_rate(std::int64_t step) const {
    constexpr const char* where = "kshot::LinearWarmup::learning_rate()";
    detail::check_schedule_step(step, where);
    check(where);
    if (step >= warmup_steps) return inner.learning_rate(step - warmup_steps);
    // torch's LinearLR closed form: base * (start + (end - start) * min(total_iters, t) / total_iters)
    return inner.learning_rate(0) *
           (start_factor + (1.0 - start_factor) * static_cast<double>(step) / static_cast<double>(warmup_steps));
  }

 private:
  void check(const char* where) const {
    KSHOT_CHECK(warmup_steps >= 0, where, detail::cat("warmup_steps must be >= 0, got ", warmup_steps));
    KSHOT_CHECK(start_factor >= 0.0 && start_factor <= 1.0, where,
                detail::cat("start_factor must be in [0, 1], got ", start_factor));
  }
};

/**
 * @brief Any learning-rate schedule behind one type, so that a trainer can hold whichever the user picked.
 *
 * Wraps a copy of a schedule value (anything with `double learning_rate(std::int64_t) const`) or a plain
 * function of the step. Every rate it returns is checked: finite and >= 0.
 *
 * @code
 * kshot::LrSchedule schedule = kshot::LinearWarmup(100, 0.1, kshot::CosineLr(3e-4, 10000));
 * double lr = schedule.learning_rate(250);
 * @endcode
 *
 * @note Copying copies the wrapped schedule (std::function). Calls are const and thread-safe when the wrapped
 * schedule's are (all of kshot's are).
 */
class LrSchedule {
 public:
  /// An empty schedule: learning_rate() throws until one is assigned.
  LrSchedule() = default;

  /// Wraps a copy of a schedule value.
  template <class Schedule,
            class = std::enable_if_t<!std::is_same_v<std::decay_t<Schedule>, LrSchedule> &&
                                     std::is_convertible_v<decltype(std::declval<const std::decay_t<Schedule>&>()
                                                                        .learning_rate(std::int64_t{0})),
                                                           double>>>
  LrSchedule(Schedule schedule)  // NOLINT: implicit, so any schedule converts
      : fn_([s = std::move(schedule)](std::int64_t step) { return static_cast<double>(s.learning_rate(step)); }) {}

  /// Wraps a function of the step (it receives steps >= 0 only).
  explicit LrSchedule(std::function<double(std::int64_t)> fn) : fn_(std::move(fn)) {}

  /// True when a schedule is held.
  explicit operator bool() const noexcept { return static_cast<bool>(fn_); }

  /**
   * @brief The wrapped schedule's rate at `step`.
   * @throws std::invalid_argument if the schedule is empty, step < 0, or the rate is negative or not finite;
   * and whatever the wrapped schedule throws.
   */
  double learning_rate(std::int64_t step) const {
    constexpr const char* where = "kshot::LrSchedule::learning_rate()";
    KSHOT_CHECK(static_cast<bool>(fn_), where, std::string("the schedule is empty (default-constructed)"));
    detail::check_schedule_step(step, where);
    const double lr = fn_(step);
    KSHOT_CHECK(std::isfinite(lr) && lr >= 0.0, where,
                detail::cat("the schedule returned ", lr, " at step ", step, "; a rate must be finite and >= 0"));
    return lr;
  }

 private:
  std::function<double(std::int64_t)> fn_;
};

}  // namespace kshot

#endif  // KSHOT_NN_LR_SCHEDULE_HPP
