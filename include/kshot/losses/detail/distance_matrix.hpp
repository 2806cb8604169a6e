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
#include "kshot/core/gemm.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"
#include "kshot/core/workspace.hpp"
#include "kshot/kernels/tile_product.hpp"
#include "kshot/losses/common.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

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
 * Threads (the self path, compute_self and backward_self): the rows of M are dealt to the threads in blocks of
 * loss_row_block rows (owned_region), and every pass over M, dL/dM and the result, here and in the losses'
 * row passes (for_owned_rows), gives a thread the same blocks, so that each writes only lines already in its own
 * cache; shared inputs (the normalised rows and the kernel's packed operand) are computed by every thread into
 * its own copy. Every entry is computed by the same operations whichever thread computes it, so the results are
 * bitwise the same for any thread count.
 *
 * Buffers live in the object's workspace (the kernel's packed operands and the threads' copies too): after the
 * first call with the largest shape and thread count, nothing allocates (apart from Eigen's own GEMM packing
 * buffers; see docs/losses.md).
 */
template <class Scalar>
class LossDistanceMatrix {
 public:
  using Map = typename Workspace<Scalar>::Matrix;
  using VecMap = typename Workspace<Scalar>::Vector;

  /**
   * M = dist(X, X), row i of M from row order[i] of X (row i when `order` is null: a loss that works in label
   * order passes its permutation instead of a permuted copy). X and `order` are read again by backward_self(),
   * so they must stay unchanged until then. Counts zero-norm rows in stats.degenerate when normalising.
   */
  void compute_self(const LossDistance& dist, const ConstRowMatrixRef<Scalar>& X, LossStats& stats,
                    const Index* order = nullptr) {
    self_ = true;
    setup(dist, X.rows(), X.rows(), X.cols());
    src_ = X.data();
    src_stride_ = X.outerStride();
    order_ = order;
    std::fill(ready_.begin(), ready_.end(), char(0));
    if (dist_.kind == DistanceKind::lp && dist_.p != 2) {
      grow_thread_buffers(1);
      prepare_thread(0);
      Map M = ws_.matrix(kM, n_, m_);
      lp_direct_forward(xn(), xn(), M);
      if (dist_.power == 2)
        M = M.array().square();
      else if (dist_.power != 1)
        M = M.array().pow(Scalar(dist_.power));
    } else {
      forward_self();
    }
    if (dist_.normalizes()) {
      const VecMap norms = xnorm();
      for (Index i = 0; i < n_; ++i)
        if (!(norms[i] > Scalar(1e-12))) ++stats.degenerate;
    }
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
    if (zero) for_owned_rows(n_, worth_parallel(n_, double(n_) * double(m_)), [&](Index i) { g.row(i).setZero(); });
    return g;
  }

  /**
   * dL/dX for M = dist(X, X), from the contents of grad() (which it may overwrite). Row i of the result, times
   * `coeff`, goes to dX.row(rows[i]) (dX.row(i) when `rows` is null): a loss that worked in label order puts its
   * gradient back in the caller's order in the same pass.
   *
   * M is symmetric, so row i gets the shares of M(i, j) and M(j, i): S = A + A^T for A = dL/dM, formed block by
   * block in its own buffer (for Euclidean distances scaled by 1 / (2E) in the same pass). When the caller knows
   * A is symmetric, S = 2A and A is used as it is. One region: each thread forms its own row blocks of S, their
   * product with X, and finishes those rows (the chain rule through the distance and the normalisation) while
   * they are in its cache.
   */
  void backward_self(RowMatrixRef<Scalar> dX, bool symmetric = false, const Index* rows = nullptr,
                     Scalar coeff = Scalar(1)) {
    KSHOT_ASSERT(self_);
    ++backward_passes_;
    Map dXn = ws_.matrix(kDX, n_, d_);
    Map A = ws_.matrix(kG, n_, m_);
    Map M = ws_.matrix(kM, n_, m_);
    auto out = [&](Index i, const Scalar* g, Scalar nrm) {
      normalize_backward_row(source_row(i), nrm, g, dX.row(rows == nullptr ? i : rows[i]).data(), coeff);
    };
    const bool lp = dist_.kind == DistanceKind::lp;
    if (lp && dist_.p != 2) {
      to_distance_grad();
      Map S = ws_.matrix(kT, n_, n_);
      if (symmetric) {
        S = Scalar(2) * A;
      } else {
        const Index blocks = (n_ + product_block - 1) / product_block;
        for_owned_blocks(blocks, worth_parallel(blocks, double(n_) * double(n_)), [&](Index b) {
          symmetrize_block(A, S, nullptr, b * product_block, std::min(n_, (b + 1) * product_block));
        });
      }
      lp_direct_backward(xn(), xn(), S, dXn, nullptr);
      const VecMap norms = xnorm();
      for (Index i = 0; i < n_; ++i) out(i, &dXn(i, 0), norms[i]);
      return;
    }
    // Euclidean distances: dL/d(E^2) = dL/dE / (2E), applied to S in the pass that forms it (to A's own rows when
    // A is symmetric). Other kinds transform A first (nothing to do for similarities and squared distances).
    const bool euclid = lp && dist_.power == 1;
    if (!euclid) to_distance_grad();
    Map S(symmetric ? A.data() : ws_.matrix(kT, n_, n_).data(), n_, n_);
    VecMap r = ws_.vector(kR, n_);
    const Scalar twice = symmetric ? Scalar(2) : Scalar(1);
    const Scalar f = Scalar(2) * twice;  // E2 = |xi|^2 + |xj|^2 - 2 xi.xj:  dX = 2 (diag(S 1) X - S X)
    const Index blocks = (n_ + product_block - 1) / product_block;
    const int threads = plan_threads(blocks, double(n_) * double(n_) * double(d_));
    grow_thread_buffers(threads);
#if KSHOT_LOSSES_HAS_TILE_PRODUCT
    const Index full = d_ / tile_group;  // groups of 64 output columns read in place from X
#endif
    owned_region(
        blocks, threads > 1,
        [&](int t) {
          // A thread the forward region did not have (it may have run on fewer threads) makes its copy now.
          if (!ready_[std::size_t(t)]) prepare_thread(t);
#if KSHOT_LOSSES_HAS_TILE_PRODUCT
          if constexpr (tiled)
            if (full * tile_group < d_)
              pack_columns(thread_x(t).data(), d_, n_, full * tile_group, d_ - full * tile_group, backward_pack(t));
#endif
        },
        [&](int t, Index b) {
          const Index r0 = b * product_block, r1 = std::min(n_, r0 + product_block);
          if (!symmetric)
            symmetrize_block(A, S, euclid ? &M : nullptr, r0, r1);
          else if (euclid)
            for (Index i = r0; i < r1; ++i) halve_over(&A(i, 0), &M(i, 0), n_);
          if (lp)
            for (Index i = r0; i < r1; ++i) r[i] = S.row(i).sum();
          const Map Xt = thread_x(t);
          block_product(dXn, S, Xt, r0, r1, t);
          const VecMap norms = thread_norms(t);
          for (Index i = r0; i < r1; ++i) {
            if (lp)
              dXn.row(i) = f * (r[i] * Xt.row(i) - dXn.row(i));
            else if (symmetric)
              dXn.row(i) *= Scalar(2);
            out(i, &dXn(i, 0), norms[i]);
          }
        });
  }

  /// backward_self() for a dL/dM the caller knows to be symmetric (dL/dM(i, j) = dL/dM(j, i)), which skips the
  /// transposed pass.
  void backward_self_symmetric(RowMatrixRef<Scalar> dX) { backward_self(dX, true); }

  /// dL/dX and dL/dY for M = dist(X, Y), from the contents of grad() (which it overwrites). Pass a 0 x 0
  /// dY to skip it.
  void backward(RowMatrixRef<Scalar> dX, RowMatrixRef<Scalar> dY) {
    KSHOT_ASSERT(!self_);
    ++backward_passes_;
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
    ++backward_passes_;
    normalize_backward(ws_.matrix(kX, n_, d_), xnorm(), ws_.matrix(kDX, n_, d_), dX);
  }

  /// How many backward passes (backward_self, backward, sparse_backward) have run: each writes every row of its
  /// result.
  std::uint64_t backward_passes() const noexcept { return backward_passes_; }

  /// Pre-sizes the buffers for an n x m matrix over d columns.
  void reserve(Index n, Index m, Index d) {
    for (std::size_t s : {kX, kXn, kDX, kDY}) ws_.reserve(s, std::max(n, m) * d);
    for (std::size_t s : {kM, kG, kT}) ws_.reserve(s, n * m);
#if KSHOT_LOSSES_HAS_TILE_PRODUCT
    auto up = [](Index x) { return (x + tile_group - 1) / tile_group * tile_group; };
    ws_.reserve(kPack, up(std::max(n, m)) * up(d) + tile_group * std::max(n, m));
#endif
  }

 private:
  enum : std::size_t { kX = 0, kY, kXn, kYn, kXnorm, kYnorm, kM, kG, kDX, kDY, kR, kC, kSqX, kSqY, kS, kPack, kT };

  /// Rows per block of the products below.
  static constexpr Index product_block = loss_row_block;

  /// True where the float products run on the register-tile kernel (tile_product.hpp) instead of Eigen.
  static constexpr bool tiled = KSHOT_LOSSES_HAS_TILE_PRODUCT && std::is_same_v<Scalar, float>;

  /**
   * dst = alpha * lhs * rhs. With the register-tile kernel (float, AVX-512) for lhs * rhs, lhs * rhs^T and
   * lhs^T * rhs of plain matrices: each entry one FMA chain. The output columns are rhs^T's rows packed k-major, or
   * rhs's columns, read in place in full groups of 64 (a partial last group packed); the left operand's rows are
   * lhs's rows, or the columns of the matrix lhs transposes. Otherwise blocked_gemm() (core/gemm.hpp): blocks of 64 rows of dst, each
   * a single-threaded product inside parallel_for, so the bits never depend on the number of threads.
   */
  template <class Dst, class Lhs, class Rhs>
  void product(Dst& dst, const Lhs& lhs, const Rhs& rhs, Scalar alpha = Scalar(1)) {
#if KSHOT_LOSSES_HAS_TILE_PRODUCT
    using Tr = Eigen::Transpose<Map>;
    constexpr bool lhs_t = std::is_same_v<Lhs, Tr>, rhs_t = std::is_same_v<Rhs, Tr>;
    constexpr bool lhs_ok = std::is_same_v<Lhs, Map> || lhs_t, rhs_ok = std::is_same_v<Rhs, Map> || rhs_t;
    if constexpr (tiled && std::is_same_v<Dst, Map> && lhs_ok && rhs_ok && !(lhs_t && rhs_t)) {
      const Index rows = dst.rows(), cols = dst.cols(), K = lhs.cols();
      const Index groups = (cols + tile_group - 1) / tile_group;
      const Index full = rhs_t ? 0 : cols / tile_group;  // groups read in place
      float* pack = ws_.vector(kPack, (groups - full) * tile_group * K).data();
      for (Index g = full; g < groups; ++g) {
        const Index c0 = g * tile_group, count = std::min(tile_group, cols - c0);
        float* to = pack + (g - full) * tile_group * K;
        if constexpr (rhs_t)
          pack_query_group(rhs.nestedExpression().row(c0).data(), K, count, K, to);
        else
          pack_columns(rhs.data(), cols, K, c0, count, to);
      }
      const float* in_place = nullptr;
      if constexpr (!rhs_t) in_place = rhs.data();
      const float* left = nullptr;
      Index istride = K, kstride = 1;
      if constexpr (lhs_t) {
        left = lhs.nestedExpression().data();
        istride = 1;
        kstride = lhs.nestedExpression().cols();
      } else {
        left = lhs.data();
      }
      const Index blocks = (rows + product_block - 1) / product_block;
      const double work = double(rows) * double(cols) * double(K);
      parallel_for(groups * blocks, worth_parallel(groups * blocks, work), [&](Index t) {
        const Index b = t / groups, g = t % groups;  // a thread takes whole row blocks: it reads only their lhs rows
        const Index c0 = g * tile_group, r0 = b * product_block;
        const bool here = g < full;
        tile_rows(here ? in_place + c0 : pack + (g - full) * tile_group * K, std::min(tile_group, cols - c0), left,
                  istride, K, r0, std::min(rows, r0 + product_block), alpha, dst.data(), cols, c0,
                  here ? cols : tile_group, kstride);
      });
      return;
    }
#endif
    static_assert(product_block == gemm_row_block, "the losses' product blocks are blocked_gemm()'s");
    blocked_gemm_assign(dst, lhs, rhs, alpha);
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

  /// Fills the strict upper triangle of rows [i0, i0 + 16) of a square m from the mirror images of the strict lower
  /// triangle, tile by tile (the tiles right of the diagonal one read rows below i0 + 16).
  static void mirror_tile_row(Map& m, Index i0) {
    const Index n = m.rows(), ri = std::min(tile, n - i0);
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

  /// out = coeff * dL/dx from g = dL/dx̂ through x̂ = x / max(‖x‖_p, eps), for one row x of norm `nrm` (d values
  /// each).
  void normalize_backward_row(const Scalar* x_data, Scalar nrm, const Scalar* g_data, Scalar* out_data,
                              Scalar coeff) const {
    using Row = Eigen::Matrix<Scalar, 1, Eigen::Dynamic>;
    const Eigen::Map<const Row> x(x_data, d_), g(g_data, d_);
    Eigen::Map<Row> out(out_data, d_);
    auto put = [&](const auto& v) {
      if (coeff == Scalar(1))
        out = v;
      else
        out = coeff * v;
    };
    if (!dist_.normalizes()) {
      put(g);
      return;
    }
    const Scalar floor = Scalar(1e-12);
    if (!(nrm > floor)) {
      put(g / floor);
      return;
    }
    // gx / ‖x‖² and x / ‖x‖ rather than gx / ‖x‖³ and x: ‖x‖³ overflows float from ‖x‖ ≈ 7e12 (which zeroed
    // the second term of the gradient), while every factor here stays within the range of the norm.
    const Scalar scale = g.dot(x) / nrm / nrm;
    if (dist_.p == 2) {
      put(g / nrm - scale * (x / nrm));
      return;
    }
    // d‖x‖_p / dx_k = sign(x_k) |x_k|^(p-1) / ‖x‖_p^(p-1) = sign(x_k) (|x_k| / ‖x‖_p)^(p-1)
    const Scalar p = Scalar(dist_.p);
    for (Index k = 0; k < d_; ++k) {
      const Scalar sg = x[k] > 0 ? Scalar(1) : (x[k] < 0 ? Scalar(-1) : Scalar(0));
      const Scalar dn = dist_.p == 1 ? sg : sg * std::pow(std::abs(x[k]) / nrm, p - Scalar(1));
      const Scalar v = g[k] / nrm - scale * dn;
      out[k] = coeff == Scalar(1) ? v : coeff * v;
    }
  }

  /// dL/dX from dL/dX̂ through x̂ = x / max(‖x‖_p, eps).
  void normalize_backward(const Map& X, const VecMap& norms, const Map& dXn, RowMatrixRef<Scalar>& dX) const {
    for (Index i = 0; i < X.rows(); ++i) normalize_backward_row(&X(i, 0), norms[i], &dXn(i, 0), &dX(i, 0), Scalar(1));
  }

  /// M = dist(X, Y) for compute(): X against other rows Y.
  void forward() {
    KSHOT_ASSERT(!self_);
    Map M = ws_.matrix(kM, n_, m_);
    Map Xn = xn();
    Map Yn = yn();
    if (dist_.kind != DistanceKind::lp) {
      product(M, Xn, Yn.transpose());
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
    product(M, Xn, Yn.transpose(), Scalar(-2));
    parallel_for(n_, worth_parallel(n_, double(n_) * double(m_) * 4), [&](Index i) {
      finish_squared_row(M.row(i).data(), sx[i], sy.data(), m_, tol, root,
                         [&](Index j) { return (Xn.row(i) - Yn.row(j)).squaredNorm(); });
    });
    if (dist_.power != 1 && dist_.power != 2) M = M.array().pow(Scalar(dist_.power));
  }

  /**
   * M = dist(X, X) for a similarity or the p = 2 distance, in one region of row blocks (owned_region): every
   * thread first normalises all rows into its own copy (and packs it for the kernel), so that no thread writes
   * what another reads; then each computes the lower triangle of its row blocks' part of X X^T and finishes those
   * rows (Gram entries to distances) while they are in cache; after a barrier each fills the upper triangle of its
   * own rows from the mirror images. The diagonal of a distance is 0, and M is exactly symmetric.
   */
  void forward_self() {
    Map M = ws_.matrix(kM, n_, m_);
    const bool lp = dist_.kind == DistanceKind::lp;
    const Scalar tol = Scalar(1e-3);
    const bool root = dist_.power != 2;
    const Scalar alpha = lp ? Scalar(-2) : Scalar(1);
    const Index blocks = (n_ + product_block - 1) / product_block;
    const int threads = plan_threads(blocks, 0.5 * double(n_) * double(n_) * double(d_));
    grow_thread_buffers(threads);
    owned_region(
        blocks, threads > 1, [&](int t) { prepare_thread(t); },
        [&](int t, Index b) {
          const Index r0 = b * product_block, r1 = std::min(n_, r0 + product_block);
          const Map Xt = thread_x(t);
#if KSHOT_LOSSES_HAS_TILE_PRODUCT
          if constexpr (tiled) {
            const float* pack = thread_pack(t);
            for (Index c0 = 0; c0 < r1; c0 += tile_group)
              tile_rows(pack + c0 * d_, std::min(tile_group, n_ - c0), Xt.data(), d_, d_, r0, r1, alpha, M.data(), n_,
                        c0);
          } else
#endif
          {
            gemm_assign(M.block(r0, 0, r1 - r0, r1), Xt.middleRows(r0, r1 - r0), Xt.topRows(r1).transpose(), alpha);
          }
          if (!lp) return;
          const VecMap sq = thread_sq(t);
          for (Index i = r0; i < r1; ++i) {
            finish_squared_row(&M(i, 0), sq[i], sq.data(), i, tol, root,
                               [&](Index j) { return (Xt.row(i) - Xt.row(j)).squaredNorm(); });
            M(i, i) = 0;
          }
        },
        [&](int, Index b) {
          const Index r1 = std::min(n_, (b + 1) * product_block);
          for (Index i0 = b * product_block; i0 < r1; i0 += tile) mirror_tile_row(M, i0);
        });
    if (!lp && dist_.power != 1) {
      ws_.matrix(kS, n_, m_) = M;  // S itself, for the backward pass of S^q
      M = M.array().pow(Scalar(dist_.power));
    } else if (lp && dist_.power != 1 && dist_.power != 2) {
      M = M.array().pow(Scalar(dist_.power));
    }
  }

  // ---- Per-thread copies of the rows (self path) ------------------------------------------------------------------
  // Thread t of a region keeps its own normalised rows, their norms, their squared norms and the kernel's packed
  // operands; thread 0's are the slots kXn, kXnorm, kSqX and kPack, which the single-threaded code uses.

  static constexpr std::size_t kThreadSlots = 64;  // first slot of threads 1, 2, ...

  std::size_t thread_slot(int t, std::size_t which) const {
    static constexpr std::size_t first[4] = {kXn, kXnorm, kSqX, kPack};
    return t == 0 ? first[which] : kThreadSlots + 4 * std::size_t(t - 1) + which;
  }
  Map thread_x(int t) { return ws_.matrix(thread_slot(t, 0), n_, d_); }
  VecMap thread_norms(int t) { return ws_.vector(thread_slot(t, 1), n_); }
  VecMap thread_sq(int t) { return ws_.vector(thread_slot(t, 2), n_); }
  /// The packed column groups of thread t's rows (the Gram product's operand), then the packed last partial group
  /// of its columns (the backward product's operand when d is not a multiple of 64).
  Index pack_size() const {
#if KSHOT_LOSSES_HAS_TILE_PRODUCT
    const Index groups = (n_ + tile_group - 1) / tile_group;
    return groups * tile_group * d_ + tile_group * n_;
#else
    return 0;
#endif
  }
  Scalar* thread_pack(int t) { return ws_.vector(thread_slot(t, 3), pack_size()).data(); }
#if KSHOT_LOSSES_HAS_TILE_PRODUCT
  Scalar* backward_pack(int t) { return thread_pack(t) + (n_ + tile_group - 1) / tile_group * tile_group * d_; }
#endif

  /// The threads a region over `blocks` row blocks with `work` scalar operations will use.
  static int plan_threads(Index blocks, double work) { return worth_parallel(blocks, work) ? max_threads() : 1; }

  /// Sizes every per-thread buffer for `threads` threads before a region (the workspace must not grow inside one).
  void grow_thread_buffers(int threads) {
    if (ready_.size() < std::size_t(threads)) ready_.resize(std::size_t(threads), char(0));
    for (int t = 0; t < threads; ++t) {
      thread_x(t);
      thread_norms(t);
      thread_sq(t);
      thread_pack(t);
    }
  }

  /// Row i of the caller's X (row order_[i] when the rows are permuted).
  const Scalar* source_row(Index i) const { return src_ + (order_ == nullptr ? i : order_[i]) * src_stride_; }

  /// Thread t's copy: the normalised rows, their norms, the squared norms of the normalised rows (p = 2), and on
  /// the kernel's path its packed column groups. Every thread computes the same bits.
  void prepare_thread(int t) {
    ready_[std::size_t(t)] = 1;
    Map Xt = thread_x(t);
    VecMap norms = thread_norms(t);
    const Scalar floor = Scalar(1e-12);
    using RowMap = Eigen::Map<const Eigen::Matrix<Scalar, 1, Eigen::Dynamic>>;
    for (Index i = 0; i < n_; ++i) {
      const RowMap x(source_row(i), d_);
      if (!dist_.normalizes()) {
        Xt.row(i) = x;
        norms[i] = Scalar(1);
        continue;
      }
      const Scalar nrm = dist_.p == 2 ? x.norm() : norm_of(x.data());
      norms[i] = nrm;
      Xt.row(i) = x / std::max(nrm, floor);
    }
    if (dist_.kind == DistanceKind::lp && dist_.p == 2) {
      VecMap sq = thread_sq(t);
      for (Index i = 0; i < n_; ++i) sq[i] = Xt.row(i).squaredNorm();
    }
#if KSHOT_LOSSES_HAS_TILE_PRODUCT
    if constexpr (tiled) {
      if (dist_.kind == DistanceKind::lp && dist_.p != 2) return;
      float* pack = thread_pack(t);
      for (Index c0 = 0; c0 < n_; c0 += tile_group)
        pack_query_group(Xt.row(c0).data(), d_, std::min(tile_group, n_ - c0), d_, pack + c0 * d_);
    }
#endif
  }

  /// Rows [r0, r1) of dst = lhs * rhs (lhs square, n x n; rhs thread t's n x d rows): register-tile kernel (full
  /// groups of 64 output columns read in place, a partial last group from backward_pack(t)) or one Eigen product.
  void block_product(Map& dst, const Map& lhs, const Map& rhs, Index r0, Index r1, int t) {
#if KSHOT_LOSSES_HAS_TILE_PRODUCT
    if constexpr (tiled) {
      const Index K = lhs.cols(), cols = dst.cols();
      for (Index c0 = 0; c0 < cols; c0 += tile_group) {
        if (c0 + tile_group <= cols)
          tile_rows(rhs.data() + c0, tile_group, lhs.data(), K, K, r0, r1, 1.0f, dst.data(), cols, c0, cols);
        else
          tile_rows(backward_pack(t), cols - c0, lhs.data(), K, K, r0, r1, 1.0f, dst.data(), cols, c0);
      }
      return;
    }
#endif
    (void)t;
    gemm_assign(dst.middleRows(r0, r1 - r0), lhs.middleRows(r0, r1 - r0), rhs);
  }

  /**
   * Rows [r0, r1) of s = a + a^T (a square), by 16 x 16 tiles: tile (I, J) of s from tiles (I, J) and (J, I) of
   * a. With `e` (a symmetric matrix of distances E), every sum t is also turned into t / (2E), and 0 where E = 0
   * (halve_over). Each entry is the same rounded sum as its mirror image, so s is exactly symmetric.
   */
  static void symmetrize_block(const Map& a, Map& s, const Map* e, Index r0, Index r1) {
    const Index n = a.rows();
    Tile x, y;
    for (Index i0 = r0; i0 < r1; i0 += tile) {
      const Index ri = std::min(tile, r1 - i0);
      for (Index j0 = 0; j0 < n; j0 += tile) {
        const Index rj = std::min(tile, n - j0);
        if (ri == tile && rj == tile) {
          x = a.block(i0, j0, tile, tile);
          y = a.block(j0, i0, tile, tile);
          x += y.transpose();
          if (e != nullptr)
            for (Index r = 0; r < tile; ++r) halve_over(&x(r, 0), &(*e)(i0 + r, j0), tile);
          s.block(i0, j0, tile, tile) = x;
        } else {
          for (Index r = 0; r < ri; ++r)
            for (Index c = 0; c < rj; ++c) {
              const Scalar v = a(i0 + r, j0 + c) + a(j0 + c, i0 + r);
              s(i0 + r, j0 + c) = e == nullptr ? v : halve(v, (*e)(i0 + r, j0 + c));
            }
        }
      }
    }
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
      for_owned_rows(n_, worth_parallel(n_, double(n_) * double(m_) * 4),
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
    for_owned_rows(n_, worth_parallel(n_, double(n_) * double(m_) * 4), row);
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
  // The self path's input (compute_self): the caller's rows, their stride and the optional row order.
  const Scalar* src_ = nullptr;
  Index src_stride_ = 0;
  const Index* order_ = nullptr;
  std::vector<char> ready_;
  std::uint64_t backward_passes_ = 0;  // ready_[t]: thread t's copy is that of the last compute_self
};

/**
 * @brief Zeroes a loss's gradient when the scope ends, unless the distance matrix's backward pass (which writes
 * every row of it) ran in between: for losses whose gradient comes only from that pass, so that they zero it only
 * on the paths that end early instead of first on every call (on two far-apart cores, the zeroing thread then
 * takes the lines the backward pass's threads write).
 */
template <class Scalar, class DistanceMatrix>
class ZeroGradientUnlessWritten {
 public:
  ZeroGradientUnlessWritten(RowMatrixRef<Scalar>* grad, const DistanceMatrix& dist) noexcept
      : grad_(grad), dist_(dist), before_(dist.backward_passes()) {}
  ~ZeroGradientUnlessWritten() {
    if (grad_ != nullptr && dist_.backward_passes() == before_) grad_->setZero();
  }
  ZeroGradientUnlessWritten(const ZeroGradientUnlessWritten&) = delete;
  ZeroGradientUnlessWritten& operator=(const ZeroGradientUnlessWritten&) = delete;

 private:
  RowMatrixRef<Scalar>* grad_;
  const DistanceMatrix& dist_;
  std::uint64_t before_;
};

}  // namespace detail
}  // namespace kshot

#endif  // KSHOT_LOSSES_DETAIL_DISTANCE_MATRIX_HPP
