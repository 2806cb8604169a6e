/**
 * @file kshot/distances/pairwise.hpp
 * @brief Pairwise metric matrices D(A, B) and D(A, A), their backward passes, and a chunked form whose
 * memory stays bounded.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_DISTANCES_PAIRWISE_HPP
#define KSHOT_DISTANCES_PAIRWISE_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/config.hpp"
#include "kshot/core/gemm.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"
#include "kshot/core/workspace.hpp"
#include "kshot/distances/metrics.hpp"

#include <algorithm>
#include <cmath>
#include <type_traits>

namespace kshot {
namespace detail {

/// Per-metric pieces of the GEMM-based kernels (see docs/distances.md for the derivations).
template <class Metric, class Scalar>
struct GemmMetric {
  static constexpr bool squared_norm_stat = std::is_same_v<Metric, SquaredEuclidean> || std::is_same_v<Metric, Euclidean>;
  static constexpr bool inverse_norm_stat = std::is_same_v<Metric, CosineSimilarity> || std::is_same_v<Metric, CosineDistance>;
  static constexpr bool has_stat = squared_norm_stat || inverse_norm_stat;
  /// Scale folded into the GEMM: -2 a.b for the norm trick, a.b otherwise.
  static constexpr Scalar alpha = squared_norm_stat ? Scalar(-2) : Scalar(1);

  /// The per-row statistic: squared norm (Euclidean family), inverse norm or 0 (cosine family).
  template <class Row>
  static Scalar stat(const Row& row) {
    const Scalar sq = row.squaredNorm();
    if constexpr (squared_norm_stat) {
      return sq;
    } else {
      return sq > Scalar(0) ? Scalar(1) / std::sqrt(sq) : Scalar(0);
    }
  }

  /// Turns row i of a tile of alpha * A B^T into metric values.
  template <class OutRow, class StatsB>
  static void finish_row(OutRow&& o, Scalar stat_a, const StatsB& stats_b) {
    if constexpr (squared_norm_stat) {
      o = (o.array() + stats_b.array() + stat_a).max(Scalar(0));
      if constexpr (std::is_same_v<Metric, Euclidean>) o = o.array().sqrt();
    } else if constexpr (inverse_norm_stat) {
      o = (o.array() * stats_b.array() * stat_a).max(Scalar(-1)).min(Scalar(1));
      if constexpr (std::is_same_v<Metric, CosineDistance>) o = Scalar(1) - o.array();
    }
  }

  /// The exact value of d(a, a) given a's statistic.
  static Scalar self_value(Scalar stat_a, Scalar computed) {
    if constexpr (squared_norm_stat) {
      (void)stat_a; (void)computed;
      return Scalar(0);
    } else if constexpr (std::is_same_v<Metric, CosineSimilarity>) {
      (void)computed;
      return stat_a > Scalar(0) ? Scalar(1) : Scalar(0);
    } else if constexpr (std::is_same_v<Metric, CosineDistance>) {
      (void)computed;
      return stat_a > Scalar(0) ? Scalar(0) : Scalar(1);
    } else {
      (void)stat_a;
      return computed;
    }
  }

  // Backward: with G = dL/dD, every GEMM metric has dL/dA = H B + diag(r) A, where
  //   H_ij = coef(g_ij, d_ij) * p(stat_a_i) * p(stat_b_j)  and  r_i = rscale(stat_a_i) * sum_j q(g_ij, d_ij),
  // and symmetrically dL/dB = H^T A + diag(r_b) B.
  static constexpr bool needs_q = !std::is_same_v<Metric, InnerProduct>;

  static Scalar coef(Scalar g, Scalar d) {
    if constexpr (std::is_same_v<Metric, SquaredEuclidean>) {
      (void)d;
      return Scalar(-2) * g;
    } else if constexpr (std::is_same_v<Metric, Euclidean>) {
      return d > Scalar(0) ? -g / d : Scalar(0);
    } else if constexpr (std::is_same_v<Metric, CosineDistance>) {
      (void)d;
      return -g;
    } else {
      (void)d;
      return g;
    }
  }
  static Scalar q(Scalar g, Scalar d) {
    if constexpr (std::is_same_v<Metric, SquaredEuclidean>) {
      (void)d;
      return Scalar(2) * g;
    } else if constexpr (std::is_same_v<Metric, Euclidean>) {
      return d > Scalar(0) ? g / d : Scalar(0);
    } else if constexpr (std::is_same_v<Metric, CosineSimilarity>) {
      return g * d;
    } else if constexpr (std::is_same_v<Metric, CosineDistance>) {
      return -g * (Scalar(1) - d);
    } else {
      (void)g; (void)d;
      return Scalar(0);
    }
  }
  static Scalar p(Scalar stat) {
    if constexpr (inverse_norm_stat) {
      return stat;
    } else {
      (void)stat;
      return Scalar(1);
    }
  }
  static Scalar rscale(Scalar stat) {
    if constexpr (inverse_norm_stat) {
      return -stat * stat;
    } else {
      (void)stat;
      return Scalar(1);
    }
  }
};

/// Throws naming the first non-finite entry of row `i` of `m` (called when a row statistic is not finite).
template <class Matrix>
void check_row_finite(const Matrix& m, Index i, const char* where, const char* name) {
  for (Index j = 0; j < m.cols(); ++j)
    if (!std::isfinite(m(i, j)))
      throw_invalid_argument(where, cat(name, " has a non-finite value (", m(i, j), ") at row ", i, ", column ", j));
  throw_invalid_argument(where, cat(name, " row ", i, " is finite but its squared norm overflows ",
                                    "the scalar type; rescale the data"));
}

inline Index ceil_div(Index a, Index b) { return (a + b - 1) / b; }

}  // namespace detail

/**
 * @brief Pairwise metric matrices and their backward passes, with reusable scratch memory.
 *
 * `compute(A, B, D)` fills the n x m matrix @f$ D_{ij} = d(a_i, b_j) @f$ for the rows of A (n x d) and
 * B (m x d). For every metric but L1 it is one matrix product (Eigen's GEMM) plus an elementwise pass,
 * done tile by tile while the tile is in cache (squared Euclidean and Euclidean with fewer than 16 rows
 * in B subtract directly instead, which is exact and faster for such thin products):
 *  - squared Euclidean: @f$ \lVert a\rVert^2 + \lVert b\rVert^2 - 2 a\cdot b @f$, clamped at zero;
 *  - Euclidean: the square root of that;
 *  - cosine: @f$ a\cdot b / (\lVert a\rVert\lVert b\rVert) @f$, clamped to [-1, 1] (zero vectors give 0);
 *  - inner product: @f$ a\cdot b @f$;
 *  - L1: a vectorised row loop.
 *
 * `compute_self(A, D)` returns a symmetric D(A, A) with an exact diagonal (0 for distances, 1 for the
 * cosine similarity of a non-zero row) and does half the products.
 *
 * `backward(A, B, D, G, dA, dB)` turns @f$ G = \partial L / \partial D @f$ into
 * @f$ \partial L/\partial A @f$ and @f$ \partial L/\partial B @f$ with two GEMMs.
 *
 * @tparam Scalar float or double.
 * @tparam Metric SquaredEuclidean, Euclidean, CosineSimilarity, CosineDistance, InnerProduct or Manhattan.
 *
 * @note Parallel over row panels of the output (one OpenMP region per call); each product inside runs
 * single-threaded, so results are bitwise identical for every thread count.
 * @note Scratch memory (row statistics; n x m for backward) grows to the largest shape seen and is
 * reused; a loop with fixed shapes allocates nothing in kshot's buffers after the first call (Eigen's
 * GEMM may still allocate its packing buffers for large products).
 * @note Not thread-safe: use one object per thread.
 * @note Column-major inputs are copied into row-major temporaries when they bind.
 */
