/**
 * @file kshot/losses/lifted.hpp
 * @brief Lifted structure loss (Oh Song et al. 2016) and its generalised form (Hermans et al. 2017) over
 * positive and negative pairs, with exact gradients: pytorch-metric-learning's LiftedStructureLoss and
 * GeneralizedLiftedStructureLoss.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_LOSSES_LIFTED_HPP
#define KSHOT_LOSSES_LIFTED_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"
#include "kshot/core/workspace.hpp"
#include "kshot/losses/common.hpp"
#include "kshot/losses/detail/distance_matrix.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

namespace kshot {
namespace detail {

/**
 * @brief Rows grouped by label: `members` lists the rows sorted by (label, row), and row i's class
 * occupies members[begin(i), begin(i) + size(i)), where it sits at position rank(i).
 */
struct LiftedGroups {
  std::vector<std::pair<Label, Index>> order;
  std::vector<Index> members, first, count, rank;
  std::vector<Index> block;  ///< offset of row i's class in a per-class size x size block storage
  Index block_total = 0;     ///< sum over classes of size^2
  Index classes = 0;

  void build(const ConstLabelRef& labels) {
    const Index n = labels.size();
    const auto un = static_cast<std::size_t>(n);
    order.clear();
    for (Index i = 0; i < n; ++i) order.emplace_back(labels[i], i);
    std::sort(order.begin(), order.end());
    members.resize(un);
    first.resize(un);
    count.resize(un);
    rank.resize(un);
    block.resize(un);
    block_total = 0;
    classes = 0;
    std::size_t t = 0;
    while (t < un) {
      std::size_t e = t;
      while (e < un && order[e].first == order[t].first) ++e;
      const Index size = static_cast<Index>(e - t);
      for (std::size_t u = t; u < e; ++u) {
        const auto row = static_cast<std::size_t>(order[u].second);
        members[u] = order[u].second;
        first[row] = static_cast<Index>(t);
        count[row] = size;
        rank[row] = static_cast<Index>(u - t);
        block[row] = block_total;
      }
      block_total += size * size;
      ++classes;
      t = e;
    }
  }
  /// Ordered positive pairs (i, j), i != j, equal labels.
  Index positive_pairs() const noexcept {
    Index total = 0;
    for (std::size_t i = 0; i < count.size(); ++i) total += count[i] - 1;
    return total;
  }
  /// Ordered negative pairs (different labels).
  Index negative_pairs() const noexcept {
    Index total = 0;
    const auto n = static_cast<Index>(count.size());
    for (std::size_t i = 0; i < count.size(); ++i) total += n - count[i];
    return total;
  }
};

/// pytorch-metric-learning's `all(len(x) <= 1 for x in indices_tuple)` on the pairs a pair loss uses.
inline bool lifted_tuple_is_trivial(const Mined& mined, const LiftedGroups& groups) {
  if (const MinedPairs* p = mined.pairs()) return p->a1.size() <= 1 && p->a2.size() <= 1;
  if (const MinedTriplets* t = mined.triplets()) return t->a.size() <= 1;
  return groups.positive_pairs() <= 1 && groups.negative_pairs() <= 1;
}

}  // namespace detail

