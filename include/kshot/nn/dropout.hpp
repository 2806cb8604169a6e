/**
 * @file kshot/nn/dropout.hpp
 * @brief Inverted dropout (Srivastava et al. 2014) with seeded, reproducible masks that never depend on the
 * number of threads, as torch.nn.Dropout.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_NN_DROPOUT_HPP
#define KSHOT_NN_DROPOUT_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/random.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"
#include "kshot/core/workspace.hpp"
#include "kshot/nn/layer.hpp"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace kshot {

/**
 * @brief Inverted dropout: in training, each unit is zeroed with probability p and the kept units are scaled
 * by 1 / (1 − p); in evaluation, the identity. No parameters.
 *
 * This is torch.nn.Dropout(p) with kshot's own generator in place of torch's (the masks differ from torch's,
 * their distribution does not).
 *
 * **Reproducible masks.** Each forward() with `training` true is call number t = step() (then step()
 * advances by one; forwards with `training` false neither draw nor advance it, so evaluation passes in
 * between do not shift the training masks). Row i of call t draws from
 * `RandomStream(splitmix64(seed ^ splitmix64(t ^ 0x6A09E667F3BCC909)), i)`: one 32-bit draw u per column, in
 * column order, and the unit is dropped when u < round(p · 2³²) (so p is effectively rounded to a multiple of
 * 2⁻³²). The mask of call t is therefore a pure function of (seed, t); row i of it does not depend on the
 * number of rows either, nor on the number of threads. set_step() repeats or restores a mask (checkpoint
 * resume, tests).
 *
 * backward(), forward_r() and backward_r() reuse the mask of the last forward() (identity after an
 * evaluation forward or with p = 0).
 *
 * @tparam Scalar float or double.
 * @note Not thread-safe: one layer per thread. After the first training forward with the largest batch,
 * nothing allocates (the mask lives in a workspace buffer that grows and never shrinks). Rows run in
 * parallel (detail::parallel_for), each from its own stream.
 */
template <class Scalar>
class Dropout final : public Layer<Scalar> {
  static_assert(is_supported_scalar_v<Scalar>, "kshot::Dropout<Scalar>: Scalar must be float or double");

 public:
  /**
   * @brief Dropout of rows of width `dim`.
   * @param dim the number of features (columns of x and y).
   * @param p the probability of zeroing a unit in training, in [0, 1).
   * @param seed the seed of every mask.
   * @throws std::invalid_argument if dim < 1, or p is not finite, or p < 0, or p >= 1 (p = 1 would zero every
   * unit and has no inverted scale 1 / (1 − p)).
   */
  Dropout(Index dim, double p, std::uint64_t seed) : dim_(dim), p_(p), seed_(seed) {
    constexpr const char* where = "kshot::Dropout::Dropout()";
    KSHOT_CHECK(dim >= 1, where, detail::cat("dim must be at least 1, got ", dim));
    KSHOT_CHECK(std::isfinite(p) && p >= 0, where, detail::cat("p must be in [0, 1), got ", p));
    KSHOT_CHECK(p < 1, where,
                detail::cat("p must be in [0, 1), got ", p,
                            ": p = 1 would zero every unit and has no inverted scale 1 / (1 - p)"));
    scale_ = static_cast<Scalar>(1.0 / (1.0 - p));
    drop_threshold_ = static_cast<std::uint64_t>(std::llround(std::ldexp(p, 32)));
  }

  /// "Dropout".
  std::string type_name() const override { return "Dropout"; }
  /// dim.
  Index input_dim() const noexcept override { return dim_; }
  /// dim.
  Index output_dim() const noexcept override { return dim_; }

  /// The number of features.
  Index dim() const noexcept { return dim_; }
  /// The drop probability.
  double p() const noexcept { return p_; }
  /// The seed of every mask.
  std::uint64_t seed() const noexcept { return seed_; }

  /// The number t of the next training forward (the training forwards so far, unless set_step() was used).
  std::uint64_t step() const noexcept { return step_; }

  /// Makes the next training forward call number `step`: set_step(t) before a forward repeats mask t.
  void set_step(std::uint64_t step) noexcept { step_ = step; }

  /**
   * @brief In training, y = x ∘ mask with mask entries 0 (probability p) or 1 / (1 − p), the mask of call
   * step(), then step() advances; otherwise y = x. The mask is kept for the backward and R passes.
   * @param x n x dim input.
   * @param y n x dim output, overwritten; may be x itself.
   * @param training whether to drop units.
   * @throws std::invalid_argument if x has not dim columns, y is not n x dim, or x has a non-finite value.
   */
  void forward(ConstRowMatrixRef<Scalar> x, RowMatrixRef<Scalar> y, bool training) override {
    constexpr const char* where = "kshot::Dropout::forward()";
    KSHOT_CHECK(x.cols() == dim_, where, detail::cat("x has ", x.cols(), " columns but the layer's dim is ", dim_));
    detail::check_shape(y, x.rows(), dim_, where, "y");
    detail::check_finite(x, where, "x");
    const Index n = x.rows();
    n_ = n;
    has_forward_ = true;
    masked_ = training && p_ > 0;
    if (training) ++step_;
    if (!masked_) {
      y = x;
      return;
    }
    const std::uint64_t call_seed = detail::splitmix64(seed_ ^ detail::splitmix64((step_ - 1) ^ step_salt));
    Matrix mask = ws_.matrix(kMask, n, dim_);
    const double work = static_cast<double>(n) * static_cast<double>(dim_) * 4;
    detail::parallel_for(n, detail::worth_parallel(n, work), [&](Index i) {
      RandomStream rng(call_seed, static_cast<std::uint64_t>(i));
      for (Index j = 0; j < dim_; ++j) {
        const bool drop = static_cast<std::uint64_t>(rng.next32()) < drop_threshold_;
        const Scalar m = drop ? Scalar(0) : scale_;
        mask(i, j) = m;
        y(i, j) = x(i, j) * m;
      }
    });
  }

