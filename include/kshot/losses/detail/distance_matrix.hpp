/**
 * @file kshot/losses/detail/distance_matrix.hpp
 * @brief The distance matrix every metric-learning loss starts from, and its exact backward pass:
 * normalisation, Lp distance or (dot-product / cosine) similarity, power, as pytorch-metric-learning's
 * distance objects compute them.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_LOSSES_DETAIL_DISTANCE_MATRIX_HPP
#define KSHOT_LOSSES_DETAIL_DISTANCE_MATRIX_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"
#include "kshot/core/workspace.hpp"
#include "kshot/losses/common.hpp"
#include "kshot/losses/detail/tile_product.hpp"

#include <algorithm>
#include <cmath>
#include <type_traits>

namespace kshot {
namespace detail {

/**
 * @brief M = dist(X, Y) (or dist(X, X)) with what its backward pass needs.
 *
 * Forward: rows are normalised (x / max(‖x‖_p, 1e-12)) when the distance asks for it; for p = 2 the Lp
 * distance comes from one matrix product (the lower triangle of X X^T for X against itself, mirrored), clamped
 * at 0, with entries whose squared distance is small against the norms recomputed by direct subtraction, so
 * identical and nearly identical rows get exact (zero) distances; other p use direct loops. Similarities are
 * one product. Float products run on the register-tile kernel on AVX-512 builds (tile_product.hpp), else
 * they are Eigen's.
 *
 * Backward: the loss writes dL/dM into grad(), then backward_self() / backward() return dL/dX (and dL/dY)
 * through the power, the distance and the normalisation. At a zero distance the gradient of ‖x − y‖ is
 * taken as 0, as torch.cdist does.
 *
 * Buffers live in the object's workspace (the kernel's packed operands too): after the first call with the
 * largest shape, nothing allocates (apart from Eigen's own GEMM packing buffers; see docs/losses.md).
 */
template <class Scalar>
class LossDistanceMatrix {
 public:
  using Map = typename Workspace<Scalar>::Matrix;
  using VecMap = typename Workspace<Scalar>::Vector;

  /// M = dist(X, X). Counts zero-norm rows in stats.degenerate when normalising.
  void compute_self(const LossDistance& dist, const ConstRowMatrixRef<Scalar>& X, LossStats& stats) {
    self_ = true;
    setup(dist, X.rows(), X.rows(), X.cols());
    normalize_rows(X, xn(), xnorm(), stats);
    forward();
  }

  /// M = dist(X, Y) (rows of X against rows of Y).
  void compute(const LossDistance& dist, const ConstRowMatrixRef<Scalar>& X, const ConstRowMatrixRef<Scalar>& Y,
               LossStats& stats) {
    self_ = false;
    setup(dist, X.rows(), Y.rows(), X.cols());
    normalize_rows(X, xn(), xnorm(), stats);
    normalize_rows(Y, yn(), ynorm(), stats);
    forward();
  }

  Index rows() const noexcept { return n_; }
  Index cols() const noexcept { return m_; }
  const LossDistance& distance() const noexcept { return dist_; }

  /// The n x m matrix of the last compute.
  Map matrix() { return ws_.matrix(kM, n_, m_); }
  /// The rows after normalisation (X itself when the distance does not normalise).
  Map normalized_x() { return xn(); }
  Map normalized_y() { return self_ ? xn() : yn(); }

  /// An n x m buffer for dL/dM, zero-filled when `zero`.
  Map grad(bool zero = true) {
    Map g = ws_.matrix(kG, n_, m_);
    if (zero) g.setZero();
    return g;
  }