/**
 * @brief Lifted structure loss: every positive pair is pushed closer than every negative pair that shares
 * one of its two rows.
 *
 * For each ordered positive pair (a, p) of the pair list, with N(a, p) the negative pairs (a2, n) of the
 * list whose anchor a2 is a or p (each listed pair counted once; a duplicate listed twice counts twice),
 * @f[ J_{ap} = \log \sum_{(a_2, n) \in N(a, p)} e^{\mathrm{margin}(m_-, d_{a_2 n})}
 *   + \mathrm{margin}(d_{ap}, m_+), \qquad L_{ap} = \tfrac12\,\mathrm{relu}(J_{ap})^2, @f]
 * where margin(x, y) = x − y for a distance and y − x for a similarity (so with a distance
 * @f$ J = \log\sum e^{m_- - d_{a_2 n}} + d_{ap} - m_+ @f$). An empty N(a, p) contributes 0 to J, as
 * pytorch-metric-learning's masked log-sum-exp. Reduction (default Reduction::mean): mean over the
 * positive pairs.
 *
 * Pairs are every ordered pair (i, j), i != j, of the batch (each unordered pair counts twice), or the
 * pairs of a mined tuple (triplets (a, p, n) give pairs (a, p) and (a, n)). Without a mined tuple the
 * log-sum-exp of a pair is log(S_a + S_p) from per-row sums S_i = Σ_n exp(margin(m_-, d_in)), kept
 * relative to their row maximum and rescaled to a per-class reference (one log per pair, O(n^2) in all,
 * never O(n^3); rows more than ~700 (double) below their class's reference use the exact pairwise
 * maximum). With a mined tuple the same per-row sums run over the negative list (O(pairs)). As in
 * pytorch-metric-learning the loss is 0 when every list of the pair tuple has at most one entry, or when
 * there is no positive or no negative pair.
 *
 * Defaults follow pytorch-metric-learning: neg_margin 1, pos_margin 0, Euclidean distance on L2-normalised
 * embeddings. stats(): terms (positive pairs), active_terms (pairs > 0), skipped_anchors (positive pairs
 * with no negative pair to compare against), degenerate (zero-norm rows).
 *
 * PML equivalent: `losses.LiftedStructureLoss(neg_margin, pos_margin)`. No deliberate difference.
 *
 * @tparam Scalar float or double.
 * @note One object per thread: evaluate() uses the object's workspace. A second call with the same shapes
 * allocates nothing of kshot's own.
 */
template <class Scalar = float>
class LiftedStructureLoss {
  static_assert(std::is_floating_point_v<Scalar>,
                "kshot::LiftedStructureLoss<Scalar>: Scalar must be float or double");

 public:
  Scalar neg_margin = Scalar(1);                  ///< any finite value
  Scalar pos_margin = Scalar(0);                  ///< any finite value
  LossDistance distance = LossDistance::lp();     ///< pytorch-metric-learning's default LpDistance
  Reduction reduction = Reduction::loss_default;  ///< default: mean over the positive pairs

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
  void reserve(Index n, Index d) {
    dist_.reserve(n, n, d);
    const auto un = static_cast<std::size_t>(n);
    for (auto* v : {&row_max_, &row_sum_, &row_b_, &row_ref_, &row_e_, &row_sc_}) v->reserve(un);
    row_fast_.reserve(un);
    row_skip_.reserve(un);
    row_tot_.reserve(un);
  }

 private:
  Scalar run(const ConstRowMatrixRef<Scalar>& emb, const ConstLabelRef& labels, const Mined& mined,
             RowMatrixRef<Scalar>* grad) {
    constexpr const char* where = "kshot::LiftedStructureLoss::evaluate()";
    detail::check_embeddings(emb, labels, where);
    detail::check_distance(distance, where);
    detail::check_mined(mined, emb.rows(), where);
    KSHOT_CHECK(std::isfinite(pos_margin), where, detail::cat("pos_margin is ", pos_margin, " but must be finite"));
    KSHOT_CHECK(std::isfinite(neg_margin), where, detail::cat("neg_margin is ", neg_margin, " but must be finite"));
    if (grad != nullptr) detail::check_grad(*grad, emb.rows(), emb.cols(), where, "grad");
    stats_ = LossStats{};
    const Index n = emb.rows();
    const detail::ZeroGradientUnlessWritten<Scalar, detail::LossDistanceMatrix<Scalar>> zero_unless_written(grad, dist_);

    groups_.build(labels);
    if (detail::lifted_tuple_is_trivial(mined, groups_)) return Scalar(0);
    if (mined.none()) {
      if (groups_.positive_pairs() == 0 || groups_.negative_pairs() == 0) return Scalar(0);
    } else {
      detail::pairs_from(mined, labels, pairs_);
      if (pairs_.a1.empty() || pairs_.a2.empty()) return Scalar(0);
    }

    dist_.compute_self(distance, emb, stats_);
    const auto un = static_cast<std::size_t>(n);
    row_max_.assign(un, Scalar(0));
    row_sum_.assign(un, Scalar(0));
    const detail::ReduceMode mode = detail::resolve_reduction(reduction, detail::ReduceMode::mean);
    return mined.none() ? run_all(n, mode, grad) : run_mined(n, mode, grad);
  }

