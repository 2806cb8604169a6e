/**
 * @file kshot/fewshot/logistic_head.hpp
 * @brief Multinomial logistic regression fitted on the support set (the fine-tuning baseline): L2-penalised
 * cross-entropy minimised by a deterministic full-batch L-BFGS with a fixed iteration cap.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_FEWSHOT_LOGISTIC_HEAD_HPP
#define KSHOT_FEWSHOT_LOGISTIC_HEAD_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/gemm.hpp"
#include "kshot/core/types.hpp"
#include "kshot/fewshot/common.hpp"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

namespace kshot {

/// Settings of LogisticHead's solver.
struct LogisticHeadOptions {
  double l2 = 1e-3;            ///< L2 penalty on the weights (not the bias); finite, >= 0
  Index max_iterations = 500;  ///< L-BFGS iteration cap; >= 1
  double tolerance = 1e-6;     ///< stop when the gradient's largest entry is <= tolerance; finite, > 0
  Index history = 10;          ///< L-BFGS memory (curvature pairs kept); >= 1
};

/// What the last LogisticHead::fit() did.
struct LogisticFitReport {
  Index iterations = 0;            ///< L-BFGS iterations run
  bool converged = false;          ///< the gradient test passed (false: cap reached or line search stalled)
  double gradient_max = 0;         ///< largest |entry| of the gradient (centred coordinates) at the end
  std::vector<double> objective;   ///< objective at the start (log N) and after every iteration
};

/**
 * @brief Multinomial logistic regression on the support embeddings: the linear-probe / fine-tuning
 * baseline of few-shot classification (Chen et al. 2019, "Baseline"; Tian et al. 2020).
 *
 * fit() minimises, over the N x d weights W and the N biases b,
 * @f[ J(W, b) = \frac{1}{n}\sum_{j=1}^{n} -\log\mathrm{softmax}(W x_j + b)_{y_j}
 *             + \frac{\lambda}{2}\lVert W\rVert_F^2 @f]
 * from W = 0, b = 0 with full-batch L-BFGS (two-loop recursion, Armijo backtracking from a unit step;
 * the first step is scaled to length 1). The solver works in centred coordinates,
 * @f$ W x + b = W(x - \mu) + (b + W\mu) @f$ with @f$ \mu @f$ the support mean: an exact
 * reparametrisation (same J, same minimiser) that keeps a common feature component from making the
 * problem ill-conditioned. It stops when the largest entry of the gradient in those coordinates is at
 * most `tolerance` (converged), when `max_iterations` iterations have run, or when no step along the
 * search direction (or the steepest descent direction) decreases J. For @f$ \lambda > 0 @f$ the objective is
 * strictly convex in W; in b it is invariant to adding one constant to every bias, and since the bias
 * gradient always sums to zero, the iterates keep @f$ \sum_c b_c = 0 @f$, which picks the unique
 * minimiser. The scores are the logits @f$ W q + b @f$.
 *
 * The optimisation runs in double precision whatever Scalar is (the support set is small); the weights
 * are then stored in Scalar. There is no gradient to the embeddings: this head is fitted, not
 * differentiated through (use RidgeHead for a differentiable closed-form head).
 *
 * @code
 * @inproceedings{chen2019closer,
 *   title={A Closer Look at Few-shot Classification},
 *   author={Chen, Wei-Yu and Liu, Yen-Cheng and Kira, Zsolt and Wang, Yu-Chiang Frank and Huang, Jia-Bin},
 *   booktitle={International Conference on Learning Representations}, year={2019}}
 * @inproceedings{tian2020rethinking,
 *   title={Rethinking Few-Shot Image Classification: a Good Embedding Is All You Need?},
 *   author={Tian, Yonglong and Wang, Yue and Krishnan, Dilip and Tenenbaum, Joshua B. and Isola, Phillip},
 *   booktitle={European Conference on Computer Vision}, year={2020}}
 * @endcode
 *
 * @tparam Scalar float or double.
 * @note Deterministic: the same support gives bitwise the same weights. Allocates on every fit().
 * Not thread-safe; copy it per thread.
 * @note Column-major inputs are copied into row-major temporaries when they bind.
 */
template <class Scalar>
class LogisticHead {
  static_assert(is_supported_scalar_v<Scalar>, "kshot::LogisticHead<Scalar>: Scalar must be float or double");

 public:
  /// @param options solver settings, checked by fit().
  explicit LogisticHead(LogisticHeadOptions options = {}) : options_(options) {}

  const LogisticHeadOptions& options() const noexcept { return options_; }

