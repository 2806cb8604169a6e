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

// The losses and miners are instantiated in tests/losses/test_instantiate_losses.cpp (the loss test executable),
// the nn classes in tests/nn/test_instantiate_nn.cpp.
