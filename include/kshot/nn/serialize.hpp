/**
 * @file kshot/nn/serialize.hpp
 * @brief The versioned binary model format of kshot (magic "KSHOTNN1") and the layer factory that rebuilds
 * every kshot layer from its type name and config() numbers. Sequential::save() and Sequential::load() use it.
 *
 * Format version 1, every number little-endian:
 *
 * | field | type | notes |
 * |---|---|---|
 * | magic | 8 bytes | "KSHOTNN1" |
 * | format version | u32 | 1 |
 * | scalar size | u32 | 4 (float) or 8 (double) |
 * | layer count | u64 | |
 * | per layer: type name length | u32 | 1 to 64 |
 * | per layer: type name | bytes | e.g. "Linear" |
 * | per layer: config count | u32 | at most 64 |
 * | per layer: config | f64 x count | Layer::config() |
 * | per layer: parameter count | u64 | must equal the rebuilt layer's num_parameters() |
 * | per layer: parameters | scalar x count | the layer's slice of the parameter vector |
 * | checksum | u64 | FNV-1a 64 of every byte before it |
 *
 * Every size is checked against the bytes the file still holds before anything is allocated; a model without
 * any parameter, whose widths no byte backs, may be at most model_max_unbacked_width (2^24) wide.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_NN_SERIALIZE_HPP
#define KSHOT_NN_SERIALIZE_HPP

#include "kshot/core/binary_io.hpp"
#include "kshot/core/check.hpp"
#include "kshot/core/types.hpp"
#include "kshot/nn/activations.hpp"
#include "kshot/nn/dropout.hpp"
#include "kshot/nn/init.hpp"
#include "kshot/nn/l2_normalize.hpp"
#include "kshot/nn/layer.hpp"
#include "kshot/nn/layer_norm.hpp"
#include "kshot/nn/linear.hpp"
#include "kshot/nn/residual.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <istream>
#include <limits>
#include <memory>
#include <ostream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace kshot {
namespace detail {

/// The model file's magic bytes.
inline constexpr char model_magic[8] = {'K', 'S', 'H', 'O', 'T', 'N', 'N', '1'};
/// The format version written by this kshot (and the only one it reads).
inline constexpr std::uint32_t model_format_version = 1;
/// Longest layer type name a model file may hold.
inline constexpr std::uint32_t model_max_name = 64;
/// Most config() numbers a layer may have in a model file.
inline constexpr std::uint32_t model_max_config = 64;
/// The widest model a file without any parameter may declare (Sequential::load() refuses wider ones). In a
/// model with parameters every width is at most the number of stored parameters, so the file's bytes bound it.
inline constexpr std::uint64_t model_max_unbacked_width = std::uint64_t(1) << 24;

/// Writes a model file: BinaryWriter with the parameter vector's scalars.
class ModelWriter : public BinaryWriter {
 public:
  using BinaryWriter::BinaryWriter;
  /// n scalars, little-endian.
  template <class Scalar>
  void scalars(const Scalar* p, Index n) {
    values(p, static_cast<std::size_t>(n));
  }
};

/// Reads a model file: BinaryReader with checked, converting reads of the stored parameters.
class ModelReader : public BinaryReader {
 public:
  using BinaryReader::BinaryReader;

  /**
   * @brief Appends n stored scalars of `size` bytes (4 or 8) to `out`, as Scalar, chunk by chunk (so that
   * memory grows only as the data actually arrives, whatever count a corrupt stream announces).
   *
   * Each value must be finite, and representable in Scalar when it is converted (double to float).
   * `what` names the values in messages ("parameters of layer 2 (Linear)").
   */
  template <class Scalar, class Allocator>
  void scalars(std::uint32_t size, std::uint64_t n, std::vector<Scalar, Allocator>& out, const std::string& what) {
    constexpr std::size_t chunk = 512;
    unsigned char buffer[chunk * 8];
    for (std::uint64_t start = 0; start < n; start += chunk) {
      const auto count = static_cast<std::size_t>(std::min<std::uint64_t>(chunk, n - start));
      bytes(buffer, count * size, what.c_str());
      for (std::size_t k = 0; k < count; ++k) {
        std::uint64_t u = 0;
        for (std::size_t b = 0; b < size; ++b) u |= static_cast<std::uint64_t>(buffer[k * size + b]) << (8 * b);
        double value;
        if (size == 4) {
          const auto bits = static_cast<std::uint32_t>(u);
          float f;
          std::memcpy(&f, &bits, 4);
          value = static_cast<double>(f);
        } else {
          std::memcpy(&value, &u, 8);
        }
        if (!std::isfinite(value)) fail(cat(what, ": value ", start + k, " is not finite (", value, ")"));
        if (std::abs(value) > static_cast<double>(std::numeric_limits<Scalar>::max()))
          fail(cat(what, ": value ", start + k, " (", value, ") is out of the range of float"));
        out.push_back(static_cast<Scalar>(value));
      }
    }
  }
};

