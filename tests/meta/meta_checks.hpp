/**
 * @file tests/meta/meta_checks.hpp
 * @brief Helpers shared by the meta-learning tests: central differences of a function of a vector, and a smooth
 * MLP away from its initialisation.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_TESTS_META_META_CHECKS_HPP
#define KSHOT_TESTS_META_META_CHECKS_HPP

#include <kshot/core/random.hpp>
#include <kshot/core/types.hpp>
#include <kshot/nn/sequential.hpp>

#include <cstdint>
#include <functional>
#include <vector>

namespace kshot {
namespace test {

/// Central differences of a scalar function of a vector.
inline VectorX<double> numeric_vector_gradient(const std::function<double(const VectorX<double>&)>& f,
                                               const VectorX<double>& at, double h = 1e-6) {
  VectorX<double> g(at.size());
  VectorX<double> probe = at;
  for (Index i = 0; i < at.size(); ++i) {
    probe[i] = at[i] + h;
    const double up = f(probe);
    probe[i] = at[i] - h;
    const double down = f(probe);
    probe[i] = at[i];
    g[i] = (up - down) / (2 * h);
  }
  return g;
}

/// A smooth MLP (tanh) with its parameters perturbed away from the initialisation.
inline Sequential<double> smooth_mlp(const std::vector<Index>& dims, std::uint64_t seed) {
  Sequential<double> model = make_mlp<double>(dims, Activation::tanh, Init::pytorch_default, seed);
  RandomStream rng(seed, 99);
  for (Index i = 0; i < model.num_parameters(); ++i) model.parameters()[i] += 0.2 * rng.normal<double>();
  return model;
}

}  // namespace test
}  // namespace kshot

#endif  // KSHOT_TESTS_META_META_CHECKS_HPP
