/**
 * @file kshot/nn/layer.hpp
 * @brief The interface every trainable layer of kshot's small embedding models implements: forward,
 * backward, and Pearlmutter's R-operator (for exact Hessian-vector products), over parameters that live in
 * one flat vector owned by the model.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_NN_LAYER_HPP
#define KSHOT_NN_LAYER_HPP

#include "kshot/core/random.hpp"
#include "kshot/core/types.hpp"

#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

namespace kshot {

/**
 * @brief Read-only view of the input a layer saw in forward(), kept until the next forward().
 *
 * A Map with an outer stride, so that row blocks of larger matrices bind without a copy.
 */
template <class Scalar>
using LayerInputMap = Eigen::Map<const RowMatrixX<Scalar>, Eigen::Unaligned, Eigen::OuterStride<>>;

/**
 * @brief One layer of a Sequential model.
 *
 * A layer maps a batch `x` (n x input_dim(), one sample per row) to `y` (n x output_dim()). Its
 * parameters (if any) are not owned by the layer: the model keeps every parameter, and every parameter
 * gradient, in two flat vectors and hands each layer its slice through bind(). Optimizers and
 * meta-learners therefore see a model as one vector.
 *
 * Protocol (the model follows it; direct users of a layer must too):
 *  1. bind() before anything else, and again whenever the model's vectors move.
 *  2. forward(x, y, training) computes y and keeps what backward needs. `x` must stay alive and unchanged
 *     until the next forward(): layers keep a view of it, not a copy.
 *  3. backward(dy, dx, input_grad) **accumulates** dL/dparameters into the bound gradient slice (the model
 *     zeroes it) and, when `input_grad` is true, **overwrites** dx with dL/dx. With `input_grad` false, dx
 *     is not touched (the first layer of a model skips that product).
 *  4. forward_r() and backward_r() are Pearlmutter's R-operator (Pearlmutter 1994) for the last forward()
 *     and backward(): for a direction `v` in parameter space (same layout as the parameters) and the
 *     directional derivative `rx` of the input, forward_r gives `ry`, the directional derivative of y;
 *     backward_r, given dy and its directional derivative `rdy`, accumulates the directional derivative
 *     of dL/dparameters (a slice of the Hessian-vector product H v) and overwrites `rdx` when asked.
 *     forward_r() must come after forward() and before backward_r(), and `rx` must stay alive and unchanged
 *     until backward_r() returns: layers keep a view of it (backward_r() is not given rx again).
 *
 * Every output is written by the layer, never resized: shapes are checked by the model.
 *
 * @tparam Scalar float or double.
 * @note Not thread-safe: one layer (one model) per thread. Results do not depend on the number of OpenMP
 * threads (products run in fixed row blocks).
 */
template <class Scalar>
class Layer {
  static_assert(is_supported_scalar_v<Scalar>, "kshot::Layer<Scalar>: Scalar must be float or double");

 public:
  virtual ~Layer() = default;

  /// The layer's type name as saved in model files, e.g. "Linear".
  virtual std::string type_name() const = 0;

  /// Number of input features (columns of x).
  virtual Index input_dim() const noexcept = 0;

  /// Number of output features (columns of y).
  virtual Index output_dim() const noexcept = 0;

  /// Number of scalars of the layer's slice of the model's parameter vector (0 for activations).
  virtual Index num_parameters() const noexcept { return 0; }

  /// Points the layer at its parameter and gradient slices (each num_parameters() long).
  virtual void bind(Scalar* parameters, Scalar* gradients) noexcept {
    (void)parameters;
    (void)gradients;
  }

  /// Draws the layer's initial parameters from `rng` (its configured scheme: Xavier, Kaiming, ones ...).
  virtual void initialize(RandomStream& rng) { (void)rng; }

  /// y = f(x); keeps a view of x and whatever backward needs. `training` switches Dropout on.
  virtual void forward(ConstRowMatrixRef<Scalar> x, RowMatrixRef<Scalar> y, bool training) = 0;

  /// Accumulates dL/dparameters; overwrites dx = dL/dx when input_grad is true.
  virtual void backward(ConstRowMatrixRef<Scalar> dy, RowMatrixRef<Scalar> dx, bool input_grad) = 0;

  /// ry = directional derivative of y along (rx, v); `v` points at the layer's slice of the direction.
  virtual void forward_r(ConstRowMatrixRef<Scalar> rx, const Scalar* v, RowMatrixRef<Scalar> ry) = 0;

  /**
   * @brief R-operator of backward(): accumulates R{dL/dparameters} into `rgrad` (the layer's slice of the
   * Hessian-vector product) and overwrites rdx = R{dL/dx} when input_grad is true.
   */
  virtual void backward_r(ConstRowMatrixRef<Scalar> dy, ConstRowMatrixRef<Scalar> rdy, const Scalar* v,
                          Scalar* rgrad, RowMatrixRef<Scalar> rdx, bool input_grad) = 0;

  /// The layer's hyperparameters (dimensions, options) as numbers, for model files; not its parameters.
  virtual std::vector<double> config() const = 0;

  /// A deep copy (unbound: the copy must be bound before use).
  virtual std::unique_ptr<Layer> clone() const = 0;
};

}  // namespace kshot

#endif  // KSHOT_NN_LAYER_HPP
