/**
 * @file kshot/nn/residual.hpp
 * @brief Residual MLP block y = x + Linear2(act(Linear1(x))), with backward and the R-operator.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_NN_RESIDUAL_HPP
#define KSHOT_NN_RESIDUAL_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/random.hpp"
#include "kshot/core/types.hpp"
#include "kshot/core/workspace.hpp"
#include "kshot/nn/activations.hpp"
#include "kshot/nn/init.hpp"
#include "kshot/nn/layer.hpp"
#include "kshot/nn/linear.hpp"

#include <memory>
#include <string>
#include <vector>

namespace kshot {

/**
 * @brief Residual block: @f$ y = x + W_2\,\mathrm{act}(W_1 x + b_1) + b_2 @f$ (row-wise), in torch
 * `x + fc2(act(fc1(x)))` with fc1 = Linear(dim, hidden), fc2 = Linear(hidden, dim).
 *
 * Parameters, in the block's slice: `[W1 (hidden x dim), b1 (hidden), W2 (dim x hidden), b2 (dim)]`, each
 * Linear's own layout. initialize() draws fc1 then fc2 from the same stream with the block's Init scheme.
 *
 * backward: dy flows through fc2, act and fc1, and dx = (that) + dy. The R-operator composes the parts'
 * R-operators the same way (ry = R{fc2(act(fc1))} + rx, rdx = ... + rdy).
 *
 * @tparam Scalar float or double.
 * @note Keeps a view of forward's x and forward_r's rx. Intermediate values (n x hidden, four matrices for
 * forward/backward and four more for the R-operator) live in a workspace that grows and never shrinks: after
 * the first call with the largest batch, nothing allocates. Products in fixed row blocks (Linear), so results
 * do not depend on the thread count. Not thread-safe.
 */
template <class Scalar = float>
class ResidualBlock final : public Layer<Scalar> {
  static_assert(is_supported_scalar_v<Scalar>, "kshot::ResidualBlock<Scalar>: Scalar must be float or double");

 public:
  /**
   * @param dim input and output features, at least 1.
   * @param hidden width of the inner layer, at least 1.
   * @param act the inner activation.
   * @param init initialisation scheme of both linear layers.
   * @throws std::invalid_argument if dim < 1, hidden < 1, or act / init is not an enumerator.
   */
  ResidualBlock(Index dim, Index hidden, Activation act = Activation::relu, Init init = Init::pytorch_default)
      : dim_(dim), hidden_(hidden), act_kind_(act), init_(init), fc1_(checked(dim, hidden, act, init), hidden, true, init),
        act_(make_activation<Scalar>(act, hidden)), fc2_(hidden, dim, true, init) {}

  /// An unbound block with the same configuration (as clone()); parameters live in the model, not here.
  ResidualBlock(const ResidualBlock& other)
      : ResidualBlock(other.dim_, other.hidden_, other.act_kind_, other.init_) {}
  /// Not assignable (a block's configuration is fixed at construction).
  ResidualBlock& operator=(const ResidualBlock&) = delete;

  /// "ResidualBlock".
  std::string type_name() const override { return "ResidualBlock"; }
  /// dim.
  Index input_dim() const noexcept override { return dim_; }
  /// dim.
  Index output_dim() const noexcept override { return dim_; }
  /// 2 dim hidden + hidden + dim.
  Index num_parameters() const noexcept override { return fc1_.num_parameters() + fc2_.num_parameters(); }
  /// The inner width.
  Index hidden_dim() const noexcept { return hidden_; }
  /// The inner activation.
  Activation activation() const noexcept { return act_kind_; }
  /// The initialisation scheme.
  Init init() const noexcept { return init_; }
  /// The first linear layer (dim -> hidden); its weight() and bias() view the block's slice.
  const Linear<Scalar>& fc1() const noexcept { return fc1_; }
  /// The second linear layer (hidden -> dim).
  const Linear<Scalar>& fc2() const noexcept { return fc2_; }

  /// Binds fc1 to the front of the slice and fc2 after it.
  void bind(Scalar* parameters, Scalar* gradients) noexcept override {
    const Index n1 = fc1_.num_parameters();
    fc1_.bind(parameters, gradients);
    fc2_.bind(parameters ? parameters + n1 : nullptr, gradients ? gradients + n1 : nullptr);
  }

  /// fc1 then fc2 from `rng`. @throws std::invalid_argument if the block is not bound.
  void initialize(RandomStream& rng) override {
    fc1_.initialize(rng);
    fc2_.initialize(rng);
  }

  /**
   * @brief y = x + fc2(act(fc1(x))).
   * @throws std::invalid_argument if the block is not bound or a shape is wrong.
   */
  void forward(ConstRowMatrixRef<Scalar> x, RowMatrixRef<Scalar> y, bool training) override {
    constexpr const char* where = "kshot::ResidualBlock::forward()";
    KSHOT_CHECK(x.cols() == dim_, where, detail::cat("x has ", x.cols(), " columns but the block has dim = ", dim_));
    detail::check_shape(y, x.rows(), dim_, where, "y");
    const Index n = x.rows();
    rows_ = -1;  // no valid state until this call completes
    backward_done_ = false;
    auto h = ws_.matrix(kH, n, hidden_);
    auto a = ws_.matrix(kA, n, hidden_);
    fc1_.forward(x, h, training);
    act_->forward(h, a, training);
    fc2_.forward(a, y, training);
    y += x;
    rows_ = n;
  }

