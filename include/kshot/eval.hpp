/**
 * @file kshot/eval.hpp
 * @brief Umbrella header of the eval module: mean ± 95% confidence intervals, ranking metrics
 * (precision/recall/NDCG/MAP@K, MRR, hit rate, R-precision, MAP@R, ROC-AUC, average precision) and A/B test
 * statistics (two-proportion z-test, power, sample size).
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_EVAL_HPP
#define KSHOT_EVAL_HPP

#include "kshot/core.hpp"
#include "kshot/eval/ab_test.hpp"
#include "kshot/eval/confidence.hpp"
#include "kshot/eval/episodic.hpp"
#include "kshot/eval/ranking.hpp"

#endif  // KSHOT_EVAL_HPP
