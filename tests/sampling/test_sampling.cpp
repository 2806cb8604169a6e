// SPDX-License-Identifier: MIT
// Episode and batch sampling: reproducibility, uniformity, no duplicates, small-class policies, epoch
// coverage, gathering, thread-count independence and bad input.
#include <kshot/sampling.hpp>

#include "test_util.hpp"

#include <limits>
#include <map>
#include <set>

using namespace kshot;

namespace {

// `classes` classes with the given sizes, rows interleaved so that class rows are not contiguous.
LabelVector make_labels(const std::vector<Index>& sizes) {
  std::vector<Label> out;
  Index left = 0;
  for (Index s : sizes) left += s;
  std::vector<Index> remaining = sizes;
  while (left > 0)
    for (std::size_t c = 0; c < remaining.size(); ++c)
      if (remaining[c] > 0) {
        out.push_back(static_cast<Label>(c));
        --remaining[c];
        --left;
      }
  return Eigen::Map<LabelVector>(out.data(), static_cast<Index>(out.size()));
}

bool same_episode(const Episode& a, const Episode& b) {
  return a.classes == b.classes && a.support_rows == b.support_rows && a.query_rows == b.query_rows &&
         a.support_labels == b.support_labels && a.query_labels == b.query_labels;
}

}  // namespace

TEST_CASE("sampling.episode: shape and labels and no duplicate within an episode") {
  const LabelVector labels = make_labels(std::vector<Index>(12, 30));
  const ClassIndex index(labels);
  const EpisodeSampler sampler(index, {5, 3, 4}, 42);
  Episode ep;
  for (Index i = 0; i < 200; ++i) {
    sampler.sample(i, ep);
    REQUIRE(ep.ways() == 5);
    REQUIRE(ep.support_rows.size() == 15);
    REQUIRE(ep.query_rows.size() == 20);
    std::set<Label> classes(ep.classes.begin(), ep.classes.end());
    CHECK(classes.size() == 5);
    std::set<Index> rows(ep.support_rows.begin(), ep.support_rows.end());
    rows.insert(ep.query_rows.begin(), ep.query_rows.end());
    CHECK(rows.size() == 35);  // no row twice, neither within nor across support and query
    bool labels_ok = true;
    for (std::size_t k = 0; k < ep.support_rows.size(); ++k)
      labels_ok = labels_ok && ep.support_labels[k] == static_cast<Label>(k / 3) &&
                  labels[ep.support_rows[k]] == ep.classes[static_cast<std::size_t>(ep.support_labels[k])];
    for (std::size_t k = 0; k < ep.query_rows.size(); ++k)
      labels_ok = labels_ok && ep.query_labels[k] == static_cast<Label>(k / 4) &&
                  labels[ep.query_rows[k]] == ep.classes[static_cast<std::size_t>(ep.query_labels[k])];
    CHECK(labels_ok);
  }
}

TEST_CASE("sampling.episode: episode i is a pure function of seed and i") {
  const LabelVector labels = make_labels(std::vector<Index>(10, 25));
  const ClassIndex index(labels);
  const EpisodeSampler a(index, {5, 5, 5}, 7), b(index, {5, 5, 5}, 7), c(index, {5, 5, 5}, 8);
  // Drawn in different orders, from different objects: the same episodes.
  Episode e1, e2;
  for (Index i : {3, 0, 99, 3}) {
    a.sample(i, e1);
    b.sample(i, e2);
    CHECK(same_episode(e1, e2));
    CHECK(e1.index == i);
  }
  a.sample(5, e1);
  c.sample(5, e2);
  CHECK(!same_episode(e1, e2));
  a.sample(6, e2);
  CHECK(!same_episode(e1, e2));
}

