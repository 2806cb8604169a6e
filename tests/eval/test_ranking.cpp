/**
 * @file tests/eval/test_ranking.cpp
 * @brief Ranking metrics: hand-computed cases, scikit-learn's values (tests/data/reference/sklearn_ranking.json,
 * written by generate_sklearn_ranking.py), thread-count independence and bad input.
 *
 * SPDX-License-Identifier: MIT
 */
#include <kshot/eval/ranking.hpp>

#include "reference.hpp"
#include "test_util.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <algorithm>
#include <limits>
#include <vector>

namespace {

using kshot::Index;
using kshot::PerUserMetric;
using kshot::RelevanceSets;
using IdMatrix = Eigen::Matrix<std::int64_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

const nlohmann::json& fixture() {
  static const kshot::test::ReferenceCase c = kshot::test::load_reference("sklearn_ranking");
  return c.json;
}

template <class Scalar>
kshot::RowMatrixX<Scalar> matrix_of(const nlohmann::json& rows) {
  kshot::RowMatrixX<Scalar> m(static_cast<Index>(rows.size()), static_cast<Index>(rows[0].size()));
  for (Index i = 0; i < m.rows(); ++i)
    for (Index j = 0; j < m.cols(); ++j)
      m(i, j) = static_cast<Scalar>(rows[static_cast<std::size_t>(i)][static_cast<std::size_t>(j)].get<double>());
  return m;
}

/// Compares per-user values (null = skipped) and the mean over the non-null ones.
void check_against(const PerUserMetric& got, const nlohmann::json& expected, double tol) {
  REQUIRE(got.values.size() == expected.size());
  double sum = 0;
  Index count = 0;
  for (std::size_t u = 0; u < expected.size(); ++u) {
    INFO("user " << u);
    if (expected[u].is_null()) {
      CHECK(got.counted[u] == 0);
      CHECK(got.values[u] == 0.0);
      continue;
    }
    CHECK(got.counted[u] == 1);
    const double want = expected[u].get<double>();
    CHECK(std::abs(got.values[u] - want) <= tol * std::max(1.0, std::abs(want)));
    sum += want;
    ++count;
  }
  CHECK(got.counted_users == count);
  CHECK(got.skipped_users == static_cast<Index>(expected.size()) - count);
  if (count > 0) CHECK(std::abs(got.mean - sum / static_cast<double>(count)) <= tol);
}

RelevanceSets relevance_of(const nlohmann::json& users) {
  std::vector<std::vector<std::pair<std::int64_t, double>>> graded;
  for (const auto& user : users) {
    graded.emplace_back();
    for (const auto& entry : user) graded.back().emplace_back(entry[0].get<std::int64_t>(), entry[1].get<double>());
  }
  return RelevanceSets(graded);
}

}  // namespace