  /// dL/dX for M = dist(X, X), from the contents of grad() (which it overwrites).
  void backward_self(RowMatrixRef<Scalar> dX, bool symmetric = false) {
    KSHOT_ASSERT(self_);
    Map dXn = ws_.matrix(kDX, n_, d_);
    Map A = ws_.matrix(kG, n_, m_);
    Map Xn = xn();
    // M is symmetric: row i gets the shares of M(i, j) and M(j, i), A + A^T. When the caller knows A is
    // symmetric, that is 2A and the transposed pass is skipped.
    if (!symmetric && dist_.kind == DistanceKind::lp && dist_.p == 2 && dist_.power == 1) {
      // Euclidean distances: the chain factor 1 / (2E) is symmetric too, so it is applied to T = G + G^T in the
      // same tile pass that forms T in place in A; T's row sums follow.
      Map M = ws_.matrix(kM, n_, m_);
      symmetrize_in_place(A, &M);
      VecMap r = ws_.vector(kR, n_);
      parallel_for(n_, worth_parallel(n_, double(n_) * double(m_)), [&](Index i) { r[i] = A.row(i).array().sum(); });
      product(dXn, A, Xn);
      dXn = Scalar(2) * (r.asDiagonal() * Xn - dXn);
      normalize_backward(ws_.matrix(kX, n_, d_), xnorm(), dXn, dX);
      return;
    }
    to_distance_grad();
    // S = A + A^T, formed in place; a caller-symmetric A stands for S / 2.
    if (!symmetric) symmetrize_in_place(A);
    const Map& S = A;
    const Scalar twice = symmetric ? Scalar(2) : Scalar(1);
    if (dist_.kind == DistanceKind::lp && dist_.p != 2) {
      if (symmetric) A *= Scalar(2);
      lp_direct_backward(Xn, Xn, A, dXn, nullptr);
    } else if (dist_.kind == DistanceKind::lp) {
      // E2 = |xi|^2 + |xj|^2 - 2 xi.xj:  dX = 2 (diag(T 1) X - T X)
      VecMap r = ws_.vector(kR, n_);
      r = S.rowwise().sum();
      product(dXn, S, Xn);
      dXn = (Scalar(2) * twice) * (r.asDiagonal() * Xn - dXn);
    } else {
      product(dXn, S, Xn);
      if (symmetric) dXn *= Scalar(2);
    }
    normalize_backward(ws_.matrix(kX, n_, d_), xnorm(), dXn, dX);
  }

  /// backward_self() for a dL/dM the caller knows to be symmetric (dL/dM(i, j) = dL/dM(j, i)), which skips the
  /// transposed pass.
  void backward_self_symmetric(RowMatrixRef<Scalar> dX) { backward_self(dX, true); }

  /// dL/dX and dL/dY for M = dist(X, Y), from the contents of grad() (which it overwrites). Pass a 0 x 0
  /// dY to skip it.
  void backward(RowMatrixRef<Scalar> dX, RowMatrixRef<Scalar> dY) {
    KSHOT_ASSERT(!self_);
    Map dXn = ws_.matrix(kDX, n_, d_);
    Map dYn = ws_.matrix(kDY, m_, d_);
    to_distance_grad();
    Map A = ws_.matrix(kG, n_, m_);
    Map Xn = xn();
    Map Yn = yn();
    const bool want_y = dY.rows() > 0;
    if (dist_.kind == DistanceKind::lp && dist_.p != 2) {
      lp_direct_backward(Xn, Yn, A, dXn, want_y ? &dYn : nullptr);
    } else if (dist_.kind == DistanceKind::lp) {
      VecMap r = ws_.vector(kR, n_);
      r = A.rowwise().sum();
      product(dXn, A, Yn);
      dXn = Scalar(2) * (r.asDiagonal() * Xn - dXn);
      if (want_y) {
        VecMap c = ws_.vector(kC, m_);
        c = A.colwise().sum().transpose();
        product(dYn, A.transpose(), Xn);
        dYn = Scalar(2) * (c.asDiagonal() * Yn - dYn);
      }
    } else {
      product(dXn, A, Yn);
      if (want_y) product(dYn, A.transpose(), Xn);
    }
    normalize_backward(ws_.matrix(kX, n_, d_), xnorm(), dXn, dX);
    if (want_y) normalize_backward(ws_.matrix(kY, m_, d_), ynorm(), dYn, dY);
  }

  // ---- Sparse mode: a few entries of dist(X, X) without the n x n matrix ------------------------------------
  // For a short list of pairs (a mined tuple much smaller than n^2), computing the needed entries directly and
  // scattering their gradients costs O(pairs * d) instead of two n x n x d products.

  /// Normalises the rows of X (as compute_self does) without forming the matrix; then entry() and
  /// entry_backward() work on single pairs, and sparse_backward() finishes the gradient.
  void prepare_rows(const LossDistance& dist, const ConstRowMatrixRef<Scalar>& X, LossStats& stats) {
    self_ = true;
    setup(dist, X.rows(), X.rows(), X.cols());
    normalize_rows(X, xn(), xnorm(), stats);
    ws_.matrix(kDX, n_, d_).setZero();
  }

  /// dist(x_i, x_j) on the normalised rows, by direct subtraction (or a dot product), raised to the power.
  Scalar entry(Index i, Index j) {
    Map Xn = xn();
    Scalar base;
    if (dist_.kind != DistanceKind::lp) {
      base = Xn.row(i).dot(Xn.row(j));
    } else if (dist_.p == 2) {
      if (i == j) return Scalar(0);
      const Scalar e2 = (Xn.row(i) - Xn.row(j)).squaredNorm();
      if (dist_.power == 2) return e2;
      base = std::sqrt(e2);
    } else if (dist_.p == 1) {
      base = (Xn.row(i) - Xn.row(j)).cwiseAbs().sum();
    } else {
      const Scalar p = Scalar(dist_.p);
      Scalar acc = 0;
      for (Index k = 0; k < d_; ++k) acc += std::pow(std::abs(Xn(i, k) - Xn(j, k)), p);
      base = std::pow(acc, Scalar(1) / p);
    }
    return dist_.power == 1 ? base : std::pow(base, Scalar(dist_.power));
  }

