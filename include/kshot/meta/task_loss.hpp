/**
 * @file kshot/meta/task_loss.hpp
 * @brief The losses that meta-learners put on a model's output: value, gradient dL/dy and the R-operator
 * R{dL/dy} (for exact Hessian-vector products); MseLoss and CrossEntropyLoss, the TaskLoss concept that a
 * custom loss satisfies, and MetaTask (one task's support and query sets).
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_META_TASK_LOSS_HPP
#define KSHOT_META_TASK_LOSS_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/types.hpp"

#include <cmath>

namespace kshot {

/**
 * @brief Mean squared error over every element, torch.nn.MSELoss() (reduction "mean").
 *
 * For an output y and a target t, both n x m:
 * @f[ L = \frac{1}{nm}\sum_{ij}(y_{ij}-t_{ij})^2,\qquad \frac{\partial L}{\partial y} = \frac{2}{nm}(y-t),\qquad
 *     R\{\partial L/\partial y\} = \frac{2}{nm}R\{y\}. @f]
 * An empty output (n m = 0) has loss 0 and gradient 0.
 *
 * It satisfies the TaskLoss concept (see CrossEntropyLoss for the full list of members):
 * `Target` = RowMatrixX<Scalar>, `TargetRef` = ConstRowMatrixRef<Scalar>.
 *
 * @tparam Scalar float or double.
 * @note Stateless: no allocation, no threads; one object may serve several threads.
 */
template <class Scalar = float>
class MseLoss {
  static_assert(is_supported_scalar_v<Scalar>, "kshot::MseLoss<Scalar>: Scalar must be float or double");

 public:
  /// The owning type of one task's targets (n x m regression targets).
  using Target = RowMatrixX<Scalar>;
  /// The view the meta-learners pass.
  using TargetRef = ConstRowMatrixRef<Scalar>;

  /**
   * @brief Checks that `target` fits an output of rows x cols and is finite.
   * @param where,name the public call and the argument's name, used in the message.
   * @throws std::invalid_argument if target is not rows x cols or has a non-finite value.
   */
  void check_target(TargetRef target, Index rows, Index cols, const char* where, const char* name) const {
    detail::check_shape(target, rows, cols, where, name);
    detail::check_finite(target, where, name);
  }

  /**
   * @brief The loss value.
   * @param y the model's output, n x m.
   * @param target n x m.
   * @throws std::invalid_argument if the shapes differ or y or target has a non-finite value.
   */
  Scalar evaluate(ConstRowMatrixRef<Scalar> y, TargetRef target) const {
    constexpr const char* where = "kshot::MseLoss::evaluate()";
    check(y, target, where);
    const Index count = y.size();
    if (count == 0) return Scalar(0);
    return (y - target).squaredNorm() / static_cast<Scalar>(count);
  }

  /**
   * @brief The loss value; overwrites dy with dL/dy.
   * @param dy n x m, overwritten.
   * @throws std::invalid_argument as evaluate(y, target), and if dy is not n x m.
   */
  Scalar evaluate(ConstRowMatrixRef<Scalar> y, TargetRef target, RowMatrixRef<Scalar> dy) const {
    constexpr const char* where = "kshot::MseLoss::evaluate()";
    check(y, target, where);
    detail::check_shape(dy, y.rows(), y.cols(), where, "dy");
    const Index count = y.size();
    if (count == 0) return Scalar(0);
    dy = y - target;
    const Scalar value = dy.squaredNorm() / static_cast<Scalar>(count);
    dy *= Scalar(2) / static_cast<Scalar>(count);
    return value;
  }

  /**
   * @brief R-operator of the gradient: overwrites rdy with R{dL/dy} = 2 R{y} / (n m), the directional
   * derivative of dL/dy when y moves along ry.
   * @param y the output, n x m.
   * @param target its target, n x m.
   * @param ry R{y}, n x m.
   * @param rdy n x m, overwritten.
   * @throws std::invalid_argument if a shape differs or y, target or ry has a non-finite value.
   */
  void evaluate_r(ConstRowMatrixRef<Scalar> y, TargetRef target, ConstRowMatrixRef<Scalar> ry,
                  RowMatrixRef<Scalar> rdy) const {
    constexpr const char* where = "kshot::MseLoss::evaluate_r()";
    check(y, target, where);
    detail::check_shape(ry, y.rows(), y.cols(), where, "ry");
    detail::check_shape(rdy, y.rows(), y.cols(), where, "rdy");
    detail::check_finite(ry, where, "ry");
    const Index count = y.size();
    if (count == 0) return;
    rdy = (Scalar(2) / static_cast<Scalar>(count)) * ry;
  }

