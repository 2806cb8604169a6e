/**
 * @file kshot/nn/layer_norm.hpp
 * @brief Layer normalisation over the features of each row (Ba, Kiros and Hinton 2016), as
 * torch.nn.LayerNorm over the last dimension, with its exact backward pass and R-operator.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_NN_LAYER_NORM_HPP
#define KSHOT_NN_LAYER_NORM_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/random.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"
#include "kshot/core/workspace.hpp"
#include "kshot/nn/layer.hpp"

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <limits>
#include <memory>
#include <string>
#include <vector>

namespace kshot {

/**
 * @brief Layer normalisation: each row is centred and scaled to unit (biased) variance, then, when
 * `affine`, multiplied by `gamma` and shifted by `beta` feature-wise.
 *
 * For a row x of width d: mu = mean(x), var = mean((x − mu)²) (biased, as torch), rstd = 1 / sqrt(var + eps),
 * x̂ = (x − mu) · rstd, y = gamma ∘ x̂ + beta (y = x̂ without `affine`). These are torch.nn.LayerNorm(d, eps,
 * elementwise_affine) over the last dimension. Parameters (when `affine`): [gamma (d), beta (d)] in the
 * model's vector, initialised to ones and zeros by initialize(), as torch does.
 *
 * Derivatives are exact: the Jacobian of x̂ is rstd (I − 11ᵀ/d − x̂x̂ᵀ/d); backward() and the R-operator use it
 * in closed form. A constant row (var = 0) gives x̂ = 0 up to rounding (rstd = 1/sqrt(eps)) and finite
 * derivatives. A row whose variance overflows (|x| near the square root of the largest Scalar) is first
 * scaled by a power of two, so its output stays finite and correct.
 *
 * State kept between calls (workspace buffers that grow and never shrink): x̂ and rstd from forward(), R{x̂}
 * and R{rstd} from forward_r(), and per-block partial parameter sums.
 *
 * @tparam Scalar float or double.
 * @note Not thread-safe: one layer per thread. After the first calls with the largest batch, nothing
 * allocates. Rows run in parallel (detail::parallel_for) in fixed blocks of 64 rows; parameter gradients are
 * summed per block, then over blocks in order, so results are bitwise the same for any number of threads.
 */
template <class Scalar>
class LayerNorm final : public Layer<Scalar> {
  static_assert(is_supported_scalar_v<Scalar>, "kshot::LayerNorm<Scalar>: Scalar must be float or double");

 public:
  /**
   * @brief A layer normalisation over `dim` features.
   * @param dim the number of features (columns of x and y).
   * @param eps the constant added to the variance inside the square root (torch's default 1e-5).
   * @param affine whether the layer has the learnable gamma and beta (torch's elementwise_affine).
   * @throws std::invalid_argument if dim < 1, or eps is not finite, or eps <= 0, or eps rounds to 0 or to
   * infinity in Scalar.
   */
  explicit LayerNorm(Index dim, double eps = 1e-5, bool affine = true) : dim_(dim), eps_(eps), affine_(affine) {
    constexpr const char* where = "kshot::LayerNorm::LayerNorm()";
    KSHOT_CHECK(dim >= 1, where, detail::cat("dim must be at least 1, got ", dim));
    KSHOT_CHECK(std::isfinite(eps) && eps > 0, where, detail::cat("eps must be finite and positive, got ", eps));
    const auto eps_s = static_cast<Scalar>(eps);
    KSHOT_CHECK(eps_s > Scalar(0) && std::isfinite(eps_s), where,
                detail::cat("eps = ", eps, " is not representable as a positive finite Scalar"));
  }

  /// "LayerNorm".
  std::string type_name() const override { return "LayerNorm"; }
  /// dim.
  Index input_dim() const noexcept override { return dim_; }
  /// dim.
  Index output_dim() const noexcept override { return dim_; }
  /// 2 dim with `affine` ([gamma, beta]), 0 without.
  Index num_parameters() const noexcept override { return affine_ ? 2 * dim_ : 0; }

  /// The number of features.
  Index dim() const noexcept { return dim_; }
  /// The variance offset.
  double eps() const noexcept { return eps_; }
  /// Whether the layer has gamma and beta.
  bool affine() const noexcept { return affine_; }

