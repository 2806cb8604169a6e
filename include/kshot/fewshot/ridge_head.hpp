/**
 * @file kshot/fewshot/ridge_head.hpp
 * @brief R2D2's closed-form ridge-regression head: W = X^T (X X^T + lambda I)^{-1} Y, logits
 * scale * Q W + bias, and the query cross-entropy with gradients to the support, the query, the scale,
 * the bias and lambda.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_FEWSHOT_RIDGE_HEAD_HPP
#define KSHOT_FEWSHOT_RIDGE_HEAD_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/gemm.hpp"
#include "kshot/core/types.hpp"
#include "kshot/fewshot/common.hpp"

#include <Eigen/Cholesky>

#include <cmath>

namespace kshot {

/// Gradients of RidgeHead::loss() with respect to its three learnable scalars.
template <class Scalar>
struct RidgeHeadGradient {
  Scalar scale = 0;   ///< dL/dscale
  Scalar bias = 0;    ///< dL/dbias (0 up to rounding: a shared offset does not change a softmax)
  Scalar lambda = 0;  ///< dL/dlambda
};

/**
 * @brief Closed-form ridge-regression head of R2D2 (Bertinetto et al. 2019), fitted per episode.
 *
 * With the n x d support matrix X, its n x N one-hot targets Y and a query matrix Q,
 * @f[ W = X^\top (X X^\top + \lambda I_n)^{-1} Y, \qquad \mathrm{logits} = \alpha\, Q W + \beta @f]
 * (the Woodbury form: one n x n Cholesky solve, n = support size, instead of a d x d one). The loss is
 * the cross-entropy of the queries averaged over them,
 * @f$ L = -\frac{1}{Q}\sum_i \log\mathrm{softmax}(\mathrm{logits}_i)_{y_i} @f$.
 *
 * `loss(..., grad_support, grad_query, grad_params)` differentiates through the closed form. With
 * @f$ G = (\mathrm{softmax} - Y_Q)/Q @f$, @f$ A = (XX^\top + \lambda I)^{-1} Y @f$ (so @f$ W = X^\top A @f$),
 * @f$ \bar W = \alpha Q^\top G @f$ and @f$ B = (XX^\top + \lambda I)^{-1} X \bar W @f$:
 * @f[ \frac{\partial L}{\partial Q} = \alpha G W^\top, \quad
 *     \frac{\partial L}{\partial X} = A \bar W^\top - (B A^\top + A B^\top) X, \quad
 *     \frac{\partial L}{\partial \lambda} = -\sum B \odot A, \quad
 *     \frac{\partial L}{\partial \alpha} = \sum G \odot (Q W), \quad
 *     \frac{\partial L}{\partial \beta} = \sum G. @f]
 * The bias is one scalar shared by every logit (R2D2's adjust layer), so it cancels in the softmax:
 * its gradient is zero up to rounding. It shifts the scores() values only.
 *
 * @code
 * @inproceedings{bertinetto2019meta,
 *   title={Meta-learning with differentiable closed-form solvers},
 *   author={Bertinetto, Luca and Henriques, Jo{\~a}o F. and Torr, Philip H. S. and Vedaldi, Andrea},
 *   booktitle={International Conference on Learning Representations}, year={2019}}
 * @endcode
 *
 * @tparam Scalar float or double.
 * @note The n x n system is solved by Cholesky (Eigen's LLT); if rounding makes it fail, by LDLT.
 * @note Scratch matrices are members, reused while shapes repeat. Not thread-safe; copy it per thread.
 * @note Column-major inputs are copied into row-major temporaries when they bind.
 */
template <class Scalar>
class RidgeHead {
  static_assert(is_supported_scalar_v<Scalar>, "kshot::RidgeHead<Scalar>: Scalar must be float or double");

 public:
  /**
   * @param lambda the ridge penalty, finite and > 0 (default 1).
   * @param scale the logit scale alpha, finite (default 1).
   * @param bias the logit offset beta, finite (default 0).
   */
  explicit RidgeHead(Scalar lambda = Scalar(1), Scalar scale = Scalar(1), Scalar bias = Scalar(0))
      : lambda_(lambda), scale_(scale), bias_(bias), llt_(Matrix::Identity(1, 1)), ldlt_(Matrix::Identity(1, 1)) {}

  Scalar lambda() const noexcept { return lambda_; }
  Scalar scale() const noexcept { return scale_; }
  Scalar bias() const noexcept { return bias_; }
  /// Setters for a training loop that learns the three scalars; checked at the next fit() or loss().
  void set_lambda(Scalar lambda) noexcept { lambda_ = lambda; }
  void set_scale(Scalar scale) noexcept { scale_ = scale; }
  void set_bias(Scalar bias) noexcept { bias_ = bias; }

