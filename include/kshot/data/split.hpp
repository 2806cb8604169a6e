/**
 * @file kshot/data/split.hpp
 * @brief Class splits into base (old products), validation and novel (new product lines).
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_DATA_SPLIT_HPP
#define KSHOT_DATA_SPLIT_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/random.hpp"
#include "kshot/core/types.hpp"
#include "kshot/data/class_index.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

namespace kshot {

/// Disjoint lists of classes: base (train the embedding), validation (early stopping), novel (evaluate).
struct ClassSplit {
  std::vector<Label> base;
  std::vector<Label> validation;
  std::vector<Label> novel;
};

/**
 * @brief A split given as explicit class lists, checked.
 * @param[in] num_classes C: every listed class must be in [0, C).
 * @throws std::invalid_argument if a class is out of range, listed twice, or in two parts.
 */
inline ClassSplit make_class_split(std::vector<Label> base, std::vector<Label> validation, std::vector<Label> novel,
                                   Index num_classes) {
  constexpr const char* where = "kshot::make_class_split()";
  std::vector<int> seen(static_cast<std::size_t>(std::max<Index>(num_classes, 0)), 0);
  const char* names[] = {"base", "validation", "novel"};
  const std::vector<Label>* parts[] = {&base, &validation, &novel};
  for (int p = 0; p < 3; ++p)
    for (Label c : *parts[p]) {
      KSHOT_CHECK(c >= 0 && c < num_classes, where,
                  detail::cat(names[p], " lists class ", c, ", outside [0, ", num_classes, ")"));
      int& mark = seen[static_cast<std::size_t>(c)];
      KSHOT_CHECK(mark == 0, where,
                  detail::cat("class ", c, " is listed in ", names[mark - 1 < 0 ? 0 : mark - 1], " and again in ", names[p]));
      mark = p + 1;
    }
  return ClassSplit{std::move(base), std::move(validation), std::move(novel)};
}

/**
 * @brief A seeded random split of `classes` by fractions.
 *
 * The classes are shuffled with RandomStream(seed); the first round(base_fraction * C) become base, the
 * next round(validation_fraction * C) validation, the rest novel. Each part is returned sorted.
 * @throws std::invalid_argument if a fraction is outside [0, 1], their sum exceeds 1, or a class repeats.
 */
inline ClassSplit split_classes(std::vector<Label> classes, double base_fraction, double validation_fraction,
                                std::uint64_t seed) {
  constexpr const char* where = "kshot::split_classes()";
  KSHOT_CHECK(base_fraction >= 0 && base_fraction <= 1, where,
              detail::cat("base_fraction must be in [0, 1], got ", base_fraction));
  KSHOT_CHECK(validation_fraction >= 0 && validation_fraction <= 1, where,
              detail::cat("validation_fraction must be in [0, 1], got ", validation_fraction));
  KSHOT_CHECK(base_fraction + validation_fraction <= 1 + 1e-12, where,
              detail::cat("base_fraction + validation_fraction must not exceed 1, got ",
                          base_fraction + validation_fraction));
  std::vector<Label> sorted = classes;
  std::sort(sorted.begin(), sorted.end());
  const auto dup = std::adjacent_find(sorted.begin(), sorted.end());
  KSHOT_CHECK(dup == sorted.end(), where, detail::cat("class ", dup == sorted.end() ? 0 : *dup, " is listed twice"));
  // Shuffle a sorted copy so that the split does not depend on the order the caller listed classes in.
  RandomStream rng(seed);
  rng.shuffle(sorted.begin(), sorted.end());
  const auto c = static_cast<double>(sorted.size());
  const auto n_base = static_cast<std::size_t>(std::llround(base_fraction * c));
  const auto n_val = std::min(sorted.size() - n_base, static_cast<std::size_t>(std::llround(validation_fraction * c)));
  ClassSplit split;
  split.base.assign(sorted.begin(), sorted.begin() + static_cast<std::ptrdiff_t>(n_base));
  split.validation.assign(sorted.begin() + static_cast<std::ptrdiff_t>(n_base),
                          sorted.begin() + static_cast<std::ptrdiff_t>(n_base + n_val));
  split.novel.assign(sorted.begin() + static_cast<std::ptrdiff_t>(n_base + n_val), sorted.end());
  for (auto* part : {&split.base, &split.validation, &split.novel}) std::sort(part->begin(), part->end());
  return split;
}

/// The rows of `index` whose class is in `classes`, in increasing row order.
inline std::vector<Index> rows_of_classes(const ClassIndex& index, const std::vector<Label>& classes) {
  std::vector<Index> rows;
  for (Label c : classes) {
    const Index* r = index.rows(c);
    rows.insert(rows.end(), r, r + index.count(c));
  }
  std::sort(rows.begin(), rows.end());
  return rows;
}

}  // namespace kshot

#endif  // KSHOT_DATA_SPLIT_HPP
