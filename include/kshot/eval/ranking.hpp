/**
 * @file kshot/eval/ranking.hpp
 * @brief Ranking metrics over many users in parallel: precision@K, recall@K, NDCG@K (graded relevance),
 * MAP@K, MRR, hit rate@K, R-precision and MAP@R on ranked lists of item ids, and NDCG, ROC-AUC, average
 * precision, R-precision and MAP@R on score matrices exactly as scikit-learn (and pytorch-metric-learning)
 * define them.
 *
 * Every function computes one value per user in parallel (each user is independent) and reduces the mean
 * serially in user order, so results are bitwise identical for any number of threads.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_EVAL_RANKING_HPP
#define KSHOT_EVAL_RANKING_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"
#include "kshot/eval/confidence.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <type_traits>
#include <utility>
#include <vector>

namespace kshot {

/**
 * @brief How NDCG turns a relevance grade into a gain.
 *
 * `linear` (the default) uses the grade itself, as scikit-learn's `ndcg_score`; `exponential` uses
 * @f$2^{rel} - 1@f$ (Burges et al. 2005), which stresses highly relevant items. Both give 1 for a
 * binary relevant item.
 */
enum class Gain { linear, exponential };

/**
 * @brief One metric per user and its mean over the users that count.
 *
 * A user that a metric cannot score (no relevant item for recall, a user with only relevant or only
 * irrelevant items for ROC-AUC) is skipped: its entry in `values` is 0, `counted` is 0, and it is left
 * out of `mean`. Each function documents which users it skips; the result is never NaN.
 */
struct PerUserMetric {
  std::vector<double> values;         ///< one value per user, in user order (0 for skipped users)
  std::vector<std::uint8_t> counted;  ///< 1 where the user entered the mean, 0 where it was skipped
  double mean = 0;                    ///< mean of the counted values, summed in user order (0 if none)
  Index counted_users = 0;            ///< users in the mean
  Index skipped_users = 0;            ///< users left out

  /**
   * @brief Mean ± 95% normal interval over the counted users (see mean_ci95()).
   * @throws std::invalid_argument if no user was counted.
   */
  MeanInterval ci95() const {
    KSHOT_CHECK(counted_users > 0, "kshot::PerUserMetric::ci95()",
                detail::cat("no user was counted (", skipped_users, " skipped)"));
    std::vector<double> kept;
    kept.reserve(static_cast<std::size_t>(counted_users));
    for (std::size_t u = 0; u < values.size(); ++u)
      if (counted[u] != 0) kept.push_back(values[u]);
    return mean_ci95(kept);
  }
};

/**
 * @brief The relevant items of many users, stored flat (CSR): user u owns entries
 * `offsets[u] .. offsets[u + 1] - 1` of `ids` (and of `gains` for graded relevance).
 *
 * Item ids are `std::int64_t`, the external ids of kshot's retrieval results; they must be >= 0 because
 * a negative id in a ranked list means "no item". Every listed item is relevant; its gain (relevance
 * grade) must be finite and > 0, and is 1 for binary relevance. Within a user, ids are kept sorted so that
 * the metrics find a ranked item by binary search.
 *
 * @note The constructors allocate and sort once; the metrics only read. Safe to share between threads.
 */
class RelevanceSets {
 public:
  /// Item id type.
  using Id = std::int64_t;

  /// No users.
  RelevanceSets() : offsets_(1, 0) {}

  /**
   * @brief Binary relevance: `sets[u]` lists the relevant items of user u (gain 1 each).
   * @throws std::invalid_argument if an id is negative or repeated within a user.
   */
  explicit RelevanceSets(const std::vector<std::vector<Id>>& sets) : offsets_(1, 0), graded_(false) {
    for (const auto& s : sets) {
      ids_.insert(ids_.end(), s.begin(), s.end());
      offsets_.push_back(static_cast<Index>(ids_.size()));
    }
    gains_.assign(ids_.size(), 1.0);
    finish("kshot::RelevanceSets::RelevanceSets()");
  }

  /**
   * @brief Graded relevance: `graded[u]` lists (item id, gain) pairs of user u.
   * @throws std::invalid_argument if an id is negative or repeated within a user, or a gain is not
   * finite or not > 0.
   */
  explicit RelevanceSets(const std::vector<std::vector<std::pair<Id, double>>>& graded)
      : offsets_(1, 0), graded_(true) {
    for (const auto& s : graded) {
      for (const auto& entry : s) {
        ids_.push_back(entry.first);
        gains_.push_back(entry.second);
      }
      offsets_.push_back(static_cast<Index>(ids_.size()));
    }
    finish("kshot::RelevanceSets::RelevanceSets()");
  }

  /**
   * @brief From CSR arrays: `offsets` (users + 1 entries, starting at 0, non-decreasing, ending at
   * ids.size()), `ids`, and `gains` (empty for binary relevance, else one per id).
   * @throws std::invalid_argument if the offsets are malformed, gains has a size other than 0 or
   * ids.size(), an id is negative or repeated within a user, or a gain is not finite or not > 0.
   */
  static RelevanceSets from_csr(std::vector<Index> offsets, std::vector<Id> ids, std::vector<double> gains = {}) {
    constexpr const char* where = "kshot::RelevanceSets::from_csr()";
    KSHOT_CHECK(!offsets.empty(), where, "offsets is empty (it needs users + 1 entries)");
    KSHOT_CHECK(offsets.front() == 0, where, detail::cat("offsets[0] must be 0, got ", offsets.front()));
    KSHOT_CHECK(offsets.back() == static_cast<Index>(ids.size()), where,
                detail::cat("offsets ends at ", offsets.back(), " but ids has ", ids.size(), " entries"));
    for (std::size_t u = 1; u < offsets.size(); ++u)
      KSHOT_CHECK(offsets[u] >= offsets[u - 1], where,
                  detail::cat("offsets decreases at ", u, ": ", offsets[u - 1], " then ", offsets[u]));
    KSHOT_CHECK(gains.empty() || gains.size() == ids.size(), where,
                detail::cat("gains has ", gains.size(), " entries but ids has ", ids.size()));
    RelevanceSets out;
    out.graded_ = !gains.empty();
    if (gains.empty()) gains.assign(ids.size(), 1.0);
    out.offsets_ = std::move(offsets);
    out.ids_ = std::move(ids);
    out.gains_ = std::move(gains);
    out.finish(where);
    return out;
  }

