/**
 * @file kshot/losses/proxy_nca.hpp
 * @brief ProxyNCA (Movshovitz-Attias et al. 2017), neighbourhood components analysis against one learned
 * proxy per class, with its exact gradient with respect to the embeddings and the proxies:
 * pytorch-metric-learning's ProxyNCALoss.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_LOSSES_PROXY_NCA_HPP
#define KSHOT_LOSSES_PROXY_NCA_HPP

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
 * @brief ProxyNCA loss: each embedding is classified by a softmax over its distances to the class proxies.
 *
 * With d_ic = distance(x_i, p_c) over the rows of `proxies` (the default: squared Euclidean distance
 * between the L2-normalised embedding and the L2-normalised proxy) and s = softmax_scale:
 * @f[ \ell_i = -w_i \log \frac{e^{-s\,d_{i y_i}}}{\sum_c e^{-s\,d_{ic}}} @f]
 * computed as a log-softmax (log-sum-exp). With a similarity (cosine, dot product) the logits are +s·d
 * instead. w are the miner weights: all ones without a mined tuple, otherwise pytorch-metric-learning's
 * convert_to_weights over the ANCHORS of the tuple only (a, or a1 and a2), as the peer counts them when the
 * reference set (the proxies) is not the batch.
 *
 * Reduction (default Reduction::mean): the mean of ℓ_i over the batch; mean_nonzero and sum also apply.
 * Defaults follow pytorch-metric-learning: softmax_scale 1, LpDistance(power=2) (normalised rows).
 * `proxies` is num_classes x embedding_size (pytorch-metric-learning's layout), initialised standard
 * normal (torch.nn.init.normal_) from RandomStream(seed); overwrite it freely.
 *
 * stats(): terms (rows), active_terms (rows with a loss > 0), degenerate (zero-norm rows or proxies
 * normalised through the 1e-12 floor, and rows whose target probability underflows to 0).
 * Deliberate differences: pytorch-metric-learning drops rows whose softmax probability underflows to
 * exactly 0 (log of 0) from the loss and from the mean; kshot's log-softmax keeps them finite and counted
 * in the mean (and in stats().degenerate). pytorch-metric-learning's weight_regularizer is not supported
 * (add your own term on the proxies).
 *
 * @code
 * @inproceedings{movshovitz2017proxynca,
 *   title={No Fuss Distance Metric Learning Using Proxies},
 *   author={Movshovitz-Attias, Yair and Toshev, Alexander and Leung, Thomas K. and Ioffe, Sergey and
 *           Singh, Saurabh},
 *   booktitle={ICCV}, year={2017}}
 * @endcode
 * @tparam Scalar float or double.
 * @note One object per thread: evaluate() uses the object's buffers, and after the first call with the
 * largest shapes it allocates nothing of kshot's own (Eigen's GEMM may allocate packing buffers).
 * Column-major inputs are copied on binding to the row-major Ref.
 */
template <class Scalar = float>
class ProxyNCALoss {
  static_assert(std::is_floating_point_v<Scalar>, "kshot::ProxyNCALoss<Scalar>: Scalar must be float or double");

 public:
  Scalar softmax_scale = Scalar(1);                    ///< multiplies the logits; finite
  LossDistance distance = LossDistance::squared_lp();  ///< pytorch-metric-learning's LpDistance(power=2)
  Reduction reduction = Reduction::loss_default;       ///< default: mean over the batch
  RowMatrixX<Scalar> proxies;                          ///< one proxy per row, num_classes x embedding_size

  /**
   * @brief Proxies (num_classes x embedding_size) drawn standard normal from RandomStream(seed).
   * @throws std::invalid_argument if num_classes < 1 or embedding_size < 1.
   */
  ProxyNCALoss(Index num_classes, Index embedding_size, std::uint64_t seed = 0) {
    constexpr const char* where = "kshot::ProxyNCALoss::ProxyNCALoss()";
    KSHOT_CHECK(num_classes >= 1, where, detail::cat("num_classes is ", num_classes, " but must be >= 1"));
    KSHOT_CHECK(embedding_size >= 1, where, detail::cat("embedding_size is ", embedding_size, " but must be >= 1"));
    proxies.resize(num_classes, embedding_size);
    RandomStream rng(seed);
    rng.fill_normal(proxies);
  }

  Index num_classes() const noexcept { return proxies.rows(); }
  Index embedding_size() const noexcept { return proxies.cols(); }

  /// The loss of a batch (labels in [0, num_classes)), optionally weighted by a mined tuple.
  Scalar evaluate(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels, Mined mined = {}) {
    return run(emb, labels, mined, nullptr, nullptr);
  }
  /// The loss; `grad` (n x d) and `grad_proxies` (num_classes x embedding_size) are overwritten.
  Scalar evaluate(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels, Mined mined, RowMatrixRef<Scalar> grad,
                  RowMatrixRef<Scalar> grad_proxies) {
    return run(emb, labels, mined, &grad, &grad_proxies);
  }
  /// The loss without a mined tuple, and both gradients.
  Scalar evaluate(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels, RowMatrixRef<Scalar> grad,
                  RowMatrixRef<Scalar> grad_proxies) {
    return run(emb, labels, Mined{}, &grad, &grad_proxies);
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

  /// Pre-sizes the buffers for n embeddings against the current proxies.
  void reserve(Index n) { core_.reserve(n, proxies.cols(), proxies.rows()); }

 private:
  Scalar run(const ConstRowMatrixRef<Scalar>& emb, const ConstLabelRef& labels, const Mined& mined,
             RowMatrixRef<Scalar>* grad, RowMatrixRef<Scalar>* grad_proxies) {
    constexpr const char* where = "kshot::ProxyNCALoss::evaluate()";
    detail::check_class_inputs(emb, labels, proxies.rows(), proxies.cols(), proxies, "proxies", where);
    detail::check_distance(distance, where);
    detail::check_mined(mined, emb.rows(), where);
    KSHOT_CHECK(std::isfinite(softmax_scale), where,
                detail::cat("softmax_scale is ", softmax_scale, " but must be finite"));
    if (grad != nullptr) detail::check_grad(*grad, emb.rows(), emb.cols(), where, "grad");
    if (grad_proxies != nullptr)
      detail::check_grad(*grad_proxies, proxies.rows(), proxies.cols(), where, "grad_proxies");
    stats_ = LossStats{};

    auto identity = [](Scalar m, Scalar& dfdm, Index&) {
      dfdm = Scalar(1);
      return m;
    };
    typename detail::LargeMarginSoftmax<Scalar>::Setup setup;
    setup.distance = distance;
    // A distance is negated into a logit; a similarity is used as it is.
    setup.scale = distance.is_inverted() ? softmax_scale : -softmax_scale;
    setup.mode = detail::resolve_reduction(reduction, detail::ReduceMode::mean);
    setup.anchor_weights = true;
    setup.classes_in_columns = false;
    return core_.run(setup, emb, labels, mined, proxies, grad, grad_proxies, stats_, identity);
  }

  detail::LargeMarginSoftmax<Scalar> core_;
  LossStats stats_;
};

}  // namespace kshot

#endif  // KSHOT_LOSSES_PROXY_NCA_HPP
