/**
 * @file kshot/fewshot/laplacian_shot.hpp
 * @brief LaplacianShot: BD-CSPN prototypes, then soft assignments regularised by a k-nearest-neighbour
 * graph over the queries, solved by bound updates (transductive).
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_FEWSHOT_LAPLACIAN_SHOT_HPP
#define KSHOT_FEWSHOT_LAPLACIAN_SHOT_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/types.hpp"
#include "kshot/distances/pairwise.hpp"
#include "kshot/fewshot/bd_cspn.hpp"
#include "kshot/fewshot/common.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace kshot {

/**
 * @brief LaplacianShot (Ziko et al. 2020), as easyfsl's `LaplacianShot`.
 *
 * The prototypes @f$ p_c @f$ are BD-CSPN's rectified prototypes (see BDCSPN). With
 * @f$ a_{qc} = \lVert q - p_c \rVert^2 @f$ and the affinity @f$ W_{qr} = 1 @f$ when r is one of the
 * `knn - 1` nearest *other* queries of q by Euclidean distance (0 otherwise; W is not symmetrised), the soft
 * assignments start at @f$ y_q = \mathrm{softmax}(-a_q) @f$ and are updated `inference_steps` times by
 * @f[ y_q \leftarrow \mathrm{softmax}\big(-a_q + \lambda \textstyle\sum_r W_{qr} y_r\big), @f]
 * stopping early (after the third update or later) when the bound
 * @f$ E(y) = \sum_{q,c} y_{qc}\log(y_{qc} + 10^{-12}) + a_{qc} y_{qc} - \lambda (W y)_{qc} y_{qc} @f$
 * changes by at most @f$ 10^{-6}|E_{\text{old}}| @f$. The output is the soft assignments (rows sum to 1).
 *
 * Hyperparameters are public members, checked by fit() and scores():
 * | member | default | valid |
 * |---|---|---|
 * | inference_steps | 20 | >= 0 |
 * | knn | 3 | >= 1 (the graph has knn - 1 neighbours per query) |
 * | lambda_regularization | 0.7 | finite, >= 0 |
 *
 * @code
 * @inproceedings{ziko2020laplacian, title={Laplacian Regularized Few-Shot Learning},
 *   author={Ziko, Imtiaz Masud and Dolz, Jose and Granger, Eric and Ben Ayed, Ismail},
 *   booktitle={International Conference on Machine Learning (ICML)}, pages={11660--11670}, year={2020}}
 * @endcode
 *
 * @tparam Scalar float or double.
 * @note Differences from easyfsl, both only where easyfsl would fail or is ambiguous: with fewer than knn
 * queries each query takes all the others as neighbours (easyfsl's topk raises), and with duplicate queries
 * the neighbours exclude the query itself explicitly, with ties to the lower index (easyfsl drops the first
 * column of topk, which is the query itself unless it has an exact duplicate).
 * @note Scratch matrices are members, reused while shapes repeat. Not thread-safe; copy it per thread.
 */
template <class Scalar>
class LaplacianShot {
  static_assert(is_supported_scalar_v<Scalar>, "kshot::LaplacianShot<Scalar>: Scalar must be float or double");

 public:
  Index inference_steps = 20;              ///< bound-update iterations (>= 0)
  Index knn = 3;                           ///< neighbours in the query graph, the query itself included (>= 1)
  Scalar lambda_regularization = Scalar(0.7);  ///< weight of the Laplacian term (>= 0)

  /**
   * @brief Checks the hyperparameters and stores the support set.
   * @throws std::invalid_argument on a bad support set (see BDCSPN::fit()) or hyperparameter.
   */
  void fit(ConstRowMatrixRef<Scalar> support, ConstLabelRef support_labels) {
    constexpr const char* where = "kshot::LaplacianShot::fit()";
    check_hyperparameters(where);
    classes_ = detail::check_support<Scalar>(support, support_labels, where);
    rectifier_.fit(support, support_labels);
  }

  /**
   * @brief Soft assignments of the whole query set (Q x N, rows sum to 1).
   * @param[in] query Q x d query features.
   * @param[out] out Q x N, overwritten.
   * @throws std::invalid_argument before fit(), on a bad hyperparameter, if query has the wrong number of
   * columns or a non-finite value, or if out is not Q x N.
   */
  void scores(ConstRowMatrixRef<Scalar> query, RowMatrixRef<Scalar> out) {
    constexpr const char* where = "kshot::LaplacianShot::scores()";
    KSHOT_CHECK(classes_ > 0, where, "fit() has not been called");
    check_hyperparameters(where);
    detail::check_query<Scalar>(query, rectifier_.prototypes().cols(), where);
    detail::check_shape(out, query.rows(), classes_, where, "out");
    rectifier_.rectify(query);
    const Index q = query.rows();
    if (q == 0) return;
    distances_.resize(q, classes_);
    squared_.compute(query, rectifier_.prototypes(), distances_);
    build_graph(query);
    bound_updates(out);
  }

