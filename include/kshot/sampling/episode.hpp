/**
 * @file kshot/sampling/episode.hpp
 * @brief An N-way K-shot Q-query episode: its configuration, its rows and labels, and its gathered features.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_SAMPLING_EPISODE_HPP
#define KSHOT_SAMPLING_EPISODE_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/types.hpp"
#include "kshot/sampling/detail/sparse_shuffle.hpp"

#include <cstring>
#include <vector>

namespace kshot {

/// What a sampler does with a class that has fewer examples than one episode or batch needs from it.
enum class SmallClassPolicy {
  throw_error,       ///< refuse at construction, naming the class and its count (the default)
  skip,              ///< leave such classes out (they are listed by the sampler's skipped_classes())
  with_replacement,  ///< sample such classes with replacement (an example may then repeat within the episode)
};

/// The shape of the episodes an EpisodeSampler draws.
struct EpisodeConfig {
  Index ways = 5;     ///< N: classes per episode (>= 1)
  Index shots = 5;    ///< K: support examples per class (>= 1); the upper end when min_shots is set
  Index queries = 15; ///< Q: query examples per class (>= 1)
  /// When >= 1, the support size of each class is drawn uniformly from [min_shots, shots] (variable
  /// shots, for imbalanced support sets); -1 (the default) means exactly `shots`.
  Index min_shots = -1;
  SmallClassPolicy small_classes = SmallClassPolicy::throw_error;
};

/**
 * @brief The rows and labels of one episode (indices into the dataset, not features).
 *
 * Support rows come grouped by episode label (all of label 0, then label 1, ...), as do query rows.
 * Episode labels run from 0 to N - 1; `classes[l]` is the dataset class of episode label l.
 * @note The vectors keep their capacity, so refilling an Episode with same-sized episodes allocates nothing.
 */
struct Episode {
  Index index = 0;                   ///< the episode number it was drawn as
  std::vector<Label> classes;        ///< dataset class of each episode label
  std::vector<Index> support_rows;   ///< dataset rows of the support set
  std::vector<Label> support_labels; ///< episode label (0..N-1) of each support row
  std::vector<Index> query_rows;     ///< dataset rows of the query set
  std::vector<Label> query_labels;   ///< episode label of each query row

  Index ways() const noexcept { return static_cast<Index>(classes.size()); }
  /// Support labels as an Eigen vector view (binds to ConstLabelRef without a copy).
  Eigen::Map<const LabelVector> support_label_vector() const noexcept {
    return {support_labels.data(), static_cast<Index>(support_labels.size())};
  }
  /// Query labels as an Eigen vector view.
  Eigen::Map<const LabelVector> query_label_vector() const noexcept {
    return {query_labels.data(), static_cast<Index>(query_labels.size())};
  }

  /// Scratch of the sampler (kept here so that sampling into different Episodes is thread-safe).
  detail::SparseShuffle shuffle;
  std::vector<Index> scratch;
};

/**
 * @brief Copies rows `rows` of `features` into the first rows.size() rows of `out`.
 *
 * Every row index is checked before anything is copied.
 * @throws std::invalid_argument if out has too few rows or a different width; std::out_of_range for a
 * row outside features (out is unchanged then).
 */
template <class Scalar>
void gather_rows(ConstRowMatrixRef<Scalar> features, const std::vector<Index>& rows, RowMatrixRef<Scalar> out) {
  constexpr const char* where = "kshot::gather_rows()";
  KSHOT_CHECK(out.cols() == features.cols(), where,
              detail::cat("out has ", out.cols(), " columns but features has ", features.cols()));
  KSHOT_CHECK(out.rows() >= static_cast<Index>(rows.size()), where,
              detail::cat("out has ", out.rows(), " rows but ", rows.size(), " are gathered"));
  const Index d = features.cols();
  const auto bytes = static_cast<std::size_t>(d) * sizeof(Scalar);
  for (const Index r : rows)
    KSHOT_CHECK_RANGE(r >= 0 && r < features.rows(), where,
                      detail::cat("row ", r, " is outside [0, ", features.rows(), ")"));
  for (std::size_t k = 0; k < rows.size(); ++k) {
    // Rows of both are contiguous (row-major Refs with unit inner stride).
    std::memcpy(out.row(static_cast<Index>(k)).data(), features.row(rows[k]).data(), bytes);
  }
}

/**
 * @brief An episode with its features gathered into storage that grows and never shrinks.
 *
 * `support()` is (support size) x D and `query()` is (query size) x D, row-major, with the labels of
 * `episode`. Refilling it with episodes of the same or smaller size allocates nothing.
 * @tparam Scalar float or double.
 */
template <class Scalar>
class GatheredEpisode {
  static_assert(is_supported_scalar_v<Scalar>, "kshot::GatheredEpisode<Scalar>: Scalar must be float or double");

 public:
  Episode episode;

  /// Gathers the rows of `episode` from `features` (N x D).
  void gather(ConstRowMatrixRef<Scalar> features) {
    const Index d = features.cols();
    const auto ns = static_cast<Index>(episode.support_rows.size()), nq = static_cast<Index>(episode.query_rows.size());
    grow(support_storage_, ns * d);
    grow(query_storage_, nq * d);
    dim_ = d;
    Eigen::Map<RowMatrixX<Scalar>> s(support_storage_.data(), ns, d), q(query_storage_.data(), nq, d);
    gather_rows<Scalar>(features, episode.support_rows, s);
    gather_rows<Scalar>(features, episode.query_rows, q);
  }

  Eigen::Map<const RowMatrixX<Scalar>> support() const noexcept {
    return {support_storage_.data(), static_cast<Index>(episode.support_rows.size()), dim_};
  }
  Eigen::Map<const RowMatrixX<Scalar>> query() const noexcept {
    return {query_storage_.data(), static_cast<Index>(episode.query_rows.size()), dim_};
  }
  Eigen::Map<const LabelVector> support_labels() const noexcept { return episode.support_label_vector(); }
  Eigen::Map<const LabelVector> query_labels() const noexcept { return episode.query_label_vector(); }

 private:
  using Storage = std::vector<Scalar, Eigen::aligned_allocator<Scalar>>;
  static void grow(Storage& s, Index size) {
    if (static_cast<Index>(s.size()) < size + 1) s.resize(static_cast<std::size_t>(size) + 1);
  }
  Storage support_storage_, query_storage_;
  Index dim_ = 0;
};

}  // namespace kshot

#endif  // KSHOT_SAMPLING_EPISODE_HPP
