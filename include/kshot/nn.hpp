/**
 * @file kshot/nn.hpp
 * @brief Umbrella header of the nn module: layers, the Sequential model with flat parameters, Hessian-vector
 * products, save/load, optimizers, learning-rate schedules and gradient clipping.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_NN_HPP
#define KSHOT_NN_HPP

#include "kshot/core.hpp"
#include "kshot/nn/activations.hpp"
#include "kshot/nn/adam.hpp"
#include "kshot/nn/clip.hpp"
#include "kshot/nn/dropout.hpp"
#include "kshot/nn/init.hpp"
#include "kshot/nn/l2_normalize.hpp"
#include "kshot/nn/layer.hpp"
#include "kshot/nn/layer_norm.hpp"
#include "kshot/nn/linear.hpp"
#include "kshot/nn/lr_schedule.hpp"
#include "kshot/nn/residual.hpp"
#include "kshot/nn/sequential.hpp"
#include "kshot/nn/serialize.hpp"
#include "kshot/nn/sgd.hpp"

#endif  // KSHOT_NN_HPP
