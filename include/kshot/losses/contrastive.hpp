/**
 * @file kshot/losses/contrastive.hpp
 * @brief Contrastive loss (Hadsell et al. 2006) over positive and negative pairs, with its exact gradient:
 * pytorch-metric-learning's ContrastiveLoss.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_LOSSES_CONTRASTIVE_HPP
#define KSHOT_LOSSES_CONTRASTIVE_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"
#include "kshot/core/workspace.hpp"
#include "kshot/losses/common.hpp"
#include "kshot/losses/detail/distance_matrix.hpp"

#include <algorithm>
#include <type_traits>
#include <vector>

namespace kshot {

namespace detail {

/// Totals of one row of the contrastive loss (see contrastive_row_totals).
template <class Scalar>
struct ContrastiveRowTotals {
  Scalar pos_sum = 0, neg_sum = 0;
  Index pos_count = 0, pos_active = 0, neg_active = 0;
};

/**
 * @brief Sums over one row of the distance matrix: relu(ps (m - pm)) over the entries whose label equals
 * `li` and relu(ns (m - nm)) over the others, with their counts.
 *
 * `lab` holds the labels as dense class ids converted to Scalar (exact), so that the label test is a packet
 * comparison: the row runs in Eigen packets with masks (Eigen's boolean array expressions are not vectorised,
 * and cost more than the distance GEMM). Counts are accumulated as Scalar (exact below 2^24 per lane). The
 * lanes are reduced in a fixed order, so the result does not depend on the thread that runs the row.
 */
template <class Scalar>
ContrastiveRowTotals<Scalar> contrastive_row_totals(const Scalar* m, const Scalar* lab, Index n, Scalar li, Scalar ps,
                                                    Scalar pm, Scalar ns, Scalar nm) noexcept {
  namespace ei = Eigen::internal;
  using Packet = typename ei::packet_traits<Scalar>::type;
  constexpr Index width = ei::packet_traits<Scalar>::size;
  const Packet zero = ei::pset1<Packet>(Scalar(0)), one = ei::pset1<Packet>(Scalar(1));
  const Packet lip = ei::pset1<Packet>(li), psp = ei::pset1<Packet>(ps), pmp = ei::pset1<Packet>(pm);
  const Packet nsp = ei::pset1<Packet>(ns), nmp = ei::pset1<Packet>(nm);
  Packet psum = zero, nsum = zero, pc = zero, pa = zero, na = zero;
  Index j = 0;
  for (; j + width <= n; j += width) {
    const Packet mv = ei::ploadu<Packet>(m + j);
    const Packet same = ei::pcmp_eq(ei::ploadu<Packet>(lab + j), lip);
    const Packet pv = ei::pmax(ei::pmul(psp, ei::psub(mv, pmp)), zero);
    const Packet nv = ei::pmax(ei::pmul(nsp, ei::psub(mv, nmp)), zero);
    psum = ei::padd(psum, ei::pand(same, pv));
    nsum = ei::padd(nsum, ei::pandnot(nv, same));
    pc = ei::padd(pc, ei::pand(same, one));
    pa = ei::padd(pa, ei::pand(ei::pand(same, ei::pcmp_lt(zero, pv)), one));
    na = ei::padd(na, ei::pandnot(ei::pand(ei::pcmp_lt(zero, nv), one), same));
  }
  ContrastiveRowTotals<Scalar> t;
  t.pos_sum = ei::predux(psum);
  t.neg_sum = ei::predux(nsum);
  Scalar pcs = ei::predux(pc), pas = ei::predux(pa), nas = ei::predux(na);
  for (; j < n; ++j) {
    const Scalar pv = std::max(ps * (m[j] - pm), Scalar(0));
    const Scalar nv = std::max(ns * (m[j] - nm), Scalar(0));
    if (lab[j] == li) {
      t.pos_sum += pv;
      pcs += 1;
      pas += pv > Scalar(0) ? 1 : 0;
    } else {
      t.neg_sum += nv;
      nas += nv > Scalar(0) ? 1 : 0;
    }
  }
  t.pos_count = static_cast<Index>(pcs);
  t.pos_active = static_cast<Index>(pas);
  t.neg_active = static_cast<Index>(nas);
  return t;
}