  /// Adds g * d entry(i, j) / d(x̂_i, x̂_j) to the sparse gradient buffer.
  void entry_backward(Index i, Index j, Scalar g) {
    if (g == Scalar(0)) return;
    Map Xn = xn();
    Map dXn = ws_.matrix(kDX, n_, d_);
    const Scalar power = Scalar(dist_.power);
    if (dist_.kind != DistanceKind::lp) {
      if (dist_.power != 1) g *= power * std::pow(Xn.row(i).dot(Xn.row(j)), power - Scalar(1));
      dXn.row(i) += g * Xn.row(j);
      dXn.row(j) += g * Xn.row(i);
      return;
    }
    if (i == j) return;
    if (dist_.p == 2) {
      const Scalar e2 = (Xn.row(i) - Xn.row(j)).squaredNorm();
      Scalar c;  // dL/d(E²)
      if (dist_.power == 2) {
        c = g;
      } else {
        const Scalar e = std::sqrt(e2);
        if (!(e > Scalar(0))) return;  // torch.cdist's zero sub-gradient
        c = g * power * std::pow(e, power - Scalar(1)) / (Scalar(2) * e);
      }
      dXn.row(i) += (Scalar(2) * c) * (Xn.row(i) - Xn.row(j));
      dXn.row(j) -= (Scalar(2) * c) * (Xn.row(i) - Xn.row(j));
      return;
    }
    const Scalar e = [&] {
      const Scalar m = entry(i, j);
      return dist_.power == 1 ? m : std::pow(m, Scalar(1) / power);
    }();
    if (!(e > Scalar(0))) return;
    if (dist_.power != 1) g *= power * std::pow(e, power - Scalar(1));
    const Scalar p = Scalar(dist_.p);
    for (Index k = 0; k < d_; ++k) {
      const Scalar diff = Xn(i, k) - Xn(j, k);
      const Scalar sgn = diff > 0 ? Scalar(1) : (diff < 0 ? Scalar(-1) : Scalar(0));
      const Scalar t = dist_.p == 1 ? sgn : sgn * std::pow(std::abs(diff) / e, p - Scalar(1));
      dXn(i, k) += g * t;
      dXn(j, k) -= g * t;
    }
  }

  /// dL/dX from the gradients entry_backward() accumulated.
  void sparse_backward(RowMatrixRef<Scalar> dX) {
    normalize_backward(ws_.matrix(kX, n_, d_), xnorm(), ws_.matrix(kDX, n_, d_), dX);
  }

  /// Pre-sizes the buffers for an n x m matrix over d columns.
  void reserve(Index n, Index m, Index d) {
    for (std::size_t s : {kX, kXn, kDX, kDY}) ws_.reserve(s, std::max(n, m) * d);
    for (std::size_t s : {kM, kG}) ws_.reserve(s, n * m);
#if KSHOT_LOSSES_HAS_TILE_PRODUCT
    auto up = [](Index x) { return (x + tile_group - 1) / tile_group * tile_group; };
    ws_.reserve(kPack, up(std::max(n, m)) * up(d));
#endif
  }

 private:
  enum : std::size_t { kX = 0, kY, kXn, kYn, kXnorm, kYnorm, kM, kG, kDX, kDY, kR, kC, kSqX, kSqY, kS, kPack };

  /// Rows per block of the products below.
  static constexpr Index product_block = 64;

  /// True where the float products run on the register-tile kernel (tile_product.hpp) instead of Eigen.
  static constexpr bool tiled = KSHOT_LOSSES_HAS_TILE_PRODUCT && std::is_same_v<Scalar, float>;