  /**
   * @brief Points the layer at its slices [gamma, beta] of the model's parameter and gradient vectors.
   * @param parameters 2 dim scalars (ignored without `affine`).
   * @param gradients 2 dim scalars, same layout (ignored without `affine`).
   */
  void bind(Scalar* parameters, Scalar* gradients) noexcept override {
    params_ = parameters;
    grads_ = gradients;
  }

  /**
   * @brief Sets gamma to ones and beta to zeros (torch's initialisation); draws nothing from `rng`.
   * @throws std::invalid_argument if the layer is affine and not bound.
   */
  void initialize(RandomStream& rng) override {
    (void)rng;
    if (!affine_) return;
    check_bound("kshot::LayerNorm::initialize()");
    std::fill(params_, params_ + dim_, Scalar(1));
    std::fill(params_ + dim_, params_ + 2 * dim_, Scalar(0));
  }

  /**
   * @brief y = gamma ∘ (x − mean) / sqrt(var + eps) + beta, row by row; keeps x̂ and rstd for backward().
   * @param x n x dim input (any n >= 0).
   * @param y n x dim output, overwritten; may be x itself.
   * @param training ignored (the layer behaves the same in training and evaluation).
   * @throws std::invalid_argument if the layer is affine and not bound, x has not dim columns, y is not
   * n x dim, or x has a non-finite value.
   */
  void forward(ConstRowMatrixRef<Scalar> x, RowMatrixRef<Scalar> y, bool training) override {
    (void)training;
    constexpr const char* where = "kshot::LayerNorm::forward()";
    if (affine_) check_bound(where);
    KSHOT_CHECK(x.cols() == dim_, where, detail::cat("x has ", x.cols(), " columns but the layer's dim is ", dim_));
    detail::check_shape(y, x.rows(), dim_, where, "y");
    detail::check_finite(x, where, "x");
    const Index n = x.rows();
    n_ = n;
    has_forward_ = true;
    has_forward_r_ = false;
    Matrix xhat = ws_.matrix(kXhat, n, dim_);
    Vector rstd = ws_.vector(kRstd, n);
    for_row_blocks(n, 8, [&](Index r0, Index r1) {
      for (Index i = r0; i < r1; ++i) {
        rstd[i] = normalize_row(x.row(i), xhat.row(i));
        if (affine_)
          y.row(i) = gamma().cwiseProduct(xhat.row(i)) + beta();
        else
          y.row(i) = xhat.row(i);
      }
    });
  }

  /**
   * @brief Accumulates dL/dgamma = Σ_rows dy ∘ x̂ and dL/dbeta = Σ_rows dy into the bound gradient slice and,
   * when `input_grad`, overwrites dx = rstd (g − mean(g) − x̂ mean(g ∘ x̂)) with g = gamma ∘ dy.
   * @param dy n x dim, dL/dy for the last forward().
   * @param dx n x dim, overwritten when input_grad (untouched otherwise); may be dy itself.
   * @param input_grad whether to compute dx.
   * @throws std::invalid_argument if forward() has not run, dy is not n x dim, dx is not n x dim (when
   * input_grad), or dy has a non-finite value.
   */
  void backward(ConstRowMatrixRef<Scalar> dy, RowMatrixRef<Scalar> dx, bool input_grad) override {
    constexpr const char* where = "kshot::LayerNorm::backward()";
    check_forward(where);
    detail::check_shape(dy, n_, dim_, where, "dy");
    if (input_grad) detail::check_shape(dx, n_, dim_, where, "dx");
    detail::check_finite(dy, where, "dy");
    const Index n = n_, d = dim_;
    const Matrix xhat = ws_.matrix(kXhat, n, d);
    const Vector rstd = ws_.vector(kRstd, n);
    const Scalar inv_d = Scalar(1) / static_cast<Scalar>(d);
    const Index blocks = block_count(n);
    Matrix partial = ws_.matrix(kPartial, blocks, affine_ ? 2 * d : 0);
    for_row_blocks(n, 10, [&](Index r0, Index r1) {
      if (affine_) {
        auto sums = partial.row(r0 / row_block);
        sums.setZero();
        for (Index i = r0; i < r1; ++i) {
          sums.head(d) += dy.row(i).cwiseProduct(xhat.row(i));
          sums.tail(d) += dy.row(i);
        }
      }
      if (!input_grad) return;
      for (Index i = r0; i < r1; ++i) {
        if (affine_)
          input_row(gamma().cwiseProduct(dy.row(i)), xhat.row(i), rstd[i], inv_d, dx.row(i));
        else
          input_row(dy.row(i), xhat.row(i), rstd[i], inv_d, dx.row(i));
      }
    });
    if (affine_) add_partials(partial, grads_);
  }

