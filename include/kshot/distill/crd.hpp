/**
 * @file kshot/distill/crd.hpp
 * @brief Contrastive representation distillation (Tian et al.): an NCE objective against a momentum memory
 * bank of negatives, with the gradients for the student's (and the teacher head's) embeddings, as
 * torchdistill's CRDLoss (from the authors' RepDistiller) computes it.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_DISTILL_CRD_HPP
#define KSHOT_DISTILL_CRD_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/random.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"
#include "kshot/core/workspace.hpp"
#include "kshot/distill/common.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>

namespace kshot {

/// Row-major matrix of indices (one row of K + 1 memory indices per sample for CRDLoss).
using IndexRowMatrix = Eigen::Matrix<Index, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
/// Read-only view of an IndexVector.
using ConstIndexRef = Eigen::Ref<const IndexVector>;
/// Read-only view of an IndexRowMatrix.
using ConstIndexRowMatrixRef = Eigen::Ref<const IndexRowMatrix>;

/**
 * @brief CRD loss with two memory banks (torchdistill's `CRDLoss`, RepDistiller's `CRDLoss` + `ContrastMemory`).
 *
 * Inputs are the student's and the teacher's embeddings after their (trained) embedding heads and L2
 * normalisation: B rows of width d each, and pos, the dataset index of each sample. Per sample i a row of K + 1
 * memory indices is used: column 0 is pos_i, the others are negatives drawn uniformly from [0, memory_size)
 * (torchdistill's alias sampler with uniform unigrams) by this object's seeded RandomStream, or given by the
 * caller (torchdistill's contrast_idx). With memory_student = M₁ (torchdistill's memory_v1) and
 * memory_teacher = M₂ (memory_v2):
 * @f[ x^s_{ik} = \exp(M_2[idx_{ik}] \cdot s_i / T) / Z_s, \qquad x^t_{ik} = \exp(M_1[idx_{ik}] \cdot t_i / T) / Z_t @f]
 * and for each side, with c = K / num_samples + eps,
 * @f[ L_{side} = -\frac{1}{B} \sum_i \Big[ \log \frac{x_{i0}}{x_{i0} + c} + \sum_{k \ge 1} \log \frac{K/\mathrm{num\_samples}}{x_{ik} + c} \Big],
 *     \qquad L = L_s + L_t. @f]
 * Z_s and Z_t are fixed on the first call to mean(x·Z) · memory_size over that call's B (K + 1) scores (as
 * torchdistill's params[2], params[3]); set z_student / z_teacher yourself to fix them, or to negative values to
 * have them set again. Everything is computed in log space (log x = score / T − log Z, softplus forms), so large
 * scores do not overflow.
 *
 * After the scores, when `update_memory` is on, the memories move towards the batch:
 * M₁[pos_i] = normalize(momentum · M₁[pos_i] + (1 − momentum) · s_i), and M₂ likewise with t_i, all from the
 * memory before the call, written in batch order (a repeated pos keeps its last row; a zero row stays zero).
 *
 * Gradients: dL/ds_i = Σ_k g_ik M₂[idx_ik] / (T B) with g_i0 = −c / (x_i0 + c), g_ik = x_ik / (x_ik + c); the
 * teacher's likewise through M₁ (returned on request: CRD trains the teacher's embedding head). The memory is
 * a constant (detached, as in the peer).
 *
 * Defaults: torchdistill's temperature 0.07, momentum 0.5, eps 1e-7; num_negatives 16384 (its sample configuration).
 *
 * @code
 * @inproceedings{tian2020crd,
 *   title = {Contrastive Representation Distillation},
 *   author = {Tian, Yonglong and Krishnan, Dilip and Isola, Phillip},
 *   booktitle = {ICLR}, year = {2020}}
 * @endcode
 *
 * @throws std::invalid_argument from evaluate() if student or teacher has 0 rows or 0 columns, their shapes differ,
 * either has a non-finite entry, the memories are empty or not both memory_size x d, temperature is not finite and
 * > 0, momentum is outside [0, 1], eps is not finite and >= 0, num_negatives < 1 (drawn negatives), num_samples < 0,
 * pos does not have B entries, the index matrix is not B x (K + 1) with K >= 1, or a gradient output is not B x d.
 * @throws std::out_of_range if a pos entry or a memory index is outside [0, memory_size).
 * @tparam Scalar float or double.
 * @note The negatives drawn depend only on the seed and the sequence of calls. Samples run in parallel, values
 * are summed serially (the same bits at any thread count). Buffers for B (K + 1) scores per side grow and are
 * reused. One object per thread.
 */
template <class Scalar = float>
class CRDLoss {
  static_assert(std::is_floating_point_v<Scalar>, "kshot::CRDLoss<Scalar>: Scalar must be float or double");

