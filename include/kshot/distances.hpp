/**
 * @file kshot/distances.hpp
 * @brief Umbrella header of the distances module: metric policies and pairwise matrices with backward.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_DISTANCES_HPP
#define KSHOT_DISTANCES_HPP

#include "kshot/core.hpp"
#include "kshot/distances/metrics.hpp"
#include "kshot/distances/pairwise.hpp"

#endif  // KSHOT_DISTANCES_HPP