  Scalar neg_value(Scalar m) const noexcept { return distance.margin(neg_margin, m); }
  Scalar pos_value(Scalar m) const noexcept { return distance.margin(m, pos_margin); }
  /// d margin(neg_margin, m) / dm and d margin(m, pos_margin) / dm.
  Scalar neg_sign() const noexcept { return distance.is_inverted() ? Scalar(1) : Scalar(-1); }
  Scalar pos_sign() const noexcept { return distance.is_inverted() ? Scalar(-1) : Scalar(1); }

  /// log(S_a + S_p) (or log S_a when a == p) with S_i = row_sum_[i] exp(row_max_[i]); 0 when both are empty.
  /// Symmetric in (a, p) to the last bit. `kept` tells whether any negative was there.
  Scalar pair_lse(Index a, Index p, bool& kept) const noexcept {
    const auto ua = static_cast<std::size_t>(a), up = static_cast<std::size_t>(p);
    const bool ha = row_sum_[ua] > Scalar(0);
    const bool hp = a != p && row_sum_[up] > Scalar(0);
    kept = ha || hp;
    if (ha && hp) {
      const Scalar mx = std::max(row_max_[ua], row_max_[up]);
      return mx + std::log(row_sum_[ua] * std::exp(row_max_[ua] - mx) + row_sum_[up] * std::exp(row_max_[up] - mx));
    }
    if (ha) return row_max_[ua] + std::log(row_sum_[ua]);
    if (hp) return row_max_[up] + std::log(row_sum_[up]);
    return Scalar(0);
  }

  /// Per class, the largest row maximum R_c, and per row e_i = exp(max_i - R_c) and S'_i = sum_i e_i: a
  /// positive pair's log-sum-exp is then R_c + log(S'_a + S'_p), one log and no exp. Rows whose e_i would
  /// fall below the smallest normal number (a row maximum ~87 (float) or ~708 (double) under its class's)
  /// take the exact pairwise form instead.
  void class_reference(Index n) {
    const auto un = static_cast<std::size_t>(n);
    row_ref_.resize(un);
    row_e_.resize(un);
    row_sc_.resize(un);
    row_fast_.resize(un);
    for (std::size_t t = 0; t < un;) {
      const Index c = groups_.count[static_cast<std::size_t>(groups_.members[t])];
      const std::size_t end = t + static_cast<std::size_t>(c);
      Scalar ref = std::numeric_limits<Scalar>::lowest();
      bool any = false;
      for (std::size_t u = t; u < end; ++u) {
        const auto row = static_cast<std::size_t>(groups_.members[u]);
        if (row_sum_[row] > Scalar(0)) {
          ref = std::max(ref, row_max_[row]);
          any = true;
        }
      }
      for (std::size_t u = t; u < end; ++u) {
        const auto row = static_cast<std::size_t>(groups_.members[u]);
        row_ref_[row] = any ? ref : Scalar(0);
        if (row_sum_[row] > Scalar(0)) {
          const Scalar e = std::exp(row_max_[row] - ref);
          row_e_[row] = e;
          row_sc_[row] = row_sum_[row] * e;
          row_fast_[row] = e >= std::numeric_limits<Scalar>::min() ? 1 : 0;
        } else {
          row_e_[row] = 0;
          row_sc_[row] = 0;
          row_fast_[row] = 1;
        }
      }
      t = end;
    }
  }

