/**
 * @file kshot/sampling/detail/eligible_classes.hpp
 * @brief The classes a sampler draws from, after the small-class policy, with their rows copied into one
 * compressed array (shared by EpisodeSampler and MPerClassSampler).
 *
 * SPDX-License-Identifier: MIT
 */
// IWYU pragma: private
#ifndef KSHOT_SAMPLING_DETAIL_ELIGIBLE_CLASSES_HPP
#define KSHOT_SAMPLING_DETAIL_ELIGIBLE_CLASSES_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/types.hpp"
#include "kshot/data/class_index.hpp"
#include "kshot/sampling/episode.hpp"

#include <algorithm>
#include <string>
#include <vector>

namespace kshot {
namespace detail {

/// Eligible classes in slot order, their rows (CSR), and which are sampled with replacement.
struct EligibleClasses {
  std::vector<Label> classes;          ///< dataset class of each slot
  std::vector<Label> skipped;          ///< classes left out by SmallClassPolicy::skip
  std::vector<char> with_replacement;  ///< per slot: fewer rows than one draw needs
  std::vector<Index> offsets{0};       ///< per slot, where its rows start in `rows` (size slots + 1)
  std::vector<Index> rows;             ///< the rows of every slot, grouped by slot
  Index max_row = -1;                  ///< the largest row referred to

  Index size() const noexcept { return static_cast<Index>(classes.size()); }
  Index count(Index slot) const noexcept {
    return offsets[static_cast<std::size_t>(slot) + 1] - offsets[static_cast<std::size_t>(slot)];
  }
  const Index* rows_of(Index slot) const noexcept { return rows.data() + offsets[static_cast<std::size_t>(slot)]; }
};

/**
 * @brief Checks `classes` against `index` (empty: every class with an example) and applies `policy` to the
 * classes with fewer than `need` rows.
 * @param too_small called as too_small(class, count) -> std::string, the message for throw_error.
 * @throws std::invalid_argument for an empty index, a listed class out of range, listed twice or without
 * rows, or a small class under SmallClassPolicy::throw_error.
 */
template <class TooSmall>
EligibleClasses select_classes(const ClassIndex& index, std::vector<Label> classes, Index need, SmallClassPolicy policy,
                               const char* where, TooSmall&& too_small) {
  KSHOT_CHECK(index.num_rows() > 0, where, "the dataset is empty (0 rows)");
  if (classes.empty()) {
    classes = index.classes_with_at_least(1);
  } else {
    std::vector<Label> sorted = classes;
    std::sort(sorted.begin(), sorted.end());
    const auto dup = std::adjacent_find(sorted.begin(), sorted.end());
    KSHOT_CHECK(dup == sorted.end(), where, cat("classes lists class ", dup == sorted.end() ? 0 : *dup, " twice"));
    for (Label c : classes) {
      KSHOT_CHECK(c >= 0 && c < index.num_classes(), where,
                  cat("classes lists class ", c, ", outside [0, ", index.num_classes(), ")"));
      KSHOT_CHECK(index.count(c) > 0, where, cat("class ", c, " has no example"));
    }
  }
  EligibleClasses out;
  for (Label c : classes) {
    const Index count = index.count(c);
    const bool small = count < need;
    if (small && policy == SmallClassPolicy::throw_error) throw_invalid_argument(where, too_small(c, count));
    if (small && policy == SmallClassPolicy::skip) {
      out.skipped.push_back(c);
      continue;
    }
    out.classes.push_back(c);
    out.with_replacement.push_back(small ? 1 : 0);
    const Index* r = index.rows(c);
    out.rows.insert(out.rows.end(), r, r + count);
    out.offsets.push_back(static_cast<Index>(out.rows.size()));
  }
  if (!out.rows.empty()) out.max_row = *std::max_element(out.rows.begin(), out.rows.end());
  return out;
}

}  // namespace detail
}  // namespace kshot

#endif  // KSHOT_SAMPLING_DETAIL_ELIGIBLE_CLASSES_HPP