  /**
   * @brief Overwrites dx = dy ∘ mask (dx = dy without a mask) when `input_grad`; no parameters.
   * @param dy n x dim, dL/dy for the last forward().
   * @param dx n x dim, overwritten when input_grad; may be dy itself.
   * @param input_grad whether to compute dx.
   * @throws std::invalid_argument if forward() has not run, dy or dx (when input_grad) is not n x dim, or dy
   * has a non-finite value.
   */
  void backward(ConstRowMatrixRef<Scalar> dy, RowMatrixRef<Scalar> dx, bool input_grad) override {
    constexpr const char* where = "kshot::Dropout::backward()";
    check_forward(where);
    detail::check_shape(dy, n_, dim_, where, "dy");
    if (!input_grad) return;
    detail::check_shape(dx, n_, dim_, where, "dx");
    detail::check_finite(dy, where, "dy");
    apply_mask(dy, dx);
  }

  /**
   * @brief ry = rx ∘ mask (ry = rx without a mask); `v` is unused (may be null).
   * @throws std::invalid_argument if forward() has not run, rx or ry is not n x dim, or rx has a non-finite
   * value.
   */
  void forward_r(ConstRowMatrixRef<Scalar> rx, const Scalar* v, RowMatrixRef<Scalar> ry) override {
    (void)v;
    constexpr const char* where = "kshot::Dropout::forward_r()";
    check_forward(where);
    detail::check_shape(rx, n_, dim_, where, "rx");
    detail::check_shape(ry, n_, dim_, where, "ry");
    detail::check_finite(rx, where, "rx");
    apply_mask(rx, ry);
  }

  /**
   * @brief Overwrites rdx = rdy ∘ mask (rdx = rdy without a mask) when `input_grad`; `dy`, `v` and `rgrad`
   * are unused (no parameters, and the layer is linear in x).
   * @throws std::invalid_argument if forward() has not run, dy or rdy (or rdx when input_grad) is not n x dim,
   * or rdy has a non-finite value.
   */
  void backward_r(ConstRowMatrixRef<Scalar> dy, ConstRowMatrixRef<Scalar> rdy, const Scalar* v, Scalar* rgrad,
                  RowMatrixRef<Scalar> rdx, bool input_grad) override {
    (void)v;
    (void)rgrad;
    constexpr const char* where = "kshot::Dropout::backward_r()";
    check_forward(where);
    detail::check_shape(dy, n_, dim_, where, "dy");
    detail::check_shape(rdy, n_, dim_, where, "rdy");
    if (!input_grad) return;
    detail::check_shape(rdx, n_, dim_, where, "rdx");
    detail::check_finite(rdy, where, "rdy");
    apply_mask(rdy, rdx);
  }

  /// {dim, p, seed & 0xffffffff, seed >> 32} (the seed in two exactly representable halves).
  std::vector<double> config() const override {
    return {static_cast<double>(dim_), p_, static_cast<double>(seed_ & 0xffffffffull),
            static_cast<double>(seed_ >> 32)};
  }

  /// A new Dropout with the same configuration and the same step() (so it continues the same mask
  /// sequence), without a kept mask.
  std::unique_ptr<Layer<Scalar>> clone() const override {
    auto copy = std::make_unique<Dropout>(dim_, p_, seed_);
    copy->set_step(step_);
    return copy;
  }

 private:
  using Matrix = typename detail::Workspace<Scalar>::Matrix;
  enum : std::size_t { kMask = 0 };

  /// Separates the per-call seeds from other uses of splitmix64(seed ^ ...) (the first 64 bits of sqrt(2)).
  static constexpr std::uint64_t step_salt = 0x6A09E667F3BCC909ull;

  void check_forward(const char* where) const { KSHOT_CHECK(has_forward_, where, "forward() must run first"); }

  /// out = in ∘ mask, or out = in when the last forward() drew no mask.
  void apply_mask(const ConstRowMatrixRef<Scalar>& in, RowMatrixRef<Scalar>& out) {
    if (!masked_) {
      out = in;
      return;
    }
    const Matrix mask = ws_.matrix(kMask, n_, dim_);
    const double work = static_cast<double>(n_) * static_cast<double>(dim_);
    detail::parallel_for(n_, detail::worth_parallel(n_, work),
                         [&](Index i) { out.row(i) = in.row(i).cwiseProduct(mask.row(i)); });
  }

  Index dim_;
  double p_;
  std::uint64_t seed_;
  Scalar scale_ = Scalar(1);
  std::uint64_t drop_threshold_ = 0;
  std::uint64_t step_ = 0;
  Index n_ = 0;
  bool has_forward_ = false;
  bool masked_ = false;
  detail::Workspace<Scalar> ws_;
};

}  // namespace kshot

#endif  // KSHOT_NN_DROPOUT_HPP
