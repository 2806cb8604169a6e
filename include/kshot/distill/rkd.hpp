/**
 * @file kshot/distill/rkd.hpp
 * @brief Relational knowledge distillation (Park et al.): distance-wise and angle-wise terms with SmoothL1,
 * torchdistill's RKDLoss, with the gradient for the student; the angle term in O(N² d + N³) instead of the
 * O(N³ d) of forming every difference vector.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_DISTILL_RKD_HPP
#define KSHOT_DISTILL_RKD_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/gemm.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"
#include "kshot/core/workspace.hpp"
#include "kshot/distill/common.hpp"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

namespace kshot {

/**
 * @brief RKD loss: dist_factor · distance term + angle_factor · angle term, over a batch of embeddings (N rows;
 * student and teacher widths may differ; the teacher side has no gradient).
 *
 * Distance term: ψ_ij = max(‖x_i − x_j‖², 1e-12)^½ off the diagonal, 0 on it, divided by the mean of its
 * positive entries (all N(N − 1) off-diagonal ones); SmoothL1 (threshold `smooth_l1_beta`, default 1) between
 * the student's and the teacher's ψ over all N² entries. Angle term: e_ij = (x_j − x_i) / max(‖x_j − x_i‖, 1e-12)
 * (zero for j = i), angle_ijk = e_ij · e_ik over all N³ triples, degenerate ones included; SmoothL1 over the N³
 * entries. Reduction (SmoothL1Loss's): DistillReduction::mean (the default; N² and N³ entries) or sum.
 *
 * The angle term is computed from the Gram matrix G of the centred rows:
 * (x_j − x_i)·(x_k − x_i) = G_jk − G_ij − G_ik + G_ii, and its gradient is assembled as dX = Q X with an N x N
 * coefficient matrix Q, so the cost is O(N² d + N³) (not the O(N³ d) of the N batched products the peer
 * runs). Where this Gram form would lose digits (an apex with a neighbour closer than 1e-2 (double) or 1e-1
 * (float) of the batch's spread, duplicates included) that apex is computed from explicit difference vectors,
 * exactly as the definition reads. A batch of one row gives 0 (torchdistill: NaN from an empty mean).
 *
 * torchdistill: `RKDLoss(..., dist_factor, angle_factor, reduction)`; its sample configuration (1, 2, 'mean')
 * is the default. A factor of 0 skips its term.
 *
 * @code
 * @inproceedings{park2019rkd,
 *   title = {Relational Knowledge Distillation},
 *   author = {Park, Wonpyo and Kim, Dongju and Lu, Yan and Cho, Minsu},
 *   booktitle = {CVPR}, year = {2019}}
 * @endcode
 *
 * @throws std::invalid_argument from evaluate() if student or teacher has 0 rows or 0 columns, their row counts
 * differ, either has a non-finite entry, dist_factor or angle_factor is not finite, smooth_l1_beta is not finite
 * and >= 0, reduction is DistillReduction::batchmean, or grad is not shaped like student.
 * @tparam Scalar float or double.
 * @note The angle pass runs over 8 fixed chunks of apexes, each with its own N x N partial of Q, reduced in
 * chunk order; products run in fixed 64-row blocks: the same bits at any thread count. Buffers grow to about
 * 13·N² + 4·N·d scalars and are reused. One object per thread.
 */
template <class Scalar = float>
class RKDLoss {
  static_assert(std::is_floating_point_v<Scalar>, "kshot::RKDLoss<Scalar>: Scalar must be float or double");

 public:
  Scalar dist_factor = Scalar(1);                       ///< weight of the distance term (finite; 0 skips it)
  Scalar angle_factor = Scalar(2);                      ///< weight of the angle term (finite; 0 skips it)
  DistillReduction reduction = DistillReduction::mean;  ///< mean (default) or sum
  Scalar smooth_l1_beta = Scalar(1);                    ///< SmoothL1 threshold, >= 0 (0: L1)

  /// Chunks of apexes in the angle pass (fixed, so results do not depend on the thread count).
  static constexpr Index angle_chunks = 8;

  /// The loss.
  Scalar evaluate(ConstRowMatrixRef<Scalar> student, ConstRowMatrixRef<Scalar> teacher) {
    return run(student, teacher, nullptr);
  }
  /// The loss and dL/d(student) (overwritten, shape of student).
  Scalar evaluate(ConstRowMatrixRef<Scalar> student, ConstRowMatrixRef<Scalar> teacher, RowMatrixRef<Scalar> grad) {
    return run(student, teacher, &grad);
  }