  /// Accumulates the parameter gradients; dx = dL/dx when input_grad.
  void backward(ConstRowMatrixRef<Scalar> dy, RowMatrixRef<Scalar> dx, bool input_grad) override {
    constexpr const char* where = "kshot::ResidualBlock::backward()";
    KSHOT_CHECK(rows_ >= 0, where, "call forward() first");
    detail::check_shape(dy, rows_, dim_, where, "dy");
    if (input_grad) detail::check_shape(dx, rows_, dim_, where, "dx");
    auto da = ws_.matrix(kDA, rows_, hidden_);
    auto dh = ws_.matrix(kDH, rows_, hidden_);
    fc2_.backward(dy, da, true);
    act_->backward(da, dh, true);
    fc1_.backward(dh, dx, input_grad);
    if (input_grad) dx += dy;
    backward_done_ = true;
  }

  /// ry = R{fc2(act(fc1(x)))} + rx.
  void forward_r(ConstRowMatrixRef<Scalar> rx, const Scalar* v, RowMatrixRef<Scalar> ry) override {
    constexpr const char* where = "kshot::ResidualBlock::forward_r()";
    KSHOT_CHECK(rows_ >= 0, where, "call forward() first");
    KSHOT_CHECK(v != nullptr, where, "v is null");
    detail::check_shape(rx, rows_, dim_, where, "rx");
    detail::check_shape(ry, rows_, dim_, where, "ry");
    auto rh = ws_.matrix(kRH, rows_, hidden_);
    auto ra = ws_.matrix(kRA, rows_, hidden_);
    fc1_.forward_r(rx, v, rh);
    act_->forward_r(rh, nullptr, ra);
    fc2_.forward_r(ra, v + fc1_.num_parameters(), ry);
    ry += rx;
  }

  /// Accumulates R{dL/dparameters} into rgrad; rdx = R{dL/dx} when input_grad. Needs the last backward().
  void backward_r(ConstRowMatrixRef<Scalar> dy, ConstRowMatrixRef<Scalar> rdy, const Scalar* v, Scalar* rgrad,
                  RowMatrixRef<Scalar> rdx, bool input_grad) override {
    constexpr const char* where = "kshot::ResidualBlock::backward_r()";
    KSHOT_CHECK(v != nullptr && rgrad != nullptr, where, "v and rgrad must not be null");
    KSHOT_CHECK(backward_done_, where, "call backward() after forward() first: the R-operator reuses its values");
    detail::check_shape(dy, rows_, dim_, where, "dy");
    detail::check_shape(rdy, rows_, dim_, where, "rdy");
    if (input_grad) detail::check_shape(rdx, rows_, dim_, where, "rdx");
    const Index n1 = fc1_.num_parameters();
    auto da = ws_.matrix(kDA, rows_, hidden_);
    auto dh = ws_.matrix(kDH, rows_, hidden_);
    auto rda = ws_.matrix(kRDA, rows_, hidden_);
    auto rdh = ws_.matrix(kRDH, rows_, hidden_);
    fc2_.backward_r(dy, rdy, v + n1, rgrad + n1, rda, true);
    act_->backward_r(da, rda, nullptr, nullptr, rdh, true);
    fc1_.backward_r(dh, rdh, v, rgrad, rdx, input_grad);
    if (input_grad) rdx += rdy;
  }

  /// {dim, hidden, activation code, init code}.
  std::vector<double> config() const override {
    return {static_cast<double>(dim_), static_cast<double>(hidden_), static_cast<double>(static_cast<int>(act_kind_)),
            static_cast<double>(static_cast<int>(init_))};
  }

  /// An unbound copy with the same configuration.
  std::unique_ptr<Layer<Scalar>> clone() const override {
    return std::make_unique<ResidualBlock>(dim_, hidden_, act_kind_, init_);
  }

 private:
  enum Slot : std::size_t { kH, kA, kDA, kDH, kRH, kRA, kRDA, kRDH };

  static Index checked(Index dim, Index hidden, Activation act, Init init) {
    constexpr const char* where = "kshot::ResidualBlock::ResidualBlock()";
    KSHOT_CHECK(dim >= 1, where, detail::cat("dim must be at least 1, got ", dim));
    KSHOT_CHECK(hidden >= 1, where, detail::cat("hidden must be at least 1, got ", hidden));
    KSHOT_CHECK(detail::is_activation_code(static_cast<int>(act)), where,
                detail::cat("act has the unknown code ", static_cast<int>(act)));
    KSHOT_CHECK(detail::is_init_code(static_cast<int>(init)), where,
                detail::cat("init has the unknown code ", static_cast<int>(init)));
    return dim;
  }

  Index dim_, hidden_;
  Activation act_kind_;
  Init init_;
  Linear<Scalar> fc1_;
  std::unique_ptr<Layer<Scalar>> act_;
  Linear<Scalar> fc2_;
  Index rows_ = -1;  // rows of the last forward(), -1 before
  bool backward_done_ = false;
  detail::Workspace<Scalar> ws_;
};

}  // namespace kshot

#endif  // KSHOT_NN_RESIDUAL_HPP
