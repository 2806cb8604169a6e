/**
 * @file kshot/nn/linear.hpp
 * @brief Fully connected layer y = x W^T + b (torch.nn.Linear), with backward and the R-operator, and the
 * fixed-row-block products every nn layer uses so that results do not depend on the thread count.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_NN_LINEAR_HPP
#define KSHOT_NN_LINEAR_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/gemm.hpp"
#include "kshot/core/random.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"
#include "kshot/nn/init.hpp"
#include "kshot/nn/layer.hpp"

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

namespace kshot {
namespace detail {

/// Rows of one block of the nn layers' products and elementwise passes (as LossDistanceMatrix::product_block).
inline constexpr Index nn_row_block = 64;

/**
 * @brief Runs body(r0, r) over consecutive blocks of nn_row_block rows of [0, rows), in parallel when the
 * `work` (scalar operations in all) is worth a region.
 *
 * Every block is the same computation whatever the thread count, and an Eigen product inside runs
 * single-threaded (parallel_for sets one thread per task), so products computed block by block give the same
 * bits for any number of threads: Eigen's multithreaded GEMM blocks the inner dimension differently.
 */
template <class Body>
void for_row_blocks(Index rows, double work, Body&& body) {
  const Index blocks = (rows + nn_row_block - 1) / nn_row_block;
  parallel_for(blocks, worth_parallel(blocks, work), [&](Index b) {
    const Index r0 = b * nn_row_block;
    body(r0, std::min(nn_row_block, rows - r0));
  });
}

/// True when every entry of `m` is exactly zero (a zero direction lets the R-operator skip a product).
template <class Derived>
bool all_zero(const Eigen::MatrixBase<Derived>& m) {
  for (Index i = 0; i < m.rows(); ++i)
    if (!(m.row(i).array() == typename Derived::Scalar(0)).all()) return false;
  return true;
}

/// Throws unless a layer is bound to parameters.
inline void check_bound(const void* parameters, const char* where) {
  KSHOT_CHECK(parameters != nullptr, where,
              "the layer is not bound to parameters: add it to a Sequential model or call bind() first");
}

}  // namespace detail

/**
 * @brief Fully connected layer: @f$ y = x W^\top + b @f$, torch.nn.Linear(in, out, bias).
 *
 * The weight W is out x in and row-major (torch's `weight`), the bias b has `out` entries. In the model's
 * flat parameter vector the layer's slice is `[W row by row, b]` (out * in + out scalars, out * in without
 * bias), the layout of `torch.cat([linear.weight.flatten(), linear.bias])`.
 *
 * Derivatives, for a batch x (n x in), upstream gradient dy (n x out), parameter direction V = (V_W, v_b) and
 * input direction rx:
 *  - backward: dW += dy^T x, db += colsum(dy), dx = dy W (skipped when input_grad is false);
 *  - forward_r: ry = rx W^T + x V_W^T + v_b;
 *  - backward_r: R{dW} += rdy^T x + dy^T rx, R{db} += colsum(rdy), rdx = rdy W + dy V_W.
 *
 * Products run in fixed blocks of 64 rows of their destination, each a single-threaded Eigen GEMM, in
 * parallel over the blocks when the work is large: the bits never depend on the number of OpenMP threads.
 * A zero rx (the first layer of a model) skips its products in forward_r and backward_r.
 *
 * @tparam Scalar float or double.
 * @note Keeps a view of the x given to forward() (and of the rx given to forward_r()): both must stay alive
 * and unchanged until backward() (backward_r()). Outputs (y, dx, ry, rdx) must not overlap the inputs.
 * No allocation: the layer has no buffers of its own.
 * Not thread-safe: one layer per thread.
 */
template <class Scalar = float>
class Linear final : public Layer<Scalar> {
  static_assert(is_supported_scalar_v<Scalar>, "kshot::Linear<Scalar>: Scalar must be float or double");

 public:
  /// The weight as a writable out x in view of the parameter slice.
  using WeightMap = Eigen::Map<RowMatrixX<Scalar>>;
  /// The weight as a read-only view.
  using ConstWeightMap = Eigen::Map<const RowMatrixX<Scalar>>;
  /// The bias as a writable view.
  using BiasMap = Eigen::Map<VectorX<Scalar>>;
  /// The bias as a read-only view.
  using ConstBiasMap = Eigen::Map<const VectorX<Scalar>>;

