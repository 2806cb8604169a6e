/**
 * @file kshot/losses/margin.hpp
 * @brief Margin loss (Wu et al. 2017, "Sampling Matters in Deep Embedding Learning") with a shared or
 * per-class boundary beta, with exact gradients for the embeddings and for beta: pytorch-metric-learning's
 * MarginLoss.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_LOSSES_MARGIN_HPP
#define KSHOT_LOSSES_MARGIN_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"
#include "kshot/losses/common.hpp"
#include "kshot/losses/detail/distance_matrix.hpp"
#include "kshot/losses/detail/pair_masks.hpp"
#include "kshot/losses/triplet.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

namespace kshot {

namespace detail {
namespace margin_rows {

/// Sums and counts of one row's hinge terms, by side.
template <class Scalar>
struct HingeRow {
  Scalar pos_sum = 0, pos_count = 0, neg_sum = 0, neg_count = 0;
};

/**
 * @brief One row of the margin loss in label order: the positives are the columns [bs, be) but r, the
 * negatives the columns outside [bs, be). pos_j = (x_j − b) + m and neg_j = (b − x_j) + m (the other way
 * round when `inverted`); sums and counts of those > 0 by side, and, when g is not null, g_j = gp for an
 * active positive, gn for an active negative, and 0 elsewhere (r included): every entry of the row written.
 *
 * Vectorised with Eigen's packet primitives over the whole row, whatever its alignment: packets clear of
 * [bs, be) take the negatives' path, the few that meet it pick each lane's side by its column. Each term is
 * the same rounded expression as the scalar form (detail::relu_row's), so the results depend on the row,
 * r, bs and be only.
 */
template <class Scalar>
void hinge_row(const Scalar* x, Index n, Index r, Index bs, Index be, Scalar b, Scalar m, bool inverted, Scalar gp,
               Scalar gn, Scalar* g, HingeRow<Scalar>& out) noexcept {
  namespace ei = Eigen::internal;
  using P = typename ei::packet_traits<Scalar>::type;
  constexpr Index S = ei::packet_traits<Scalar>::size;
  const P pb = ei::pset1<P>(b), pm = ei::pset1<P>(m), zero = ei::pset1<P>(Scalar(0)), one = ei::pset1<P>(Scalar(1));
  const P pgp = ei::pset1<P>(gp), pgn = ei::pset1<P>(gn);
  P sp = zero, cp = zero, sn = zero, cn = zero;
  // Column numbers as Scalars (exact below 2^24 for float: far beyond any n x n matrix that fits in memory).
  P lane = zero;
  {
    Scalar tmp[S];
    for (Index k = 0; k < S; ++k) tmp[k] = Scalar(k);
    lane = ei::ploadu<P>(tmp);
  }
  const P pbs = ei::pset1<P>(Scalar(bs)), pbe = ei::pset1<P>(Scalar(be)), pr = ei::pset1<P>(Scalar(r));
  Index j = 0;
  for (; j + S <= n; j += S) {
    const P v = ei::ploadu<P>(x + j);
    const P up = ei::padd(ei::psub(v, pb), pm);  // (x - b) + m
    const P down = ei::padd(ei::psub(pb, v), pm);  // (b - x) + m
    const P neg_v = inverted ? up : down;
    if (j + S <= bs || j >= be) {
      const P mask = ei::pcmp_lt(zero, neg_v);
      sn = ei::padd(sn, ei::pand(mask, neg_v));
      cn = ei::padd(cn, ei::pand(mask, one));
      if (g != nullptr) ei::pstoreu(g + j, ei::pand(mask, pgn));
      continue;
    }
    const P pos_v = inverted ? down : up;
    const P col = ei::padd(ei::pset1<P>(Scalar(j)), lane);
    const P in_block = ei::pand(ei::pcmp_le(pbs, col), ei::pcmp_lt(col, pbe));
    const P is_pos = ei::pandnot(in_block, ei::pcmp_eq(col, pr));
    const P pmask = ei::pand(is_pos, ei::pcmp_lt(zero, pos_v));
    const P nmask = ei::pandnot(ei::pcmp_lt(zero, neg_v), in_block);
    sp = ei::padd(sp, ei::pand(pmask, pos_v));
    cp = ei::padd(cp, ei::pand(pmask, one));
    sn = ei::padd(sn, ei::pand(nmask, neg_v));
    cn = ei::padd(cn, ei::pand(nmask, one));
    if (g != nullptr) ei::pstoreu(g + j, ei::por(ei::pand(pmask, pgp), ei::pand(nmask, pgn)));
  }
  Scalar tsp = 0, tcp = 0, tsn = 0, tcn = 0;
  for (; j < n; ++j) {
    Scalar gj = 0;
    if (j >= bs && j < be) {
      if (j != r) {
        const Scalar v = (inverted ? b - x[j] : x[j] - b) + m;
        if (v > Scalar(0)) {
          tsp += v;
          tcp += Scalar(1);
          gj = gp;
        }
      }
    } else {
      const Scalar v = (inverted ? x[j] - b : b - x[j]) + m;
      if (v > Scalar(0)) {
        tsn += v;
        tcn += Scalar(1);
        gj = gn;
      }
    }
    if (g != nullptr) g[j] = gj;
  }
  out.pos_sum = ei::predux(sp) + tsp;
  out.pos_count = ei::predux(cp) + tcp;
  out.neg_sum = ei::predux(sn) + tsn;
  out.neg_count = ei::predux(cn) + tcn;
}

}  // namespace margin_rows
}  // namespace detail

