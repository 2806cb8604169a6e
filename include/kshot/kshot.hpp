/**
 * @file kshot/kshot.hpp
 * @brief Umbrella header: every public module of kshot except the optional xtensor bridge (interop/).
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_KSHOT_HPP
#define KSHOT_KSHOT_HPP

#include "kshot/core.hpp"
#include "kshot/data.hpp"
#include "kshot/distances.hpp"
#include "kshot/distill.hpp"
#include "kshot/eval.hpp"
#include "kshot/fewshot.hpp"
#include "kshot/losses.hpp"
#include "kshot/meta.hpp"
#include "kshot/nn.hpp"
#include "kshot/recommend.hpp"
#include "kshot/retrieval.hpp"
#include "kshot/sampling.hpp"
#include "kshot/train.hpp"

#endif  // KSHOT_KSHOT_HPP