  /// pair_lse(a, p) for a != p of the same class, through the class reference when both rows allow it.
  Scalar class_pair_lse(Index a, Index p, bool& kept) const noexcept {
    const auto ua = static_cast<std::size_t>(a), up = static_cast<std::size_t>(p);
    if (row_fast_[ua] && row_fast_[up]) {
      const Scalar sum = row_sc_[ua] + row_sc_[up];
      kept = sum > Scalar(0);
      return kept ? row_ref_[ua] + std::log(sum) : Scalar(0);
    }
    return pair_lse(a, p, kept);
  }

  /// exp(max_a - lse(a, p)): the factor turning E(a, n) into the softmax weight of negative (a, n) in the
  /// log-sum-exp of pair (a, p) or (p, a); 0 when row a has no negative.
  Scalar class_pair_weight(Index a, Index p) const noexcept {
    const auto ua = static_cast<std::size_t>(a), up = static_cast<std::size_t>(p);
    if (!(row_sum_[ua] > Scalar(0))) return Scalar(0);
    if (row_fast_[ua] && row_fast_[up]) return row_e_[ua] / (row_sc_[ua] + row_sc_[up]);
    bool kept = false;
    return std::exp(row_max_[ua] - pair_lse(a, p, kept));
  }

  /// Every ordered pair of the batch: O(n^2) through per-row sums.
  Scalar run_all(Index n, detail::ReduceMode mode, RowMatrixRef<Scalar>* grad) {
    auto M = dist_.matrix();
    // G holds E(i, j) = exp(v_ij - max_i) for the negatives of row i (0 elsewhere) until the gradient
    // overwrites it; v_ij = margin(neg_margin, M(i, j)).
    auto G = dist_.grad(/*zero=*/false);
    const Scalar lowest = std::numeric_limits<Scalar>::lowest();
    const Scalar nm = neg_margin;
    const bool inv = distance.is_inverted();
    auto row_negatives = [&](Index i) {
      const auto ui = static_cast<std::size_t>(i);
      if (inv) G.row(i) = M.row(i).array() - nm;
      else G.row(i) = nm - M.row(i).array();
      const Index b = groups_.first[ui], c = groups_.count[ui];
      for (Index t = 0; t < c; ++t) G(i, groups_.members[static_cast<std::size_t>(b + t)]) = lowest;
      if (c == n) {  // no negative
        G.row(i).setZero();
        row_max_[ui] = Scalar(0);
        row_sum_[ui] = Scalar(0);
        return;
      }
      const Scalar mx = G.row(i).maxCoeff();
      G.row(i) = (G.row(i).array() - mx).exp();
      for (Index t = 0; t < c; ++t) G(i, groups_.members[static_cast<std::size_t>(b + t)]) = Scalar(0);
      row_max_[ui] = mx;
      row_sum_[ui] = G.row(i).sum();
    };
    const bool par = detail::worth_parallel(n, double(n) * double(n) * 8);
    detail::for_owned_rows(n, par, row_negatives);
    class_reference(n);

    // J and relu(J) of every positive pair, stored per class block: pair (i, j) at block + rank_i * c + rank_j.
    pair_r_.resize(static_cast<std::size_t>(groups_.block_total));
    row_tot_.assign(static_cast<std::size_t>(n), detail::PartTotals<Scalar>{});
    row_skip_.assign(static_cast<std::size_t>(n), 0);
    auto row_pairs = [&](Index i) {
      const auto ui = static_cast<std::size_t>(i);
      const Index b = groups_.first[ui], c = groups_.count[ui], ri = groups_.rank[ui];
      const Index base = groups_.block[ui] + ri * c;
      detail::PartTotals<Scalar> tot;
      for (Index t = 0; t < c; ++t) {
        if (t == ri) continue;
        const Index j = groups_.members[static_cast<std::size_t>(b + t)];
        bool kept = false;
        const Scalar l = class_pair_lse(i, j, kept);
        if (!kept) ++row_skip_[ui];
        const Scalar J = l + pos_value(M(i, j));
        const Scalar r = J > Scalar(0) ? J : Scalar(0);
        pair_r_[static_cast<std::size_t>(base + t)] = r;
        tot.add(r * r / Scalar(2));
      }
      row_tot_[ui] = tot;
    };
    detail::for_owned_rows(n, par, row_pairs);
    detail::PartTotals<Scalar> total;
    for (Index i = 0; i < n; ++i) {
      total.merge(row_tot_[static_cast<std::size_t>(i)]);
      stats_.skipped_anchors += row_skip_[static_cast<std::size_t>(i)];
    }
    Scalar coeff = 0;
    const Scalar value = detail::finish_part(total, mode, Scalar(0), coeff, stats_);
    if (grad == nullptr) return value;

    // dL/dM(i, j), positive j: coeff * relu(J_ij) * d margin / dM. Negative n of row i: every positive pair
    // holding i (as (i, j) or (j, i)) adds coeff * relu(J) * exp(v_in - lse), i.e. B_i * E(i, n) with
    // B_i = Σ coeff * relu(J) * exp(max_i - lse) (each factor <= 1 since lse >= max_i).
    const Scalar ps = pos_sign(), ns = neg_sign();
    auto row_grad = [&](Index i) {
      const auto ui = static_cast<std::size_t>(i);
      const Index b = groups_.first[ui], c = groups_.count[ui], ri = groups_.rank[ui];
      const Index blk = groups_.block[ui];
      const bool has_neg = row_sum_[ui] > Scalar(0);
      Scalar B = 0;
      for (Index t = 0; t < c; ++t) {
        if (t == ri || !has_neg) continue;
        const Index j = groups_.members[static_cast<std::size_t>(b + t)];
        const Scalar r1 = pair_r_[static_cast<std::size_t>(blk + ri * c + t)];
        const Scalar r2 = pair_r_[static_cast<std::size_t>(blk + t * c + ri)];
        const Scalar c1 = r1 > Scalar(0) ? detail::element_coeff(r1 * r1 / Scalar(2), coeff, mode) * r1 : Scalar(0);
        const Scalar c2 = r2 > Scalar(0) ? detail::element_coeff(r2 * r2 / Scalar(2), coeff, mode) * r2 : Scalar(0);
        // (i, j) and (j, i) share their log-sum-exp, so one weight serves both pairs.
        if (c1 != Scalar(0) || c2 != Scalar(0)) B += (c1 + c2) * class_pair_weight(i, j);
      }
      G.row(i) *= ns * B;
      for (Index t = 0; t < c; ++t) {
        const Index j = groups_.members[static_cast<std::size_t>(b + t)];
        if (t == ri) {
          G(i, j) = 0;
          continue;
        }
        const Scalar r1 = pair_r_[static_cast<std::size_t>(blk + ri * c + t)];
        G(i, j) = r1 > Scalar(0) ? detail::element_coeff(r1 * r1 / Scalar(2), coeff, mode) * r1 * ps : Scalar(0);
      }
    };
    detail::for_owned_rows(n, par, row_grad);
    dist_.backward_self(*grad);
    return value;
  }