template <class Scalar, class Metric = SquaredEuclidean>
class PairwiseDistance {
  static_assert(is_supported_scalar_v<Scalar>, "kshot::PairwiseDistance<Scalar, Metric>: Scalar must be float or double");
  static_assert(is_metric_v<Metric>, "kshot::PairwiseDistance<Scalar, Metric>: Metric must be one of kshot's metric policies");
  using Gemm = detail::GemmMetric<Metric, Scalar>;

 public:
  using metric_type = Metric;

  /// Pre-sizes scratch memory for n x m outputs (and their backward).
  void reserve(Index n, Index m) {
    ws_.reserve(slot_stats_a, n);
    ws_.reserve(slot_stats_b, m);
    ws_.reserve(slot_h, n * m);
    ws_.reserve(slot_row_q, n);
    ws_.reserve(slot_col_q, m);
  }

  /**
   * @brief D(A, B): out(i, j) = d(a_i, b_j).
   * @param[in] a n x d.
   * @param[in] b m x d.
   * @param[out] out n x m, overwritten.
   * @throws std::invalid_argument if a and b differ in columns, d = 0, out is not n x m, or an input is
   * not finite.
   */
  void compute(ConstRowMatrixRef<Scalar> a, ConstRowMatrixRef<Scalar> b, RowMatrixRef<Scalar> out) {
    constexpr const char* where = "kshot::PairwiseDistance::compute()";
    check_inputs(a, b, where);
    detail::check_shape(out, a.rows(), b.rows(), where, "out");
    const Index n = a.rows(), m = b.rows(), d = a.cols();
    if (n == 0 || m == 0) return;
    const bool parallel = detail::worth_parallel(n, double(n) * double(m) * double(d));

    if constexpr (Gemm::squared_norm_stat) {
      if (m < direct_max_cols) {
        // Few columns (a handful of prototypes): a GEMM this thin runs far below its peak and the norm
        // pass costs as much as the product, so subtract directly (exact, and about twice as fast).
        detail::check_finite(b, where, "b");
        detail::parallel_for(detail::ceil_div(n, config::pairwise_tile_rows), parallel, [&](Index panel) {
          const Index r0 = panel * config::pairwise_tile_rows, r1 = std::min(n, r0 + config::pairwise_tile_rows);
          for (Index i = r0; i < r1; ++i) {
            const auto ai = a.row(i);
            for (Index j = 0; j < m; ++j) out(i, j) = (ai - b.row(j)).squaredNorm();
            if (KSHOT_UNLIKELY(!std::isfinite(out(i, 0)))) detail::check_row_finite(a, i, where, "a");
            if constexpr (std::is_same_v<Metric, Euclidean>) out.row(i) = out.row(i).array().sqrt();
          }
        });
        return;
      }
    }
    if constexpr (Metric::uses_gemm) {
      auto stats_b = ws_.vector(slot_stats_b, m);
      row_stats(b, stats_b, parallel, where, "b");
      auto stats_a = ws_.vector(slot_stats_a, n);
      const Index tr = config::pairwise_tile_rows, tc = config::pairwise_tile_cols;
      detail::parallel_for(detail::ceil_div(n, tr), parallel, [&](Index panel) {
        const Index r0 = panel * tr, nr = std::min(tr, n - r0);
        const auto a_panel = a.middleRows(r0, nr);
        panel_stats(a, r0, nr, stats_a, where, "a");
        for (Index c0 = 0; c0 < m; c0 += tc) {
          const Index nc = std::min(tc, m - c0);
          auto tile = out.block(r0, c0, nr, nc);
          detail::gemm_assign(tile, a_panel, b.middleRows(c0, nc).transpose(), Scalar(Gemm::alpha));
          if constexpr (Gemm::has_stat) {
            const auto sb = stats_b.segment(c0, nc).transpose();
            for (Index i = 0; i < nr; ++i) Gemm::finish_row(tile.row(i), stats_a[r0 + i], sb);
          }
        }
      });
    } else {
      detail::check_finite(b, where, "b");
      detail::parallel_for(detail::ceil_div(n, l1_panel_rows), parallel, [&](Index panel) {
        const Index r0 = panel * l1_panel_rows, nr = std::min(l1_panel_rows, n - r0);
        detail::check_finite(a.middleRows(r0, nr), where, "a");
        l1_block(a, r0, nr, b, out);
      });
    }
  }

