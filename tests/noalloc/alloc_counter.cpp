// SPDX-License-Identifier: MIT
// The counting operator new of the no-allocation tests (its own translation unit, so that no caller inlines
// it next to a library deallocation, which GCC 12 would flag as a mismatched new/delete).
#include "noalloc/alloc_counter.hpp"

#include <cstdlib>
#include <new>

namespace kshot {
namespace test {
std::atomic<long>& new_calls() {
  static std::atomic<long> calls{0};
  return calls;
}
std::atomic<bool>& counting() {
  static std::atomic<bool> on{false};
  return on;
}
}  // namespace test
}  // namespace kshot

void* operator new(std::size_t size) {
  if (kshot::test::counting().load(std::memory_order_relaxed)) ++kshot::test::new_calls();
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t size) { return ::operator new(size); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
