/**
 * @file kshot/recommend/interactions.hpp
 * @brief Implicit-feedback interactions (user, item, time, weight) stored twice in compressed rows: by user
 * (a user's history, for profiles and exclusions) and by item (an item's audience, for cold-item evidence).
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_RECOMMEND_INTERACTIONS_HPP
#define KSHOT_RECOMMEND_INTERACTIONS_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/types.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

namespace kshot {

/**
 * @brief One implicit-feedback event: `user` interacted with `item` at `time` (any monotone clock: seconds,
 * days, a sequence number), with a non-negative `weight` (1 for a click; larger for a purchase).
 *
 * Users and items are dense indices: users in [0, num_users), items in [0, num_items) of the
 * InteractionMatrix they go into (rows of the item-embedding and user-profile matrices).
 */
struct Interaction {
  Index user = 0;      ///< user index
  Index item = 0;      ///< item index
  double time = 0.0;   ///< when it happened (finite)
  double weight = 1.0; ///< strength, finite and >= 0
};

/**
 * @brief A read-only list of interactions of one user (or one item): parallel arrays of the other side's
 * indices, times and weights, sorted by time (ties by index).
 */
struct InteractionList {
  const Index* ids = nullptr;       ///< item indices (in a user's list) or user indices (in an item's list)
  const double* times = nullptr;    ///< their times, non-decreasing
  const double* weights = nullptr;  ///< their weights
  Index size = 0;                   ///< number of entries

  bool empty() const noexcept { return size == 0; }
  /// Whether `id` occurs in the list (linear scan; lists are short).
  bool contains(Index id) const noexcept { return std::find(ids, ids + size, id) != ids + size; }
};

/**
 * @brief Interactions of num_users users with num_items items, indexed both ways.
 *
 * Each user's list and each item's list is sorted by (time, other index), so "the first k interactions"
 * (a cold-start support set) and "the last ones" (a temporal hold-out) are prefixes and suffixes. Repeated
 * (user, item) events are kept as separate entries (a user may buy an item twice); use unique_pairs() when
 * a protocol needs each pair once.
 *
 * @note Building costs O(E log E) for E events and allocates; the accessors allocate nothing and are
 * thread-safe.
 */
class InteractionMatrix {
 public:
  /// An empty matrix (0 users, 0 items).
  InteractionMatrix() = default;

  /**
   * @brief Builds both indexes from a list of events.
   * @throws std::invalid_argument if num_users or num_items is negative, or an event has a user outside
   * [0, num_users), an item outside [0, num_items), a non-finite time, or a weight that is negative or
   * non-finite (the event's position and values are named).
   */
  InteractionMatrix(Index num_users, Index num_items, const std::vector<Interaction>& events)
      : num_users_(num_users), num_items_(num_items) {
    constexpr const char* where = "kshot::InteractionMatrix::InteractionMatrix()";
    KSHOT_CHECK(num_users >= 0, where, detail::cat("num_users is ", num_users, " but must be >= 0"));
    KSHOT_CHECK(num_items >= 0, where, detail::cat("num_items is ", num_items, " but must be >= 0"));
    for (std::size_t e = 0; e < events.size(); ++e) {
      const Interaction& x = events[e];
      KSHOT_CHECK(x.user >= 0 && x.user < num_users, where,
                  detail::cat("events[", e, "].user is ", x.user, " but must be in [0, ", num_users, ")"));
      KSHOT_CHECK(x.item >= 0 && x.item < num_items, where,
                  detail::cat("events[", e, "].item is ", x.item, " but must be in [0, ", num_items, ")"));
      KSHOT_CHECK(std::isfinite(x.time), where, detail::cat("events[", e, "].time is ", x.time, " but must be finite"));
      KSHOT_CHECK(std::isfinite(x.weight) && x.weight >= 0.0, where,
                  detail::cat("events[", e, "].weight is ", x.weight, " but must be finite and >= 0"));
    }
    build(events, /*by_user=*/true, by_user_);
    build(events, /*by_user=*/false, by_item_);
  }

  Index num_users() const noexcept { return num_users_; }
  Index num_items() const noexcept { return num_items_; }
  /// The number of events.
  Index size() const noexcept { return static_cast<Index>(by_user_.ids.size()); }

  /// The items user u interacted with, by time. @throws std::out_of_range if u is outside [0, num_users).
  InteractionList user(Index u) const {
    KSHOT_CHECK_RANGE(u >= 0 && u < num_users_, "kshot::InteractionMatrix::user()",
                      detail::cat("u is ", u, " but must be in [0, ", num_users_, ")"));
    return by_user_.list(u);
  }

  /// The users who interacted with item i, by time. @throws std::out_of_range if i is outside [0, num_items).
  InteractionList item(Index i) const {
    KSHOT_CHECK_RANGE(i >= 0 && i < num_items_, "kshot::InteractionMatrix::item()",
                      detail::cat("i is ", i, " but must be in [0, ", num_items_, ")"));
    return by_item_.list(i);
  }

  /// Every event, in user order (then time): a copy.
  std::vector<Interaction> events() const {
    std::vector<Interaction> out;
    out.reserve(by_user_.ids.size());
    for (Index u = 0; u < num_users_; ++u) {
      const InteractionList l = by_user_.list(u);
      for (Index k = 0; k < l.size; ++k) out.push_back({u, l.ids[k], l.times[k], l.weights[k]});
    }
    return out;
  }

  /// Number of events of each item (its popularity), num_items entries.
  std::vector<Index> item_counts() const {
    std::vector<Index> counts(static_cast<std::size_t>(num_items_));
    for (Index i = 0; i < num_items_; ++i) counts[static_cast<std::size_t>(i)] = by_item_.list(i).size;
    return counts;
  }

 private:
  struct Rows {
    std::vector<Index> offsets{0};
    std::vector<Index> ids;
    std::vector<double> times, weights;

    InteractionList list(Index r) const noexcept {
      const auto ur = static_cast<std::size_t>(r);
      const Index begin = offsets[ur], end = offsets[ur + 1];
      const auto b = static_cast<std::size_t>(begin);
      return {ids.data() + b, times.data() + b, weights.data() + b, end - begin};
    }
  };

  void build(const std::vector<Interaction>& events, bool by_user, Rows& rows) const {
    const Index n = by_user ? num_users_ : num_items_;
    std::vector<std::size_t> order(events.size());
    std::iota(order.begin(), order.end(), std::size_t{0});
    auto key = [&](const Interaction& x) { return by_user ? x.user : x.item; };
    auto other = [&](const Interaction& x) { return by_user ? x.item : x.user; };
    std::stable_sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
      const Interaction &x = events[a], &y = events[b];
      if (key(x) != key(y)) return key(x) < key(y);
      if (x.time != y.time) return x.time < y.time;
      return other(x) < other(y);
    });
    rows.offsets.assign(static_cast<std::size_t>(n) + 1, 0);
    rows.ids.resize(events.size());
    rows.times.resize(events.size());
    rows.weights.resize(events.size());
    for (std::size_t k = 0; k < order.size(); ++k) {
      const Interaction& x = events[order[k]];
      ++rows.offsets[static_cast<std::size_t>(key(x)) + 1];
      rows.ids[k] = other(x);
      rows.times[k] = x.time;
      rows.weights[k] = x.weight;
    }
    for (std::size_t r = 0; r < static_cast<std::size_t>(n); ++r) rows.offsets[r + 1] += rows.offsets[r];
  }

  Index num_users_ = 0, num_items_ = 0;
  Rows by_user_, by_item_;
};

}  // namespace kshot

#endif  // KSHOT_RECOMMEND_INTERACTIONS_HPP
