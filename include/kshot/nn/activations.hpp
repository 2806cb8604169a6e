/**
 * @file kshot/nn/activations.hpp
 * @brief Elementwise activation layers (ReLU, exact GELU, Tanh) with backward and the R-operator, and the
 * Activation selector that models and residual blocks use.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_NN_ACTIVATIONS_HPP
#define KSHOT_NN_ACTIVATIONS_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"
#include "kshot/nn/layer.hpp"
#include "kshot/nn/linear.hpp"

#include <cmath>
#include <memory>
#include <string>
#include <vector>

namespace kshot {

/**
 * @brief Selects an activation function.
 *
 * The numeric value of each enumerator is its code in model files (kshot/nn/serialize.hpp): never renumber.
 */
enum class Activation : int {
  relu = 0,  ///< max(x, 0): torch.nn.ReLU
  gelu = 1,  ///< x Φ(x) with the exact erf form: torch.nn.GELU(approximate='none')
  tanh = 2   ///< tanh(x): torch.nn.Tanh
};

/// The enumerator's name, e.g. "gelu".
inline const char* to_string(Activation act) noexcept {
  switch (act) {
    case Activation::relu: return "relu";
    case Activation::gelu: return "gelu";
    case Activation::tanh: return "tanh";
  }
  return "unknown";
}

namespace detail {

/// The public names of a layer's calls, for error messages (literals: building them would allocate).
struct LayerCallNames {
  const char* forward;
  const char* backward;
  const char* forward_r;
  const char* backward_r;
};

/// True when `code` is the file code of an Activation enumerator.
inline bool is_activation_code(int code) noexcept { return code >= 0 && code <= 2; }

/**
 * @brief The bookkeeping shared by the elementwise activations: shapes, the kept views, row-block loops.
 *
 * A derived class supplies three row kernels over `dim` values, where `s` is the kept state of a row (the
 * input x, or the output y when keeps_output() is true):
 *  - value: y = f(x);
 *  - slope: out = f'(x) ∘ u (backward with u = dy, forward_r with u = rx);
 *  - curvature: out = f'(x) ∘ rdy + f''(x) ∘ dy ∘ rx (backward_r).
 */
template <class Scalar>
class ElementwiseLayer : public Layer<Scalar> {
  static_assert(is_supported_scalar_v<Scalar>, "kshot::ElementwiseLayer<Scalar>: Scalar must be float or double");

 public:
  /// dim.
  Index input_dim() const noexcept override { return dim_; }
  /// dim.
  Index output_dim() const noexcept override { return dim_; }
  /// {dim}.
  std::vector<double> config() const override { return {static_cast<double>(dim_)}; }

  /**
   * @brief y = f(x), row by row; keeps a view of x (or a copy of y, for Tanh).
   * @throws std::invalid_argument if x has not dim columns or y is not x.rows() x dim.
   */
  void forward(ConstRowMatrixRef<Scalar> x, RowMatrixRef<Scalar> y, bool training) override {
    (void)training;
    const char* where = names().forward;
    KSHOT_CHECK(x.cols() == dim_, where,
                cat("x has ", x.cols(), " columns but the layer has dim = ", dim_));
    check_shape(y, x.rows(), dim_, where, "y");
    rows_ = x.rows();
    forwarded_ = true;
    r_ready_ = false;
    for_rows([&](Index i) { value(x.row(i).data(), y.row(i).data()); }, cost());
    if (keeps_output()) {
      const auto needed = static_cast<std::size_t>(rows_ * dim_);
      if (output_.size() < needed) output_.resize(needed);
      Eigen::Map<RowMatrixX<Scalar>>(output_.data(), rows_, dim_) = y;
      state_ = output_.data();
      state_stride_ = dim_;
    } else {
      state_ = x.data();
      state_stride_ = x.outerStride();
    }
  }