  /**
   * @brief ry = gamma ∘ R{x̂} + v_gamma ∘ x̂ + v_beta, the directional derivative of y along (rx, v), with
   * R{x̂} = rstd (rx − mean(rx) − x̂ mean(x̂ ∘ rx)); keeps R{x̂} and R{rstd} for backward_r().
   * @param rx n x dim, the directional derivative of the last forward()'s x.
   * @param v the layer's slice [v_gamma, v_beta] of the direction (2 dim scalars; unused without affine).
   * @param ry n x dim, overwritten.
   * @throws std::invalid_argument if forward() has not run, rx or ry is not n x dim, v is null for an
   * affine layer, or rx has a non-finite value.
   */
  void forward_r(ConstRowMatrixRef<Scalar> rx, const Scalar* v, RowMatrixRef<Scalar> ry) override {
    constexpr const char* where = "kshot::LayerNorm::forward_r()";
    check_forward(where);
    detail::check_shape(rx, n_, dim_, where, "rx");
    detail::check_shape(ry, n_, dim_, where, "ry");
    KSHOT_CHECK(!affine_ || v != nullptr, where, "v is null but the layer has 2 * dim parameters");
    detail::check_finite(rx, where, "rx");
    const Index n = n_, d = dim_;
    const Matrix xhat = ws_.matrix(kXhat, n, d);
    const Vector rstd = ws_.vector(kRstd, n);
    Matrix rxhat = ws_.matrix(kRxhat, n, d);
    Vector rrstd = ws_.vector(kRrstd, n);
    const Scalar inv_d = Scalar(1) / static_cast<Scalar>(d);
    for_row_blocks(n, 10, [&](Index r0, Index r1) {
      for (Index i = r0; i < r1; ++i) {
        const Scalar mean_rx = rx.row(i).sum() * inv_d;
        const Scalar s = xhat.row(i).dot(rx.row(i)) * inv_d;
        rxhat.row(i) = rstd[i] * (rx.row(i).array() - mean_rx - xhat.row(i).array() * s).matrix();
        rrstd[i] = -rstd[i] * rstd[i] * s;
        if (affine_) {
          const ConstRowMap vg(v, d), vb(v + d, d);
          ry.row(i) = gamma().cwiseProduct(rxhat.row(i)) + vg.cwiseProduct(xhat.row(i)) + vb;
        } else {
          ry.row(i) = rxhat.row(i);
        }
      }
    });
    has_forward_r_ = true;
  }

