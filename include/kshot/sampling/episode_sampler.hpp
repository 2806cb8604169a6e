/**
 * @file kshot/sampling/episode_sampler.hpp
 * @brief Seeded N-way K-shot Q-query episode sampling: any episode regenerates alone from (seed, i),
 * small classes follow an explicit policy, and epoch mode shows every example as a query once per epoch.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_SAMPLING_EPISODE_SAMPLER_HPP
#define KSHOT_SAMPLING_EPISODE_SAMPLER_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/random.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"
#include "kshot/data/class_index.hpp"
#include "kshot/sampling/detail/eligible_classes.hpp"
#include "kshot/sampling/episode.hpp"

#include <algorithm>
#include <cstdint>
#include <numeric>
#include <vector>

namespace kshot {

/**
 * @brief The schedule of one epoch of EpisodeSampler::sample_epoch(): which query examples each episode
 * takes, so that every example of every eligible class is a query exactly once.
 *
 * Built by EpisodeSampler::plan_epoch(epoch), a pure function of (seed, epoch).
 */
class EpochPlan {
 public:
  /// The number of episodes in the epoch.
  Index num_episodes() const noexcept { return static_cast<Index>(episode_offsets_.size()) - 1; }
  /// The epoch number.
  std::uint64_t epoch() const noexcept { return epoch_; }

 private:
  friend class EpisodeSampler;
  struct Way {
    Index class_slot;   // position in the sampler's eligible-class list
    Index query_begin;  // first position of this episode's queries in the class's epoch permutation
    Index query_count;  // 0 for a class that only fills a way (its queries are used up)
  };
  std::uint64_t epoch_ = 0;
  std::vector<Index> perm_offsets_;     // per eligible class, where its permutation starts in perm_
  std::vector<Index> perm_;             // per class: a seeded permutation of its rows
  std::vector<Index> episode_offsets_{0};
  std::vector<Way> ways_;
};

/**
 * @brief Draws N-way K-shot Q-query episodes from a ClassIndex.
 *
 * Episode i is a pure function of (seed, i): it draws from its own RandomStream(seed, i), so any episode
 * can be regenerated alone, in any order, on any thread, with identical results. Within an episode the N
 * classes are drawn without replacement (uniformly among the eligible classes), and within each class
 * the K + Q examples are drawn without replacement (uniformly), the first K as support and the rest as
 * queries.
 *
 * A class with fewer than K + Q examples (K the largest shot count) is handled by the configured
 * SmallClassPolicy: throw at construction (default), skip it, or sample it with replacement.
 *
 * @code
 * kshot::ClassIndex index(labels);
 * kshot::EpisodeSampler sampler(index, {5, 5, 15}, 42);     // 5-way 5-shot 15-query, seed 42
 * kshot::GatheredEpisode<float> ep;
 * sampler.sample(7, features, ep);                          // always the same episode 7
 * @endcode
 *
 * @note sample() and sample_epoch() are const and thread-safe as long as each thread fills its own
 * Episode. The sampler keeps a copy of the index's class sizes and rows.
 */
