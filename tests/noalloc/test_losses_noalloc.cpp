// SPDX-License-Identifier: MIT
// A second evaluate() with the same shapes allocates nothing: no Eigen heap allocation (it would abort under
// EIGEN_RUNTIME_NO_MALLOC) and no operator new. One thread and episode-sized batches, so that Eigen's GEMM
// keeps its packing buffers on the stack (docs/losses.md explains the caveat for large or threaded GEMMs).
#include "noalloc/alloc_counter.hpp"
#include "test_util.hpp"

#include <kshot/core/threads.hpp>
#include <kshot/losses/arcface.hpp>
#include <kshot/losses/circle.hpp>
#include <kshot/losses/contrastive.hpp>
#include <kshot/losses/cosface.hpp>
#include <kshot/losses/fastap.hpp>
#include <kshot/losses/lifted.hpp>
#include <kshot/losses/miners.hpp>
#include <kshot/losses/multi_similarity.hpp>
#include <kshot/losses/npairs.hpp>
#include <kshot/losses/ntxent.hpp>
#include <kshot/losses/proxy_anchor.hpp>
#include <kshot/losses/proxy_nca.hpp>
#include <kshot/losses/supcon.hpp>

#include <doctest/doctest.h>

#include <vector>

using namespace kshot;
using namespace kshot::test;

namespace {

/// A batch of 40 rows of width 8 over 5 classes, a gradient buffer, and a mined tuple of each kind.
struct Fixture {
  RowMatrixX<double> emb = random_matrix<double>(40, 8, 1);
  LabelVector y = labels_of(40, 5);
  RowMatrixX<double> g = RowMatrixX<double>(40, 8);
  MinedPairs pairs;
  MinedTriplets triplets;
  Fixture() {
    pairs.a1 = {0, 1, 2};
    pairs.p = {5, 6, 7};
    pairs.a2 = {0, 1, 3};
    pairs.n = {1, 2, 4};
    triplets.a = {0, 1, 2};
    triplets.p = {5, 6, 7};
    triplets.n = {1, 2, 3};
  }
};

/// Every evaluate() form of a loss without parameters of its own.
template <class Loss>
void check_plain_loss(Loss& loss) {
  Fixture f;
  check_second_call_allocates_nothing([&] { return loss.evaluate(f.emb, f.y, f.g); });
  check_second_call_allocates_nothing([&] { return loss.evaluate(f.emb, f.y, f.pairs, f.g); });
  check_second_call_allocates_nothing([&] { return loss.evaluate(f.emb, f.y, f.triplets, f.g); });
  check_second_call_allocates_nothing([&] { return loss.evaluate(f.emb, f.y); });
}

/// Every evaluate() form of a loss with a parameter matrix (proxies or W) and its gradient.
template <class Loss>
void check_param_loss(Loss& loss, RowMatrixX<double>& grad_params) {
  Fixture f;
  check_second_call_allocates_nothing([&] { return loss.evaluate(f.emb, f.y, f.g, grad_params); });
  check_second_call_allocates_nothing([&] { return loss.evaluate(f.emb, f.y, f.pairs, f.g, grad_params); });
  check_second_call_allocates_nothing([&] { return loss.evaluate(f.emb, f.y, f.triplets, f.g); });
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

TEST_CASE("no allocation on a second call: pair and softmax losses") {
  {
    NTXentLoss<double> loss;
    check_plain_loss(loss);
  }
  {
    SupConLoss<double> loss;
    check_plain_loss(loss);
  }
  {
    MultiSimilarityLoss<double> loss;
    check_plain_loss(loss);
  }
  {
    CircleLoss<double> loss;
    check_plain_loss(loss);
  }
  {
    NPairsLoss<double> loss;
    check_plain_loss(loss);
  }
  {
    LiftedStructureLoss<double> loss;
    check_plain_loss(loss);
  }
  {
    GeneralizedLiftedStructureLoss<double> loss;
    check_plain_loss(loss);
  }
  {
    FastAPLoss<double> loss;
    check_plain_loss(loss);
  }
}

TEST_CASE("no allocation on a second call: proxy and large-margin losses") {
  {
    ProxyNCALoss<double> loss(5, 8, 1);
    RowMatrixX<double> gp(5, 8);
    check_param_loss(loss, gp);
  }
  {
    ProxyAnchorLoss<double> loss(5, 8, 1);
    RowMatrixX<double> gp(5, 8);
    check_param_loss(loss, gp);
  }
  {
    ArcFaceLoss<double> loss(5, 8, 1);
    RowMatrixX<double> gp(8, 5);
    check_param_loss(loss, gp);
  }
  {
    CosFaceLoss<double> loss(5, 8, 1);
    RowMatrixX<double> gp(8, 5);
    check_param_loss(loss, gp);
  }
}

TEST_CASE("no allocation on a second call: miners") {
  Fixture f;
  MinedPairs pairs;
  MinedTriplets triplets;
  BatchHardMiner<double> batch_hard;
  check_second_call_allocates_nothing([&] { batch_hard.mine(f.emb, f.y, triplets); });
  BatchEasyHardMiner<double> easy_hard;
  check_second_call_allocates_nothing([&] { easy_hard.mine(f.emb, f.y, pairs); });
  TripletMarginMiner<double> triplet_margin;
  check_second_call_allocates_nothing([&] { triplet_margin.mine(f.emb, f.y, triplets); });
  PairMarginMiner<double> pair_margin;
  check_second_call_allocates_nothing([&] { pair_margin.mine(f.emb, f.y, pairs); });
  MultiSimilarityMiner<double> multi_similarity;
  check_second_call_allocates_nothing([&] { multi_similarity.mine(f.emb, f.y, pairs); });
}
