/**
 * @file kshot/interop.hpp
 * @brief Umbrella header of the interop module: the zero-copy xtensor bridge (as_eigen, to_xtensor_view) and
 * .npy/.csv I/O (load_npy_matrix, load_npy_labels, save_npy, load_csv_matrix).
 *
 * Opt-in: kshot.hpp does not include it, and it needs xtensor (link `kshot::xtensor` from CMake).
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_INTEROP_HPP
#define KSHOT_INTEROP_HPP

#include "kshot/core.hpp"
#include "kshot/interop/xtensor.hpp"
#include "kshot/interop/xtensor_io.hpp"

#endif  // KSHOT_INTEROP_HPP