  /// Distance term (before dist_factor) of the last call.
  Scalar last_distance_term() const noexcept { return dist_term_; }
  /// Angle term (before angle_factor) of the last call.
  Scalar last_angle_term() const noexcept { return angle_term_; }
  /// Apexes of the student computed from explicit difference vectors in the last call.
  Index last_explicit_apexes() const noexcept { return explicit_apexes_; }

 private:
  using Map = typename detail::Workspace<Scalar>::Matrix;

  /// Relative squared distance under which an apex is computed explicitly.
  static constexpr Scalar near_ratio() noexcept { return std::is_same_v<Scalar, float> ? Scalar(1e-2) : Scalar(1e-4); }

  /// One side's centred rows, Gram matrix, squared distances, inverse difference norms and explicit apexes.
  struct Side {
    Index d = 0;
    std::vector<char> explicit_apex;
  };

  // Workspace slots of a side (base 0 student, 8 teacher).
  static constexpr std::size_t kX = 0, kG = 1, kSQ = 2, kR = 3;

  void prepare(const ConstRowMatrixRef<Scalar>& x, std::size_t base, Side& side) {
    const Index n = x.rows(), d = x.cols();
    side.d = d;
    Map X = ws_.matrix(base + kX, n, d);
    Map G = ws_.matrix(base + kG, n, n);
    Map SQ = ws_.matrix(base + kSQ, n, n);
    Map R = ws_.matrix(base + kR, n, n);
    // Centre the rows (distances and angles are translation invariant): the Gram form then cancels at the
    // scale of the batch's spread, not of its offset.
    auto mean = ws_.matrix(base + 4, 1, d);
    mean.setZero();
    for (Index i = 0; i < n; ++i) mean += x.row(i);
    mean /= Scalar(n);
    detail::parallel_for(n, detail::worth_parallel(n, double(n) * double(d)),
                         [&](Index i) { X.row(i) = x.row(i) - mean; });
    detail::blocked_gemm_assign(G, X, X.transpose(), Scalar(1));
    Scalar spread = 0;
    for (Index i = 0; i < n; ++i) spread = std::max(spread, G(i, i));
    const Scalar near = near_ratio() * spread;
    side.explicit_apex.assign(static_cast<std::size_t>(n), 0);
    detail::parallel_for(n, detail::worth_parallel(n, double(n) * double(n) * 4), [&](Index i) {
      char flag = 0;
      for (Index j = 0; j < n; ++j) {
        if (j == i) {
          SQ(i, j) = 0;
          R(i, j) = 0;
          continue;
        }
        Scalar sq = G(i, i) + G(j, j) - Scalar(2) * G(i, j);
        if (!(sq > near)) {
          sq = (X.row(i) - X.row(j)).squaredNorm();
          if (!(sq > near)) flag = 1;
        }
        SQ(i, j) = std::max(sq, Scalar(0));
        R(i, j) = SQ(i, j) > Scalar(0) ? Scalar(1) / std::sqrt(SQ(i, j)) : Scalar(0);
      }
      side.explicit_apex[static_cast<std::size_t>(i)] = flag;
    });
  }

  /// The distance matrix ψ / mean(ψ > 0) of a side into `out`; returns the mean (0 when N = 1).
  Scalar distances(std::size_t base, Index n, Map& out) {
    Map SQ = ws_.matrix(base + kSQ, n, n);
    auto rows = ws_.vector(base + 5, n);
    const Scalar clamp = Scalar(1e-12);
    detail::parallel_for(n, detail::worth_parallel(n, double(n) * double(n) * 2), [&](Index i) {
      out.row(i) = SQ.row(i).cwiseMax(clamp).cwiseSqrt();
      out(i, i) = 0;
      rows[i] = out.row(i).sum();
    });
    if (n < 2) return Scalar(0);
    Scalar total = 0;
    for (Index i = 0; i < n; ++i) total += rows[i];
    const Scalar mu = total / (Scalar(n) * Scalar(n - 1));
    out /= mu;
    return mu;
  }

  /// Explicit unit difference vectors of apex i into U (N x d), norms into nrm.
  template <class Units, class Norms>
  void explicit_units(std::size_t base, Index i, Index n, Index d, Units&& U, Norms&& nrm) {
    Map X = ws_.matrix(base + kX, n, d);
    const Scalar eps = detail::normalize_eps<Scalar>();
    for (Index j = 0; j < n; ++j) {
      U.row(j) = X.row(j) - X.row(i);
      nrm[j] = U.row(j).norm();
      U.row(j) /= std::max(nrm[j], eps);
    }
  }

