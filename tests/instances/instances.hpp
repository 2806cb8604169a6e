// SPDX-License-Identifier: MIT
// The class templates that the sanitized test executables take from one precompiled, optimised library
// (kshot_test_instances, tests/CMakeLists.txt) instead of compiling them in every test file.
//
// In a test file (this header is its precompiled header) each line below is an explicit instantiation declaration
// (`extern template class ...`): the test code still sees every definition, but calls the library's copy of each
// member, compiled once at -O1 under the same sanitizers. Test files are then compiled at -O0, where nearly all of
// their compile time was instantiating and optimising these classes again, and still run the library's code at
// optimised speed. In one of the library's sources (instances/*.cpp) the lines of its group are explicit
// instantiation definitions instead: KSHOT_TEST_INSTANCES_DEFINE names the group.
//
// Every member of these classes is instantiated for float and double, so this is also the check that each compiles
// for both scalars. A class missing here is still tested: the test files then compile it themselves. The
// distillation losses are such classes: their tests run in seconds at -O0, and the library copy cost 53 s of compile.
#ifndef KSHOT_TESTS_INSTANCES_INSTANCES_HPP
#define KSHOT_TESTS_INSTANCES_INSTANCES_HPP

#include <kshot/kshot.hpp>

#define KSHOT_TEST_GROUP_core 1
#define KSHOT_TEST_GROUP_losses 2
#define KSHOT_TEST_GROUP_nn 3
#define KSHOT_TEST_GROUP_fewshot 4

#define KSHOT_TEST_GROUP_ID2(group) KSHOT_TEST_GROUP_##group
#define KSHOT_TEST_GROUP_ID(group) KSHOT_TEST_GROUP_ID2(group)

#if defined(KSHOT_TEST_INSTANCES_DEFINE)
#define KSHOT_TEST_DEFINING(group) (KSHOT_TEST_GROUP_ID(KSHOT_TEST_INSTANCES_DEFINE) == KSHOT_TEST_GROUP_##group)
#else
#define KSHOT_TEST_DEFINING(group) 0
#endif

// KSHOT_TEST_INSTANCE(group, type): the instantiation definition in the group's library source, else a declaration.
#define KSHOT_TEST_INSTANCE_DEFINE_1(...) template class __VA_ARGS__;
#define KSHOT_TEST_INSTANCE_DEFINE_0(...) extern template class __VA_ARGS__;
#define KSHOT_TEST_INSTANCE_SELECT(flag) KSHOT_TEST_INSTANCE_DEFINE_##flag
#define KSHOT_TEST_INSTANCE_EXPAND(flag) KSHOT_TEST_INSTANCE_SELECT(flag)

// The flags are computed by the preprocessor per group below, one #if per group (a macro cannot hold an #if).
#if KSHOT_TEST_DEFINING(core)
#define KSHOT_TEST_FLAG_core 1
#else
#define KSHOT_TEST_FLAG_core 0
#endif
#if KSHOT_TEST_DEFINING(losses)
#define KSHOT_TEST_FLAG_losses 1
#else
#define KSHOT_TEST_FLAG_losses 0
#endif
#if KSHOT_TEST_DEFINING(nn)
#define KSHOT_TEST_FLAG_nn 1
#else
#define KSHOT_TEST_FLAG_nn 0
#endif
#if KSHOT_TEST_DEFINING(fewshot)
#define KSHOT_TEST_FLAG_fewshot 1
#else
#define KSHOT_TEST_FLAG_fewshot 0
#endif

#define KSHOT_TEST_INSTANCE(group, ...) KSHOT_TEST_INSTANCE_EXPAND(KSHOT_TEST_FLAG_##group)(__VA_ARGS__)
#define KSHOT_TEST_BOTH(group, name)               \
  KSHOT_TEST_INSTANCE(group, kshot::name<float>) \
  KSHOT_TEST_INSTANCE(group, kshot::name<double>)

// ---- core: workspace, distances, retrieval, recommendation ----
KSHOT_TEST_BOTH(core, detail::Workspace)
#define KSHOT_TEST_PAIRWISE(Metric)                                   \
  KSHOT_TEST_INSTANCE(core, kshot::PairwiseDistance<float, Metric>) \
  KSHOT_TEST_INSTANCE(core, kshot::PairwiseDistance<double, Metric>)
KSHOT_TEST_PAIRWISE(kshot::SquaredEuclidean)
KSHOT_TEST_PAIRWISE(kshot::Euclidean)
KSHOT_TEST_PAIRWISE(kshot::CosineSimilarity)
KSHOT_TEST_PAIRWISE(kshot::CosineDistance)
KSHOT_TEST_PAIRWISE(kshot::InnerProduct)
KSHOT_TEST_PAIRWISE(kshot::Manhattan)
#undef KSHOT_TEST_PAIRWISE
KSHOT_TEST_BOTH(core, FlatIndex)
KSHOT_TEST_BOTH(core, Recommender)

