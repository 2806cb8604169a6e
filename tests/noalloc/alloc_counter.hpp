/**
 * @file tests/noalloc/alloc_counter.hpp
 * @brief The no-allocation contract (STYLE B7): inside an AllocationGuard, any Eigen heap allocation
 * (EIGEN_RUNTIME_NO_MALLOC, set for this whole executable) aborts, and every operator new is counted.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_TESTS_NOALLOC_ALLOC_COUNTER_HPP
#define KSHOT_TESTS_NOALLOC_ALLOC_COUNTER_HPP

#ifndef EIGEN_RUNTIME_NO_MALLOC
#error "the no-allocation tests need EIGEN_RUNTIME_NO_MALLOC for the whole executable"
#endif

#include <kshot/core/threads.hpp>
#include <kshot/core/types.hpp>

#include <Eigen/Core>
#include <doctest/doctest.h>

#include <atomic>

namespace kshot {
namespace test {

/// operator new calls made while counting (defined in main_noalloc.cpp, which replaces operator new).
std::atomic<long>& new_calls();
std::atomic<bool>& counting();

/// While alive: Eigen may not allocate, and operator new calls are counted.
class AllocationGuard {
 public:
  AllocationGuard() {
    new_calls() = 0;
    counting() = true;
    Eigen::internal::set_is_malloc_allowed(false);
  }
  ~AllocationGuard() {
    Eigen::internal::set_is_malloc_allowed(true);
    counting() = false;
  }
  AllocationGuard(const AllocationGuard&) = delete;
  AllocationGuard& operator=(const AllocationGuard&) = delete;
  long news() const { return new_calls().load(); }
};

/// n labels cycling over `classes`.
inline LabelVector labels_of(Index n, Index classes) {
  LabelVector y(n);
  for (Index i = 0; i < n; ++i) y[i] = static_cast<Label>(i % classes);
  return y;
}

/// Calls f() once to size the buffers, then again under the guard, on one thread (so that Eigen's GEMM keeps
/// its packing buffers on the stack); checks that nothing was allocated.
template <class F>
void check_second_call_allocates_nothing(F&& f) {
  ThreadCountGuard threads(1);
  f();
  long news = 0;
  {
    AllocationGuard guard;
    f();
    news = guard.news();
  }
  CHECK(news == 0);
}

}  // namespace test
}  // namespace kshot

#endif  // KSHOT_TESTS_NOALLOC_ALLOC_COUNTER_HPP