  /**
   * @brief Relevance by class, the protocol of metric-learning retrieval (MAP@R, R-precision): the
   * relevant items of query q are the gallery rows whose label equals query_labels[q] (item id = gallery
   * row index, gain 1).
   * @param[in] query_labels one label per query (user).
   * @param[in] gallery_labels one label per gallery row.
   * @param[in] exclude_self true when the queries are the gallery itself (query q is gallery row q): a
   * query is then not relevant to itself. Requires equally many queries and gallery rows.
   * @throws std::invalid_argument if exclude_self is true and the sizes differ.
   * @note Stores, for every query, all gallery rows of its class: memory grows with queries x class size.
   */
  static RelevanceSets from_labels(ConstLabelRef query_labels, ConstLabelRef gallery_labels,
                                   bool exclude_self = false) {
    constexpr const char* where = "kshot::RelevanceSets::from_labels()";
    KSHOT_CHECK(!exclude_self || query_labels.size() == gallery_labels.size(), where,
                detail::cat("exclude_self needs as many queries as gallery rows, got ", query_labels.size(),
                            " queries and ", gallery_labels.size(), " gallery rows"));
    // Gallery rows grouped by label (stable, so each group stays in increasing row order).
    std::vector<Id> by_label(static_cast<std::size_t>(gallery_labels.size()));
    std::iota(by_label.begin(), by_label.end(), Id(0));
    std::stable_sort(by_label.begin(), by_label.end(),
                     [&](Id a, Id b) { return gallery_labels[static_cast<Index>(a)] < gallery_labels[static_cast<Index>(b)]; });
    RelevanceSets out;
    out.graded_ = false;
    for (Index q = 0; q < query_labels.size(); ++q) {
      const Label label = query_labels[q];
      const auto first = std::lower_bound(by_label.begin(), by_label.end(), label, [&](Id row, Label value) {
        return gallery_labels[static_cast<Index>(row)] < value;
      });
      for (auto it = first; it != by_label.end() && gallery_labels[static_cast<Index>(*it)] == label; ++it)
        if (!exclude_self || *it != static_cast<Id>(q)) out.ids_.push_back(*it);
      out.offsets_.push_back(static_cast<Index>(out.ids_.size()));
    }
    out.gains_.assign(out.ids_.size(), 1.0);
    out.finish(where);
    return out;
  }

  /// Number of users.
  Index users() const noexcept { return static_cast<Index>(offsets_.size()) - 1; }
  /// Number of relevant items of `user` (R in R-precision).
  Index size(Index user) const noexcept { return offsets_[index(user) + 1] - offsets_[index(user)]; }
  /// The largest gain of any user (0 when there is none).
  double max_gain() const noexcept {
    return gains_.empty() ? 0.0 : *std::max_element(gains_.begin(), gains_.end());
  }
  /// Total number of (user, item) entries.
  Index entries() const noexcept { return static_cast<Index>(ids_.size()); }
  /// True when built with gains (graded relevance).
  bool graded() const noexcept { return graded_; }

  /// The relevant ids of `user`, sorted ascending.
  Eigen::Map<const Eigen::Matrix<Id, Eigen::Dynamic, 1>> ids(Index user) const noexcept {
    return {ids_.data() + offsets_[index(user)], size(user)};
  }
  /// The gains of `user`, aligned with ids(user).
  Eigen::Map<const VectorX<double>> gains(Index user) const noexcept {
    return {gains_.data() + offsets_[index(user)], size(user)};
  }
  /// The gains of `user` sorted in decreasing order (the ideal ranking of NDCG).
  Eigen::Map<const VectorX<double>> ideal_gains(Index user) const noexcept {
    return {ideal_.data() + offsets_[index(user)], size(user)};
  }

  /// Position of `id` within ids(user), or -1 if it is not relevant to the user (binary search).
  Index find(Index user, Id id) const noexcept {
    const Id* first = ids_.data() + offsets_[index(user)];
    const Id* last = ids_.data() + offsets_[index(user) + 1];
    const Id* it = std::lower_bound(first, last, id);
    return (it != last && *it == id) ? static_cast<Index>(it - first) : -1;
  }

 private:
  static std::size_t index(Index user) noexcept { return static_cast<std::size_t>(user); }

  /// Checks ids and gains, sorts each user's entries by id and fills the ideal gains.
  void finish(const char* where) {
    ideal_.assign(gains_.size(), 0.0);
    std::vector<std::size_t> order;
    std::vector<Id> sorted_ids;
    std::vector<double> sorted_gains;
    for (Index u = 0; u < users(); ++u) {
      const auto begin = static_cast<std::size_t>(offsets_[index(u)]);
      const auto end = static_cast<std::size_t>(offsets_[index(u) + 1]);
      for (std::size_t e = begin; e < end; ++e) {
        KSHOT_CHECK(ids_[e] >= 0, where,
                    detail::cat("user ", u, " has a negative item id ", ids_[e], " (ids must be >= 0)"));
        KSHOT_CHECK(std::isfinite(gains_[e]) && gains_[e] > 0, where,
                    detail::cat("user ", u, ", item ", ids_[e], " has gain ", gains_[e],
                                " (gains must be finite and > 0; leave irrelevant items out)"));
      }
      order.resize(end - begin);
      std::iota(order.begin(), order.end(), begin);
      std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return ids_[a] < ids_[b]; });
      sorted_ids.clear();
      sorted_gains.clear();
      for (std::size_t e : order) {
        sorted_ids.push_back(ids_[e]);
        sorted_gains.push_back(gains_[e]);
      }
      for (std::size_t e = 1; e < sorted_ids.size(); ++e)
        KSHOT_CHECK(sorted_ids[e] != sorted_ids[e - 1], where,
                    detail::cat("user ", u, " lists item ", sorted_ids[e], " more than once"));
      std::copy(sorted_ids.begin(), sorted_ids.end(), ids_.begin() + static_cast<std::ptrdiff_t>(begin));
      std::copy(sorted_gains.begin(), sorted_gains.end(), gains_.begin() + static_cast<std::ptrdiff_t>(begin));
      std::copy(sorted_gains.begin(), sorted_gains.end(), ideal_.begin() + static_cast<std::ptrdiff_t>(begin));
      std::sort(ideal_.begin() + static_cast<std::ptrdiff_t>(begin), ideal_.begin() + static_cast<std::ptrdiff_t>(end),
                [](double a, double b) { return a > b; });
    }
  }

  std::vector<Index> offsets_;
  std::vector<Id> ids_;
  std::vector<double> gains_;
  std::vector<double> ideal_;
  bool graded_ = false;
};