// ---- losses and miners ----
KSHOT_TEST_BOTH(losses, detail::LossDistanceMatrix)
KSHOT_TEST_BOTH(losses, ContrastiveLoss)
KSHOT_TEST_BOTH(losses, TripletMarginLoss)
KSHOT_TEST_BOTH(losses, MarginLoss)
KSHOT_TEST_BOTH(losses, NTXentLoss)
KSHOT_TEST_BOTH(losses, SupConLoss)
KSHOT_TEST_BOTH(losses, MultiSimilarityLoss)
KSHOT_TEST_BOTH(losses, CircleLoss)
KSHOT_TEST_BOTH(losses, ProxyNCALoss)
KSHOT_TEST_BOTH(losses, ProxyAnchorLoss)
KSHOT_TEST_BOTH(losses, ArcFaceLoss)
KSHOT_TEST_BOTH(losses, CosFaceLoss)
KSHOT_TEST_BOTH(losses, NPairsLoss)
KSHOT_TEST_BOTH(losses, LiftedStructureLoss)
KSHOT_TEST_BOTH(losses, GeneralizedLiftedStructureLoss)
KSHOT_TEST_BOTH(losses, FastAPLoss)
KSHOT_TEST_BOTH(losses, BatchEasyHardMiner)
KSHOT_TEST_BOTH(losses, BatchHardMiner)
KSHOT_TEST_BOTH(losses, TripletMarginMiner)
KSHOT_TEST_BOTH(losses, PairMarginMiner)
KSHOT_TEST_BOTH(losses, MultiSimilarityMiner)

// ---- nn, meta-learning, training ----
KSHOT_TEST_BOTH(nn, Linear)
KSHOT_TEST_BOTH(nn, ReLU)
KSHOT_TEST_BOTH(nn, GELU)
KSHOT_TEST_BOTH(nn, Tanh)
KSHOT_TEST_BOTH(nn, ResidualBlock)
KSHOT_TEST_BOTH(nn, LayerNorm)
KSHOT_TEST_BOTH(nn, L2Normalize)
KSHOT_TEST_BOTH(nn, Dropout)
KSHOT_TEST_BOTH(nn, Sequential)
KSHOT_TEST_BOTH(nn, Sgd)
KSHOT_TEST_BOTH(nn, Adam)
KSHOT_TEST_BOTH(nn, AdamW)
KSHOT_TEST_BOTH(nn, MseLoss)
KSHOT_TEST_BOTH(nn, CrossEntropyLoss)
KSHOT_TEST_BOTH(nn, Maml)
KSHOT_TEST_BOTH(nn, MetaSgd)
KSHOT_TEST_BOTH(nn, Reptile)
KSHOT_TEST_INSTANCE(nn, kshot::Maml<double, kshot::CrossEntropyLoss<double>>)
KSHOT_TEST_INSTANCE(nn, kshot::MetaSgd<double, kshot::CrossEntropyLoss<double>>)
KSHOT_TEST_INSTANCE(nn, kshot::Reptile<double, kshot::MseLoss<double>, kshot::Adam<double>>)
KSHOT_TEST_BOTH(nn, EpisodeObjective)
KSHOT_TEST_INSTANCE(nn, kshot::MetricObjective<float, kshot::TripletMarginLoss<float>>)
KSHOT_TEST_INSTANCE(nn, kshot::Trainer<float, kshot::EpisodeObjective<float>>)
KSHOT_TEST_INSTANCE(nn, kshot::Trainer<double, kshot::EpisodeObjective<double>, kshot::Sgd<double>>)
KSHOT_TEST_INSTANCE(nn, kshot::Trainer<float, kshot::MetricObjective<float, kshot::TripletMarginLoss<float>>>)
KSHOT_TEST_BOTH(nn, detail::InBatchSoftmax)
KSHOT_TEST_BOTH(nn, ColdItemEmbedder)

// ---- few-shot classifiers ----
KSHOT_TEST_BOTH(fewshot, ProtoNet)
KSHOT_TEST_BOTH(fewshot, SimpleShot)
KSHOT_TEST_BOTH(fewshot, MatchingNetworks)
KSHOT_TEST_BOTH(fewshot, RidgeHead)
KSHOT_TEST_BOTH(fewshot, LogisticHead)
KSHOT_TEST_BOTH(fewshot, BDCSPN)
KSHOT_TEST_BOTH(fewshot, TIM)
KSHOT_TEST_BOTH(fewshot, LaplacianShot)
KSHOT_TEST_BOTH(fewshot, PTMAP)
KSHOT_TEST_BOTH(fewshot, SoftKMeans)

#endif  // KSHOT_TESTS_INSTANCES_INSTANCES_HPP
