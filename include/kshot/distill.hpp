/**
 * @file kshot/distill.hpp
 * @brief Umbrella header of the distillation module: knowledge-distillation losses with their exact gradients
 * with respect to the student (torchdistill's and mdistiller's losses in C++).
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_DISTILL_HPP
#define KSHOT_DISTILL_HPP

#include "kshot/core.hpp"
#include "kshot/distill/attention_transfer.hpp"
#include "kshot/distill/common.hpp"
#include "kshot/distill/crd.hpp"
#include "kshot/distill/dkd.hpp"
#include "kshot/distill/embedding_distill.hpp"
#include "kshot/distill/fitnet.hpp"
#include "kshot/distill/kd.hpp"
#include "kshot/distill/pkt.hpp"
#include "kshot/distill/rkd.hpp"
#include "kshot/distill/sp.hpp"

#endif  // KSHOT_DISTILL_HPP