 public:
  Scalar temperature = Scalar(0.07);  ///< T > 0
  Scalar momentum = Scalar(0.5);      ///< memory momentum in [0, 1]
  Scalar eps = Scalar(1e-7);          ///< added to the NCE denominators, >= 0
  Index num_negatives = 16384;        ///< K >= 1 (drawn negatives per sample)
  Index num_samples = 0;              ///< the noise distribution's size (1 / P_n); 0: memory_size()
  bool update_memory = true;          ///< move the memories towards the batch after each call
  Scalar z_student = Scalar(-1);      ///< Z_s (torchdistill's z_v1); < 0: set on the next call
  Scalar z_teacher = Scalar(-1);      ///< Z_t (torchdistill's z_v2); < 0: set on the next call
  RowMatrixX<Scalar> memory_student;  ///< M₁ (memory_size x d), torchdistill's memory_v1
  RowMatrixX<Scalar> memory_teacher;  ///< M₂ (memory_size x d), torchdistill's memory_v2

  CRDLoss() = default;

  /**
   * @brief A loss with both memories of memory_size x dim initialised uniformly in ±1/sqrt(dim / 3) (the
   * peer's init) from RandomStream(seed, 0), and negatives drawn from RandomStream(seed, 1).
   * @throws std::invalid_argument if dim < 1 or memory_size < 1.
   */
  CRDLoss(Index dim, Index memory_size, std::uint64_t seed = 0) { init_memory(dim, memory_size, seed); }

  /// (Re)initialises both memories and the negative sampler as the constructor does.
  void init_memory(Index dim, Index memory_size, std::uint64_t seed = 0) {
    KSHOT_CHECK(dim >= 1 && memory_size >= 1, "kshot::CRDLoss::init_memory()",
                detail::cat("dim is ", dim, " and memory_size is ", memory_size, " but both must be >= 1"));
    RandomStream init(seed, 0);
    const Scalar stdv = Scalar(1) / std::sqrt(Scalar(dim) / Scalar(3));
    memory_student.resize(memory_size, dim);
    memory_teacher.resize(memory_size, dim);
    init.fill_uniform(memory_student, -stdv, stdv);
    init.fill_uniform(memory_teacher, -stdv, stdv);
    rng_ = RandomStream(seed, 1);
    z_student = z_teacher = Scalar(-1);
  }

  /// Reseeds the negative sampler.
  void seed_negatives(std::uint64_t seed) { rng_ = RandomStream(seed, 1); }

  /// Rows of the memories.
  Index memory_size() const noexcept { return memory_student.rows(); }

  /// The loss with drawn negatives.
  Scalar evaluate(ConstRowMatrixRef<Scalar> student, ConstRowMatrixRef<Scalar> teacher, ConstIndexRef pos) {
    draw(student.rows(), pos);
    return run(student, teacher, contrast_, nullptr, nullptr);
  }
  /// The loss with drawn negatives, and dL/d(student) (B x d, overwritten).
  Scalar evaluate(ConstRowMatrixRef<Scalar> student, ConstRowMatrixRef<Scalar> teacher, ConstIndexRef pos,
                  RowMatrixRef<Scalar> grad_student) {
    draw(student.rows(), pos);
    return run(student, teacher, contrast_, &grad_student, nullptr);
  }
  /// The loss with drawn negatives, dL/d(student) and dL/d(teacher) (both B x d, overwritten).
  Scalar evaluate(ConstRowMatrixRef<Scalar> student, ConstRowMatrixRef<Scalar> teacher, ConstIndexRef pos,
                  RowMatrixRef<Scalar> grad_student, RowMatrixRef<Scalar> grad_teacher) {
    draw(student.rows(), pos);
    return run(student, teacher, contrast_, &grad_student, &grad_teacher);
  }
  /**
   * @brief The loss with the caller's memory indices: contrast is B x (K + 1), column 0 the positives
   * (used as given, as torchdistill uses contrast_idx); K is contrast.cols() − 1. Gradients are optional
   * (pass 0 x 0 to skip one). The memory update uses column 0.
   */
  Scalar evaluate_with_indices(ConstRowMatrixRef<Scalar> student, ConstRowMatrixRef<Scalar> teacher,
                               ConstIndexRowMatrixRef contrast, RowMatrixRef<Scalar> grad_student,
                               RowMatrixRef<Scalar> grad_teacher) {
    return run(student, teacher, contrast, grad_student.size() > 0 ? &grad_student : nullptr,
               grad_teacher.size() > 0 ? &grad_teacher : nullptr);
  }

  /// The memory indices of the last call with drawn negatives (B x (K + 1)).
  const IndexRowMatrix& last_indices() const noexcept { return contrast_; }

