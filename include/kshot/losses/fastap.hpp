/**
 * @file kshot/losses/fastap.hpp
 * @brief FastAP (Cakir et al. 2019): a differentiable average precision from soft distance histograms, with
 * its exact gradient: pytorch-metric-learning's FastAPLoss.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_LOSSES_FASTAP_HPP
#define KSHOT_LOSSES_FASTAP_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"
#include "kshot/core/workspace.hpp"
#include "kshot/losses/common.hpp"
#include "kshot/losses/detail/distance_matrix.hpp"

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <utility>
#include <vector>

namespace kshot {

/**
 * @brief FastAP loss: one minus a histogram approximation of each anchor's average precision.
 *
 * Distances d_ij (squared Euclidean on L2-normalised rows by default, so in [0, 4]) are binned into
 * B + 1 = num_bins + 1 triangular kernels centred at t_b = linspace(0, 2^power, B + 1), of half-width
 * δ = 2^power / B: @f$ K_b(d) = \mathrm{relu}(1 - |d - t_b| / \delta) @f$. Per anchor i, over j != i,
 * @f$ h^+_b = \sum_{j:\,y_j = y_i} K_b(d_{ij}) @f$, @f$ h^-_b = \sum_{j:\,y_j \ne y_i} K_b(d_{ij}) @f$,
 * @f$ H^+_b = \sum_{c \le b} h^+_c @f$, @f$ H_b = \sum_{c \le b} (h^+_c + h^-_c) @f$, and
 * @f[ \mathrm{FastAP}_i = \frac{1}{N^+_i} \sum_{b:\ h^+_b H^+_b > 0,\ H_b > 0} \frac{h^+_b H^+_b}{H_b},
 *   \qquad L_i = (1 - \mathrm{FastAP}_i)\, w_i, @f]
 * with N^+_i the number of positives of i and w_i the miner weight (pytorch-metric-learning's
 * convert_to_weights: how often row i appears in the mined tuple over the largest count; 1 without a
 * tuple). Positives and negatives always come from the labels; a mined tuple only sets the weights.
 * Reduction (default Reduction::mean): mean over the anchors with a positive; anchors without one are
 * skipped (stats().skipped_anchors). The loss is 0 when no anchor has a positive or no bin is kept.
 *
 * The gradient is exact: through the piecewise-linear kernels (zero at a kernel's peak and at its ends,
 * as torch's d|x|/dx = 0 at 0 and relu'(0) = 0) and only through the bins that the sum keeps (the
 * others give no gradient, as torch's masked indexing). Cost O(n^2) after the distance matrix: each
 * distance touches at most two kernels.
 *
 * Defaults follow pytorch-metric-learning: num_bins 10, LpDistance(power=2) on L2-normalised rows. As
 * pytorch-metric-learning asserts, the distance must be LpDistance with normalize_embeddings and p = 2
 * (any power > 0); other distances throw std::invalid_argument. stats(): terms (anchors with a
 * positive), active_terms (elements > 0), skipped_anchors, degenerate (zero-norm rows).
 *
 * PML equivalent: `losses.FastAPLoss(num_bins)`. No deliberate difference.
 *
 * @tparam Scalar float or double.
 * @note One object per thread: evaluate() uses the object's workspace. A second call with the same shapes
 * allocates nothing of kshot's own.
 */
template <class Scalar = float>
class FastAPLoss {
  static_assert(std::is_floating_point_v<Scalar>, "kshot::FastAPLoss<Scalar>: Scalar must be float or double");

 public:
  int num_bins = 10;                                    ///< number of histogram intervals; >= 1
  LossDistance distance = LossDistance::squared_lp();   ///< LpDistance(power=2), normalised, p = 2
  Reduction reduction = Reduction::loss_default;        ///< default: mean over the anchors with a positive

  /// The loss over the batch; a mined tuple, when given, sets the miner weights.
  Scalar evaluate(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels, Mined mined = {}) {
    return run(emb, labels, mined, nullptr);
  }
  /// The loss, and its gradient with respect to `emb` written to `grad` (n x d, overwritten).
  Scalar evaluate(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels, Mined mined, RowMatrixRef<Scalar> grad) {
    return run(emb, labels, mined, &grad);
  }
  /// The loss over the batch, and its gradient.
  Scalar evaluate(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels, RowMatrixRef<Scalar> grad) {
    return run(emb, labels, Mined{}, &grad);
  }

  /// Counts from the last call.
  const LossStats& stats() const noexcept { return stats_; }

  /// Pre-sizes the workspace for n embeddings of dimension d.
  void reserve(Index n, Index d) {
    dist_.reserve(n, n, d);
    const auto un = static_cast<std::size_t>(n);
    const auto bins = static_cast<std::size_t>(std::max(num_bins, 1) + 1);
    for (auto* v : {&weight_, &fastap_, &val_, &coeff_}) v->reserve(un);
    hist_.reserve(un * 2 * bins);
    dhist_.reserve(un * 2 * bins);
    mid_.reserve(bins);
    order_.reserve(un);
    npos_.reserve(un);
    anchor_.reserve(un);
  }

