/**
 * @file kshot/recommend/split.hpp
 * @brief The warm / cold-user / cold-item / both-cold evaluation protocol: which interactions a model may
 * train on and which it is tested on, for users and items that are new.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_RECOMMEND_SPLIT_HPP
#define KSHOT_RECOMMEND_SPLIT_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/random.hpp"
#include "kshot/core/types.hpp"
#include "kshot/recommend/interactions.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

namespace kshot {

/**
 * @brief Parameters of make_cold_start_split().
 *
 * | member | default | meaning |
 * |---|---|---|
 * | cold_user_fraction | 0.2 | share of users drawn (seeded) as cold: new users with only a few visible events |
 * | cold_user_support | 3 | a cold user's earliest events with warm items that stay visible (the rest is test) |
 * | cold_item_support | 3 | a cold item's earliest events with warm users that stay visible (the rest is test) |
 * | warm_test_fraction | 0.2 | share of each warm user's warm-item events, the latest ones, held out as test |
 * | seed | 0 | the draw of the cold users |
 */
struct ColdStartConfig {
  double cold_user_fraction = 0.2;  ///< in [0, 1]
  Index cold_user_support = 3;      ///< >= 0
  Index cold_item_support = 3;      ///< >= 0
  double warm_test_fraction = 0.2;  ///< in [0, 1)
  std::uint64_t seed = 0;           ///< seed of the cold-user draw
};

/**
 * @brief The result of make_cold_start_split(): a training matrix and four test sets, one per protocol.
 *
 * Every event of the input lands in exactly one of `train`, `warm_test`, `cold_user_test`,
 * `cold_item_test` and `both_cold_test`.
 */
struct ColdStartSplit {
  InteractionMatrix train;                 ///< what a model may see (warm events, and the support of cold users and items)
  std::vector<char> cold_users;            ///< 1 for a cold user (num_users entries)
  std::vector<char> cold_items;            ///< 1 for a cold item (num_items entries), as given
  std::vector<Interaction> warm_test;      ///< warm user, warm item: each warm user's latest events
  std::vector<Interaction> cold_user_test; ///< cold user, warm item: events after the user's support
  std::vector<Interaction> cold_item_test; ///< warm user, cold item: events after the item's support
  std::vector<Interaction> both_cold_test; ///< cold user, cold item: all of them (never visible)
};

/**
 * @brief Splits interactions for the four cold-start protocols.
 *
 * Cold items are given (e.g. the items of a new product line); cold users are drawn: round(fraction ·
 * num_users) users, uniformly without replacement from RandomStream(seed). Then, with events in time order:
 *  - warm user, warm item: the latest ceil(warm_test_fraction · m) of the user's m such events are
 *    `warm_test`, but a user keeps at least one training event; the rest is trained on;
 *  - cold user, warm item: the user's earliest `cold_user_support` such events are trained on (the few
 *    interactions a new user has), the rest is `cold_user_test`;
 *  - warm user, cold item: the item's earliest `cold_item_support` such events are trained on (the few
 *    interactions of a new product), the rest is `cold_item_test`;
 *  - cold user, cold item: `both_cold_test`, never visible.
 *
 * @param all every event, num_users x num_items.
 * @param cold_items num_items flags, nonzero for a cold item.
 * @throws std::invalid_argument if cold_items does not have num_items entries or a config value is out of
 * its range (named with the value).
 */
