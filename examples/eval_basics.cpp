// SPDX-License-Identifier: MIT
// The code blocks of docs/metrics.md and docs/ab_testing.md, compiled and run: ranking metrics on ranked lists
// (binary and graded relevance) and on score matrices, then the two-proportion z-test, sample sizes and power of
// an A/B test. Each block prints the values that the comments in the docs quote.
#include <kshot/eval/ab_test.hpp>
#include <kshot/eval/ranking.hpp>

#include <cstdint>
#include <cstdio>

void ranking_metrics() {
// ---- docs/metrics.md
// Ranked lists: 3 users, top-4 recommendations each (-1 = no item).
Eigen::Matrix<std::int64_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> top(3, 4);
top << 12, 7, 3, 40,
       5, 9, -1, -1,
       8, 1, 2, 6;
// What each user really bought (binary relevance)...
kshot::RelevanceSets bought({{7, 40, 41}, {9}, {}});
kshot::RankingReport r = kshot::evaluate_ranking(top, bought, /*k=*/4);
// precision@4 0.375, recall@4 0.833, ndcg@4 0.565, map@4 0.417, mrr 0.5; user 2 (nothing bought) is skipped.

// ...or graded (item, grade) pairs: 3 = bought, 1 = clicked.
kshot::RelevanceSets graded({{{7, 3.0}, {40, 1.0}}, {{9, 3.0}, {5, 1.0}}, {{2, 1.0}}});
kshot::PerUserMetric ndcg = kshot::ndcg_at_k(top, graded, 4, kshot::Gain::exponential);
kshot::MeanInterval ci = ndcg.ci95();   // 0.615 ± 0.098 over the 3 users

// Scores (scikit-learn's y_true / y_score): one row per user, one column per candidate item.
kshot::RowMatrixX<double> y_true(2, 5), y_score(2, 5);
y_true << 3, 0, 1, 0, 2,
          0, 1, 0, 0, 0;
y_score << 0.9, 0.8, 0.1, 0.3, 0.5,
           0.2, 0.7, 0.7, 0.1, 0.0;
const double ndcg_all = kshot::ndcg_score(y_true, y_score).mean;             // 0.868356, = sklearn.metrics.ndcg_score
const double ndcg_3 = kshot::ndcg_score(y_true, y_score, 3).mean;             // 0.827736, k=3
const double auc = kshot::roc_auc_score(y_true, y_score).mean;               // 0.6875, mean of per-user roc_auc_score
const double ap = kshot::average_precision_score(y_true, y_score).mean;      // 0.627778
const double map_r = kshot::map_at_r(y_true, y_score).mean;                  // 0.777778
// ---- end
std::printf("precision@4 %.3f, recall@4 %.3f, ndcg@4 %.3f, map@4 %.3f, mrr %.3f; skipped users %ld\n", r.precision.mean,
            r.recall.mean, r.ndcg.mean, r.map.mean, r.mrr.mean, static_cast<long>(r.precision.skipped_users));
std::printf("graded ndcg@4 (exponential gain) %.3f +- %.3f over %ld users\n", ci.mean, ci.half_width,
            static_cast<long>(ci.count));
std::printf("ndcg_score %.6f, ndcg_score k=3 %.6f, roc_auc %.6f, average precision %.6f, map@r %.6f\n", ndcg_all, ndcg_3,
            auc, ap, map_r);
}

void ab_test() {
// ---- docs/ab_testing.md
// Control: 200 conversions out of 1000 visitors; new ranking: 250 out of 1000.
kshot::TwoProportionZTest t = kshot::two_proportion_z_test(200, 1000, 250, 1000);
// difference 0.05 (relative lift 25%), z 2.6774, p 0.00742, 95% CI [0.0135, 0.0865], significant

// One-sided: is the new ranking better?
auto better = kshot::two_proportion_z_test(200, 1000, 250, 1000, 0.05, kshot::Alternative::greater);
// p 0.00371, one-sided 95% lower bound 0.0193

// Before the test: visitors per arm to detect 10% -> 12% with 80% power at alpha = 5% (two-sided).
kshot::SampleSize n = kshot::sample_size_two_proportions(/*p_baseline=*/0.10, /*minimum_detectable_effect=*/0.02);
// 3841 + 3841 = 7682 visitors, achieved power 0.800017

// A 90/10 split (ratio n_B / n_A = 1/9) needs many more in all: 18691 + 2077 = 20768.
kshot::SampleSize skewed = kshot::sample_size_two_proportions(0.10, 0.02, 0.05, 0.8, 1.0 / 9);

double power = kshot::power_two_proportions(0.10, 0.12, 2000, 2000);  // 0.52: too small a test
// ---- end
std::printf("difference %.2f (relative lift %.0f%%), z %.4f, p %.5f, 95%% CI [%.4f, %.4f], %s\n", t.difference,
            100.0 * t.relative_lift, t.z, t.p_value, t.ci_lower, t.ci_upper,
            t.significant() ? "significant" : "not significant");
std::printf("one-sided: p %.5f, 95%% lower bound %.4f, upper %.0f\n", better.p_value, better.ci_lower, better.ci_upper);
std::printf("%ld + %ld = %ld visitors, achieved power %.6f\n", static_cast<long>(n.trials_a),
            static_cast<long>(n.trials_b), static_cast<long>(n.total()), n.power);
std::printf("90/10 split: %ld + %ld = %ld\n", static_cast<long>(skewed.trials_a), static_cast<long>(skewed.trials_b),
            static_cast<long>(skewed.total()));
std::printf("power at 2000 + 2000: %.4f\n", power);
}

int main() {
  ranking_metrics();
  ab_test();
}
