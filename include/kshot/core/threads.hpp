/**
 * @file kshot/core/threads.hpp
 * @brief Thread-count helpers that work with and without OpenMP.
 *
 * kshot's results never depend on the thread count (every reduction is serial or in a fixed order), so
 * these helpers only change speed.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_CORE_THREADS_HPP
#define KSHOT_CORE_THREADS_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/config.hpp"

#include <exception>

#if KSHOT_HAS_OPENMP
#include <omp.h>
#endif

namespace kshot {

/// The number of threads the next kshot parallel region may use (1 without OpenMP).
inline int max_threads() noexcept {
#if KSHOT_HAS_OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

/// The calling thread's index within the current parallel region (0 outside one).
inline int thread_index() noexcept {
#if KSHOT_HAS_OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

/// True inside an active OpenMP parallel region.
inline bool in_parallel_region() noexcept {
#if KSHOT_HAS_OPENMP
  return omp_in_parallel() != 0;
#else
  return false;
#endif
}

/**
 * @brief Sets the number of threads for later parallel regions of the calling thread (and of Eigen's GEMM).
 * @param n threads, at least 1. Without OpenMP the call checks `n` and does nothing else.
 * @throws std::invalid_argument if n < 1.
 */
inline void set_num_threads(int n) {
  KSHOT_CHECK(n >= 1, "kshot::set_num_threads()", detail::cat("n must be at least 1, got ", n));
#if KSHOT_HAS_OPENMP
  omp_set_num_threads(n);
#endif
}

/**
 * @brief RAII guard: uses `n` threads while alive, then restores the previous count.
 * @note Affects the calling thread's OpenMP setting, so use one guard per controlling thread.
 */
class ThreadCountGuard {
 public:
  explicit ThreadCountGuard(int n) : previous_(max_threads()) { set_num_threads(n); }
  ~ThreadCountGuard() {
#if KSHOT_HAS_OPENMP
    omp_set_num_threads(previous_);
#endif
  }
  ThreadCountGuard(const ThreadCountGuard&) = delete;
  ThreadCountGuard& operator=(const ThreadCountGuard&) = delete;

 private:
  int previous_;
};

namespace detail {

/**
 * @brief Runs body(i) for i in [0, n), in one OpenMP region when `parallel` is true.
 *
 * Inside the region every thread's OpenMP thread count is set to 1, so that an Eigen product called
 * from `body` runs single-threaded with its single-threaded blocking. That keeps each product's
 * result bitwise independent of the thread count (Eigen's blocking sizes, and so its rounding, change
 * with the number of threads it uses). The setting is local to the region's implicit tasks.
 *
 * An exception thrown by `body` does not escape the region: the one from the lowest index is rethrown
 * after the region ends. `schedule` selects static (equal contiguous chunks) or dynamic (one index at
 * a time, for uneven work); results never depend on it.
 */
template <class Body>
void parallel_for(Index n, bool parallel, Body&& body, bool dynamic = false) {
#if KSHOT_HAS_OPENMP
  std::exception_ptr error;
  Index error_index = n;
  const bool go_parallel = parallel && n > 1 && !in_parallel_region() && omp_get_max_threads() > 1;
  if (!go_parallel && (omp_get_max_threads() == 1 || in_parallel_region())) {
    // Eigen would run single-threaded here anyway (one thread allowed, or already inside an active
    // region), so skip the cost of opening an inactive region: small calls in tight loops feel it.
    for (Index i = 0; i < n; ++i) body(i);
    return;
  }
  KSHOT_PRAGMA_OMP(omp parallel if (go_parallel))
  {
    omp_set_num_threads(1);
    if (dynamic) {
      KSHOT_PRAGMA_OMP(omp for schedule(dynamic, 1))
      for (Index i = 0; i < n; ++i) {
        try {
          body(i);
        } catch (...) {
          KSHOT_PRAGMA_OMP(omp critical(kshot_parallel_for_error))
          if (i < error_index) { error_index = i; error = std::current_exception(); }
        }
      }
    } else {
      KSHOT_PRAGMA_OMP(omp for schedule(static))
      for (Index i = 0; i < n; ++i) {
        try {
          body(i);
        } catch (...) {
          KSHOT_PRAGMA_OMP(omp critical(kshot_parallel_for_error))
          if (i < error_index) { error_index = i; error = std::current_exception(); }
        }
      }
    }
  }
  if (error) std::rethrow_exception(error);
#else
  (void)parallel;
  (void)dynamic;
  for (Index i = 0; i < n; ++i) body(i);
#endif
}

/// True when a loop of `rows` iterations with `work` scalar operations in all deserves a parallel region.
inline bool worth_parallel(Index rows, double work) noexcept {
  return rows >= 2 && work >= config::omp_min_work && !in_parallel_region() && max_threads() > 1;
}

}  // namespace detail
}  // namespace kshot

#endif  // KSHOT_CORE_THREADS_HPP
