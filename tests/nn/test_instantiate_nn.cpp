// SPDX-License-Identifier: MIT
// Explicit instantiation of every nn class template, so that every member compiles for float and double.
#include <kshot/nn.hpp>

#include <doctest/doctest.h>

#define KSHOT_INSTANTIATE_NN(Template) \
  template class Template<float>;      \
  template class Template<double>;
KSHOT_INSTANTIATE_NN(kshot::Linear)
KSHOT_INSTANTIATE_NN(kshot::ReLU)
KSHOT_INSTANTIATE_NN(kshot::GELU)
KSHOT_INSTANTIATE_NN(kshot::Tanh)
KSHOT_INSTANTIATE_NN(kshot::ResidualBlock)
KSHOT_INSTANTIATE_NN(kshot::LayerNorm)
KSHOT_INSTANTIATE_NN(kshot::L2Normalize)
KSHOT_INSTANTIATE_NN(kshot::Dropout)
KSHOT_INSTANTIATE_NN(kshot::Sequential)
KSHOT_INSTANTIATE_NN(kshot::Sgd)
KSHOT_INSTANTIATE_NN(kshot::Adam)
KSHOT_INSTANTIATE_NN(kshot::AdamW)

TEST_CASE("build: every nn class template instantiates for float and double") {
  kshot::Sequential<float> model;
  CHECK(model.num_parameters() == 0);
}