/// Every ranked-list metric of evaluate_ranking(), one PerUserMetric each.
struct RankingReport {
  Index k = 0;                ///< the cut-off K
  PerUserMetric precision;    ///< precision@K
  PerUserMetric recall;       ///< recall@K
  PerUserMetric ndcg;         ///< NDCG@K
  PerUserMetric map;          ///< MAP@K (average precision @K, denominator min(K, R))
  PerUserMetric mrr;          ///< reciprocal rank of the first relevant item within K
  PerUserMetric hit_rate;     ///< 1 if a relevant item is within K
  PerUserMetric r_precision;  ///< R-precision (independent of K)
  PerUserMetric map_at_r;     ///< MAP@R (independent of K)
};

namespace detail {

/// All ranked-list metrics of one user.
struct UserRanking {
  double precision = 0, recall = 0, ndcg = 0, map = 0, mrr = 0, hit_rate = 0, r_precision = 0, map_at_r = 0;
  bool has_relevant = false;
};

/// NDCG's gain of a relevance grade.
inline double apply_gain(double rel, Gain gain) noexcept { return gain == Gain::linear ? rel : std::exp2(rel) - 1.0; }

/// NDCG's position discount 1 / log2(position + 2) for a 0-based position.
inline double rank_discount(Index position) noexcept { return 1.0 / std::log2(static_cast<double>(position) + 2.0); }

/// Gain::exponential overflows past grade 1023 (2^1024 is not a double): refuse such grades up front.
inline void check_exponential_gain(Gain gain, double max_grade, const char* where) {
  KSHOT_CHECK(gain != Gain::exponential || max_grade <= 1023.0, where,
              cat("Gain::exponential needs relevance grades <= 1023 (2^grade - 1 must be finite), got ", max_grade));
}

/// The metrics of user u from its ranked row (`length` ids, the first k of which are "@K").
template <class IdT>
UserRanking rank_user(const IdT* row, Index length, Index k, const RelevanceSets& relevant, Index u, Gain gain) {
  UserRanking out;
  const Index r = relevant.size(u);
  if (r == 0) return out;
  out.has_relevant = true;
  const Index limit = std::min(length, std::max(k, r));
  Index hits_k = 0, hits_r = 0;
  double ap_k = 0, ap_r = 0, dcg = 0;
  for (Index j = 0; j < limit; ++j) {
    const auto id = static_cast<RelevanceSets::Id>(row[j]);
    if (id < 0) continue;
    const Index found = relevant.find(u, id);
    if (found < 0) continue;
    bool repeated = false;  // a relevant item listed twice counts once, at its first position
    for (Index earlier = 0; earlier < j && !repeated; ++earlier) repeated = static_cast<RelevanceSets::Id>(row[earlier]) == id;
    if (repeated) continue;
    const double rank = static_cast<double>(j + 1);
    if (j < k) {
      ++hits_k;
      ap_k += static_cast<double>(hits_k) / rank;
      dcg += apply_gain(relevant.gains(u)[found], gain) * rank_discount(j);
      if (hits_k == 1) out.mrr = 1.0 / rank;
    }
    if (j < r) {
      ++hits_r;
      ap_r += static_cast<double>(hits_r) / rank;
    }
  }
  const auto ideal = relevant.ideal_gains(u);
  double idcg = 0;
  for (Index j = 0; j < std::min(k, r); ++j) idcg += apply_gain(ideal[j], gain) * rank_discount(j);
  const auto rd = static_cast<double>(r);
  out.precision = static_cast<double>(hits_k) / static_cast<double>(k);
  out.recall = static_cast<double>(hits_k) / rd;
  out.hit_rate = hits_k > 0 ? 1.0 : 0.0;
  out.map = ap_k / static_cast<double>(std::min(k, r));
  out.ndcg = idcg > 0 ? dcg / idcg : 0.0;
  out.r_precision = static_cast<double>(hits_r) / rd;
  out.map_at_r = ap_r / rd;
  return out;
}

/// Sizes `m` for n users, all counted until marked otherwise.
inline void start_metric(PerUserMetric& m, Index n) {
  m.values.assign(static_cast<std::size_t>(n), 0.0);
  m.counted.assign(static_cast<std::size_t>(n), 1);
}

/// Fills mean and counts from values and counted, summing in user order.
inline void finish_metric(PerUserMetric& m) {
  double sum = 0;
  Index counted = 0;
  for (std::size_t u = 0; u < m.values.size(); ++u) {
    if (m.counted[u] == 0) {
      m.values[u] = 0;
      continue;
    }
    sum += m.values[u];
    ++counted;
  }
  m.counted_users = counted;
  m.skipped_users = static_cast<Index>(m.values.size()) - counted;
  m.mean = counted > 0 ? sum / static_cast<double>(counted) : 0.0;
}

/// Validates a ranked-list call and binds the ids to a row-major view.
template <class Derived>
Eigen::Ref<const Eigen::Matrix<typename Derived::Scalar, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> bind_ranked(
    const Eigen::MatrixBase<Derived>& ranked_ids, const RelevanceSets& relevant, Index k, bool need_k, const char* where) {
  static_assert(std::is_integral_v<typename Derived::Scalar>,
                "kshot ranking metrics: ranked_ids must hold integer item ids (std::int64_t, int, ...)");
  KSHOT_CHECK(ranked_ids.rows() == relevant.users(), where,
              cat("ranked_ids has ", ranked_ids.rows(), " rows (users) but relevant has ", relevant.users(), " users"));
  KSHOT_CHECK(ranked_ids.cols() >= 1, where, "ranked_ids has no columns");
  if (need_k) {
    KSHOT_CHECK(k >= 1, where, cat("k must be at least 1, got ", k));
    KSHOT_CHECK(k <= ranked_ids.cols(), where,
                cat("k = ", k, " exceeds the ", ranked_ids.cols(), " columns of ranked_ids"));
  }
  return ranked_ids.derived();
}

/**
 * Runs rank_user for every user in parallel and hands (u, metrics) to `sink`, which writes only entries of
 * user u. `k` == 0 means "K does not matter" (the R-metrics): then the whole row is scanned.
 */
template <class IdT, class Sink>
void for_each_ranked_user(const Eigen::Ref<const Eigen::Matrix<IdT, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>& ids,
                          const RelevanceSets& relevant, Index k, Gain gain, Sink&& sink) {
  const Index n = ids.rows();
  const Index length = ids.cols();
  const Index kk = k > 0 ? k : length;
  const double work = static_cast<double>(n) * static_cast<double>(length) *
                      (1.0 + std::log2(1.0 + static_cast<double>(relevant.entries()) / std::max<double>(1.0, static_cast<double>(n))));
  parallel_for(n, worth_parallel(n, work), [&](Index u) {
    sink(u, rank_user(ids.data() + u * ids.outerStride(), length, kk, relevant, u, gain));
  });
}

/// One ranked-list metric: `field` picks it out of UserRanking; `uses_k` false for the R-metrics (k ignored).
template <class Derived>
PerUserMetric ranked_metric(const Eigen::MatrixBase<Derived>& ranked_ids, const RelevanceSets& relevant, Index k,
                            bool uses_k, Gain gain, double UserRanking::*field, const char* where) {
  const auto ids = bind_ranked(ranked_ids, relevant, k, uses_k, where);
  check_exponential_gain(gain, relevant.max_gain(), where);
  PerUserMetric out;
  start_metric(out, ids.rows());
  for_each_ranked_user(ids, relevant, uses_k ? k : 0, gain, [&](Index u, const UserRanking& m) {
    out.values[static_cast<std::size_t>(u)] = m.*field;
    out.counted[static_cast<std::size_t>(u)] = m.has_relevant ? 1 : 0;
  });
  finish_metric(out);
  return out;
}

}  // namespace detail