/**
 * @brief Margin loss: positives should lie within beta − margin of the anchor, negatives beyond
 * beta + margin, with beta a boundary shared by all classes or one per class.
 *
 * For a triplet (a, p, n) with a distance d and b = beta[0] (shared) or beta[label(a)] (per class):
 * @f[ \mathrm{pos} = \max(d(a, p) - b + \mathrm{margin}, 0), \qquad
 *     \mathrm{neg} = \max(b - d(a, n) + \mathrm{margin}, 0), @f]
 * and with a similarity s the margins flip: pos = max(b − s(a, p) + margin, 0), neg = max(s(a, n) − b +
 * margin, 0) (pytorch-metric-learning's `distance.margin(d_ap, beta)` and `distance.margin(beta, d_an)`).
 * The element of a triplet is pos + neg, so the pos term repeats once per negative of its anchor.
 *
 * Reduction (default: pytorch-metric-learning's DivisorReducer): the sum of the elements divided by the
 * number of pos terms > 0 plus the number of neg terms > 0, both counted over triplets (0 when that
 * divisor is 0). Reduction::mean, ::sum and ::mean_nonzero reduce the elements that way instead (what
 * pytorch-metric-learning does when that reducer is given for both sub-losses).
 *
 * When `learn_beta` is on, pytorch-metric-learning's regulariser beta · nu is added: with one shared beta,
 * beta[0] · nu as is (an already-reduced term, with every reduction); with per-class beta, the elements
 * beta[label(a)] · nu of every triplet, reduced like the main part (divided by the same divisor by
 * default; mean, sum, or mean of those > 0 otherwise). When there is no triplet at all the loss is 0,
 * regulariser included. With `learn_beta` off the regulariser is absent, but the loss still depends on
 * beta through the margins, and the `grad_beta` overload returns that derivative.
 *
 * Triplets: every (a, p, n) with a != p, label(a) = label(p) != label(n) when nothing is mined and
 * `triplets_per_anchor` = 0, streamed per anchor in O(n) each (pos and neg separate, so the P·N triplets of
 * an anchor are never formed; memory O(n^2)), with the rows in label order so that each anchor's positives
 * are one block of its row and one vectorised pass covers the row (detail::margin_rows::hinge_row); k > 0
 * random triplets per anchor (detail::draw_random_triplets: kshot's RandomStream(seed, anchor), not
 * torch's generator, so the draw differs from pytorch-metric-learning's); mined triplets as given, mined
 * pairs joined per anchor (convert_to_triplets).
 *
 * Defaults follow pytorch-metric-learning: margin 0.2, nu 0, beta {1.2}, learn_beta off, every triplet,
 * Euclidean distance on L2-normalised embeddings. Per-class beta has one entry per class, and every label
 * must then lie in [0, beta.size()). stats(): terms (triplets), active_terms (elements > 0),
 * skipped_anchors (anchors without a positive or a negative, for triplets from the labels), degenerate
 * (zero-norm rows).
 *
 * Deliberate differences: sums are accumulated in double and anchor by anchor (rounding only); the random
 * draw (above).
 *
 * @code
 * @inproceedings{wu2017sampling,
 *   title={Sampling Matters in Deep Embedding Learning},
 *   author={Wu, Chao-Yuan and Manmatha, R. and Smola, Alexander J. and Kr{\"a}henb{\"u}hl, Philipp},
 *   booktitle={ICCV}, year={2017}}
 * @endcode
 *
 * @tparam Scalar float or double.
 * @note One object per thread: evaluate() uses the object's workspace; a second call with the same shapes
 * (and thread count) allocates nothing of kshot's own. The elementwise phase is row-parallel with per-anchor
 * totals merged in row order (label order for every triplet of the labels, list order for a list), so
 * results are bitwise identical for any thread count.
 */