/// One row of the contrastive loss's dL/dM: gp where a same-label entry is active, gn where another is.
template <class Scalar>
void contrastive_row_grad(const Scalar* __restrict m, const Scalar* __restrict lab, Index n, Scalar li, Scalar ps,
                          Scalar pm, Scalar ns, Scalar nm, Scalar gp, Scalar gn, Scalar* __restrict g) noexcept {
  for (Index j = 0; j < n; ++j) {
    const bool same = lab[j] == li;
    const Scalar pv = ps * (m[j] - pm), nv = ns * (m[j] - nm);
    const Scalar a = pv > Scalar(0) ? gp : Scalar(0);
    const Scalar b = nv > Scalar(0) ? gn : Scalar(0);
    g[j] = same ? a : b;
  }
}

}  // namespace detail

/**
 * @brief Contrastive loss: positive pairs are pulled within `pos_margin`, negative pairs pushed beyond
 * `neg_margin`.
 *
 * With a distance d: pos = relu(d_ap − pos_margin), neg = relu(neg_margin − d_an). With a similarity s
 * the margins flip: pos = relu(pos_margin − s_ap), neg = relu(s_an − neg_margin).
 *
 * Pairs are every ordered pair (i, j), i != j, of the batch (each unordered pair counts twice), or the
 * pairs of a mined tuple (triplets (a, p, n) give pairs (a, p) and (a, n)). Reduction (default
 * Reduction::mean_nonzero): each part is averaged over its elements > 0, then the two are added. As in
 * pytorch-metric-learning, when every list of the pair tuple has at most one entry the loss is 0.
 *
 * Defaults follow pytorch-metric-learning: pos_margin 0, neg_margin 1, Euclidean distance on
 * L2-normalised embeddings. stats(): terms (pairs), active_terms (pairs > 0).
 *
 * @tparam Scalar float or double.
 * @note One object per thread: evaluate() uses the object's workspace.
 */
template <class Scalar = float>
class ContrastiveLoss {
  static_assert(std::is_floating_point_v<Scalar>, "kshot::ContrastiveLoss<Scalar>: Scalar must be float or double");

 public:
  Scalar pos_margin = Scalar(0);                ///< any finite value
  Scalar neg_margin = Scalar(1);                ///< any finite value
  LossDistance distance = LossDistance::lp();   ///< pytorch-metric-learning's default LpDistance
  Reduction reduction = Reduction::loss_default;  ///< default: mean over the pairs > 0, per part

  /// The loss over every pair the labels give, or over the mined pairs or triplets.
  Scalar evaluate(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels, Mined mined = {}) {
    return run(emb, labels, mined, nullptr);
  }
  /// The loss, and its gradient with respect to `emb` written to `grad` (n x d, overwritten).
  Scalar evaluate(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels, Mined mined, RowMatrixRef<Scalar> grad) {
    return run(emb, labels, mined, &grad);
  }
  /// The loss over every pair the labels give, and its gradient.
  Scalar evaluate(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels, RowMatrixRef<Scalar> grad) {
    return run(emb, labels, Mined{}, &grad);
  }

  /// Counts from the last call.
  const LossStats& stats() const noexcept { return stats_; }

  /// Pre-sizes the workspace for n embeddings of dimension d.
  void reserve(Index n, Index d) { dist_.reserve(n, n, d); }