  /**
   * @brief dx = f'(x) ∘ dy when input_grad (no parameters, so nothing else).
   * @throws std::invalid_argument if forward() has not run or a shape is wrong.
   */
  void backward(ConstRowMatrixRef<Scalar> dy, RowMatrixRef<Scalar> dx, bool input_grad) override {
    const char* where = names().backward;
    check_forwarded(where);
    check_shape(dy, rows_, dim_, where, "dy");
    if (!input_grad) return;
    check_shape(dx, rows_, dim_, where, "dx");
    for_rows([&](Index i) { slope(state(i), dy.row(i).data(), dx.row(i).data()); }, cost());
  }

  /**
   * @brief ry = f'(x) ∘ rx; keeps a view of rx for backward_r(). `v` is unused (no parameters).
   * @throws std::invalid_argument if forward() has not run or a shape is wrong.
   */
  void forward_r(ConstRowMatrixRef<Scalar> rx, const Scalar* v, RowMatrixRef<Scalar> ry) override {
    (void)v;
    const char* where = names().forward_r;
    check_forwarded(where);
    check_shape(rx, rows_, dim_, where, "rx");
    check_shape(ry, rows_, dim_, where, "ry");
    rx_ = rx.data();
    rx_stride_ = rx.outerStride();
    r_ready_ = true;
    for_rows([&](Index i) { slope(state(i), rx.row(i).data(), ry.row(i).data()); }, cost());
  }

  /**
   * @brief rdx = f'(x) ∘ rdy + f''(x) ∘ dy ∘ rx when input_grad; `v` and `rgrad` are unused.
   * @throws std::invalid_argument if forward_r() has not run after the last forward() or a shape is wrong.
   */
  void backward_r(ConstRowMatrixRef<Scalar> dy, ConstRowMatrixRef<Scalar> rdy, const Scalar* v, Scalar* rgrad,
                  RowMatrixRef<Scalar> rdx, bool input_grad) override {
    (void)v;
    (void)rgrad;
    const char* where = names().backward_r;
    check_forwarded(where);
    KSHOT_CHECK(r_ready_, where, "call forward_r() after forward() first");
    check_shape(dy, rows_, dim_, where, "dy");
    check_shape(rdy, rows_, dim_, where, "rdy");
    if (!input_grad) return;
    check_shape(rdx, rows_, dim_, where, "rdx");
    for_rows(
        [&](Index i) {
          curvature(state(i), dy.row(i).data(), rdy.row(i).data(), rx_ + i * rx_stride_, rdx.row(i).data());
        },
        cost() + 1.0);
  }

 protected:
  using Array = Eigen::Array<Scalar, Eigen::Dynamic, 1>;
  using ArrayMap = Eigen::Map<Array>;
  using ConstArrayMap = Eigen::Map<const Array>;

  ElementwiseLayer(Index dim, const char* where) : dim_(dim) {
    KSHOT_CHECK(dim >= 1, where, cat("dim must be at least 1, got ", dim));
  }
  ElementwiseLayer(const ElementwiseLayer&) = default;

  /// y = f(x) on one row.
  virtual void value(const Scalar* x, Scalar* y) const = 0;
  /// out = f'(x) ∘ u on one row; s is the row's kept state.
  virtual void slope(const Scalar* s, const Scalar* u, Scalar* out) const = 0;
  /// out = f'(x) ∘ rdy + f''(x) ∘ dy ∘ rx on one row.
  virtual void curvature(const Scalar* s, const Scalar* dy, const Scalar* rdy, const Scalar* rx, Scalar* out) const = 0;
  /// "kshot::<Type>::forward()" and the other call names.
  virtual const LayerCallNames& names() const noexcept = 0;
  /// True when the kept state is the output y (Tanh) rather than the input x.
  virtual bool keeps_output() const noexcept { return false; }
  /// Rough cost of one element in scalar operations (for the parallel threshold).
  virtual double cost() const noexcept { return 1.0; }

  ConstArrayMap in(const Scalar* p) const { return ConstArrayMap(p, dim_); }
  ArrayMap out(Scalar* p) const { return ArrayMap(p, dim_); }

  Index dim_;

 private:
  const Scalar* state(Index i) const noexcept { return state_ + i * state_stride_; }

  void check_forwarded(const char* where) const { KSHOT_CHECK(forwarded_, where, "call forward() first"); }