  /**
   * @brief D(A, A), symmetric, with an exact diagonal.
   *
   * The diagonal is exactly 0 for the distances (cosine distance: 1 for a zero row), exactly 1 for the
   * cosine similarity of a non-zero row (0 for a zero row), and a.a for the inner product.
   * @param[in] a n x d.
   * @param[out] out n x n, overwritten.
   * @throws std::invalid_argument as compute().
   */
  void compute_self(ConstRowMatrixRef<Scalar> a, RowMatrixRef<Scalar> out) {
    constexpr const char* where = "kshot::PairwiseDistance::compute_self()";
    check_inputs(a, a, where);
    detail::check_shape(out, a.rows(), a.rows(), where, "out");
    const Index n = a.rows(), d = a.cols();
    if (n == 0) return;
    const bool parallel = detail::worth_parallel(n, 0.5 * double(n) * double(n) * double(d));

    if constexpr (Metric::uses_gemm) {
      auto stats = ws_.vector(slot_stats_a, n);
      row_stats(a, stats, parallel, where, "a");
      const Index t = config::pairwise_tile_rows;
      const Index panels = detail::ceil_div(n, t);
      // Panel p computes the tiles (p, q >= p) and mirrors them into (q, p): every block of `out` is
      // written by exactly one panel. Work shrinks with p, so panels are handed out dynamically.
      detail::parallel_for(panels, parallel, [&](Index p) {
        const Index r0 = p * t, nr = std::min(t, n - r0);
        const auto a_panel = a.middleRows(r0, nr);
        for (Index q = p; q < panels; ++q) {
          const Index c0 = q * t, nc = std::min(t, n - c0);
          auto tile = out.block(r0, c0, nr, nc);
          detail::gemm_assign(tile, a_panel, a.middleRows(c0, nc).transpose(), Scalar(Gemm::alpha));
          if constexpr (Gemm::has_stat) {
            const auto sb = stats.segment(c0, nc).transpose();
            for (Index i = 0; i < nr; ++i) Gemm::finish_row(tile.row(i), stats[r0 + i], sb);
          }
          if (q == p) {
            for (Index i = 0; i < nr; ++i) {
              tile(i, i) = Gemm::self_value(stats[r0 + i], tile(i, i));
              for (Index j = i + 1; j < nr; ++j) tile(j, i) = tile(i, j);
            }
          } else {
            out.block(c0, r0, nc, nr) = tile.transpose();
          }
        }
      }, /*dynamic=*/true);
    } else {
      detail::check_finite(a, where, "a");
      detail::parallel_for(detail::ceil_div(n, l1_panel_rows), parallel, [&](Index panel) {
        const Index r0 = panel * l1_panel_rows, nr = std::min(l1_panel_rows, n - r0);
        l1_block(a, r0, nr, a, out);
      });
    }
  }