 private:
  Scalar run(const ConstRowMatrixRef<Scalar>& emb, const ConstLabelRef& labels, const Mined& mined,
             RowMatrixRef<Scalar>* grad) {
    constexpr const char* where = "kshot::ContrastiveLoss::evaluate()";
    detail::check_embeddings(emb, labels, where);
    detail::check_distance(distance, where);
    detail::check_mined(mined, emb.rows(), where);
    KSHOT_CHECK(std::isfinite(pos_margin), where, detail::cat("pos_margin is ", pos_margin, " but must be finite"));
    KSHOT_CHECK(std::isfinite(neg_margin), where, detail::cat("neg_margin is ", neg_margin, " but must be finite"));
    if (grad != nullptr) detail::check_grad(*grad, emb.rows(), emb.cols(), where, "grad");
    stats_ = LossStats{};
    const Index n = emb.rows();
    if (grad != nullptr) grad->setZero();

    // pytorch-metric-learning returns a zero loss when every list of the pair tuple has at most one entry.
    if (tuple_is_trivial(mined, labels)) return Scalar(0);

    const detail::ReduceMode mode = detail::resolve_reduction(reduction, detail::ReduceMode::mean_nonzero);
    const bool inv = distance.is_inverted();
    // d(element)/dM for an active element: pos = relu(margin(M, pm)), neg = relu(margin(nm, M)).
    const Scalar pos_sign = inv ? Scalar(-1) : Scalar(1);
    const Scalar neg_sign = -pos_sign;
    auto pos_elem = [&](Scalar m) { const Scalar v = distance.margin(m, pos_margin); return v > Scalar(0) ? v : Scalar(0); };
    auto neg_elem = [&](Scalar m) { const Scalar v = distance.margin(neg_margin, m); return v > Scalar(0) ? v : Scalar(0); };

    if (!mined.none()) {
      detail::pairs_from(mined, labels, pairs_);
      const Index listed = static_cast<Index>(pairs_.a1.size() + pairs_.a2.size());
      // A short list needs only its own distances (computed directly); a long one the whole matrix.
      const bool sparse = listed * 8 < n * n;
      if (sparse) dist_.prepare_rows(distance, emb, stats_);
      else dist_.compute_self(distance, emb, stats_);
      auto at = [&](Index i, Index j) { return sparse ? dist_.entry(i, j) : dist_.matrix()(i, j); };
      detail::PartTotals<Scalar> pos, neg;
      for (std::size_t k = 0; k < pairs_.a1.size(); ++k) pos.add(pos_elem(at(pairs_.a1[k], pairs_.p[k])));
      for (std::size_t k = 0; k < pairs_.a2.size(); ++k) neg.add(neg_elem(at(pairs_.a2[k], pairs_.n[k])));
      Scalar cp = 0, cn = 0;
      const Scalar value = detail::finish_part(pos, mode, Scalar(0), cp, stats_) +
                           detail::finish_part(neg, mode, Scalar(0), cn, stats_);
      if (grad == nullptr) return value;
      auto G = sparse ? dist_.matrix() : dist_.grad(/*zero=*/true);  // (unused in the sparse mode)
      auto add = [&](Index i, Index j, Scalar g) {
        if (sparse) dist_.entry_backward(i, j, g);
        else G(i, j) += g;
      };
      for (std::size_t k = 0; k < pairs_.a1.size(); ++k) {
        const Index i = pairs_.a1[k], j = pairs_.p[k];
        const Scalar v = pos_elem(at(i, j));
        if (v > Scalar(0)) add(i, j, detail::element_coeff(v, cp, mode) * pos_sign);
      }
      for (std::size_t k = 0; k < pairs_.a2.size(); ++k) {
        const Index i = pairs_.a2[k], j = pairs_.n[k];
        const Scalar v = neg_elem(at(i, j));
        if (v > Scalar(0)) add(i, j, detail::element_coeff(v, cn, mode) * neg_sign);
      }
      if (sparse) dist_.sparse_backward(*grad);
      else dist_.backward_self(*grad);
      return value;
    }

    // Every ordered pair, row by row: per-row totals, merged in row order (deterministic for any number of
    // threads). Plain vectorisable loops: Eigen's boolean-mask expressions do not vectorise and cost more than
    // the distance GEMM here.
    dist_.compute_self(distance, emb, stats_);
    auto M = dist_.matrix();
    const Scalar* lab = dense_labels(labels);
    row_pos_.resize(static_cast<std::size_t>(n));
    row_neg_.resize(static_cast<std::size_t>(n));
    // relu(margin(M, pm)) and relu(margin(nm, M)) are pos_sign * (m - pm) and neg_sign * (m - nm) clamped at 0
    // (exact: the signs are +-1).
    const Scalar pm = pos_margin, nm = neg_margin;
    auto row_totals = [&](Index i) {
      const auto t = detail::contrastive_row_totals(M.row(i).data(), lab, n, lab[i], pos_sign, pm, neg_sign, nm);
      detail::PartTotals<Scalar> tp, tn;
      // Remove the diagonal, which the row counted as a positive pair.
      const Scalar diag = pos_elem(M(i, i));
      tp.sum = t.pos_sum - diag;
      tp.count = t.pos_count - 1;
      tp.active = t.pos_active - (diag > Scalar(0) ? 1 : 0);
      tn.sum = t.neg_sum;
      tn.count = n - 1 - tp.count;
      tn.active = t.neg_active;
      tp.sum_active = tp.sum;  // relu elements: the sum of those > 0 is the sum
      tn.sum_active = tn.sum;
      row_pos_[static_cast<std::size_t>(i)] = tp;
      row_neg_[static_cast<std::size_t>(i)] = tn;
    };
    detail::for_owned_rows(n, detail::worth_parallel(n, double(n) * double(n) * 4), row_totals);
    detail::PartTotals<Scalar> pos, neg;
    for (Index i = 0; i < n; ++i) {
      pos.merge(row_pos_[static_cast<std::size_t>(i)]);
      neg.merge(row_neg_[static_cast<std::size_t>(i)]);
    }
    Scalar cp = 0, cn = 0;
    const Scalar value = detail::finish_part(pos, mode, Scalar(0), cp, stats_) +
                         detail::finish_part(neg, mode, Scalar(0), cn, stats_);
    if (grad == nullptr) return value;

    // dL/dM: the part's coefficient where the element is > 0 (relu' = 1), 0 elsewhere and on the diagonal.
    // Pairs (i, j) and (j, i) share their distance and label relation, so dL/dM is symmetric.
    auto G = dist_.grad(/*zero=*/false);
    const Scalar gp = cp * pos_sign, gn = cn * neg_sign;
    auto row_grad = [&](Index i) {
      detail::contrastive_row_grad(M.row(i).data(), lab, n, lab[i], pos_sign, pm, neg_sign, nm, gp, gn, G.row(i).data());
      G(i, i) = 0;
    };
    detail::for_owned_rows(n, detail::worth_parallel(n, double(n) * double(n) * 4), row_grad);
    dist_.backward_self_symmetric(*grad);
    return value;
  }

