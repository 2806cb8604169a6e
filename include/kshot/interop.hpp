/**
 * @file kshot/interop.hpp
 * @brief Umbrella header of the interop module: the zero-copy xtensor bridge (as_eigen, to_xtensor_view). The .npy
 * and .csv files it used to hold are in data/ (kshot/data/npy.hpp, kshot/data/csv.hpp), which needs no xtensor.
 *
 * Opt-in: kshot.hpp does not include it, and it needs xtensor (link `kshot::xtensor` from CMake).
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_INTEROP_HPP
#define KSHOT_INTEROP_HPP

#include "kshot/core.hpp"
#include "kshot/interop/xtensor.hpp"

#endif  // KSHOT_INTEROP_HPP
