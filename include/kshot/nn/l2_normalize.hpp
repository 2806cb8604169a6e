/**
 * @file kshot/nn/l2_normalize.hpp
 * @brief Row-wise L2 normalisation y = x / max(‖x‖, eps), as torch.nn.functional.normalize(x, p=2, dim=-1),
 * with its exact backward pass and R-operator on both branches of the clamp.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_NN_L2_NORMALIZE_HPP
#define KSHOT_NN_L2_NORMALIZE_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"
#include "kshot/core/workspace.hpp"
#include "kshot/nn/layer.hpp"

#include <cmath>
#include <cstddef>
#include <memory>
#include <string>
#include <vector>

namespace kshot {

/**
 * @brief L2 normalisation of each row: y = x / max(‖x‖₂, eps), the usual last layer of an embedding model
 * whose outputs are compared by cosine similarity. No parameters.
 *
 * This is torch.nn.functional.normalize(x, p=2, dim=-1, eps): x divided by the norm clamped from below at
 * eps. Derivatives are exact on both branches, with torch's choice at the kink (the clamp passes the
 * gradient to the norm when ‖x‖ >= eps):
 *  - ‖x‖ >= eps: dx = (dy − y (y · dy)) / ‖x‖, the projection onto the tangent space of the sphere;
 *  - ‖x‖ < eps (the clamped branch is linear): y = x / eps, dx = dy / eps. A zero row gives y = 0 and a
 *    finite gradient dy / eps.
 *
 * The norm is sqrt of the sum of squares; when that overflows (entries near the square root of the largest
 * Scalar) it is recomputed with Eigen's scaled stableNorm(), so the output stays finite and correct.
 *
 * State kept between calls: a view of the last forward()'s x (it must stay alive and unchanged until the
 * next forward(), as the Layer protocol says), the row norms, and R{y} and y · rx from forward_r().
 *
 * @tparam Scalar float or double.
 * @note Not thread-safe: one layer per thread. After the first calls with the largest batch, nothing
 * allocates (workspace buffers grow and never shrink). Rows run in parallel (detail::parallel_for) and each
 * row's result depends only on that row, so results are bitwise the same for any number of threads.
 * y must not overlap x (the layer reads x again in backward()).
 */
template <class Scalar>
class L2Normalize final : public Layer<Scalar> {
  static_assert(is_supported_scalar_v<Scalar>, "kshot::L2Normalize<Scalar>: Scalar must be float or double");

 public:
  /**
   * @brief L2 normalisation of rows of width `dim`.
   * @param dim the number of features (columns of x and y).
   * @param eps the lower clamp of the norm (torch's default 1e-12).
   * @throws std::invalid_argument if dim < 1, or eps is not finite, or eps <= 0, or eps rounds to 0 or to
   * infinity in Scalar.
   */
  explicit L2Normalize(Index dim, double eps = 1e-12) : dim_(dim), eps_(eps) {
    constexpr const char* where = "kshot::L2Normalize::L2Normalize()";
    KSHOT_CHECK(dim >= 1, where, detail::cat("dim must be at least 1, got ", dim));
    KSHOT_CHECK(std::isfinite(eps) && eps > 0, where, detail::cat("eps must be finite and positive, got ", eps));
    const auto eps_s = static_cast<Scalar>(eps);
    KSHOT_CHECK(eps_s > Scalar(0) && std::isfinite(eps_s), where,
                detail::cat("eps = ", eps, " is not representable as a positive finite Scalar"));
  }

  /// "L2Normalize".
  std::string type_name() const override { return "L2Normalize"; }
  /// dim.
  Index input_dim() const noexcept override { return dim_; }
  /// dim.
  Index output_dim() const noexcept override { return dim_; }

  /// The number of features.
  Index dim() const noexcept { return dim_; }
  /// The lower clamp of the norm.
  double eps() const noexcept { return eps_; }