  /// The pairs of a mined tuple: O(positives + negatives) through per-row sums over the negative list.
  Scalar run_mined(Index n, detail::ReduceMode mode, RowMatrixRef<Scalar>* grad) {
    auto M = dist_.matrix();
    const auto un = static_cast<std::size_t>(n);
    const Scalar lowest = std::numeric_limits<Scalar>::lowest();
    std::vector<Scalar>& mx = row_max_;
    std::vector<Scalar>& s = row_sum_;
    mx.assign(un, lowest);
    const std::size_t Q = pairs_.a2.size(), P = pairs_.a1.size();
    for (std::size_t j = 0; j < Q; ++j) {
      const auto a = static_cast<std::size_t>(pairs_.a2[j]);
      mx[a] = std::max(mx[a], neg_value(M(pairs_.a2[j], pairs_.n[j])));
    }
    for (std::size_t j = 0; j < Q; ++j) {
      const auto a = static_cast<std::size_t>(pairs_.a2[j]);
      s[a] += std::exp(neg_value(M(pairs_.a2[j], pairs_.n[j])) - mx[a]);
    }
    for (std::size_t i = 0; i < un; ++i)
      if (!(s[i] > Scalar(0))) mx[i] = Scalar(0);

    pair_r_.resize(P);
    pair_lse_.resize(P);
    detail::PartTotals<Scalar> total;
    for (std::size_t k = 0; k < P; ++k) {
      bool kept = false;
      const Scalar l = pair_lse(pairs_.a1[k], pairs_.p[k], kept);
      if (!kept) ++stats_.skipped_anchors;
      const Scalar J = l + pos_value(M(pairs_.a1[k], pairs_.p[k]));
      const Scalar r = J > Scalar(0) ? J : Scalar(0);
      pair_r_[k] = r;
      pair_lse_[k] = l;
      total.add(r * r / Scalar(2));
    }
    Scalar coeff = 0;
    const Scalar value = detail::finish_part(total, mode, Scalar(0), coeff, stats_);
    if (grad == nullptr) return value;

    auto G = dist_.grad(/*zero=*/true);
    row_b_.assign(un, Scalar(0));
    const Scalar ps = pos_sign(), ns = neg_sign();
    for (std::size_t k = 0; k < P; ++k) {
      const Scalar r = pair_r_[k];
      if (!(r > Scalar(0))) continue;
      const Scalar g = detail::element_coeff(r * r / Scalar(2), coeff, mode) * r;
      const Index a = pairs_.a1[k], p = pairs_.p[k];
      G(a, p) += g * ps;
      const auto ua = static_cast<std::size_t>(a), up = static_cast<std::size_t>(p);
      if (s[ua] > Scalar(0)) row_b_[ua] += g * std::exp(mx[ua] - pair_lse_[k]);
      if (p != a && s[up] > Scalar(0)) row_b_[up] += g * std::exp(mx[up] - pair_lse_[k]);
    }
    for (std::size_t j = 0; j < Q; ++j) {
      const Index a = pairs_.a2[j], q = pairs_.n[j];
      const auto ua = static_cast<std::size_t>(a);
      if (row_b_[ua] == Scalar(0)) continue;
      G(a, q) += ns * row_b_[ua] * std::exp(neg_value(M(a, q)) - mx[ua]);
    }
    dist_.backward_self(*grad);
    return value;
  }

