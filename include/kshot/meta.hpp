/**
 * @file kshot/meta.hpp
 * @brief Umbrella header of the meta module: MAML (exact second order and first order), ANIL, Meta-SGD and
 * Reptile over nn models, with the task losses they adapt on.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_META_HPP
#define KSHOT_META_HPP

#include "kshot/meta/maml.hpp"
#include "kshot/meta/meta_sgd.hpp"
#include "kshot/meta/parameter_range.hpp"
#include "kshot/meta/reptile.hpp"
#include "kshot/meta/task_loss.hpp"
#include "kshot/nn.hpp"

#endif  // KSHOT_META_HPP
