/**
 * @file kshot/eval.hpp
 * @brief Umbrella header of the eval module: confidence intervals (ranking metrics and A/B statistics come
 * with the recommendation work).
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_EVAL_HPP
#define KSHOT_EVAL_HPP

#include "kshot/core.hpp"
#include "kshot/eval/confidence.hpp"

#endif  // KSHOT_EVAL_HPP