class EpisodeSampler {
 public:
  /**
   * @param[in] index the rows of each class.
   * @param[in] config ways, shots, queries, optional min_shots, and the small-class policy.
   * @param[in] seed the seed of every episode.
   * @param[in] classes the classes to draw from (e.g. the novel split); empty means every class of `index`
   * with at least one example.
   * @throws std::invalid_argument if ways, shots or queries < 1, min_shots is not -1 and outside
   * [1, shots], ways x (shots + queries) overflows or exceeds what a std::vector<Index> can hold (checked
   * before anything is sized by it), a listed class is out of range, listed twice or has no example, a class
   * is too small under SmallClassPolicy::throw_error (naming the class, its count and the need), or fewer
   * than `ways` classes remain.
   */
  EpisodeSampler(const ClassIndex& index, EpisodeConfig config, std::uint64_t seed, std::vector<Label> classes = {})
      : config_(config), seed_(seed) {
    constexpr const char* where = "kshot::EpisodeSampler::EpisodeSampler()";
    KSHOT_CHECK(config.ways >= 1, where, detail::cat("ways must be at least 1, got ", config.ways));
    KSHOT_CHECK(config.shots >= 1, where, detail::cat("shots must be at least 1, got ", config.shots));
    KSHOT_CHECK(config.queries >= 1, where, detail::cat("queries must be at least 1, got ", config.queries));
    KSHOT_CHECK(config.min_shots == -1 || (config.min_shots >= 1 && config.min_shots <= config.shots), where,
                detail::cat("min_shots must be -1 or in [1, shots = ", config.shots, "], got ", config.min_shots));
    // An episode holds ways x (shots + queries) rows: that count must be computable and addressable (a
    // std::vector<Index> can hold it) before anything is sized by it.
    const auto most_rows = static_cast<Index>(std::vector<Index>().max_size());
    KSHOT_CHECK(config.shots <= most_rows - config.queries &&
                    config.ways <= most_rows / (config.shots + config.queries),
                where,
                detail::cat("an episode of ways ", config.ways, " x (shots ", config.shots, " + queries ",
                            config.queries, ") rows exceeds the ", most_rows, " rows a std::vector<Index> can hold"));
    const Index need = config.shots + config.queries;
    eligible_ = detail::select_classes(index, std::move(classes), need, config.small_classes, where, [&](Label c, Index count) {
      return detail::cat("class ", c, " has ", count, " examples but an episode needs ", need, " of each class (shots ",
                         config.shots, " + queries ", config.queries, "); choose SmallClassPolicy::skip or ",
                         "SmallClassPolicy::with_replacement to allow it");
    });
    KSHOT_CHECK(eligible_.size() >= config.ways, where,
                detail::cat("an episode needs ", config.ways, " classes but only ", eligible_.size(),
                            " are eligible (", eligible_.skipped.size(), " skipped for having fewer than ", need, " examples)"));
  }

  const EpisodeConfig& config() const noexcept { return config_; }
  std::uint64_t seed() const noexcept { return seed_; }
  /// The classes episodes are drawn from, in the order of their slots.
  const std::vector<Label>& classes() const noexcept { return eligible_.classes; }
  /// Classes left out by SmallClassPolicy::skip.
  const std::vector<Label>& skipped_classes() const noexcept { return eligible_.skipped; }

  /**
   * @brief Fills `out` with episode `i` (rows and labels).
   * @note Allocates only while `out`'s vectors grow to the episode's size.
   */
  void sample(Index i, Episode& out) const {
    RandomStream rng(seed_, static_cast<std::uint64_t>(i));
    const Index ways = config_.ways, queries = config_.queries;
    out.index = i;
    // Sized once to the largest episode; written through pointers (no per-element bookkeeping).
    resize(out.classes, ways);
    resize(out.scratch, ways);
    resize(out.support_rows, ways * config_.shots);
    resize(out.support_labels, ways * config_.shots);
    resize(out.query_rows, ways * queries);
    resize(out.query_labels, ways * queries);
    Index* slots = out.scratch.data();
    out.shuffle.draw(rng, eligible_.size(), ways, [&](Index k, Index slot) { slots[k] = slot; });
    Index* support_rows = out.support_rows.data();
    Label* support_labels = out.support_labels.data();
    Index* query_rows = out.query_rows.data();
    Label* query_labels = out.query_labels.data();
    Index n_support = 0;
    for (Index l = 0; l < ways; ++l) {
      const Index slot = slots[l];
      out.classes[static_cast<std::size_t>(l)] = eligible_.classes[static_cast<std::size_t>(slot)];
      const Index shots = draw_shots(rng);
      const Index count = eligible_.count(slot);
      const Index* rows = eligible_.rows_of(slot);
      const auto label = static_cast<Label>(l);
      Index* q_rows = query_rows + l * queries;
      Label* q_labels = query_labels + l * queries;
      Index* s_rows = support_rows + n_support;
      Label* s_labels = support_labels + n_support;
      // The first `shots` draws are the support, the rest the queries; labels are filled in bulk.
      std::fill_n(s_labels, shots, label);
      std::fill_n(q_labels, queries, label);
      auto emit = [&](Index k, Index position) { (k < shots ? s_rows[k] : q_rows[k - shots]) = rows[position]; };
      if (eligible_.with_replacement[static_cast<std::size_t>(slot)]) {
        for (Index k = 0; k < shots + queries; ++k) emit(k, static_cast<Index>(rng.bounded(static_cast<std::uint64_t>(count))));
      } else {
        out.shuffle.draw(rng, count, shots + queries, emit);
      }
      n_support += shots;
    }
    // Variable shots: drop the unused tail (capacity is kept).
    out.support_rows.resize(static_cast<std::size_t>(n_support));
    out.support_labels.resize(static_cast<std::size_t>(n_support));
  }