  /// The labels as dense class ids 0..C-1 (ordered as the labels), converted to Scalar: exact, whatever
  /// the caller's label values, so that rows compare labels in packets.
  const Scalar* dense_labels(const ConstLabelRef& labels) {
    const Index n = labels.size();
    sorted_.assign(labels.data(), labels.data() + n);
    std::sort(sorted_.begin(), sorted_.end());
    sorted_.erase(std::unique(sorted_.begin(), sorted_.end()), sorted_.end());
    dense_.resize(static_cast<std::size_t>(n));
    for (Index i = 0; i < n; ++i)
      dense_[static_cast<std::size_t>(i)] = static_cast<Scalar>(
          std::lower_bound(sorted_.begin(), sorted_.end(), labels[i]) - sorted_.begin());
    return dense_.data();
  }

  /// pytorch-metric-learning's `all(len(x) <= 1 for x in indices_tuple)`.
  static bool tuple_is_trivial(const Mined& mined, const ConstLabelRef& labels) {
    if (const MinedPairs* p = mined.pairs())
      return p->a1.size() <= 1 && p->a2.size() <= 1;
    if (const MinedTriplets* t = mined.triplets()) return t->a.size() <= 1;
    Index pos = 0, neg = 0;
    const Index n = labels.size();
    for (Index i = 0; i < n && pos <= 1 && neg <= 1; ++i)
      for (Index j = 0; j < n; ++j) {
        if (i == j) continue;
        if (labels[i] == labels[j]) ++pos;
        else ++neg;
      }
    return pos <= 1 && neg <= 1;
  }

  detail::LossDistanceMatrix<Scalar> dist_;
  MinedPairs pairs_;
  std::vector<detail::PartTotals<Scalar>> row_pos_, row_neg_;
  std::vector<Label> sorted_;
  std::vector<Scalar> dense_;
  LossStats stats_;
};

}  // namespace kshot

#endif  // KSHOT_LOSSES_CONTRASTIVE_HPP
