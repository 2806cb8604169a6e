/**
 * @file kshot/fewshot/bd_cspn.hpp
 * @brief BD-CSPN: prototype rectification by feature shifting and label propagation from the queries,
 * then cosine scores to the rectified prototypes (transductive).
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_FEWSHOT_BD_CSPN_HPP
#define KSHOT_FEWSHOT_BD_CSPN_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/types.hpp"
#include "kshot/distances/pairwise.hpp"
#include "kshot/fewshot/common.hpp"

#include <cmath>

namespace kshot {

/**
 * @brief BD-CSPN (Liu et al. 2020), as easyfsl's `BDCSPN`: prototypes rectified with the query set.
 *
 * With @f$ p^0_c @f$ the class means of the support and @f$ \cos @f$ the cosine similarity:
 *  1. the queries are shifted by the difference of the set means,
 *     @f$ \tilde q = q + \bar s - \bar q @f$;
 *  2. each support row gets the weight @f$ w_i = e^{\cos(x_i, p^0_{y_i})} @f$ and each query the weight
 *     @f$ w_q = e^{\cos(\tilde q, p^0_{\hat y_q})} @f$ for its pseudo-label
 *     @f$ \hat y_q = \arg\max_c \cos(\tilde q, p^0_c) @f$;
 *  3. @f$ p_c = \big(\sum_{i: y_i = c} w_i x_i + \sum_{q: \hat y_q = c} w_q \tilde q\big) /
 *     \big(\sum_{i: y_i = c} w_i + \sum_{q: \hat y_q = c} w_q\big) @f$;
 *  4. the scores are @f$ \cos(q, p_c) @f$ of the *unshifted* queries, without temperature.
 *
 * `scores()` runs the rectification on the whole query set it is given (the method is transductive), so a
 * query's scores depend on the other queries. Each call starts again from the support class means.
 *
 * @code
 * @inproceedings{liu2020prototype, title={Prototype Rectification for Few-Shot Learning},
 *   author={Liu, Jinlu and Song, Liang and Qin, Yongqiang}, booktitle={European Conference on Computer Vision
 *   (ECCV)}, pages={741--756}, year={2020}}
 * @endcode
 *
 * @tparam Scalar float or double.
 * @note A zero feature vector has cosine 0 with everything (easyfsl's F.normalize gives the same), so every
 * output stays finite. Ties in the pseudo-labels go to the lower class.
 * @note Scratch matrices are members, reused while shapes repeat. Not thread-safe; copy it per thread.
 * @note Column-major inputs are copied into row-major temporaries when they bind.
 */
template <class Scalar>
class BDCSPN {
  static_assert(is_supported_scalar_v<Scalar>, "kshot::BDCSPN<Scalar>: Scalar must be float or double");

 public:
  /**
   * @brief Stores the support set and computes its class means.
   * @param[in] support n x d support features.
   * @param[in] support_labels n labels covering 0..N-1.
   * @throws std::invalid_argument if the lengths differ, the support is empty or not finite, a label is
   * negative, or a class in 0..N-1 has no example.
   */
  void fit(ConstRowMatrixRef<Scalar> support, ConstLabelRef support_labels) {
    constexpr const char* where = "kshot::BDCSPN::fit()";
    classes_ = detail::check_support<Scalar>(support, support_labels, where);
    support_ = support;
    labels_ = support_labels;
    means_.resize(classes_, support.cols());
    class_means<Scalar>(support_, labels_, classes_, means_);
    prototypes_ = means_;
  }

  /**
   * @brief Rectifies the prototypes with `query`, then writes the Q x N cosine scores to them.
   * @param[in] query Q x d query features (the whole transductive batch).
   * @param[out] out Q x N, overwritten.
   * @throws std::invalid_argument before fit(), if query has the wrong number of columns or a non-finite
   * value, or if out is not Q x N.
   */
  void scores(ConstRowMatrixRef<Scalar> query, RowMatrixRef<Scalar> out) {
    constexpr const char* where = "kshot::BDCSPN::scores()";
    check_ready(query, where);
    detail::check_shape(out, query.rows(), classes_, where, "out");
    rectify_checked(query);
    cosine_.compute(query, prototypes_, out);
  }

  /// Q x N cosine scores as a new matrix; see scores(query, out).
  RowMatrixX<Scalar> scores(ConstRowMatrixRef<Scalar> query) {
    RowMatrixX<Scalar> out(query.rows(), classes_);
    scores(query, out);
    return out;
  }

  /// The class of the largest score per query (ties to the lower class).
  LabelVector predict(ConstRowMatrixRef<Scalar> query) { return argmax_rows<Scalar>(scores(query)); }

  /**
   * @brief Only the rectification: after it, prototypes() holds the rectified prototypes for `query`.
   * @throws std::invalid_argument as scores().
   */
  void rectify(ConstRowMatrixRef<Scalar> query) {
    check_ready(query, "kshot::BDCSPN::rectify()");
    rectify_checked(query);
  }

  Index num_classes() const noexcept { return classes_; }
  /// The class means after fit(); the rectified prototypes after scores(), predict() or rectify().
  const RowMatrixX<Scalar>& prototypes() const noexcept { return prototypes_; }
  /// The support class means (the prototypes before rectification).
  const RowMatrixX<Scalar>& initial_prototypes() const noexcept { return means_; }

 private:
  void check_ready(const ConstRowMatrixRef<Scalar>& query, const char* where) const {
    KSHOT_CHECK(classes_ > 0, where, "fit() has not been called");
    detail::check_query<Scalar>(query, support_.cols(), where);
  }

  void rectify_checked(const ConstRowMatrixRef<Scalar>& query) {
    const Index n = support_.rows(), q = query.rows(), d = support_.cols();
    if (q == 0) {
      prototypes_ = means_;
      return;
    }
    shift_ = support_.colwise().mean() - query.colwise().mean();
    shifted_ = query;
    shifted_.rowwise() += shift_;
    support_cos_.resize(n, classes_);
    query_cos_.resize(q, classes_);
    cosine_.compute(support_, means_, support_cos_);
    cosine_.compute(shifted_, means_, query_cos_);
    query_cos_ = query_cos_.array().exp();  // argmax on the weights, as easyfsl does
    const LabelVector pseudo = argmax_rows<Scalar>(query_cos_);

    prototypes_.setZero(classes_, d);
    weight_sums_.setZero(classes_);
    for (Index i = 0; i < n; ++i) {
      const Label c = labels_[i];
      const Scalar w = std::exp(support_cos_(i, c));
      prototypes_.row(c) += w * support_.row(i);
      weight_sums_[c] += w;
    }
    for (Index j = 0; j < q; ++j) {
      const Label c = pseudo[j];
      const Scalar w = query_cos_(j, c);
      prototypes_.row(c) += w * shifted_.row(j);
      weight_sums_[c] += w;
    }
    // Every class has a support row with weight >= e^-1, so the sums are positive.
    for (Index c = 0; c < classes_; ++c) prototypes_.row(c) /= weight_sums_[c];
  }

  Index classes_ = 0;
  RowMatrixX<Scalar> support_, means_, prototypes_, shifted_, support_cos_, query_cos_;
  LabelVector labels_;
  RowVectorX<Scalar> shift_;
  VectorX<Scalar> weight_sums_;
  PairwiseDistance<Scalar, CosineSimilarity> cosine_;
};

}  // namespace kshot

#endif  // KSHOT_FEWSHOT_BD_CSPN_HPP
