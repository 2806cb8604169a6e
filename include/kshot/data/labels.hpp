/**
 * @file kshot/data/labels.hpp
 * @brief Label remapping between arbitrary product or category ids and kshot's dense class ids 0..C-1.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_DATA_LABELS_HPP
#define KSHOT_DATA_LABELS_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/types.hpp"

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

namespace kshot {

/// A raw identifier as the catalogue knows it (a category id, a product line id, ...).
using RawId = std::int64_t;

/**
 * @brief A bijection between the distinct raw ids of a dataset and the dense labels 0..C-1.
 *
 * Dense label c is the c-th smallest raw id, so the mapping does not depend on the order of the data.
 * @note Immutable after construction; safe to share between threads.
 */
class LabelMap {
 public:
  LabelMap() = default;

  /**
   * @brief Builds the map from every id that occurs in `raw_ids` (duplicates allowed).
   * @throws std::invalid_argument if there are more than 2^31 - 1 distinct ids.
   */
  explicit LabelMap(const std::vector<RawId>& raw_ids) : ids_(raw_ids) {
    std::sort(ids_.begin(), ids_.end());
    ids_.erase(std::unique(ids_.begin(), ids_.end()), ids_.end());
    KSHOT_CHECK(ids_.size() <= static_cast<std::size_t>(std::numeric_limits<Label>::max()), "kshot::LabelMap::LabelMap()",
                detail::cat("raw_ids has ", ids_.size(), " distinct ids, more than a Label can number"));
  }

  /// The number of classes C.
  Index num_classes() const noexcept { return static_cast<Index>(ids_.size()); }

  /// True when `raw` is one of the ids the map was built from.
  bool contains(RawId raw) const noexcept { return std::binary_search(ids_.begin(), ids_.end(), raw); }

  /**
   * @brief The dense label of a raw id.
   * @throws std::out_of_range if `raw` was not in the data the map was built from.
   */
  Label encode(RawId raw) const {
    const auto it = std::lower_bound(ids_.begin(), ids_.end(), raw);
    KSHOT_CHECK_RANGE(it != ids_.end() && *it == raw, "kshot::LabelMap::encode()",
                      detail::cat("raw id ", raw, " is not one of the ", ids_.size(), " ids of this map"));
    return static_cast<Label>(it - ids_.begin());
  }

  /// Dense labels of many raw ids. @throws std::out_of_range naming the first unknown id and its position.
  LabelVector encode(const std::vector<RawId>& raw) const {
    LabelVector out(static_cast<Index>(raw.size()));
    for (std::size_t i = 0; i < raw.size(); ++i) {
      const auto it = std::lower_bound(ids_.begin(), ids_.end(), raw[i]);
      KSHOT_CHECK_RANGE(it != ids_.end() && *it == raw[i], "kshot::LabelMap::encode()",
                        detail::cat("raw id ", raw[i], " at position ", i, " is not one of the ", ids_.size(),
                                    " ids of this map"));
      out[static_cast<Index>(i)] = static_cast<Label>(it - ids_.begin());
    }
    return out;
  }

  /**
   * @brief The raw id of a dense label.
   * @throws std::out_of_range unless 0 <= label < C.
   */
  RawId decode(Label label) const {
    KSHOT_CHECK_RANGE(label >= 0 && static_cast<std::size_t>(label) < ids_.size(), "kshot::LabelMap::decode()",
                      detail::cat("label ", label, " is outside [0, ", ids_.size(), ")"));
    return ids_[static_cast<std::size_t>(label)];
  }

  /// The raw ids in dense-label order.
  const std::vector<RawId>& raw_ids() const noexcept { return ids_; }

 private:
  std::vector<RawId> ids_;
};

}  // namespace kshot

#endif  // KSHOT_DATA_LABELS_HPP