TEST_CASE("ranking: hand-computed ranked lists (binary and graded, padding, a repeated item)") {
  // user 0: relevant {3, 5, 9}; user 1: nothing relevant; user 2: graded {7: 3, 2: 1}.
  const RelevanceSets relevant(std::vector<std::vector<std::pair<std::int64_t, double>>>{
      {{3, 1.0}, {5, 1.0}, {9, 1.0}}, {}, {{7, 3.0}, {2, 1.0}}});
  CHECK(relevant.users() == 3);
  CHECK(relevant.size(0) == 3);
  CHECK(relevant.size(1) == 0);
  CHECK(relevant.find(2, 7) == 1);  // sorted ids: 2, 7
  CHECK(relevant.find(2, 8) == -1);
  CHECK(relevant.ideal_gains(2)[0] == 3.0);
  IdMatrix ranked(3, 5);
  ranked << 5, 1, 9, -1, 3,  //
      4, 5, 6, 7, 8,         //
      2, 2, 7, 8, 0;         // item 2 twice: the second one is a miss
  const auto report = kshot::evaluate_ranking(ranked, relevant, 3);
  const double idcg0 = 1 + 1 / std::log2(3.0) + 0.5;
  CHECK(report.precision.values[0] == doctest::Approx(2.0 / 3));
  CHECK(report.recall.values[0] == doctest::Approx(2.0 / 3));
  CHECK(report.hit_rate.values[0] == 1.0);
  CHECK(report.mrr.values[0] == 1.0);
  CHECK(report.map.values[0] == doctest::Approx(5.0 / 9));
  CHECK(report.ndcg.values[0] == doctest::Approx(1.5 / idcg0));
  CHECK(report.r_precision.values[0] == doctest::Approx(2.0 / 3));
  CHECK(report.map_at_r.values[0] == doctest::Approx(5.0 / 9));

  CHECK(report.precision.counted[1] == 0);  // skipped: nothing relevant
  CHECK(report.ndcg.skipped_users == 1);
  CHECK(report.ndcg.counted_users == 2);

  CHECK(report.precision.values[2] == doctest::Approx(2.0 / 3));
  CHECK(report.recall.values[2] == 1.0);
  CHECK(report.mrr.values[2] == 1.0);
  CHECK(report.map.values[2] == doctest::Approx(5.0 / 6));       // (1/1 + 2/3) / min(3, 2)
  CHECK(report.ndcg.values[2] == doctest::Approx(2.5 / (3 + 1 / std::log2(3.0))));
  CHECK(report.r_precision.values[2] == 0.5);                    // first R = 2 positions: 2, then a repeat
  CHECK(report.map_at_r.values[2] == 0.5);
  CHECK(report.precision.mean == doctest::Approx(2.0 / 3));
  CHECK(report.map.mean == doctest::Approx((5.0 / 9 + 5.0 / 6) / 2));

  const auto exponential = kshot::ndcg_at_k(ranked, relevant, 3, kshot::Gain::exponential);
  CHECK(exponential.values[2] == doctest::Approx(4.5 / (7 + 1 / std::log2(3.0))));
  CHECK(exponential.values[0] == doctest::Approx(1.5 / idcg0));  // binary: both gains are 1

  // The single-metric functions agree with the report, bit for bit.
  CHECK(kshot::precision_at_k(ranked, relevant, 3).values == report.precision.values);
  CHECK(kshot::recall_at_k(ranked, relevant, 3).values == report.recall.values);
  CHECK(kshot::hit_rate_at_k(ranked, relevant, 3).values == report.hit_rate.values);
  CHECK(kshot::mrr_at_k(ranked, relevant, 3).values == report.mrr.values);
  CHECK(kshot::map_at_k(ranked, relevant, 3).values == report.map.values);
  CHECK(kshot::ndcg_at_k(ranked, relevant, 3).values == report.ndcg.values);
  CHECK(kshot::r_precision(ranked, relevant).values == report.r_precision.values);
  CHECK(kshot::map_at_r(ranked, relevant).values == report.map_at_r.values);

  // k = 1 and k = L; a relevant item first only at rank 5.
  CHECK(kshot::mrr_at_k(ranked, relevant, 1).values[0] == 1.0);
  IdMatrix late(1, 5);
  late << 0, 1, 2, -1, 3;
  const RelevanceSets one(std::vector<std::vector<std::int64_t>>{{3}});
  CHECK(kshot::mrr_at_k(late, one, 5).values[0] == 0.2);
  CHECK(kshot::mrr_at_k(late, one, 4).values[0] == 0.0);
  CHECK(kshot::mean_reciprocal_rank(late, one).values[0] == 0.2);
  CHECK(kshot::hit_rate_at_k(late, one, 4).values[0] == 0.0);
  CHECK(kshot::ndcg_at_k(late, one, 5).values[0] == doctest::Approx(1 / std::log2(6.0)));

  // Integer id types other than int64 and column-major storage bind too.
  Eigen::Matrix<int, Eigen::Dynamic, Eigen::Dynamic> ranked_int = ranked.cast<int>();
  CHECK(kshot::ndcg_at_k(ranked_int, relevant, 3).values == report.ndcg.values);

  // The CSR constructor gives the same sets.
  const RelevanceSets csr = RelevanceSets::from_csr({0, 3, 3, 5}, {9, 3, 5, 2, 7}, {1, 1, 1, 1, 3});
  CHECK(kshot::evaluate_ranking(ranked, csr, 3).ndcg.values == report.ndcg.values);
  const auto interval = report.ndcg.ci95();
  CHECK(interval.count == 2);
  CHECK(interval.mean == doctest::Approx(report.ndcg.mean));
}

