/**
 * @file kshot/fewshot/matching_networks.hpp
 * @brief Matching networks with easyfsl's output convention: attention over L2-normalised support rows,
 * log-probabilities log(attention @ onehot + eps), and the NLL training loss with its gradients.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_FEWSHOT_MATCHING_NETWORKS_HPP
#define KSHOT_FEWSHOT_MATCHING_NETWORKS_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/gemm.hpp"
#include "kshot/core/types.hpp"
#include "kshot/distances/metrics.hpp"
#include "kshot/distances/pairwise.hpp"
#include "kshot/fewshot/common.hpp"

#include <cmath>

namespace kshot {

/**
 * @brief Matching networks (Vinyals et al. 2016) as easyfsl's `MatchingNetworks` computes them, without
 * the full-context-embedding LSTMs.
 *
 * With support rows @f$ s_j @f$ (labels @f$ y_j @f$, N classes) and query rows @f$ q_i @f$:
 * @f[ \hat s_j = s_j / \lVert s_j\rVert, \qquad a_{ij} = \mathrm{softmax}_j(q_i\cdot\hat s_j), \qquad
 *     \mathrm{scores}_{ic} = \log\Big(\sum_{j:\,y_j = c} a_{ij} + \varepsilon\Big) @f]
 * The query is not normalised (easyfsl's convention), so its norm acts as an inverse temperature.
 * The training loss is the negative log-likelihood averaged over the queries,
 * @f$ L = -\frac{1}{Q}\sum_i \mathrm{scores}_{i, y_i} @f$.
 *
 * `loss(..., grad_support, grad_query)` returns the analytic gradients. With
 * @f$ p_i = \sum_{j: y_j = y_i} a_{ij} @f$ and @f$ g_i = -1/(Q(p_i + \varepsilon)) @f$, the gradient
 * with respect to the logits is @f$ \partial L/\partial z_{ij} = g_i a_{ij}([y_j = y_i] - p_i) @f$; the
 * inner-product backward turns it into @f$ \partial L/\partial Q @f$ and @f$ \partial L/\partial\hat S @f$,
 * and the normalisation Jacobian @f$ (I - \hat s_j\hat s_j^\top)/\lVert s_j\rVert @f$ gives
 * @f$ \partial L/\partial S @f$.
 *
 * The full-context embeddings (the bidirectional LSTM over the support and the attention LSTM over the
 * query) are not part of this class: it scores the embeddings it is given. easyfsl's model with every
 * LSTM parameter equal to zero reduces to exactly this computation (the reference case
 * `easyfsl_matching_zero_lstm` checks it); put any contextual encoder in the embedding model.
 *
 * @code
 * @inproceedings{vinyals2016matching,
 *   title={Matching Networks for One Shot Learning},
 *   author={Vinyals, Oriol and Blundell, Charles and Lillicrap, Timothy and Kavukcuoglu, Koray and Wierstra, Daan},
 *   booktitle={Advances in Neural Information Processing Systems}, year={2016}}
 * @endcode
 *
 * @tparam Scalar float or double.
 * @note A zero support row has no direction: its normalised row is 0 (so it gets attention logit 0)
 * and it receives a zero gradient. easyfsl's `F.normalize` gives the same forward value but a gradient
 * scaled by 1e12.
 * @note Scratch matrices are members, reused while shapes repeat. Not thread-safe; copy it per thread.
 * @note Column-major inputs are copied into row-major temporaries when they bind.
 */
template <class Scalar>
class MatchingNetworks {
  static_assert(is_supported_scalar_v<Scalar>, "kshot::MatchingNetworks<Scalar>: Scalar must be float or double");

 public:
  /**
   * @param epsilon the constant added to the class probabilities before the logarithm (easyfsl: 1e-6);
   * finite and > 0.
   */
  explicit MatchingNetworks(Scalar epsilon = Scalar(1e-6)) : epsilon_(epsilon) {}

  Scalar epsilon() const noexcept { return epsilon_; }