TEST_CASE("sampling.episode: classes and examples are drawn uniformly by a chi-square test") {
  // 8 classes of 12 examples: 3-way 2-shot 2-query. Over 8000 episodes each class is expected
  // 8000 * 3 / 8 = 3000 times, and each example of class 0 3000 * 4 / 12 = 1000 times.
  const LabelVector labels = make_labels(std::vector<Index>(8, 12));
  const ClassIndex index(labels);
  const EpisodeSampler sampler(index, {3, 2, 2}, 2024);
  std::vector<double> class_counts(8, 0), example_counts(12, 0), support_position(12, 0);
  Episode ep;
  const Index* class0 = index.rows(0);
  std::map<Index, std::size_t> position_of;
  for (std::size_t k = 0; k < 12; ++k) position_of[class0[k]] = k;
  for (Index i = 0; i < 8000; ++i) {
    sampler.sample(i, ep);
    for (Label c : ep.classes) class_counts[static_cast<std::size_t>(c)] += 1;
    for (std::size_t k = 0; k < ep.support_rows.size(); ++k)
      if (labels[ep.support_rows[k]] == 0) {
        example_counts[position_of[ep.support_rows[k]]] += 1;
        support_position[position_of[ep.support_rows[k]]] += 1;
      }
    for (Index r : ep.query_rows)
      if (labels[r] == 0) example_counts[position_of[r]] += 1;
  }
  auto chi2 = [](const std::vector<double>& counts) {
    double total = 0;
    for (double x : counts) total += x;
    const double expected = total / double(counts.size());
    double s = 0;
    for (double x : counts) s += (x - expected) * (x - expected) / expected;
    return s;
  };
  // P(chi2 > x) = 0.001: 24.32 for 7 degrees of freedom, 31.26 for 11.
  CHECK(chi2(class_counts) < 24.32);
  CHECK(chi2(example_counts) < 31.26);
  CHECK(chi2(support_position) < 31.26);  // support membership is uniform too, not only membership
}

TEST_CASE("sampling.episode: small-class policies throw or skip or sample with replacement") {
  // Class 2 has 6 examples; 2-way 4-shot 3-query needs 7.
  const LabelVector labels = make_labels({10, 10, 6, 10});
  const ClassIndex index(labels);
  KSHOT_CHECK_THROWS_WITH_ALL(EpisodeSampler(index, {2, 4, 3}, 1), std::invalid_argument,
                              "kshot::EpisodeSampler::EpisodeSampler()",
                              "class 2 has 6 examples but an episode needs 7");
  EpisodeConfig skip{2, 4, 3, -1, SmallClassPolicy::skip};
  const EpisodeSampler skipping(index, skip, 1);
  CHECK(skipping.skipped_classes() == std::vector<Label>{2});
  CHECK(skipping.classes() == std::vector<Label>{0, 1, 3});
  Episode ep;
  for (Index i = 0; i < 100; ++i) {
    skipping.sample(i, ep);
    CHECK(std::find(ep.classes.begin(), ep.classes.end(), 2) == ep.classes.end());
  }
  EpisodeConfig replace{4, 4, 3, -1, SmallClassPolicy::with_replacement};
  const EpisodeSampler replacing(index, replace, 1);
  bool saw_repeat = false;
  for (Index i = 0; i < 50; ++i) {
    replacing.sample(i, ep);
    CHECK(ep.support_rows.size() == 16);
    std::vector<Index> rows2;
    for (std::size_t k = 0; k < ep.support_rows.size(); ++k)
      if (ep.classes[static_cast<std::size_t>(ep.support_labels[k])] == 2) rows2.push_back(ep.support_rows[k]);
    for (std::size_t k = 0; k < ep.query_rows.size(); ++k)
      if (ep.classes[static_cast<std::size_t>(ep.query_labels[k])] == 2) rows2.push_back(ep.query_rows[k]);
    CHECK(rows2.size() == 7);
    for (Index r : rows2) CHECK(labels[r] == 2);
    saw_repeat = saw_repeat || std::set<Index>(rows2.begin(), rows2.end()).size() < rows2.size();
  }
  CHECK(saw_repeat);  // 7 draws from 6 always repeat
  EpisodeConfig too_many{4, 4, 3, -1, SmallClassPolicy::skip};
  KSHOT_CHECK_THROWS_WITH_ALL(EpisodeSampler(index, too_many, 1), std::invalid_argument,
                              "an episode needs 4 classes but only 3 are eligible (1 skipped");
}

TEST_CASE("sampling.episode: variable shots stay in range and vary") {
  const LabelVector labels = make_labels(std::vector<Index>(6, 40));
  const ClassIndex index(labels);
  EpisodeConfig config{4, 8, 5, 2, SmallClassPolicy::throw_error};
  const EpisodeSampler sampler(index, config, 3);
  std::set<Index> seen;
  Episode ep;
  for (Index i = 0; i < 300; ++i) {
    sampler.sample(i, ep);
    std::vector<Index> per_label(4, 0);
    for (Label l : ep.support_labels) ++per_label[static_cast<std::size_t>(l)];
    for (Index k : per_label) {
      CHECK(k >= 2);
      CHECK(k <= 8);
      seen.insert(k);
    }
    CHECK(ep.query_rows.size() == 20);
  }
  CHECK(seen.size() == 7);  // every size from 2 to 8 occurs
}

