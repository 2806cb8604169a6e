/**
 * @file kshot/data/dataset.hpp
 * @brief A dataset as a view: features (N x D) and dense labels over memory the caller owns.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_DATA_DATASET_HPP
#define KSHOT_DATA_DATASET_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/types.hpp"
#include "kshot/data/class_index.hpp"

namespace kshot {

/**
 * @brief Features and labels of N samples, viewed without a copy.
 *
 * Row i of `features()` is sample i; `labels()[i]` is its dense class id in [0, C). The view holds
 * `Eigen::Ref`s: row-major matrices, Maps and row blocks bind without a copy, and the caller keeps the
 * memory alive while the view is used. (A column-major matrix is copied into the view on construction.)
 * The per-class index is built once, on construction.
 *
 * @tparam Scalar float or double.
 */
template <class Scalar>
class DatasetView {
  static_assert(is_supported_scalar_v<Scalar>, "kshot::DatasetView<Scalar>: Scalar must be float or double");

 public:
  /**
   * @param[in] features N x D.
   * @param[in] labels N dense labels in [0, num_classes).
   * @param[in] num_classes C, or -1 for max(labels) + 1.
   * @throws std::invalid_argument if labels has a different length than features has rows, N = 0, D = 0,
   * or a label is out of range.
   */
  DatasetView(ConstRowMatrixRef<Scalar> features, ConstLabelRef labels, Index num_classes = -1)
      : features_(features), labels_(labels), index_(check(features, labels), num_classes) {}

  const ConstRowMatrixRef<Scalar>& features() const noexcept { return features_; }
  const ConstLabelRef& labels() const noexcept { return labels_; }
  const ClassIndex& class_index() const noexcept { return index_; }
  Index size() const noexcept { return features_.rows(); }
  Index dim() const noexcept { return features_.cols(); }
  Index num_classes() const noexcept { return index_.num_classes(); }

 private:
  static ConstLabelRef check(const ConstRowMatrixRef<Scalar>& features, const ConstLabelRef& labels) {
    constexpr const char* where = "kshot::DatasetView::DatasetView()";
    KSHOT_CHECK(features.rows() == labels.size(), where,
                detail::cat("labels has ", labels.size(), " entries but features has ", features.rows(), " rows"));
    KSHOT_CHECK(features.rows() > 0, where, "the dataset is empty (0 rows)");
    KSHOT_CHECK(features.cols() > 0, where, "features has 0 columns");
    return labels;
  }

  ConstRowMatrixRef<Scalar> features_;
  ConstLabelRef labels_;
  ClassIndex index_;
};

}  // namespace kshot

#endif  // KSHOT_DATA_DATASET_HPP