/**
 * @brief Every ranked-list metric at cut-off K in one pass over the users.
 *
 * `ranked_ids` is n x L: row u lists user u's recommended item ids, best first (for example the ids of a
 * top-L search). A negative id means "no item" (padding of a short list) and counts as a miss. A
 * relevant id repeated in a row counts only at its first position. With @f$rel_j@f$ = 1 when the item at
 * rank j (1-based) is relevant, R = |relevant(u)| and @f$g_j@f$ its gain:
 *
 * - precision@K @f$= \frac{1}{K}\sum_{j\le K} rel_j@f$ (empty slots count as misses; denominator K);
 * - recall@K @f$= \frac{1}{R}\sum_{j\le K} rel_j@f$;
 * - hit rate@K = 1 when some @f$rel_j = 1@f$, j <= K;
 * - MRR@K: 1 / (rank of the first relevant item within K), 0 if none;
 * - MAP@K @f$= \frac{1}{\min(K, R)}\sum_{j\le K} rel_j\,P@j@f$ (the usual recommender denominator);
 * - NDCG@K @f$= DCG@K / IDCG@K@f$, @f$DCG@K = \sum_{j\le K} \mathrm{gain}(g_j)\,rel_j/\log_2(j+1)@f$,
 *   IDCG from the user's gains sorted in decreasing order (also those not in the list);
 * - R-precision @f$= \frac{1}{R}\sum_{j\le R} rel_j@f$ and MAP@R @f$= \frac{1}{R}\sum_{j\le R} rel_j\,P@j@f$
 *   (Musgrave et al. 2020); positions beyond L count as misses, so search with L >= max R for exact values.
 *
 * Users with no relevant item are skipped by every metric (counted in `skipped_users`).
 *
 * @param[in] ranked_ids n x L integer matrix (any integer type; row-major binds without a copy).
 * @param[in] relevant the relevant items of the n users.
 * @param[in] k the cut-off K, 1 <= k <= L.
 * @param[in] gain NDCG's gain (Gain::linear by default, as scikit-learn).
 * @throws std::invalid_argument if ranked_ids has no columns or a row count other than relevant.users(),
 * k is outside [1, L], or gain is Gain::exponential and a grade exceeds 1023 (2^grade overflows).
 * @note Parallel over users; the means are summed in user order, so results do not depend on the thread
 * count. Allocates the per-user result vectors only.
 */
template <class Derived>
RankingReport evaluate_ranking(const Eigen::MatrixBase<Derived>& ranked_ids, const RelevanceSets& relevant, Index k,
                               Gain gain = Gain::linear) {
  const auto ids = detail::bind_ranked(ranked_ids, relevant, k, true, "kshot::evaluate_ranking()");
  detail::check_exponential_gain(gain, relevant.max_gain(), "kshot::evaluate_ranking()");
  RankingReport report;
  report.k = k;
  PerUserMetric* all[] = {&report.precision, &report.recall,  &report.ndcg,        &report.map,
                          &report.mrr,       &report.hit_rate, &report.r_precision, &report.map_at_r};
  for (PerUserMetric* m : all) detail::start_metric(*m, ids.rows());
  detail::for_each_ranked_user(ids, relevant, k, gain, [&](Index u, const detail::UserRanking& m) {
    const auto i = static_cast<std::size_t>(u);
    report.precision.values[i] = m.precision;
    report.recall.values[i] = m.recall;
    report.ndcg.values[i] = m.ndcg;
    report.map.values[i] = m.map;
    report.mrr.values[i] = m.mrr;
    report.hit_rate.values[i] = m.hit_rate;
    report.r_precision.values[i] = m.r_precision;
    report.map_at_r.values[i] = m.map_at_r;
    for (PerUserMetric* metric : all) metric->counted[i] = m.has_relevant ? 1 : 0;
  });
  for (PerUserMetric* m : all) detail::finish_metric(*m);
  return report;
}