TEST_CASE("ranking: relevance by class and MAP@R agree between ranked lists and scores") {
  kshot::LabelVector labels(6);
  labels << 0, 1, 0, 2, 1, 0;
  const RelevanceSets by_class = RelevanceSets::from_labels(labels, labels, /*exclude_self=*/true);
  REQUIRE(by_class.users() == 6);
  CHECK(by_class.size(0) == 2);  // rows 2 and 5
  CHECK(by_class.ids(0)[0] == 2);
  CHECK(by_class.ids(0)[1] == 5);
  CHECK(by_class.size(3) == 0);  // the only member of class 2
  CHECK(RelevanceSets::from_labels(labels, labels).size(0) == 3);
  KSHOT_CHECK_THROWS_WITH_ALL(RelevanceSets::from_labels(labels.head(2), labels, true), std::invalid_argument,
                              "kshot::RelevanceSets::from_labels()", "got 2 queries and 6 gallery rows");

  // Similarities -> ranked lists (self excluded) and y_true; both forms give the same MAP@R and R-precision.
  const auto sim = kshot::test::random_matrix<double>(6, 6, 3);
  IdMatrix ranked = IdMatrix::Constant(6, 5, -1);
  kshot::RowMatrixX<double> truth = kshot::RowMatrixX<double>::Zero(6, 6), scores = sim;
  for (Index q = 0; q < 6; ++q) {
    std::vector<Index> order;
    for (Index j = 0; j < 6; ++j)
      if (j != q) order.push_back(j);
    std::stable_sort(order.begin(), order.end(), [&](Index a, Index b) { return sim(q, a) > sim(q, b); });
    for (std::size_t j = 0; j < order.size(); ++j) ranked(q, static_cast<Index>(j)) = order[j];
    for (Index j = 0; j < 6; ++j) truth(q, j) = (j != q && labels[j] == labels[q]) ? 1.0 : 0.0;
    scores(q, q) = -1e9;  // self last
  }
  const auto ranked_map = kshot::map_at_r(ranked, by_class);
  const auto score_map = kshot::map_at_r(truth, scores);
  CHECK(ranked_map.values == score_map.values);
  CHECK(ranked_map.counted == score_map.counted);
  CHECK(ranked_map.skipped_users == 1);
  CHECK(kshot::r_precision(ranked, by_class).values == kshot::r_precision(truth, scores).values);
}

TEST_CASE("ranking: scikit-learn documentation examples (values printed by scikit-learn 1.2.1)") {
  kshot::RowMatrixX<double> truth(1, 5), scores(1, 5);
  truth << 10, 0, 0, 1, 5;
  scores << 0.1, 0.2, 0.3, 4, 70;
  CHECK(kshot::ndcg_score(truth, scores).mean == doctest::Approx(0.6956940443813076).epsilon(1e-12));
  CHECK(kshot::ndcg_score(truth, scores, 4).mean == doctest::Approx(0.4123818817534531).epsilon(1e-12));  // sklearn 1.2
  CHECK(kshot::ndcg_score(truth, truth, 4).mean == doctest::Approx(1.0));
  scores << 1, 0, 0, 0, 1;
  CHECK(kshot::ndcg_score(truth, scores, 1).mean == doctest::Approx(0.75));  // ties averaged: (10/10 + 5/10) / 2
  // ignore_ties breaks ties by column: item 0 (relevance 10) first, so 1.0 (scikit-learn's arbitrary order gave 0.5).
  CHECK(kshot::ndcg_score(truth, scores, 1, true).mean == 1.0);

  // Exponential gain on scores is linear gain on 2^grade - 1.
  scores << 0.1, 0.2, 0.3, 4, 70;
  truth << 3, 0, 0, 1, 2;
  const kshot::RowMatrixX<double> powered = truth.unaryExpr([](double g) { return std::exp2(g) - 1; });
  CHECK(kshot::ndcg_score(truth, scores, 3, false, kshot::Gain::exponential).mean ==
        doctest::Approx(kshot::ndcg_score(powered, scores, 3).mean).epsilon(1e-15));

  kshot::RowMatrixX<double> y(1, 4), s(1, 4);
  y << 0, 0, 1, 1;
  s << 0.1, 0.4, 0.35, 0.8;
  CHECK(kshot::roc_auc_score(y, s).mean == 0.75);
  CHECK(kshot::average_precision_score(y, s).mean == doctest::Approx(0.8333333333333333).epsilon(1e-15));
  s << 0.5, 0.5, 0.5, 0.5;  // every score tied: AUC 1/2, AP = prevalence
  CHECK(kshot::roc_auc_score(y, s).mean == 0.5);
  CHECK(kshot::average_precision_score(y, s).mean == 0.5);
}

