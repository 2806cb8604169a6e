/**
 * @file kshot/losses/miners.hpp
 * @brief Every miner of kshot (pytorch-metric-learning's miners): BatchEasyHardMiner, BatchHardMiner,
 * TripletMarginMiner, PairMarginMiner and MultiSimilarityMiner, with MinerStats.
 *
 * A miner picks, from a batch of embeddings and labels, the pairs or triplets a loss should be evaluated
 * on; its result (MinedPairs or MinedTriplets) is passed to a loss's evaluate() as a Mined view:
 * @code
 * kshot::TripletMarginMiner<float> miner;
 * kshot::ContrastiveLoss<float> loss;
 * const float value = loss.evaluate(emb, labels, miner.mine(emb, labels), grad);
 * @endcode
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_LOSSES_MINERS_HPP
#define KSHOT_LOSSES_MINERS_HPP

#include "kshot/losses/miners/batch_easy_hard.hpp"
#include "kshot/losses/miners/miner_stats.hpp"
#include "kshot/losses/miners/multi_similarity.hpp"
#include "kshot/losses/miners/pair_margin.hpp"
#include "kshot/losses/miners/triplet_margin.hpp"

#endif  // KSHOT_LOSSES_MINERS_HPP