/**
 * @brief Precision@K: relevant items among the first K, divided by K. See evaluate_ranking() for the
 * input conventions.
 * @param[in] ranked_ids n x L item ids, best first (any integer type; negative = no item).
 * @param[in] relevant the relevant items of the n users.
 * @param[in] k the cut-off K, 1 <= k <= L.
 * @throws std::invalid_argument as evaluate_ranking().
 * @note Skips users with no relevant item. Parallel over users, thread-count independent.
 */
template <class Derived>
PerUserMetric precision_at_k(const Eigen::MatrixBase<Derived>& ranked_ids, const RelevanceSets& relevant, Index k) {
  return detail::ranked_metric(ranked_ids, relevant, k, true, Gain::linear, &detail::UserRanking::precision,
                               "kshot::precision_at_k()");
}

/**
 * @brief Recall@K: relevant items among the first K, divided by the user's number of relevant items.
 * @param[in] ranked_ids n x L item ids, best first (any integer type; negative = no item).
 * @param[in] relevant the relevant items of the n users.
 * @param[in] k the cut-off K, 1 <= k <= L.
 * @throws std::invalid_argument as evaluate_ranking().
 * @note Skips users with no relevant item. Parallel over users, thread-count independent.
 */
template <class Derived>
PerUserMetric recall_at_k(const Eigen::MatrixBase<Derived>& ranked_ids, const RelevanceSets& relevant, Index k) {
  return detail::ranked_metric(ranked_ids, relevant, k, true, Gain::linear, &detail::UserRanking::recall,
                               "kshot::recall_at_k()");
}

/**
 * @brief Hit rate@K: 1 when at least one relevant item is among the first K, else 0.
 * @param[in] ranked_ids n x L item ids, best first (any integer type; negative = no item).
 * @param[in] relevant the relevant items of the n users.
 * @param[in] k the cut-off K, 1 <= k <= L.
 * @throws std::invalid_argument as evaluate_ranking().
 * @note Skips users with no relevant item. Parallel over users, thread-count independent.
 */
template <class Derived>
PerUserMetric hit_rate_at_k(const Eigen::MatrixBase<Derived>& ranked_ids, const RelevanceSets& relevant, Index k) {
  return detail::ranked_metric(ranked_ids, relevant, k, true, Gain::linear, &detail::UserRanking::hit_rate,
                               "kshot::hit_rate_at_k()");
}

/**
 * @brief Mean reciprocal rank within the first K: 1 / rank of the first relevant item, 0 if none.
 * @param[in] ranked_ids n x L item ids, best first (any integer type; negative = no item).
 * @param[in] relevant the relevant items of the n users.
 * @param[in] k the cut-off K, 1 <= k <= L.
 * @throws std::invalid_argument as evaluate_ranking().
 * @note Skips users with no relevant item. Parallel over users, thread-count independent.
 */
template <class Derived>
PerUserMetric mrr_at_k(const Eigen::MatrixBase<Derived>& ranked_ids, const RelevanceSets& relevant, Index k) {
  return detail::ranked_metric(ranked_ids, relevant, k, true, Gain::linear, &detail::UserRanking::mrr,
                               "kshot::mrr_at_k()");
}

/**
 * @brief Mean reciprocal rank over the whole list (K = L): 1 / rank of the first relevant item, 0 if the list
 * has none.
 * @param[in] ranked_ids n x L item ids, best first (any integer type; negative = no item).
 * @param[in] relevant the relevant items of the n users.
 * @throws std::invalid_argument if ranked_ids has no columns or a row count other than relevant.users().
 * @note Skips users with no relevant item. Parallel over users, thread-count independent.
 */
template <class Derived>
PerUserMetric mean_reciprocal_rank(const Eigen::MatrixBase<Derived>& ranked_ids, const RelevanceSets& relevant) {
  return detail::ranked_metric(ranked_ids, relevant, std::max<Index>(ranked_ids.cols(), 1), true, Gain::linear,
                               &detail::UserRanking::mrr, "kshot::mean_reciprocal_rank()");
}

/**
 * @brief MAP@K: @f$\frac{1}{\min(K, R)}\sum_{j\le K} rel_j\,P@j@f$ per user, averaged over users.
 * @param[in] ranked_ids n x L item ids, best first (any integer type; negative = no item).
 * @param[in] relevant the relevant items of the n users.
 * @param[in] k the cut-off K, 1 <= k <= L.
 * @throws std::invalid_argument as evaluate_ranking().
 * @note Skips users with no relevant item. Parallel over users, thread-count independent.
 */
template <class Derived>
PerUserMetric map_at_k(const Eigen::MatrixBase<Derived>& ranked_ids, const RelevanceSets& relevant, Index k) {
  return detail::ranked_metric(ranked_ids, relevant, k, true, Gain::linear, &detail::UserRanking::map, "kshot::map_at_k()");
}

/**
 * @brief NDCG@K with graded relevance (the gains of `relevant`); see evaluate_ranking() for the formula.
 * @param[in] ranked_ids n x L item ids, best first (any integer type; negative = no item).
 * @param[in] relevant the relevant items of the n users.
 * @param[in] k the cut-off K, 1 <= k <= L.
 * @param[in] gain Gain::linear (grade) or Gain::exponential (2^grade - 1).
 * @throws std::invalid_argument as evaluate_ranking().
 * @note Skips users with no relevant item. Parallel over users, thread-count independent.
 */