  /**
   * @brief Backward pass of compute(): given G = dL/dD, writes dL/dA and dL/dB.
   *
   * @param[in] a n x d, as given to compute().
   * @param[in] b m x d, as given to compute().
   * @param[in] distances n x m, the output of compute() (Euclidean and cosine read it; others check its shape).
   * @param[in] grad_distances n x m, dL/dD.
   * @param[out] grad_a n x d, overwritten with dL/dA.
   * @param[out] grad_b m x d, overwritten with dL/dB.
   * @note Euclidean: zero gradient through pairs at distance 0. Cosine: zero gradient for zero rows.
   * L1: sign(0) = 0.
   * @throws std::invalid_argument on shape mismatches or non-finite grad_distances.
   */
  void backward(ConstRowMatrixRef<Scalar> a, ConstRowMatrixRef<Scalar> b, ConstRowMatrixRef<Scalar> distances,
                ConstRowMatrixRef<Scalar> grad_distances, RowMatrixRef<Scalar> grad_a, RowMatrixRef<Scalar> grad_b) {
    constexpr const char* where = "kshot::PairwiseDistance::backward()";
    check_inputs(a, b, where);
    const Index n = a.rows(), m = b.rows(), d = a.cols();
    detail::check_shape(distances, n, m, where, "distances");
    detail::check_shape(grad_distances, n, m, where, "grad_distances");
    detail::check_shape(grad_a, n, d, where, "grad_a");
    detail::check_shape(grad_b, m, d, where, "grad_b");
    detail::check_finite(grad_distances, where, "grad_distances");
    if (n == 0 || m == 0) {
      grad_a.setZero();
      grad_b.setZero();
      return;
    }
    const bool parallel = detail::worth_parallel(std::max(n, m), double(n) * double(m) * double(d));

    if constexpr (Metric::uses_gemm) {
      auto stats_a = ws_.vector(slot_stats_a, n);
      auto stats_b = ws_.vector(slot_stats_b, m);
      if constexpr (Gemm::inverse_norm_stat) {
        row_stats(a, stats_a, parallel, where, "a");
        row_stats(b, stats_b, parallel, where, "b");
      }
      auto h = ws_.matrix(slot_h, n, m);
      auto row_q = ws_.vector(slot_row_q, n);
      auto col_q = ws_.vector(slot_col_q, m);
      build_h(grad_distances, distances, stats_a, stats_b, h, row_q, parallel);
      if constexpr (Gemm::needs_q) column_q(grad_distances, distances, col_q, parallel);
      const Index t = config::pairwise_tile_rows;
      // dL/dA = H B + diag(r_a) A, by row panels of the output.
      detail::parallel_for(detail::ceil_div(n, t), parallel, [&](Index panel) {
        const Index r0 = panel * t, nr = std::min(t, n - r0);
        auto out = grad_a.middleRows(r0, nr);
        detail::gemm_assign(out, h.middleRows(r0, nr), b);
        if constexpr (Gemm::needs_q)
          for (Index i = r0; i < r0 + nr; ++i) out.row(i - r0) += (Gemm::rscale(stats_a[i]) * row_q[i]) * a.row(i);
      });
      // dL/dB = H^T A + diag(r_b) B.
      detail::parallel_for(detail::ceil_div(m, t), parallel, [&](Index panel) {
        const Index c0 = panel * t, nc = std::min(t, m - c0);
        auto out = grad_b.middleRows(c0, nc);
        detail::gemm_assign(out, h.middleCols(c0, nc).transpose(), a);
        if constexpr (Gemm::needs_q)
          for (Index j = c0; j < c0 + nc; ++j) out.row(j - c0) += (Gemm::rscale(stats_b[j]) * col_q[j]) * b.row(j);
      });
    } else {
      detail::parallel_for(detail::ceil_div(n, l1_panel_rows), parallel, [&](Index panel) {
        const Index r0 = panel * l1_panel_rows, nr = std::min(l1_panel_rows, n - r0);
        l1_backward_rows(a, r0, nr, b, grad_distances, false, grad_a);
      });
      detail::parallel_for(detail::ceil_div(m, l1_panel_rows), parallel, [&](Index panel) {
        const Index c0 = panel * l1_panel_rows, nc = std::min(l1_panel_rows, m - c0);
        l1_backward_rows(b, c0, nc, a, grad_distances, true, grad_b);
      });
    }
  }