 private:
  static void check(const ConstRowMatrixRef<Scalar>& y, const TargetRef& target, const char* where) {
    detail::check_shape(target, y.rows(), y.cols(), where, "target");
    detail::check_finite(y, where, "y");
    detail::check_finite(target, where, "target");
  }
};

/**
 * @brief Softmax cross-entropy over logits with integer class targets, mean over rows:
 * torch.nn.CrossEntropyLoss() (reduction "mean", no weights, no label smoothing).
 *
 * For logits y (n x C) and targets t_i in [0, C), with p_i = softmax(y_i) computed by log-sum-exp:
 * @f[ L = \frac1n\sum_i\Big(\log\sum_j e^{y_{ij}} - y_{i t_i}\Big),\qquad
 *     \frac{\partial L}{\partial y_i} = \frac{p_i - e_{t_i}}{n},\qquad
 *     R\{\partial L/\partial y_i\} = \frac{(\mathrm{diag}(p_i) - p_i p_i^\top)\,R\{y_i\}}{n}. @f]
 * No row (n = 0) gives loss 0.
 *
 * **The TaskLoss concept.** Maml, MetaSgd and Reptile take the loss as a template parameter `Loss` and use
 * exactly these members, which a custom loss must provide (MseLoss and CrossEntropyLoss are the models):
 * - `using Target = ...;` the owning type of one task's targets (used by MetaTask);
 * - `using TargetRef = ...;` a read-only view of it (what the algorithms pass; `Target` must bind to it);
 * - `void check_target(TargetRef t, Index rows, Index cols, const char* where, const char* name) const`,
 *   which throws std::invalid_argument unless t fits an output of rows x cols;
 * - `Scalar evaluate(ConstRowMatrixRef<Scalar> y, TargetRef t)`, the value;
 * - `Scalar evaluate(ConstRowMatrixRef<Scalar> y, TargetRef t, RowMatrixRef<Scalar> dy)`, the value, dy
 *   overwritten with dL/dy;
 * - `void evaluate_r(ConstRowMatrixRef<Scalar> y, TargetRef t, ConstRowMatrixRef<Scalar> ry,
 *   RowMatrixRef<Scalar> rdy)`, rdy overwritten with R{dL/dy} = (d²L/dy²) ry. Only second-order methods call
 *   it; a first-order-only loss may throw from it.
 * The members may be non-const (a loss may keep scratch); the algorithms own one loss object (`loss` member).
 *
 * @tparam Scalar float or double.
 * @note Stateless: no allocation, no threads; one object may serve several threads.
 */
template <class Scalar = float>
class CrossEntropyLoss {
  static_assert(is_supported_scalar_v<Scalar>, "kshot::CrossEntropyLoss<Scalar>: Scalar must be float or double");

 public:
  /// The owning type of one task's targets (class ids in [0, C)).
  using Target = LabelVector;
  /// The view the meta-learners pass.
  using TargetRef = ConstLabelRef;

  /**
   * @brief Checks that `target` has `rows` class ids, each in [0, cols).
   * @throws std::invalid_argument if target has not `rows` entries, std::out_of_range if an id is outside
   * [0, cols) (both messages name the argument and the numbers).
   */
  void check_target(TargetRef target, Index rows, Index cols, const char* where, const char* name) const {
    KSHOT_CHECK(target.size() == rows, where,
                detail::cat(name, " has ", target.size(), " entries but the output has ", rows, " rows"));
    for (Index i = 0; i < rows; ++i)
      KSHOT_CHECK_RANGE(target[i] >= 0 && target[i] < cols, where,
                        detail::cat(name, "[", i, "] = ", target[i], " is outside [0, ", cols, ") (the output has ",
                                    cols, " classes)"));
  }

  /**
   * @brief The loss value.
   * @param y logits, n x C (C >= 1).
   * @param target n class ids in [0, C).
   * @throws std::invalid_argument if target has not n entries or y has a non-finite value or C = 0 with n > 0;
   * std::out_of_range if a class id is outside [0, C).
   */
  Scalar evaluate(ConstRowMatrixRef<Scalar> y, TargetRef target) const {
    constexpr const char* where = "kshot::CrossEntropyLoss::evaluate()";
    check(y, target, where);
    const Index n = y.rows();
    if (n == 0) return Scalar(0);
    Scalar total = 0;
    for (Index i = 0; i < n; ++i) {
      const Scalar m = y.row(i).maxCoeff();
      const Scalar s = (y.row(i).array() - m).exp().sum();
      total += m + std::log(s) - y(i, target[i]);
    }
    return total / static_cast<Scalar>(n);
  }