template <class Derived>
PerUserMetric ndcg_at_k(const Eigen::MatrixBase<Derived>& ranked_ids, const RelevanceSets& relevant, Index k,
                        Gain gain = Gain::linear) {
  return detail::ranked_metric(ranked_ids, relevant, k, true, gain, &detail::UserRanking::ndcg, "kshot::ndcg_at_k()");
}

/**
 * @brief R-precision of ranked lists: relevant items among the first R = |relevant(u)|, divided by R.
 * Positions beyond the L columns count as misses.
 * @param[in] ranked_ids n x L item ids, best first (any integer type; negative = no item).
 * @param[in] relevant the relevant items of the n users.
 * @throws std::invalid_argument if ranked_ids has no columns or a row count other than relevant.users().
 * @note Skips users with no relevant item. Parallel over users, thread-count independent.
 */
template <class Derived>
PerUserMetric r_precision(const Eigen::MatrixBase<Derived>& ranked_ids, const RelevanceSets& relevant) {
  return detail::ranked_metric(ranked_ids, relevant, 0, false, Gain::linear, &detail::UserRanking::r_precision,
                               "kshot::r_precision()");
}

/**
 * @brief MAP@R of ranked lists (Musgrave et al. 2020): @f$\frac{1}{R}\sum_{j\le R} rel_j\,P@j@f$.
 * Positions beyond the L columns count as misses.
 * @param[in] ranked_ids n x L item ids, best first (any integer type; negative = no item).
 * @param[in] relevant the relevant items of the n users.
 * @throws std::invalid_argument if ranked_ids has no columns or a row count other than relevant.users().
 * @note Skips users with no relevant item. Parallel over users, thread-count independent.
 */
template <class Derived>
PerUserMetric map_at_r(const Eigen::MatrixBase<Derived>& ranked_ids, const RelevanceSets& relevant) {
  return detail::ranked_metric(ranked_ids, relevant, 0, false, Gain::linear, &detail::UserRanking::map_at_r,
                               "kshot::map_at_r()");
}

// ---------------------------------------------------------------------------------------------------------
// Score matrices (scikit-learn's y_true / y_score form)
// ---------------------------------------------------------------------------------------------------------

