/**
 * @file kshot/fewshot/protonet.hpp
 * @brief Prototypical networks: class means as prototypes, scores from a distance, and the
 * cross-entropy training loss with its gradients to every support and query row.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_FEWSHOT_PROTONET_HPP
#define KSHOT_FEWSHOT_PROTONET_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/types.hpp"
#include "kshot/distances/pairwise.hpp"
#include "kshot/fewshot/common.hpp"

#include <cmath>
#include <vector>

namespace kshot {

/// The distance a prototypical network scores with.
enum class ProtoDistance {
  euclidean,          ///< scores = -t ||q - p|| (easyfsl's PrototypicalNetworks; the default)
  squared_euclidean,  ///< scores = -t ||q - p||^2 (Snell et al. 2017)
  cosine,             ///< scores = t cos(q, p)
};

/**
 * @brief Prototypical networks (Snell et al. 2017).
 *
 * Prototypes are the class means of the support embeddings,
 * @f$ p_c = \frac{1}{|S_c|}\sum_{x \in S_c} x @f$; a query's score for class c is
 * @f$ -t\,d(q, p_c) @f$ (Euclidean by default, as easyfsl) or @f$ t\cos(q, p_c) @f$; the training loss is
 * the mean cross-entropy of the queries, @f$ L = -\frac{1}{Q}\sum_i \log \mathrm{softmax}(s_i)_{y_i} @f$.
 *
 * `loss(..., grad_support, grad_query)` returns the analytic gradients: with
 * @f$ G = \partial L/\partial D = \mp t (\mathrm{softmax}(s) - Y)/Q @f$ the distance backward gives
 * @f$ \partial L/\partial Q @f$ and @f$ \partial L/\partial P @f$, and each support row receives
 * @f$ \partial L/\partial p_c / |S_c| @f$.
 *
 * @code
 * @inproceedings{snell2017prototypical,
 *   title={Prototypical Networks for Few-shot Learning}, author={Snell, Jake and Swersky, Kevin and Zemel, Richard},
 *   booktitle={Advances in Neural Information Processing Systems}, year={2017}}
 * @endcode
 *
 * @tparam Scalar float or double.
 * @note Scratch matrices are members, reused while shapes repeat. Not thread-safe; copy it per thread.
 */
template <class Scalar>
class ProtoNet {
  static_assert(is_supported_scalar_v<Scalar>, "kshot::ProtoNet<Scalar>: Scalar must be float or double");

 public:
  /// @param distance the scoring distance; @param temperature t > 0, the logit scale.
  explicit ProtoNet(ProtoDistance distance = ProtoDistance::euclidean, Scalar temperature = Scalar(1))
      : distance_(distance), temperature_(temperature) {}

  ProtoDistance distance() const noexcept { return distance_; }
  Scalar temperature() const noexcept { return temperature_; }

  /**
   * @brief Computes the prototypes.
   * @throws std::invalid_argument on a bad support set (see detail::check_support) or temperature <= 0.
   */
  void fit(ConstRowMatrixRef<Scalar> support, ConstLabelRef support_labels) {
    fit_impl(support, support_labels, "kshot::ProtoNet::fit()");
  }

  /// Q x N scores of `query` (larger is closer). @throws std::invalid_argument before fit() or on bad shapes.
  void scores(ConstRowMatrixRef<Scalar> query, RowMatrixRef<Scalar> out) {
    constexpr const char* where = "kshot::ProtoNet::scores()";
    KSHOT_CHECK(classes_ > 0, where, "fit() has not been called");
    detail::check_query(query, prototypes_.cols(), where);
    detail::check_shape(out, query.rows(), classes_, where, "out");
    distances(query, out);
    to_logits(out);
  }

  RowMatrixX<Scalar> scores(ConstRowMatrixRef<Scalar> query) {
    RowMatrixX<Scalar> out(query.rows(), classes_);
    scores(query, out);
    return out;
  }

  LabelVector predict(ConstRowMatrixRef<Scalar> query) { return argmax_rows<Scalar>(scores(query)); }

  Index num_classes() const noexcept { return classes_; }
  const RowMatrixX<Scalar>& prototypes() const noexcept { return prototypes_; }

  /// Mean query cross-entropy of an episode (fits the prototypes first).
  Scalar loss(ConstRowMatrixRef<Scalar> support, ConstLabelRef support_labels, ConstRowMatrixRef<Scalar> query,
              ConstLabelRef query_labels) {
    return forward(support, support_labels, query, query_labels, "kshot::ProtoNet::loss()");
  }

