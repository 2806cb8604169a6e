/**
 * @file kshot/recommend/profiles.hpp
 * @brief User profiles as prototypes: the (recency-)weighted mean of the embeddings of the items a user
 * interacted with, and the dual item prototypes (the mean profile of an item's audience).
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_RECOMMEND_PROFILES_HPP
#define KSHOT_RECOMMEND_PROFILES_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"
#include "kshot/recommend/interactions.hpp"

#include <cmath>
#include <limits>

namespace kshot {

/**
 * @brief How a profile weighs a user's interactions.
 *
 * The weight of an event at time t is `weight · 0.5^((now − t) / half_life)`: with half_life = 0 (the
 * default) only the events' own weights count; otherwise an event half_life older than `now` counts half.
 * `now` defaults (NaN) to the time of the user's latest event, so each user's newest interaction has factor 1.
 */
struct ProfileOptions {
  double half_life = 0.0;                                  ///< recency half-life (0: no recency decay), >= 0
  double now = std::numeric_limits<double>::quiet_NaN();  ///< reference time (NaN: each list's latest event)
  bool normalize = false;                                  ///< scale each profile to unit L2 norm (zero stays zero)
  Index max_events = 0;                                    ///< use only the latest max_events events (0: all)
};

namespace detail {

inline void check_profile_options(const ProfileOptions& o, const char* where) {
  KSHOT_CHECK(std::isfinite(o.half_life) && o.half_life >= 0.0, where,
              cat("options.half_life is ", o.half_life, " but must be finite and >= 0"));
  KSHOT_CHECK(!std::isinf(o.now), where, cat("options.now is ", o.now, " but must be finite (or NaN for 'latest')"));
  KSHOT_CHECK(o.max_events >= 0, where, cat("options.max_events is ", o.max_events, " but must be >= 0"));
}

/// out = weighted mean of rows[ids] over one list (zero when the weights sum to 0); returns the weight sum.
template <class Scalar, class Out>
double prototype_of(const InteractionList& list, const ConstRowMatrixRef<Scalar>& rows, const ProfileOptions& o,
                    Out&& out) {
  out.setZero();
  const Index first = o.max_events > 0 && list.size > o.max_events ? list.size - o.max_events : 0;
  if (list.size == 0) return 0.0;
  const double now = std::isnan(o.now) ? list.times[list.size - 1] : o.now;
  double total = 0.0;
  for (Index k = first; k < list.size; ++k) {
    double w = list.weights[k];
    if (o.half_life > 0.0) w *= std::exp2(-(now - list.times[k]) / o.half_life);
    if (!(w > 0.0)) continue;
    out += static_cast<Scalar>(w) * rows.row(list.ids[k]);
    total += w;
  }
  if (!(total > 0.0)) {
    out.setZero();
    return 0.0;
  }
  out /= static_cast<Scalar>(total);
  if (o.normalize) {
    const Scalar norm = out.norm();
    if (norm > Scalar(0)) out /= norm;
  }
  return total;
}

}  // namespace detail

/**
 * @brief User profiles: row u of `out` is the weighted mean of the embeddings of the items user u
 * interacted with (a prototype, as ProtoNet's class mean), weighted as `options` says.
 *
 * A user without interactions (or whose weights are all 0, or decay to 0) gets a zero row; the function
 * returns how many such users there are. Scoring a zero profile by inner product gives 0 for every item, so
 * a recommender falls back to its tie rule (or to a popularity list, which the caller chooses).
 *
 * @param interactions num_users x num_items events.
 * @param item_embeddings num_items x d, row i the embedding of item i.
 * @param[out] out num_users x d, overwritten.
 * @return the number of users with an empty (zero) profile.
 * @throws std::invalid_argument if item_embeddings does not have num_items rows, out is not num_users x d,
 * item_embeddings holds a non-finite value, or an option is invalid (ProfileOptions).
 * @note Parallel over users (each row is independent, so the bits do not depend on the thread count);
 * allocates nothing.
 */
template <class Scalar>
Index user_profiles(const InteractionMatrix& interactions, ConstRowMatrixRef<Scalar> item_embeddings,
                    RowMatrixRef<Scalar> out, const ProfileOptions& options = {}) {
  constexpr const char* where = "kshot::user_profiles()";
  KSHOT_CHECK(item_embeddings.rows() == interactions.num_items(), where,
              detail::cat("item_embeddings has ", item_embeddings.rows(), " rows but there are ",
                          interactions.num_items(), " items"));
  detail::check_shape(out, interactions.num_users(), item_embeddings.cols(), where, "out");
  detail::check_finite(item_embeddings, where, "item_embeddings");
  detail::check_profile_options(options, where);
  const Index n = interactions.num_users();
  std::vector<char> empty(static_cast<std::size_t>(n), 0);
  detail::parallel_for(n, detail::worth_parallel(n, double(interactions.size()) * double(out.cols()) + double(n)),
                       [&](Index u) {
                         const double w = detail::prototype_of<Scalar>(interactions.user(u), item_embeddings,
                                                                       options, out.row(u));
                         empty[static_cast<std::size_t>(u)] = w > 0.0 ? 0 : 1;
                       });
  Index count = 0;
  for (char e : empty) count += e;
  return count;
}

/**
 * @brief Item prototypes, the dual of user_profiles(): row i of `out` is the weighted mean of the profiles
 * of the users who interacted with item i (who its audience is). Items without interactions get a zero row.
 *
 * @param interactions num_users x num_items events.
 * @param profiles num_users x d user profiles (e.g. from user_profiles()).
 * @param[out] out num_items x d, overwritten.
 * @return the number of items with an empty (zero) prototype.
 * @throws std::invalid_argument as user_profiles(), with the roles of users and items swapped.
 */
template <class Scalar>
Index audience_prototypes(const InteractionMatrix& interactions, ConstRowMatrixRef<Scalar> profiles,
                          RowMatrixRef<Scalar> out, const ProfileOptions& options = {}) {
  constexpr const char* where = "kshot::audience_prototypes()";
  KSHOT_CHECK(profiles.rows() == interactions.num_users(), where,
              detail::cat("profiles has ", profiles.rows(), " rows but there are ", interactions.num_users(),
                          " users"));
  detail::check_shape(out, interactions.num_items(), profiles.cols(), where, "out");
  detail::check_finite(profiles, where, "profiles");
  detail::check_profile_options(options, where);
  const Index n = interactions.num_items();
  std::vector<char> empty(static_cast<std::size_t>(n), 0);
  detail::parallel_for(n, detail::worth_parallel(n, double(interactions.size()) * double(out.cols()) + double(n)),
                       [&](Index i) {
                         const double w =
                             detail::prototype_of<Scalar>(interactions.item(i), profiles, options, out.row(i));
                         empty[static_cast<std::size_t>(i)] = w > 0.0 ? 0 : 1;
                       });
  Index count = 0;
  for (char e : empty) count += e;
  return count;
}

}  // namespace kshot

#endif  // KSHOT_RECOMMEND_PROFILES_HPP
