/**
 * @file kshot/distill/attention_transfer.hpp
 * @brief Attention transfer (Zagoruyko and Komodakis) between feature maps, in the authors' code form and in the
 * paper's form, with the gradient for the student's feature map: torchdistill's ATLoss.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_DISTILL_ATTENTION_TRANSFER_HPP
#define KSHOT_DISTILL_ATTENTION_TRANSFER_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"
#include "kshot/core/workspace.hpp"
#include "kshot/distill/common.hpp"

#include <cmath>
#include <type_traits>

#if !defined(KSHOT_NO_EIGEN_TENSOR) && __has_include(<unsupported/Eigen/CXX11/Tensor>)
/// 1 when the Eigen::Tensor overloads of AttentionTransferLoss are declared. This header only declares
/// Eigen::Tensor: include <unsupported/Eigen/CXX11/Tensor> where you make or pass a tensor. (Including the Tensor
/// module here cost every user of <kshot/kshot.hpp> about 0.7 s of compile time, a sixth of the umbrella's.)
#define KSHOT_HAS_EIGEN_TENSOR 1
namespace Eigen {
// Eigen's own declaration (TensorForwardDeclarations.h) gives the defaults (Options = 0, IndexType =
// DenseIndex); a declaration without them may come before or after it.
template <typename Scalar, int NumIndices, int Options, typename IndexType>
class Tensor;
}  // namespace Eigen
#else
#define KSHOT_HAS_EIGEN_TENSOR 0
#endif

namespace kshot {

/// Which form of attention transfer AttentionTransferLoss computes.
enum class AttentionMode {
  code,  ///< the authors' implementation (torchdistill's default 'code'): channel mean, mean of squared differences
  paper  ///< Eq. (2) of the paper ('paper'): channel sum, per-sample L2 norm of the difference, summed, / N
};

/**
 * @brief Attention transfer between a student and a teacher feature map of the same spatial size.
 *
 * Feature maps are N x C x H x W in row-major (NCHW) order, given as N rows of C·H·W with `height` and `width`
 * set (the channel counts of student and teacher may differ), or as Eigen::Tensor<Scalar, 4, RowMajor> (mapped
 * without a copy). The attention map of a sample is a = normalize(f(F²)) over the H·W positions, with
 * normalize(v) = v / max(‖v‖₂, 1e-12) and f the mean over channels (code) or the sum (paper).
 * @f[ L_{code} = w\,\frac{1}{N H W} \sum_{i} \|a^s_i - a^t_i\|^2, \qquad
 *     L_{paper} = w\,\frac{1}{N} \sum_i \|a^s_i - a^t_i\|_2 @f]
 * torchdistill sums this over its configured pairs of layers (weight w each) and, in paper mode, divides by the
 * batch size; with kshot, evaluate one loss per pair and add them. In paper mode a sample whose maps agree
 * exactly has a zero gradient (the subgradient PyTorch uses at a zero norm). A zero feature map gives a zero
 * attention map (the 1e-12 floor), with the floor's gradient.
 *
 * torchdistill: `ATLoss(at_pairs={...: weight}, mode='code' | 'paper')`.
 *
 * @code
 * @inproceedings{zagoruyko2017at,
 *   title = {Paying More Attention to Attention: Improving the Performance of Convolutional Neural Networks
 *            via Attention Transfer},
 *   author = {Zagoruyko, Sergey and Komodakis, Nikos},
 *   booktitle = {ICLR}, year = {2017}}
 * @endcode
 *
 * @throws std::invalid_argument from evaluate() if student or teacher has 0 rows or 0 columns, their row counts
 * differ, either has a non-finite entry, weight is not finite, height or width is < 1, a row width is not a multiple
 * of H·W, grad is not shaped like student, or (tensor overloads) the two maps' H, W differ.
 * @tparam Scalar float or double.
 * @note Samples run in parallel for large batches; per-sample values are summed serially in order (the same bits
 * at any thread count). Buffers grow to 3·N·H·W scalars and are reused. One object per thread.
 */
template <class Scalar = float>
class AttentionTransferLoss {
  static_assert(std::is_floating_point_v<Scalar>,
                "kshot::AttentionTransferLoss<Scalar>: Scalar must be float or double");

 public:
  AttentionMode mode = AttentionMode::code;  ///< code (torchdistill's default) or paper
  Scalar weight = Scalar(1);                 ///< the pair's factor w (finite)
  Index height = 0;                          ///< H; with width, the spatial size of both maps (H·W divides the row width)
  Index width = 0;                           ///< W

  /// The loss over N rows of C·H·W (student C_s, teacher C_t channels).
  Scalar evaluate(ConstRowMatrixRef<Scalar> student, ConstRowMatrixRef<Scalar> teacher) {
    return run(student, teacher, nullptr);
  }
  /// The loss and dL/d(student) (overwritten, shape of student).
  Scalar evaluate(ConstRowMatrixRef<Scalar> student, ConstRowMatrixRef<Scalar> teacher, RowMatrixRef<Scalar> grad) {
    return run(student, teacher, &grad);
  }

#if KSHOT_HAS_EIGEN_TENSOR
  /// Row-major 4-D tensor N x C x H x W.
  using Tensor4 = Eigen::Tensor<Scalar, 4, Eigen::RowMajor, Eigen::DenseIndex>;