  /**
   * @brief Fits W and b on the support set.
   * @param[in] support n x d support embeddings.
   * @param[in] support_labels n labels covering 0..N-1.
   * @throws std::invalid_argument on a bad support set (see detail::check_support) or bad options
   * (l2 < 0 or not finite, max_iterations < 1, tolerance <= 0 or not finite, history < 1).
   */
  void fit(ConstRowMatrixRef<Scalar> support, ConstLabelRef support_labels) {
    constexpr const char* where = "kshot::LogisticHead::fit()";
    KSHOT_CHECK(options_.l2 >= 0 && std::isfinite(options_.l2), where,
                detail::cat("l2 must be finite and >= 0, got ", options_.l2));
    KSHOT_CHECK(options_.max_iterations >= 1, where,
                detail::cat("max_iterations must be >= 1, got ", options_.max_iterations));
    KSHOT_CHECK(options_.tolerance > 0 && std::isfinite(options_.tolerance), where,
                detail::cat("tolerance must be finite and > 0, got ", options_.tolerance));
    KSHOT_CHECK(options_.history >= 1, where, detail::cat("history must be >= 1, got ", options_.history));
    const Index classes = detail::check_support(support, support_labels, where);
    // Centring the features and folding the mean into the (unpenalised) bias is an exact
    // reparametrisation, W x + b = W (x - mu) + (b + W mu), so the minimiser is the same; it removes the
    // near-collinearity of a shared feature component with the bias that slows L-BFGS by orders of
    // magnitude on typical embeddings (all rows with a large common direction).
    Mat centred = support.template cast<Real>();
    const RowVectorX<Real> mean = centred.colwise().mean();
    centred.rowwise() -= mean;
    optimise(centred, mean, support_labels, classes);
    classes_ = classes;
  }

  /**
   * @brief Q x N logits W q + b.
   * @throws std::invalid_argument before fit(), if query has the wrong number of columns or a non-finite
   * value, or out is not Q x N.
   */
  void scores(ConstRowMatrixRef<Scalar> query, RowMatrixRef<Scalar> out) const {
    constexpr const char* where = "kshot::LogisticHead::scores()";
    KSHOT_CHECK(classes_ > 0, where, "fit() has not been called");
    detail::check_query(query, weights_.cols(), where);
    detail::check_shape(out, query.rows(), classes_, where, "out");
    detail::gemm_assign(out, query, weights_.transpose());
    out.rowwise() += bias_.transpose();
  }

  RowMatrixX<Scalar> scores(ConstRowMatrixRef<Scalar> query) const {
    RowMatrixX<Scalar> out(query.rows(), classes_);
    scores(query, out);
    return out;
  }

  /// Argmax of scores(); ties go to the lower class.
  LabelVector predict(ConstRowMatrixRef<Scalar> query) const { return argmax_rows<Scalar>(scores(query)); }

  Index num_classes() const noexcept { return classes_; }
  /// N x d weights of the last fit.
  const RowMatrixX<Scalar>& weights() const noexcept { return weights_; }
  /// N biases of the last fit.
  const VectorX<Scalar>& bias() const noexcept { return bias_; }
  /// Iterations, convergence and the objective trace of the last fit.
  const LogisticFitReport& report() const noexcept { return report_; }

 private:
  // The solver runs in double whatever Scalar is. Real is double spelled through Scalar, so that the solver's
  // Eigen expressions are dependent and instantiated only where a LogisticHead is used, not in every file
  // that includes this header (they were a tenth of the compile time of #include <kshot/kshot.hpp>).
  using Real = std::conditional_t<std::is_same_v<Scalar, float>, double, double>;
  using Mat = RowMatrixX<Real>;

  // J and its gradient at theta = [W (N x d, row-major) | b (N)], flattened.
  struct Problem {
    const Mat& x;
    const LabelVector& y;
    Index classes;
    double l2;
    Mat logits;

    double evaluate(const VectorX<Real>& theta, VectorX<Real>& grad) {
      const Index n = x.rows(), d = x.cols(), c = classes;
      const Eigen::Map<const Mat> w(theta.data(), c, d);
      const Eigen::Map<const VectorX<Real>> b(theta.data() + c * d, c);
      detail::gemm_assign(logits, x, w.transpose());
      logits.rowwise() += b.transpose();
      double value = 0;
      for (Index j = 0; j < n; ++j) {
        auto row = logits.row(j);
        const double m = row.maxCoeff();
        const double target = row(y[j]);
        row = (row.array() - m).exp();
        const double sum = row.sum();
        value += m + std::log(sum) - target;
        row /= sum;
        row(y[j]) -= 1.0;
      }
      logits /= double(n);  // now dJ/dlogits
      Eigen::Map<Mat> gw(grad.data(), c, d);
      Eigen::Map<VectorX<Real>> gb(grad.data() + c * d, c);
      detail::gemm_assign(gw, logits.transpose(), x);
      gw += l2 * w;
      gb = logits.colwise().sum().transpose();
      return value / double(n) + 0.5 * l2 * w.squaredNorm();
    }
  };

