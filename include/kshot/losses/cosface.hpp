/**
 * @file kshot/losses/cosface.hpp
 * @brief CosFace, large margin cosine loss (Wang et al. 2018), with its exact gradient with respect to the
 * embeddings and the class weights: pytorch-metric-learning's CosFaceLoss.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_LOSSES_COSFACE_HPP
#define KSHOT_LOSSES_COSFACE_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/random.hpp"
#include "kshot/core/types.hpp"
#include "kshot/losses/common.hpp"
#include "kshot/losses/detail/large_margin.hpp"

#include <cmath>
#include <cstdint>
#include <type_traits>

namespace kshot {

/**
 * @brief CosFace loss: softmax cross-entropy over scaled class cosines, with a margin subtracted from the
 * cosine of the target class.
 *
 * With c_ij = x̂_i · Ŵ_j (Ŵ_j the normalised column j of W) and the target y = y_i: logits
 * z_ij = scale · c_ij for j ≠ y and z_iy = scale · (c_iy − margin), and
 * @f[ \ell_i = w_i \Big(\log \sum_j e^{z_{ij}} - z_{iy}\Big), @f]
 * w the miner weights (all ones without a mined tuple; pytorch-metric-learning's convert_to_weights over
 * every index of the tuple).
 *
 * Reduction (default Reduction::mean): the mean of ℓ_i over the batch; mean_nonzero and sum also apply.
 * Defaults follow pytorch-metric-learning: margin 0.35, scale 64, CosineSimilarity (the only distance
 * allowed; an integer power is accepted as the peer does). W is embedding_size x num_classes, classes in
 * COLUMNS (pytorch-metric-learning's layout), initialised standard normal (torch.nn.init.normal_) from
 * RandomStream(seed); overwrite it freely.
 *
 * stats(): terms (rows), active_terms (rows with a loss > 0), degenerate (zero-norm rows, target
 * probabilities that underflow).
 * Deliberate difference: pytorch-metric-learning's weight_regularizer is not supported (add your own term
 * on W).
 *
 * @code
 * @inproceedings{wang2018cosface,
 *   title={CosFace: Large Margin Cosine Loss for Deep Face Recognition},
 *   author={Wang, Hao and Wang, Yitong and Zhou, Zheng and Ji, Xing and Gong, Dihong and Zhou, Jingchao
 *           and Li, Zhifeng and Liu, Wei},
 *   booktitle={CVPR}, year={2018}}
 * @endcode
 * @tparam Scalar float or double.
 * @note One object per thread: evaluate() uses the object's buffers, and after the first call with the
 * largest shapes it allocates nothing of kshot's own (Eigen's GEMM may allocate packing buffers).
 * Column-major inputs are copied on binding to the row-major Ref.
 */
template <class Scalar = float>
class CosFaceLoss {
  static_assert(std::is_floating_point_v<Scalar>, "kshot::CosFaceLoss<Scalar>: Scalar must be float or double");

 public:
  Scalar margin = Scalar(0.35);                    ///< subtracted from the target cosine; finite
  Scalar scale = Scalar(64);                       ///< logit scale; finite
  LossDistance distance = LossDistance::cosine();  ///< must be cosine (pytorch-metric-learning asserts it)
  Reduction reduction = Reduction::loss_default;   ///< default: mean over the batch
  RowMatrixX<Scalar> W;                            ///< class weights, embedding_size x num_classes

  /**
   * @brief W (embedding_size x num_classes) drawn standard normal from RandomStream(seed).
   * @throws std::invalid_argument if num_classes < 1 or embedding_size < 1.
   */
  CosFaceLoss(Index num_classes, Index embedding_size, std::uint64_t seed = 0) {
    constexpr const char* where = "kshot::CosFaceLoss::CosFaceLoss()";
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
    constexpr const char* where = "kshot::CosFaceLoss::evaluate()";
    detail::check_class_inputs(emb, labels, W.cols(), W.rows(), W, "W", where);
    detail::check_distance(distance, where);
    KSHOT_CHECK(distance.kind == DistanceKind::cosine, where,
                detail::cat("distance is ", distance.describe(), " but CosFace needs CosineSimilarity"));
    detail::check_mined(mined, emb.rows(), where);
    KSHOT_CHECK(std::isfinite(margin), where, detail::cat("margin is ", margin, " but must be finite"));
    KSHOT_CHECK(std::isfinite(scale), where, detail::cat("scale is ", scale, " but must be finite"));
    if (grad != nullptr) detail::check_grad(*grad, emb.rows(), emb.cols(), where, "grad");
    if (grad_W != nullptr) detail::check_grad(*grad_W, W.rows(), W.cols(), where, "grad_W");
    stats_ = LossStats{};

    const Scalar m = margin;
    auto target = [m](Scalar c, Scalar& dfdc, Index&) {
      dfdc = Scalar(1);
      return c - m;
    };
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

#endif  // KSHOT_LOSSES_COSFACE_HPP
