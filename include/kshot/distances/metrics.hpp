/**
 * @file kshot/distances/metrics.hpp
 * @brief The metric policies: squared Euclidean, Euclidean, cosine similarity, cosine distance, inner
 * product and L1 (Manhattan), each with its formula for one pair of rows.
 *
 * A metric policy is an empty tag type passed by value (`kshot::SquaredEuclidean{}`). The pairwise
 * kernels in pairwise.hpp read its static members:
 *  - `name`: a stable lower-case name;
 *  - `is_similarity`: true when larger means closer (cosine similarity, inner product);
 *  - `uses_gemm`: true when the pairwise matrix is one matrix product plus a cheap elementwise pass.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_DISTANCES_METRICS_HPP
#define KSHOT_DISTANCES_METRICS_HPP

#include "kshot/core/types.hpp"

#include <algorithm>
#include <cmath>
#include <type_traits>

namespace kshot {

/// @f$ d(a, b) = \lVert a - b \rVert_2^2 @f$. A distance (smaller is closer); never "L2" in kshot's names.
struct SquaredEuclidean {
  static constexpr const char* name = "squared_euclidean";
  static constexpr bool is_similarity = false;
  static constexpr bool uses_gemm = true;
};

/// @f$ d(a, b) = \lVert a - b \rVert_2 @f$. Its gradient is taken as zero where d = 0 (as torch.cdist does).
struct Euclidean {
  static constexpr const char* name = "euclidean";
  static constexpr bool is_similarity = false;
  static constexpr bool uses_gemm = true;
};

/**
 * @brief @f$ s(a, b) = \frac{a \cdot b}{\lVert a \rVert \lVert b \rVert} @f$, clamped to [-1, 1].
 *
 * A similarity (larger is closer). A zero vector has similarity 0 with every vector, itself included,
 * and receives a zero gradient.
 */
struct CosineSimilarity {
  static constexpr const char* name = "cosine_similarity";
  static constexpr bool is_similarity = true;
  static constexpr bool uses_gemm = true;
};

/// @f$ d(a, b) = 1 - s(a, b) @f$ with s the cosine similarity (so a zero vector is at distance 1 from all).
struct CosineDistance {
  static constexpr const char* name = "cosine_distance";
  static constexpr bool is_similarity = false;
  static constexpr bool uses_gemm = true;
};

/// @f$ s(a, b) = a \cdot b @f$. A similarity (larger is closer).
struct InnerProduct {
  static constexpr const char* name = "inner_product";
  static constexpr bool is_similarity = true;
  static constexpr bool uses_gemm = true;
};

/// @f$ d(a, b) = \sum_k |a_k - b_k| @f$ (L1, Manhattan). Its gradient uses sign(0) = 0.
struct Manhattan {
  static constexpr const char* name = "manhattan";
  static constexpr bool is_similarity = false;
  static constexpr bool uses_gemm = false;
};

/// True for the metric policies above.
template <class Metric>
inline constexpr bool is_metric_v =
    std::is_same_v<Metric, SquaredEuclidean> || std::is_same_v<Metric, Euclidean> ||
    std::is_same_v<Metric, CosineSimilarity> || std::is_same_v<Metric, CosineDistance> ||
    std::is_same_v<Metric, InnerProduct> || std::is_same_v<Metric, Manhattan>;

/**
 * @brief The metric between two vectors (rows or columns of any Eigen expression of the same length).
 *
 * Computed directly (no norm trick), so it is the reference the pairwise kernels are tested against.
 * @tparam Metric one of the metric policies.
 */
template <class Metric, class DerivedA, class DerivedB>
typename DerivedA::Scalar distance(const Eigen::MatrixBase<DerivedA>& a, const Eigen::MatrixBase<DerivedB>& b,
                                   Metric = {}) {
  static_assert(is_metric_v<Metric>, "kshot::distance<Metric>: Metric must be one of kshot's metric policies");
  using Scalar = typename DerivedA::Scalar;
  static_assert(std::is_same_v<Scalar, typename DerivedB::Scalar>, "kshot::distance: a and b must share a scalar type");
  if constexpr (std::is_same_v<Metric, SquaredEuclidean>) {
    return (a - b).squaredNorm();
  } else if constexpr (std::is_same_v<Metric, Euclidean>) {
    return (a - b).norm();
  } else if constexpr (std::is_same_v<Metric, InnerProduct>) {
    return a.dot(b);
  } else if constexpr (std::is_same_v<Metric, Manhattan>) {
    return (a - b).cwiseAbs().sum();
  } else {
    const Scalar na = a.norm();
    const Scalar nb = b.norm();
    Scalar s = (na > Scalar(0) && nb > Scalar(0)) ? a.dot(b) / (na * nb) : Scalar(0);
    s = std::clamp(s, Scalar(-1), Scalar(1));
    if constexpr (std::is_same_v<Metric, CosineSimilarity>) {
      return s;
    } else {
      return Scalar(1) - s;
    }
  }
}

}  // namespace kshot

#endif  // KSHOT_DISTANCES_METRICS_HPP