template <class Scalar = float>
class MarginLoss {
  static_assert(is_supported_scalar_v<Scalar>, "kshot::MarginLoss<Scalar>: Scalar must be float or double");

 public:
  Scalar margin = Scalar(0.2);                                      ///< any finite value
  Scalar nu = Scalar(0);                                            ///< regulariser weight (learn_beta); finite
  VectorX<Scalar> beta = VectorX<Scalar>::Constant(1, Scalar(1.2));  ///< 1 entry (shared) or one per class
  bool learn_beta = false;                                          ///< add the regulariser beta · nu
  Index triplets_per_anchor = 0;  ///< 0: every triplet; k > 0: k random triplets per anchor
  std::uint64_t seed = 0;         ///< seed of the random triplets (triplets_per_anchor > 0)
  LossDistance distance = LossDistance::lp();     ///< pytorch-metric-learning's default LpDistance
  Reduction reduction = Reduction::loss_default;  ///< default: DivisorReducer (see the class comment)

  /// The loss over every triplet the labels give (or random ones), or over the mined triplets or pairs.
  Scalar evaluate(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels, Mined mined = {}) {
    return run(emb, labels, mined, nullptr, nullptr);
  }
  /// The loss, and its gradient with respect to `emb` written to `grad` (n x d, overwritten).
  Scalar evaluate(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels, Mined mined, RowMatrixRef<Scalar> grad) {
    return run(emb, labels, mined, &grad, nullptr);
  }
  /// The loss over every triplet the labels give (or random ones), and its gradient.
  Scalar evaluate(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels, RowMatrixRef<Scalar> grad) {
    return run(emb, labels, Mined{}, &grad, nullptr);
  }
  /// The loss, its gradient for `emb`, and its derivative with respect to `beta` written to `grad_beta`
  /// (beta.size() entries, overwritten; the regulariser included when learn_beta is on).
  Scalar evaluate(ConstRowMatrixRef<Scalar> emb, ConstLabelRef labels, Mined mined, RowMatrixRef<Scalar> grad,
                  VectorRef<Scalar> grad_beta) {
    return run(emb, labels, mined, &grad, &grad_beta);
  }

  /// Counts from the last call.
  const LossStats& stats() const noexcept { return stats_; }