  /**
   * dst = alpha * lhs * rhs. With the register-tile kernel (float, AVX-512) for lhs * rhs and lhs * rhs^T of
   * plain matrices: each entry one FMA chain. Otherwise Eigen, in blocks of 64 rows of dst, each a
   * single-threaded Eigen product inside parallel_for: Eigen's own multi-threaded GEMM blocks the inner dimension
   * differently from its single-threaded one (past 320), which changes the rounding; fixed row blocks give the
   * same bits for any number of threads.
   */
  template <class Dst, class Lhs, class Rhs>
  void product(Dst& dst, const Lhs& lhs, const Rhs& rhs, Scalar alpha = Scalar(1)) {
#if KSHOT_LOSSES_HAS_TILE_PRODUCT
    if constexpr (tiled && std::is_same_v<Dst, Map> && std::is_same_v<Lhs, Map> &&
                  (std::is_same_v<Rhs, Map> || std::is_same_v<Rhs, Eigen::Transpose<Map>>)) {
      constexpr bool nt = std::is_same_v<Rhs, Eigen::Transpose<Map>>;  // rhs^T's rows are the output columns
      const Index rows = dst.rows(), cols = dst.cols(), K = lhs.cols();
      const Index groups = (cols + tile_group - 1) / tile_group;
      float* pack = ws_.vector(kPack, groups * tile_group * K).data();
      for (Index g = 0; g < groups; ++g) {
        const Index c0 = g * tile_group, count = std::min(tile_group, cols - c0);
        if constexpr (nt)
          pack_query_group(rhs.nestedExpression().row(c0).data(), K, count, K, pack + g * tile_group * K);
        else
          pack_columns(rhs.data(), cols, K, c0, count, pack + g * tile_group * K);
      }
      const Index blocks = (rows + product_block - 1) / product_block;
      const double work = double(rows) * double(cols) * double(K);
      parallel_for(groups * blocks, worth_parallel(groups * blocks, work), [&](Index t) {
        const Index b = t / groups, g = t % groups;  // a thread takes whole row blocks: it reads only their lhs rows
        const Index c0 = g * tile_group, r0 = b * product_block;
        tile_rows(pack + g * tile_group * K, std::min(tile_group, cols - c0), lhs.data(), K, K, r0,
                  std::min(rows, r0 + product_block), alpha, dst.data(), cols, c0);
      });
      return;
    }
#endif
    const Index rows = dst.rows();
    const Index blocks = (rows + product_block - 1) / product_block;
    const double work = double(rows) * double(dst.cols()) * double(lhs.cols());
    parallel_for(blocks, worth_parallel(blocks, work), [&](Index b) {
      const Index r0 = b * product_block, r = std::min(product_block, rows - r0);
      dst.middleRows(r0, r).noalias() = alpha * (lhs.middleRows(r0, r) * rhs);
    });
  }

  /// The lower triangle (with the diagonal) of alpha * X X^T: half the work of the full product. The strict
  /// upper triangle is left unspecified. `row_done(i)` runs for every row i once the row's entries are final.
  /// Fixed row blocks, each computed (register-tile kernel or Eigen) and then finished by row_done while its
  /// entries are in cache; blocks are handed out largest first (their work grows with the row index).
  template <class RowDone>
  void gram_lower(Map& dst, const Map& X, Scalar alpha, RowDone&& row_done) {
    const Index rows = dst.rows();
    const double work = 0.5 * double(rows) * double(rows) * double(X.cols());
#if KSHOT_LOSSES_HAS_TILE_PRODUCT
    if constexpr (tiled) {
      // Every group of 64 columns packed first (n x d values in all); then row blocks as in the Eigen path, each
      // block's entries against the groups up to its own, and row_done while they are in cache.
      const Index K = X.cols();
      const Index groups = (rows + tile_group - 1) / tile_group;
      float* pack = ws_.vector(kPack, groups * tile_group * K).data();
      for (Index g = 0; g < groups; ++g)
        pack_query_group(X.row(g * tile_group).data(), K, std::min(tile_group, rows - g * tile_group), K,
                         pack + g * tile_group * K);
      static_assert(tile_group % product_block == 0 || product_block % tile_group == 0);
      const Index blocks = (rows + product_block - 1) / product_block;
      parallel_for(
          blocks, worth_parallel(blocks, work),
          [&](Index k) {
            const Index b = blocks - 1 - k;
            const Index r0 = b * product_block, r1 = std::min(rows, r0 + product_block);
            for (Index c0 = 0; c0 < r1; c0 += tile_group)
              tile_rows(pack + c0 * K, std::min(tile_group, rows - c0), X.data(), K, K, r0, r1, alpha, dst.data(), rows,
                        c0);
            for (Index i = r0; i < r1; ++i) row_done(i);
          },
          /*dynamic=*/true);
      return;
    }
#endif
    const Index blocks = (rows + product_block - 1) / product_block;
    parallel_for(
        blocks, worth_parallel(blocks, work),
        [&](Index k) {
          const Index b = blocks - 1 - k;
          const Index r0 = b * product_block, r = std::min(product_block, rows - r0);
          dst.block(r0, 0, r, r0 + r).noalias() = alpha * (X.middleRows(r0, r) * X.topRows(r0 + r).transpose());
          for (Index i = r0; i < r0 + r; ++i) row_done(i);
        },
        /*dynamic=*/true);
  }