  /// Episode `i` as a new Episode.
  Episode sample(Index i) const {
    Episode e;
    sample(i, e);
    return e;
  }

  /// Samples episode `i` into `out.episode` and gathers its features from `features` (N x D).
  template <class Scalar>
  void sample(Index i, ConstRowMatrixRef<Scalar> features, GatheredEpisode<Scalar>& out) const {
    sample(i, out.episode);
    out.gather(features);
  }

  /**
   * @brief Episodes first .. first + count - 1, sampled and gathered in parallel over episodes.
   *
   * `out` is resized to `count` (reuse it to avoid allocation); the result is identical for any
   * number of threads.
   * @throws std::invalid_argument if count < 0.
   */
  template <class Scalar>
  void sample_batch(Index first, Index count, ConstRowMatrixRef<Scalar> features,
                    std::vector<GatheredEpisode<Scalar>>& out) const {
    KSHOT_CHECK(count >= 0, "kshot::EpisodeSampler::sample_batch()", detail::cat("count must be >= 0, got ", count));
    check_features<Scalar>(features, "kshot::EpisodeSampler::sample_batch()");
    if (static_cast<Index>(out.size()) < count) out.resize(static_cast<std::size_t>(count));
    const double work = double(count) * double(config_.ways) * double(config_.shots + config_.queries) *
                        double(features.cols());
    detail::parallel_for(count, detail::worth_parallel(count, work),
                         [&](Index b) { sample<Scalar>(first + b, features, out[static_cast<std::size_t>(b)]); });
  }

  /**
   * @brief The plan of epoch `epoch`: every example of every eligible class becomes a query exactly once.
   *
   * Each class's examples are put in a seeded random order and cut into chunks of Q queries (the last
   * may be shorter). Episodes are formed greedily from the N classes with the most chunks left (ties
   * broken at random), which keeps N distinct classes per episode as long as possible; when fewer than N
   * classes have queries left, the remaining ways are filled with other classes that contribute support
   * examples only. A pure function of (seed, epoch).
   */
  EpochPlan plan_epoch(std::uint64_t epoch) const {
    EpochPlan plan;
    plan.epoch_ = epoch;
    const Index num_classes = eligible_.size();
    const Index q = config_.queries;
    plan.perm_offsets_ = eligible_.offsets;
    plan.perm_ = eligible_.rows;
    std::vector<Index> chunks_left(static_cast<std::size_t>(num_classes)), next_query(static_cast<std::size_t>(num_classes), 0);
    std::vector<std::uint64_t> tie(static_cast<std::size_t>(num_classes));
    RandomStream plan_rng(seed_ ^ 0xA5A5A5A5A5A5A5A5ull, epoch);
    for (Index s = 0; s < num_classes; ++s) {
      const auto begin = plan.perm_.begin() + eligible_.offsets[static_cast<std::size_t>(s)];
      const auto end = plan.perm_.begin() + eligible_.offsets[static_cast<std::size_t>(s) + 1];
      plan_rng.shuffle(begin, end);
      chunks_left[static_cast<std::size_t>(s)] = (eligible_.count(s) + q - 1) / q;
      tie[static_cast<std::size_t>(s)] = plan_rng();
    }
    std::vector<Index> order(static_cast<std::size_t>(num_classes));
    const Index ways = config_.ways;
    for (;;) {
      std::iota(order.begin(), order.end(), Index(0));
      // Most chunks left first; ties by a per-epoch random key, so the class order is not always the same.
      std::sort(order.begin(), order.end(), [&](Index a, Index b) {
        const Index ca = chunks_left[static_cast<std::size_t>(a)], cb = chunks_left[static_cast<std::size_t>(b)];
        return ca != cb ? ca > cb : tie[static_cast<std::size_t>(a)] < tie[static_cast<std::size_t>(b)];
      });
      if (chunks_left[static_cast<std::size_t>(order[0])] == 0) break;
      for (Index w = 0; w < ways; ++w) {
        const Index s = order[static_cast<std::size_t>(w)];
        auto& left = chunks_left[static_cast<std::size_t>(s)];
        if (left > 0) {
          const Index begin = next_query[static_cast<std::size_t>(s)];
          const Index len = std::min(q, eligible_.count(s) - begin);
          plan.ways_.push_back({s, begin, len});
          next_query[static_cast<std::size_t>(s)] += len;
          --left;
        } else {
          plan.ways_.push_back({s, 0, 0});
        }
      }
      plan.episode_offsets_.push_back(static_cast<Index>(plan.ways_.size()));
      for (auto& t : tie) t = plan_rng();
    }
    return plan;
  }