  /**
   * @brief Backward pass of compute_self(): given G = dL/dD for D = D(A, A), writes dL/dA.
   *
   * Every metric here is symmetric, so @f$ \partial L/\partial a_i @f$ is the one-sided gradient with
   * @f$ G + G^\top @f$ in place of G.
   * @param[in] a n x d.
   * @param[in] distances n x n, the output of compute_self().
   * @param[in] grad_distances n x n, dL/dD.
   * @param[out] grad_a n x d, overwritten.
   */
  void backward_self(ConstRowMatrixRef<Scalar> a, ConstRowMatrixRef<Scalar> distances,
                     ConstRowMatrixRef<Scalar> grad_distances, RowMatrixRef<Scalar> grad_a) {
    constexpr const char* where = "kshot::PairwiseDistance::backward_self()";
    check_inputs(a, a, where);
    const Index n = a.rows(), d = a.cols();
    detail::check_shape(distances, n, n, where, "distances");
    detail::check_shape(grad_distances, n, n, where, "grad_distances");
    detail::check_shape(grad_a, n, d, where, "grad_a");
    detail::check_finite(grad_distances, where, "grad_distances");
    if (n == 0) return;
    const bool parallel = detail::worth_parallel(n, double(n) * double(n) * double(d));

    // G_sym = G + G^T, built row by row (each row owned by one iteration).
    auto g_sym = ws_.matrix(slot_g_sym, n, n);
    detail::parallel_for(detail::ceil_div(n, config::pairwise_tile_rows), parallel, [&](Index panel) {
      const Index r0 = panel * config::pairwise_tile_rows, nr = std::min(config::pairwise_tile_rows, n - r0);
      g_sym.middleRows(r0, nr) = grad_distances.middleRows(r0, nr) + grad_distances.middleCols(r0, nr).transpose();
    });
    if constexpr (Metric::uses_gemm) {
      auto stats = ws_.vector(slot_stats_a, n);
      if constexpr (Gemm::inverse_norm_stat) row_stats(a, stats, parallel, where, "a");
      auto h = ws_.matrix(slot_h, n, n);
      auto row_q = ws_.vector(slot_row_q, n);
      build_h(g_sym, distances, stats, stats, h, row_q, parallel);
      const Index t = config::pairwise_tile_rows;
      detail::parallel_for(detail::ceil_div(n, t), parallel, [&](Index panel) {
        const Index r0 = panel * t, nr = std::min(t, n - r0);
        auto out = grad_a.middleRows(r0, nr);
        detail::gemm_assign(out, h.middleRows(r0, nr), a);
        if constexpr (Gemm::needs_q)
          for (Index i = r0; i < r0 + nr; ++i) out.row(i - r0) += (Gemm::rscale(stats[i]) * row_q[i]) * a.row(i);
      });
    } else {
      detail::parallel_for(detail::ceil_div(n, l1_panel_rows), parallel, [&](Index panel) {
        const Index r0 = panel * l1_panel_rows, nr = std::min(l1_panel_rows, n - r0);
        l1_backward_rows(a, r0, nr, a, g_sym, false, grad_a);
      });
    }
  }