 private:
  Scalar run(const ConstRowMatrixRef<Scalar>& emb, const ConstLabelRef& labels, const Mined& mined,
             RowMatrixRef<Scalar>* grad) {
    constexpr const char* where = "kshot::FastAPLoss::evaluate()";
    detail::check_embeddings(emb, labels, where);
    detail::check_distance(distance, where);
    KSHOT_CHECK(distance.kind == DistanceKind::lp && distance.normalize_embeddings && distance.p == 2, where,
                detail::cat("the distance is ", distance.describe(),
                            " but FastAP needs LpDistance with normalize_embeddings and p = 2"));
    KSHOT_CHECK(num_bins >= 1, where, detail::cat("num_bins is ", num_bins, " but must be >= 1"));
    detail::check_mined(mined, emb.rows(), where);
    if (grad != nullptr) detail::check_grad(*grad, emb.rows(), emb.cols(), where, "grad");
    stats_ = LossStats{};
    const Index n = emb.rows();
    const auto un = static_cast<std::size_t>(n);
    if (grad != nullptr) grad->setZero();

    // Positives per row from the labels.
    order_.clear();
    for (Index i = 0; i < n; ++i) order_.emplace_back(labels[i], i);
    std::sort(order_.begin(), order_.end());
    npos_.resize(un);
    for (std::size_t t = 0; t < un;) {
      std::size_t e = t;
      while (e < un && order_[e].first == order_[t].first) ++e;
      for (std::size_t u = t; u < e; ++u) npos_[static_cast<std::size_t>(order_[u].second)] = static_cast<Index>(e - t) - 1;
      t = e;
    }
    anchor_.clear();
    for (Index i = 0; i < n; ++i)
      if (npos_[static_cast<std::size_t>(i)] > 0) anchor_.push_back(i);
    const Index K = static_cast<Index>(anchor_.size());
    stats_.skipped_anchors = n - K;
    if (K == 0) return Scalar(0);

    weight_.resize(un);
    detail::miner_weights(mined, n, weight_.data(), counts_);

    dist_.compute_self(distance, emb, stats_);
    auto M = dist_.matrix();

    // Kernel centres as torch.linspace computes them (from both ends), in double.
    const Index nb = num_bins, bins = nb + 1;
    const double hmax = std::pow(2.0, distance.power);
    delta_ = Scalar(hmax / double(nb));
    mid_.resize(static_cast<std::size_t>(bins));
    {
      const double step = hmax / double(bins - 1);
      const Index halfway = bins / 2;
      for (Index b = 0; b < bins; ++b)
        mid_[static_cast<std::size_t>(b)] =
            Scalar(b < halfway ? step * double(b) : hmax - step * double(bins - b - 1));
    }

    // Per row: h+ at hist_[row * 2B'], h- right after it; FastAP_i (before dividing by N+_i).
    const auto ub = static_cast<std::size_t>(bins);
    hist_.resize(un * 2 * ub);
    fastap_.assign(un, Scalar(0));
    kept_.assign(un, 0);
    const bool par = detail::worth_parallel(n, double(n) * double(n) * 10);
    auto row_value = [&](Index i) {
      const auto ui = static_cast<std::size_t>(i);
      if (npos_[ui] == 0) return;
      Scalar* hp = &hist_[ui * 2 * ub];
      Scalar* hn = hp + ub;
      std::fill(hp, hp + 2 * ub, Scalar(0));
      const Label yi = labels[i];
      for (Index j = 0; j < n; ++j) {
        if (j == i) continue;
        Scalar* h = labels[j] == yi ? hp : hn;
        kernels(M(i, j), [&](Index b, Scalar pulse, Scalar) { h[b] += pulse; });
      }
      Scalar Hp = 0, H = 0, F = 0;
      unsigned char any = 0;
      for (std::size_t b = 0; b < ub; ++b) {
        Hp += hp[b];
        H += hp[b] + hn[b];
        const Scalar prod = hp[b] * Hp;
        if (prod > Scalar(0) && H > Scalar(0)) {
          F += prod / H;
          any = 1;
        }
      }
      fastap_[ui] = F;
      kept_[ui] = any;
    };
    detail::parallel_for(n, par, row_value);
    bool any_kept = false;
    for (std::size_t i = 0; i < un; ++i) any_kept = any_kept || kept_[i] != 0;
    if (!any_kept) return Scalar(0);

    val_.resize(static_cast<std::size_t>(K));
    for (Index t = 0; t < K; ++t) {
      const auto ui = static_cast<std::size_t>(anchor_[static_cast<std::size_t>(t)]);
      val_[static_cast<std::size_t>(t)] = (Scalar(1) - fastap_[ui] / Scalar(npos_[ui])) * weight_[ui];
    }
    const detail::ReduceMode mode = detail::resolve_reduction(reduction, detail::ReduceMode::mean);
    coeff_.assign(un, Scalar(0));
    elem_coeff_.resize(static_cast<std::size_t>(K));
    const Scalar value = detail::reduce(val_.data(), K, mode, Scalar(0),
                                        grad != nullptr ? elem_coeff_.data() : nullptr, stats_);
    if (grad == nullptr) return value;
    // dL/dFastAP_i (FastAP before the division by N+_i).
    for (Index t = 0; t < K; ++t) {
      const auto ui = static_cast<std::size_t>(anchor_[static_cast<std::size_t>(t)]);
      coeff_[ui] = -elem_coeff_[static_cast<std::size_t>(t)] * weight_[ui] / Scalar(npos_[ui]);
    }

    auto G = dist_.grad(/*zero=*/false);
    dhist_.resize(un * 2 * ub);
    auto row_grad = [&](Index i) {
      const auto ui = static_cast<std::size_t>(i);
      const Scalar gF = coeff_[ui];
      if (gF == Scalar(0) || kept_[ui] == 0) {
        G.row(i).setZero();
        return;
      }
      const Scalar* hp = &hist_[ui * 2 * ub];
      const Scalar* hn = hp + ub;
      Scalar* dp = &dhist_[ui * 2 * ub];
      Scalar* dn = dp + ub;
      // Forward cumulative sums again, then dF/dh+_b and dF/dh-_b by suffix sums over the kept bins:
      // phi_b = h+_b H+_b / H_b; dphi_b/dh+_c = [c = b] H+_b/H_b + h+_b/H_b - phi_b/H_b (c <= b),
      // dphi_b/dh-_c = -phi_b/H_b (c <= b).
      Scalar Hp = 0, H = 0;
      for (std::size_t b = 0; b < ub; ++b) {
        Hp += hp[b];
        H += hp[b] + hn[b];
        dp[b] = Hp;  // H+_b for now
        dn[b] = H;   // H_b for now
      }
      Scalar sa = 0, sc = 0;
      for (std::size_t b = ub; b-- > 0;) {
        const Scalar Hpb = dp[b], Hb = dn[b];
        const Scalar prod = hp[b] * Hpb;
        Scalar direct = 0;
        if (prod > Scalar(0) && Hb > Scalar(0)) {
          const Scalar phi = prod / Hb;
          sa += hp[b] / Hb - phi / Hb;
          sc -= phi / Hb;
          direct = Hpb / Hb;
        }
        dp[b] = gF * (direct + sa);
        dn[b] = gF * sc;
      }
      const Label yi = labels[i];
      for (Index j = 0; j < n; ++j) {
        if (j == i) {
          G(i, j) = 0;
          continue;
        }
        const Scalar* dh = labels[j] == yi ? dp : dn;
        Scalar g = 0;
        kernels(M(i, j), [&](Index b, Scalar, Scalar slope) { g += dh[b] * slope; });
        G(i, j) = g;
      }
    };
    detail::parallel_for(n, par, row_grad);
    dist_.backward_self(*grad);
    return value;
  }