  /**
   * @brief A linear layer from `in` to `out` features.
   * @param in input features (columns of x), at least 1.
   * @param out output features, at least 1.
   * @param bias whether the layer adds a bias (torch's `bias=True`).
   * @param init initialisation scheme used by initialize().
   * @throws std::invalid_argument if in < 1, out < 1 or init is not an Init enumerator.
   */
  Linear(Index in, Index out, bool bias = true, Init init = Init::pytorch_default)
      : in_(in), out_(out), has_bias_(bias), init_(init) {
    constexpr const char* where = "kshot::Linear::Linear()";
    KSHOT_CHECK(in >= 1, where, detail::cat("in must be at least 1, got ", in));
    KSHOT_CHECK(out >= 1, where, detail::cat("out must be at least 1, got ", out));
    KSHOT_CHECK(detail::is_init_code(static_cast<int>(init)), where,
                detail::cat("init has the unknown code ", static_cast<int>(init)));
  }

  /// "Linear".
  std::string type_name() const override { return "Linear"; }
  /// in.
  Index input_dim() const noexcept override { return in_; }
  /// out.
  Index output_dim() const noexcept override { return out_; }
  /// out * in, plus out with a bias.
  Index num_parameters() const noexcept override { return out_ * in_ + (has_bias_ ? out_ : 0); }
  /// Whether the layer has a bias.
  bool has_bias() const noexcept { return has_bias_; }
  /// The initialisation scheme.
  Init init() const noexcept { return init_; }

  /// Points the layer at its slices [W, b] of the model's parameter and gradient vectors.
  void bind(Scalar* parameters, Scalar* gradients) noexcept override {
    params_ = parameters;
    grads_ = gradients;
  }

  /**
   * @brief Draws W (row by row) then b from `rng` by the layer's Init scheme.
   * @throws std::invalid_argument if the layer is not bound.
   */
  void initialize(RandomStream& rng) override {
    detail::check_bound(params_, "kshot::Linear::initialize()");
    initialize_weight<Scalar>(weight(), init_, rng);
    if (has_bias_) initialize_bias<Scalar>(bias(), in_, init_, rng);
  }

  /// The weight (out x in) in the bound parameter slice. @throws std::invalid_argument if not bound.
  WeightMap weight() {
    detail::check_bound(params_, "kshot::Linear::weight()");
    return WeightMap(params_, out_, in_);
  }
  /// The weight, read-only. @throws std::invalid_argument if not bound.
  ConstWeightMap weight() const {
    detail::check_bound(params_, "kshot::Linear::weight()");
    return ConstWeightMap(params_, out_, in_);
  }
  /// The bias (out entries; 0 without bias). @throws std::invalid_argument if not bound.
  BiasMap bias() {
    detail::check_bound(params_, "kshot::Linear::bias()");
    return BiasMap(params_ + out_ * in_, has_bias_ ? out_ : 0);
  }
  /// The bias, read-only. @throws std::invalid_argument if not bound.
  ConstBiasMap bias() const {
    detail::check_bound(params_, "kshot::Linear::bias()");
    return ConstBiasMap(params_ + out_ * in_, has_bias_ ? out_ : 0);
  }

  /**
   * @brief y = x W^T + b.
   * @param x n x in input; the layer keeps a view of it until the next forward().
   * @param y n x out output (overwritten).
   * @param training unused (a linear layer behaves the same in both modes).
   * @throws std::invalid_argument if the layer is not bound or a shape is wrong.
   */
  void forward(ConstRowMatrixRef<Scalar> x, RowMatrixRef<Scalar> y, bool training) override {
    (void)training;
    constexpr const char* where = "kshot::Linear::forward()";
    detail::check_bound(params_, where);
    KSHOT_CHECK(x.cols() == in_, where, detail::cat("x has ", x.cols(), " columns but the layer has in = ", in_));
    detail::check_shape(y, x.rows(), out_, where, "y");
    x_data_ = x.data();
    x_rows_ = x.rows();
    x_stride_ = x.outerStride();
    forwarded_ = true;
    r_ready_ = false;
    const ConstWeightMap W(params_, out_, in_);
    const auto n = x.rows();
    detail::for_row_blocks(n, work(n, in_, out_), [&](Index r0, Index r) {
      auto yb = y.middleRows(r0, r);
      if (has_bias_) {
        yb.rowwise() = bias_row(params_);
        detail::gemm_add(yb, x.middleRows(r0, r), W.transpose());
      } else {
        detail::gemm_assign(yb, x.middleRows(r0, r), W.transpose());
      }
    });
  }