  /**
   * @brief Mean query cross-entropy and its gradients with respect to every support and query row.
   * @param[out] grad_support n x d, overwritten.
   * @param[out] grad_query Q x d, overwritten.
   * @throws std::invalid_argument on bad shapes, labels or values.
   */
  Scalar loss(ConstRowMatrixRef<Scalar> support, ConstLabelRef support_labels, ConstRowMatrixRef<Scalar> query,
              ConstLabelRef query_labels, RowMatrixRef<Scalar> grad_support, RowMatrixRef<Scalar> grad_query) {
    constexpr const char* where = "kshot::ProtoNet::loss()";
    detail::check_shape(grad_support, support.rows(), support.cols(), where, "grad_support");
    detail::check_shape(grad_query, query.rows(), query.cols(), where, "grad_query");
    const Scalar value = forward(support, support_labels, query, query_labels, where);
    // dL/dlogits = (softmax - onehot) / Q (probs_ holds the softmax); logits = -t D or t S.
    for (Index i = 0; i < query.rows(); ++i) probs_(i, query_labels[i]) -= Scalar(1);
    const Scalar sign = distance_ == ProtoDistance::cosine ? temperature_ : -temperature_;
    grad_dist_.noalias() = (sign / Scalar(query.rows())) * probs_;
    grad_prototypes_.resize(classes_, support.cols());
    switch (distance_) {
      case ProtoDistance::euclidean:
        // d = sqrt(s) with s the squared distance: dL/ds = (dL/dd / d) / 2, and 0 through pairs at distance 0 (as
        // the Euclidean backward does). Halving, and the squared backward's doubling, are exact (short of
        // subnormals), so this reproduces the Euclidean backward bit for bit.
        for (Index i = 0; i < grad_dist_.rows(); ++i)
          for (Index c = 0; c < classes_; ++c) {
            const Scalar d = dist_(i, c);
            grad_dist_(i, c) = d > Scalar(0) ? grad_dist_(i, c) / d * Scalar(0.5) : Scalar(0);
          }
        squared_.backward(query, prototypes_, dist_, grad_dist_, grad_query, grad_prototypes_);
        break;
      case ProtoDistance::squared_euclidean:
        squared_.backward(query, prototypes_, dist_, grad_dist_, grad_query, grad_prototypes_);
        break;
      case ProtoDistance::cosine:
        cosine_.backward(query, prototypes_, dist_, grad_dist_, grad_query, grad_prototypes_);
        break;
    }
    for (Index j = 0; j < support.rows(); ++j) {
      const Label c = support_labels[j];
      grad_support.row(j) = grad_prototypes_.row(c) / Scalar(counts_[static_cast<std::size_t>(c)]);
    }
    return value;
  }

 private:
  void fit_impl(const ConstRowMatrixRef<Scalar>& support, const ConstLabelRef& support_labels, const char* where) {
    KSHOT_CHECK(temperature_ > Scalar(0) && std::isfinite(temperature_), where,
                detail::cat("temperature must be finite and > 0, got ", temperature_));
    classes_ = detail::check_support(support, support_labels, where);
    prototypes_.resize(classes_, support.cols());
    class_means<Scalar>(support, support_labels, classes_, prototypes_);
    counts_.assign(static_cast<std::size_t>(classes_), 0);
    for (Index i = 0; i < support_labels.size(); ++i) ++counts_[static_cast<std::size_t>(support_labels[i])];
  }

  void distances(const ConstRowMatrixRef<Scalar>& query, RowMatrixRef<Scalar> out) {
    switch (distance_) {
      case ProtoDistance::euclidean:
        // The square root of the squared distances: the same bits as the Euclidean kernel, one kernel fewer to
        // compile.
        squared_.compute(query, prototypes_, out);
        out = out.array().sqrt();
        break;
      case ProtoDistance::squared_euclidean: squared_.compute(query, prototypes_, out); break;
      case ProtoDistance::cosine: cosine_.compute(query, prototypes_, out); break;
    }
  }

  template <class Out>
  void to_logits(Out& out) const {
    out *= distance_ == ProtoDistance::cosine ? temperature_ : -temperature_;
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
    dist_.resize(query.rows(), classes_);
    distances(query, dist_);
    probs_ = dist_;
    to_logits(probs_);
    // Cross-entropy by log-sum-exp; probs_ ends as the softmax.
    Scalar total = 0;
    for (Index i = 0; i < query.rows(); ++i) {
      auto row = probs_.row(i);
      const Scalar m = row.maxCoeff();
      const Scalar target = row(query_labels[i]);
      row = (row.array() - m).exp();
      const Scalar sum = row.sum();
      total += m + std::log(sum) - target;
      row /= sum;
    }
    return total / Scalar(query.rows());
  }

  ProtoDistance distance_;
  Scalar temperature_;
  Index classes_ = 0;
  std::vector<Index> counts_;
  RowMatrixX<Scalar> prototypes_, dist_, probs_, grad_dist_, grad_prototypes_;
  PairwiseDistance<Scalar, SquaredEuclidean> squared_;
  PairwiseDistance<Scalar, CosineSimilarity> cosine_;
};

}  // namespace kshot

#endif  // KSHOT_FEWSHOT_PROTONET_HPP