  /// Pre-sizes the workspace for n embeddings of dimension d.
  void reserve(Index n, Index d) {
    dist_.reserve(n, n, d);
    order_.reserve(n, d);
    anchors_.reserve(static_cast<std::size_t>(n));
    class_triplets_.reserve(static_cast<std::size_t>(beta.size()));
    beta_unit_.reserve(static_cast<std::size_t>(beta.size()));
  }

 private:
  /// One anchor's share of the loss.
  struct AnchorTotals {
    double sum = 0;          ///< sum of its elements
    Index count = 0;         ///< triplets
    Index active = 0;        ///< elements > 0
    Index pos_active = 0;    ///< pos terms > 0, counted over triplets
    Index neg_active = 0;    ///< neg terms > 0, counted over triplets
    double beta_unit = 0;    ///< d(sum of elements) / d(its beta)
  };

  static constexpr const char* kWhere = "kshot::MarginLoss::evaluate()";

  Index beta_index(const ConstLabelRef& labels, Index a) const noexcept {
    return beta.size() == 1 ? Index(0) : Index(labels[a]);
  }

  void check(const ConstRowMatrixRef<Scalar>& emb, const ConstLabelRef& labels, const Mined& mined,
             RowMatrixRef<Scalar>* grad, VectorRef<Scalar>* grad_beta) const {
    detail::check_embeddings(emb, labels, kWhere);
    detail::check_distance(distance, kWhere);
    detail::check_mined(mined, emb.rows(), kWhere);
    KSHOT_CHECK(std::isfinite(margin), kWhere, detail::cat("margin is ", margin, " but must be finite"));
    KSHOT_CHECK(std::isfinite(nu), kWhere, detail::cat("nu is ", nu, " but must be finite"));
    KSHOT_CHECK(beta.size() >= 1, kWhere, "beta is empty but needs 1 entry (shared) or one per class");
    for (Index c = 0; c < beta.size(); ++c)
      KSHOT_CHECK(std::isfinite(beta[c]), kWhere, detail::cat("beta[", c, "] is ", beta[c], " but must be finite"));
    KSHOT_CHECK(triplets_per_anchor >= 0, kWhere,
                detail::cat("triplets_per_anchor is ", triplets_per_anchor, " but must be >= 0 (0 means every triplet)"));
    if (beta.size() > 1) {
      for (Index i = 0; i < labels.size(); ++i)
        KSHOT_CHECK_RANGE(labels[i] >= 0 && labels[i] < beta.size(), kWhere,
                          detail::cat("labels[", i, "] = ", labels[i], " is outside the ", beta.size(),
                                      " classes of the per-class beta"));
    }
    if (grad != nullptr) detail::check_grad(*grad, emb.rows(), emb.cols(), kWhere, "grad");
    if (grad_beta != nullptr)
      KSHOT_CHECK(grad_beta->size() == beta.size(), kWhere,
                  detail::cat("grad_beta has ", grad_beta->size(), " entries but beta has ", beta.size()));
  }