TEST_CASE("sampling.episode: epoch mode shows every example as a query exactly once") {
  // Unequal classes: 23, 40, 17, 31, 9 examples; 3-way 2-shot 5-query (class 4 is at least 7).
  const LabelVector labels = make_labels({23, 40, 17, 31, 9});
  const ClassIndex index(labels);
  const EpisodeSampler sampler(index, {3, 2, 5}, 11);
  for (std::uint64_t epoch : {0u, 1u}) {
    const EpochPlan plan = sampler.plan_epoch(epoch);
    std::vector<int> as_query(static_cast<std::size_t>(labels.size()), 0);
    Episode ep;
    for (Index i = 0; i < plan.num_episodes(); ++i) {
      sampler.sample_epoch(plan, i, ep);
      CHECK(ep.ways() == 3);
      CHECK(std::set<Label>(ep.classes.begin(), ep.classes.end()).size() == 3);
      CHECK(ep.support_rows.size() == 6);
      for (Index r : ep.query_rows) ++as_query[static_cast<std::size_t>(r)];
      // Support never overlaps this episode's queries.
      for (Index r : ep.support_rows)
        CHECK(std::find(ep.query_rows.begin(), ep.query_rows.end(), r) == ep.query_rows.end());
      for (std::size_t k = 0; k < ep.query_rows.size(); ++k)
        CHECK(labels[ep.query_rows[k]] == ep.classes[static_cast<std::size_t>(ep.query_labels[k])]);
    }
    CHECK(std::all_of(as_query.begin(), as_query.end(), [](int n) { return n == 1; }));
    // Chunks: 5 + 8 + 4 + 7 + 2 = 26 query chunks over 3 ways: at least 14 episodes (class 1 alone has 8).
    CHECK(plan.num_episodes() >= 9);
  }
  const EpochPlan p0 = sampler.plan_epoch(0), p0b = sampler.plan_epoch(0), p1 = sampler.plan_epoch(1);
  Episode a, b;
  sampler.sample_epoch(p0, 2, a);
  sampler.sample_epoch(p0b, 2, b);
  CHECK(same_episode(a, b));
  sampler.sample_epoch(p1, 2, b);
  CHECK(!same_episode(a, b));
  KSHOT_CHECK_THROWS_WITH_ALL(sampler.sample_epoch(p0, p0.num_episodes(), a), std::out_of_range,
                              "kshot::EpisodeSampler::sample_epoch()", "of epoch 0");
}

TEST_CASE_TEMPLATE("sampling.episode: gathering copies the right rows and a batch is identical for 1 and 2 threads",
                   Scalar, float, double) {
  const LabelVector labels = make_labels(std::vector<Index>(10, 30));
  const RowMatrixX<Scalar> features = kshot::test::random_matrix<Scalar>(labels.size(), 64, 5);
  const ClassIndex index(labels);
  const EpisodeSampler sampler(index, {5, 5, 5}, 99);
  GatheredEpisode<Scalar> one;
  sampler.sample<Scalar>(4, features, one);
  REQUIRE(one.support().rows() == 25);
  REQUIRE(one.query().rows() == 25);
  for (Index k = 0; k < 25; ++k) {
    CHECK(one.support().row(k) == features.row(one.episode.support_rows[static_cast<std::size_t>(k)]));
    CHECK(one.query().row(k) == features.row(one.episode.query_rows[static_cast<std::size_t>(k)]));
  }
  CHECK(one.support_labels().size() == 25);
  std::vector<GatheredEpisode<Scalar>> serial, parallel;
  {
    ThreadCountGuard guard(1);
    sampler.sample_batch<Scalar>(100, 64, features, serial);
  }
  {
    ThreadCountGuard guard(2);
    sampler.sample_batch<Scalar>(100, 64, features, parallel);
  }
  REQUIRE(serial.size() == 64);
  bool identical = true;
  for (std::size_t b = 0; b < 64; ++b)
    identical = identical && same_episode(serial[b].episode, parallel[b].episode) &&
                serial[b].support() == parallel[b].support() && serial[b].query() == parallel[b].query();
  CHECK(identical);
  Episode alone;
  sampler.sample(100 + 17, alone);
  CHECK(same_episode(alone, serial[17].episode));
  const RowMatrixX<Scalar> too_few = features.topRows(10);
  KSHOT_CHECK_THROWS_WITH_ALL(sampler.sample_batch<Scalar>(0, 2, too_few, serial), std::invalid_argument,
                              "features has 10 rows but the class index refers to row");
}

