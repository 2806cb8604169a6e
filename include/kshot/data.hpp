/**
 * @file kshot/data.hpp
 * @brief Umbrella header of the data module: dataset loaders (IDX files such as Fashion-MNIST, plain or gzip).
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_DATA_HPP
#define KSHOT_DATA_HPP

#include "kshot/core.hpp"
#include "kshot/data/class_index.hpp"
#include "kshot/data/csv.hpp"
#include "kshot/data/dataset.hpp"
#include "kshot/data/idx.hpp"
#include "kshot/data/labels.hpp"
#include "kshot/data/npy.hpp"
#include "kshot/data/split.hpp"

#endif  // KSHOT_DATA_HPP