  /**
   * @brief The loss over N x C x H x W tensors (mapped without a copy); sets height and width from them.
   * @throws std::invalid_argument if N or H, W differ between the two, or on non-finite input.
   */
  Scalar evaluate(const Tensor4& student, const Tensor4& teacher) {
    set_spatial(student, teacher);
    return run(as_rows(student), as_rows(teacher), nullptr);
  }
  /// The loss and dL/d(student) into `grad`, a tensor of the student's dimensions (overwritten).
  Scalar evaluate(const Tensor4& student, const Tensor4& teacher, Tensor4& grad) {
    set_spatial(student, teacher);
    KSHOT_CHECK(grad.dimensions() == student.dimensions(), "kshot::AttentionTransferLoss::evaluate()",
                detail::cat("grad is ", grad.dimension(0), " x ", grad.dimension(1), " x ", grad.dimension(2), " x ",
                            grad.dimension(3), " but must have the student's dimensions ", student.dimension(0), " x ",
                            student.dimension(1), " x ", student.dimension(2), " x ", student.dimension(3)));
    Eigen::Map<RowMatrixX<Scalar>> g(grad.data(), grad.dimension(0), grad.size() / std::max<Index>(grad.dimension(0), 1));
    RowMatrixRef<Scalar> ref(g);
    return run(as_rows(student), as_rows(teacher), &ref);
  }
#endif

 private:
#if KSHOT_HAS_EIGEN_TENSOR
  static Eigen::Map<const RowMatrixX<Scalar>> as_rows(const Tensor4& x) {
    return {x.data(), x.dimension(0), x.dimension(0) > 0 ? x.size() / x.dimension(0) : 0};
  }
  void set_spatial(const Tensor4& s, const Tensor4& t) {
    constexpr const char* where = "kshot::AttentionTransferLoss::evaluate()";
    KSHOT_CHECK(s.dimension(2) == t.dimension(2) && s.dimension(3) == t.dimension(3), where,
                detail::cat("student maps are ", s.dimension(2), " x ", s.dimension(3), " but teacher maps are ",
                            t.dimension(2), " x ", t.dimension(3)));
    height = s.dimension(2);
    width = s.dimension(3);
  }
#endif

  Scalar run(const ConstRowMatrixRef<Scalar>& s, const ConstRowMatrixRef<Scalar>& t, RowMatrixRef<Scalar>* grad) {
    constexpr const char* where = "kshot::AttentionTransferLoss::evaluate()";
    detail::check_student_teacher(s, t, where);
    detail::check_factor(weight, where, "weight");
    KSHOT_CHECK(height >= 1 && width >= 1, where,
                detail::cat("height and width are ", height, " and ", width, " but must be set (>= 1)"));
    const Index hw = height * width;
    KSHOT_CHECK(s.cols() % hw == 0, where,
                detail::cat("student has ", s.cols(), " columns, not a multiple of H * W = ", hw));
    KSHOT_CHECK(t.cols() % hw == 0, where,
                detail::cat("teacher has ", t.cols(), " columns, not a multiple of H * W = ", hw));
    if (grad != nullptr) detail::check_shape(*grad, s.rows(), s.cols(), where, "grad");
    const Index n = s.rows();
    const Index cs = s.cols() / hw, ct = t.cols() / hw;
    const bool code = mode == AttentionMode::code;
    auto AS = ws_.matrix(0, n, hw);  // student attention, later dL/dq
    auto AT = ws_.matrix(1, n, hw);
    auto info = ws_.matrix(2, n, 2);  // per sample: value, ‖q_s‖
    const bool want = grad != nullptr;
    const Scalar eps = detail::normalize_eps<Scalar>();

    // q = mean (code) or sum (paper) over channels of F^2, then a = q / max(‖q‖, eps).
    auto attention = [&](const ConstRowMatrixRef<Scalar>& f, Index i, Index c, auto&& a) {
      a.setZero();
      for (Index k = 0; k < c; ++k) a += f.row(i).segment(k * hw, hw).cwiseAbs2();
      if (code) a /= Scalar(c);
      const Scalar norm = a.norm();
      a /= std::max(norm, eps);
      return norm;
    };
    auto sample = [&](Index i) {
      auto as = AS.row(i);
      auto at = AT.row(i);
      const Scalar ns = attention(s, i, cs, as);
      attention(t, i, ct, at);
      at = as - at;  // the difference d
      Scalar v = 0;
      if (code) {
        v = at.squaredNorm();
      } else {
        v = at.norm();
      }
      info(i, 0) = v;
      info(i, 1) = ns;
      if (!want) return;
      // dL/da (up to the common factor applied below).
      if (code) at *= Scalar(2);
      else if (v > Scalar(0)) at /= v;
      else at.setZero();
      // Through the normalisation: dL/dq.
      if (ns > eps) at = (at - as.dot(at) * as) / ns;
      else at /= eps;
      // Through q = f(F^2): dL/dF_k = 2 F_k dL/dq (/ C in code mode).
      auto& g = *grad;
      const Scalar chain = code ? Scalar(2) / Scalar(cs) : Scalar(2);
      for (Index k = 0; k < cs; ++k)
        g.row(i).segment(k * hw, hw) = chain * s.row(i).segment(k * hw, hw).cwiseProduct(at);
    };
    detail::parallel_for(n, detail::worth_parallel(n, double(n) * double(cs + ct) * double(hw) * 4), sample);
    Scalar total = 0;
    for (Index i = 0; i < n; ++i) total += info(i, 0);
    const Scalar denom = code ? Scalar(n) * Scalar(hw) : Scalar(n);
    if (want) {
      auto& g = *grad;
      const Scalar c = weight / denom;
      detail::parallel_for(n, detail::worth_parallel(n, double(n) * double(s.cols())), [&](Index i) { g.row(i) *= c; });
    }
    return weight * (total / denom);
  }

  detail::Workspace<Scalar> ws_;
};

}  // namespace kshot

#endif  // KSHOT_DISTILL_ATTENTION_TRANSFER_HPP