TEST_CASE("sampling.episode: refilling an episode of the same shape does not allocate") {
  const LabelVector labels = make_labels(std::vector<Index>(10, 30));
  const ClassIndex index(labels);
  const EpisodeSampler sampler(index, {5, 5, 5}, 1);
  Episode ep;
  sampler.sample(0, ep);
  const Index* support = ep.support_rows.data();
  const Index* query = ep.query_rows.data();
  for (Index i = 1; i < 50; ++i) sampler.sample(i, ep);
  CHECK(ep.support_rows.data() == support);
  CHECK(ep.query_rows.data() == query);
}

TEST_CASE("sampling.episode: bad configurations throw naming the numbers") {
  const LabelVector labels = make_labels(std::vector<Index>(4, 20));
  const ClassIndex index(labels);
  KSHOT_CHECK_THROWS_WITH_ALL(EpisodeSampler(index, {5, 1, 1}, 1), std::invalid_argument,
                              "an episode needs 5 classes but only 4 are eligible");
  KSHOT_CHECK_THROWS_WITH_ALL(EpisodeSampler(index, {0, 1, 1}, 1), std::invalid_argument,
                              "ways must be at least 1, got 0");
  KSHOT_CHECK_THROWS_WITH_ALL(EpisodeSampler(index, {2, 0, 1}, 1), std::invalid_argument,
                              "shots must be at least 1, got 0");
  KSHOT_CHECK_THROWS_WITH_ALL(EpisodeSampler(index, {2, 1, -3}, 1), std::invalid_argument,
                              "queries must be at least 1, got -3");
  KSHOT_CHECK_THROWS_WITH_ALL(EpisodeSampler(index, {2, 3, 1, 5}, 1), std::invalid_argument,
                              "min_shots must be -1 or in [1, shots = 3], got 5");
  KSHOT_CHECK_THROWS_WITH_ALL(EpisodeSampler(index, {2, 1, 1}, 1, {0, 9}), std::invalid_argument,
                              "classes lists class 9, outside [0, 4)");
  KSHOT_CHECK_THROWS_WITH_ALL(EpisodeSampler(index, {2, 1, 1}, 1, {1, 1}), std::invalid_argument,
                              "lists class 1 twice");
  const ClassIndex empty{LabelVector(0)};
  KSHOT_CHECK_THROWS_WITH_ALL(EpisodeSampler(empty, {1, 1, 1}, 1), std::invalid_argument, "the dataset is empty");
  // A class subset restricts the draw.
  const EpisodeSampler novel(index, {2, 1, 1}, 1, {1, 3});
  Episode ep;
  for (Index i = 0; i < 20; ++i) {
    novel.sample(i, ep);
    for (Label c : ep.classes) CHECK((c == 1 || c == 3));
  }
}

TEST_CASE("sampling.batch: m-per-class batches are seeded and well formed") {
  const LabelVector labels = make_labels({12, 12, 3, 12, 12, 12});
  const ClassIndex index(labels);
  KSHOT_CHECK_THROWS_WITH_ALL(MPerClassSampler(index, 4, 16, 1), std::invalid_argument,
                              "kshot::MPerClassSampler::MPerClassSampler()",
                              "class 2 has 3 examples but a batch takes m = 4");
  KSHOT_CHECK_THROWS_WITH_ALL(MPerClassSampler(index, 4, 18, 1), std::invalid_argument,
                              "batch_size must be a positive multiple of m = 4, got 18");
  const MPerClassSampler sampler(index, 4, 16, 5, SmallClassPolicy::skip);
  CHECK(sampler.skipped_classes() == std::vector<Label>{2});
  Batch a, b;
  std::vector<double> class_counts(6, 0);
  for (Index i = 0; i < 2000; ++i) {
    sampler.sample(i, a);
    REQUIRE(a.rows.size() == 16);
    std::set<Index> rows(a.rows.begin(), a.rows.end());
    CHECK(rows.size() == 16);
    std::set<Label> classes(a.labels.begin(), a.labels.end());
    CHECK(classes.size() == 4);
    for (std::size_t k = 0; k < 16; ++k) CHECK(labels[a.rows[k]] == a.labels[k]);
    for (Label c : classes) class_counts[static_cast<std::size_t>(c)] += 1;
  }
  CHECK(class_counts[2] == 0);
  // 2000 batches x 4 of 5 classes: 1600 each; P(chi2_4 > 18.47) = 0.001.
  double chi2 = 0;
  for (std::size_t c = 0; c < 6; ++c)
    if (c != 2) chi2 += (class_counts[c] - 1600) * (class_counts[c] - 1600) / 1600;
  CHECK(chi2 < 18.47);
  sampler.sample(3, a);
  sampler.sample(3, b);
  CHECK(a.rows == b.rows);
  const MPerClassSampler replacing(index, 4, 24, 5, SmallClassPolicy::with_replacement);
  CHECK(replacing.classes().size() == 6);
  for (Index i = 0; i < 20; ++i) {
    replacing.sample(i, a);
    CHECK(a.rows.size() == 24);
  }
}