  /**
   * @brief Stores the normalised support rows and their one-hot labels.
   * @param[in] support n x d support embeddings.
   * @param[in] support_labels n labels covering 0..N-1.
   * @throws std::invalid_argument on a bad support set (see detail::check_support) or a bad epsilon.
   */
  void fit(ConstRowMatrixRef<Scalar> support, ConstLabelRef support_labels) {
    fit_impl(support, support_labels, "kshot::MatchingNetworks::fit()");
  }

  /**
   * @brief Q x N log-probabilities of `query` (the scores; larger is better).
   * @throws std::invalid_argument before fit(), if query has the wrong number of columns or a non-finite
   * value, or out is not Q x N.
   */
  void scores(ConstRowMatrixRef<Scalar> query, RowMatrixRef<Scalar> out) {
    constexpr const char* where = "kshot::MatchingNetworks::scores()";
    KSHOT_CHECK(classes_ > 0, where, "fit() has not been called");
    detail::check_query(query, normalized_.cols(), where);
    detail::check_shape(out, query.rows(), classes_, where, "out");
    attention(query);
    detail::gemm_assign(out, attention_, onehot_);
    out = (out.array() + epsilon_).log();
  }

  RowMatrixX<Scalar> scores(ConstRowMatrixRef<Scalar> query) {
    RowMatrixX<Scalar> out(query.rows(), classes_);
    scores(query, out);
    return out;
  }

  /// Argmax of scores(); ties go to the lower class.
  LabelVector predict(ConstRowMatrixRef<Scalar> query) { return argmax_rows<Scalar>(scores(query)); }

  Index num_classes() const noexcept { return classes_; }

  /// The L2-normalised support rows of the last fit (zero rows stay zero).
  const RowMatrixX<Scalar>& normalized_support() const noexcept { return normalized_; }

  /**
   * @brief Mean negative log-likelihood of the queries (fits the support first).
   * @param[in] support n x d.
   * @param[in] support_labels n labels covering 0..N-1.
   * @param[in] query Q x d, Q > 0.
   * @param[in] query_labels Q labels in [0, N).
   * @throws std::invalid_argument on bad shapes, labels, values or epsilon.
   */
  Scalar loss(ConstRowMatrixRef<Scalar> support, ConstLabelRef support_labels, ConstRowMatrixRef<Scalar> query,
              ConstLabelRef query_labels) {
    return forward(support, support_labels, query, query_labels, "kshot::MatchingNetworks::loss()");
  }

  /**
   * @brief Mean negative log-likelihood and its gradients with respect to every support and query row.
   * @param[out] grad_support n x d, overwritten with dL/dS (through the normalisation).
   * @param[out] grad_query Q x d, overwritten with dL/dQ.
   * @throws std::invalid_argument as loss(), or when a gradient buffer has the wrong shape.
   */
  Scalar loss(ConstRowMatrixRef<Scalar> support, ConstLabelRef support_labels, ConstRowMatrixRef<Scalar> query,
              ConstLabelRef query_labels, RowMatrixRef<Scalar> grad_support, RowMatrixRef<Scalar> grad_query) {
    constexpr const char* where = "kshot::MatchingNetworks::loss()";
    detail::check_shape(grad_support, support.rows(), support.cols(), where, "grad_support");
    detail::check_shape(grad_query, query.rows(), query.cols(), where, "grad_query");
    const Scalar value = forward(support, support_labels, query, query_labels, where);
    const Index q = query.rows(), n = support.rows();
    // dL/dlogits(i, j) = g_i a_ij ([y_j = y_i] - p_i), with g_i = -1 / (Q (p_i + eps)).
    grad_logits_.resize(q, n);
    for (Index i = 0; i < q; ++i) {
      const Label c = query_labels[i];
      const Scalar p = class_probs_(i, c);
      const Scalar g = Scalar(-1) / (Scalar(q) * (p + epsilon_));
      for (Index j = 0; j < n; ++j)
        grad_logits_(i, j) = g * attention_(i, j) * ((support_labels[j] == c ? Scalar(1) : Scalar(0)) - p);
    }
    grad_normalized_.resize(n, support.cols());
    inner_.backward(query, normalized_, logits_, grad_logits_, grad_query, grad_normalized_);
    // Through s_hat = s / |s|: ds = (g - s_hat (s_hat . g)) / |s|; zero rows get zero.
    for (Index j = 0; j < n; ++j) {
      const Scalar inv = inverse_norms_[j];
      if (inv > Scalar(0)) {
        const auto sh = normalized_.row(j);
        const auto gh = grad_normalized_.row(j);
        grad_support.row(j) = inv * (gh - sh.dot(gh) * sh);
      } else {
        grad_support.row(j).setZero();
      }
    }
    return value;
  }

