/**
 * @file kshot/losses/proxy_anchor.hpp
 * @brief Proxy-Anchor loss (Kim et al. 2020), with its exact gradient with respect to the embeddings and
 * the proxies: pytorch-metric-learning's ProxyAnchorLoss.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_LOSSES_PROXY_ANCHOR_HPP
#define KSHOT_LOSSES_PROXY_ANCHOR_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/random.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"
#include "kshot/losses/common.hpp"
#include "kshot/losses/detail/distance_matrix.hpp"
#include "kshot/losses/detail/large_margin.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

namespace kshot {

/**
 * @brief Proxy-Anchor loss: every class proxy is an anchor that pulls the batch's embeddings of its class
 * and pushes the others, through a smooth (log-sum-exp) maximum.
 *
 * With s_ic = distance(x_i, p_c) (default: cosine similarity), pytorch-metric-learning's margin(a, b)
 * (b − a for a similarity, a − b for a distance) and w the miner weights (all ones without a mined tuple;
 * convert_to_weights over every index of the tuple), per proxy c:
 * @f[ \mathrm{pos}_c = \log\Big(1 + \sum_{i:\,y_i = c} e^{\alpha\,\mathrm{margin}(s_{ic},\,\delta) + w_i - 1}\Big),
 *     \qquad
 *     \mathrm{neg}_c = \log\Big(1 + \sum_{i:\,y_i \ne c} e^{\alpha\,\mathrm{margin}(-\delta,\,s_{ic}) + w_i - 1}\Big)
 * @f] (δ = margin), each computed as a log-sum-exp with the 1 as an extra zero exponent; a proxy with no entry in a sum
 * gets 0 for that part (lmu.logsumexp). With the cosine default these are log(1 + Σ exp(−α(s − δ))) and log(1 + Σ
 * exp(α(s + δ))).
 *
 * Reduction (default Reduction::loss_default, pytorch-metric-learning's DivisorReducer): sum_c pos_c
 * divided by the number of proxies with a positive in the batch, plus sum_c neg_c divided by num_classes
 * (a zero divisor gives 0). Reduction::mean / mean_nonzero / sum reduce each part over the num_classes
 * proxies on its own, then add the two (MultipleReducers).
 *
 * Defaults follow pytorch-metric-learning: margin 0.1, alpha 32, CosineSimilarity. `proxies` is
 * num_classes x embedding_size, initialised as torch.nn.init.kaiming_normal_(mode="fan_out") does for a
 * 2-D tensor: normal with standard deviation sqrt(2) / sqrt(fan_out) = sqrt(2 / num_classes) (fan_out is
 * the number of rows), drawn from RandomStream(seed); overwrite it freely.
 *
 * stats(): terms (2 · num_classes), active_terms (parts > 0), skipped_anchors (proxies with no positive
 * in the batch), degenerate (zero-norm rows or proxies).
 * Deliberate difference: pytorch-metric-learning's weight_regularizer is not supported (add your own term
 * on the proxies).
 *
 * @code
 * @inproceedings{kim2020proxyanchor,
 *   title={Proxy Anchor Loss for Deep Metric Learning},
 *   author={Kim, Sungyeon and Kim, Dongwon and Cho, Minsu and Kwak, Suha},
 *   booktitle={CVPR}, year={2020}}
 * @endcode
 * @tparam Scalar float or double.
 * @note One object per thread: evaluate() uses the object's buffers, and after the first call with the
 * largest shapes it allocates nothing of kshot's own (Eigen's GEMM may allocate packing buffers).
 * Column-major inputs are copied on binding to the row-major Ref.
 */
template <class Scalar = float>
class ProxyAnchorLoss {
  static_assert(std::is_floating_point_v<Scalar>, "kshot::ProxyAnchorLoss<Scalar>: Scalar must be float or double");

 public:
  Scalar margin = Scalar(0.1);                     ///< δ; finite
  Scalar alpha = Scalar(32);                       ///< the exponent's scale; finite
  LossDistance distance = LossDistance::cosine();  ///< pytorch-metric-learning's default CosineSimilarity
  Reduction reduction = Reduction::loss_default;   ///< default: DivisorReducer per part (see above)
  RowMatrixX<Scalar> proxies;                      ///< one proxy per row, num_classes x embedding_size