TEST_CASE("sampling.shuffle: every layout draws distinct values uniformly and in uniform order") {
  // n covers the filled array (100), the undo array (1000) and the hash table (20000). Values are binned
  // into 10 equal ranges, separately for the first and the last of k = 8 draws.
  for (Index n : {100, 1000, 20000}) {
    CAPTURE(n);
    detail::SparseShuffle shuffle;
    RandomStream rng(77, static_cast<std::uint64_t>(n));
    std::vector<double> first(10, 0), last(10, 0);
    bool distinct = true, in_range = true;
    std::vector<Index> drawn(8);
    for (int t = 0; t < 20000; ++t) {
      shuffle.draw(rng, n, 8, [&](Index k, Index v) { drawn[static_cast<std::size_t>(k)] = v; });
      std::set<Index> s(drawn.begin(), drawn.end());
      distinct = distinct && s.size() == 8;
      in_range = in_range && *s.begin() >= 0 && *s.rbegin() < n;
      first[static_cast<std::size_t>(drawn[0] * 10 / n)] += 1;
      last[static_cast<std::size_t>(drawn[7] * 10 / n)] += 1;
    }
    CHECK(distinct);
    CHECK(in_range);
    for (const auto* counts : {&first, &last}) {
      double chi2 = 0;
      for (double c : *counts) chi2 += (c - 2000) * (c - 2000) / 2000;
      CHECK(chi2 < 27.88);  // P(chi2_9 > 27.88) = 0.001
    }
  }
  // A full draw (k = n) is a permutation.
  detail::SparseShuffle shuffle;
  RandomStream rng(1);
  for (Index n : {50, 3000, 17000}) {
    std::vector<Index> all(static_cast<std::size_t>(n));
    shuffle.draw(rng, n, n, [&](Index k, Index v) { all[static_cast<std::size_t>(k)] = v; });
    std::sort(all.begin(), all.end());
    bool identity = true;
    for (Index i = 0; i < n; ++i) identity = identity && all[static_cast<std::size_t>(i)] == i;
    CHECK(identity);
  }
}

TEST_CASE("sampling.shuffle: bounded32 is unbiased by a chi-square test") {
  RandomStream rng(5);
  std::vector<double> counts(13, 0);
  for (int i = 0; i < 130000; ++i) counts[rng.bounded32(13)] += 1;
  double chi2 = 0;
  for (double c : counts) chi2 += (c - 10000) * (c - 10000) / 10000;
  CHECK(chi2 < 32.91);  // P(chi2_12 > 32.91) = 0.001
}

TEST_CASE("sampling.batch: listed classes are checked like the episode sampler's") {
  const LabelVector labels = make_labels({12, 12, 12});
  const ClassIndex index(labels);
  KSHOT_CHECK_THROWS_WITH_ALL(MPerClassSampler(index, 2, 4, 1, SmallClassPolicy::throw_error, {0, 0}),
                              std::invalid_argument, "kshot::MPerClassSampler::MPerClassSampler()",
                              "lists class 0 twice");
  KSHOT_CHECK_THROWS_WITH_ALL(MPerClassSampler(index, 2, 4, 1, SmallClassPolicy::throw_error, {5}),
                              std::invalid_argument, "classes lists class 5, outside [0, 3)");
  const MPerClassSampler two(index, 2, 4, 1, SmallClassPolicy::throw_error, {0, 2});
  Batch b;
  for (Index i = 0; i < 10; ++i) {
    two.sample(i, b);
    for (Label l : b.labels) CHECK((l == 0 || l == 2));
  }
}