  template <class Body>
  void for_rows(Body&& body, double per_element) const {
    const double work = static_cast<double>(rows_) * static_cast<double>(dim_) * per_element;
    for_row_blocks(rows_, work, [&](Index r0, Index r) {
      for (Index i = r0; i < r0 + r; ++i) body(i);
    });
  }

  Index rows_ = 0;
  bool forwarded_ = false, r_ready_ = false;
  const Scalar* state_ = nullptr;
  Index state_stride_ = 0;
  const Scalar* rx_ = nullptr;
  Index rx_stride_ = 0;
  std::vector<Scalar, Eigen::aligned_allocator<Scalar>> output_;  // Tanh's kept y: grows, never shrinks
};

}  // namespace detail

/**
 * @brief Rectified linear unit, y = max(x, 0): torch.nn.ReLU.
 *
 * f'(x) = 1 for x > 0 and 0 for x <= 0 (torch's sub-gradient 0 at exactly 0); f'' = 0, so the R-operator of
 * backward is rdx = f'(x) ∘ rdy.
 *
 * @tparam Scalar float or double.
 * @note Keeps a view of forward's x (and forward_r's rx) until backward (backward_r). No parameters, no
 * allocation. Bitwise identical for any thread count (elementwise).
 */
template <class Scalar = float>
class ReLU final : public detail::ElementwiseLayer<Scalar> {
 public:
  /// @throws std::invalid_argument if dim < 1.
  explicit ReLU(Index dim) : detail::ElementwiseLayer<Scalar>(dim, "kshot::ReLU::ReLU()") {}
  /// "ReLU".
  std::string type_name() const override { return "ReLU"; }
  /// An unbound copy.
  std::unique_ptr<Layer<Scalar>> clone() const override { return std::make_unique<ReLU>(this->dim_); }

 private:
  const detail::LayerCallNames& names() const noexcept override {
    static constexpr detail::LayerCallNames n{"kshot::ReLU::forward()", "kshot::ReLU::backward()",
                                              "kshot::ReLU::forward_r()", "kshot::ReLU::backward_r()"};
    return n;
  }
  void value(const Scalar* x, Scalar* y) const override { this->out(y) = this->in(x).max(Scalar(0)); }
  void slope(const Scalar* s, const Scalar* u, Scalar* o) const override {
    this->out(o) = (this->in(s) > Scalar(0)).select(this->in(u), Scalar(0));
  }
  void curvature(const Scalar* s, const Scalar* dy, const Scalar* rdy, const Scalar* rx, Scalar* o) const override {
    (void)dy;
    (void)rx;
    slope(s, rdy, o);
  }
};

/**
 * @brief Gaussian error linear unit with the exact erf form: y = x Φ(x), Φ(x) = (1 + erf(x / √2)) / 2,
 * torch.nn.GELU() (approximate='none').
 *
 * f'(x) = Φ(x) + x φ(x) and f''(x) = φ(x) (2 − x²), with φ the standard normal density; computed in Scalar
 * as torch's CPU kernel does.
 *
 * @tparam Scalar float or double.
 * @note Keeps a view of forward's x (and forward_r's rx). No parameters, no allocation. Thread-count
 * independent.
 */
template <class Scalar = float>
class GELU final : public detail::ElementwiseLayer<Scalar> {
 public:
  /// @throws std::invalid_argument if dim < 1.
  explicit GELU(Index dim) : detail::ElementwiseLayer<Scalar>(dim, "kshot::GELU::GELU()") {}
  /// "GELU".
  std::string type_name() const override { return "GELU"; }
  /// An unbound copy.
  std::unique_ptr<Layer<Scalar>> clone() const override { return std::make_unique<GELU>(this->dim_); }

 private:
  const detail::LayerCallNames& names() const noexcept override {
    static constexpr detail::LayerCallNames n{"kshot::GELU::forward()", "kshot::GELU::backward()",
                                              "kshot::GELU::forward_r()", "kshot::GELU::backward_r()"};
    return n;
  }
  static constexpr Scalar sqrt1_2 = Scalar(0.70710678118654752440084436210484903928);
  static constexpr Scalar inv_sqrt_2pi = Scalar(0.39894228040143267793994605993438186848);

