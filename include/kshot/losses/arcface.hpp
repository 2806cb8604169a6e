/**
 * @file kshot/losses/arcface.hpp
 * @brief ArcFace, additive angular margin softmax (Deng et al. 2019), with its exact gradient with respect
 * to the embeddings and the class weights: pytorch-metric-learning's ArcFaceLoss.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_LOSSES_ARCFACE_HPP
#define KSHOT_LOSSES_ARCFACE_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/random.hpp"
#include "kshot/core/types.hpp"
#include "kshot/losses/common.hpp"
#include "kshot/losses/detail/large_margin.hpp"

#include <cmath>
#include <cstdint>
#include <type_traits>

namespace kshot {
namespace detail {

/**
 * @brief ArcFace's target logit f(c) and its derivative, for a margin m in radians (see ArcFaceLoss).
 *
 * f(c) = cos(θ + m) for θ = acos(clamp(c, −1, 1)) <= π − m, else cos θ − m sin m. f'(c) is
 * sin(θ + m) / sqrt(1 − c²) (torch's value) for |c| < 1 on the first branch and 1 on the second; 0 for
 * |c| > 1 (torch's clamp); cos m at c = ±1 exactly on the first branch. The last two add 1 to `degenerate`.
 */
template <class Scalar>
struct ArcFaceTarget {
  Scalar margin, threshold, shift, cos_m;

  explicit ArcFaceTarget(double margin_radians)
      : margin(Scalar(margin_radians)),
        threshold(Scalar(3.14159265358979323846 - margin_radians)),
        shift(Scalar(margin_radians * std::sin(margin_radians))),
        cos_m(Scalar(std::cos(margin_radians))) {}

  Scalar operator()(Scalar c, Scalar& dfdc, Index& degenerate) const {
    const bool clamped = c > Scalar(1) || c < Scalar(-1);
    const Scalar cc = clamped ? (c > Scalar(1) ? Scalar(1) : Scalar(-1)) : c;
    if (clamped) ++degenerate;
    const Scalar theta = std::acos(cc);
    if (theta <= threshold) {
      const Scalar sin2 = (Scalar(1) - cc) * (Scalar(1) + cc);
      if (clamped) {
        dfdc = 0;
      } else if (sin2 > Scalar(0)) {
        dfdc = std::sin(theta + margin) / std::sqrt(sin2);
      } else {
        dfdc = cos_m;  // c = ±1 exactly: the derivative of the smooth part c cos m (see ArcFaceLoss)
        ++degenerate;
      }
      return std::cos(theta + margin);
    }
    dfdc = clamped ? Scalar(0) : Scalar(1);
    return std::cos(theta) - shift;
  }
};

}  // namespace detail

/**
 * @brief ArcFace loss: softmax cross-entropy over scaled class cosines, with an angular margin added to
 * the angle of the target class.
 *
 * With c_ij = x̂_i · Ŵ_j (Ŵ_j the normalised column j of W), m = margin_degrees · π / 180 (as
 * numpy.radians) and θ = acos(clamp(c_iy, −1, 1)) for the target y = y_i:
 * @f[ f(c) = \begin{cases} \cos(\theta + m) & \theta \le \pi - m \\ \cos\theta - m \sin m & \text{otherwise}
 * \end{cases} @f]
 * (the fallback keeps the logit decreasing in θ), logits z_ij = scale · c_ij for j ≠ y and
 * z_iy = scale · f(c_iy), and loss_i = w_i (logsumexp_j z_ij − z_iy), w the miner weights (all ones without
 * a mined tuple; pytorch-metric-learning's convert_to_weights over every index of the tuple).
 *
 * Reduction (default Reduction::mean): the mean of loss_i over the batch; mean_nonzero and sum also apply.
 * Defaults follow pytorch-metric-learning: margin_degrees 28.6, scale 64, CosineSimilarity (the only
 * distance allowed; an integer power is accepted as the peer does). W is embedding_size x num_classes,
 * classes in COLUMNS (pytorch-metric-learning's layout), initialised standard normal
 * (torch.nn.init.normal_) from RandomStream(seed); overwrite it freely.
 *
 * Gradient: where |c| < 1, d f / d c = sin(θ + m) / sqrt(1 − c²) (torch's value). Where torch is not
 * finite the choice is: |c| > 1 (rounding) gives 0, as torch's clamp does; c exactly ±1 on the first branch
 * gives cos m, the derivative of the smooth part c cos m, since the other part −sqrt(1 − c²) sin m is a
 * cone in the embedding whose symmetric derivative at its apex is 0 (central differences agree). Both are
 * counted in stats().degenerate, with zero-norm rows and target probabilities that underflow.
 *
 * stats(): terms (rows), active_terms (rows with a loss > 0), degenerate (see above).
 * Deliberate differences: pytorch-metric-learning's weight_regularizer is not supported (add your own
 * term on W); at c = ±1, where torch's gradient is NaN or infinite, kshot's is finite (see above).
 *
 * @code
 * @inproceedings{deng2019arcface,
 *   title={ArcFace: Additive Angular Margin Loss for Deep Face Recognition},
 *   author={Deng, Jiankang and Guo, Jia and Xue, Niannan and Zafeiriou, Stefanos},
 *   booktitle={CVPR}, year={2019}}
 * @endcode
 * @tparam Scalar float or double.
 * @note One object per thread: evaluate() uses the object's buffers, and after the first call with the
 * largest shapes it allocates nothing of kshot's own (Eigen's GEMM may allocate packing buffers).
 * Column-major inputs are copied on binding to the row-major Ref.
 */
