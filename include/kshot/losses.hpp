/**
 * @file kshot/losses.hpp
 * @brief Umbrella header of the losses module: metric-learning losses with analytic gradients, and the
 * miners that select pairs and triplets for them (pytorch-metric-learning's losses and miners in C++).
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_LOSSES_HPP
#define KSHOT_LOSSES_HPP

#include "kshot/core.hpp"
#include "kshot/losses/arcface.hpp"
#include "kshot/losses/circle.hpp"
#include "kshot/losses/common.hpp"
#include "kshot/losses/contrastive.hpp"
#include "kshot/losses/cosface.hpp"
#include "kshot/losses/fastap.hpp"
#include "kshot/losses/lifted.hpp"
#include "kshot/losses/margin.hpp"
#include "kshot/losses/miners.hpp"
#include "kshot/losses/multi_similarity.hpp"
#include "kshot/losses/npairs.hpp"
#include "kshot/losses/ntxent.hpp"
#include "kshot/losses/proxy_anchor.hpp"
#include "kshot/losses/proxy_nca.hpp"
#include "kshot/losses/supcon.hpp"
#include "kshot/losses/triplet.hpp"

#endif  // KSHOT_LOSSES_HPP