  Scalar run(const ConstRowMatrixRef<Scalar>& emb, const ConstLabelRef& labels, const Mined& mined,
             RowMatrixRef<Scalar>* grad, VectorRef<Scalar>* grad_beta) {
    check(emb, labels, mined, grad, grad_beta);
    stats_ = LossStats{};
    if (grad != nullptr) grad->setZero();
    if (grad_beta != nullptr) grad_beta->setZero();
    const Index C = beta.size();
    class_triplets_.assign(static_cast<std::size_t>(C), 0);
    beta_unit_.assign(static_cast<std::size_t>(C), 0.0);

    const MinedTriplets* list = mined.triplets();
    if (mined.none() && triplets_per_anchor > 0) {
      stats_.skipped_anchors = detail::draw_random_triplets(labels, triplets_per_anchor, seed, list_, pos_, neg_);
      list = &list_;
    } else if (!mined.none() && list == nullptr) {
      detail::triplets_from(mined, labels, list_);
      list = &list_;
    }
    const bool want = grad != nullptr;
    AnchorTotals total;
    if (list == nullptr) {
      // Every triplet of the labels: rows in label order, so each row's positives are one block.
      order_.build(labels);
      dist_.compute_self(distance, emb, stats_, order_.order());
      total = stream(labels, want);
    } else {
      dist_.compute_self(distance, emb, stats_);
      total = from_list(labels, *list, want);
    }
    if (total.count == 0) return Scalar(0);  // pytorch-metric-learning's zero loss, regulariser included

    // The main part.
    const detail::ReduceMode mode = detail::resolve_reduction(reduction, detail::ReduceMode::divisor);
    const double divisor = double(total.pos_active + total.neg_active);
    detail::PartTotals<double> main;
    main.sum = total.sum;
    main.sum_active = total.sum;  // elements are >= 0
    main.count = total.count;
    main.active = total.active;
    double coeff = 0;
    double value = detail::finish_part(main, mode, divisor, coeff, stats_);

    // The regulariser beta · nu.
    double reg_coeff = 0;
    if (learn_beta) {
      if (C == 1) {
        value += double(beta[0] * nu);
      } else {
        detail::PartTotals<double> reg;
        for (Index c = 0; c < C; ++c) {
          const auto T = class_triplets_[static_cast<std::size_t>(c)];
          const double r = double(beta[c] * nu);
          reg.sum += double(T) * r;
          reg.count += T;
          if (r > 0) {
            reg.sum_active += double(T) * r;
            reg.active += T;
          }
        }
        LossStats ignored;
        value += detail::finish_part(reg, mode, divisor, reg_coeff, ignored);
      }
    }

    if (grad_beta != nullptr) {
      VectorRef<Scalar>& gb = *grad_beta;
      for (Index c = 0; c < C; ++c) gb[c] = Scalar(coeff * beta_unit_[static_cast<std::size_t>(c)]);
      if (learn_beta) {
        if (C == 1) {
          gb[0] += nu;
        } else {
          for (Index c = 0; c < C; ++c) {
            const double r = double(beta[c] * nu);
            const bool counts = mode != detail::ReduceMode::mean_nonzero || r > 0;
            if (counts)
              gb[c] += Scalar(reg_coeff * double(nu) * double(class_triplets_[static_cast<std::size_t>(c)]));
          }
        }
      }
    }
    if (want && coeff != 0) {
      if (list == nullptr) {
        order_.finish_gradient(dist_, *grad, Scalar(coeff));
      } else {
        auto G = dist_.grad(/*zero=*/false);
        G *= Scalar(coeff);
        dist_.backward_self(*grad);
      }
    }
    return Scalar(value);
  }

