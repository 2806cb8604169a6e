/**
 * @file kshot/eval/episodic.hpp
 * @brief Episodic evaluation of any few-shot classifier: mean accuracy with its 95% confidence interval,
 * per-class accuracy, the confusion matrix and per-episode accuracies, in parallel over episodes and
 * identical for any number of threads.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_EVAL_EPISODIC_HPP
#define KSHOT_EVAL_EPISODIC_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"
#include "kshot/eval/confidence.hpp"
#include "kshot/sampling/episode.hpp"
#include "kshot/sampling/episode_sampler.hpp"

#include <algorithm>
#include <vector>

namespace kshot {

/// What evaluate_episodes() measured.
struct EpisodicEvaluation {
  MeanInterval accuracy;                 ///< mean episode accuracy ± 95% interval (fractions in [0, 1])
  std::vector<double> episode_accuracy;  ///< accuracy of each episode, in episode order
  std::vector<Label> classes;            ///< the dataset classes of the sampler, indexing the two below
  std::vector<double> class_accuracy;    ///< per class: correct queries / queries of that class (0 if none)
  /// confusion(i, j): queries of classes[i] predicted as classes[j], summed over all episodes.
  Eigen::Matrix<Index, Eigen::Dynamic, Eigen::Dynamic> confusion;
};

/**
 * @brief Runs `classifier` on episodes first .. first + episodes - 1 of `sampler` over `features`.
 *
 * For each episode: sample and gather it, `fit` a copy of the classifier on the support, `predict` the
 * queries, and count. Episodes run in parallel (one classifier copy per thread); per-episode accuracies
 * are stored and reduced in episode order and the confusion counts are integers, so the result is
 * identical for any number of threads.
 *
 * @tparam Classifier any type with the interface of kshot/fewshot/common.hpp (copyable).
 * @param[in] all_features N x D features of the dataset the sampler indexes (row-major binds without a copy).
 * @throws std::invalid_argument if episodes < 1 or first < 0; whatever the classifier throws.
 */
template <class Classifier, class Derived>
EpisodicEvaluation evaluate_episodes(const Classifier& classifier, const EpisodeSampler& sampler,
                                     const Eigen::MatrixBase<Derived>& all_features, Index episodes, Index first = 0) {
  constexpr const char* where = "kshot::evaluate_episodes()";
  using Scalar = typename Derived::Scalar;
  const ConstRowMatrixRef<Scalar> features(all_features.derived());
  KSHOT_CHECK(episodes >= 1, where, detail::cat("episodes must be at least 1, got ", episodes));
  KSHOT_CHECK(first >= 0, where, detail::cat("first must be >= 0, got ", first));
  const std::vector<Label>& classes = sampler.classes();
  const Label max_class = *std::max_element(classes.begin(), classes.end());
  std::vector<Index> position(static_cast<std::size_t>(max_class) + 1, -1);
  for (std::size_t k = 0; k < classes.size(); ++k) position[static_cast<std::size_t>(classes[k])] = static_cast<Index>(k);
  const auto c = static_cast<Index>(classes.size());

  struct ThreadState {
    Classifier classifier;
    GatheredEpisode<Scalar> episode;
    Eigen::Matrix<Index, Eigen::Dynamic, Eigen::Dynamic> confusion;
  };
  const int threads = std::max(1, max_threads());
  std::vector<ThreadState> states;
  states.reserve(static_cast<std::size_t>(threads));
  for (int t = 0; t < threads; ++t)
    states.push_back({classifier, {}, Eigen::Matrix<Index, Eigen::Dynamic, Eigen::Dynamic>::Zero(c, c)});

  EpisodicEvaluation result;
  result.episode_accuracy.assign(static_cast<std::size_t>(episodes), 0.0);
  detail::parallel_for(episodes, true, [&](Index e) {
    ThreadState& state = states[static_cast<std::size_t>(thread_index())];
    sampler.sample<Scalar>(first + e, features, state.episode);
    state.classifier.fit(state.episode.support(), state.episode.support_labels());
    const LabelVector predicted = state.classifier.predict(state.episode.query());
    const auto& ep = state.episode.episode;
    Index correct = 0;
    for (Index q = 0; q < predicted.size(); ++q) {
      const Label truth = ep.query_labels[static_cast<std::size_t>(q)];
      correct += predicted[q] == truth ? 1 : 0;
      const Index row = position[static_cast<std::size_t>(ep.classes[static_cast<std::size_t>(truth)])];
      const Index col = position[static_cast<std::size_t>(ep.classes[static_cast<std::size_t>(predicted[q])])];
      ++state.confusion(row, col);
    }
    result.episode_accuracy[static_cast<std::size_t>(e)] =
        predicted.size() > 0 ? double(correct) / double(predicted.size()) : 0.0;
  }, /*dynamic=*/true);  // one episode at a time: a thread slowed by other load does not hold up the rest

  result.accuracy = mean_ci95(result.episode_accuracy);
  result.classes = classes;
  result.confusion = Eigen::Matrix<Index, Eigen::Dynamic, Eigen::Dynamic>::Zero(c, c);
  for (const auto& state : states) result.confusion += state.confusion;
  result.class_accuracy.assign(static_cast<std::size_t>(c), 0.0);
  for (Index k = 0; k < c; ++k) {
    const Index total = result.confusion.row(k).sum();
    if (total > 0) result.class_accuracy[static_cast<std::size_t>(k)] = double(result.confusion(k, k)) / double(total);
  }
  return result;
}

}  // namespace kshot

#endif  // KSHOT_EVAL_EPISODIC_HPP