  void optimise(const Mat& x, const RowVectorX<Real>& mean, const ConstLabelRef& labels, Index classes) {
    const LabelVector y = labels;
    const Index d = x.cols(), p = classes * d + classes;
    Problem problem{x, y, classes, options_.l2, Mat(x.rows(), classes)};
    VectorX<Real> theta = VectorX<Real>::Zero(p), grad(p), trial(p), trial_grad(p), direction(p);
    const std::size_t history = static_cast<std::size_t>(options_.history);
    std::vector<VectorX<Real>> s_hist, y_hist;
    std::vector<double> rho_hist;
    std::vector<double> alpha(history);
    report_ = LogisticFitReport{};
    double value = problem.evaluate(theta, grad);
    report_.objective.push_back(value);
    for (Index iter = 0; iter < options_.max_iterations; ++iter) {
      if (grad.cwiseAbs().maxCoeff() <= options_.tolerance) {
        report_.converged = true;
        break;
      }
      // Two-loop recursion: direction = -H grad.
      direction = -grad;
      const std::size_t k = s_hist.size();
      for (std::size_t t = k; t-- > 0;) {
        alpha[t] = rho_hist[t] * s_hist[t].dot(direction);
        direction -= alpha[t] * y_hist[t];
      }
      if (k > 0) direction *= s_hist[k - 1].dot(y_hist[k - 1]) / y_hist[k - 1].squaredNorm();
      for (std::size_t t = 0; t < k; ++t) {
        const double beta = rho_hist[t] * y_hist[t].dot(direction);
        direction += (alpha[t] - beta) * s_hist[t];
      }
      double slope = grad.dot(direction);
      if (!(slope < 0)) {  // not a descent direction (rounding): restart from steepest descent
        s_hist.clear();
        y_hist.clear();
        rho_hist.clear();
        direction = -grad;
        slope = -grad.squaredNorm();
      }
      // Unit step, except the first steepest-descent step, which is scaled to length 1.
      double step = s_hist.empty() ? std::min(1.0, 1.0 / direction.norm()) : 1.0;
      bool accepted = false;
      double trial_value = value;
      for (int halvings = 0; halvings < 60; ++halvings, step *= 0.5) {
        trial = theta + step * direction;
        trial_value = problem.evaluate(trial, trial_grad);
        if (std::isfinite(trial_value) && trial_value <= value + 1e-4 * step * slope) {
          accepted = true;
          break;
        }
      }
      report_.iterations = iter + 1;
      if (!accepted || !(trial_value < value)) break;  // stalled at rounding level
      VectorX<Real> s = trial - theta, yv = trial_grad - grad;
      const double sy = s.dot(yv);
      theta.swap(trial);
      grad.swap(trial_grad);
      value = trial_value;
      report_.objective.push_back(value);
      if (sy > 1e-12 * s.norm() * yv.norm()) {  // keep only pairs with positive curvature
        if (s_hist.size() == history) {
          s_hist.erase(s_hist.begin());
          y_hist.erase(y_hist.begin());
          rho_hist.erase(rho_hist.begin());
        }
        s_hist.push_back(std::move(s));
        y_hist.push_back(std::move(yv));
        rho_hist.push_back(1.0 / sy);
      }
    }
    if (!report_.converged && grad.cwiseAbs().maxCoeff() <= options_.tolerance) report_.converged = true;
    report_.gradient_max = grad.cwiseAbs().maxCoeff();
    const Eigen::Map<const Mat> w(theta.data(), classes, d);
    weights_ = w.template cast<Scalar>();
    bias_ = (theta.tail(classes) - w * mean.transpose()).template cast<Scalar>();
  }

  LogisticHeadOptions options_;
  Index classes_ = 0;
  RowMatrixX<Scalar> weights_;
  VectorX<Scalar> bias_;
  LogisticFitReport report_;
};

}  // namespace kshot

#endif  // KSHOT_FEWSHOT_LOGISTIC_HEAD_HPP