  /**
   * @brief Proxies (num_classes x embedding_size) drawn normal with standard deviation
   * sqrt(2 / num_classes) from RandomStream(seed) (kaiming_normal_, mode fan_out).
   * @throws std::invalid_argument if num_classes < 1 or embedding_size < 1.
   */
  ProxyAnchorLoss(Index num_classes, Index embedding_size, std::uint64_t seed = 0) {
    constexpr const char* where = "kshot::ProxyAnchorLoss::ProxyAnchorLoss()";
    KSHOT_CHECK(num_classes >= 1, where, detail::cat("num_classes is ", num_classes, " but must be >= 1"));
    KSHOT_CHECK(embedding_size >= 1, where, detail::cat("embedding_size is ", embedding_size, " but must be >= 1"));
    proxies.resize(num_classes, embedding_size);
    RandomStream rng(seed);
    rng.fill_normal(proxies);
    proxies *= Scalar(std::sqrt(2.0 / double(num_classes)));
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
  void reserve(Index n) {
    const Index C = proxies.rows();
    dist_.reserve(C, n, proxies.cols());
    for (auto* v : {&weights_, &pos_, &neg_, &inv_sum_}) v->reserve(static_cast<std::size_t>(std::max(n, C)));
    counts_.reserve(static_cast<std::size_t>(n));
    order_.reserve(static_cast<std::size_t>(n));
    start_.reserve(static_cast<std::size_t>(C + 1));
  }

 private:
  Scalar run(const ConstRowMatrixRef<Scalar>& emb, const ConstLabelRef& labels, const Mined& mined,
             RowMatrixRef<Scalar>* grad, RowMatrixRef<Scalar>* grad_proxies) {
    constexpr const char* where = "kshot::ProxyAnchorLoss::evaluate()";
    detail::check_class_inputs(emb, labels, proxies.rows(), proxies.cols(), proxies, "proxies", where);
    detail::check_distance(distance, where);
    detail::check_mined(mined, emb.rows(), where);
    KSHOT_CHECK(std::isfinite(margin), where, detail::cat("margin is ", margin, " but must be finite"));
    KSHOT_CHECK(std::isfinite(alpha), where, detail::cat("alpha is ", alpha, " but must be finite"));
    if (grad != nullptr) detail::check_grad(*grad, emb.rows(), emb.cols(), where, "grad");
    if (grad_proxies != nullptr)
      detail::check_grad(*grad_proxies, proxies.rows(), proxies.cols(), where, "grad_proxies");
    stats_ = LossStats{};

    const Index n = emb.rows();
    const Index C = proxies.rows();
    const auto un = static_cast<std::size_t>(n);
    const auto uC = static_cast<std::size_t>(C);

    // Miner weights enter the exponents as w - 1.
    weights_.resize(un);
    detail::miner_weights(mined, n, weights_.data(), counts_, false);
    for (auto& w : weights_) w -= Scalar(1);
    const Eigen::Map<const RowVectorX<Scalar>> wm1(weights_.data(), n);

    // The batch grouped by class (counting sort): the positives of proxy c are order_[start_[c] .. start_[c+1]).
    start_.assign(uC + 1, 0);
    for (Index i = 0; i < n; ++i) ++start_[static_cast<std::size_t>(labels[i]) + 1];
    for (std::size_t c = 0; c < uC; ++c) start_[c + 1] += start_[c];
    order_.resize(un);
    counts_.assign(start_.begin(), start_.end() - 1);  // next free slot per class
    for (Index i = 0; i < n; ++i) order_[static_cast<std::size_t>(counts_[static_cast<std::size_t>(labels[i])]++)] = i;

    // Rows are proxies: S(c, i) = distance(p_c, x_i), so each proxy's sums run over a contiguous row.
    dist_.compute(distance, proxies, emb, stats_);
    auto S = dist_.matrix();
    auto T = dist_.grad(/*zero=*/false);  // negative exponents, their shifted exponentials, then dL/dS

    // pos exponent alpha * margin(s, δ) = alpha (ps s + pc); neg exponent alpha * margin(-δ, s) = alpha (-ps s + pc).
    const bool inv = distance.is_inverted();
    const Scalar ps = inv ? Scalar(-1) : Scalar(1);
    const Scalar pc = inv ? margin : -margin;
    const Scalar a = alpha;
    constexpr Scalar masked = std::numeric_limits<Scalar>::lowest();
    pos_.resize(uC);
    neg_.resize(uC);
    inv_sum_.resize(uC);

    auto forward_row = [&](Index c) {
      const auto uc = static_cast<std::size_t>(c);
      const Index begin = start_[uc], end = start_[uc + 1];
      T.row(c).array() = a * ((-ps) * S.row(c).array() + pc) + wm1.array();
      Scalar top = 0;  // the "1" of log(1 + sum) is an extra zero exponent
      for (Index k = begin; k < end; ++k) {
        const Index i = order_[static_cast<std::size_t>(k)];
        top = std::max(top, a * (ps * S(c, i) + pc) + wm1[i]);
      }
      Scalar lse = 0;
      if (end > begin) {
        Scalar sum = std::exp(-top);
        for (Index k = begin; k < end; ++k) {
          const Index i = order_[static_cast<std::size_t>(k)];
          sum += std::exp(a * (ps * S(c, i) + pc) + wm1[i] - top);
        }
        lse = top + std::log(sum);
      }
      pos_[uc] = lse;
      // Negatives: every entry but the positives, which are masked out of the row. T keeps exp(t - top)
      // for the backward pass (share = T / sum, without a second exp).
      lse = 0;
      if (end - begin < n) {
        for (Index k = begin; k < end; ++k) T(c, order_[static_cast<std::size_t>(k)]) = masked;
        top = std::max(Scalar(0), T.row(c).maxCoeff());
        T.row(c) = (T.row(c).array() - top).exp();
        for (Index k = begin; k < end; ++k) T(c, order_[static_cast<std::size_t>(k)]) = 0;
        const Scalar sum = std::exp(-top) + T.row(c).sum();  // >= 1: the largest exponent contributes exp(0)
        lse = top + std::log(sum);
        inv_sum_[uc] = Scalar(1) / sum;
      }
      neg_[uc] = lse;
    };
    detail::parallel_for(C, detail::worth_parallel(C, double(n) * double(C) * 16), forward_row);

    const detail::ReduceMode mode = detail::resolve_reduction(reduction, detail::ReduceMode::divisor);
    detail::PartTotals<Scalar> pos_totals, neg_totals;
    Index with_positive = 0;
    for (std::size_t c = 0; c < uC; ++c) {
      pos_totals.add(pos_[c]);
      neg_totals.add(neg_[c]);
      if (start_[c + 1] > start_[c]) ++with_positive;
    }
    stats_.skipped_anchors = C - with_positive;
    Scalar cp = 0, cn = 0;
    const Scalar value = detail::finish_part(pos_totals, mode, Scalar(with_positive), cp, stats_) +
                         detail::finish_part(neg_totals, mode, Scalar(C), cn, stats_);
    if (grad == nullptr) return value;

    // d pos_c / d s_ic = softmax share · alpha · ps; d neg_c / d s_ic = share · alpha · (-ps).
    auto backward_row = [&](Index c) {
      const auto uc = static_cast<std::size_t>(c);
      const Index begin = start_[uc], end = start_[uc + 1];
      const Scalar kn = detail::element_coeff(neg_[uc], cn, mode) * a * (-ps);
      if (kn == Scalar(0) || end - begin == n)
        T.row(c).setZero();
      else
        T.row(c) *= kn * inv_sum_[uc];
      const Scalar kp = detail::element_coeff(pos_[uc], cp, mode) * a * ps;
      for (Index k = begin; k < end; ++k) {
        const Index i = order_[static_cast<std::size_t>(k)];
        T(c, i) = kp == Scalar(0) ? Scalar(0) : kp * std::exp(a * (ps * S(c, i) + pc) + wm1[i] - pos_[uc]);
      }
    };
    detail::parallel_for(C, detail::worth_parallel(C, double(n) * double(C) * 16), backward_row);

    if (grad_proxies != nullptr) {
      dist_.backward(*grad_proxies, *grad);
    } else {
      dproxies_.resize(C, proxies.cols());
      dist_.backward(RowMatrixRef<Scalar>(dproxies_), *grad);
    }
    return value;
  }

  detail::LossDistanceMatrix<Scalar> dist_;
  RowMatrixX<Scalar> dproxies_;
  std::vector<Scalar> weights_, pos_, neg_, inv_sum_;  // w - 1; pos_c, neg_c (log-sum-exps); 1 / neg sums
  std::vector<Index> counts_, order_, start_;
  LossStats stats_;
};

}  // namespace kshot

#endif  // KSHOT_LOSSES_PROXY_ANCHOR_HPP