namespace detail {

/// The score-form metrics.
enum class ScoreMetric { ndcg, roc_auc, average_precision, r_precision, map_at_r };

/// Checks two equally shaped, finite score matrices with non-negative relevance.
template <class DT, class DS>
void check_scores(const Eigen::MatrixBase<DT>& y_true, const Eigen::MatrixBase<DS>& y_score, const char* where) {
  static_assert(is_supported_scalar_v<typename DT::Scalar> && is_supported_scalar_v<typename DS::Scalar>,
                "kshot score metrics: y_true and y_score must be float or double matrices");
  KSHOT_CHECK(y_true.rows() == y_score.rows() && y_true.cols() == y_score.cols(), where,
              cat("y_true is ", y_true.rows(), " x ", y_true.cols(), " but y_score is ", y_score.rows(), " x ",
                  y_score.cols()));
  KSHOT_CHECK(y_true.rows() >= 1 && y_true.cols() >= 1, where,
              cat("y_true is ", y_true.rows(), " x ", y_true.cols(), ": it needs at least one user and one item"));
  check_finite(y_true, where, "y_true");
  check_finite(y_score, where, "y_score");
  for (Index i = 0; i < y_true.rows(); ++i)
    for (Index j = 0; j < y_true.cols(); ++j)
      KSHOT_CHECK(y_true(i, j) >= 0, where,
                  cat("y_true has a negative relevance (", y_true(i, j), ") at row ", i, ", column ", j));
}

/// Item order of one user: decreasing score, ties by increasing column (a stable, documented order).
template <class RowS>
void order_by_score(const RowS& score, std::vector<Index>& order) {
  order.resize(static_cast<std::size_t>(score.size()));
  std::iota(order.begin(), order.end(), Index(0));
  std::sort(order.begin(), order.end(), [&](Index a, Index b) {
    return score[a] > score[b] || (score[a] == score[b] && a < b);
  });
}

/// One user's value of `metric`; `counted` says whether the user enters the mean.
template <class RowT, class RowS>
double score_user(ScoreMetric metric, const RowT& truth, const RowS& score, Index k, bool ignore_ties, Gain gain,
                  std::vector<Index>& order, std::vector<double>& ideal, bool& counted) {
  const Index m = truth.size();
  order_by_score(score, order);
  counted = true;
  if (metric == ScoreMetric::ndcg) {
    // scikit-learn's ndcg_score: DCG of y_score's order over IDCG (y_true's own order); users whose
    // relevance is all 0 score 0 and are counted, as in scikit-learn.
    const Index kk = std::min(k, m);
    ideal.resize(static_cast<std::size_t>(m));
    for (Index j = 0; j < m; ++j) ideal[static_cast<std::size_t>(j)] = static_cast<double>(truth[j]);
    std::partial_sort(ideal.begin(), ideal.begin() + static_cast<std::ptrdiff_t>(kk), ideal.end(),
                      [](double a, double b) { return a > b; });
    double idcg = 0;
    for (Index j = 0; j < kk; ++j) idcg += apply_gain(ideal[static_cast<std::size_t>(j)], gain) * rank_discount(j);
    if (idcg == 0) return 0.0;
    double dcg = 0;
    if (ignore_ties) {
      for (Index j = 0; j < kk; ++j)
        dcg += apply_gain(static_cast<double>(truth[order[static_cast<std::size_t>(j)]]), gain) * rank_discount(j);
    } else {
      // Tied scores share the mean gain of their group, spread over the group's discounted positions
      // (McSherry & Najork 2008), as scikit-learn's _tie_averaged_dcg.
      Index start = 0;
      while (start < kk) {
        Index end = start + 1;
        const auto s = score[order[static_cast<std::size_t>(start)]];
        while (end < m && score[order[static_cast<std::size_t>(end)]] == s) ++end;
        double group_gain = 0;
        for (Index j = start; j < end; ++j)
          group_gain += apply_gain(static_cast<double>(truth[order[static_cast<std::size_t>(j)]]), gain);
        double discounts = 0;
        for (Index j = start; j < std::min(end, kk); ++j) discounts += rank_discount(j);
        dcg += group_gain / static_cast<double>(end - start) * discounts;
        start = end;
      }
    }
    return dcg / idcg;
  }

  Index positives = 0;
  for (Index j = 0; j < m; ++j) positives += truth[j] > 0 ? 1 : 0;
  const Index negatives = m - positives;
  switch (metric) {
    case ScoreMetric::roc_auc: {
      // Mann-Whitney form: each (positive, negative) pair ordered correctly counts 1, a tie counts 1/2.
      if (positives == 0 || negatives == 0) {
        counted = false;
        return 0.0;
      }
      double pairs = 0;
      Index positives_above = 0;
      Index start = 0;
      while (start < m) {
        Index end = start + 1;
        const auto s = score[order[static_cast<std::size_t>(start)]];
        while (end < m && score[order[static_cast<std::size_t>(end)]] == s) ++end;
        Index group_positives = 0;
        for (Index j = start; j < end; ++j) group_positives += truth[order[static_cast<std::size_t>(j)]] > 0 ? 1 : 0;
        const Index group_negatives = (end - start) - group_positives;
        pairs += static_cast<double>(group_negatives) *
                 (static_cast<double>(positives_above) + 0.5 * static_cast<double>(group_positives));
        positives_above += group_positives;
        start = end;
      }
      return pairs / (static_cast<double>(positives) * static_cast<double>(negatives));
    }
    case ScoreMetric::average_precision: {
      // scikit-learn's step form: sum over distinct score thresholds of (recall gain) x precision.
      if (positives == 0) {
        counted = false;
        return 0.0;
      }
      double ap = 0;
      Index true_positives = 0;
      Index start = 0;
      while (start < m && true_positives < positives) {
        Index end = start + 1;
        const auto s = score[order[static_cast<std::size_t>(start)]];
        while (end < m && score[order[static_cast<std::size_t>(end)]] == s) ++end;
        Index group_positives = 0;
        for (Index j = start; j < end; ++j) group_positives += truth[order[static_cast<std::size_t>(j)]] > 0 ? 1 : 0;
        true_positives += group_positives;
        if (group_positives > 0)
          ap += static_cast<double>(group_positives) / static_cast<double>(positives) *
                (static_cast<double>(true_positives) / static_cast<double>(end));
        start = end;
      }
      return ap;
    }
    case ScoreMetric::r_precision:
    case ScoreMetric::map_at_r: {
      if (positives == 0) {
        counted = false;
        return 0.0;
      }
      Index hits = 0;
      double ap = 0;
      for (Index j = 0; j < positives; ++j)
        if (truth[order[static_cast<std::size_t>(j)]] > 0) {
          ++hits;
          ap += static_cast<double>(hits) / static_cast<double>(j + 1);
        }
      const auto r = static_cast<double>(positives);
      return metric == ScoreMetric::r_precision ? static_cast<double>(hits) / r : ap / r;
    }
    default:
      return 0.0;
  }
}

/// Runs one score-form metric over all users in parallel.
template <class DT, class DS>
PerUserMetric score_metric(const Eigen::MatrixBase<DT>& y_true_in, const Eigen::MatrixBase<DS>& y_score_in,
                           ScoreMetric metric, Index k, bool ignore_ties, Gain gain, const char* where) {
  check_scores(y_true_in, y_score_in, where);
  if (metric == ScoreMetric::ndcg) check_exponential_gain(gain, static_cast<double>(y_true_in.maxCoeff()), where);
  const ConstRowMatrixRef<typename DT::Scalar> y_true(y_true_in.derived());
  const ConstRowMatrixRef<typename DS::Scalar> y_score(y_score_in.derived());
  const Index n = y_true.rows(), m = y_true.cols();
  PerUserMetric out;
  start_metric(out, n);
  // Per-thread sort buffers, grown once per call. A call made inside an enclosing parallel region runs
  // serially (parallel_for does not nest) and uses slot 0.
  const bool nested = in_parallel_region();
  const auto slots = static_cast<std::size_t>(nested ? 1 : std::max(1, max_threads()));
  std::vector<std::vector<Index>> orders(slots, std::vector<Index>(static_cast<std::size_t>(m)));
  std::vector<std::vector<double>> ideals(slots);
  const double work = static_cast<double>(n) * static_cast<double>(m) * (1.0 + std::log2(static_cast<double>(m)));
  parallel_for(n, worth_parallel(n, work), [&](Index u) {
    const auto slot = static_cast<std::size_t>(nested ? 0 : thread_index());
    bool counted = true;
    out.values[static_cast<std::size_t>(u)] =
        score_user(metric, y_true.row(u), y_score.row(u), k, ignore_ties, gain, orders[slot], ideals[slot], counted);
    out.counted[static_cast<std::size_t>(u)] = counted ? 1 : 0;
  });
  finish_metric(out);
  return out;
}

}  // namespace detail

/**
 * @brief NDCG@K of score matrices, exactly as `sklearn.metrics.ndcg_score(y_true, y_score, k=k,
 * ignore_ties=ignore_ties)`, per user (row).
 *
 * Items are ranked by decreasing y_score; @f$DCG@K = \sum_{j\le K} \mathrm{gain}(y\_true_{(j)})/\log_2(j+1)@f$
 * and IDCG@K is the DCG of y_true's own order. With `ignore_ties` false (the default, as scikit-learn) the
 * items of a group of tied scores all get the group's mean gain, spread over the positions the group
 * occupies; with `ignore_ties` true, ties are broken by increasing column (scikit-learn leaves that order
 * unspecified). K larger than the number of items means "all items", as in scikit-learn.
 *
 * A user whose y_true is all 0 has NDCG 0 and is counted in the mean (scikit-learn's convention), so
 * `mean` equals `ndcg_score`'s result.
 *
 * @param[in] y_true n x m non-negative relevance grades (float or double).
 * @param[in] y_score n x m scores, larger is better.
 * @param[in] k cut-off, >= 1.
 * @param[in] ignore_ties see above.
 * @param[in] gain Gain::linear (scikit-learn) or Gain::exponential.
 * @throws std::invalid_argument if the shapes differ, n < 1, m < 2 (scikit-learn's "only meaningful with
 * more than one document"), k < 1, y_true has a negative entry, either matrix has a non-finite entry, or gain
 * is Gain::exponential and a grade exceeds 1023.
 * @note Parallel over users, thread-count independent. Allocates a sort buffer per thread per call.
 * Column-major inputs are copied into row-major temporaries.
 */
