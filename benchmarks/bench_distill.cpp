// SPDX-License-Identifier: MIT
// Distillation losses: value and gradient (with respect to the student) of KD at batch 256 x 1000 classes, and of
// RKD (distance + angle), SP, PKT and DKD at the sizes below, float, 1 and 2 threads. The peer lives in
// benchmarks/peers/torchdistill_losses.py (torchdistill's losses, or their formulas in plain PyTorch, forward and
// backward, on the same shapes).
//
// Every benchmark is named `<label>/omp:<threads>` and labelled `<label>`:
//   distill_kd_f32_n256_c1000      KDLoss(T = 4, alpha = 0.9), logits with targets
//   distill_dkd_f32_n256_c1000     DKDLoss(alpha = 1, beta = 8, T = 4)
//   distill_rkd_f32_n256_d128      RKDLoss(dist_factor = 1, angle_factor = 2, mean); teacher d = 128 too
//   distill_sp_f32_n256_d128       SPLoss (torchdistill's L1 rows, batchmean)
//   distill_pkt_f32_n256_d128      PKTLoss(eps = 1e-7)
// One iteration is evaluate(student, teacher, [targets,] grad) on pre-generated standard-normal inputs (student
// and teacher from one seeded stream, targets uniform) with a reused loss object. Each case is validated first:
// its float value and gradient must agree with the double evaluation (1e-3 relative; gradient 1e-2 in norm).

#include <kshot/core/random.hpp>
#include <kshot/core/threads.hpp>
#include <kshot/core/types.hpp>
#include <kshot/distill.hpp>

#include "common.hpp"

#include <benchmark/benchmark.h>
#include <Eigen/Core>

#include <cmath>
#include <cstdint>
#include <exception>
#include <string>
#include <vector>

namespace {

using kshot::Index;
template <class Scalar>
using Matrix = kshot::RowMatrixX<Scalar>;

constexpr Index batch = 256;
constexpr Index classes = 1000;
constexpr Index dim = 128;
constexpr std::uint64_t data_seed = 20261128;
const std::vector<int> thread_counts = {1, 2};

struct Inputs {
  Matrix<float> s, t;
  kshot::LabelVector y;
};

Inputs make_inputs(Index n, Index d) {
  Inputs in;
  in.s.resize(n, d);
  in.t.resize(n, d);
  kshot::RandomStream rng(data_seed, static_cast<std::uint64_t>(d));
  rng.fill_normal(in.s);
  rng.fill_normal(in.t);
  in.y.resize(n);
  for (Index i = 0; i < n; ++i) in.y[i] = static_cast<kshot::Label>(rng.bounded(static_cast<std::uint64_t>(d)));
  return in;
}

// One struct per case: make<S>() builds a loss, call(loss, inputs, grad) evaluates it.
struct KD {
  static constexpr Index width = classes;
  template <class S>
  static kshot::KDLoss<S> make() {
    kshot::KDLoss<S> l;
    l.temperature = S(4);
    l.alpha = S(0.9);
    return l;
  }
  template <class L, class S>
  static S call(L& l, const Matrix<S>& s, const Matrix<S>& t, const kshot::LabelVector& y, Matrix<S>& g) {
    return l.evaluate(s, t, y, g);
  }
};
struct DKD {
  static constexpr Index width = classes;
  template <class S>
  static kshot::DKDLoss<S> make() { return {}; }
  template <class L, class S>
  static S call(L& l, const Matrix<S>& s, const Matrix<S>& t, const kshot::LabelVector& y, Matrix<S>& g) {
    return l.evaluate(s, t, y, g);
  }
};
template <template <class> class Loss>
struct Features {
  static constexpr Index width = dim;
  template <class S>
  static Loss<S> make() { return {}; }
  template <class L, class S>
  static S call(L& l, const Matrix<S>& s, const Matrix<S>& t, const kshot::LabelVector&, Matrix<S>& g) {
    return l.evaluate(s, t, g);
  }
};

template <class Case>
std::string validate(const Inputs& in) {
  auto lf = Case::template make<float>();
  auto ld = Case::template make<double>();
  const Matrix<double> s = in.s.cast<double>(), t = in.t.cast<double>();
  Matrix<float> gf(in.s.rows(), in.s.cols());
  Matrix<double> gd(in.s.rows(), in.s.cols());
  const float vf = Case::call(lf, in.s, in.t, in.y, gf);
  const double vd = Case::call(ld, s, t, in.y, gd);
  if (!std::isfinite(vf) || !gf.allFinite()) return "non-finite float loss or gradient";
  if (std::abs(double(vf) - vd) > 1e-3 * std::abs(vd) + 1e-6)
    return "float loss " + std::to_string(vf) + " differs from double " + std::to_string(vd);
  const double gnorm = gd.norm(), gerr = (gf.cast<double>() - gd).norm();
  if (gerr > 1e-2 * gnorm + 1e-8)
    return "float gradient differs from double by " + std::to_string(gerr) + " (norm " + std::to_string(gnorm) + ")";
  return {};
}

template <class Case>
void bm_case(benchmark::State& state, int threads, std::string label) {
  state.SetLabel(label);
  kshot::ThreadCountGuard guard(threads);
  const Inputs in = make_inputs(batch, Case::width);
  std::string error;
  try {
    error = validate<Case>(in);
  } catch (const std::exception& ex) {
    error = ex.what();
  }
  if (!error.empty()) {
    state.SkipWithError(("validation failed: " + error).c_str());
    return;
  }
  auto loss = Case::template make<float>();
  Matrix<float> grad(in.s.rows(), in.s.cols());
  float value = Case::call(loss, in.s, in.t, in.y, grad);  // warm-up: buffers grow
  float* value_address = &value;
  for (auto _ : state) {
    value = Case::call(loss, in.s, in.t, in.y, grad);
    benchmark::DoNotOptimize(value_address);
    benchmark::DoNotOptimize(grad.data());
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(static_cast<std::int64_t>(state.iterations()) * batch);
}

template <class Case>
void add(const std::string& label) {
  for (int t : thread_counts)
    benchmark::RegisterBenchmark((label + "/omp:" + std::to_string(t)).c_str(), bm_case<Case>, t, label)
        ->UseRealTime()
        ->Unit(benchmark::kMicrosecond);
}

void register_all() {
  const std::string n = std::to_string(batch);
  add<KD>("distill_kd_f32_n" + n + "_c" + std::to_string(classes));
  add<DKD>("distill_dkd_f32_n" + n + "_c" + std::to_string(classes));
  add<Features<kshot::RKDLoss>>("distill_rkd_f32_n" + n + "_d" + std::to_string(dim));
  add<Features<kshot::SPLoss>>("distill_sp_f32_n" + n + "_d" + std::to_string(dim));
  add<Features<kshot::PKTLoss>>("distill_pkt_f32_n" + n + "_d" + std::to_string(dim));
}

}  // namespace

int main(int argc, char** argv) {
  return kshot::bench::run(argc, argv, thread_counts, register_all, [] {
    benchmark::AddCustomContext("distill_inputs", "standard normal student and teacher, uniform targets");
  });
}