  /// Calls f(b, K_b(x), dK_b/dx) for every kernel b that is positive at x (at most two, a few checked).
  template <class F>
  void kernels(Scalar x, F&& f) const {
    const Index nb = num_bins;
    const Scalar pos = x / delta_;
    Index k = pos < Scalar(0) ? Index(0) : (pos > Scalar(nb) ? nb : static_cast<Index>(std::floor(pos)));
    const Index lo = std::max<Index>(k - 1, 0), hi = std::min<Index>(k + 2, nb);
    for (Index b = lo; b <= hi; ++b) {
      const Scalar diff = x - mid_[static_cast<std::size_t>(b)];
      const Scalar ad = std::abs(diff);
      if (!(ad < delta_)) continue;  // |diff| >= delta gives |diff| / delta >= 1 after rounding too: no kernel
      const Scalar pulse = Scalar(1) - ad / delta_;
      if (pulse > Scalar(0)) {
        // torch: relu'(u) = [u > 0], d|u|/du = sign(u) with sign(0) = 0.
        const Scalar slope = diff > Scalar(0) ? Scalar(-1) / delta_ : (diff < Scalar(0) ? Scalar(1) / delta_ : Scalar(0));
        f(b, pulse, slope);
      }
    }
  }

  detail::LossDistanceMatrix<Scalar> dist_;
  Scalar delta_ = 1;
  std::vector<std::pair<Label, Index>> order_;
  std::vector<Index> npos_, anchor_, counts_;
  std::vector<Scalar> weight_, mid_, hist_, dhist_, fastap_, val_, coeff_, elem_coeff_;
  std::vector<unsigned char> kept_;
  LossStats stats_;
};

}  // namespace kshot

#endif  // KSHOT_LOSSES_FASTAP_HPP
