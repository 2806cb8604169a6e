// SPDX-License-Identifier: MIT
// Explicit instantiation of every nn, meta and train class template, so that every member compiles for float and
// double. (Compiled at -O0: this file only checks that the code compiles; see tests/CMakeLists.txt.)
#include <kshot/losses/triplet.hpp>
#include <kshot/meta.hpp>
#include <kshot/nn.hpp>
#include <kshot/train.hpp>

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
KSHOT_INSTANTIATE_NN(kshot::MseLoss)
KSHOT_INSTANTIATE_NN(kshot::CrossEntropyLoss)
KSHOT_INSTANTIATE_NN(kshot::Maml)
KSHOT_INSTANTIATE_NN(kshot::MetaSgd)
KSHOT_INSTANTIATE_NN(kshot::Reptile)
template class kshot::Maml<double, kshot::CrossEntropyLoss<double>>;
template class kshot::MetaSgd<double, kshot::CrossEntropyLoss<double>>;
template class kshot::Reptile<double, kshot::MseLoss<double>, kshot::Adam<double>>;
template class kshot::EpisodeObjective<float>;
template class kshot::EpisodeObjective<double>;
template class kshot::MetricObjective<float, kshot::TripletMarginLoss<float>>;
template class kshot::Trainer<float, kshot::EpisodeObjective<float>>;
template class kshot::Trainer<double, kshot::EpisodeObjective<double>, kshot::Sgd<double>>;
template class kshot::Trainer<float, kshot::MetricObjective<float, kshot::TripletMarginLoss<float>>>;

TEST_CASE("build: every nn, meta and train class template instantiates for float and double") {
  kshot::Sequential<float> model;
  CHECK(model.num_parameters() == 0);
}