 private:
  void draw(Index b, const ConstIndexRef& pos) {
    constexpr const char* where = "kshot::CRDLoss::evaluate()";
    KSHOT_CHECK(memory_size() > 0, where, "the memory is empty: construct with (dim, memory_size) or call init_memory()");
    KSHOT_CHECK(num_negatives >= 1, where, detail::cat("num_negatives is ", num_negatives, " but must be >= 1"));
    KSHOT_CHECK(pos.size() == b, where, detail::cat("pos has ", pos.size(), " entries but student has ", b, " rows"));
    const Index m = memory_size();
    for (Index i = 0; i < b; ++i)
      KSHOT_CHECK_RANGE(pos[i] >= 0 && pos[i] < m, where,
                        detail::cat("pos[", i, "] = ", pos[i], " is outside the memory of ", m, " rows"));
    contrast_.resize(b, num_negatives + 1);  // grows only when the shape changes
    for (Index i = 0; i < b; ++i) {
      for (Index k = 0; k < num_negatives + 1; ++k)
        contrast_(i, k) = static_cast<Index>(rng_.bounded(static_cast<std::uint64_t>(m)));
      contrast_(i, 0) = pos[i];
    }
  }

  /// Scores of one side: S(i, k) = mem[idx(i, k)] · x_i / T; returns log Z (setting z when negative).
  void scores(const ConstRowMatrixRef<Scalar>& x, const RowMatrixX<Scalar>& mem, const ConstIndexRowMatrixRef& idx,
              typename detail::Workspace<Scalar>::Matrix& S) {
    const Index b = x.rows(), kk = idx.cols(), d = x.cols();
    const Scalar inv_t = Scalar(1) / temperature;
    detail::parallel_for(b, detail::worth_parallel(b, double(b) * double(kk) * double(d) * 2), [&](Index i) {
      for (Index k = 0; k < kk; ++k) S(i, k) = mem.row(idx(i, k)).dot(x.row(i)) * inv_t;
    });
  }

  Scalar log_z(typename detail::Workspace<Scalar>::Matrix& S, Scalar& z) {
    if (z >= Scalar(0)) return std::log(z);
    // log(mean(exp(S)) * memory_size), by a serial log-sum-exp.
    const Index b = S.rows(), kk = S.cols();
    Scalar m = -std::numeric_limits<Scalar>::infinity();
    for (Index i = 0; i < b; ++i) m = std::max(m, S.row(i).maxCoeff());
    Scalar sum = 0;
    for (Index i = 0; i < b; ++i) sum += (S.row(i).array() - m).exp().sum();
    const Scalar lz = m + std::log(sum) - std::log(Scalar(b) * Scalar(kk)) + std::log(Scalar(memory_size()));
    z = std::exp(lz);
    return lz;
  }

  /// One side's NCE loss from its scores; writes the score coefficients g (already / (T B)) into S.
  Scalar side_loss(typename detail::Workspace<Scalar>::Matrix& S, Scalar lz, bool want,
                   typename detail::Workspace<Scalar>::Vector& rows) {
    const Index b = S.rows(), kk = S.cols();
    const Scalar kneg = Scalar(kk - 1);
    const Scalar pn = Scalar(1) / Scalar(num_samples > 0 ? num_samples : memory_size());
    const Scalar mpn = kneg * pn;
    const Scalar c = mpn + eps;
    const Scalar lc = std::log(c);
    const Scalar lmpn = std::log(mpn);
    const Scalar coeff = Scalar(1) / (temperature * Scalar(b));
    // softplus(y) = log(1 + e^y), stable.
    auto softplus = [](Scalar y) { return y > Scalar(0) ? y + std::log1p(std::exp(-y)) : std::log1p(std::exp(y)); };
    auto sigmoid = [](Scalar y) {
      if (y >= Scalar(0)) return Scalar(1) / (Scalar(1) + std::exp(-y));
      const Scalar e = std::exp(y);
      return e / (Scalar(1) + e);
    };
    detail::parallel_for(b, detail::worth_parallel(b, double(b) * double(kk) * 30), [&](Index i) {
      Scalar v = 0;
      // positive: -log(x/(x+c)) = softplus(lc - lx)
      const Scalar lx0 = S(i, 0) - lz;
      v += softplus(lc - lx0);
      if (want) S(i, 0) = -sigmoid(lc - lx0) * coeff;
      for (Index k = 1; k < kk; ++k) {
        // negative: -log(mpn/(x+c)) = log(x + c) - log(mpn) = lc + softplus(lx - lc) - lmpn
        const Scalar lx = S(i, k) - lz;
        v += lc + softplus(lx - lc) - lmpn;
        if (want) S(i, k) = sigmoid(lx - lc) * coeff;
      }
      rows[i] = v;
    });
    Scalar total = 0;
    for (Index i = 0; i < b; ++i) total += rows[i];
    return total / Scalar(b);
  }

