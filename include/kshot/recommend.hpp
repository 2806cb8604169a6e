/**
 * @file kshot/recommend.hpp
 * @brief Umbrella header of the recommend module: interactions, user profiles as prototypes, the
 * cold-start split protocol, embeddings for new products (ColdItemEmbedder) and the Recommender.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_RECOMMEND_HPP
#define KSHOT_RECOMMEND_HPP

#include "kshot/core.hpp"
#include "kshot/recommend/cold_item.hpp"
#include "kshot/recommend/interactions.hpp"
#include "kshot/recommend/profiles.hpp"
#include "kshot/recommend/recommender.hpp"
#include "kshot/recommend/split.hpp"

#endif  // KSHOT_RECOMMEND_HPP