  /**
   * @brief dW += dy^T x, db += colsum(dy); dx = dy W when input_grad.
   * @param dy n x out upstream gradient, n the rows of the last forward().
   * @param dx n x in, overwritten with dL/dx when input_grad; untouched (and unchecked) otherwise.
   * @param input_grad whether to compute dx.
   * @throws std::invalid_argument if forward() was not called or a shape is wrong.
   */
  void backward(ConstRowMatrixRef<Scalar> dy, RowMatrixRef<Scalar> dx, bool input_grad) override {
    constexpr const char* where = "kshot::Linear::backward()";
    check_after_forward(where);
    detail::check_shape(dy, x_rows_, out_, where, "dy");
    if (input_grad) detail::check_shape(dx, x_rows_, in_, where, "dx");
    const auto x = input();
    parameter_products(grads_, dy, x, nullptr, x);
    if (input_grad) input_products(dx, dy, params_, nullptr, nullptr);
  }

  /**
   * @brief ry = rx W^T + x V_W^T + v_b, the directional derivative of y along (rx, v).
   * @param rx n x in input direction; the layer keeps a view of it until backward_r().
   * @param v the layer's slice of the parameter direction, laid out as the parameters.
   * @param ry n x out output (overwritten).
   * @throws std::invalid_argument if forward() was not called or a shape is wrong.
   */
  void forward_r(ConstRowMatrixRef<Scalar> rx, const Scalar* v, RowMatrixRef<Scalar> ry) override {
    constexpr const char* where = "kshot::Linear::forward_r()";
    check_after_forward(where);
    KSHOT_CHECK(v != nullptr, where, "v is null");
    detail::check_shape(rx, x_rows_, in_, where, "rx");
    detail::check_shape(ry, x_rows_, out_, where, "ry");
    rx_data_ = rx.data();
    rx_stride_ = rx.outerStride();
    rx_zero_ = detail::all_zero(rx);
    r_ready_ = true;
    const auto x = input();
    const ConstWeightMap W(params_, out_, in_), VW(v, out_, in_);
    detail::for_row_blocks(x_rows_, work(x_rows_, in_, out_) * (rx_zero_ ? 1 : 2), [&](Index r0, Index r) {
      auto yb = ry.middleRows(r0, r);
      if (has_bias_)
        yb.rowwise() = bias_row(v);
      else
        yb.setZero();
      detail::gemm_add(yb, x.middleRows(r0, r), VW.transpose());
      if (!rx_zero_) detail::gemm_add(yb, rx.middleRows(r0, r), W.transpose());
    });
  }

  /**
   * @brief R{dW} += rdy^T x + dy^T rx, R{db} += colsum(rdy); rdx = rdy W + dy V_W when input_grad.
   * @param dy the dy of the last backward() (n x out).
   * @param rdy its directional derivative (n x out).
   * @param v the layer's slice of the parameter direction (as given to forward_r()).
   * @param rgrad the layer's slice of the Hessian-vector product (accumulated).
   * @param rdx n x in, overwritten with R{dL/dx} when input_grad.
   * @param input_grad whether to compute rdx.
   * @throws std::invalid_argument if forward_r() was not called after the last forward(), or a shape is wrong.
   */
  void backward_r(ConstRowMatrixRef<Scalar> dy, ConstRowMatrixRef<Scalar> rdy, const Scalar* v, Scalar* rgrad,
                  RowMatrixRef<Scalar> rdx, bool input_grad) override {
    constexpr const char* where = "kshot::Linear::backward_r()";
    check_after_forward(where);
    KSHOT_CHECK(r_ready_, where, "call forward_r() after forward() first");
    KSHOT_CHECK(v != nullptr && rgrad != nullptr, where, "v and rgrad must not be null");
    detail::check_shape(dy, x_rows_, out_, where, "dy");
    detail::check_shape(rdy, x_rows_, out_, where, "rdy");
    if (input_grad) detail::check_shape(rdx, x_rows_, in_, where, "rdx");
    const auto x = input();
    const LayerInputMap<Scalar> rx(rx_data_, x_rows_, in_, Eigen::OuterStride<>(rx_stride_));
    if (rx_zero_)
      parameter_products(rgrad, rdy, x, nullptr, x);
    else
      parameter_products(rgrad, rdy, x, &dy, rx);
    if (input_grad) input_products(rdx, rdy, params_, &dy, v);
  }

