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

#include <algorithm>
#include <atomic>
#include <exception>
#include <limits>
#include <memory>
#include <type_traits>

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
 * @brief Test hook: how many regions of more than one thread parallel_for() and owned_region() have opened in this
 * process. Read it before and after a call to see whether the call took its parallel path (a check that compares
 * the results at 1 and 2 threads proves nothing when the call never runs in parallel). Counted once per region,
 * by its thread 0, with a relaxed atomic increment.
 */
inline std::atomic<long long>& parallel_regions_opened() noexcept {
  static std::atomic<long long> count{0};
  return count;
}

/// Counts the calling region in parallel_regions_opened() (call it from every thread of the region).
inline void count_parallel_region() noexcept {
#if KSHOT_HAS_OPENMP
  if (omp_get_thread_num() == 0 && omp_get_num_threads() > 1)
    parallel_regions_opened().fetch_add(1, std::memory_order_relaxed);
#endif
}

/// A type-erased loop body: runs the body for the indices [begin, end), in increasing order.
using RangeBody = void (*)(void* body, Index begin, Index end);

/**
 * @brief parallel_for() without its template: one copy in the program, however many bodies call it.
 *
 * The static schedule gives thread t of T the contiguous range [t n / T, (t + 1) n / T) (rounded as
 * schedule(static) does) in one call of `run`; the dynamic schedule calls `run` once per index. A range stops at
 * its first exception; the exception kept is the one of the range that starts lowest, which is the exception of
 * the lowest index, as if every index had run.
 */
inline void parallel_ranges(Index n, bool parallel, bool dynamic, RangeBody run, void* body) {
  if (n <= 0) return;
#if KSHOT_HAS_OPENMP
  const bool go_parallel = parallel && n > 1 && !in_parallel_region() && omp_get_max_threads() > 1;
  if (!go_parallel && (omp_get_max_threads() == 1 || in_parallel_region())) {
    // Eigen would run single-threaded here anyway (one thread allowed, or already inside an active
    // region), so skip the cost of opening an inactive region: small calls in tight loops feel it.
    run(body, 0, n);
    return;
  }
  std::exception_ptr error;
  Index error_index = n;
  auto guarded = [&](Index begin, Index end) {
    try {
      run(body, begin, end);
    } catch (...) {
      KSHOT_PRAGMA_OMP(omp critical(kshot_parallel_for_error))
      if (begin < error_index) {
        error_index = begin;
        error = std::current_exception();
      }
    }
  };
  KSHOT_PRAGMA_OMP(omp parallel if (go_parallel)) {
    count_parallel_region();
    omp_set_num_threads(1);
    if (dynamic) {
      KSHOT_PRAGMA_OMP(omp for schedule(dynamic, 1))
      for (Index i = 0; i < n; ++i) guarded(i, i + 1);
    } else {
      const Index threads = omp_get_num_threads(), me = omp_get_thread_num();
      const Index chunk = n / threads, extra = n % threads;
      const Index begin = me * chunk + std::min(me, extra);
      const Index end = begin + chunk + (me < extra ? 1 : 0);
      if (begin < end) guarded(begin, end);
    }
  }
  if (error) std::rethrow_exception(error);
#else
  (void)parallel;
  (void)dynamic;
  run(body, 0, n);
#endif
}

/**
 * @brief Runs body(i) for i in [0, n), in one OpenMP region when `parallel` is true.
 *
 * Inside the region every thread's OpenMP thread count is set to 1, so that an Eigen product called
 * from `body` runs single-threaded with its single-threaded blocking. That keeps each product's
 * result bitwise independent of the thread count (Eigen's blocking sizes, and so its rounding, change
 * with the number of threads it uses). The setting is local to the region's implicit tasks.
 *
 * An exception thrown by `body` does not escape the region: the one from the lowest index is rethrown
 * after the region ends (indices after it in the same thread's range may not run). `schedule` selects
 * static (equal contiguous ranges) or dynamic (one index at a time, for uneven work); results never depend
 * on it.
 *
 * The body is compiled once, into a loop over a range that parallel_ranges() calls through a pointer (once per
 * thread, or once per index when dynamic): the OpenMP region itself is compiled once for the whole program.
 */
template <class Body>
void parallel_for(Index n, bool parallel, Body&& body, bool dynamic = false) {
  using B = std::remove_reference_t<Body>;
  const RangeBody run = [](void* p, Index begin, Index end) {
    B& f = *static_cast<B*>(p);
    for (Index i = begin; i < end; ++i) f(i);
  };
  parallel_ranges(n, parallel, dynamic, run, const_cast<void*>(static_cast<const void*>(std::addressof(body))));
}

