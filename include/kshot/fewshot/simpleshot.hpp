/**
 * @file kshot/fewshot/simpleshot.hpp
 * @brief SimpleShot: optional centring by a base-class mean and L2 normalisation, then the nearest class
 * mean by cosine similarity.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_FEWSHOT_SIMPLESHOT_HPP
#define KSHOT_FEWSHOT_SIMPLESHOT_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/types.hpp"
#include "kshot/fewshot/common.hpp"
#include "kshot/fewshot/protonet.hpp"

#include <cmath>

namespace kshot {

/**
 * @brief SimpleShot (Wang et al. 2019): nearest class mean after feature transformation.
 *
 * Each feature is transformed as @f$ \hat x = (x - \mu) @f$ (when a centre @f$\mu@f$, typically the mean
 * of the base-class features, is set) and then @f$ \hat x / \lVert \hat x \rVert @f$ (when L2 normalisation
 * is on; the paper's "CL2N"). Prototypes are the class means of the transformed support; scores are the
 * cosine similarity of the transformed query to each prototype, without temperature.
 *
 * With no centre and no normalisation (the default) this is exactly easyfsl's SimpleShot. The cross-entropy
 * loss on the scores and its gradients flow back through the transformation to the raw features.
 *
 * @code
 * @article{wang2019simpleshot, title={SimpleShot: Revisiting Nearest-Neighbor Classification for Few-Shot Learning},
 *   author={Wang, Yan and Chao, Wei-Lun and Weinberger, Kilian Q and van der Maaten, Laurens},
 *   journal={arXiv:1911.04623}, year={2019}}
 * @endcode
 * @tparam Scalar float or double.
 */
template <class Scalar>
class SimpleShot {
  static_assert(is_supported_scalar_v<Scalar>, "kshot::SimpleShot<Scalar>: Scalar must be float or double");

 public:
  /// easyfsl's SimpleShot: no centring, no normalisation.
  SimpleShot() = default;

  /**
   * @param center 1 x d vector subtracted from every feature (empty: none), e.g. the base-class mean.
   * @param l2_normalize whether to scale each (centred) feature to unit length.
   * @throws std::invalid_argument if center has a non-finite value.
   */
  SimpleShot(RowVectorX<Scalar> center, bool l2_normalize) : center_(std::move(center)), normalize_(l2_normalize) {
    detail::check_finite(center_, "kshot::SimpleShot::SimpleShot()", "center");
  }

  void fit(ConstRowMatrixRef<Scalar> support, ConstLabelRef support_labels) {
    transform(support, support_t_, support_norms_, "kshot::SimpleShot::fit()");
    net_.fit(support_t_, support_labels);
  }

  void scores(ConstRowMatrixRef<Scalar> query, RowMatrixRef<Scalar> out) {
    transform(query, query_t_, query_norms_, "kshot::SimpleShot::scores()");
    net_.scores(query_t_, out);
  }

  RowMatrixX<Scalar> scores(ConstRowMatrixRef<Scalar> query) {
    RowMatrixX<Scalar> out(query.rows(), net_.num_classes());
    scores(query, out);
    return out;
  }

  LabelVector predict(ConstRowMatrixRef<Scalar> query) { return argmax_rows<Scalar>(scores(query)); }
  Index num_classes() const noexcept { return net_.num_classes(); }
  /// Class means of the transformed support.
  const RowMatrixX<Scalar>& prototypes() const noexcept { return net_.prototypes(); }

  /// Mean query cross-entropy on the cosine scores.
  Scalar loss(ConstRowMatrixRef<Scalar> support, ConstLabelRef support_labels, ConstRowMatrixRef<Scalar> query,
              ConstLabelRef query_labels) {
    constexpr const char* where = "kshot::SimpleShot::loss()";
    transform(support, support_t_, support_norms_, where);
    transform(query, query_t_, query_norms_, where);
    return net_.loss(support_t_, support_labels, query_t_, query_labels);
  }

  /// Mean query cross-entropy and its gradients with respect to the raw support and query features.
  Scalar loss(ConstRowMatrixRef<Scalar> support, ConstLabelRef support_labels, ConstRowMatrixRef<Scalar> query,
              ConstLabelRef query_labels, RowMatrixRef<Scalar> grad_support, RowMatrixRef<Scalar> grad_query) {
    constexpr const char* where = "kshot::SimpleShot::loss()";
    transform(support, support_t_, support_norms_, where);
    transform(query, query_t_, query_norms_, where);
    const Scalar value = net_.loss(support_t_, support_labels, query_t_, query_labels, grad_support, grad_query);
    if (normalize_) {
      back_through_normalisation(support_t_, support_norms_, grad_support);
      back_through_normalisation(query_t_, query_norms_, grad_query);
    }
    return value;
  }

 private:
  void transform(const ConstRowMatrixRef<Scalar>& x, RowMatrixX<Scalar>& out, VectorX<Scalar>& norms, const char* where) {
    detail::check_finite(x, where, "features");
    KSHOT_CHECK(center_.size() == 0 || center_.size() == x.cols(), where,
                detail::cat("center has ", center_.size(), " entries but the features have ", x.cols(), " columns"));
    out = x;
    if (center_.size() > 0) out.rowwise() -= center_;
    if (normalize_) {
      norms.resize(out.rows());
      for (Index i = 0; i < out.rows(); ++i) {
        norms[i] = out.row(i).norm();
        if (norms[i] > Scalar(0)) out.row(i) /= norms[i];
      }
    }
  }

  // d(x / |x|)/dx applied to g: (g - y (y . g)) / |x|; a zero row gets a zero gradient.
  static void back_through_normalisation(const RowMatrixX<Scalar>& y, const VectorX<Scalar>& norms,
                                         RowMatrixRef<Scalar>& grad) {
    for (Index i = 0; i < y.rows(); ++i) {
      if (norms[i] > Scalar(0)) {
        grad.row(i) = (grad.row(i) - y.row(i) * y.row(i).dot(grad.row(i))) / norms[i];
      } else {
        grad.row(i).setZero();
      }
    }
  }

  RowVectorX<Scalar> center_;
  bool normalize_ = false;
  ProtoNet<Scalar> net_{ProtoDistance::cosine, Scalar(1)};
  RowMatrixX<Scalar> support_t_, query_t_;
  VectorX<Scalar> support_norms_, query_norms_;
};

}  // namespace kshot

#endif  // KSHOT_FEWSHOT_SIMPLESHOT_HPP