TEST_CASE_TEMPLATE("ranking: ndcg_score, roc_auc_score and average_precision_score match scikit-learn", T, float,
                   double) {
  const double tol = std::is_same_v<T, double> ? 1e-12 : 1e-6;
  const auto& f = fixture();
  for (const auto& c : f.at("ndcg")) {
    const auto truth = matrix_of<T>(c.at("y_true"));
    const auto scores = matrix_of<T>(c.at("y_score"));
    const bool ignore_ties = c.at("ignore_ties").get<bool>();
    const PerUserMetric got = c.at("k").is_null()
                                  ? (ignore_ties ? kshot::ndcg_score(truth, scores, truth.cols(), true)
                                                 : kshot::ndcg_score(truth, scores))
                                  : kshot::ndcg_score(truth, scores, c.at("k").get<Index>(), ignore_ties);
    INFO("k = " << c.at("k") << ", ignore_ties = " << ignore_ties);
    check_against(got, c.at("per_user"), tol);
    CHECK(got.skipped_users == 0);  // scikit-learn counts all-irrelevant users as 0
    CHECK(std::abs(got.mean - c.at("mean").get<double>()) <= tol);
  }
  for (const auto& c : f.at("roc_auc"))
    check_against(kshot::roc_auc_score(matrix_of<T>(c.at("y_true")), matrix_of<T>(c.at("y_score"))),
                  c.at("per_user"), tol);
  for (const auto& c : f.at("average_precision"))
    check_against(kshot::average_precision_score(matrix_of<T>(c.at("y_true")), matrix_of<T>(c.at("y_score"))),
                  c.at("per_user"), tol);
  for (const auto& c : f.at("r_metrics")) {
    const auto truth = matrix_of<T>(c.at("y_true"));
    const auto scores = matrix_of<T>(c.at("y_score"));
    check_against(kshot::r_precision(truth, scores), c.at("r_precision"), tol);
    check_against(kshot::map_at_r(truth, scores), c.at("map_at_r"), tol);
  }
}

TEST_CASE("ranking: ranked-list metrics match scikit-learn's NDCG and the written-out definitions") {
  for (const auto& c : fixture().at("ranked")) {
    const RelevanceSets relevant = relevance_of(c.at("relevant"));
    const IdMatrix ranked = matrix_of<double>(c.at("ranked_ids")).cast<std::int64_t>();
    const auto k = c.at("k").get<Index>();
    INFO("k = " << k);
    const auto report = kshot::evaluate_ranking(ranked, relevant, k);
    check_against(report.ndcg, c.at("ndcg_linear"), 1e-12);
    check_against(kshot::ndcg_at_k(ranked, relevant, k, kshot::Gain::exponential), c.at("ndcg_exponential"), 1e-12);
    check_against(report.precision, c.at("precision"), 1e-15);
    check_against(report.recall, c.at("recall"), 1e-15);
    check_against(report.hit_rate, c.at("hit_rate"), 0);
    check_against(report.mrr, c.at("mrr"), 1e-15);
    check_against(report.map, c.at("map"), 1e-14);
    check_against(report.r_precision, c.at("r_precision"), 1e-15);
    check_against(report.map_at_r, c.at("map_at_r"), 1e-14);
  }
}

