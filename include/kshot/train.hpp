/**
 * @file kshot/train.hpp
 * @brief Umbrella header of the train module: the episodic and metric-learning trainer, its objectives,
 * callbacks and progress bar.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_TRAIN_HPP
#define KSHOT_TRAIN_HPP

#include "kshot/train/callbacks.hpp"
#include "kshot/train/episode_loss.hpp"
#include "kshot/train/progress.hpp"
#include "kshot/train/trainer.hpp"

#endif  // KSHOT_TRAIN_HPP
