/**
 * @file kshot/core.hpp
 * @brief Umbrella header of the core module: version, types, checks, configuration, threads, workspace,
 * random streams.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_CORE_HPP
#define KSHOT_CORE_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/config.hpp"
#include "kshot/core/gemm.hpp"
#include "kshot/core/random.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"
#include "kshot/core/version.hpp"
#include "kshot/core/workspace.hpp"

#endif  // KSHOT_CORE_HPP