  /// Soft assignments as a new Q x N matrix; see scores(query, out).
  RowMatrixX<Scalar> scores(ConstRowMatrixRef<Scalar> query) {
    RowMatrixX<Scalar> out(query.rows(), classes_);
    scores(query, out);
    return out;
  }

  /// The class of the largest soft assignment per query (ties to the lower class).
  LabelVector predict(ConstRowMatrixRef<Scalar> query) { return argmax_rows<Scalar>(scores(query)); }

  Index num_classes() const noexcept { return classes_; }
  /// The class means after fit(); BD-CSPN's rectified prototypes after scores() or predict().
  const RowMatrixX<Scalar>& prototypes() const noexcept { return rectifier_.prototypes(); }
  /// The neighbours of each query in the last graph (row q lists the indices r with W_qr = 1).
  const std::vector<std::vector<Index>>& neighbours() const noexcept { return neighbours_; }
  /// Bound updates run by the last scores() call.
  Index steps_run() const noexcept { return steps_run_; }

 private:
  void check_hyperparameters(const char* where) const {
    KSHOT_CHECK(inference_steps >= 0, where, detail::cat("inference_steps must be >= 0, got ", inference_steps));
    KSHOT_CHECK(knn >= 1, where, detail::cat("knn must be >= 1, got ", knn));
    KSHOT_CHECK(std::isfinite(lambda_regularization) && lambda_regularization >= Scalar(0), where,
                detail::cat("lambda_regularization must be finite and >= 0, got ", lambda_regularization));
  }

  // The knn - 1 nearest other queries of each query (fewer when Q < knn); ties to the lower index.
  void build_graph(const ConstRowMatrixRef<Scalar>& query) {
    const Index q = query.rows();
    const Index k = std::min(knn - 1, q - 1);
    neighbours_.resize(static_cast<std::size_t>(q));
    if (k <= 0) {
      for (auto& list : neighbours_) list.clear();
      return;
    }
    query_distances_.resize(q, q);
    squared_.compute_self(query, query_distances_);
    order_.resize(static_cast<std::size_t>(q - 1));
    for (Index i = 0; i < q; ++i) {
      std::size_t slot = 0;
      for (Index r = 0; r < q; ++r)
        if (r != i) order_[slot++] = r;
      const auto row = query_distances_.row(i);
      std::partial_sort(order_.begin(), order_.begin() + k, order_.end(), [&](Index a, Index b) {
        return row(a) < row(b) || (row(a) == row(b) && a < b);
      });
      neighbours_[static_cast<std::size_t>(i)].assign(order_.begin(), order_.begin() + k);
    }
  }

  // out = (W y) for the current neighbour lists.
  void propagate(const RowMatrixX<Scalar>& y, RowMatrixX<Scalar>& out) const {
    out.setZero(y.rows(), y.cols());
    for (Index i = 0; i < y.rows(); ++i)
      for (Index r : neighbours_[static_cast<std::size_t>(i)]) out.row(i) += y.row(r);
  }

  Scalar upper_bound(const RowMatrixX<Scalar>& y) {
    propagate(y, pairwise_);
    Scalar total = 0;
    for (Index i = 0; i < y.rows(); ++i)
      for (Index c = 0; c < y.cols(); ++c) {
        const Scalar v = y(i, c);
        total += v * std::log(v + Scalar(1e-12)) + distances_(i, c) * v - lambda_regularization * pairwise_(i, c) * v;
      }
    return total;
  }

  void bound_updates(RowMatrixRef<Scalar> out) {
    logits_ = -distances_;
    assignments_.resize(logits_.rows(), logits_.cols());
    softmax_rows<Scalar>(logits_, assignments_);
    Scalar old_bound = std::numeric_limits<Scalar>::infinity();
    steps_run_ = 0;
    for (Index step = 0; step < inference_steps; ++step) {
      propagate(assignments_, pairwise_);
      logits_ = lambda_regularization * pairwise_ - distances_;
      softmax_rows<Scalar>(logits_, assignments_);
      ++steps_run_;
      const Scalar bound = upper_bound(assignments_);
      if (step > 1 && std::abs(bound - old_bound) <= Scalar(1e-6) * std::abs(old_bound)) break;
      old_bound = bound;
    }
    out = assignments_;
  }

  Index classes_ = 0;
  Index steps_run_ = 0;
  BDCSPN<Scalar> rectifier_;
  RowMatrixX<Scalar> distances_, query_distances_, logits_, assignments_, pairwise_;
  std::vector<std::vector<Index>> neighbours_;
  std::vector<Index> order_;
  PairwiseDistance<Scalar, SquaredEuclidean> squared_;
};

}  // namespace kshot

#endif  // KSHOT_FEWSHOT_LAPLACIAN_SHOT_HPP
