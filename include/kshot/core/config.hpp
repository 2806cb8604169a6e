/**
 * @file kshot/core/config.hpp
 * @brief Compile-time configuration: the OpenMP pragma wrapper and tuning constants.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_CORE_CONFIG_HPP
#define KSHOT_CORE_CONFIG_HPP

#include "kshot/core/types.hpp"

/// 1 when kshot's own loops run in parallel: OpenMP enabled and KSHOT_DONT_USE_OPENMP not defined.
#if defined(_OPENMP) && !defined(KSHOT_DONT_USE_OPENMP)
#define KSHOT_HAS_OPENMP 1
#define KSHOT_PRAGMA_OMP(x) _Pragma(#x)
#else
#define KSHOT_HAS_OPENMP 0
/// Expands to `_Pragma("omp ...")` when OpenMP is on, to nothing otherwise.
#define KSHOT_PRAGMA_OMP(x)
#endif

namespace kshot {
namespace config {

/// Loops over fewer rows than this run on one thread: a parallel region costs more than the work.
inline constexpr Index omp_min_rows = 64;

/// Parallel regions are skipped when the work is below this many scalar operations.
inline constexpr double omp_min_work = 2.0e5;

/// Row and column extents of one output tile of the tiled pairwise kernels.
inline constexpr Index pairwise_tile_rows = 256;
inline constexpr Index pairwise_tile_cols = 512;

}  // namespace config
}  // namespace kshot

#endif  // KSHOT_CORE_CONFIG_HPP