/**
 * @brief The thread (of `threads`) that owns block `b` under for_owned_blocks(): blocks are dealt in snake order,
 * 0, 1, ..., T - 1, T - 1, ..., 1, 0, 0, 1, ..., so that blocks whose work grows (or shrinks) with the index, such
 * as the row blocks of a triangle, still come out even.
 */
inline int block_owner(Index b, int threads) noexcept {
  const Index round = b / threads, pos = b % threads;
  return static_cast<int>(round % 2 == 0 ? pos : threads - 1 - pos);
}

/**
 * @brief One OpenMP region (when `parallel` is true) in which every thread first runs start(t) and then, phase
 * after phase, phase(t, b) for the blocks b in [0, blocks) that it owns (block_owner(b, T) of the T threads, in
 * increasing b), with a barrier between phases; t is the thread's index, 0 outside a region.
 *
 * For passes over the same data one after another (the rows of an n x n matrix): with the same blocks, a thread
 * reads and writes the rows it wrote in the pass before, which stay in its own cache. On machines whose cores are
 * far apart, writing a line that another core holds costs a round trip per line, far more than the pass itself;
 * one region instead of one per pass also saves the fork and join. Results must not depend on the ownership.
 * start() suits per-thread copies of shared inputs, which the thread then reads without sharing them. Exceptions
 * are caught in the region (the first by phase, then block, is rethrown after it; start()'s before any) and the
 * thread setting inside it is as in parallel_for().
 */
/// A type-erased region body: run(region, t, T) for thread t of T.
using RegionBody = void (*)(void* region, int me, int threads);

/// The barrier between two phases of owned_region(): an (orphaned) OpenMP barrier when the region has threads.
inline void region_barrier(int threads) noexcept {
  if (threads > 1) {
    KSHOT_PRAGMA_OMP(omp barrier)
  }
}

/// owned_region() without its template: opens the region (or not) once for the whole program.
inline void owned_region_run(Index blocks, bool parallel, RegionBody run, void* region) {
#if KSHOT_HAS_OPENMP
  const bool go_parallel = parallel && blocks > 1 && !in_parallel_region() && omp_get_max_threads() > 1;
  if (go_parallel) {
    KSHOT_PRAGMA_OMP(omp parallel) {
      const int threads = omp_get_num_threads(), me = omp_get_thread_num();
      count_parallel_region();
      omp_set_num_threads(1);
      run(region, me, threads);
    }
  } else if (omp_get_max_threads() == 1 || in_parallel_region()) {
    run(region, 0, 1);
  } else {
    // One thread, with Eigen kept single-threaded as inside a region.
    KSHOT_PRAGMA_OMP(omp parallel if (false)) {
      omp_set_num_threads(1);
      run(region, 0, 1);
    }
  }
#else
  (void)blocks;
  (void)parallel;
  run(region, 0, 1);
#endif
}

template <class Start, class... Phases>
void owned_region(Index blocks, bool parallel, Start&& start, Phases&&... phases) {
  // The error kept is the one of smallest rank: start() of thread t ranks t - T (before any block), block b of
  // phase k ranks k * blocks + b.
  std::exception_ptr error;
  Index best = std::numeric_limits<Index>::max();
  auto run = [&](int me, int threads) {
    auto guarded = [&](Index rank, auto&& f) {
      try {
        f();
      } catch (...) {
        KSHOT_PRAGMA_OMP(omp critical(kshot_parallel_for_error))
        if (rank < best) {
          best = rank;
          error = std::current_exception();
        }
      }
    };
    guarded(Index(me) - Index(threads), [&] { start(me); });
    Index k = 0;
    auto one = [&](auto& phase) {
      if (k > 0) region_barrier(threads);
      for (Index b = 0; b < blocks; ++b)
        if (block_owner(b, threads) == me) guarded(k * blocks + b, [&] { phase(me, b); });
      ++k;
    };
    (one(phases), ...);
  };
  using Run = decltype(run);
  owned_region_run(
      blocks, parallel, [](void* p, int me, int threads) { (*static_cast<Run*>(p))(me, threads); }, &run);
  if (error) std::rethrow_exception(error);
}

/// owned_region() with one phase, body(b), and nothing to start.
template <class Body>
void for_owned_blocks(Index blocks, bool parallel, Body&& body) {
  owned_region(
      blocks, parallel, [](int) {}, [&](int, Index b) { body(b); });
}

/// True when a loop of `rows` iterations with `work` scalar operations in all deserves a parallel region.
inline bool worth_parallel(Index rows, double work) noexcept {
  return rows >= 2 && work >= config::omp_min_work && !in_parallel_region() && max_threads() > 1;
}

}  // namespace detail
}  // namespace kshot

#endif  // KSHOT_CORE_THREADS_HPP