  /**
   * @brief Fills `out` with episode `i` of an epoch plan.
   *
   * The queries come from the plan; the support of each class is drawn (from RandomStream over
   * (seed, epoch, i)) among the class's examples that are not this episode's queries, with replacement
   * only when fewer than K of them are left.
   * @throws std::out_of_range unless 0 <= i < plan.num_episodes().
   */
  void sample_epoch(const EpochPlan& plan, Index i, Episode& out) const {
    KSHOT_CHECK_RANGE(i >= 0 && i < plan.num_episodes(), "kshot::EpisodeSampler::sample_epoch()",
                      detail::cat("episode ", i, " is outside [0, ", plan.num_episodes(), ") of epoch ", plan.epoch()));
    RandomStream rng(seed_ ^ detail::splitmix64(plan.epoch() + 0x632BE59BD9B4E019ull), static_cast<std::uint64_t>(i));
    begin(i, out);
    for (Index w = plan.episode_offsets_[static_cast<std::size_t>(i)]; w < plan.episode_offsets_[static_cast<std::size_t>(i) + 1]; ++w) {
      const auto& way = plan.ways_[static_cast<std::size_t>(w)];
      const auto label = static_cast<Label>(out.classes.size());
      out.classes.push_back(eligible_.classes[static_cast<std::size_t>(way.class_slot)]);
      const Index* perm = plan.perm_.data() + plan.perm_offsets_[static_cast<std::size_t>(way.class_slot)];
      const Index count = eligible_.count(way.class_slot);
      for (Index k = 0; k < way.query_count; ++k) {
        out.query_rows.push_back(perm[way.query_begin + k]);
        out.query_labels.push_back(label);
      }
      const Index shots = draw_shots(rng);
      const Index rest = count - way.query_count;
      auto emit = [&](Index, Index position) {
        // Positions index the permutation with this episode's query chunk cut out.
        const Index p = position < way.query_begin ? position : position + way.query_count;
        out.support_rows.push_back(perm[p]);
        out.support_labels.push_back(label);
      };
      if (rest >= shots) {
        out.shuffle.draw(rng, rest, shots, emit);
      } else {
        for (Index k = 0; k < shots; ++k) {
          const Index position = static_cast<Index>(rng.bounded(static_cast<std::uint64_t>(count)));
          out.support_rows.push_back(perm[position]);
          out.support_labels.push_back(label);
        }
      }
    }
  }

 private:
  Index draw_shots(RandomStream& rng) const {
    if (config_.min_shots < 1) return config_.shots;
    return config_.min_shots + static_cast<Index>(rng.bounded(static_cast<std::uint64_t>(config_.shots - config_.min_shots + 1)));
  }

  template <class T>
  static void resize(std::vector<T>& v, Index n) {
    if (v.size() != static_cast<std::size_t>(n)) v.resize(static_cast<std::size_t>(n));
  }

  void begin(Index i, Episode& out) const {
    out.index = i;
    out.classes.clear();
    out.support_rows.clear();
    out.support_labels.clear();
    out.query_rows.clear();
    out.query_labels.clear();
    const auto ways = static_cast<std::size_t>(config_.ways);
    out.classes.reserve(ways);
    out.support_rows.reserve(ways * static_cast<std::size_t>(config_.shots));
    out.support_labels.reserve(ways * static_cast<std::size_t>(config_.shots));
    out.query_rows.reserve(ways * static_cast<std::size_t>(config_.queries));
    out.query_labels.reserve(ways * static_cast<std::size_t>(config_.queries));
  }

  template <class Scalar>
  void check_features(const ConstRowMatrixRef<Scalar>& features, const char* where) const {
    KSHOT_CHECK(eligible_.max_row < features.rows(), where,
                detail::cat("features has ", features.rows(), " rows but the class index refers to row ", eligible_.max_row));
  }

  EpisodeConfig config_;
  std::uint64_t seed_;
  detail::EligibleClasses eligible_;
};

}  // namespace kshot

#endif  // KSHOT_SAMPLING_EPISODE_SAMPLER_HPP