/// Config entry k as a size in [1, 2^31): finite and integral.
inline Index config_size(const std::vector<double>& config, std::size_t k, const char* name) {
  constexpr const char* where = "kshot::make_layer()";
  const double v = config[k];
  KSHOT_CHECK(std::isfinite(v) && v == std::floor(v) && v >= 1 && v < 2147483648.0, where,
              cat(name, " must be an integer in [1, 2^31), got ", v));
  return static_cast<Index>(v);
}

/// Config entry k as a code in [0, max].
inline int config_code(const std::vector<double>& config, std::size_t k, int max, const char* name) {
  constexpr const char* where = "kshot::make_layer()";
  const double v = config[k];
  KSHOT_CHECK(std::isfinite(v) && v == std::floor(v) && v >= 0 && v <= max, where,
              cat(name, " must be an integer in [0, ", max, "], got ", v));
  return static_cast<int>(v);
}

/// Config entry k as a 32-bit unsigned half of a seed.
inline std::uint64_t config_u32(const std::vector<double>& config, std::size_t k, const char* name) {
  constexpr const char* where = "kshot::make_layer()";
  const double v = config[k];
  KSHOT_CHECK(std::isfinite(v) && v == std::floor(v) && v >= 0 && v <= 4294967295.0, where,
              cat(name, " must be an integer in [0, 2^32), got ", v));
  return static_cast<std::uint64_t>(v);
}

/**
 * @brief A new, unbound layer of the given type and configuration (the inverse of type_name() and config()).
 *
 * Knows "Linear" {in, out, bias, init}, "ReLU" / "GELU" / "Tanh" {dim}, "ResidualBlock" {dim, hidden, act,
 * init}, "LayerNorm" {dim, eps, affine}, "L2Normalize" {dim, eps} and "Dropout" {dim, p, seed low 32 bits,
 * seed high 32 bits}.
 *
 * @throws std::invalid_argument for an unknown type name, a config of the wrong length, or a value the layer
 * refuses (sizes must be integers >= 1, flags 0 or 1, codes of known enumerators; the layer's constructor
 * checks the rest).
 */
template <class Scalar>
std::unique_ptr<Layer<Scalar>> make_layer(const std::string& type_name, const std::vector<double>& config) {
  constexpr const char* where = "kshot::make_layer()";
  auto expect = [&](std::size_t n) {
    KSHOT_CHECK(config.size() == n, where,
                cat("a ", type_name, " layer has ", n, " config numbers, got ", config.size()));
  };
  if (type_name == "Linear") {
    expect(4);
    return std::make_unique<Linear<Scalar>>(config_size(config, 0, "Linear in"), config_size(config, 1, "Linear out"),
                                            config_code(config, 2, 1, "Linear bias") == 1,
                                            static_cast<Init>(config_code(config, 3, 5, "Linear init")));
  }
  if (type_name == "ReLU" || type_name == "GELU" || type_name == "Tanh") {
    expect(1);
    const Index dim = config_size(config, 0, "activation dim");
    if (type_name == "ReLU") return std::make_unique<ReLU<Scalar>>(dim);
    if (type_name == "GELU") return std::make_unique<GELU<Scalar>>(dim);
    return std::make_unique<Tanh<Scalar>>(dim);
  }
  if (type_name == "ResidualBlock") {
    expect(4);
    return std::make_unique<ResidualBlock<Scalar>>(
        config_size(config, 0, "ResidualBlock dim"), config_size(config, 1, "ResidualBlock hidden"),
        static_cast<Activation>(config_code(config, 2, 2, "ResidualBlock act")),
        static_cast<Init>(config_code(config, 3, 5, "ResidualBlock init")));
  }
  if (type_name == "LayerNorm") {
    expect(3);
    return std::make_unique<LayerNorm<Scalar>>(config_size(config, 0, "LayerNorm dim"), config[1],
                                               config_code(config, 2, 1, "LayerNorm affine") == 1);
  }
  if (type_name == "L2Normalize") {
    expect(2);
    return std::make_unique<L2Normalize<Scalar>>(config_size(config, 0, "L2Normalize dim"), config[1]);
  }
  if (type_name == "Dropout") {
    expect(4);
    const std::uint64_t seed = config_u32(config, 2, "Dropout seed low half") |
                               (config_u32(config, 3, "Dropout seed high half") << 32);
    return std::make_unique<Dropout<Scalar>>(config_size(config, 0, "Dropout dim"), config[1], seed);
  }
  throw_invalid_argument(where, cat("unknown layer type \"", type_name,
                                    "\" (known: Linear, ReLU, GELU, Tanh, ResidualBlock, LayerNorm, L2Normalize, "
                                    "Dropout)"));
}

}  // namespace detail

/// The layer factory that Sequential::load uses, public for user code that rebuilds a layer from the type name and
/// config() of a saved one (detail::make_layer()).
using detail::make_layer;

}  // namespace kshot

#endif  // KSHOT_NN_SERIALIZE_HPP