  /**
   * @brief Solves for W (d x N) on the support set.
   * @param[in] support n x d support embeddings X.
   * @param[in] support_labels n labels covering 0..N-1.
   * @throws std::invalid_argument on a bad support set (see detail::check_support), lambda not finite
   * and > 0, or scale or bias not finite.
   */
  void fit(ConstRowMatrixRef<Scalar> support, ConstLabelRef support_labels) {
    fit_impl(support, support_labels, "kshot::RidgeHead::fit()");
  }

  /**
   * @brief Q x N logits scale * (query W) + bias.
   * @throws std::invalid_argument before fit(), if query has the wrong number of columns or a non-finite
   * value, or out is not Q x N.
   */
  void scores(ConstRowMatrixRef<Scalar> query, RowMatrixRef<Scalar> out) {
    constexpr const char* where = "kshot::RidgeHead::scores()";
    KSHOT_CHECK(classes_ > 0, where, "fit() has not been called");
    detail::check_query(query, weights_.rows(), where);
    detail::check_shape(out, query.rows(), classes_, where, "out");
    detail::gemm_assign(out, query, weights_);
    out = scale_ * out.array() + bias_;
  }

  RowMatrixX<Scalar> scores(ConstRowMatrixRef<Scalar> query) {
    RowMatrixX<Scalar> out(query.rows(), classes_);
    scores(query, out);
    return out;
  }

  /// Argmax of scores(); ties go to the lower class.
  LabelVector predict(ConstRowMatrixRef<Scalar> query) { return argmax_rows<Scalar>(scores(query)); }

  Index num_classes() const noexcept { return classes_; }

  /// The d x N ridge solution W of the last fit (without scale and bias).
  const RowMatrixX<Scalar>& weights() const noexcept { return weights_; }

  /**
   * @brief Mean query cross-entropy of an episode (fits the support first).
   * @param[in] support n x d.
   * @param[in] support_labels n labels covering 0..N-1.
   * @param[in] query Q x d, Q > 0.
   * @param[in] query_labels Q labels in [0, N).
   * @throws std::invalid_argument on bad shapes, labels, values or hyperparameters.
   */
  Scalar loss(ConstRowMatrixRef<Scalar> support, ConstLabelRef support_labels, ConstRowMatrixRef<Scalar> query,
              ConstLabelRef query_labels) {
    return forward(support, support_labels, query, query_labels, "kshot::RidgeHead::loss()");
  }

  /**
   * @brief Mean query cross-entropy and its gradients through the closed-form solve.
   * @param[out] grad_support n x d, overwritten with dL/dX.
   * @param[out] grad_query Q x d, overwritten with dL/dQ.
   * @param[out] grad_params overwritten with dL/dscale, dL/dbias and dL/dlambda.
   * @throws std::invalid_argument as loss(), or when a gradient buffer has the wrong shape.
   */
  Scalar loss(ConstRowMatrixRef<Scalar> support, ConstLabelRef support_labels, ConstRowMatrixRef<Scalar> query,
              ConstLabelRef query_labels, RowMatrixRef<Scalar> grad_support, RowMatrixRef<Scalar> grad_query,
              RidgeHeadGradient<Scalar>& grad_params) {
    constexpr const char* where = "kshot::RidgeHead::loss()";
    detail::check_shape(grad_support, support.rows(), support.cols(), where, "grad_support");
    detail::check_shape(grad_query, query.rows(), query.cols(), where, "grad_query");
    const Scalar value = forward(support, support_labels, query, query_labels, where);
    const Index q = query.rows();
    // probs_ holds the softmax; G = (softmax - onehot) / Q.
    for (Index i = 0; i < q; ++i) probs_(i, query_labels[i]) -= Scalar(1);
    probs_ /= Scalar(q);
    const auto& g = probs_;
    grad_params.bias = g.sum();
    grad_params.scale = (g.array() * raw_.array()).sum();
    detail::gemm_assign(grad_query, g, weights_.transpose(), scale_);
    // W_bar = scale Q^T G (d x N); B = K^{-1} X W_bar (n x N).
    detail::gemm_assign(grad_weights_, query.transpose(), g, scale_);
    detail::gemm_assign(solve_rhs_, support, grad_weights_);
    solve(solve_rhs_, beta_);
    grad_params.lambda = -(beta_.array() * alpha_.array()).sum();
    // dL/dX = A W_bar^T - (B A^T + A B^T) X; the n x n middle factor keeps it to small GEMMs.
    detail::gemm_assign(kernel_grad_, beta_, alpha_.transpose());
    kernel_grad_ += kernel_grad_.transpose().eval();
    detail::gemm_assign(grad_support, alpha_, grad_weights_.transpose());
    detail::gemm_add(grad_support, kernel_grad_, support, Scalar(-1));
    return value;
  }