  /**
   * One row of squared Euclidean distances from its Gram entries: for j < len, r[j] = g[j] + (sxi + sy[j])
   * with g[j] = -2 x_i.y_j (held in r), recomputed as exact(j) by direct subtraction where r[j] < tol (sxi +
   * sy[j]) (cancellation against the norms; rare), clamped at 0, and square-rooted when `root`. Packets with
   * comparison masks (Eigen's boolean array expressions are not vectorised), from j = 0 whatever the alignment,
   * so which entries take the packet path depends on the column only, never on threads. The packet square root
   * is Eigen's psqrt, as Eigen's array sqrt() uses (with EIGEN_FAST_MATH, Eigen's default, an approximation good
   * to 1-2 ulp in float); the scalar tail uses std::sqrt.
   */
  template <class Exact>
  static void finish_squared_row(Scalar* r, Scalar sxi, const Scalar* sy, Index len, Scalar tol, bool root,
                                 Exact&& exact) {
    namespace ei = Eigen::internal;
    using Packet = typename ei::packet_traits<Scalar>::type;
    constexpr Index width = ei::packet_traits<Scalar>::size;
    const Packet px = ei::pset1<Packet>(sxi), ptol = ei::pset1<Packet>(tol), zero = ei::pset1<Packet>(Scalar(0));
    auto scalar = [&](Index j) {
      const Scalar s = sxi + sy[j];
      Scalar v = r[j] + s;
      if (v < tol * s) v = exact(j);
      v = v < Scalar(0) ? Scalar(0) : v;
      r[j] = root ? std::sqrt(v) : v;
    };
    Index j = 0;
    for (; j + width <= len; j += width) {
      const Packet s = ei::padd(px, ei::ploadu<Packet>(sy + j));
      Packet v = ei::padd(ei::ploadu<Packet>(r + j), s);
      if (ei::predux_any(ei::pcmp_lt(v, ei::pmul(ptol, s)))) {
        for (Index t = j; t < j + width; ++t) scalar(t);
        continue;
      }
      v = ei::pmax(v, zero);
      ei::pstoreu(r + j, root ? ei::psqrt(v) : v);
    }
    for (; j < len; ++j) scalar(j);
  }

  /// dL/dE to dL/d(E^2): t / (2 e), and 0 at e = 0 (torch.cdist's convention).
  static Scalar halve(Scalar t, Scalar e) noexcept { return e > Scalar(0) ? t / (Scalar(2) * e) : Scalar(0); }

  /// t[j] = halve(t[j], e[j]) for j < len, in packets; the same rounded expression as the scalar form.
  static void halve_over(Scalar* t, const Scalar* e, Index len) {
    namespace ei = Eigen::internal;
    using Packet = typename ei::packet_traits<Scalar>::type;
    constexpr Index width = ei::packet_traits<Scalar>::size;
    const Packet two = ei::pset1<Packet>(Scalar(2)), zero = ei::pset1<Packet>(Scalar(0));
    Index j = 0;
    for (; j + width <= len; j += width) {
      const Packet pe = ei::ploadu<Packet>(e + j);
      const Packet q = ei::pdiv(ei::ploadu<Packet>(t + j), ei::pmul(two, pe));
      ei::pstoreu(t + j, ei::pand(ei::pcmp_lt(zero, pe), q));
    }
    for (; j < len; ++j) t[j] = halve(t[j], e[j]);
  }

  /// Tile edge of the blocked transposes below. Measured (n = 1024, float, AVX-512): 16 x 16 tiles read
  /// through a fixed-size local copy are 3-15x faster than Eigen's transposed assignment, whose column
  /// reads at a 4 KB stride thrash the L1 cache; 32 and 64 were slower again.
  static constexpr Index tile = 16;
  using Tile = Eigen::Matrix<Scalar, tile, tile, Eigen::RowMajor>;