  Scalar run(const ConstRowMatrixRef<Scalar>& s, const ConstRowMatrixRef<Scalar>& t, const ConstIndexRowMatrixRef& idx,
             RowMatrixRef<Scalar>* gs, RowMatrixRef<Scalar>* gt) {
    constexpr const char* where = "kshot::CRDLoss::evaluate()";
    detail::check_student_teacher(s, t, where);
    const Index b = s.rows(), d = s.cols();
    KSHOT_CHECK(t.cols() == d, where, detail::cat("teacher has ", t.cols(), " columns but student has ", d));
    KSHOT_CHECK(memory_student.rows() > 0 && memory_student.cols() == d && memory_teacher.rows() == memory_student.rows() &&
                    memory_teacher.cols() == d,
                where,
                detail::cat("the memories are ", memory_student.rows(), " x ", memory_student.cols(), " and ",
                            memory_teacher.rows(), " x ", memory_teacher.cols(), " but must both be memory_size x ", d));
    detail::check_temperature(temperature, where);
    KSHOT_CHECK(momentum >= Scalar(0) && momentum <= Scalar(1), where,
                detail::cat("momentum is ", momentum, " but must be in [0, 1]"));
    KSHOT_CHECK(std::isfinite(eps) && eps >= Scalar(0), where, detail::cat("eps is ", eps, " but must be finite and >= 0"));
    KSHOT_CHECK(num_samples >= 0, where, detail::cat("num_samples is ", num_samples, " but must be >= 0"));
    KSHOT_CHECK(idx.rows() == b && idx.cols() >= 2, where,
                detail::cat("the memory indices are ", idx.rows(), " x ", idx.cols(), " but must be ", b,
                            " x (K + 1) with K >= 1"));
    const Index m = memory_size();
    for (Index i = 0; i < b; ++i)
      for (Index k = 0; k < idx.cols(); ++k)
        KSHOT_CHECK_RANGE(idx(i, k) >= 0 && idx(i, k) < m, where,
                          detail::cat("memory index (", i, ", ", k, ") = ", idx(i, k), " is outside the memory of ", m,
                                      " rows"));
    if (gs != nullptr) detail::check_shape(*gs, b, d, where, "grad_student");
    if (gt != nullptr) detail::check_shape(*gt, b, d, where, "grad_teacher");
    const Index kk = idx.cols();
    auto SS = ws_.matrix(0, b, kk);
    auto ST = ws_.matrix(1, b, kk);
    auto rows = ws_.vector(2, b);
    scores(s, memory_teacher, idx, SS);
    scores(t, memory_student, idx, ST);
    const Scalar lzs = log_z(SS, z_student);
    const Scalar lzt = log_z(ST, z_teacher);
    const Scalar ls = side_loss(SS, lzs, gs != nullptr, rows);
    const Scalar lt = side_loss(ST, lzt, gt != nullptr, rows);
    auto grad_of = [&](RowMatrixRef<Scalar>& g, const RowMatrixX<Scalar>& mem, typename detail::Workspace<Scalar>::Matrix& G) {
      detail::parallel_for(b, detail::worth_parallel(b, double(b) * double(kk) * double(d) * 2), [&](Index i) {
        g.row(i).setZero();
        for (Index k = 0; k < kk; ++k) g.row(i) += G(i, k) * mem.row(idx(i, k));
      });
    };
    if (gs != nullptr) grad_of(*gs, memory_teacher, SS);
    if (gt != nullptr) grad_of(*gt, memory_student, ST);
    if (update_memory) {
      auto US = ws_.matrix(3, b, d);
      auto UT = ws_.matrix(4, b, d);
      const Scalar keep = momentum, take = Scalar(1) - momentum;
      for (Index i = 0; i < b; ++i) {
        const Index p = idx(i, 0);
        US.row(i) = keep * memory_student.row(p) + take * s.row(i);
        UT.row(i) = keep * memory_teacher.row(p) + take * t.row(i);
        const Scalar ns = US.row(i).norm(), nt = UT.row(i).norm();
        if (ns > Scalar(0)) US.row(i) /= ns;
        if (nt > Scalar(0)) UT.row(i) /= nt;
      }
      for (Index i = 0; i < b; ++i) {
        memory_student.row(idx(i, 0)) = US.row(i);
        memory_teacher.row(idx(i, 0)) = UT.row(i);
      }
    }
    return ls + lt;
  }

  detail::Workspace<Scalar> ws_;
  IndexRowMatrix contrast_;
  RandomStream rng_{0, 1};
};

}  // namespace kshot

#endif  // KSHOT_DISTILL_CRD_HPP