  Scalar run(const ConstRowMatrixRef<Scalar>& s, const ConstRowMatrixRef<Scalar>& t, RowMatrixRef<Scalar>* grad) {
    constexpr const char* where = "kshot::RKDLoss::evaluate()";
    detail::check_student_teacher(s, t, where);
    detail::check_factor(dist_factor, where, "dist_factor");
    detail::check_factor(angle_factor, where, "angle_factor");
    KSHOT_CHECK(std::isfinite(smooth_l1_beta) && smooth_l1_beta >= Scalar(0), where,
                detail::cat("smooth_l1_beta is ", smooth_l1_beta, " but must be finite and >= 0"));
    KSHOT_CHECK(reduction != DistillReduction::batchmean, where,
                "reduction 'batchmean' is not defined for RKD (SmoothL1Loss); use mean or sum");
    if (grad != nullptr) detail::check_shape(*grad, s.rows(), s.cols(), where, "grad");
    const Index n = s.rows(), d = s.cols();
    const bool want = grad != nullptr;
    dist_term_ = angle_term_ = 0;
    explicit_apexes_ = 0;
    prepare(s, 0, student_);
    prepare(t, 8, teacher_);
    const bool mean = reduction == DistillReduction::mean;
    const Scalar beta = smooth_l1_beta;
    // Q (N x N): dX = Q X_centred. Slot 16.
    Map Q = ws_.matrix(16, n, want ? n : 0);
    if (want) Q.setZero();

    if (dist_factor != Scalar(0)) {
      Map DS = ws_.matrix(17, n, n);
      Map DT = ws_.matrix(18, n, n);
      const Scalar mu = distances(0, n, DS);
      distances(8, n, DT);
      auto rows = ws_.matrix(19, n, 2);
      const Scalar nn = Scalar(n) * Scalar(n);
      const Scalar c = dist_factor / (mean ? nn : Scalar(1));
      detail::parallel_for(n, detail::worth_parallel(n, double(n) * double(n) * 6), [&](Index i) {
        Scalar v = 0, ge = 0;
        for (Index j = 0; j < n; ++j) {
          const Scalar diff = DS(i, j) - DT(i, j);
          v += detail::smooth_l1(diff, beta);
          if (want) {
            const Scalar g = c * detail::smooth_l1_grad(diff, beta);
            DT(i, j) = g;             // dL/d(ψ/μ)
            ge += g * DS(i, j);       // Σ g ψ/μ, for the mean's share
          }
        }
        rows(i, 0) = v;
        rows(i, 1) = ge;
      });
      Scalar total = 0, gsum = 0;
      for (Index i = 0; i < n; ++i) {
        total += rows(i, 0);
        gsum += rows(i, 1);
      }
      dist_term_ = mean ? total / nn : total;
      if (want && n >= 2) {
        // d = ψ/μ: dL/dψ_kl = g_kl/μ − (Σ g d) / (μ M) off the diagonal; dψ/dsq = 1/(2ψ) above the clamp.
        // W = dL/dsq; dX += 2 (diag((W + Wᵀ) 1) − (W + Wᵀ)) X, added to Q.
        Map SQ = ws_.matrix(kSQ, n, n);
        const Scalar m_count = Scalar(n) * Scalar(n - 1);
        const Scalar shift = gsum / (mu * m_count);
        Map W = ws_.matrix(17, n, n);  // reuses DS's slot: DS(i, j) is read before it is written
        detail::parallel_for(n, detail::worth_parallel(n, double(n) * double(n) * 4), [&](Index i) {
          for (Index j = 0; j < n; ++j) {
            if (j == i || !(SQ(i, j) > Scalar(1e-12))) {
              W(i, j) = 0;
              continue;
            }
            const Scalar psi = std::sqrt(SQ(i, j));
            W(i, j) = (DT(i, j) / mu - shift) / (Scalar(2) * psi);
          }
        });
        detail::parallel_for(n, detail::worth_parallel(n, double(n) * double(n) * 2), [&](Index i) {
          Scalar rs = 0;
          for (Index j = 0; j < n; ++j) {
            const Scalar sym = Scalar(2) * (W(i, j) + W(j, i));
            Q(i, j) -= sym;
            rs += sym;
          }
          Q(i, i) += rs;
        });
      }
    }

    if (angle_factor != Scalar(0) && n >= 2) angle_term(n, d, t.cols(), want, Q);

    Scalar value = dist_factor * dist_term_ + angle_factor * angle_term_;
    if (want) {
      auto& g = *grad;
      Map X = ws_.matrix(kX, n, d);
      detail::blocked_gemm_assign(g, Q, X, Scalar(1));
      if (angle_factor != Scalar(0) && explicit_apexes_ > 0) g += ws_.matrix(20, n, d);
    }
    return value;
  }

