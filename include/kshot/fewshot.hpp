/**
 * @file kshot/fewshot.hpp
 * @brief Umbrella header of the few-shot module: classifiers and episodic evaluation.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_FEWSHOT_HPP
#define KSHOT_FEWSHOT_HPP

#include "kshot/core.hpp"
#include "kshot/distances.hpp"
#include "kshot/fewshot/bd_cspn.hpp"
#include "kshot/fewshot/common.hpp"
#include "kshot/fewshot/laplacian_shot.hpp"
#include "kshot/fewshot/logistic_head.hpp"
#include "kshot/fewshot/matching_networks.hpp"
#include "kshot/fewshot/protonet.hpp"
#include "kshot/fewshot/pt_map.hpp"
#include "kshot/fewshot/ridge_head.hpp"
#include "kshot/fewshot/simpleshot.hpp"
#include "kshot/fewshot/soft_kmeans.hpp"
#include "kshot/fewshot/tim.hpp"

#endif  // KSHOT_FEWSHOT_HPP
