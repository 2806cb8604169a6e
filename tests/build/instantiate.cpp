// SPDX-License-Identifier: MIT
// Explicit instantiation of every class template, so that every member compiles for float and double.
#include <kshot/kshot.hpp>

#include "test_util.hpp"

template class kshot::detail::Workspace<float>;
template class kshot::detail::Workspace<double>;

#define KSHOT_INSTANTIATE_PAIRWISE(Metric)                 \
  template class kshot::PairwiseDistance<float, Metric>;   \
  template class kshot::PairwiseDistance<double, Metric>;
KSHOT_INSTANTIATE_PAIRWISE(kshot::SquaredEuclidean)
KSHOT_INSTANTIATE_PAIRWISE(kshot::Euclidean)
KSHOT_INSTANTIATE_PAIRWISE(kshot::CosineSimilarity)
KSHOT_INSTANTIATE_PAIRWISE(kshot::CosineDistance)
KSHOT_INSTANTIATE_PAIRWISE(kshot::InnerProduct)
KSHOT_INSTANTIATE_PAIRWISE(kshot::Manhattan)

TEST_CASE("build: every class template instantiates for float and double") {
  CHECK(kshot::is_metric_v<kshot::Manhattan>);
  CHECK(!kshot::is_metric_v<int>);
  CHECK(kshot::is_supported_scalar_v<float>);
  CHECK(!kshot::is_supported_scalar_v<int>);
}

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
