/**
 * @file kshot/retrieval.hpp
 * @brief Umbrella header of the retrieval module: exact top-k search (FlatIndex) with filters, exclusions,
 * incremental add / remove and save / load.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_RETRIEVAL_HPP
#define KSHOT_RETRIEVAL_HPP

#include "kshot/core.hpp"
#include "kshot/retrieval/filter.hpp"
#include "kshot/retrieval/flat_index.hpp"

#endif  // KSHOT_RETRIEVAL_HPP