  /// a = a + a^T in place for a square a, by pairs of tiles (i0, j0) and (j0, i0) with i0 <= j0: each
  /// tile is read once and written once.
  /// With `e` (a symmetric matrix of distances E), every sum t is also turned into t / (2E), and 0 where E = 0
  /// (halve_over), in the same pass.
  static void symmetrize_in_place(Map& a, const Map* e = nullptr) {
    const Index n = a.rows();
    const Index tiles = (n + tile - 1) / tile;
    auto finish = [e](Scalar v, Index r, Index c) { return e == nullptr ? v : halve(v, (*e)(r, c)); };
    parallel_for(
        tiles, worth_parallel(tiles, double(n) * double(n)),
        [&](Index ti) {
          const Index i0 = ti * tile, ri = std::min(tile, n - i0);
          Tile x, y;
          // The diagonal tile.
          for (Index r = 0; r < ri; ++r)
            for (Index c = r; c < ri; ++c) {
              const Scalar v = finish(a(i0 + r, i0 + c) + a(i0 + c, i0 + r), i0 + r, i0 + c);
              a(i0 + r, i0 + c) = v;
              a(i0 + c, i0 + r) = v;
            }
          for (Index j0 = i0 + tile; j0 < n; j0 += tile) {
            const Index rj = std::min(tile, n - j0);
            if (ri == tile && rj == tile) {
              x = a.block(i0, j0, tile, tile);
              y = a.block(j0, i0, tile, tile);
              x += y.transpose();
              if (e != nullptr)
                for (Index r = 0; r < tile; ++r) halve_over(&x(r, 0), &(*e)(i0 + r, j0), tile);
              a.block(i0, j0, tile, tile) = x;
              a.block(j0, i0, tile, tile) = x.transpose();
            } else {
              for (Index r = 0; r < ri; ++r)
                for (Index c = 0; c < rj; ++c) {
                  const Scalar v = finish(a(i0 + r, j0 + c) + a(j0 + c, i0 + r), i0 + r, j0 + c);
                  a(i0 + r, j0 + c) = v;
                  a(j0 + c, i0 + r) = v;
                }
            }
          }
        },
        /*dynamic=*/true);
  }

  /// Copies the strict lower triangle of a square m onto its strict upper triangle, tile by tile.
  static void mirror_lower(Map& m) {
    const Index n = m.rows();
    const Index tiles = (n + tile - 1) / tile;
    parallel_for(
        tiles, worth_parallel(tiles, 0.5 * double(n) * double(n)),
        [&](Index ti) {
          const Index i0 = ti * tile, ri = std::min(tile, n - i0);
          Tile t;
          for (Index r = 0; r < ri; ++r)  // the diagonal tile
            for (Index c = r + 1; c < ri; ++c) m(i0 + r, i0 + c) = m(i0 + c, i0 + r);
          for (Index j0 = i0 + tile; j0 < n; j0 += tile) {
            const Index rj = std::min(tile, n - j0);
            if (ri == tile && rj == tile) {
              t = m.block(j0, i0, tile, tile);
              m.block(i0, j0, tile, tile) = t.transpose();
            } else {
              m.block(i0, j0, ri, rj) = m.block(j0, i0, rj, ri).transpose();
            }
          }
        },
        /*dynamic=*/true);  // the work shrinks with ti
  }

  Map xn() { return ws_.matrix(kXn, n_, d_); }
  Map yn() { return ws_.matrix(kYn, m_, d_); }
  VecMap xnorm() { return ws_.vector(kXnorm, n_); }
  VecMap ynorm() { return ws_.vector(kYnorm, m_); }

  void setup(const LossDistance& dist, Index n, Index m, Index d) {
    dist_ = dist;
    n_ = n;
    m_ = m;
    d_ = d;
  }

  Scalar norm_of(const Scalar* x) const {
    if (dist_.p == 2) {
      Scalar s = 0;
      for (Index k = 0; k < d_; ++k) s += x[k] * x[k];
      return std::sqrt(s);
    }
    if (dist_.p == 1) {
      Scalar s = 0;
      for (Index k = 0; k < d_; ++k) s += std::abs(x[k]);
      return s;
    }
    const Scalar p = Scalar(dist_.p);
    Scalar s = 0;
    for (Index k = 0; k < d_; ++k) s += std::pow(std::abs(x[k]), p);
    return std::pow(s, Scalar(1) / p);
  }

  /// Copies X (kept for the backward pass) and writes its normalised rows and their norms.
  void normalize_rows(const ConstRowMatrixRef<Scalar>& X, Map out, VecMap norms, LossStats& stats) {
    const bool is_x = out.data() == xn().data();
    Map keep = ws_.matrix(is_x ? kX : kY, X.rows(), d_);
    // xn() and keep must be re-fetched: ws_.matrix may have moved nothing (distinct slots), so `out` stays valid.
    keep = X;
    if (!dist_.normalizes()) {
      out = X;
      norms.setOnes();
      return;
    }
    const Scalar floor = Scalar(1e-12);
    // Euclidean norms through Eigen's vectorised reduction (the scalar loop of norm_of was 4% of ArcFace's time at
    // n = 1024, d = 128).
    if (dist_.p == 2) norms = keep.rowwise().norm();
    for (Index i = 0; i < X.rows(); ++i) {
      const Scalar nrm = dist_.p == 2 ? norms[i] : norm_of(&keep(i, 0));
      norms[i] = nrm;
      if (!(nrm > floor)) ++stats.degenerate;
      out.row(i) = keep.row(i) / std::max(nrm, floor);
    }
  }

