// SPDX-License-Identifier: MIT
// Episodic evaluation (evaluate_episodes, with ProtoNet as the classifier): accuracy, its interval, the confusion
// matrix, thread independence, a sampler whose classes are listed out of order, bad input; and the interval itself.
#include <kshot/eval/confidence.hpp>
#include <kshot/eval/episodic.hpp>
#include <kshot/fewshot/protonet.hpp>
#include <kshot/sampling.hpp>

#include "test_util.hpp"

using namespace kshot;

TEST_CASE("eval.episodic: accuracy with its interval and the confusion matrix are right and thread-independent") {
  // 6 classes of 40 points around separated centres, one class (5) overlapping class 4.
  const Index per_class = 40, classes = 6, d = 8;
  RowMatrixX<float> features(per_class * classes, d);
  LabelVector labels(per_class * classes);
  RandomStream rng(31);
  for (Index i = 0; i < features.rows(); ++i) {
    const auto c = static_cast<Label>(i % classes);
    labels[i] = c;
    for (Index k = 0; k < d; ++k) features(i, k) = 0.3f * rng.normal<float>();
    features(i, c == 5 ? 4 : c) += 3.0f;
    if (c == 5) features(i, 5) += 0.5f;
  }
  const ClassIndex index(labels);
  const EpisodeSampler sampler(index, {3, 5, 10}, 2024);
  EpisodicEvaluation one, two;
  {
    ThreadCountGuard guard(1);
    one = evaluate_episodes(ProtoNet<float>(), sampler, features, 200);
  }
  {
    ThreadCountGuard guard(2);
    two = evaluate_episodes(ProtoNet<float>(), sampler, features, 200);
  }
  CHECK(one.episode_accuracy == two.episode_accuracy);
  CHECK(one.confusion == two.confusion);
  CHECK(one.accuracy.mean == two.accuracy.mean);
  // Every query is counted once: 200 episodes x 3 ways x 10 queries.
  CHECK(one.confusion.sum() == 6000);
  // The interval is 1.96 sigma / sqrt(M) of the per-episode accuracies.
  double mean = 0, sq = 0;
  for (double a : one.episode_accuracy) mean += a;
  mean /= 200;
  for (double a : one.episode_accuracy) sq += (a - mean) * (a - mean);
  CHECK(one.accuracy.mean == doctest::Approx(mean).epsilon(1e-12));
  CHECK(one.accuracy.half_width == doctest::Approx(1.96 * std::sqrt(sq / 200) / std::sqrt(200.0)).epsilon(1e-12));
  // Classes 0-3 are separable; 4 and 5 are confused with each other only.
  for (Index c = 0; c < 4; ++c) CHECK(one.class_accuracy[static_cast<std::size_t>(c)] == 1.0);
  CHECK(one.class_accuracy[4] < 1.0);
  CHECK(one.confusion(4, 0) == 0);
  CHECK(one.confusion(4, 5) + one.confusion(5, 4) > 0);
  CHECK(one.accuracy.mean < 1.0);
  CHECK(one.accuracy.mean > 0.85);
  // Per-episode accuracy is what a manual run of that episode gives.
  GatheredEpisode<float> ep;
  sampler.sample<float>(17, features, ep);
  ProtoNet<float> net;
  net.fit(ep.support(), ep.support_labels());
  const LabelVector predicted = net.predict(ep.query());
  const double manual = double((predicted.array() == ep.query_labels().array()).count()) / double(predicted.size());
  CHECK(one.episode_accuracy[17] == manual);
  // Classes listed out of order (and not all of them): row and column k of the confusion matrix belong to
  // classes[k], not to dataset class k.
  const EpisodeSampler listed(index, {3, 5, 10}, 2025, {4, 1, 5, 2});
  const EpisodicEvaluation sub = evaluate_episodes(ProtoNet<float>(), listed, features, 100);
  CHECK(sub.classes == std::vector<Label>{4, 1, 5, 2});
  REQUIRE(sub.confusion.rows() == 4);
  CHECK(sub.confusion.sum() == 3000);
  CHECK(sub.class_accuracy[1] == 1.0);  // class 1
  CHECK(sub.class_accuracy[3] == 1.0);  // class 2
  CHECK(sub.confusion(0, 2) + sub.confusion(2, 0) > 0);  // 4 and 5 are confused with each other only
  CHECK(sub.confusion(0, 1) + sub.confusion(0, 3) + sub.confusion(2, 1) + sub.confusion(2, 3) == 0);
  CHECK(sub.confusion(1, 1) + sub.confusion(3, 3) > 0);
  KSHOT_CHECK_THROWS_WITH_ALL(evaluate_episodes(ProtoNet<float>(), sampler, features, 0), std::invalid_argument,
                              "kshot::evaluate_episodes()", "episodes must be at least 1, got 0");
}

TEST_CASE("eval.confidence: mean and interval against hand-computed values") {
  const MeanInterval m = mean_ci95({0.5, 0.7, 0.9, 0.7});
  CHECK(m.mean == doctest::Approx(0.7).epsilon(1e-15));
  CHECK(m.stddev == doctest::Approx(std::sqrt(0.02)).epsilon(1e-14));
  CHECK(m.half_width == doctest::Approx(1.96 * std::sqrt(0.02) / 2.0).epsilon(1e-14));
  CHECK(m.lower() < m.mean);
  KSHOT_CHECK_THROWS_WITH_ALL(mean_ci95({}), std::invalid_argument, "kshot::mean_ci95()", "values is empty");
  KSHOT_CHECK_THROWS_WITH_ALL(mean_ci95({1.0, std::nan("")}), std::invalid_argument, "values[1]");
}