  /**
   * @brief y = x / max(‖x‖, eps) row by row; keeps a view of x and the row norms.
   * @param x n x dim input; must stay alive and unchanged until the next forward().
   * @param y n x dim output, overwritten; must not overlap x.
   * @param training ignored.
   * @throws std::invalid_argument if x has not dim columns, y is not n x dim, or x has a non-finite value.
   */
  void forward(ConstRowMatrixRef<Scalar> x, RowMatrixRef<Scalar> y, bool training) override {
    (void)training;
    constexpr const char* where = "kshot::L2Normalize::forward()";
    KSHOT_CHECK(x.cols() == dim_, where,
                detail::cat("x has ", x.cols(), " columns but the layer's dim is ", dim_));
    detail::check_shape(y, x.rows(), dim_, where, "y");
    detail::check_finite(x, where, "x");
    const Index n = x.rows();
    x_data_ = x.data();
    x_stride_ = x.outerStride();
    n_ = n;
    has_forward_ = true;
    has_forward_r_ = false;
    Vector norm = ws_.vector(kNorm, n);
    const LayerInputMap<Scalar> xs = input();
    for_rows(n, 3, [&](Index i) {
      const auto xi = xs.row(i);
      const Scalar squared = xi.squaredNorm();
      norm[i] = std::isfinite(squared) ? std::sqrt(squared) : xi.stableNorm();
      y.row(i) = xi / denominator(norm[i]);
    });
  }

  /**
   * @brief Overwrites dx = (dy − y (y · dy)) / ‖x‖ (dy / eps on clamped rows) when `input_grad`; there are
   * no parameters.
   * @param dy n x dim, dL/dy for the last forward().
   * @param dx n x dim, overwritten when input_grad (untouched otherwise); may be dy itself.
   * @param input_grad whether to compute dx.
   * @throws std::invalid_argument if forward() has not run, dy is not n x dim, dx is not n x dim (when
   * input_grad), or dy has a non-finite value.
   */
  void backward(ConstRowMatrixRef<Scalar> dy, RowMatrixRef<Scalar> dx, bool input_grad) override {
    constexpr const char* where = "kshot::L2Normalize::backward()";
    check_forward(where);
    detail::check_shape(dy, n_, dim_, where, "dy");
    if (!input_grad) return;
    detail::check_shape(dx, n_, dim_, where, "dx");
    detail::check_finite(dy, where, "dy");
    const Vector norm = ws_.vector(kNorm, n_);
    const LayerInputMap<Scalar> xs = input();
    for_rows(n_, 6, [&](Index i) {
      const Scalar den = denominator(norm[i]);
      if (clamped(norm[i])) {
        dx.row(i) = dy.row(i) / den;
        return;
      }
      const auto y = xs.row(i) / den;
      const Scalar s = y.dot(dy.row(i));
      dx.row(i) = (dy.row(i) - y * s) / den;
    });
  }

  /**
   * @brief ry = (rx − y (y · rx)) / ‖x‖ (rx / eps on clamped rows); keeps ry and y · rx for backward_r().
   * @param rx n x dim, the directional derivative of the last forward()'s x.
   * @param v unused (no parameters; may be null).
   * @param ry n x dim, overwritten.
   * @throws std::invalid_argument if forward() has not run, rx or ry is not n x dim, or rx has a non-finite
   * value.
   */
  void forward_r(ConstRowMatrixRef<Scalar> rx, const Scalar* v, RowMatrixRef<Scalar> ry) override {
    (void)v;
    constexpr const char* where = "kshot::L2Normalize::forward_r()";
    check_forward(where);
    detail::check_shape(rx, n_, dim_, where, "rx");
    detail::check_shape(ry, n_, dim_, where, "ry");
    detail::check_finite(rx, where, "rx");
    const Vector norm = ws_.vector(kNorm, n_);
    Matrix rys = ws_.matrix(kRy, n_, dim_);
    Vector rnorm = ws_.vector(kRnorm, n_);
    const LayerInputMap<Scalar> xs = input();
    for_rows(n_, 6, [&](Index i) {
      const Scalar den = denominator(norm[i]);
      if (clamped(norm[i])) {
        rnorm[i] = Scalar(0);
        rys.row(i) = rx.row(i) / den;
      } else {
        const auto y = xs.row(i) / den;
        rnorm[i] = y.dot(rx.row(i));
        rys.row(i) = (rx.row(i) - y * rnorm[i]) / den;
      }
      ry.row(i) = rys.row(i);
    });
    has_forward_r_ = true;
  }

