// SPDX-License-Identifier: MIT
// Metric-learning losses: value and gradient of every loss of kshot/losses at batch 256 and 1024, d = 128, float,
// 1 and 2 threads, beside the bare Eigen GEMM of the same n x n x d shape (the yardstick: the target is
// value + gradient in at most 3x one such GEMM). The peer lives in benchmarks/peers/pml_losses.py
// (pytorch-metric-learning's same losses, forward and backward in PyTorch, on the same shapes and labels).
//
// Every benchmark is named `<label>/omp:<threads>` and labelled `<label>`:
//   loss_<name>_f32_n<N>_d128   one iteration is evaluate(emb, labels, [mined,] grad[, grad_params]) on a
//                               pre-generated batch (standard normal rows, labels i / 4 over N / 4 classes,
//                               shuffled) with a reused loss object; triplet_batchhard also runs
//                               BatchHardMiner::mine inside the iteration, as the peer does
//   loss_yardstick_gemm_f32_<N>x<N>x128  `out.noalias() = a * a.transpose()` on the same batch (named loss_* so
//                               that `scripts/bench loss_` runs it with the losses)
//
// Each case is validated before timing: its float value and gradient must agree with the same loss evaluated in
// double on the same batch (value to 1e-3 relative, gradient to 1e-2 in norm) and be finite.

#include <kshot/core/random.hpp>
#include <kshot/core/threads.hpp>
#include <kshot/core/types.hpp>
#include <kshot/losses.hpp>

#include "common.hpp"

#include <benchmark/benchmark.h>
#include <Eigen/Core>

#include <cmath>
#include <cstdint>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace {

using kshot::Index;
template <class Scalar>
using Matrix = kshot::RowMatrixX<Scalar>;

constexpr Index sizes[] = {256, 1024};
constexpr Index dim = 128;
constexpr Index per_class = 4;
constexpr std::uint64_t data_seed = 20261128;
const std::vector<int> thread_counts = {1, 2};

struct Batch {
  Matrix<float> emb;
  Matrix<double> emb64;
  kshot::LabelVector labels;
};

const Batch& batch(Index n) {
  static std::map<Index, std::unique_ptr<Batch>> cache;
  auto& slot = cache[n];
  if (!slot) {
    slot = std::make_unique<Batch>();
    slot->emb.resize(n, dim);
    kshot::RandomStream rng(data_seed, static_cast<std::uint64_t>(n));
    rng.fill_normal(slot->emb);
    slot->emb64 = slot->emb.cast<double>();
    slot->labels.resize(n);
    for (Index i = 0; i < n; ++i) slot->labels[i] = static_cast<kshot::Label>(i / per_class);
    rng.shuffle(slot->labels.data(), slot->labels.data() + n);
  }
  return *slot;
}

// ---- one struct per loss: a loss object with its extra buffers, callable as (emb, labels, grad) ------------------

template <template <class> class Loss>
struct Plain {
  template <class S>
  struct Case {
    Loss<S> loss;
    Case(Index, Index) {}
    S operator()(const Matrix<S>& e, const kshot::LabelVector& y, Matrix<S>& g) { return loss.evaluate(e, y, g); }
  };
};

template <template <class> class Loss>
struct WithParams {
  template <class S>
  struct Case {
    Loss<S> loss;
    Matrix<S> grad_params;
    Case(Index, Index classes) : loss(classes, dim, /*seed=*/1) {
      grad_params.resize(param_rows(), param_cols());
    }
    Index param_rows() const;
    Index param_cols() const;
    S operator()(const Matrix<S>& e, const kshot::LabelVector& y, Matrix<S>& g) {
      return loss.evaluate(e, y, g, grad_params);
    }
  };
};

template <template <class> class Loss>
template <class S>
Index WithParams<Loss>::Case<S>::param_rows() const {
  if constexpr (std::is_same_v<Loss<S>, kshot::ArcFaceLoss<S>> || std::is_same_v<Loss<S>, kshot::CosFaceLoss<S>>)
    return loss.W.rows();
  else
    return loss.proxies.rows();
}

template <template <class> class Loss>
template <class S>
Index WithParams<Loss>::Case<S>::param_cols() const {
  if constexpr (std::is_same_v<Loss<S>, kshot::ArcFaceLoss<S>> || std::is_same_v<Loss<S>, kshot::CosFaceLoss<S>>)
    return loss.W.cols();
  else
    return loss.proxies.cols();
}

struct TripletBatchHard {
  template <class S>
  struct Case {
    kshot::BatchHardMiner<S> miner;
    kshot::TripletMarginLoss<S> loss;
    kshot::MinedTriplets triplets;
    Case(Index, Index) { loss.margin = S(0.2); }
    S operator()(const Matrix<S>& e, const kshot::LabelVector& y, Matrix<S>& g) {
      miner.mine(e, y, triplets);
      return loss.evaluate(e, y, triplets, g);
    }
  };
};