  /// dL/dX from dL/dX̂ through x̂ = x / max(‖x‖_p, eps).
  void normalize_backward(const Map& X, const VecMap& norms, const Map& dXn, RowMatrixRef<Scalar>& dX) {
    if (!dist_.normalizes()) {
      dX = dXn;
      return;
    }
    const Scalar floor = Scalar(1e-12);
    const Scalar p = Scalar(dist_.p);
    for (Index i = 0; i < X.rows(); ++i) {
      const Scalar nrm = norms[i];
      if (!(nrm > floor)) {
        dX.row(i) = dXn.row(i) / floor;
        continue;
      }
      const Scalar gx = dXn.row(i).dot(X.row(i));
      if (dist_.p == 2) {
        dX.row(i) = dXn.row(i) / nrm - (gx / (nrm * nrm * nrm)) * X.row(i);
      } else {
        // d‖x‖_p / dx_k = sign(x_k) |x_k|^(p-1) / ‖x‖_p^(p-1)
        const Scalar scale = gx / (nrm * nrm) / std::pow(nrm, p - Scalar(1));
        for (Index k = 0; k < d_; ++k) {
          const Scalar x = X(i, k);
          const Scalar s = x > 0 ? Scalar(1) : (x < 0 ? Scalar(-1) : Scalar(0));
          const Scalar dn = dist_.p == 1 ? s : s * std::pow(std::abs(x), p - Scalar(1));
          dX(i, k) = dXn(i, k) / nrm - scale * dn;
        }
      }
    }
  }

  void forward() {
    Map M = ws_.matrix(kM, n_, m_);
    Map Xn = xn();
    Map Yn = self_ ? xn() : yn();
    if (dist_.kind != DistanceKind::lp) {
      if (self_) {
        gram_lower(M, Xn, Scalar(1), [](Index) {});
        mirror_lower(M);
      } else {
        product(M, Xn, Yn.transpose());
      }
      if (dist_.power != 1) {
        ws_.matrix(kS, n_, m_) = M;  // S itself, for the backward pass of S^q
        M = M.array().pow(Scalar(dist_.power));
      }
      return;
    }
    if (dist_.p != 2) {
      lp_direct_forward(Xn, Yn, M);
      if (dist_.power == 2)
        M = M.array().square();
      else if (dist_.power != 1)
        M = M.array().pow(Scalar(dist_.power));
      return;
    }
    VecMap sx = ws_.vector(kSqX, n_);
    sx = Xn.rowwise().squaredNorm();
    VecMap sy = ws_.vector(kSqY, m_);
    sy = Yn.rowwise().squaredNorm();
    // Squared distances |x|^2 + |y|^2 - 2 x.y, clamped at 0; entries small against the norms are recomputed by
    // subtraction (cancellation). Then the distance itself (power 1 and powers other than 2).
    const Scalar tol = Scalar(1e-3);
    const bool root = dist_.power != 2;
    if (self_) {
      // Only the strict lower triangle is finished (in the product's row blocks, while they are in cache); the
      // diagonal is 0 and the upper triangle its mirror image, so M is exactly symmetric.
      gram_lower(M, Xn, Scalar(-2), [&](Index i) {
        finish_squared_row(M.row(i).data(), sx[i], sx.data(), i, tol, root,
                           [&](Index j) { return (Xn.row(i) - Xn.row(j)).squaredNorm(); });
        M(i, i) = 0;
      });
      mirror_lower(M);
    } else {
      product(M, Xn, Yn.transpose(), Scalar(-2));
      parallel_for(n_, worth_parallel(n_, double(n_) * double(m_) * 4), [&](Index i) {
        finish_squared_row(M.row(i).data(), sx[i], sy.data(), m_, tol, root,
                           [&](Index j) { return (Xn.row(i) - Yn.row(j)).squaredNorm(); });
      });
    }
    if (dist_.power != 1 && dist_.power != 2) M = M.array().pow(Scalar(dist_.power));
  }

  void lp_direct_forward(const Map& Xn, const Map& Yn, Map& M) {
    const Scalar p = Scalar(dist_.p);
    auto row = [&](Index i) {
      for (Index j = 0; j < m_; ++j) {
        Scalar s = 0;
        if (dist_.p == 1) {
          s = (Xn.row(i) - Yn.row(j)).cwiseAbs().sum();
        } else {
          for (Index k = 0; k < d_; ++k) s += std::pow(std::abs(Xn(i, k) - Yn(j, k)), p);
          s = std::pow(s, Scalar(1) / p);
        }
        M(i, j) = s;
      }
    };
    parallel_for(n_, worth_parallel(n_, double(n_) * double(m_) * double(d_)), row);
  }