  /**
   * @brief Overwrites rdx = R{dx} when input_grad: (rdy − R{y} s − y R{s} − (dy − y s) (y · rx) / ‖x‖) / ‖x‖
   * with s = y · dy, R{s} = R{y} · dy + y · rdy (rdy / eps on clamped rows). No parameters: `rgrad` is
   * untouched.
   * @param dy n x dim, as given to backward().
   * @param rdy n x dim, its directional derivative.
   * @param v unused (may be null).
   * @param rgrad unused (may be null).
   * @param rdx n x dim, overwritten when input_grad.
   * @param input_grad whether to compute rdx.
   * @throws std::invalid_argument if forward_r() has not run since the last forward(), a matrix is not
   * n x dim, or dy or rdy has a non-finite value.
   */
  void backward_r(ConstRowMatrixRef<Scalar> dy, ConstRowMatrixRef<Scalar> rdy, const Scalar* v, Scalar* rgrad,
                  RowMatrixRef<Scalar> rdx, bool input_grad) override {
    (void)v;
    (void)rgrad;
    constexpr const char* where = "kshot::L2Normalize::backward_r()";
    check_forward(where);
    KSHOT_CHECK(has_forward_r_, where, "forward_r() must run after forward() and before backward_r()");
    detail::check_shape(dy, n_, dim_, where, "dy");
    detail::check_shape(rdy, n_, dim_, where, "rdy");
    if (!input_grad) return;
    detail::check_shape(rdx, n_, dim_, where, "rdx");
    detail::check_finite(dy, where, "dy");
    detail::check_finite(rdy, where, "rdy");
    const Vector norm = ws_.vector(kNorm, n_);
    const Matrix rys = ws_.matrix(kRy, n_, dim_);
    const Vector rnorm = ws_.vector(kRnorm, n_);
    const LayerInputMap<Scalar> xs = input();
    for_rows(n_, 12, [&](Index i) {
      const Scalar den = denominator(norm[i]);
      if (clamped(norm[i])) {
        rdx.row(i) = rdy.row(i) / den;
        return;
      }
      const auto y = xs.row(i) / den;
      const auto ryi = rys.row(i);
      const Scalar s = y.dot(dy.row(i));
      const Scalar rs = ryi.dot(dy.row(i)) + y.dot(rdy.row(i));
      const Scalar ratio = rnorm[i] / den;
      rdx.row(i) = (rdy.row(i) - ryi * s - y * rs - (dy.row(i) - y * s) * ratio) / den;
    });
  }

  /// {dim, eps}.
  std::vector<double> config() const override { return {static_cast<double>(dim_), eps_}; }

  /// A new L2Normalize with the same configuration, without state.
  std::unique_ptr<Layer<Scalar>> clone() const override { return std::make_unique<L2Normalize>(dim_, eps_); }

 private:
  using Matrix = typename detail::Workspace<Scalar>::Matrix;
  using Vector = typename detail::Workspace<Scalar>::Vector;
  enum : std::size_t { kNorm = 0, kRy, kRnorm };

  /// body(i) for every row, in parallel when rows x dim x ops_per_entry is worth it.
  template <class Body>
  void for_rows(Index n, double ops_per_entry, Body&& body) const {
    const double work = static_cast<double>(n) * static_cast<double>(dim_) * ops_per_entry;
    detail::parallel_for(n, detail::worth_parallel(n, work), body);
  }

  /// True when the norm is clamped (torch's clamp_min passes the gradient at equality).
  bool clamped(Scalar norm) const noexcept { return norm < static_cast<Scalar>(eps_); }
  Scalar denominator(Scalar norm) const noexcept { return clamped(norm) ? static_cast<Scalar>(eps_) : norm; }

  /// The view of the last forward()'s x.
  LayerInputMap<Scalar> input() const noexcept {
    return LayerInputMap<Scalar>(x_data_, n_, dim_, Eigen::OuterStride<>(x_stride_));
  }

  void check_forward(const char* where) const { KSHOT_CHECK(has_forward_, where, "forward() must run first"); }

  Index dim_;
  double eps_;
  const Scalar* x_data_ = nullptr;
  Index x_stride_ = 0;
  Index n_ = 0;
  bool has_forward_ = false;
  bool has_forward_r_ = false;
  detail::Workspace<Scalar> ws_;
};

}  // namespace kshot

#endif  // KSHOT_NN_L2_NORMALIZE_HPP