template <class Scalar = float>
class ArcFaceLoss {
  static_assert(std::is_floating_point_v<Scalar>, "kshot::ArcFaceLoss<Scalar>: Scalar must be float or double");

 public:
  Scalar margin_degrees = Scalar(28.6);            ///< the angular margin in degrees; finite
  Scalar scale = Scalar(64);                       ///< logit scale; finite
  LossDistance distance = LossDistance::cosine();  ///< must be cosine (pytorch-metric-learning asserts it)
  Reduction reduction = Reduction::loss_default;   ///< default: mean over the batch
  RowMatrixX<Scalar> W;                            ///< class weights, embedding_size x num_classes

  /**
   * @brief W (embedding_size x num_classes) drawn standard normal from RandomStream(seed).
   * @throws std::invalid_argument if num_classes < 1 or embedding_size < 1.
   */
  ArcFaceLoss(Index num_classes, Index embedding_size, std::uint64_t seed = 0) {
    constexpr const char* where = "kshot::ArcFaceLoss::ArcFaceLoss()";
    KSHOT_CHECK(num_classes >= 1, where, detail::cat("num_classes is ", num_classes, " but must be >= 1"));
    KSHOT_CHECK(embedding_size >= 1, where, detail::cat("embedding_size is ", embedding_size, " but must be >= 1"));
    W.resize(embedding_size, num_classes);
    RandomStream rng(seed);
    rng.fill_normal(W);
  }

  Index num_classes() const noexcept { return W.cols(); }
  Index embedding_size() const noexcept { return W.rows(); }

  /// The loss of a batch (labels in [0, num_classes)), optionally weighted by a mined tuple.
  Scalar evaluate(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels, Mined mined = {}) {
    return run(emb, labels, mined, nullptr, nullptr);
  }
  /// The loss; `grad` (n x d) and `grad_W` (embedding_size x num_classes) are overwritten with the gradients.
  Scalar evaluate(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels, Mined mined, RowMatrixRef<Scalar> grad,
                  RowMatrixRef<Scalar> grad_W) {
    return run(emb, labels, mined, &grad, &grad_W);
  }
  /// The loss without a mined tuple, and both gradients.
  Scalar evaluate(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels, RowMatrixRef<Scalar> grad,
                  RowMatrixRef<Scalar> grad_W) {
    return run(emb, labels, Mined{}, &grad, &grad_W);
  }
  /// The loss and its gradient with respect to the embeddings only.
  Scalar evaluate(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels, Mined mined, RowMatrixRef<Scalar> grad) {
    return run(emb, labels, mined, &grad, nullptr);
  }
  /// The loss without a mined tuple and its gradient with respect to the embeddings only.
  Scalar evaluate(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels, RowMatrixRef<Scalar> grad) {
    return run(emb, labels, Mined{}, &grad, nullptr);
  }

  /// Counts from the last call.
  const LossStats& stats() const noexcept { return stats_; }

  /// Pre-sizes the buffers for n embeddings against the current W.
  void reserve(Index n) { core_.reserve(n, W.rows(), W.cols()); }

 private:
  Scalar run(const ConstRowMatrixRef<Scalar>& emb, const ConstLabelRef& labels, const Mined& mined,
             RowMatrixRef<Scalar>* grad, RowMatrixRef<Scalar>* grad_W) {
    constexpr const char* where = "kshot::ArcFaceLoss::evaluate()";
    detail::check_class_inputs(emb, labels, W.cols(), W.rows(), W, "W", where);
    detail::check_distance(distance, where);
    KSHOT_CHECK(distance.kind == DistanceKind::cosine, where,
                detail::cat("distance is ", distance.describe(), " but ArcFace needs CosineSimilarity"));
    detail::check_mined(mined, emb.rows(), where);
    KSHOT_CHECK(std::isfinite(margin_degrees), where,
                detail::cat("margin_degrees is ", margin_degrees, " but must be finite"));
    KSHOT_CHECK(std::isfinite(scale), where, detail::cat("scale is ", scale, " but must be finite"));
    if (grad != nullptr) detail::check_grad(*grad, emb.rows(), emb.cols(), where, "grad");
    if (grad_W != nullptr) detail::check_grad(*grad_W, W.rows(), W.cols(), where, "grad_W");
    stats_ = LossStats{};

    // numpy.radians: x * (pi / 180), in double.
    const detail::ArcFaceTarget<Scalar> target(double(margin_degrees) * (3.14159265358979323846 / 180.0));
    typename detail::LargeMarginSoftmax<Scalar>::Setup setup;
    setup.distance = distance;
    setup.scale = scale;
    setup.mode = detail::resolve_reduction(reduction, detail::ReduceMode::mean);
    setup.anchor_weights = false;
    setup.classes_in_columns = true;
    return core_.run(setup, emb, labels, mined, W, grad, grad_W, stats_, target);
  }

  detail::LargeMarginSoftmax<Scalar> core_;
  LossStats stats_;
};

}  // namespace kshot

#endif  // KSHOT_LOSSES_ARCFACE_HPP
