/**
 * @file kshot/sampling.hpp
 * @brief Umbrella header of the sampling module: episodes, the episode sampler, m-per-class batches.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_SAMPLING_HPP
#define KSHOT_SAMPLING_HPP

#include "kshot/core.hpp"
#include "kshot/data.hpp"
#include "kshot/sampling/batch_sampler.hpp"
#include "kshot/sampling/episode.hpp"
#include "kshot/sampling/episode_sampler.hpp"

#endif  // KSHOT_SAMPLING_HPP