  /**
   * @brief The loss value; overwrites dy with dL/dy = (softmax(y) − onehot(target)) / n.
   * @param dy n x C, overwritten.
   * @throws as evaluate(y, target), and std::invalid_argument if dy is not n x C.
   */
  Scalar evaluate(ConstRowMatrixRef<Scalar> y, TargetRef target, RowMatrixRef<Scalar> dy) const {
    constexpr const char* where = "kshot::CrossEntropyLoss::evaluate()";
    check(y, target, where);
    detail::check_shape(dy, y.rows(), y.cols(), where, "dy");
    const Index n = y.rows();
    if (n == 0) return Scalar(0);
    const Scalar inv_n = Scalar(1) / static_cast<Scalar>(n);
    Scalar total = 0;
    for (Index i = 0; i < n; ++i) {
      const Scalar m = y.row(i).maxCoeff();
      dy.row(i) = (y.row(i).array() - m).exp();
      const Scalar s = dy.row(i).sum();
      total += m + std::log(s) - y(i, target[i]);
      dy.row(i) *= inv_n / s;
      dy(i, target[i]) -= inv_n;
    }
    return total * inv_n;
  }

  /**
   * @brief R-operator of the gradient: overwrites rdy with R{dL/dy}, row i = (diag(p_i) − p_i p_iᵀ) ry_i / n.
   * @param y logits, n x C.
   * @param target n class ids.
   * @param ry R{y}, n x C.
   * @param rdy n x C, overwritten.
   * @throws as evaluate(y, target), and std::invalid_argument if ry or rdy is not n x C or ry is not finite.
   */
  void evaluate_r(ConstRowMatrixRef<Scalar> y, TargetRef target, ConstRowMatrixRef<Scalar> ry,
                  RowMatrixRef<Scalar> rdy) const {
    constexpr const char* where = "kshot::CrossEntropyLoss::evaluate_r()";
    check(y, target, where);
    detail::check_shape(ry, y.rows(), y.cols(), where, "ry");
    detail::check_shape(rdy, y.rows(), y.cols(), where, "rdy");
    detail::check_finite(ry, where, "ry");
    const Index n = y.rows();
    if (n == 0) return;
    const Scalar inv_n = Scalar(1) / static_cast<Scalar>(n);
    for (Index i = 0; i < n; ++i) {
      const Scalar m = y.row(i).maxCoeff();
      rdy.row(i) = (y.row(i).array() - m).exp();
      rdy.row(i) /= rdy.row(i).sum();  // p_i
      const Scalar mean = rdy.row(i).dot(ry.row(i));
      rdy.row(i).array() *= (ry.row(i).array() - mean) * inv_n;
    }
  }

 private:
  void check(const ConstRowMatrixRef<Scalar>& y, const TargetRef& target, const char* where) const {
    KSHOT_CHECK(y.cols() >= 1 || y.rows() == 0, where, detail::cat("y has ", y.rows(), " rows but 0 columns"));
    check_target(target, y.rows(), y.cols(), where, "target");
    detail::check_finite(y, where, "y");
  }
};

/**
 * @brief One task of a meta-batch: a support (adaptation) set and a query (evaluation) set, learn2learn's
 * adaptation / evaluation split.
 *
 * The batched calls of Maml, MetaSgd and Reptile accept any type with these four members (and a container
 * with size() and operator[]); this is the owning one. Reptile uses the support set only.
 *
 * @tparam Scalar float or double.
 * @tparam Loss a TaskLoss (MseLoss<Scalar>: matrix targets; CrossEntropyLoss<Scalar>: class ids).
 * @note Reusing a vector of tasks with the same shapes (assigning new values) allocates nothing.
 */
template <class Scalar, class Loss>
struct MetaTask {
  RowMatrixX<Scalar> x_support;     ///< support inputs, one sample per row
  typename Loss::Target y_support;  ///< support targets
  RowMatrixX<Scalar> x_query;       ///< query inputs
  typename Loss::Target y_query;    ///< query targets
};

}  // namespace kshot

#endif  // KSHOT_META_TASK_LOSS_HPP