inline ColdStartSplit make_cold_start_split(const InteractionMatrix& all, const std::vector<char>& cold_items,
                                            const ColdStartConfig& config = {}) {
  constexpr const char* where = "kshot::make_cold_start_split()";
  const Index num_users = all.num_users(), num_items = all.num_items();
  KSHOT_CHECK(static_cast<Index>(cold_items.size()) == num_items, where,
              detail::cat("cold_items has ", cold_items.size(), " entries but there are ", num_items, " items"));
  KSHOT_CHECK(config.cold_user_fraction >= 0.0 && config.cold_user_fraction <= 1.0, where,
              detail::cat("config.cold_user_fraction is ", config.cold_user_fraction, " but must be in [0, 1]"));
  KSHOT_CHECK(config.warm_test_fraction >= 0.0 && config.warm_test_fraction < 1.0, where,
              detail::cat("config.warm_test_fraction is ", config.warm_test_fraction, " but must be in [0, 1)"));
  KSHOT_CHECK(config.cold_user_support >= 0, where,
              detail::cat("config.cold_user_support is ", config.cold_user_support, " but must be >= 0"));
  KSHOT_CHECK(config.cold_item_support >= 0, where,
              detail::cat("config.cold_item_support is ", config.cold_item_support, " but must be >= 0"));

  ColdStartSplit split;
  split.cold_items.assign(cold_items.begin(), cold_items.end());
  for (char& c : split.cold_items) c = c != 0 ? 1 : 0;
  split.cold_users.assign(static_cast<std::size_t>(num_users), 0);
  {
    const auto count = static_cast<Index>(std::llround(config.cold_user_fraction * double(num_users)));
    std::vector<Index> users(static_cast<std::size_t>(num_users));
    for (Index u = 0; u < num_users; ++u) users[static_cast<std::size_t>(u)] = u;
    RandomStream rng(config.seed);
    // A partial Fisher-Yates shuffle: the first `count` entries are a uniform draw without replacement.
    for (Index k = 0; k < count; ++k) {
      const Index j = k + rng.uniform_index(num_users - k);
      std::swap(users[static_cast<std::size_t>(k)], users[static_cast<std::size_t>(j)]);
      split.cold_users[static_cast<std::size_t>(users[static_cast<std::size_t>(k)])] = 1;
    }
  }
  auto cold_user = [&](Index u) { return split.cold_users[static_cast<std::size_t>(u)] != 0; };
  auto cold_item = [&](Index i) { return split.cold_items[static_cast<std::size_t>(i)] != 0; };

  std::vector<Interaction> train;
  // Users' lists give the warm-item events of warm users (temporal hold-out), of cold users (support) and the
  // both-cold events; items' lists give the cold-item events of warm users (support by item time).
  for (Index u = 0; u < num_users; ++u) {
    const InteractionList l = all.user(u);
    Index warm_items = 0;
    for (Index k = 0; k < l.size; ++k) warm_items += cold_item(l.ids[k]) ? 0 : 1;
    Index keep;  // how many of the user's warm-item events (in time order) are trained on
    if (cold_user(u)) {
      keep = std::min(config.cold_user_support, warm_items);
    } else {
      const auto test = static_cast<Index>(std::ceil(config.warm_test_fraction * double(warm_items)));
      keep = warm_items == 0 ? 0 : std::max<Index>(1, warm_items - test);
    }
    Index seen = 0;
    for (Index k = 0; k < l.size; ++k) {
      const Interaction e{u, l.ids[k], l.times[k], l.weights[k]};
      if (cold_item(e.item)) {
        if (cold_user(u)) split.both_cold_test.push_back(e);
        continue;  // warm user x cold item: decided by the item's own time order below
      }
      if (seen++ < keep) {
        train.push_back(e);
      } else if (cold_user(u)) {
        split.cold_user_test.push_back(e);
      } else {
        split.warm_test.push_back(e);
      }
    }
  }
  for (Index i = 0; i < num_items; ++i) {
    if (!cold_item(i)) continue;
    const InteractionList l = all.item(i);
    Index seen = 0;
    for (Index k = 0; k < l.size; ++k) {
      if (cold_user(l.ids[k])) continue;
      const Interaction e{l.ids[k], i, l.times[k], l.weights[k]};
      if (seen++ < config.cold_item_support)
        train.push_back(e);
      else
        split.cold_item_test.push_back(e);
    }
  }
  split.train = InteractionMatrix(num_users, num_items, train);
  return split;
}

}  // namespace kshot

#endif  // KSHOT_RECOMMEND_SPLIT_HPP