 private:
  void fit_impl(const ConstRowMatrixRef<Scalar>& support, const ConstLabelRef& support_labels, const char* where) {
    KSHOT_CHECK(epsilon_ > Scalar(0) && std::isfinite(epsilon_), where,
                detail::cat("epsilon must be finite and > 0, got ", epsilon_));
    classes_ = detail::check_support(support, support_labels, where);
    const Index n = support.rows();
    normalized_.resize(n, support.cols());
    inverse_norms_.resize(n);
    for (Index j = 0; j < n; ++j) {
      const Scalar norm = support.row(j).norm();
      // A finite row whose norm overflows normalises through a rescaled copy.
      const Scalar inv = norm > Scalar(0) && std::isfinite(norm) ? Scalar(1) / norm : Scalar(0);
      if (inv > Scalar(0) || norm == Scalar(0)) {
        normalized_.row(j) = inv * support.row(j);
      } else {
        const Scalar big = support.row(j).cwiseAbs().maxCoeff();
        normalized_.row(j) = support.row(j) / big;
        normalized_.row(j).normalize();
      }
      inverse_norms_[j] = inv;
    }
    onehot_.setZero(n, classes_);
    for (Index j = 0; j < n; ++j) onehot_(j, support_labels[j]) = Scalar(1);
  }

  // logits_ = Q S_hat^T and attention_ = its row softmax.
  void attention(const ConstRowMatrixRef<Scalar>& query) {
    logits_.resize(query.rows(), normalized_.rows());
    attention_.resize(query.rows(), normalized_.rows());
    inner_.compute(query, normalized_, logits_);
    softmax_rows<Scalar>(logits_, attention_);
  }

  Scalar forward(const ConstRowMatrixRef<Scalar>& support, const ConstLabelRef& support_labels,
                 const ConstRowMatrixRef<Scalar>& query, const ConstLabelRef& query_labels, const char* where) {
    fit_impl(support, support_labels, where);
    detail::check_query(query, support.cols(), where);
    KSHOT_CHECK(query_labels.size() == query.rows(), where,
                detail::cat("query_labels has ", query_labels.size(), " entries but query has ", query.rows(), " rows"));
    KSHOT_CHECK(query.rows() > 0, where, "the query set is empty");
    for (Index i = 0; i < query_labels.size(); ++i)
      KSHOT_CHECK(query_labels[i] >= 0 && query_labels[i] < classes_, where,
                  detail::cat("query_labels[", i, "] = ", query_labels[i], " is outside [0, ", classes_, ")"));
    attention(query);
    class_probs_.resize(query.rows(), classes_);
    detail::gemm_assign(class_probs_, attention_, onehot_);
    Scalar total = 0;
    for (Index i = 0; i < query.rows(); ++i) total -= std::log(class_probs_(i, query_labels[i]) + epsilon_);
    return total / Scalar(query.rows());
  }

  Scalar epsilon_;
  Index classes_ = 0;
  RowMatrixX<Scalar> normalized_, onehot_, logits_, attention_, class_probs_, grad_logits_, grad_normalized_;
  VectorX<Scalar> inverse_norms_;
  PairwiseDistance<Scalar, InnerProduct> inner_;
};

}  // namespace kshot

#endif  // KSHOT_FEWSHOT_MATCHING_NETWORKS_HPP
