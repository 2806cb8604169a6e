/**
 * @file kshot/meta/parameter_range.hpp
 * @brief ParameterRange: the slice of a model's flat parameter vector that a meta-learner adapts in its inner
 * loop (everything for MAML, the head for ANIL), and head_range() to find a model's head.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_META_PARAMETER_RANGE_HPP
#define KSHOT_META_PARAMETER_RANGE_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/types.hpp"
#include "kshot/nn/sequential.hpp"

namespace kshot {

/**
 * @brief A contiguous slice [begin, begin + size) of a model's parameters() (layer slices are contiguous and
 * in layer order, see Sequential::parameter_offset()).
 *
 * The default, {0, -1}, is every parameter: a negative size means "to the end".
 */
struct ParameterRange {
  Index begin = 0;  ///< first adapted parameter, >= 0
  Index size = -1;  ///< number of adapted parameters; negative: all from begin to the end

  /**
   * @brief The size for a model of `num_parameters` parameters (size, or num_parameters - begin when negative).
   * @param where the public call, for the message.
   * @throws std::invalid_argument if begin < 0, begin > num_parameters, or begin + size > num_parameters.
   */
  Index resolve(Index num_parameters, const char* where) const {
    KSHOT_CHECK(
        begin >= 0 && begin <= num_parameters, where,
        detail::cat("the adapted range begins at ", begin, " but the model has ", num_parameters, " parameters"));
    const Index n = size < 0 ? num_parameters - begin : size;
    KSHOT_CHECK(begin + n <= num_parameters, where,
                detail::cat("the adapted range [", begin, ", ", begin + n, ") ends beyond the model's ", num_parameters,
                            " parameters"));
    return n;
  }
};

/**
 * @brief The parameters of a model's last `layers` layers that have parameters (activations are skipped):
 * ANIL's head. For make_mlp({d, h, h, c}) and layers = 1 this is the last Linear's [W, b].
 * @param model the model.
 * @param layers how many parameterised layers, counted from the end, form the head (>= 1).
 * @throws std::invalid_argument if layers < 1 or the model has fewer than `layers` layers with parameters.
 */
template <class Scalar>
ParameterRange head_range(const Sequential<Scalar>& model, Index layers = 1) {
  constexpr const char* where = "kshot::head_range()";
  KSHOT_CHECK(layers >= 1, where, detail::cat("layers must be >= 1, got ", layers));
  Index found = 0;
  for (Index i = model.size(); i-- > 0;) {
    if (model.layer(i).num_parameters() == 0) continue;
    if (++found == layers) {
      const Index begin = model.parameter_offset(i);
      return ParameterRange{begin, model.num_parameters() - begin};
    }
  }
  detail::throw_invalid_argument(
      where, detail::cat("layers is ", layers, " but the model has only ", found, " layers with parameters"));
}

}  // namespace kshot

#endif  // KSHOT_META_PARAMETER_RANGE_HPP