 private:
  void check_hyperparameters(const char* where) const {
    KSHOT_CHECK(lambda_ > Scalar(0) && std::isfinite(lambda_), where,
                detail::cat("lambda must be finite and > 0, got ", lambda_));
    KSHOT_CHECK(std::isfinite(scale_), where, detail::cat("scale must be finite, got ", scale_));
    KSHOT_CHECK(std::isfinite(bias_), where, detail::cat("bias must be finite, got ", bias_));
  }

  // x = K^{-1} rhs with the factorisation of the last fit.
  template <class Rhs, class Out>
  void solve(const Rhs& rhs, Out& x) const {
    if (use_ldlt_)
      x = ldlt_.solve(rhs);
    else
      x = llt_.solve(rhs);
  }

  void fit_impl(const ConstRowMatrixRef<Scalar>& support, const ConstLabelRef& support_labels, const char* where) {
    check_hyperparameters(where);
    classes_ = detail::check_support(support, support_labels, where);
    const Index n = support.rows();
    // K = X X^T + lambda I is symmetric positive definite for lambda > 0.
    kernel_.resize(n, n);
    detail::gemm_assign(kernel_, support, support.transpose());
    kernel_.diagonal().array() += lambda_;
    llt_.compute(kernel_);
    use_ldlt_ = llt_.info() != Eigen::Success;
    if (use_ldlt_) ldlt_.compute(kernel_);
    onehot_.setZero(n, classes_);
    for (Index j = 0; j < n; ++j) onehot_(j, support_labels[j]) = Scalar(1);
    solve(onehot_, alpha_);
    weights_.resize(support.cols(), classes_);
    detail::gemm_assign(weights_, support.transpose(), alpha_);
  }

  Scalar forward(const ConstRowMatrixRef<Scalar>& support, const ConstLabelRef& support_labels,
                 const ConstRowMatrixRef<Scalar>& query, const ConstLabelRef& query_labels, const char* where) {
    fit_impl(support, support_labels, where);
    detail::check_query(query, support.cols(), where);
    KSHOT_CHECK(query_labels.size() == query.rows(), where,
                detail::cat("query_labels has ", query_labels.size(), " entries but query has ", query.rows(), " rows"));
    KSHOT_CHECK(query.rows() > 0, where, "the query set is empty");
    for (Index i = 0; i < query_labels.size(); ++i)
      KSHOT_CHECK(query_labels[i] >= 0 && query_labels[i] < classes_, where,
                  detail::cat("query_labels[", i, "] = ", query_labels[i], " is outside [0, ", classes_, ")"));
    raw_.resize(query.rows(), classes_);
    detail::gemm_assign(raw_, query, weights_);
    probs_ = scale_ * raw_.array() + bias_;
    // Cross-entropy by log-sum-exp; probs_ ends as the softmax.
    Scalar total = 0;
    for (Index i = 0; i < query.rows(); ++i) {
      auto row = probs_.row(i);
      const Scalar m = row.maxCoeff();
      const Scalar target = row(query_labels[i]);
      row = (row.array() - m).exp();
      const Scalar sum = row.sum();
      total += m + std::log(sum) - target;
      row /= sum;
    }
    return total / Scalar(query.rows());
  }

  using Matrix = Eigen::Matrix<Scalar, Eigen::Dynamic, Eigen::Dynamic>;

  Scalar lambda_, scale_, bias_;
  Index classes_ = 0;
  bool use_ldlt_ = false;
  Matrix kernel_;
  // Both start factorised (of a 1 x 1 identity): Eigen 3.4 leaves info() uninitialised in a default-
  // constructed decomposition, and copying one reads it.
  Eigen::LLT<Matrix> llt_;
  Eigen::LDLT<Matrix> ldlt_;
  RowMatrixX<Scalar> onehot_, alpha_, weights_, raw_, probs_, grad_weights_, solve_rhs_, beta_, kernel_grad_;
};

}  // namespace kshot

#endif  // KSHOT_FEWSHOT_RIDGE_HEAD_HPP
