/**
 * @file kshot/recommend/recommender.hpp
 * @brief recommend(user, k) over a catalogue index, with filters and the user's history excluded, and the
 * reverse: which users a (new) product should be shown to.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_RECOMMEND_RECOMMENDER_HPP
#define KSHOT_RECOMMEND_RECOMMENDER_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/types.hpp"
#include "kshot/recommend/interactions.hpp"
#include "kshot/retrieval/filter.hpp"
#include "kshot/retrieval/flat_index.hpp"

#include <vector>

namespace kshot {

/**
 * @brief Top-k recommendation for users represented by profile vectors (kshot::user_profiles), over an
 * exact index of item vectors, and the reverse search over an index of the users.
 *
 * Conventions: users are the dense indices of the profile matrix (rows 0..num_users−1) and are stored in the
 * user index under those indices as ids; items are stored in the item index under external ids, and a
 * history (an InteractionMatrix) names items by the same numbers, so that "exclude what the user already has"
 * means: exclude the ids of the user's history list. Keep item ids equal to the item indices of the
 * interactions (the simplest choice), or build the ExclusionLists yourself and pass them in SearchOptions.
 *
 * Scores are those of the indices' metric (inner product by default: <profile, item>); ties go to the lower
 * id; when filters and exclusions leave fewer than k items the rows are padded as SearchResult documents.
 *
 * @tparam Scalar float (the default) or double.
 * @note Not thread-safe (the indices' search buffers are shared); each call parallelises itself.
 */
template <class Scalar = float>
class Recommender {
 public:
  /**
   * @brief A recommender for `dim`-dimensional profiles and item vectors, scored by `metric`.
   * @throws std::invalid_argument if dim < 1.
   */
  explicit Recommender(Index dim, SearchMetric metric = SearchMetric::inner_product)
      : items_(dim, metric), users_(dim, metric) {}

  /// The catalogue: add or remove items (vectors under external ids) at any time.
  FlatIndex<Scalar>& items() noexcept { return items_; }
  const FlatIndex<Scalar>& items() const noexcept { return items_; }

  /**
   * @brief Sets (replaces) the user profiles, num_users x dim; user u is row u.
   * @throws std::invalid_argument if the width is not dim() or a value is not finite.
   */
  void set_profiles(ConstRowMatrixRef<Scalar> profiles) {
    constexpr const char* where = "kshot::Recommender::set_profiles()";
    KSHOT_CHECK(profiles.cols() == items_.dim(), where,
                detail::cat("profiles has ", profiles.cols(), " columns but the recommender's dim is ", items_.dim()));
    detail::check_finite(profiles, where, "profiles");
    profiles_ = profiles;
    users_.clear();
    IdVector ids(profiles.rows());
    for (Index u = 0; u < profiles.rows(); ++u) ids[u] = static_cast<ItemId>(u);
    users_.add(profiles_, ids);
  }

  Index dim() const noexcept { return items_.dim(); }
  Index num_users() const noexcept { return profiles_.rows(); }
  /// The profiles set last (num_users x dim).
  const RowMatrixX<Scalar>& profiles() const noexcept { return profiles_; }

  /**
   * @brief The k best items for each of `users`, best first; with `history`, each user's own interactions
   * (their item numbers, as ids) are excluded. `options.allowed` and `options.predicate` filter the catalogue
   * (category, stock); `options.exclude` must be null when `history` is given (the history makes the lists).
   * @throws std::invalid_argument if k < 1, options.exclude is set together with history, or history has
   * another number of users; std::out_of_range if a user is outside [0, num_users).
   */
  void recommend(const std::vector<Index>& users, Index k, SearchResult<Scalar>& result,
                 const InteractionMatrix* history = nullptr, SearchOptions options = {}) {
    constexpr const char* where = "kshot::Recommender::recommend()";
    KSHOT_CHECK(k >= 1, where, detail::cat("k is ", k, " but must be >= 1"));
    const auto n = static_cast<Index>(users.size());
    queries_.resize(n, dim());
    for (Index r = 0; r < n; ++r) {
      const Index u = users[static_cast<std::size_t>(r)];
      KSHOT_CHECK_RANGE(u >= 0 && u < num_users(), where,
                        detail::cat("users[", r, "] is ", u, " but must be in [0, ", num_users(), ")"));
      queries_.row(r) = profiles_.row(u);
    }
    if (history != nullptr) {
      KSHOT_CHECK(options.exclude == nullptr, where,
                  "options.exclude must be null when a history is given (the history's items are the exclusions)");
      KSHOT_CHECK(history->num_users() == num_users(), where,
                  detail::cat("history has ", history->num_users(), " users but the recommender has ", num_users()));
      exclusions_.clear();
      for (Index r = 0; r < n; ++r) {
        const InteractionList l = history->user(users[static_cast<std::size_t>(r)]);
        buffer_.assign(l.ids, l.ids + l.size);
        exclusions_.add_list(buffer_.data(), static_cast<Index>(buffer_.size()));
      }
      options.exclude = &exclusions_;
    }
    items_.search(queries_, k, result, options);
  }

  /// recommend() into a new SearchResult.
  SearchResult<Scalar> recommend(const std::vector<Index>& users, Index k, const InteractionMatrix* history = nullptr,
                                 SearchOptions options = {}) {
    SearchResult<Scalar> result;
    recommend(users, k, result, history, std::move(options));
    return result;
  }

  /**
   * @brief The reverse: for each row of `item_vectors` (e.g. new products placed by ColdItemEmbedder), the k
   * users whose profiles score it best; ids are user indices. `options` filters users (e.g. an IdBitset of
   * users who opted in).
   * @throws std::invalid_argument if k < 1 or the width is not dim() (as FlatIndex::search()).
   */
  void audience(ConstRowMatrixRef<Scalar> item_vectors, Index k, SearchResult<Scalar>& result,
                const SearchOptions& options = {}) {
    users_.search(item_vectors, k, result, options);
  }

  /// audience() into a new SearchResult.
  SearchResult<Scalar> audience(ConstRowMatrixRef<Scalar> item_vectors, Index k, const SearchOptions& options = {}) {
    SearchResult<Scalar> result;
    audience(item_vectors, k, result, options);
    return result;
  }

 private:
  FlatIndex<Scalar> items_, users_;
  RowMatrixX<Scalar> profiles_, queries_;
  ExclusionLists exclusions_;
  std::vector<ItemId> buffer_;
};

}  // namespace kshot

#endif  // KSHOT_RECOMMEND_RECOMMENDER_HPP
