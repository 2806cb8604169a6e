// SPDX-License-Identifier: MIT
// Explicit instantiation of every loss and miner class template, so that every member compiles for float and
// double. (Compiled at -O0: this file only checks that the code compiles; see tests/CMakeLists.txt.)
#include <kshot/losses.hpp>

#include <doctest/doctest.h>

#define KSHOT_INSTANTIATE_BOTH(Template) \
  template class Template<float>;        \
  template class Template<double>;
KSHOT_INSTANTIATE_BOTH(kshot::detail::LossDistanceMatrix)
KSHOT_INSTANTIATE_BOTH(kshot::ContrastiveLoss)
KSHOT_INSTANTIATE_BOTH(kshot::TripletMarginLoss)
KSHOT_INSTANTIATE_BOTH(kshot::MarginLoss)
KSHOT_INSTANTIATE_BOTH(kshot::NTXentLoss)
KSHOT_INSTANTIATE_BOTH(kshot::SupConLoss)
KSHOT_INSTANTIATE_BOTH(kshot::MultiSimilarityLoss)
KSHOT_INSTANTIATE_BOTH(kshot::CircleLoss)
KSHOT_INSTANTIATE_BOTH(kshot::ProxyNCALoss)
KSHOT_INSTANTIATE_BOTH(kshot::ProxyAnchorLoss)
KSHOT_INSTANTIATE_BOTH(kshot::ArcFaceLoss)
KSHOT_INSTANTIATE_BOTH(kshot::CosFaceLoss)
KSHOT_INSTANTIATE_BOTH(kshot::NPairsLoss)
KSHOT_INSTANTIATE_BOTH(kshot::LiftedStructureLoss)
KSHOT_INSTANTIATE_BOTH(kshot::GeneralizedLiftedStructureLoss)
KSHOT_INSTANTIATE_BOTH(kshot::FastAPLoss)
KSHOT_INSTANTIATE_BOTH(kshot::BatchEasyHardMiner)
KSHOT_INSTANTIATE_BOTH(kshot::BatchHardMiner)
KSHOT_INSTANTIATE_BOTH(kshot::TripletMarginMiner)
KSHOT_INSTANTIATE_BOTH(kshot::PairMarginMiner)
KSHOT_INSTANTIATE_BOTH(kshot::MultiSimilarityMiner)
#undef KSHOT_INSTANTIATE_BOTH  // the file may share a translation unit with others (unity build)

TEST_CASE("build: every loss and miner class template instantiates for float and double") {
  kshot::ContrastiveLoss<float> loss;
  CHECK(loss.neg_margin == 1.0f);
}