template <class DT, class DS>
PerUserMetric ndcg_score(const Eigen::MatrixBase<DT>& y_true, const Eigen::MatrixBase<DS>& y_score, Index k,
                         bool ignore_ties = false, Gain gain = Gain::linear) {
  constexpr const char* where = "kshot::ndcg_score()";
  KSHOT_CHECK(k >= 1, where, detail::cat("k must be at least 1, got ", k));
  KSHOT_CHECK(y_true.cols() >= 2, where,
              detail::cat("y_true has ", y_true.cols(), " column(s): NDCG needs at least 2 items per user"));
  return detail::score_metric(y_true, y_score, detail::ScoreMetric::ndcg, k, ignore_ties, gain, where);
}

/**
 * @brief NDCG over all items, as `sklearn.metrics.ndcg_score(y_true, y_score)` (k=None, ties averaged);
 * see the overload with k for the definition, conventions and errors.
 * @param[in] y_true n x m non-negative relevance grades.
 * @param[in] y_score n x m scores, larger is better.
 * @throws std::invalid_argument as the overload with k.
 */
template <class DT, class DS>
PerUserMetric ndcg_score(const Eigen::MatrixBase<DT>& y_true, const Eigen::MatrixBase<DS>& y_score) {
  return ndcg_score(y_true, y_score, std::max<Index>(1, y_true.cols()));
}

/**
 * @brief ROC-AUC per user, as `sklearn.metrics.roc_auc_score(y_true[u], y_score[u])`: the fraction of
 * (relevant, irrelevant) item pairs that the scores order correctly, a tie counting 1/2.
 *
 * An item is relevant when y_true > 0. Users with only relevant or only irrelevant items have no AUC
 * (scikit-learn raises there); they are skipped.
 * @param[in] y_true n x m non-negative relevance (an item is relevant when > 0), float or double.
 * @param[in] y_score n x m scores, larger is better.
 * @throws std::invalid_argument if the shapes differ, the matrices are empty, y_true has a negative
 * entry, or either matrix has a non-finite entry.
 * @note Parallel over users, thread-count independent. Allocates a sort buffer per thread per call.
 */
template <class DT, class DS>
PerUserMetric roc_auc_score(const Eigen::MatrixBase<DT>& y_true, const Eigen::MatrixBase<DS>& y_score) {
  return detail::score_metric(y_true, y_score, detail::ScoreMetric::roc_auc, 0, false, Gain::linear,
                              "kshot::roc_auc_score()");
}

/**
 * @brief Average precision per user, as `sklearn.metrics.average_precision_score(y_true[u], y_score[u])`:
 * @f$AP = \sum_t (R_t - R_{t-1})\,P_t@f$ over the distinct score thresholds t in decreasing order (no
 * interpolation; tied items enter together).
 *
 * An item is relevant when y_true > 0. Users without a relevant item are skipped.
 * @param[in] y_true n x m non-negative relevance (an item is relevant when > 0), float or double.
 * @param[in] y_score n x m scores, larger is better.
 * @throws std::invalid_argument as roc_auc_score().
 * @note Parallel over users, thread-count independent. Allocates a sort buffer per thread per call.
 */
template <class DT, class DS>
PerUserMetric average_precision_score(const Eigen::MatrixBase<DT>& y_true, const Eigen::MatrixBase<DS>& y_score) {
  return detail::score_metric(y_true, y_score, detail::ScoreMetric::average_precision, 0, false, Gain::linear,
                              "kshot::average_precision_score()");
}

/**
 * @brief R-precision per user from scores: with R the number of relevant items (y_true > 0), the
 * fraction of relevant items among the R best-scored. Tied scores are ordered by increasing column.
 * @param[in] y_true n x m non-negative relevance (an item is relevant when > 0), float or double.
 * @param[in] y_score n x m scores, larger is better.
 * @throws std::invalid_argument as roc_auc_score().
 * @note Skips users without a relevant item. Parallel over users, thread-count independent.
 */
template <class DT, class DS, class = std::enable_if_t<std::is_floating_point_v<typename DS::Scalar>>>
PerUserMetric r_precision(const Eigen::MatrixBase<DT>& y_true, const Eigen::MatrixBase<DS>& y_score) {
  return detail::score_metric(y_true, y_score, detail::ScoreMetric::r_precision, 0, false, Gain::linear,
                              "kshot::r_precision()");
}

/**
 * @brief MAP@R per user from scores, as pytorch-metric-learning's AccuracyCalculator (Musgrave et al.
 * 2020): @f$\frac{1}{R}\sum_{j\le R} rel_j\,P@j@f$ over the R best-scored items, R the number of relevant
 * items. Tied scores are ordered by increasing column.
 * @param[in] y_true n x m non-negative relevance (an item is relevant when > 0), float or double.
 * @param[in] y_score n x m scores, larger is better.
 * @throws std::invalid_argument as roc_auc_score().
 * @note Skips users without a relevant item. Parallel over users, thread-count independent.
 */
template <class DT, class DS, class = std::enable_if_t<std::is_floating_point_v<typename DS::Scalar>>>
PerUserMetric map_at_r(const Eigen::MatrixBase<DT>& y_true, const Eigen::MatrixBase<DS>& y_score) {
  return detail::score_metric(y_true, y_score, detail::ScoreMetric::map_at_r, 0, false, Gain::linear,
                              "kshot::map_at_r()");
}

}  // namespace kshot

#endif  // KSHOT_EVAL_RANKING_HPP