TEST_CASE("ranking: degenerate inputs give finite, documented values") {
  // Nothing relevant anywhere: every user skipped, mean 0, no NaN.
  const RelevanceSets none(std::vector<std::vector<std::int64_t>>{{}, {}});
  IdMatrix ranked = IdMatrix::Constant(2, 3, -1);
  const auto report = kshot::evaluate_ranking(ranked, none, 3);
  CHECK(report.ndcg.mean == 0.0);
  CHECK(report.ndcg.counted_users == 0);
  CHECK(report.ndcg.skipped_users == 2);
  CHECK_THROWS_AS((void)report.ndcg.ci95(), std::invalid_argument);
  // All-padding list with relevant items: zeros, counted.
  const RelevanceSets some(std::vector<std::vector<std::int64_t>>{{1}, {2, 3}});
  const auto empty_lists = kshot::evaluate_ranking(ranked, some, 2);
  CHECK(empty_lists.map.mean == 0.0);
  CHECK(empty_lists.map.counted_users == 2);
  // All-zero relevance and all-tied scores in the score form.
  kshot::RowMatrixX<double> truth = kshot::RowMatrixX<double>::Zero(2, 4);
  truth(1, 2) = 1;
  const kshot::RowMatrixX<double> tied = kshot::RowMatrixX<double>::Constant(2, 4, 3.0);
  const auto ndcg = kshot::ndcg_score(truth, tied);
  CHECK(ndcg.values[0] == 0.0);
  CHECK(std::isfinite(ndcg.values[1]));
  CHECK(kshot::roc_auc_score(truth, tied).counted_users == 1);
  CHECK(kshot::average_precision_score(truth, tied).values[1] == 0.25);
}

TEST_CASE("ranking: results are bitwise identical at 1 and 2 threads") {
  const Index users = 3000, items = 100, length = 60;
  const auto scores = kshot::test::random_matrix<double>(users, items, 5);
  kshot::RowMatrixX<double> truth(users, items);
  kshot::RandomStream rng(9);
  for (Index i = 0; i < truth.size(); ++i) truth.data()[i] = static_cast<double>(rng.bounded(4) == 0 ? rng.bounded(3) + 1 : 0);
  IdMatrix ranked(users, length);
  std::vector<std::vector<std::pair<std::int64_t, double>>> graded(static_cast<std::size_t>(users));
  for (Index u = 0; u < users; ++u) {
    for (Index j = 0; j < length; ++j) ranked(u, j) = static_cast<std::int64_t>(rng.bounded(static_cast<std::uint64_t>(items)));
    for (Index j = 0; j < items; ++j)
      if (truth(u, j) > 0) graded[static_cast<std::size_t>(u)].emplace_back(j, truth(u, j));
  }
  const RelevanceSets relevant(graded);
  {
    kshot::ThreadCountGuard guard(2);
    // The parallel path runs (where OpenMP is on).
    REQUIRE(kshot::detail::worth_parallel(users, static_cast<double>(users * items)) == (kshot::max_threads() > 1));
  }

  auto run = [&](int threads) {
    kshot::ThreadCountGuard guard(threads);
    std::vector<PerUserMetric> out;
    out.push_back(kshot::ndcg_score(truth, scores, 10));
    out.push_back(kshot::roc_auc_score(truth, scores));
    out.push_back(kshot::average_precision_score(truth, scores));
    out.push_back(kshot::map_at_r(truth, scores));
    const auto report = kshot::evaluate_ranking(ranked, relevant, 20, kshot::Gain::exponential);
    out.push_back(report.ndcg);
    out.push_back(report.map);
    out.push_back(report.map_at_r);
    return out;
  };
  const auto one = run(1);
  const auto two = run(2);
  for (std::size_t m = 0; m < one.size(); ++m) {
    INFO("metric " << m);
    REQUIRE(one[m].values.size() == two[m].values.size());
    CHECK(std::memcmp(one[m].values.data(), two[m].values.data(), one[m].values.size() * sizeof(double)) == 0);
    CHECK(std::memcmp(&one[m].mean, &two[m].mean, sizeof(double)) == 0);
    CHECK(one[m].counted == two[m].counted);
    CHECK(one[m].counted_users > 0);
  }
}