  /**
   * @brief The R-operator of backward(): accumulates R{dL/dgamma} = Σ (rdy ∘ x̂ + dy ∘ R{x̂}) and R{dL/dbeta}
   * = Σ rdy into `rgrad`, and overwrites rdx = R{dx} when input_grad.
   * @param dy n x dim, as given to backward().
   * @param rdy n x dim, its directional derivative.
   * @param v the layer's slice of the direction, as given to forward_r() (unused without affine).
   * @param rgrad the layer's slice (2 dim scalars) of the Hessian-vector product (unused without affine).
   * @param rdx n x dim, overwritten when input_grad.
   * @param input_grad whether to compute rdx.
   * @throws std::invalid_argument if forward_r() has not run since the last forward(), a matrix is not
   * n x dim, v or rgrad is null for an affine layer, or dy or rdy has a non-finite value.
   */
  void backward_r(ConstRowMatrixRef<Scalar> dy, ConstRowMatrixRef<Scalar> rdy, const Scalar* v, Scalar* rgrad,
                  RowMatrixRef<Scalar> rdx, bool input_grad) override {
    constexpr const char* where = "kshot::LayerNorm::backward_r()";
    check_forward(where);
    KSHOT_CHECK(has_forward_r_, where, "forward_r() must run after forward() and before backward_r()");
    detail::check_shape(dy, n_, dim_, where, "dy");
    detail::check_shape(rdy, n_, dim_, where, "rdy");
    if (input_grad) detail::check_shape(rdx, n_, dim_, where, "rdx");
    KSHOT_CHECK(!affine_ || v != nullptr, where, "v is null but the layer has 2 * dim parameters");
    KSHOT_CHECK(!affine_ || rgrad != nullptr, where, "rgrad is null but the layer has 2 * dim parameters");
    detail::check_finite(dy, where, "dy");
    detail::check_finite(rdy, where, "rdy");
    const Index n = n_, d = dim_;
    const Matrix xhat = ws_.matrix(kXhat, n, d);
    const Vector rstd = ws_.vector(kRstd, n);
    const Matrix rxhat = ws_.matrix(kRxhat, n, d);
    const Vector rrstd = ws_.vector(kRrstd, n);
    const Scalar inv_d = Scalar(1) / static_cast<Scalar>(d);
    const Index blocks = block_count(n);
    Matrix partial = ws_.matrix(kPartial, blocks, affine_ ? 2 * d : 0);
    for_row_blocks(n, 24, [&](Index r0, Index r1) {
      if (affine_) {
        auto sums = partial.row(r0 / row_block);
        sums.setZero();
        for (Index i = r0; i < r1; ++i) {
          sums.head(d) += rdy.row(i).cwiseProduct(xhat.row(i)) + dy.row(i).cwiseProduct(rxhat.row(i));
          sums.tail(d) += rdy.row(i);
        }
      }
      if (!input_grad) return;
      for (Index i = r0; i < r1; ++i) {
        if (affine_) {
          const ConstRowMap vg(v, d);
          r_input_row(gamma().cwiseProduct(dy.row(i)),
                      vg.cwiseProduct(dy.row(i)) + gamma().cwiseProduct(rdy.row(i)), i, inv_d, xhat, rstd, rxhat,
                      rrstd, rdx.row(i));
        } else {
          r_input_row(dy.row(i), rdy.row(i), i, inv_d, xhat, rstd, rxhat, rrstd, rdx.row(i));
        }
      }
    });
    if (affine_) add_partials(partial, rgrad);
  }

  /// {dim, eps, affine ? 1 : 0}.
  std::vector<double> config() const override {
    return {static_cast<double>(dim_), eps_, affine_ ? 1.0 : 0.0};
  }

  /// A new LayerNorm with the same configuration, unbound and without state.
  std::unique_ptr<Layer<Scalar>> clone() const override {
    return std::make_unique<LayerNorm>(dim_, eps_, affine_);
  }

 private:
  using Matrix = typename detail::Workspace<Scalar>::Matrix;
  using Vector = typename detail::Workspace<Scalar>::Vector;
  using ConstRowMap = Eigen::Map<const RowVectorX<Scalar>>;
  enum : std::size_t { kXhat = 0, kRstd, kRxhat, kRrstd, kPartial };

  /// Rows per block of the parallel loops and of the parameter-gradient partial sums.
  static constexpr Index row_block = 64;

  static Index block_count(Index n) noexcept { return (n + row_block - 1) / row_block; }

  /// body(r0, r1) over blocks [r0, r1) of at most 64 rows, in parallel when the work (rows x dim x
  /// ops_per_entry) is worth it. Each block writes only its own rows and its own partial-sum row.
  template <class Body>
  void for_row_blocks(Index n, double ops_per_entry, Body&& body) const {
    const Index blocks = block_count(n);
    const double work = static_cast<double>(n) * static_cast<double>(dim_) * ops_per_entry;
    detail::parallel_for(blocks, detail::worth_parallel(blocks, work), [&](Index b) {
      const Index r0 = b * row_block;
      body(r0, std::min(n, r0 + row_block));
    });
  }

  ConstRowMap gamma() const noexcept { return ConstRowMap(params_, dim_); }
  ConstRowMap beta() const noexcept { return ConstRowMap(params_ + dim_, dim_); }

  void check_bound(const char* where) const {
    KSHOT_CHECK(params_ != nullptr && grads_ != nullptr, where,
                detail::cat("the layer has ", 2 * dim_, " parameters but bind() has not been called"));
  }

  void check_forward(const char* where) const {
    KSHOT_CHECK(has_forward_, where, "forward() must run first");
    if (affine_) check_bound(where);
  }

