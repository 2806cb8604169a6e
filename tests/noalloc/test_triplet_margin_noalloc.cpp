// SPDX-License-Identifier: MIT
#include "noalloc/alloc_counter.hpp"
#include "test_util.hpp"

#include <kshot/core/threads.hpp>
#include <kshot/losses/margin.hpp>
#include <kshot/losses/triplet.hpp>

#include <doctest/doctest.h>

using namespace kshot;
using namespace kshot::test;

namespace {

struct EveryOther {
  void prepare(ConstRowMatrixRef<double>, ConstLabelRef) {}
  bool keep(Index a, Index p, Index n) const { return (a + p + n) % 2 == 0; }
};

}  // namespace

TEST_CASE("no allocation on a second call: TripletMarginLoss") {
  const RowMatrixX<double> emb = random_matrix<double>(40, 8, 1);
  const LabelVector y = labels_of(40, 5);
  RowMatrixX<double> g(40, 8);
  TripletMarginLoss<double> loss;
  check_second_call_allocates_nothing([&] { return loss.evaluate(emb, y, g); });
  MinedTriplets t;
  t.a = {0, 1, 2};
  t.p = {5, 6, 7};
  t.n = {1, 2, 3};
  check_second_call_allocates_nothing([&] { return loss.evaluate(emb, y, t, g); });
  MinedPairs pairs;
  pairs.a1 = {0, 1, 2};
  pairs.p = {5, 6, 7};
  pairs.a2 = {0, 1, 3};
  pairs.n = {1, 2, 4};
  check_second_call_allocates_nothing([&] { return loss.evaluate(emb, y, pairs, g); });
  loss.swap = true;
  loss.smooth_loss = true;
  check_second_call_allocates_nothing([&] { return loss.evaluate(emb, y, g); });
  EveryOther sel;
  check_second_call_allocates_nothing([&] { return loss.evaluate_streaming(emb, y, sel, g); });
  loss.swap = false;
  loss.smooth_loss = false;
  loss.triplets_per_anchor = 3;
  check_second_call_allocates_nothing([&] { return loss.evaluate(emb, y, g); });
  // The sorted path (two classes of 150).
  const RowMatrixX<double> big = random_matrix<double>(300, 8, 2);
  const LabelVector y2 = labels_of(300, 2);
  RowMatrixX<double> g2(300, 8);
  loss.triplets_per_anchor = 0;
  loss.distance = LossDistance::cosine();
  check_second_call_allocates_nothing([&] { return loss.evaluate(big, y2, g2); });
}

TEST_CASE("no allocation on a second call: MarginLoss") {
  const RowMatrixX<double> emb = random_matrix<double>(40, 8, 1);
  const LabelVector y = labels_of(40, 5);
  RowMatrixX<double> g(40, 8);
  VectorX<double> gb(5);
  MarginLoss<double> loss;
  check_second_call_allocates_nothing([&] { return loss.evaluate(emb, y, g); });
  loss.beta = VectorX<double>::Constant(5, 1.2);
  loss.learn_beta = true;
  loss.nu = 0.1;
  check_second_call_allocates_nothing([&] { return loss.evaluate(emb, y, Mined{}, g, gb); });
  MinedPairs pairs;
  pairs.a1 = {0, 1, 2};
  pairs.p = {5, 6, 7};
  pairs.a2 = {0, 1, 3};
  pairs.n = {1, 2, 4};
  check_second_call_allocates_nothing([&] { return loss.evaluate(emb, y, pairs, g, gb); });
  loss.triplets_per_anchor = 2;
  check_second_call_allocates_nothing([&] { return loss.evaluate(emb, y, g); });
}
