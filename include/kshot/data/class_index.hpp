/**
 * @file kshot/data/class_index.hpp
 * @brief The rows of each class, built once (compressed layout), and the filtering of small classes.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_DATA_CLASS_INDEX_HPP
#define KSHOT_DATA_CLASS_INDEX_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/types.hpp"

#include <algorithm>
#include <vector>

namespace kshot {

/**
 * @brief For every class 0..C-1, the rows of the dataset that carry it, in increasing row order.
 *
 * Stored as one array of row indices grouped by class plus C + 1 offsets (the CSR layout), so that
 * samplers read a class's rows as one contiguous span.
 * @note Immutable after construction; safe to share between threads.
 */
class ClassIndex {
 public:
  ClassIndex() = default;

  /**
   * @brief Indexes `labels`.
   * @param[in] labels dense labels, each in [0, num_classes).
   * @param[in] num_classes C; -1 (the default) takes max(labels) + 1, which must then not exceed the number of
   * labels (so that the C + 1 offsets stay proportional to the input).
   * @throws std::invalid_argument if a label is negative or not below num_classes, num_classes < -1, or
   * num_classes is -1 and max(labels) >= labels.size() (checked before anything is sized by the largest label).
   * @note An explicit num_classes allocates C + 1 offsets whatever the labels: it is the caller's request.
   */
  explicit ClassIndex(ConstLabelRef labels, Index num_classes = -1) {
    constexpr const char* where = "kshot::ClassIndex::ClassIndex()";
    KSHOT_CHECK(num_classes >= -1, where, detail::cat("num_classes must be -1 or at least 0, got ", num_classes));
    const Index n = labels.size();
    Index classes = num_classes;
    if (classes < 0) {
      classes = n == 0 ? 0 : Index(labels.maxCoeff()) + 1;
      // Inferred, C is the largest label + 1: it must not exceed the number of labels, so that a stray huge
      // label is refused before the C + 1 offsets are allocated.
      KSHOT_CHECK(classes <= n, where,
                  detail::cat("the largest label is ", classes - 1, " but there are only ", n,
                              " labels; with num_classes = -1 the labels must lie in [0, ", n,
                              ") (remap raw ids with kshot::LabelMap, or pass num_classes)"));
    }
    for (Index i = 0; i < n; ++i)
      KSHOT_CHECK(labels[i] >= 0 && labels[i] < classes, where,
                  detail::cat("labels[", i, "] = ", labels[i], " is outside [0, ", classes, ")"));
    offsets_.assign(static_cast<std::size_t>(classes) + 1, 0);
    for (Index i = 0; i < n; ++i) ++offsets_[static_cast<std::size_t>(labels[i]) + 1];
    for (std::size_t c = 1; c < offsets_.size(); ++c) offsets_[c] += offsets_[c - 1];
    rows_.resize(static_cast<std::size_t>(n));
    std::vector<Index> next(offsets_.begin(), offsets_.end() - 1);
    for (Index i = 0; i < n; ++i) rows_[static_cast<std::size_t>(next[static_cast<std::size_t>(labels[i])]++)] = i;
    labels_count_ = n;
  }

  /// C, the number of class ids (including ids with no rows when num_classes was given).
  Index num_classes() const noexcept { return offsets_.empty() ? 0 : Index(offsets_.size()) - 1; }

  /// The number of indexed rows.
  Index num_rows() const noexcept { return labels_count_; }

  /// The number of rows of class c. @throws std::out_of_range unless 0 <= c < C.
  Index count(Label c) const {
    check_class(c, "kshot::ClassIndex::count()");
    return offsets_[static_cast<std::size_t>(c) + 1] - offsets_[static_cast<std::size_t>(c)];
  }

  /// Pointer to the rows of class c (count(c) of them, increasing). @throws std::out_of_range.
  const Index* rows(Label c) const {
    check_class(c, "kshot::ClassIndex::rows()");
    return rows_.data() + offsets_[static_cast<std::size_t>(c)];
  }

  /// The classes that have at least `min_count` rows, in increasing order.
  std::vector<Label> classes_with_at_least(Index min_count) const {
    std::vector<Label> out;
    for (Index c = 0; c < num_classes(); ++c)
      if (offsets_[static_cast<std::size_t>(c) + 1] - offsets_[static_cast<std::size_t>(c)] >= min_count)
        out.push_back(static_cast<Label>(c));
    return out;
  }

 private:
  void check_class(Label c, const char* where) const {
    KSHOT_CHECK_RANGE(c >= 0 && c < num_classes(), where,
                      detail::cat("class ", c, " is outside [0, ", num_classes(), ")"));
  }

  std::vector<Index> offsets_;
  std::vector<Index> rows_;
  Index labels_count_ = 0;
};

/// What filter_classes() kept and dropped.
struct ClassFilterReport {
  std::vector<Label> kept;            ///< classes with at least min_count rows, increasing
  std::vector<Label> dropped;         ///< classes with fewer (but at least one) rows, increasing
  std::vector<Index> dropped_counts;  ///< the row count of each dropped class
  Index dropped_rows = 0;             ///< rows that belong to dropped classes
};

/**
 * @brief Splits the classes that occur in `index` into those with at least `min_count` rows and the rest.
 * @throws std::invalid_argument if min_count < 1.
 */
inline ClassFilterReport filter_classes(const ClassIndex& index, Index min_count) {
  KSHOT_CHECK(min_count >= 1, "kshot::filter_classes()", detail::cat("min_count must be at least 1, got ", min_count));
  ClassFilterReport report;
  for (Index c = 0; c < index.num_classes(); ++c) {
    const Index count = index.count(static_cast<Label>(c));
    if (count >= min_count) {
      report.kept.push_back(static_cast<Label>(c));
    } else if (count > 0) {
      report.dropped.push_back(static_cast<Label>(c));
      report.dropped_counts.push_back(count);
      report.dropped_rows += count;
    }
  }
  return report;
}

}  // namespace kshot

#endif  // KSHOT_DATA_CLASS_INDEX_HPP