  /// {in, out, bias ? 1 : 0, init code}.
  std::vector<double> config() const override {
    return {static_cast<double>(in_), static_cast<double>(out_), has_bias_ ? 1.0 : 0.0,
            static_cast<double>(static_cast<int>(init_))};
  }

  /// An unbound copy with the same configuration.
  std::unique_ptr<Layer<Scalar>> clone() const override {
    return std::make_unique<Linear>(in_, out_, has_bias_, init_);
  }

 private:
  static double work(Index n, Index a, Index b) noexcept {
    return static_cast<double>(n) * static_cast<double>(a) * static_cast<double>(b);
  }

  Eigen::Map<const RowVectorX<Scalar>> bias_row(const Scalar* slice) const {
    return Eigen::Map<const RowVectorX<Scalar>>(slice + out_ * in_, out_);
  }

  LayerInputMap<Scalar> input() const {
    return LayerInputMap<Scalar>(x_data_, x_rows_, in_, Eigen::OuterStride<>(x_stride_));
  }

  void check_after_forward(const char* where) const {
    detail::check_bound(params_, where);
    KSHOT_CHECK(forwarded_, where, "call forward() first");
  }

  /**
   * g_W += a^T x (+ b^T z), g_b += colsum(a): the parameter half of backward (a = dy) and of backward_r
   * (a = rdy, b = dy, z = rx). Blocks of 64 rows of g_W; the bias sum runs serially over rows.
   */
  template <class A, class X, class Z>
  void parameter_products(Scalar* g, const A& a, const X& x, const ConstRowMatrixRef<Scalar>* b, const Z& z) const {
    Eigen::Map<RowMatrixX<Scalar>> gW(g, out_, in_);
    const Index n = x_rows_;
    detail::for_row_blocks(out_, work(n, in_, out_) * (b ? 2 : 1), [&](Index r0, Index r) {
      detail::gemm_add(gW.middleRows(r0, r), a.middleCols(r0, r).transpose(), x);
      if (b != nullptr) detail::gemm_add(gW.middleRows(r0, r), b->middleCols(r0, r).transpose(), z);
    });
    if (has_bias_) {
      Eigen::Map<RowVectorX<Scalar>> gb(g + out_ * in_, out_);
      for (Index i = 0; i < n; ++i) gb += a.row(i);
    }
  }

  /// dst = a W (+ b V_W): the input half of backward (a = dy) and of backward_r (a = rdy, b = dy, V = v).
  void input_products(RowMatrixRef<Scalar>& dst, const ConstRowMatrixRef<Scalar>& a, const Scalar* w,
                      const ConstRowMatrixRef<Scalar>* b, const Scalar* v) const {
    const ConstWeightMap W(w, out_, in_);
    detail::for_row_blocks(x_rows_, work(x_rows_, in_, out_) * (b ? 2 : 1), [&](Index r0, Index r) {
      auto db = dst.middleRows(r0, r);
      detail::gemm_assign(db, a.middleRows(r0, r), W);
      if (b != nullptr) detail::gemm_add(db, b->middleRows(r0, r), ConstWeightMap(v, out_, in_));
    });
  }

  Index in_, out_;
  bool has_bias_;
  Init init_;
  Scalar* params_ = nullptr;
  Scalar* grads_ = nullptr;
  const Scalar* x_data_ = nullptr;
  Index x_rows_ = 0, x_stride_ = 0;
  bool forwarded_ = false;
  const Scalar* rx_data_ = nullptr;
  Index rx_stride_ = 0;
  bool rx_zero_ = true, r_ready_ = false;
};

}  // namespace kshot

#endif  // KSHOT_NN_LINEAR_HPP