  detail::LossDistanceMatrix<Scalar> dist_;
  detail::LiftedGroups groups_;
  MinedPairs pairs_;
  std::vector<Scalar> row_max_, row_sum_, row_b_, row_ref_, row_e_, row_sc_, pair_r_, pair_lse_;
  std::vector<unsigned char> row_fast_;
  std::vector<Index> row_skip_;
  std::vector<detail::PartTotals<Scalar>> row_tot_;
  LossStats stats_;
};

/**
 * @brief Generalised lifted structure loss: per row, a soft maximum over its positive pairs plus a soft
 * maximum over its negative pairs.
 *
 * For each row i of the batch, with P_i and N_i the columns j such that (i, j) is a positive or a negative
 * pair of the list (a pair listed twice counts once),
 * @f[ L_i = \mathrm{relu}\Big(\log\sum_{j \in P_i} e^{\mathrm{margin}(d_{ij}, m_+)}
 *   + \log\sum_{j \in N_i} e^{\mathrm{margin}(m_-, d_{ij})}\Big), @f]
 * with margin(x, y) = x − y for a distance and y − x for a similarity; an empty set contributes 0, as
 * pytorch-metric-learning's masked log-sum-exp. Reduction (default Reduction::mean): mean over all n rows,
 * including rows with no pair. As in pytorch-metric-learning the loss is 0 when every list of the pair
 * tuple has at most one entry.
 *
 * Defaults follow pytorch-metric-learning: neg_margin 1, pos_margin 0, Euclidean distance on L2-normalised
 * embeddings. stats(): terms (rows), active_terms (rows > 0), skipped_anchors (rows with no positive or no
 * negative pair), degenerate (zero-norm rows).
 *
 * PML equivalent: `losses.GeneralizedLiftedStructureLoss(neg_margin, pos_margin)`. No deliberate difference.
 *
 * @tparam Scalar float or double.
 * @note One object per thread: evaluate() uses the object's workspace. A second call with the same shapes
 * allocates nothing of kshot's own.
 */