TEST_CASE("ranking: bad input throws with the function, the argument and the numbers") {
  const RelevanceSets relevant(std::vector<std::vector<std::int64_t>>{{1}, {2}});
  IdMatrix ranked(2, 3);
  ranked << 1, 2, 3, 4, 5, 6;
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::precision_at_k(ranked, relevant, 0), std::invalid_argument,
                              "kshot::precision_at_k()", "k must be at least 1, got 0");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::evaluate_ranking(ranked, relevant, 4), std::invalid_argument,
                              "kshot::evaluate_ranking()", "k = 4 exceeds the 3 columns");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::ndcg_at_k(ranked.topRows(1), relevant, 2), std::invalid_argument,
                              "kshot::ndcg_at_k()", "ranked_ids has 1 rows", "relevant has 2 users");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::map_at_r(IdMatrix(2, 0), relevant), std::invalid_argument, "kshot::map_at_r()",
                              "no columns");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::mean_reciprocal_rank(IdMatrix(2, 0), relevant), std::invalid_argument,
                              "kshot::mean_reciprocal_rank()", "no columns");

  using Graded = std::vector<std::vector<std::pair<std::int64_t, double>>>;
  const RelevanceSets huge(Graded{{{1, 2000.0}}, {{2, 1.0}}});
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::ndcg_at_k(ranked, huge, 2, kshot::Gain::exponential), std::invalid_argument,
                              "kshot::ndcg_at_k()", "grades <= 1023", "got 2000");
  CHECK(kshot::ndcg_at_k(ranked, huge, 2).values[0] == 1.0);  // linear gain: fine
  KSHOT_CHECK_THROWS_WITH_ALL(RelevanceSets(std::vector<std::vector<std::int64_t>>{{1, -4}}), std::invalid_argument,
                              "kshot::RelevanceSets::RelevanceSets()", "negative item id -4");
  KSHOT_CHECK_THROWS_WITH_ALL(RelevanceSets(std::vector<std::vector<std::int64_t>>{{}, {7, 3, 7}}),
                              std::invalid_argument, "user 1 lists item 7 more than once");
  KSHOT_CHECK_THROWS_WITH_ALL(RelevanceSets(Graded{{{1, 0.0}}}), std::invalid_argument, "item 1 has gain 0");
  KSHOT_CHECK_THROWS_WITH_ALL(RelevanceSets(Graded{{{1, std::numeric_limits<double>::quiet_NaN()}}}),
                              std::invalid_argument, "item 1 has gain nan");
  KSHOT_CHECK_THROWS_WITH_ALL(RelevanceSets::from_csr({0, 2}, {1, 2, 3}), std::invalid_argument,
                              "kshot::RelevanceSets::from_csr()", "offsets ends at 2",
                              "ids has 3 entries");
  KSHOT_CHECK_THROWS_WITH_ALL(RelevanceSets::from_csr({1, 2}, {1, 2}), std::invalid_argument, "offsets[0] must be 0, got 1");
  KSHOT_CHECK_THROWS_WITH_ALL(RelevanceSets::from_csr({0, 2, 1, 3}, {1, 2, 3}), std::invalid_argument,
                              "offsets decreases at 2: 2 then 1");
  KSHOT_CHECK_THROWS_WITH_ALL(RelevanceSets::from_csr({0, 1}, {1}, {1.0, 2.0}), std::invalid_argument, "gains has 2 entries",
                              "ids has 1");

  kshot::RowMatrixX<double> truth = kshot::RowMatrixX<double>::Zero(2, 3), scores = truth;
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::roc_auc_score(truth, scores.leftCols(2)), std::invalid_argument,
                              "kshot::roc_auc_score()", "y_true is 2 x 3 but y_score is 2 x 2");
  scores(1, 2) = std::numeric_limits<double>::infinity();
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::average_precision_score(truth, scores), std::invalid_argument,
                              "kshot::average_precision_score()", "y_score has a non-finite value (inf) at row 1, column 2");
  scores(1, 2) = 0;
  truth(0, 1) = -1;
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::ndcg_score(truth, scores), std::invalid_argument, "kshot::ndcg_score()",
                              "y_true has a negative relevance (-1) at row 0, column 1");
  truth(0, 1) = 0;
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::ndcg_score(truth, scores, 0), std::invalid_argument, "k must be at least 1, got 0");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::ndcg_score(truth.leftCols(1), scores.leftCols(1)), std::invalid_argument,
                              "y_true has 1 column(s)");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::r_precision(truth.topRows(0), scores.topRows(0)), std::invalid_argument,
                              "kshot::r_precision()", "y_true is 0 x 3");
}
