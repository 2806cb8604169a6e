/**
 * @file kshot/fewshot/common.hpp
 * @brief What every few-shot classifier shares: input checks, class means (prototypes), row-wise
 * softmax and log-softmax, and argmax with ties to the lower class.
 *
 * The classifier interface (every class in kshot/fewshot/ follows it):
 * @code
 * template <class Scalar> class SomeClassifier {
 *  public:
 *   void fit(ConstRowMatrixRef<Scalar> support, ConstLabelRef support_labels);  // labels 0..N-1, each present
 *   void scores(ConstRowMatrixRef<Scalar> query, RowMatrixRef<Scalar> out);     // out: Q x N, larger = better
 *   RowMatrixX<Scalar> scores(ConstRowMatrixRef<Scalar> query);
 *   LabelVector predict(ConstRowMatrixRef<Scalar> query);                       // argmax of scores
 *   Index num_classes() const;
 * };
 * @endcode
 * Classifiers are copyable, so that episodic evaluation can give each thread its own copy.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_FEWSHOT_COMMON_HPP
#define KSHOT_FEWSHOT_COMMON_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/types.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

namespace kshot {
namespace detail {

/**
 * @brief Per-class counters: inline storage for up to 128 classes (every usual episode), the heap beyond, so
 * that the per-episode checks and class means allocate nothing in a training loop.
 */
class ClassCounts {
 public:
  explicit ClassCounts(Index classes) : size_(classes) {
    if (classes > kInline) heap_.assign(static_cast<std::size_t>(classes), 0);
    else std::fill(inline_, inline_ + classes, Index(0));
  }
  Index& operator[](Index c) noexcept { return size_ > kInline ? heap_[static_cast<std::size_t>(c)] : inline_[c]; }

 private:
  static constexpr Index kInline = 128;
  Index size_;
  Index inline_[kInline];
  std::vector<Index> heap_;
};

/**
 * @brief Checks a support set and returns its number of classes N = max(label) + 1.
 * @throws std::invalid_argument if labels and support differ in length, the support is empty, has no
 * columns, has a non-finite value, a label is negative, the largest label is not below the number of labels
 * (checked before anything is sized by it), or a class in 0..N-1 has no example.
 */
template <class Scalar>
Index check_support(const ConstRowMatrixRef<Scalar>& support, const ConstLabelRef& labels, const char* where) {
  KSHOT_CHECK(support.rows() == labels.size(), where,
              cat("support_labels has ", labels.size(), " entries but support has ", support.rows(), " rows"));
  KSHOT_CHECK(support.rows() > 0, where, "the support set is empty");
  KSHOT_CHECK(support.cols() > 0, where, "support has 0 columns");
  check_finite(support, where, "support");
  KSHOT_CHECK(labels.minCoeff() >= 0, where, cat("support_labels has a negative label (", labels.minCoeff(), ")"));
  const Index classes = Index(labels.maxCoeff()) + 1;
  // Every class 0..N-1 needs an example, so N cannot exceed the number of labels: checked before the counters
  // (sized by the largest label) are allocated.
  KSHOT_CHECK(classes <= labels.size(), where,
              cat("support_labels has the label ", classes - 1, " but only ", labels.size(),
                  " entries, so classes 0..", classes - 1, " cannot all have a support example"));
  ClassCounts counts(classes);
  for (Index i = 0; i < labels.size(); ++i) ++counts[labels[i]];
  for (Index c = 0; c < classes; ++c)
    KSHOT_CHECK(counts[c] > 0, where,
                cat("class ", c, " has no support example (labels must cover 0..", classes - 1, ")"));
  return classes;
}

/// Checks that `query` is finite and has `dim` columns.
template <class Scalar>
void check_query(const ConstRowMatrixRef<Scalar>& query, Index dim, const char* where) {
  KSHOT_CHECK(query.cols() == dim, where, cat("query has ", query.cols(), " columns but the support had ", dim));
  check_finite(query, where, "query");
}

}  // namespace detail

/**
 * @brief Class means: row c of `out` is the mean of the rows of `x` labelled c.
 * @param[in] x n x d.
 * @param[in] labels n labels in [0, classes).
 * @param[in] classes C.
 * @param[out] out C x d, overwritten (a class without rows gets a zero row).
 */
template <class Scalar>
void class_means(ConstRowMatrixRef<Scalar> x, ConstLabelRef labels, Index classes, RowMatrixRef<Scalar> out) {
  detail::check_shape(out, classes, x.cols(), "kshot::class_means()", "out");
  out.setZero();
  detail::ClassCounts counts(classes);
  for (Index i = 0; i < x.rows(); ++i) {
    out.row(labels[i]) += x.row(i);
    ++counts[labels[i]];
  }
  for (Index c = 0; c < classes; ++c)
    if (counts[c] > 0) out.row(c) /= Scalar(counts[c]);
}

/// Row-wise softmax of `logits` into `out` (same shape), computed stably (max subtracted).
template <class Scalar>
void softmax_rows(ConstRowMatrixRef<Scalar> logits, RowMatrixRef<Scalar> out) {
  for (Index i = 0; i < logits.rows(); ++i) {
    const Scalar m = logits.row(i).maxCoeff();
    out.row(i) = (logits.row(i).array() - m).exp();
    out.row(i) /= out.row(i).sum();
  }
}

/// Row-wise log-softmax of `logits` into `out` (same shape), by log-sum-exp.
template <class Scalar>
void log_softmax_rows(ConstRowMatrixRef<Scalar> logits, RowMatrixRef<Scalar> out) {
  for (Index i = 0; i < logits.rows(); ++i) {
    const Scalar m = logits.row(i).maxCoeff();
    const Scalar lse = m + std::log((logits.row(i).array() - m).exp().sum());
    out.row(i) = logits.row(i).array() - lse;
  }
}

/// Per-row index of the largest score; ties go to the lower class.
template <class Scalar>
LabelVector argmax_rows(ConstRowMatrixRef<Scalar> scores) {
  LabelVector out(scores.rows());
  for (Index i = 0; i < scores.rows(); ++i) {
    Index best = 0;
    for (Index c = 1; c < scores.cols(); ++c)
      if (scores(i, c) > scores(i, best)) best = c;
    out[i] = static_cast<Label>(best);
  }
  return out;
}

}  // namespace kshot

#endif  // KSHOT_FEWSHOT_COMMON_HPP