TEST_CASE("sampling.gather: gather_rows copies the listed rows in order and checks every row first") {
  const RowMatrixX<float> features = kshot::test::random_matrix<float>(50, 13, 3);
  for (std::size_t count :
       {std::size_t(0), std::size_t(1), std::size_t(3), std::size_t(4), std::size_t(5), std::size_t(40)}) {
    std::vector<Index> rows;
    for (std::size_t k = 0; k < count; ++k) rows.push_back(static_cast<Index>((k * 17 + 5) % 50));
    RowMatrixX<float> out = RowMatrixX<float>::Constant(static_cast<Index>(count) + 2, 13, -7.0f);
    gather_rows<float>(features, rows, out);
    for (std::size_t k = 0; k < count; ++k) CHECK(out.row(static_cast<Index>(k)) == features.row(rows[k]));
    CHECK((out.bottomRows(2).array() == -7.0f).all());  // rows past rows.size() untouched
  }
  RowMatrixX<float> out = RowMatrixX<float>::Constant(6, 13, -7.0f);
  const std::vector<Index> bad{1, 2, 3, 4, 50, 6};
  KSHOT_CHECK_THROWS_WITH_ALL(gather_rows<float>(features, bad, out), std::out_of_range, "kshot::gather_rows()",
                              "row 50 is outside [0, 50)");
  CHECK((out.array() == -7.0f).all());  // nothing copied
  const std::vector<Index> negative{-1};
  KSHOT_CHECK_THROWS_WITH_ALL(gather_rows<float>(features, negative, out), std::out_of_range, "row -1");
  RowMatrixX<float> narrow(6, 12);
  KSHOT_CHECK_THROWS_WITH_ALL(gather_rows<float>(features, std::vector<Index>{0}, narrow), std::invalid_argument,
                              "out has 12 columns but features has 13");
  RowMatrixX<float> short_out(1, 13);
  KSHOT_CHECK_THROWS_WITH_ALL(gather_rows<float>(features, std::vector<Index>{0, 1}, short_out), std::invalid_argument,
                              "out has 1 rows but 2 are gathered");
}

TEST_CASE("sampling.episode: episode sizes that overflow or cannot be held are refused at construction (issue 17)") {
  const LabelVector labels = make_labels(std::vector<Index>(4, 10));
  const ClassIndex index(labels);
  const Index most = std::numeric_limits<Index>::max();
  // shots + queries overflowed Index: the sampler was built, and sample() ended in std::length_error.
  EpisodeConfig config{2, most - 1, 2};
  KSHOT_CHECK_THROWS_WITH_ALL(EpisodeSampler(index, config, 1), std::invalid_argument,
                              "kshot::EpisodeSampler::EpisodeSampler()",
                              "an episode of ways 2 x (shots 9223372036854775806 + queries 2) rows exceeds");
  config.small_classes = SmallClassPolicy::with_replacement;
  KSHOT_CHECK_THROWS_WITH_ALL(EpisodeSampler(index, config, 1), std::invalid_argument, "queries 2) rows exceeds");
  // ways x (shots + queries) overflowing is refused the same way.
  const EpisodeConfig wide{most / 2, 2, 2, -1, SmallClassPolicy::with_replacement};
  KSHOT_CHECK_THROWS_WITH_ALL(EpisodeSampler(index, wide, 1), std::invalid_argument, "rows exceeds the",
                              "rows a std::vector<Index> can hold");
  // The largest honest need still gives the usual small-class message.
  const EpisodeConfig big{2, 10, 1};
  KSHOT_CHECK_THROWS_WITH_ALL(EpisodeSampler(index, big, 1), std::invalid_argument,
                              "has 10 examples but an episode needs 11");
}

TEST_CASE("sampling.batch: a batch size that cannot be held is refused at construction (issue 17)") {
  const LabelVector labels = make_labels(std::vector<Index>(4, 10));
  const ClassIndex index(labels);
  // m = 2^61 with replacement: 2 classes per batch, but a batch of 2^62 rows, reserved by sample().
  const Index m = Index(1) << 61;
  KSHOT_CHECK_THROWS_WITH_ALL(MPerClassSampler(index, m, 2 * m, 1, SmallClassPolicy::with_replacement),
                              std::invalid_argument, "kshot::MPerClassSampler::MPerClassSampler()",
                              "batch_size 4611686018427387904 exceeds the", "rows a std::vector<Index> can hold");
  // An ordinary batch with replacement is still fine.
  const MPerClassSampler sampler(index, 12, 24, 1, SmallClassPolicy::with_replacement);
  CHECK(sampler.sample(0).rows.size() == 24);
}