  /**
   * @brief D(A, B) in blocks of at most `chunk_rows` rows of A, handed to `visit(row_begin, block)` in
   * row order, so memory stays at chunk_rows x m however large n x m is.
   *
   * `block` is a `const` row-major view of chunk_rows' x m values, valid only during the call. Each
   * block is computed in parallel as compute() does; `visit` runs on the calling thread.
   * @throws std::invalid_argument if chunk_rows < 1, and as compute().
   */
  template <class Visitor>
  void compute_chunked(ConstRowMatrixRef<Scalar> a, ConstRowMatrixRef<Scalar> b, Index chunk_rows, Visitor&& visit) {
    constexpr const char* where = "kshot::PairwiseDistance::compute_chunked()";
    KSHOT_CHECK(chunk_rows >= 1, where, detail::cat("chunk_rows must be at least 1, got ", chunk_rows));
    check_inputs(a, b, where);
    const Index n = a.rows(), m = b.rows();
    for (Index r0 = 0; r0 < n; r0 += chunk_rows) {
      const Index nr = std::min(chunk_rows, n - r0);
      auto block = ws_.matrix(slot_chunk, nr, m);
      compute(a.middleRows(r0, nr), b, block);
      visit(r0, static_cast<const decltype(block)&>(block));
    }
  }

 private:
  static constexpr std::size_t slot_stats_a = 0, slot_stats_b = 1, slot_h = 2, slot_row_q = 3, slot_col_q = 4,
                               slot_g_sym = 5, slot_chunk = 6;
  static constexpr Index l1_panel_rows = 32;
  // Below this many columns, compute() subtracts directly instead of using the norm trick (measured:
  // at m = 5 the direct loop is 1.5-2x the GEMM path; from m = 16 on the GEMM path wins).
  static constexpr Index direct_max_cols = 16;
  static constexpr Index l1_tile_cols = 256;

  static void check_inputs(const ConstRowMatrixRef<Scalar>& a, const ConstRowMatrixRef<Scalar>& b, const char* where) {
    KSHOT_CHECK(a.cols() == b.cols(), where,
                detail::cat("a has ", a.cols(), " columns but b has ", b.cols(), " (both must be d)"));
    KSHOT_CHECK(a.cols() >= 1, where, detail::cat("the dimension d must be at least 1, got ", a.cols()));
  }

  // Statistics of all rows of x, in parallel over row blocks, with the finiteness check fused in.
  template <class Stats>
  static void row_stats(const ConstRowMatrixRef<Scalar>& x, Stats& stats, bool parallel, const char* where,
                        const char* name) {
    const Index t = config::pairwise_tile_rows;
    detail::parallel_for(detail::ceil_div(x.rows(), t), parallel, [&](Index block) {
      const Index r0 = block * t;
      panel_stats(x, r0, std::min(t, x.rows() - r0), stats, where, name);
    });
  }

  template <class Stats>
  static void panel_stats(const ConstRowMatrixRef<Scalar>& x, Index r0, Index nr, Stats& stats, const char* where,
                          const char* name) {
    if constexpr (Gemm::has_stat) {
      for (Index i = r0; i < r0 + nr; ++i) {
        // A non-finite value makes the squared norm non-finite, so the check costs one test per row.
        const Scalar sq = x.row(i).squaredNorm();
        if (KSHOT_UNLIKELY(!std::isfinite(sq))) detail::check_row_finite(x, i, where, name);
        stats[i] = Gemm::stat(x.row(i));
      }
    } else {
      (void)stats;
      if (KSHOT_UNLIKELY(!detail::all_finite(x.middleRows(r0, nr))))
        for (Index i = r0; i < r0 + nr; ++i)
          if (!detail::all_finite(x.row(i))) detail::check_row_finite(x, i, where, name);
    }
  }

