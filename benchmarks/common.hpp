/**
 * @file benchmarks/common.hpp
 * @brief What every kshot benchmark binary shares: the context recorded with each run (compiler, flags,
 * Eigen, OpenMP) and a main() with the harness's default flags.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_BENCHMARKS_COMMON_HPP
#define KSHOT_BENCHMARKS_COMMON_HPP

#include <kshot/core/config.hpp>
#include <kshot/core/version.hpp>

#include <benchmark/benchmark.h>
#include <Eigen/Core>

#if KSHOT_HAS_OPENMP
#include <omp.h>
#endif

#include <cstdlib>
#include <string>
#include <vector>

#ifndef KSHOT_BENCH_BUILD_FLAGS
#define KSHOT_BENCH_BUILD_FLAGS "unknown"
#endif
#ifndef KSHOT_BENCH_COMPILER
#define KSHOT_BENCH_COMPILER "unknown"
#endif
#ifndef KSHOT_BENCH_BUILD_TYPE
#define KSHOT_BENCH_BUILD_TYPE "unknown"
#endif

namespace kshot {
namespace bench {

inline std::string env_or(const char* name, const char* fallback) {
  const char* value = std::getenv(name);
  return value ? value : fallback;
}

/// Records the build and threading context in the results' JSON (read by benchmarks/compare.py).
inline void add_context(const std::vector<int>& thread_counts) {
  benchmark::AddCustomContext("kshot_version", KSHOT_VERSION_STRING);
  benchmark::AddCustomContext("compiler", std::string(KSHOT_BENCH_COMPILER) + " (" + __VERSION__ + ")");
  benchmark::AddCustomContext("build_type", KSHOT_BENCH_BUILD_TYPE);
  benchmark::AddCustomContext("build_flags", KSHOT_BENCH_BUILD_FLAGS);
  benchmark::AddCustomContext("eigen_version", std::to_string(EIGEN_WORLD_VERSION) + "." +
                                                   std::to_string(EIGEN_MAJOR_VERSION) + "." +
                                                   std::to_string(EIGEN_MINOR_VERSION));
  benchmark::AddCustomContext("eigen_simd", Eigen::SimdInstructionSetsInUse());
#if KSHOT_HAS_OPENMP
  benchmark::AddCustomContext("openmp", std::to_string(_OPENMP));
  benchmark::AddCustomContext("omp_num_procs", std::to_string(omp_get_num_procs()));
#else
  benchmark::AddCustomContext("openmp", "off");
#endif
  benchmark::AddCustomContext("OMP_NUM_THREADS", env_or("OMP_NUM_THREADS", "unset"));
  benchmark::AddCustomContext("OMP_WAIT_POLICY", env_or("OMP_WAIT_POLICY", "unset"));
  benchmark::AddCustomContext("OMP_PROC_BIND", env_or("OMP_PROC_BIND", "unset"));
  std::string threads;
  for (int t : thread_counts) threads += (threads.empty() ? "" : ",") + std::to_string(t);
  benchmark::AddCustomContext("thread_counts", threads);
}

/**
 * @brief The body of every benchmark main(): the harness's defaults (min time 0.3 s, 5 repetitions,
 * aggregates only), then the caller's flags, which win; `register_all` registers the cases and
 * `context` adds the binary's own context after the common one.
 */
template <class Register, class Context>
int run(int argc, char** argv, const std::vector<int>& thread_counts, Register&& register_all, Context&& context) {
  static char min_time[] = "--benchmark_min_time=0.3";
  static char repetitions[] = "--benchmark_repetitions=5";
  static char aggregates[] = "--benchmark_display_aggregates_only=true";
  std::vector<char*> args = {argv[0], min_time, repetitions, aggregates};
  for (int i = 1; i < argc; ++i) args.push_back(argv[i]);
  int count = static_cast<int>(args.size());
  args.push_back(nullptr);

  register_all();
  benchmark::Initialize(&count, args.data());
  if (benchmark::ReportUnrecognizedArguments(count, args.data())) return 1;
  add_context(thread_counts);
  context();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace bench
}  // namespace kshot

#endif  // KSHOT_BENCHMARKS_COMMON_HPP