template <class Scalar = float>
class GeneralizedLiftedStructureLoss {
  static_assert(std::is_floating_point_v<Scalar>,
                "kshot::GeneralizedLiftedStructureLoss<Scalar>: Scalar must be float or double");

 public:
  Scalar neg_margin = Scalar(1);                  ///< any finite value
  Scalar pos_margin = Scalar(0);                  ///< any finite value
  LossDistance distance = LossDistance::lp();     ///< pytorch-metric-learning's default LpDistance
  Reduction reduction = Reduction::loss_default;  ///< default: mean over the rows

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
  void reserve(Index n, Index d) {
    dist_.reserve(n, n, d);
    for (auto* v : {&pos_lse_, &neg_lse_, &neg_max_, &neg_sum_, &val_, &coeff_}) v->reserve(static_cast<std::size_t>(n));
  }

 private:
  enum : unsigned char { kPos = 1, kNeg = 2 };

  Scalar run(const ConstRowMatrixRef<Scalar>& emb, const ConstLabelRef& labels, const Mined& mined,
             RowMatrixRef<Scalar>* grad) {
    constexpr const char* where = "kshot::GeneralizedLiftedStructureLoss::evaluate()";
    detail::check_embeddings(emb, labels, where);
    detail::check_distance(distance, where);
    detail::check_mined(mined, emb.rows(), where);
    KSHOT_CHECK(std::isfinite(pos_margin), where, detail::cat("pos_margin is ", pos_margin, " but must be finite"));
    KSHOT_CHECK(std::isfinite(neg_margin), where, detail::cat("neg_margin is ", neg_margin, " but must be finite"));
    if (grad != nullptr) detail::check_grad(*grad, emb.rows(), emb.cols(), where, "grad");
    stats_ = LossStats{};
    const Index n = emb.rows();
    const auto un = static_cast<std::size_t>(n);
    const detail::ZeroGradientUnlessWritten<Scalar, detail::LossDistanceMatrix<Scalar>> zero_unless_written(grad, dist_);

    groups_.build(labels);
    if (detail::lifted_tuple_is_trivial(mined, groups_)) return Scalar(0);
    const bool all = mined.none();
    if (!all) {
      // Masks of the listed pairs (duplicates collapse, as pytorch-metric-learning's mask assignment).
      detail::pairs_from(mined, labels, pairs_);
      mask_.assign(un * un, 0);
      for (std::size_t k = 0; k < pairs_.a1.size(); ++k)
        mask_[static_cast<std::size_t>(pairs_.a1[k]) * un + static_cast<std::size_t>(pairs_.p[k])] |= kPos;
      for (std::size_t k = 0; k < pairs_.a2.size(); ++k)
        mask_[static_cast<std::size_t>(pairs_.a2[k]) * un + static_cast<std::size_t>(pairs_.n[k])] |= kNeg;
    }

    dist_.compute_self(distance, emb, stats_);
    auto M = dist_.matrix();
    // G holds exp(v_ij - max_i) over the negatives of row i (0 elsewhere) until the gradient overwrites it.
    auto G = dist_.grad(/*zero=*/false);
    const Scalar lowest = std::numeric_limits<Scalar>::lowest();
    const Scalar nm = neg_margin;
    const bool inv = distance.is_inverted();
    for (auto* v : {&pos_lse_, &neg_lse_, &neg_max_, &neg_sum_, &val_}) v->assign(un, Scalar(0));
    skip_.assign(un, 0);

    // Calls f(j) for every positive column j of row i.
    auto for_positives = [&](Index i, auto&& f) {
      const auto ui = static_cast<std::size_t>(i);
      if (all) {
        const Index b = groups_.first[ui], c = groups_.count[ui];
        for (Index t = 0; t < c; ++t) {
          const Index j = groups_.members[static_cast<std::size_t>(b + t)];
          if (j != i) f(j);
        }
      } else {
        const unsigned char* mrow = &mask_[ui * un];
        for (Index j = 0; j < n; ++j)
          if (mrow[j] & kPos) f(j);
      }
    };
    auto row_value = [&](Index i) {
      const auto ui = static_cast<std::size_t>(i);
      // Negatives, vectorised over the whole row; non-negatives are pushed to the lowest value first.
      if (inv) G.row(i) = M.row(i).array() - nm;
      else G.row(i) = nm - M.row(i).array();
      Index negatives = 0;
      if (all) {
        const Index b = groups_.first[ui], c = groups_.count[ui];
        for (Index t = 0; t < c; ++t) G(i, groups_.members[static_cast<std::size_t>(b + t)]) = lowest;
        negatives = n - c;
      } else {
        const unsigned char* mrow = &mask_[ui * un];
        for (Index j = 0; j < n; ++j) {
          if (mrow[j] & kNeg) ++negatives;
          else G(i, j) = lowest;
        }
      }
      Scalar lneg = 0;
      if (negatives > 0) {
        const Scalar mx = G.row(i).maxCoeff();
        G.row(i) = (G.row(i).array() - mx).exp();
        const Scalar s = G.row(i).sum();
        neg_max_[ui] = mx;
        neg_sum_[ui] = s;
        lneg = mx + std::log(s);
      } else {
        G.row(i).setZero();
      }
      // Positives: a handful per row.
      Scalar pmx = lowest;
      Index positives = 0;
      for_positives(i, [&](Index j) { pmx = std::max(pmx, pos_value(M(i, j))); ++positives; });
      Scalar lpos = 0;
      if (positives > 0) {
        Scalar ps = 0;
        for_positives(i, [&](Index j) { ps += std::exp(pos_value(M(i, j)) - pmx); });
        lpos = pmx + std::log(ps);
      }
      if (positives == 0 || negatives == 0) skip_[ui] = 1;
      neg_lse_[ui] = lneg;
      pos_lse_[ui] = lpos;
      const Scalar v = lpos + lneg;
      val_[ui] = v > Scalar(0) ? v : Scalar(0);
    };
    const bool par = detail::worth_parallel(n, double(n) * double(n) * 8);
    detail::for_owned_rows(n, par, row_value);
    for (std::size_t i = 0; i < un; ++i) stats_.skipped_anchors += skip_[i];

    const detail::ReduceMode mode = detail::resolve_reduction(reduction, detail::ReduceMode::mean);
    coeff_.resize(un);
    const Scalar value = detail::reduce(val_.data(), n, mode, Scalar(0), grad != nullptr ? coeff_.data() : nullptr,
                                        stats_);
    if (grad == nullptr) return value;

    const Scalar psign = inv ? Scalar(-1) : Scalar(1), nsign = -psign;
    auto row_grad = [&](Index i) {
      const auto ui = static_cast<std::size_t>(i);
      const Scalar c = val_[ui] > Scalar(0) ? coeff_[ui] : Scalar(0);
      if (c == Scalar(0)) {
        G.row(i).setZero();
        return;
      }
      // Negative softmax weights: exp(v - max) / sum.
      if (neg_sum_[ui] > Scalar(0)) G.row(i) *= c * nsign / neg_sum_[ui];
      const Scalar lpos = pos_lse_[ui];
      for_positives(i, [&](Index j) { G(i, j) += c * psign * std::exp(pos_value(M(i, j)) - lpos); });
    };
    detail::for_owned_rows(n, par, row_grad);
    dist_.backward_self(*grad);
    return value;
  }

  Scalar pos_value(Scalar m) const noexcept { return distance.margin(m, pos_margin); }

  detail::LossDistanceMatrix<Scalar> dist_;
  detail::LiftedGroups groups_;
  MinedPairs pairs_;
  std::vector<unsigned char> mask_, skip_;
  std::vector<Scalar> pos_lse_, neg_lse_, neg_max_, neg_sum_, val_, coeff_;
  LossStats stats_;
};

}  // namespace kshot

#endif  // KSHOT_LOSSES_LIFTED_HPP