  // H_ij = coef(g_ij, d_ij) p(sa_i) p(sb_j), row_q_i = sum_j q(g_ij, d_ij).
  template <class GradD, class Dist, class StatsA, class StatsB, class H, class RowQ>
  static void build_h(const GradD& g, const Dist& dist, const StatsA& sa, const StatsB& sb, H& h, RowQ& row_q,
                      bool parallel) {
    const Index n = g.rows(), m = g.cols();
    detail::parallel_for(detail::ceil_div(n, config::pairwise_tile_rows), parallel, [&](Index panel) {
      const Index r0 = panel * config::pairwise_tile_rows, r1 = std::min(n, r0 + config::pairwise_tile_rows);
      for (Index i = r0; i < r1; ++i) {
        const Scalar pa = Gemm::p(sa[i]);
        Scalar acc = Scalar(0);
        for (Index j = 0; j < m; ++j) {
          const Scalar gij = g(i, j), dij = dist(i, j);
          h(i, j) = Gemm::coef(gij, dij) * pa * Gemm::p(sb[j]);
          if constexpr (Gemm::needs_q) acc += Gemm::q(gij, dij);
        }
        row_q[i] = acc;
      }
    });
  }

  // col_q_j = sum_i q(g_ij, d_ij), summed over i in order for each block of columns.
  template <class GradD, class Dist, class ColQ>
  static void column_q(const GradD& g, const Dist& dist, ColQ& col_q, bool parallel) {
    const Index n = g.rows(), m = g.cols();
    constexpr Index block = 64;
    detail::parallel_for(detail::ceil_div(m, block), parallel, [&](Index cb) {
      const Index c0 = cb * block, c1 = std::min(m, c0 + block);
      for (Index j = c0; j < c1; ++j) col_q[j] = Scalar(0);
      for (Index i = 0; i < n; ++i)
        for (Index j = c0; j < c1; ++j) col_q[j] += Gemm::q(g(i, j), dist(i, j));
    });
  }

  // L1 distances of rows [r0, r0 + nr) of a against every row of b, tiled over b for cache reuse.
  static void l1_block(const ConstRowMatrixRef<Scalar>& a, Index r0, Index nr, const ConstRowMatrixRef<Scalar>& b,
                       RowMatrixRef<Scalar>& out) {
    const Index m = b.rows();
    for (Index c0 = 0; c0 < m; c0 += l1_tile_cols) {
      const Index c1 = std::min(m, c0 + l1_tile_cols);
      for (Index i = r0; i < r0 + nr; ++i) {
        const auto ai = a.row(i);
        for (Index j = c0; j < c1; ++j) out(i, j) = (ai - b.row(j)).cwiseAbs().sum();
      }
    }
  }

  // grad.row(i) = sum_j G(i, j) sign(x_i - y_j) for i in [r0, r0 + nr), with G read transposed (G(j, i))
  // when x is the second argument of the metric: d|y - x|/dx = sign(x - y) as well.
  template <class GradD>
  static void l1_backward_rows(const ConstRowMatrixRef<Scalar>& x, Index r0, Index nr, const ConstRowMatrixRef<Scalar>& y,
                               const GradD& g, bool transposed, RowMatrixRef<Scalar>& grad) {
    const Index m = y.rows();
    for (Index i = r0; i < r0 + nr; ++i) {
      auto gi = grad.row(i);
      gi.setZero();
      const auto xi = x.row(i);
      for (Index j = 0; j < m; ++j) {
        const Scalar gij = transposed ? g(j, i) : g(i, j);
        if (gij != Scalar(0)) gi += gij * (xi - y.row(j)).cwiseSign();
      }
    }
  }

  detail::Workspace<Scalar> ws_;
};

// ---- free-function conveniences ------------------------------------------------------------------

/**
 * @brief D(A, B) into `out` (n x m, row-major: a matrix, a Map or a block).
 * @param[in] a n x d.
 * @param[in] b m x d.
 * @param[out] out n x m, overwritten.
 * @param[in] metric the metric policy (default squared Euclidean).
 * @note Allocates the row statistics on each call; keep a PairwiseDistance in loops.
 */
