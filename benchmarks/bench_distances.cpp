// SPDX-License-Identifier: MIT
// Pairwise distances: kshot's squared Euclidean and Euclidean D(A, B) against the bare Eigen GEMM of the same
// shape (the throughput limit of the norm trick). Peers outside this binary live in benchmarks/peers/.
//
// Every benchmark is named `<label>/omp:<threads>` and labelled `<label>`; compare.py keys its rows on the
// label (the case) and the omp:<threads> part. Labels: pairwise_<metric>_f32_<n>x<m>x<d> for kshot cases,
// eigen_gemm_f32_<n>x<m>x<d> for the GEMM yardstick.
//
// Defaults (overridable on the command line, the last flag wins): --benchmark_min_time=0.3,
// --benchmark_repetitions=5, --benchmark_display_aggregates_only=true. compare.py uses the median.

#include <kshot/core/random.hpp>
#include <kshot/core/threads.hpp>
#include <kshot/core/types.hpp>
#include <kshot/core/version.hpp>
#include <kshot/distances/metrics.hpp>
#include <kshot/distances/pairwise.hpp>

#include "common.hpp"

#include <benchmark/benchmark.h>
#include <Eigen/Core>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <map>
#include <set>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>


namespace {

using kshot::Index;
using Matrix = kshot::RowMatrixX<float>;

struct Shape {
  Index n, m, d;
};

constexpr Shape bench_shapes[] = {{4096, 4096, 128}, {75, 5, 640}, {100000, 100, 128}};
constexpr int thread_counts[] = {1, 2};
constexpr std::uint64_t data_seed = 20240611;

std::string shape_tag(const Shape& s) {
  return std::to_string(s.n) + "x" + std::to_string(s.m) + "x" + std::to_string(s.d);
}

double flops_per_call(const Shape& s) { return 2.0 * double(s.n) * double(s.m) * double(s.d); }

// Standard-normal rows, cached: Google Benchmark calls a benchmark function once per trial run and per
// repetition, and drawing 100000 x 128 normals each time would dominate the wall time of the suite.
const Matrix& random_rows(Index rows, Index d, std::uint64_t stream) {
  static std::map<std::tuple<Index, Index, std::uint64_t>, Matrix> cache;
  const auto key = std::make_tuple(rows, d, stream);
  auto it = cache.find(key);
  if (it == cache.end()) {
    Matrix m(rows, d);
    kshot::RandomStream rng(data_seed, stream);
    rng.fill_normal(m);
    it = cache.emplace(key, std::move(m)).first;
  }
  return it->second;
}

enum class Kind { squared_euclidean, euclidean, dot };

template <class Metric>
constexpr Kind kind_of() {
  return std::is_same_v<Metric, kshot::Euclidean> ? Kind::euclidean : Kind::squared_euclidean;
}

// Checks `out` against a direct double-precision computation at the four corners, the centre and 32 seeded
// random entries, and checks that every entry is finite. Returns an empty string when all is well.
std::string check_output(const Matrix& a, const Matrix& b, const Matrix& out, Kind kind) {
  if (out.rows() != a.rows() || out.cols() != b.rows()) return "output has the wrong shape";
  if (!out.allFinite()) return "output has a non-finite entry";
  const Index n = a.rows(), m = b.rows();
  std::vector<std::pair<Index, Index>> entries = {{0, 0}, {0, m - 1}, {n - 1, 0}, {n - 1, m - 1}, {n / 2, m / 2}};
  kshot::RandomStream rng(data_seed, 99);
  for (int k = 0; k < 32; ++k) entries.emplace_back(rng.uniform_index(n), rng.uniform_index(m));
  for (const auto& [i, j] : entries) {
    double sq = 0.0, dot = 0.0, na = 0.0, nb = 0.0;
    for (Index k = 0; k < a.cols(); ++k) {
      const double x = double(a(i, k)), y = double(b(j, k));
      sq += (x - y) * (x - y);
      dot += x * y;
      na += x * x;
      nb += y * y;
    }
    double got = double(out(i, j)), want = 0.0, tol = 0.0;
    switch (kind) {
      case Kind::squared_euclidean:
        want = sq;
        tol = 1e-4 * (na + nb) + 1e-6;
        break;
      case Kind::euclidean:  // compare squares: the tolerance of the norm trick is on the squared distance
        got *= got;
        want = sq;
        tol = 1e-4 * (na + nb) + 1e-6;
        break;
      case Kind::dot:
        want = dot;
        tol = 1e-4 * std::sqrt(na * nb) + 1e-6;
        break;
    }
    if (!(std::abs(got - want) <= tol))
      return "entry (" + std::to_string(i) + ", " + std::to_string(j) + ") is " + std::to_string(double(out(i, j))) +
             ", expected " + std::to_string(kind == Kind::euclidean ? std::sqrt(want) : want);
  }
  return {};
}

// check_output() once per benchmark (Google Benchmark calls the function once per trial run and repetition;
// the inputs and the computation are the same each time).
std::string validate(const std::string& benchmark, const Matrix& a, const Matrix& b, const Matrix& out, Kind kind) {
  static std::set<std::string> passed;
  if (passed.count(benchmark)) return {};
  std::string error = check_output(a, b, out, kind);
  if (error.empty()) passed.insert(benchmark);
  return error;
}

void set_gflops(benchmark::State& state, const Shape& s) {
  state.counters["GFLOP/s"] =
      benchmark::Counter(flops_per_call(s) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

// kshot::PairwiseDistance<float, Metric>::compute(a, b, out): engine and output made, warmed up and
// validated outside the timed loop.
template <class Metric>
void bm_pairwise(benchmark::State& state, Shape s, int threads, std::string label) {
  state.SetLabel(label);  // first, so that an error row carries it too
  kshot::ThreadCountGuard guard(threads);
  const Matrix& a = random_rows(s.n, s.d, 1);
  const Matrix& b = random_rows(s.m, s.d, 2);
  kshot::PairwiseDistance<float, Metric> engine;
  Matrix out(s.n, s.m);
  try {
    engine.compute(a, b, out);  // warm-up: scratch growth and first touch of `out`
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
    return;
  }
  const std::string error = validate(label + "/omp:" + std::to_string(threads), a, b, out, kind_of<Metric>());
  if (!error.empty()) {
    state.SkipWithError(("validation failed: " + error).c_str());
    return;
  }
  for (auto _ : state) {
    engine.compute(a, b, out);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  set_gflops(state, s);
}

// The bare product out = A B^T with Eigen, row-major like kshot's operands, with the same OpenMP threads:
// the limit the GEMM-based kernels are measured against.
void bm_gemm(benchmark::State& state, Shape s, int threads, std::string label) {
  state.SetLabel(label);  // first, so that an error row carries it too
  kshot::ThreadCountGuard guard(threads);
  const Matrix& a = random_rows(s.n, s.d, 1);
  const Matrix& b = random_rows(s.m, s.d, 2);
  Matrix out(s.n, s.m);
  out.noalias() = a * b.transpose();  // warm-up
  const std::string error = validate(label + "/omp:" + std::to_string(threads), a, b, out, Kind::dot);
  if (!error.empty()) {
    state.SkipWithError(("validation failed: " + error).c_str());
    return;
  }
  for (auto _ : state) {
    out.noalias() = a * b.transpose();
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  set_gflops(state, s);
}

template <class Fn>
void register_case(const std::string& label, Fn fn, const Shape& s, int threads) {
  const std::string name = label + "/omp:" + std::to_string(threads);
  benchmark::RegisterBenchmark(name.c_str(), fn, s, threads, label)
      ->UseRealTime()
      ->Unit(flops_per_call(s) < 1e8 ? benchmark::kMicrosecond : benchmark::kMillisecond);
}

void register_all() {
  for (const Shape& s : bench_shapes) {
    const std::string tag = "f32_" + shape_tag(s);
    for (int t : thread_counts) {
      register_case("pairwise_sqeuclidean_" + tag, bm_pairwise<kshot::SquaredEuclidean>, s, t);
      register_case("pairwise_euclidean_" + tag, bm_pairwise<kshot::Euclidean>, s, t);
      register_case("eigen_gemm_" + tag, bm_gemm, s, t);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  return kshot::bench::run(argc, argv, {std::begin(thread_counts), std::end(thread_counts)}, register_all, [] {
  });
}