  /// The angle term: value into angle_term_, its gradient coefficients added to Q (and explicit apexes' rows
  /// to slot 20).
  void angle_term(Index n, Index d, Index dt, bool want, Map& Q) {
    const bool mean = reduction == DistillReduction::mean;
    const Scalar beta = smooth_l1_beta;
    const Scalar nnn = Scalar(n) * Scalar(n) * Scalar(n);
    const Scalar c = angle_factor / (mean ? nnn : Scalar(1));
    Map GS = ws_.matrix(kG, n, n), RS = ws_.matrix(kR, n, n);
    Map GT = ws_.matrix(8 + kG, n, n), RT = ws_.matrix(8 + kR, n, n);
    auto apex_value = ws_.vector(21, n);
    const Index chunks = std::min<Index>(angle_chunks, n);
    const Index per = (n + chunks - 1) / chunks;
    // Per chunk: an N x N partial of Q (slot 22), and scratch: student row a, teacher row b, w, colsum, γ, m
    // (slot 23, 8 x N), explicit teacher units (slot 24, N x d_t).
    Map P = ws_.matrix(22, want ? chunks * n : 0, n);
    if (want) P.setZero();
    Map scratch_all = ws_.matrix(23, chunks * 8, n);
    Map teacher_units = ws_.matrix(24, chunks * n, dt);
    Map student_units = ws_.matrix(25, n, d);
    Map teacher_x = ws_.matrix(8 + kX, n, dt);  // centred teacher rows (fetched here: no workspace call in the region)

    // Teacher angles of apex i, row j, into b (formula or explicit units).
    auto teacher_row = [&](Index i, Index j, Index chunk, auto&& b, auto&& wt) {
      if (teacher_.explicit_apex[static_cast<std::size_t>(i)]) {
        auto Ut = teacher_units.middleRows(chunk * n, n);
        // Eigen's own product here, not gemm(): with the call, GCC stopped inlining the hot else-branch below into
        // this loop (RKD 21% slower in scripts/bench).
        b.noalias() = (Ut * Ut.row(j).transpose()).transpose();
      } else {
        b = ((GT.row(j).array() - wt[j] - wt.array()) * RT.row(i).array()) * RT(i, j);
      }
    };

    const Scalar two_c = Scalar(2) * c;
    auto chunk_body = [&](Index ch) {
      const Index i0 = ch * per, i1 = std::min(n, i0 + per);
      auto sc = scratch_all.middleRows(ch * 8, 8);
      auto a = sc.row(0);
      auto b = sc.row(1);
      auto ws_row = sc.row(2);  // w_k = G_ik − G_ii / 2 (student)
      auto wt_row = sc.row(3);  // teacher
      auto colsum = sc.row(4);
      auto gam = sc.row(5);
      auto msum = sc.row(6);
      for (Index i = i0; i < i1; ++i) {
        apex_value[i] = 0;
        if (student_.explicit_apex[static_cast<std::size_t>(i)]) continue;  // done serially below
        if (teacher_.explicit_apex[static_cast<std::size_t>(i)]) {
          auto Ut = teacher_units.middleRows(ch * n, n);
          const Scalar eps = detail::normalize_eps<Scalar>();
          for (Index j = 0; j < n; ++j) {
            Ut.row(j) = teacher_x.row(j) - teacher_x.row(i);
            Ut.row(j) /= std::max(Ut.row(j).norm(), eps);
          }
        }
        ws_row = GS.row(i).array() - GS(i, i) / Scalar(2);
        wt_row = GT.row(i).array() - GT(i, i) / Scalar(2);
        Scalar value = 0;
        if (want) colsum.setZero();
        for (Index j = 0; j < n; ++j) {
          if (j == i) {
            // e_ii = 0: the whole row of angles is 0 on both sides.
            if (want) {
              gam[j] = 0;
              msum[j] = 0;
            }
            continue;
          }
          const Scalar rj = RS(i, j);
          // a_k = (G_jk − w_j − w_k) r_ij r_ik
          a = ((GS.row(j).array() - ws_row[j] - ws_row.array()) * RS.row(i).array()) * rj;
          teacher_row(i, j, ch, b, wt_row);
          // SmoothL1 of d = a − b over the row, vectorised; then S_ijk = 2 c h'(d) and M_i[j, k] = S r_ij r_ik.
          b = a - b;
          Scalar v = 0, alpha = 0, m = 0;
          if (beta > Scalar(0)) {
            // With m = min(|d|, β): SmoothL1 = m (|d| − m/2) / β, and its derivative clamp(d/β, −1, 1); both
            // forms vectorise (Eigen 3.4's select on a comparison does not).
            const auto ad = b.array().abs();
            const auto mm = ad.min(beta);
            v = (mm * (ad - Scalar(0.5) * mm)).sum() / beta;
            if (want) b = (two_c * (b.array() / beta).max(Scalar(-1)).min(Scalar(1))).matrix();
          } else {
            v = b.array().abs().sum();
            if (want)
              for (Index k = 0; k < n; ++k) b[k] = b[k] > Scalar(0) ? two_c : (b[k] < Scalar(0) ? -two_c : Scalar(0));
          }
          if (want) {
            alpha = b.dot(a);
            b = b.cwiseProduct(RS.row(i)) * rj;
            m = b.sum();
          }
          value += v;
          if (!want) continue;
          auto prow = P.row(ch * n + j);
          prow += b;
          colsum += b;
          const Scalar g = alpha * rj * rj;
          prow[i] += g - m;
          prow[j] -= g;
          gam[j] = g;
          msum[j] = m;
        }
        apex_value[i] = value;
        if (!want) continue;
        auto prow = P.row(ch * n + i);
        prow += gam - colsum;
        prow[i] += msum.sum() - gam.sum();
      }
    };
    detail::parallel_for(chunks, detail::worth_parallel(chunks, double(n) * double(n) * double(n) * 12), chunk_body);

    // Explicit student apexes, serially in apex order (their gradient rows go to slot 20).
    Map F = ws_.matrix(20, n, d);
    bool any_explicit = false;
    for (Index i = 0; i < n; ++i) any_explicit = any_explicit || student_.explicit_apex[static_cast<std::size_t>(i)];
    if (any_explicit) {
      F.setZero();
      detail::parallel_for(1, false, [&](Index) {
        Map A = ws_.matrix(26, n, n);
        Map T = ws_.matrix(27, n, n);
        Map dU = ws_.matrix(28, n, d);
        auto nrm = ws_.vector(29, n);
        auto nrm_t = ws_.vector(30, n);
        auto Ut = teacher_units.middleRows(0, n);
        for (Index i = 0; i < n; ++i) {
          if (!student_.explicit_apex[static_cast<std::size_t>(i)]) continue;
          ++explicit_apexes_;
          explicit_units(0, i, n, d, student_units, nrm);
          detail::gemm_assign(A, student_units, student_units.transpose());
          explicit_units(8, i, n, dt, Ut, nrm_t);
          detail::gemm_assign(T, Ut, Ut.transpose());
          Scalar value = 0;
          for (Index j = 0; j < n; ++j)
            for (Index k = 0; k < n; ++k) {
              const Scalar diff = A(j, k) - T(j, k);
              value += detail::smooth_l1(diff, beta);
              A(j, k) = c * detail::smooth_l1_grad(diff, beta);
            }
          apex_value[i] = value;
          if (!want) continue;
          T = A + A.transpose();  // S
          detail::gemm_assign(dU, T, student_units);
          const Scalar eps = detail::normalize_eps<Scalar>();
          for (Index j = 0; j < n; ++j) {
            if (j == i) continue;
            auto u = student_units.row(j);
            auto gj = dU.row(j);
            if (nrm[j] > eps) gj = (gj - u.dot(gj) * u) / nrm[j];
            else gj /= eps;
            F.row(j) += gj;
            F.row(i) -= gj;
          }
        }
      });
    }
    Scalar total = 0;
    for (Index i = 0; i < n; ++i) total += apex_value[i];
    angle_term_ = mean ? total / nnn : total;
    // The factor c already holds angle_factor; the term itself is reported without it.
    if (want) {
      detail::parallel_for(n, detail::worth_parallel(n, double(n) * double(n) * double(chunks)), [&](Index r) {
        for (Index ch = 0; ch < chunks; ++ch) Q.row(r) += P.row(ch * n + r);
      });
    }
  }

  detail::Workspace<Scalar> ws_;
  Side student_, teacher_;
  Scalar dist_term_ = 0, angle_term_ = 0;
  Index explicit_apexes_ = 0;
};

}  // namespace kshot

#endif  // KSHOT_DISTILL_RKD_HPP