  static Scalar cdf(Scalar x) noexcept { return Scalar(0.5) * (Scalar(1) + std::erf(x * sqrt1_2)); }
  static Scalar pdf(Scalar x) noexcept { return inv_sqrt_2pi * std::exp(Scalar(-0.5) * x * x); }

  double cost() const noexcept override { return 20.0; }
  void value(const Scalar* x, Scalar* y) const override {
    for (Index j = 0; j < this->dim_; ++j) y[j] = x[j] * Scalar(0.5) * (Scalar(1) + std::erf(x[j] * sqrt1_2));
  }
  void slope(const Scalar* s, const Scalar* u, Scalar* o) const override {
    for (Index j = 0; j < this->dim_; ++j) o[j] = u[j] * (cdf(s[j]) + s[j] * pdf(s[j]));
  }
  void curvature(const Scalar* s, const Scalar* dy, const Scalar* rdy, const Scalar* rx, Scalar* o) const override {
    for (Index j = 0; j < this->dim_; ++j) {
      const Scalar x = s[j], p = pdf(x);
      o[j] = rdy[j] * (cdf(x) + x * p) + dy[j] * rx[j] * p * (Scalar(2) - x * x);
    }
  }
};

/**
 * @brief Hyperbolic tangent, y = tanh(x): torch.nn.Tanh.
 *
 * f' = 1 − y², f'' = −2 y (1 − y²), from the kept output y.
 *
 * @tparam Scalar float or double.
 * @note Keeps a copy of y in a member buffer that grows and never shrinks (allocates only when n * dim
 * exceeds every earlier call), and a view of forward_r's rx. Thread-count independent.
 */
template <class Scalar = float>
class Tanh final : public detail::ElementwiseLayer<Scalar> {
 public:
  /// @throws std::invalid_argument if dim < 1.
  explicit Tanh(Index dim) : detail::ElementwiseLayer<Scalar>(dim, "kshot::Tanh::Tanh()") {}
  /// "Tanh".
  std::string type_name() const override { return "Tanh"; }
  /// An unbound copy.
  std::unique_ptr<Layer<Scalar>> clone() const override { return std::make_unique<Tanh>(this->dim_); }

 private:
  const detail::LayerCallNames& names() const noexcept override {
    static constexpr detail::LayerCallNames n{"kshot::Tanh::forward()", "kshot::Tanh::backward()",
                                              "kshot::Tanh::forward_r()", "kshot::Tanh::backward_r()"};
    return n;
  }
  bool keeps_output() const noexcept override { return true; }
  double cost() const noexcept override { return 10.0; }
  void value(const Scalar* x, Scalar* y) const override { this->out(y) = this->in(x).tanh(); }
  void slope(const Scalar* s, const Scalar* u, Scalar* o) const override {
    this->out(o) = (Scalar(1) - this->in(s).square()) * this->in(u);
  }
  void curvature(const Scalar* s, const Scalar* dy, const Scalar* rdy, const Scalar* rx, Scalar* o) const override {
    const auto y = this->in(s);
    this->out(o) = (Scalar(1) - y.square()) * (this->in(rdy) - Scalar(2) * y * this->in(dy) * this->in(rx));
  }
};

/**
 * @brief A new activation layer of width `dim`.
 * @param act which activation.
 * @param dim its width (input and output features).
 * @return ReLU, GELU or Tanh.
 * @throws std::invalid_argument if dim < 1 or act is not an Activation enumerator.
 */
template <class Scalar = float>
std::unique_ptr<Layer<Scalar>> make_activation(Activation act, Index dim) {
  switch (act) {
    case Activation::relu: return std::make_unique<ReLU<Scalar>>(dim);
    case Activation::gelu: return std::make_unique<GELU<Scalar>>(dim);
    case Activation::tanh: return std::make_unique<Tanh<Scalar>>(dim);
  }
  detail::throw_invalid_argument("kshot::make_activation()",
                                 detail::cat("act has the unknown code ", static_cast<int>(act)));
}

}  // namespace kshot

#endif  // KSHOT_NN_ACTIVATIONS_HPP