  /// Every triplet of the labels, row by row in label order (row-parallel), merged in row order. Each row's
  /// pos and neg terms are computed once per positive and once per negative (O(n) per anchor, one
  /// vectorised pass); the unit gradients (before the part's coefficient) go to row r of grad().
  AnchorTotals stream(const ConstLabelRef& labels, bool want) {
    const Index n = labels.size();
    auto M = dist_.matrix();
    auto G = want ? dist_.grad(/*zero=*/false) : dist_.matrix();
    anchors_.assign(static_cast<std::size_t>(n), AnchorTotals{});
    const bool inv = distance.is_inverted();
    const Scalar s = inv ? Scalar(-1) : Scalar(1);  // d pos / dM; d neg / dM = -s; d pos / d beta = -s
    auto row = [&](Index r) {
      const Index a = order_.original(r);
      const Scalar b = beta[beta_index(labels, a)];
      const detail::pair_rows::Runs pos = order_.positives(r), neg = order_.negatives(r);
      const Index P = pos.size(), N = neg.size();
      if (P == 0 || N == 0) {
        if (want) G.row(r).setZero();
        return;
      }
      // pos = margin(d, b) + margin and neg = margin(b, d) + margin, as (d - b) + m or (b - d) + m. Each pos
      // term appears once per negative, each neg term once per positive.
      const Scalar gp = s * Scalar(N), gn = -s * Scalar(P);
      detail::margin_rows::HingeRow<Scalar> h;
      detail::margin_rows::hinge_row(&M(r, 0), n, r, pos.begin[0], pos.end[1], b, margin, inv, gp, gn,
                                     want ? &G(r, 0) : nullptr, h);
      const auto cpi = static_cast<Index>(h.pos_count), cni = static_cast<Index>(h.neg_count);
      AnchorTotals& t = anchors_[static_cast<std::size_t>(r)];
      t.sum = double(N) * double(h.pos_sum) + double(P) * double(h.neg_sum);
      t.count = P * N;
      t.active = P * N - (P - cpi) * (N - cni);
      t.pos_active = N * cpi;
      t.neg_active = P * cni;
      t.beta_unit = double(s) * (double(P * cni) - double(N * cpi));
    };
    detail::for_owned_rows(n, detail::worth_parallel(n, double(n) * double(n) * 4), row);
    AnchorTotals total;
    for (Index r = 0; r < n; ++r) {
      const AnchorTotals& t = anchors_[static_cast<std::size_t>(r)];
      if (t.count == 0) {
        ++stats_.skipped_anchors;
        continue;
      }
      total.sum += t.sum;
      total.count += t.count;
      total.active += t.active;
      total.pos_active += t.pos_active;
      total.neg_active += t.neg_active;
      const auto c = static_cast<std::size_t>(beta_index(labels, order_.original(r)));
      beta_unit_[c] += t.beta_unit;
      class_triplets_[c] += t.count;
    }
    return total;
  }

  /// A triplet list, serially in list order.
  AnchorTotals from_list(const ConstLabelRef& labels, const MinedTriplets& list, bool want) {
    auto M = dist_.matrix();
    auto G = want ? dist_.grad(/*zero=*/true) : dist_.matrix();
    const bool inv = distance.is_inverted();
    const Scalar s = inv ? Scalar(-1) : Scalar(1);
    AnchorTotals total;
    for (std::size_t k = 0; k < list.a.size(); ++k) {
      const Index a = list.a[k], p = list.p[k], q = list.n[k];
      const auto c = static_cast<std::size_t>(beta_index(labels, a));
      const Scalar b = beta[static_cast<Index>(c)];
      const Scalar vp = distance.margin(M(a, p), b) + margin;
      const Scalar vn = distance.margin(b, M(a, q)) + margin;
      const Scalar pos = vp > Scalar(0) ? vp : Scalar(0);
      const Scalar neg = vn > Scalar(0) ? vn : Scalar(0);
      const Scalar e = pos + neg;
      total.sum += double(e);
      ++total.count;
      if (e > Scalar(0)) ++total.active;
      ++class_triplets_[c];
      if (pos > Scalar(0)) {
        ++total.pos_active;
        beta_unit_[c] -= double(s);
        if (want) G(a, p) += s;
      }
      if (neg > Scalar(0)) {
        ++total.neg_active;
        beta_unit_[c] += double(s);
        if (want) G(a, q) -= s;
      }
    }
    return total;
  }

  detail::LossDistanceMatrix<Scalar> dist_;
  detail::pair_rows::LabelOrder<Scalar> order_;
  std::vector<AnchorTotals> anchors_;
  std::vector<Index> class_triplets_;  ///< triplets per beta entry
  std::vector<double> beta_unit_;      ///< d(sum of elements) / d beta, per beta entry
  MinedTriplets list_;
  std::vector<Index> pos_, neg_;
  LossStats stats_;
};

}  // namespace kshot

#endif  // KSHOT_LOSSES_MARGIN_HPP
