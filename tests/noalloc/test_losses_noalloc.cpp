// SPDX-License-Identifier: MIT
// A second evaluate() with the same shapes allocates nothing: no Eigen heap allocation (it would abort under
// EIGEN_RUNTIME_NO_MALLOC) and no operator new. One thread and episode-sized batches, so that Eigen's GEMM
// keeps its packing buffers on the stack (docs/losses.md explains the caveat for large or threaded GEMMs).
#include "noalloc/alloc_counter.hpp"
#include "test_util.hpp"

#include <kshot/core/threads.hpp>
#include <kshot/losses/contrastive.hpp>

#include <vector>

#include <doctest/doctest.h>

using namespace kshot;
using namespace kshot::test;

namespace {

LabelVector labels_of(Index n, Index classes) {
  LabelVector y(n);
  for (Index i = 0; i < n; ++i) y[i] = static_cast<Label>(i % classes);
  return y;
}

/// Calls f() once to size the buffers, then again under the guard; checks nothing was allocated.
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

}  // namespace

TEST_CASE("no allocation on a second call: ContrastiveLoss") {
  const RowMatrixX<double> emb = random_matrix<double>(40, 8, 1);
  const LabelVector y = labels_of(40, 5);
  RowMatrixX<double> g(40, 8);
  ContrastiveLoss<double> loss;
  check_second_call_allocates_nothing([&] { return loss.evaluate(emb, y, g); });
  MinedPairs pairs;
  pairs.a1 = {0, 1, 2};
  pairs.p = {5, 6, 7};
  pairs.a2 = {0, 1, 3};
  pairs.n = {1, 2, 4};
  check_second_call_allocates_nothing([&] { return loss.evaluate(emb, y, pairs, g); });
  loss.distance = LossDistance::cosine();
  check_second_call_allocates_nothing([&] { return loss.evaluate(emb, y, g); });
}

TEST_CASE("no allocation: the guard sees an allocation") {
  long news = 0;
  {
    AllocationGuard guard;
    std::vector<int> v(16, 1);
    news = guard.news();
    CHECK(v[3] == 1);
  }
  CHECK(news == 1);
  CHECK(Eigen::internal::is_malloc_allowed());
}