  /// Turns grad() = dL/dM into the gradient the GEMM backward needs: dL/d(E²) for p = 2 distances (with
  /// E the distance), dL/dE for other p, dL/dS for similarities.
  void to_distance_grad() {
    Map G = ws_.matrix(kG, n_, m_);
    Map M = ws_.matrix(kM, n_, m_);
    const Scalar power = Scalar(dist_.power);
    if (dist_.kind != DistanceKind::lp) {
      if (dist_.power == 1) return;
      // M = S^q: dS = G q S^(q-1), with S kept by the forward pass.
      G.array() *= power * ws_.matrix(kS, n_, m_).array().pow(power - Scalar(1));
      return;
    }
    const bool sq = dist_.p == 2;
    if (sq && dist_.power == 2) return;  // M = E² itself: G is already dL/d(E²)
    if (sq && dist_.power == 1) {
      // M = E: dL/d(E²) = G / (2E), and 0 at E = 0 (torch.cdist's convention). Whole rows, vectorised.
      parallel_for(n_, worth_parallel(n_, double(n_) * double(m_) * 4),
                   [&](Index i) { halve_over(G.row(i).data(), M.row(i).data(), m_); });
      return;
    }
    auto row = [&](Index i) {
      for (Index j = 0; j < m_; ++j) {
        const Scalar m = M(i, j);
        Scalar g = G(i, j);
        if (g == Scalar(0)) continue;
        // E from M = E^q; dM/dE = q E^(q-1)
        const Scalar e = dist_.power == 1 ? m : (dist_.power == 2 ? std::sqrt(m) : std::pow(m, Scalar(1) / power));
        if (!(e > Scalar(0))) {
          G(i, j) = 0;
          continue;
        }
        if (dist_.power != 1) g *= power * (dist_.power == 2 ? e : std::pow(e, power - Scalar(1)));
        G(i, j) = sq ? g / (Scalar(2) * e) : g;  // dE/d(E²) = 1 / (2E)
      }
    };
    parallel_for(n_, worth_parallel(n_, double(n_) * double(m_) * 4), row);
  }

  /// dXn (and dYn) for a general-p Lp distance from A = dL/dE.
  void lp_direct_backward(const Map& Xn, const Map& Yn, const Map& A, Map& dXn, Map* dYn) {
    Map M = ws_.matrix(kM, n_, m_);
    const Scalar p = Scalar(dist_.p);
    // Recover E from M = E^q.
    auto dist_at = [&](Index i, Index j) {
      const Scalar m = M(i, j);
      return dist_.power == 1 ? m : std::pow(m, Scalar(1) / Scalar(dist_.power));
    };
    auto term = [&](Scalar diff, Scalar e) {
      const Scalar s = diff > 0 ? Scalar(1) : (diff < 0 ? Scalar(-1) : Scalar(0));
      if (dist_.p == 1) return s;
      return s * std::pow(std::abs(diff) / e, p - Scalar(1));
    };
    dXn.setZero();
    auto xrow = [&](Index i) {
      for (Index j = 0; j < m_; ++j) {
        const Scalar a = A(i, j);
        const Scalar e = dist_at(i, j);
        if (a == Scalar(0) || !(e > Scalar(0))) continue;
        for (Index k = 0; k < d_; ++k) dXn(i, k) += a * term(Xn(i, k) - Yn(j, k), e);
      }
    };
    parallel_for(n_, worth_parallel(n_, double(n_) * double(m_) * double(d_)), xrow);
    if (dYn != nullptr) {
      Map& dy = *dYn;
      dy.setZero();
      auto yrow = [&](Index j) {
        for (Index i = 0; i < n_; ++i) {
          const Scalar a = A(i, j);
          const Scalar e = dist_at(i, j);
          if (a == Scalar(0) || !(e > Scalar(0))) continue;
          for (Index k = 0; k < d_; ++k) dy(j, k) -= a * term(Xn(i, k) - Yn(j, k), e);
        }
      };
      parallel_for(m_, worth_parallel(m_, double(n_) * double(m_) * double(d_)), yrow);
    }
  }

  Workspace<Scalar> ws_;
  LossDistance dist_;
  Index n_ = 0, m_ = 0, d_ = 0;
  bool self_ = true;
};

}  // namespace detail
}  // namespace kshot

#endif  // KSHOT_LOSSES_DETAIL_DISTANCE_MATRIX_HPP