  /// xhat = (x − mean) / sqrt(var + eps) for one row; returns rstd.
  template <class Row, class Out>
  Scalar normalize_row(const Row& x, Out&& xhat) const {
    const Scalar d = static_cast<Scalar>(dim_);
    const auto eps = static_cast<Scalar>(eps_);
    const Scalar mean = x.sum() / d;
    const Scalar var = (x.array() - mean).square().sum() / d;
    if (KSHOT_UNLIKELY(!std::isfinite(mean) || !std::isfinite(var))) return normalize_row_scaled(x, xhat);
    const Scalar rstd = Scalar(1) / std::sqrt(var + eps);
    xhat = ((x.array() - mean) * rstd).matrix();
    return rstd;
  }

  /// The same for a row whose sum or variance overflows: z = x · 2^-e with max |z| < 1, normalised with
  /// eps · 2^-2e (floored at the smallest normal Scalar), then rstd = rstd_z · 2^-e.
  template <class Row, class Out>
  KSHOT_NOINLINE_COLD Scalar normalize_row_scaled(const Row& x, Out&& xhat) const {
    int e = 0;
    (void)std::frexp(x.cwiseAbs().maxCoeff(), &e);
    const Scalar scale = std::ldexp(Scalar(1), -e);
    const Scalar d = static_cast<Scalar>(dim_);
    const Scalar mean = (x.array() * scale).sum() / d;
    const Scalar var = (x.array() * scale - mean).square().sum() / d;
    const Scalar eps = std::max(std::ldexp(static_cast<Scalar>(eps_), -2 * e), std::numeric_limits<Scalar>::min());
    const Scalar rstd = Scalar(1) / std::sqrt(var + eps);
    xhat = ((x.array() * scale - mean) * rstd).matrix();
    return std::ldexp(rstd, -e);
  }

  /// dx = rstd (g − mean(g) − x̂ mean(g ∘ x̂)) for one row.
  template <class G, class Xhat, class Out>
  static void input_row(const G& g, const Xhat& xhat, Scalar rstd, Scalar inv_d, Out&& dx) {
    const Scalar mean_g = g.sum() * inv_d;
    const Scalar mean_gx = g.dot(xhat) * inv_d;
    dx = (rstd * (g.array() - mean_g - xhat.array() * mean_gx)).matrix();
  }

  /// R{dx} = R{rstd} a + rstd (R{g} − mean(R{g}) − x̂ (mean(x̂ ∘ R{g}) + mean(R{x̂} ∘ g)) − R{x̂} mean(x̂ ∘ g))
  /// with a = g − mean(g) − x̂ mean(g ∘ x̂), for row i.
  template <class G, class RG, class Out>
  static void r_input_row(const G& g, const RG& rg, Index i, Scalar inv_d, const Matrix& xhat, const Vector& rstd,
                          const Matrix& rxhat, const Vector& rrstd, Out&& rdx) {
    const auto xh = xhat.row(i);
    const auto rxh = rxhat.row(i);
    const Scalar mean_g = g.sum() * inv_d;
    const Scalar mean_gx = g.dot(xh) * inv_d;
    const Scalar mean_rg = rg.sum() * inv_d;
    const Scalar mean_rgx = rg.dot(xh) * inv_d;
    const Scalar mean_grx = g.dot(rxh) * inv_d;
    rdx = (rrstd[i] * (g.array() - mean_g - xh.array() * mean_gx) +
           rstd[i] * (rg.array() - mean_rg - xh.array() * (mean_rgx + mean_grx) - rxh.array() * mean_gx))
              .matrix();
  }

  /// out[j] += Σ_b partial(b, j), blocks in order (the same bits for any thread count).
  void add_partials(const Matrix& partial, Scalar* out) const {
    Eigen::Map<RowVectorX<Scalar>> target(out, 2 * dim_);
    for (Index b = 0; b < partial.rows(); ++b) target += partial.row(b);
  }

  Index dim_;
  double eps_;
  bool affine_;
  Scalar* params_ = nullptr;
  Scalar* grads_ = nullptr;
  Index n_ = 0;
  bool has_forward_ = false;
  bool has_forward_r_ = false;
  detail::Workspace<Scalar> ws_;
};

}  // namespace kshot

#endif  // KSHOT_NN_LAYER_NORM_HPP
