/**
 * @file kshot/nn/init.hpp
 * @brief Weight and bias initialisation schemes of kshot's layers (PyTorch's defaults, Xavier/Glorot,
 * Kaiming/He, zeros), drawn from a seeded RandomStream.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_NN_INIT_HPP
#define KSHOT_NN_INIT_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/random.hpp"
#include "kshot/core/types.hpp"

#include <cmath>
#include <string>

namespace kshot {

/**
 * @brief How a layer's weight (out x in, fan_in = in, fan_out = out) and bias are initialised.
 *
 * | scheme | weight | bias | torch equivalent |
 * |---|---|---|---|
 * | pytorch_default | U(-1/sqrt(fan_in), 1/sqrt(fan_in)) | U(-1/sqrt(fan_in), 1/sqrt(fan_in)) | torch.nn.Linear's reset_parameters() |
 * | xavier_uniform | U(-a, a), a = sqrt(6 / (fan_in + fan_out)) | 0 | nn.init.xavier_uniform_ (gain 1) |
 * | xavier_normal | N(0, 2 / (fan_in + fan_out)) | 0 | nn.init.xavier_normal_ (gain 1) |
 * | kaiming_uniform | U(-a, a), a = sqrt(6 / fan_in) | 0 | nn.init.kaiming_uniform_(nonlinearity='relu') |
 * | kaiming_normal | N(0, 2 / fan_in) | 0 | nn.init.kaiming_normal_(nonlinearity='relu') |
 * | zeros | 0 | 0 | nn.init.zeros_ |
 *
 * torch's init functions do not touch the bias; kshot sets it to zero for every scheme but pytorch_default
 * (the usual companion of Xavier and Kaiming weights).
 *
 * The numeric value of each enumerator is its code in model files (kshot/nn/serialize.hpp): never renumber.
 */
enum class Init : int {
  pytorch_default = 0,  ///< torch.nn.Linear's default: weight and bias U(-1/sqrt(fan_in), 1/sqrt(fan_in))
  xavier_uniform = 1,   ///< Glorot uniform, gain 1; bias 0
  xavier_normal = 2,    ///< Glorot normal, gain 1; bias 0
  kaiming_uniform = 3,  ///< He uniform for ReLU (gain sqrt(2), fan_in mode); bias 0
  kaiming_normal = 4,   ///< He normal for ReLU (gain sqrt(2), fan_in mode); bias 0
  zeros = 5             ///< every parameter 0
};

/// The enumerator's name, e.g. "kaiming_uniform" (for messages and documentation).
inline const char* to_string(Init init) noexcept {
  switch (init) {
    case Init::pytorch_default: return "pytorch_default";
    case Init::xavier_uniform: return "xavier_uniform";
    case Init::xavier_normal: return "xavier_normal";
    case Init::kaiming_uniform: return "kaiming_uniform";
    case Init::kaiming_normal: return "kaiming_normal";
    case Init::zeros: return "zeros";
  }
  return "unknown";
}

namespace detail {

/// True when `code` is the file code of an Init enumerator.
inline bool is_init_code(int code) noexcept { return code >= 0 && code <= 5; }

/// Throws unless fan_in and fan_out are at least 1.
inline void check_fans(Index fan_in, Index fan_out, const char* where) {
  KSHOT_CHECK(fan_in >= 1 && fan_out >= 1, where,
              cat("the weight must be at least 1 x 1, got out = ", fan_out, " x in = ", fan_in));
}

}  // namespace detail

/**
 * @brief Fills a weight matrix (out x in: one row per output unit, as torch.nn.Linear.weight) by `init`.
 *
 * Entries are drawn row by row from `rng`, so the same stream state gives the same weight on every platform.
 *
 * @tparam Scalar float or double; the bounds and standard deviations are computed in double.
 * @param[out] weight the out x in matrix to overwrite (fan_in = its columns, fan_out = its rows).
 * @param[in] init the scheme.
 * @param[in,out] rng the stream to draw from (advanced by out * in draws, none for zeros).
 * @throws std::invalid_argument if weight has no rows or no columns, or init is not an Init enumerator.
 * @note Allocates nothing.
 */
template <class Scalar>
void initialize_weight(RowMatrixRef<Scalar> weight, Init init, RandomStream& rng) {
  constexpr const char* where = "kshot::initialize_weight()";
  const Index fan_out = weight.rows(), fan_in = weight.cols();
  detail::check_fans(fan_in, fan_out, where);
  const double in = static_cast<double>(fan_in), out = static_cast<double>(fan_out);
  auto fill_uniform = [&](double bound) {
    const auto b = static_cast<Scalar>(bound);
    rng.fill_uniform(weight, -b, b);
  };
  auto fill_normal = [&](double stddev) {
    const auto s = static_cast<Scalar>(stddev);
    for (Index i = 0; i < fan_out; ++i)
      for (Index j = 0; j < fan_in; ++j) weight(i, j) = s * rng.normal<Scalar>();
  };
  switch (init) {
    case Init::pytorch_default:
      // kaiming_uniform_(a = sqrt(5)): gain sqrt(2 / (1 + 5)), bound gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in).
      fill_uniform(1.0 / std::sqrt(in));
      return;
    case Init::xavier_uniform: fill_uniform(std::sqrt(6.0 / (in + out))); return;
    case Init::xavier_normal: fill_normal(std::sqrt(2.0 / (in + out))); return;
    case Init::kaiming_uniform: fill_uniform(std::sqrt(6.0 / in)); return;
    case Init::kaiming_normal: fill_normal(std::sqrt(2.0 / in)); return;
    case Init::zeros: weight.setZero(); return;
  }
  detail::throw_invalid_argument(where, detail::cat("init has the unknown code ", static_cast<int>(init)));
}

/**
 * @brief Fills a bias vector by `init`: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for Init::pytorch_default, zeros
 * for every other scheme.
 *
 * @param[out] bias the bias (one entry per output unit).
 * @param[in] fan_in the number of inputs of the layer the bias belongs to.
 * @param[in] init the scheme.
 * @param[in,out] rng the stream to draw from (advanced by bias.size() draws for pytorch_default only).
 * @throws std::invalid_argument if fan_in < 1, or init is not an Init enumerator.
 * @note Allocates nothing.
 */
template <class Scalar>
void initialize_bias(VectorRef<Scalar> bias, Index fan_in, Init init, RandomStream& rng) {
  constexpr const char* where = "kshot::initialize_bias()";
  KSHOT_CHECK(fan_in >= 1, where, detail::cat("fan_in must be at least 1, got ", fan_in));
  KSHOT_CHECK(detail::is_init_code(static_cast<int>(init)), where,
              detail::cat("init has the unknown code ", static_cast<int>(init)));
  if (init == Init::pytorch_default) {
    const auto b = static_cast<Scalar>(1.0 / std::sqrt(static_cast<double>(fan_in)));
    for (Index i = 0; i < bias.size(); ++i) bias[i] = rng.uniform<Scalar>(-b, b);
  } else {
    bias.setZero();
  }
}

}  // namespace kshot

#endif  // KSHOT_NN_INIT_HPP