template <class DerivedA, class DerivedB, class DerivedOut, class Metric = SquaredEuclidean,
          std::enable_if_t<is_metric_v<Metric>, int> = 0>
void pairwise_distances(const Eigen::MatrixBase<DerivedA>& a, const Eigen::MatrixBase<DerivedB>& b,
                        const Eigen::MatrixBase<DerivedOut>& out, Metric = {}) {
  using Scalar = typename DerivedA::Scalar;
  RowMatrixRef<Scalar> out_ref(const_cast<DerivedOut&>(out.derived()));
  PairwiseDistance<Scalar, Metric>().compute(a, b, out_ref);
}

/// D(A, B) as a new n x m matrix.
template <class DerivedA, class DerivedB, class Metric = SquaredEuclidean, std::enable_if_t<is_metric_v<Metric>, int> = 0>
RowMatrixX<typename DerivedA::Scalar> pairwise_distances(const Eigen::MatrixBase<DerivedA>& a,
                                                         const Eigen::MatrixBase<DerivedB>& b, Metric = {}) {
  using Scalar = typename DerivedA::Scalar;
  RowMatrixX<Scalar> out(a.rows(), b.rows());
  PairwiseDistance<Scalar, Metric>().compute(a, b, out);
  return out;
}

/// D(A, A) into `out` (n x n), symmetric with an exact diagonal.
template <class DerivedA, class DerivedOut, class Metric = SquaredEuclidean, std::enable_if_t<is_metric_v<Metric>, int> = 0>
void self_distances(const Eigen::MatrixBase<DerivedA>& a, const Eigen::MatrixBase<DerivedOut>& out, Metric = {}) {
  using Scalar = typename DerivedA::Scalar;
  RowMatrixRef<Scalar> out_ref(const_cast<DerivedOut&>(out.derived()));
  PairwiseDistance<Scalar, Metric>().compute_self(a, out_ref);
}

/// D(A, A) as a new n x n matrix, symmetric with an exact diagonal.
template <class DerivedA, class Metric = SquaredEuclidean, std::enable_if_t<is_metric_v<Metric>, int> = 0>
RowMatrixX<typename DerivedA::Scalar> self_distances(const Eigen::MatrixBase<DerivedA>& a, Metric = {}) {
  using Scalar = typename DerivedA::Scalar;
  RowMatrixX<Scalar> out(a.rows(), a.rows());
  PairwiseDistance<Scalar, Metric>().compute_self(a, out);
  return out;
}

/// Backward pass of pairwise_distances(): see PairwiseDistance::backward().
template <class DA, class DB, class DD, class DG, class DGA, class DGB, class Metric = SquaredEuclidean,
          std::enable_if_t<is_metric_v<Metric>, int> = 0>
void pairwise_backward(const Eigen::MatrixBase<DA>& a, const Eigen::MatrixBase<DB>& b, const Eigen::MatrixBase<DD>& distances,
                       const Eigen::MatrixBase<DG>& grad_distances, const Eigen::MatrixBase<DGA>& grad_a,
                       const Eigen::MatrixBase<DGB>& grad_b, Metric = {}) {
  using Scalar = typename DA::Scalar;
  RowMatrixRef<Scalar> ga(const_cast<DGA&>(grad_a.derived()));
  RowMatrixRef<Scalar> gb(const_cast<DGB&>(grad_b.derived()));
  PairwiseDistance<Scalar, Metric>().backward(a, b, distances, grad_distances, ga, gb);
}

/// Backward pass of self_distances(): see PairwiseDistance::backward_self().
template <class DA, class DD, class DG, class DGA, class Metric = SquaredEuclidean, std::enable_if_t<is_metric_v<Metric>, int> = 0>
void self_backward(const Eigen::MatrixBase<DA>& a, const Eigen::MatrixBase<DD>& distances,
                   const Eigen::MatrixBase<DG>& grad_distances, const Eigen::MatrixBase<DGA>& grad_a, Metric = {}) {
  using Scalar = typename DA::Scalar;
  RowMatrixRef<Scalar> ga(const_cast<DGA&>(grad_a.derived()));
  PairwiseDistance<Scalar, Metric>().backward_self(a, distances, grad_distances, ga);
}

}  // namespace kshot

#endif  // KSHOT_DISTANCES_PAIRWISE_HPP
