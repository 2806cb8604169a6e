/**
 * @file kshot/sampling/batch_sampler.hpp
 * @brief Seeded m-per-class batches for metric learning: B rows, m of each of B / m classes.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_SAMPLING_BATCH_SAMPLER_HPP
#define KSHOT_SAMPLING_BATCH_SAMPLER_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/random.hpp"
#include "kshot/core/types.hpp"
#include "kshot/data/class_index.hpp"
#include "kshot/sampling/detail/eligible_classes.hpp"
#include "kshot/sampling/detail/sparse_shuffle.hpp"
#include "kshot/sampling/episode.hpp"

#include <algorithm>
#include <vector>

namespace kshot {

/// One metric-learning batch: dataset rows and their (dataset) labels, m consecutive rows per class.
struct Batch {
  Index index = 0;            ///< the batch number it was drawn as
  std::vector<Index> rows;    ///< dataset rows
  std::vector<Label> labels;  ///< dataset label of each row
  Eigen::Map<const LabelVector> label_vector() const noexcept {
    return {labels.data(), static_cast<Index>(labels.size())};
  }
  detail::SparseShuffle shuffle;  ///< sampler scratch
  std::vector<Index> scratch;
};

/**
 * @brief Draws batches of `batch_size` rows made of `m` examples from each of batch_size / m classes.
 *
 * Batch b is a pure function of (seed, b). Classes are drawn without replacement among the eligible
 * ones; examples within a class without replacement. A class with fewer than m examples follows the
 * SmallClassPolicy (throw by default, skip, or with replacement).
 * @note sample() is const and thread-safe as long as each thread fills its own Batch.
 */
class MPerClassSampler {
 public:
  /**
   * @throws std::invalid_argument if m < 1, batch_size < m, batch_size is not a multiple of m, batch_size exceeds
   * what a std::vector<Index> can hold (checked before anything is sized by it), a listed
   * class is invalid, a class is too small under throw_error, or fewer than batch_size / m classes remain.
   */
  MPerClassSampler(const ClassIndex& index, Index m, Index batch_size, std::uint64_t seed,
                   SmallClassPolicy small_classes = SmallClassPolicy::throw_error, std::vector<Label> classes = {})
      : m_(m), batch_size_(batch_size), seed_(seed) {
    constexpr const char* where = "kshot::MPerClassSampler::MPerClassSampler()";
    KSHOT_CHECK(m >= 1, where, detail::cat("m must be at least 1, got ", m));
    KSHOT_CHECK(batch_size >= m && batch_size % m == 0, where,
                detail::cat("batch_size must be a positive multiple of m = ", m, ", got ", batch_size));
    const auto most_rows = static_cast<Index>(std::vector<Index>().max_size());
    KSHOT_CHECK(batch_size <= most_rows, where,
                detail::cat("batch_size ", batch_size, " exceeds the ", most_rows,
                            " rows a std::vector<Index> can hold"));
    eligible_ = detail::select_classes(index, std::move(classes), m, small_classes, where, [&](Label c, Index count) {
      return detail::cat("class ", c, " has ", count, " examples but a batch takes m = ", m,
                         " of each class; choose SmallClassPolicy::skip or SmallClassPolicy::with_replacement to allow it");
    });
    KSHOT_CHECK(eligible_.size() >= batch_size / m, where,
                detail::cat("a batch needs ", batch_size / m, " classes but only ", eligible_.size(), " are eligible (",
                            eligible_.skipped.size(), " skipped for having fewer than ", m, " examples)"));
  }

  Index m() const noexcept { return m_; }
  Index batch_size() const noexcept { return batch_size_; }
  const std::vector<Label>& classes() const noexcept { return eligible_.classes; }
  const std::vector<Label>& skipped_classes() const noexcept { return eligible_.skipped; }

  /// Fills `out` with batch `b`.
  void sample(Index b, Batch& out) const {
    RandomStream rng(seed_, static_cast<std::uint64_t>(b));
    out.index = b;
    out.rows.clear();
    out.labels.clear();
    out.rows.reserve(static_cast<std::size_t>(batch_size_));
    out.labels.reserve(static_cast<std::size_t>(batch_size_));
    const Index per_batch = batch_size_ / m_;
    out.scratch.resize(static_cast<std::size_t>(per_batch));
    out.shuffle.draw(rng, eligible_.size(), per_batch,
                     [&](Index k, Index slot) { out.scratch[static_cast<std::size_t>(k)] = slot; });
    for (Index k = 0; k < per_batch; ++k) {
      const Index slot = out.scratch[static_cast<std::size_t>(k)];
      const Index* rows = eligible_.rows_of(slot);
      const Index count = eligible_.count(slot);
      const Label label = eligible_.classes[static_cast<std::size_t>(slot)];
      auto emit = [&](Index, Index position) {
        out.rows.push_back(rows[position]);
        out.labels.push_back(label);
      };
      if (eligible_.with_replacement[static_cast<std::size_t>(slot)]) {
        for (Index j = 0; j < m_; ++j) emit(j, static_cast<Index>(rng.bounded(static_cast<std::uint64_t>(count))));
      } else {
        out.shuffle.draw(rng, count, m_, emit);
      }
    }
  }

  /// Batch `b` as a new Batch.
  Batch sample(Index b) const {
    Batch out;
    sample(b, out);
    return out;
  }

 private:
  Index m_, batch_size_;
  std::uint64_t seed_;
  detail::EligibleClasses eligible_;
};

}  // namespace kshot

#endif  // KSHOT_SAMPLING_BATCH_SAMPLER_HPP