// ---- the benchmark ----------------------------------------------------------------------------------------------

template <class Family>
std::string validate(Index n, Index classes) {
  const Batch& b = batch(n);
  typename Family::template Case<float> f(n, classes);
  typename Family::template Case<double> d(n, classes);
  Matrix<float> gf(n, dim);
  Matrix<double> gd(n, dim);
  const float vf = f(b.emb, b.labels, gf);
  const double vd = d(b.emb64, b.labels, gd);
  if (!std::isfinite(vf) || !gf.allFinite()) return "non-finite float loss or gradient";
  if (std::abs(double(vf) - vd) > 1e-3 * std::abs(vd) + 1e-5)
    return "float loss " + std::to_string(vf) + " differs from double " + std::to_string(vd);
  const double gnorm = gd.norm();
  const double gerr = (gf.cast<double>() - gd).norm();
  if (gerr > 1e-2 * gnorm + 1e-6)
    return "float gradient differs from double by " + std::to_string(gerr) + " (norm " + std::to_string(gnorm) + ")";
  return {};
}

template <class Family>
void bm_loss(benchmark::State& state, Index n, int threads, std::string label) {
  state.SetLabel(label);
  kshot::ThreadCountGuard guard(threads);
  const Batch& b = batch(n);
  const Index classes = n / per_class;
  std::string error;
  try {
    error = validate<Family>(n, classes);
  } catch (const std::exception& ex) {
    error = ex.what();
  }
  if (!error.empty()) {
    state.SkipWithError(("validation failed: " + error).c_str());
    return;
  }
  typename Family::template Case<float> c(n, classes);
  Matrix<float> grad(n, dim);
  float value = c(b.emb, b.labels, grad);  // warm-up: buffers grow
  float* value_address = &value;           // see bench_fewshot.cpp: DoNotOptimize on a float local misbehaves
  for (auto _ : state) {
    value = c(b.emb, b.labels, grad);
    benchmark::DoNotOptimize(value_address);
    benchmark::DoNotOptimize(grad.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * n);
}

void bm_gemm(benchmark::State& state, Index n, int threads, std::string label) {
  state.SetLabel(label);
  kshot::ThreadCountGuard guard(threads);
  const Batch& b = batch(n);
  Matrix<float> out(n, n);
  out.noalias() = b.emb * b.emb.transpose();
  for (auto _ : state) {
    out.noalias() = b.emb * b.emb.transpose();
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * double(n) * double(n) * double(dim) * double(state.iterations()),
                                                 benchmark::Counter::kIsRate, benchmark::Counter::kIs1000);
}

template <class Family>
void add(const std::string& name) {
  for (Index n : sizes)
    for (int t : thread_counts) {
      const std::string label = "loss_" + name + "_f32_n" + std::to_string(n) + "_d" + std::to_string(dim);
      benchmark::RegisterBenchmark((label + "/omp:" + std::to_string(t)).c_str(), bm_loss<Family>, n, t, label)
          ->UseRealTime()
          ->Unit(benchmark::kMicrosecond);
    }
}

void register_all() {
  for (Index n : sizes)
    for (int t : thread_counts) {
      const std::string label = "loss_yardstick_gemm_f32_" + std::to_string(n) + "x" + std::to_string(n) + "x" + std::to_string(dim);
      benchmark::RegisterBenchmark((label + "/omp:" + std::to_string(t)).c_str(), bm_gemm, n, t, label)
          ->UseRealTime()
          ->Unit(benchmark::kMicrosecond);
    }
  add<Plain<kshot::ContrastiveLoss>>("contrastive");
  add<Plain<kshot::TripletMarginLoss>>("triplet");
  add<TripletBatchHard>("triplet_batchhard");
  add<Plain<kshot::NTXentLoss>>("ntxent");
  add<Plain<kshot::SupConLoss>>("supcon");
  add<Plain<kshot::MultiSimilarityLoss>>("multi_similarity");
  add<Plain<kshot::CircleLoss>>("circle");
  add<WithParams<kshot::ProxyNCALoss>>("proxy_nca");
  add<WithParams<kshot::ProxyAnchorLoss>>("proxy_anchor");
  add<WithParams<kshot::ArcFaceLoss>>("arcface");
  add<WithParams<kshot::CosFaceLoss>>("cosface");
  add<Plain<kshot::NPairsLoss>>("npairs");
  add<Plain<kshot::LiftedStructureLoss>>("lifted");
  add<Plain<kshot::MarginLoss>>("margin");
  add<Plain<kshot::FastAPLoss>>("fastap");
}

}  // namespace

int main(int argc, char** argv) {
  return kshot::bench::run(argc, argv, thread_counts, register_all, [] {
    benchmark::AddCustomContext("loss_batch", "standard normal rows, d = 128, labels i / 4 shuffled (4 per class)");
  });
}
