/**
 * @file kshot/recommend/cold_item.hpp
 * @brief Embeddings for new products from their content and a few interactions: a generator trained
 * episodically on warm items by simulating their cold start (in the spirit of MetaEmb, Pan et al. 2019).
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_RECOMMEND_COLD_ITEM_HPP
#define KSHOT_RECOMMEND_COLD_ITEM_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/gemm.hpp"
#include "kshot/core/random.hpp"
#include "kshot/core/threads.hpp"
#include "kshot/core/types.hpp"
#include "kshot/nn/adam.hpp"
#include "kshot/nn/linear.hpp"
#include "kshot/nn/sequential.hpp"
#include "kshot/recommend/interactions.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <vector>

namespace kshot {

namespace detail {

/**
 * @brief The in-batch softmax of two-tower retrieval: for query row r with positive item p_r, the loss
 * -log softmax_j(<q_r, e_j> / τ)[p_r] over the items j that mask(r, j) leaves in (the positive always stays),
 * averaged over the queries; with grad, dL/de (items x d) is overwritten.
 *
 * Logits use log-sum-exp; a query whose every negative is masked has loss 0. The products run in the nn
 * module's fixed row blocks, so the bits do not depend on the thread count. Buffers are members: one object
 * per thread.
 */
template <class Scalar>
class InBatchSoftmax {
 public:
  template <class Mask>
  double evaluate(const ConstRowMatrixRef<Scalar>& queries, const ConstRowMatrixRef<Scalar>& emb,
                  const std::vector<Index>& positive, Scalar temperature, const Mask& mask,
                  RowMatrixRef<Scalar>* grad) {
    const Index nq = queries.rows(), B = emb.rows();
    const Scalar inv_t = Scalar(1) / temperature;
    blocked_gemm_assign(logits_, queries, emb.transpose(), inv_t);
    double loss = 0.0;
    const Scalar a = nq > 0 ? static_cast<Scalar>(1.0 / double(nq)) * inv_t : Scalar(0);
    for (Index r = 0; r < nq; ++r) {
      const Index p = positive[static_cast<std::size_t>(r)];
      auto z = logits_.row(r);
      for (Index j = 0; j < B; ++j)
        if (j != p && mask(r, j)) z[j] = -std::numeric_limits<Scalar>::infinity();
      const Scalar top = z.maxCoeff();
      z = (z.array() - top).exp();
      const Scalar sum = z.sum();  // >= 1: the largest logit contributes exp(0)
      loss -= double(std::log(z[p] / sum));
      // d loss / d z_j = (softmax_j - [j = p]) / pairs; d z_j / d e_j = q / tau.
      z *= a / sum;
      z[p] -= a;
    }
    if (grad != nullptr) blocked_gemm_assign(*grad, logits_.transpose(), queries);
    return nq > 0 ? loss / double(nq) : 0.0;
  }

 private:
  RowMatrixX<Scalar> logits_;
};

}  // namespace detail

/**
 * @brief Hyperparameters of ColdItemEmbedder.
 *
 * | member | default | meaning |
 * |---|---|---|
 * | hidden | {256} | hidden widths of the generator MLP (ReLU between layers) |
 * | max_support | 5 | K: the most interactions a simulated cold start shows; each item of an episode shows k ~ U{0..K} |
 * | items_per_step | 128 | warm items per training step (each is a negative for the others' audience) |
 * | queries_per_item | 4 | held-out audience members per item whose score is trained up |
 * | temperature | 0.1 | logits are <u, e> / temperature |
 * | steps | 1500 | training steps of fit() |
 * | learning_rate | 1e-3 | Adam's learning rate |
 * | seed | 0 | initialisation and every draw (step t uses stream t + 1) |
 */
struct ColdItemConfig {
  std::vector<Index> hidden{256};  ///< hidden widths (each >= 1; empty: a linear generator)
  Index max_support = 5;           ///< >= 0
  Index items_per_step = 128;      ///< >= 1
  Index queries_per_item = 4;      ///< >= 1
  double temperature = 0.1;        ///< > 0
  Index steps = 1500;              ///< >= 0
  double learning_rate = 1e-3;     ///< > 0
  std::uint64_t seed = 0;          ///< seed of initialisation and sampling
};

/// What ColdItemEmbedder::fit() did.
struct ColdItemReport {
  Index steps = 0;                  ///< steps taken
  Index trainable_items = 0;        ///< warm items with at least 2 interactions (the ones that can be simulated)
  double first_loss = 0.0;          ///< mean loss over the first 50 steps (or fewer)
  double last_loss = 0.0;           ///< mean loss over the last 50 steps (or fewer)
};

/**
 * @brief Places a new item in the user-profile space from its content features and the users of its first
 * few interactions, so that users whose profiles score it highly are the ones who will like it.
 *
 * For an item with content features c (content_dim) and k visible interactions by users S (profiles p_u,
 * embedding_dim d), the generator input is [c, s, k / K, [k = 0]] with s the mean of the p_u (zero when k = 0)
 * and the embedding is
 * @f[ \hat e = s + \mathrm{MLP}_\theta([c, s, k/K, [k = 0]]) @f]
 * a correction of the audience mean by what the content says (with k = 0 it is a content-only embedding).
 *
 * fit() trains θ on warm items by simulating their cold start, episode by episode: draw items_per_step items,
 * show each a random subset of k ~ U{0..K} of its interactions, and train the embeddings so that each item's
 * held-out audience (queries_per_item other users who interacted with it) ranks it above the step's other
 * items: for item b and held-out user q, with logits <p_q, ê_j> / τ over the step's items j,
 * @f[ \ell_{bq} = -\log \frac{e^{\langle p_q, \hat e_b\rangle/\tau}}{\sum_{j} e^{\langle p_q, \hat e_j\rangle/\tau}} @f]
 * averaged over the pairs (an item j ≠ b that q also interacted with is masked out). This is the in-batch
 * softmax of two-tower retrieval models, and it trains exactly what recommend() uses: for a user, the ranking
 * of items by <p_u, ê>. MetaEmb trains its generator with the downstream task's loss in two phases
 * (cold-start and warm-up); this is a single-phase version of that idea with a ranking loss, and the first
 * interactions are inputs too, not only the content.
 *
 * @tparam Scalar float or double.
 * @note fit() and embed() are deterministic for a seed and give the same bits for any thread count (the
 * model's products run in fixed row blocks). Not thread-safe: one object per thread.
 */
template <class Scalar = float>
class ColdItemEmbedder {
  static_assert(std::is_floating_point_v<Scalar>, "kshot::ColdItemEmbedder<Scalar>: Scalar must be float or double");

 public:
  /**
   * @brief A generator for items with content_dim content features, in an embedding_dim profile space.
   *
   * content_dim = 0 gives a generator of the first interactions alone (pass num_items x 0 content). Prefer it
   * when the new items are out of the distribution the generator is trained on, e.g. a whole new product line
   * while training simulates cold starts of the old lines: there the content correction learned on old
   * products does not transfer (measured in examples/new_product_recommendation.cpp, docs/recommendation.md).
   * @throws std::invalid_argument if content_dim < 0, embedding_dim < 1, or a config value is out of range
   * (ColdItemConfig).
   */
  ColdItemEmbedder(Index content_dim, Index embedding_dim, ColdItemConfig config = {})
      : config_(std::move(config)), content_dim_(content_dim), dim_(embedding_dim) {
    constexpr const char* where = "kshot::ColdItemEmbedder::ColdItemEmbedder()";
    KSHOT_CHECK(content_dim >= 0, where, detail::cat("content_dim is ", content_dim, " but must be >= 0"));
    KSHOT_CHECK(embedding_dim >= 1, where, detail::cat("embedding_dim is ", embedding_dim, " but must be >= 1"));
    check_config(where);
    std::vector<Index> dims{input_dim()};
    dims.insert(dims.end(), config_.hidden.begin(), config_.hidden.end());
    dims.push_back(embedding_dim);
    model_ = make_mlp<Scalar>(dims, Activation::relu, Init::pytorch_default, config_.seed);
    // The output layer starts at zero, so an untrained generator is exactly the audience mean s (or 0 without
    // interactions) and training starts from that baseline rather than from a random correction.
    const Index last = dims[dims.size() - 2] * embedding_dim + embedding_dim;
    model_.parameters().tail(last).setZero();
  }

  const ColdItemConfig& config() const noexcept { return config_; }
  Index content_dim() const noexcept { return content_dim_; }
  Index embedding_dim() const noexcept { return dim_; }
  /// The generator's width: content_dim + embedding_dim + 2.
  Index input_dim() const noexcept { return content_dim_ + dim_ + 2; }
  /// The generator MLP (its parameters can be saved with kshot::save).
  Sequential<Scalar>& model() noexcept { return model_; }
  const Sequential<Scalar>& model() const noexcept { return model_; }

  /**
   * @brief Trains the generator on the warm items.
   * @param content num_items x content_dim content features of every item.
   * @param profiles num_users x embedding_dim user profiles (e.g. kshot::user_profiles of the training events).
   * @param interactions the training events (num_users x num_items).
   * @param warm_items the items to simulate (those with fewer than 2 interactions are skipped).
   * @param on_step optional callback (step, loss) after every step, e.g. for progress output.
   * @throws std::invalid_argument on a shape mismatch, non-finite content or profiles, an item outside
   * [0, num_items), or if no warm item has 2 interactions.
   */
  ColdItemReport fit(ConstRowMatrixRef<Scalar> content, ConstRowMatrixRef<Scalar> profiles,
                     const InteractionMatrix& interactions, const std::vector<Index>& warm_items,
                     const std::function<void(Index, double)>& on_step = {}) {
    constexpr const char* where = "kshot::ColdItemEmbedder::fit()";
    check_inputs(content, profiles, interactions, where);
    std::vector<Index> pool;
    for (std::size_t k = 0; k < warm_items.size(); ++k) {
      const Index i = warm_items[k];
      KSHOT_CHECK_RANGE(i >= 0 && i < interactions.num_items(), where,
                        detail::cat("warm_items[", k, "] is ", i, " but must be in [0, ", interactions.num_items(),
                                    ")"));
      if (interactions.item(i).size >= 2) pool.push_back(i);
    }
    KSHOT_CHECK(!pool.empty(), where,
                detail::cat("none of the ", warm_items.size(), " warm items has 2 interactions to simulate"));
    const Index B = config_.items_per_step, Q = config_.queries_per_item;
    x_.resize(B, input_dim());
    support_mean_.resize(B, dim_);
    grad_.resize(B, dim_);
    Adam<Scalar> adam(config_.learning_rate);
    std::vector<Index> order, queries;
    std::vector<Index> query_offsets(static_cast<std::size_t>(B) + 1);
    std::vector<double> losses;
    ColdItemReport report;
    report.trainable_items = static_cast<Index>(pool.size());
    for (Index step = 0; step < config_.steps; ++step) {
      RandomStream rng(config_.seed, static_cast<std::uint64_t>(step) + 1);
      queries.clear();
      // Build the batch: item b shows k of its interactions (a random subset) and holds out up to Q others.
      std::vector<Index>& items = order;
      items.resize(static_cast<std::size_t>(B));
      for (Index b = 0; b < B; ++b) {
        const Index item = pool[static_cast<std::size_t>(rng.uniform_index(static_cast<Index>(pool.size())))];
        items[static_cast<std::size_t>(b)] = item;
        const InteractionList l = interactions.item(item);
        perm_.resize(static_cast<std::size_t>(l.size));
        for (Index k = 0; k < l.size; ++k) perm_[static_cast<std::size_t>(k)] = k;
        rng.shuffle(perm_.begin(), perm_.end());
        const Index k_max = std::min(config_.max_support, l.size - 1);
        const Index k = rng.uniform_index(k_max + 1);
        support_mean_.row(b).setZero();
        for (Index s = 0; s < k; ++s) support_mean_.row(b) += profiles.row(l.ids[perm_[static_cast<std::size_t>(s)]]);
        if (k > 0) support_mean_.row(b) /= static_cast<Scalar>(k);
        query_offsets[static_cast<std::size_t>(b)] = static_cast<Index>(queries.size());
        for (Index s = k; s < std::min(l.size, k + Q); ++s) queries.push_back(l.ids[perm_[static_cast<std::size_t>(s)]]);
        fill_input(content.row(item), support_mean_.row(b), k, x_.row(b));
      }
      query_offsets[static_cast<std::size_t>(B)] = static_cast<Index>(queries.size());
      const RowMatrixX<Scalar>& out = model_.forward(x_, true);
      // e_b = s_b + MLP(x_b); each (item b, query user q) pair is a softmax over the step's items for user q.
      emb_ = support_mean_ + out;
      const auto nq = static_cast<Index>(queries.size());
      query_profiles_.resize(nq, dim_);
      positive_.resize(static_cast<std::size_t>(nq));
      for (Index b = 0; b < B; ++b)
        for (Index qi = query_offsets[static_cast<std::size_t>(b)]; qi < query_offsets[static_cast<std::size_t>(b) + 1];
             ++qi) {
          query_profiles_.row(qi) = profiles.row(queries[static_cast<std::size_t>(qi)]);
          positive_[static_cast<std::size_t>(qi)] = b;
        }
      // Another item of the step that the query user also interacted with is not a negative for that user.
      auto masked = [&](Index qi, Index j) {
        const Index b = positive_[static_cast<std::size_t>(qi)];
        const Index item_j = items[static_cast<std::size_t>(j)];
        return item_j == items[static_cast<std::size_t>(b)] ||
               interactions.item(item_j).contains(queries[static_cast<std::size_t>(qi)]);
      };
      RowMatrixRef<Scalar> grad_ref(grad_);
      const double loss = softmax_.evaluate(query_profiles_, emb_, positive_, static_cast<Scalar>(config_.temperature),
                                            masked, &grad_ref);
      model_.zero_grad();
      model_.backward(grad_);
      adam.step(model_.parameters(), model_.gradients());
      losses.push_back(loss);
      if (on_step) on_step(step, loss);
    }
    report.steps = config_.steps;
    const std::size_t window = std::min<std::size_t>(50, losses.size());
    for (std::size_t k = 0; k < window; ++k) {
      report.first_loss += losses[k] / double(window);
      report.last_loss += losses[losses.size() - window + k] / double(window);
    }
    return report;
  }

  /**
   * @brief Embeds `items` from their content and their visible interactions in `interactions` (the first
   * max_support of them in time order, as a new product's first clicks), into the rows of `out`.
   * @param out items.size() x embedding_dim, overwritten.
   * @throws std::invalid_argument on a shape mismatch or non-finite input; std::out_of_range for an item
   * outside [0, num_items).
   */
  void embed(ConstRowMatrixRef<Scalar> content, ConstRowMatrixRef<Scalar> profiles,
             const InteractionMatrix& interactions, const std::vector<Index>& items, RowMatrixRef<Scalar> out) {
    constexpr const char* where = "kshot::ColdItemEmbedder::embed()";
    check_inputs(content, profiles, interactions, where);
    const auto n = static_cast<Index>(items.size());
    detail::check_shape(out, n, dim_, where, "out");
    x_.resize(n, input_dim());
    support_mean_.resize(n, dim_);
    for (Index b = 0; b < n; ++b) {
      const Index item = items[static_cast<std::size_t>(b)];
      KSHOT_CHECK_RANGE(item >= 0 && item < interactions.num_items(), where,
                        detail::cat("items[", b, "] is ", item, " but must be in [0, ", interactions.num_items(), ")"));
      const InteractionList l = interactions.item(item);
      const Index k = std::min(config_.max_support, l.size);
      support_mean_.row(b).setZero();
      for (Index s = 0; s < k; ++s) support_mean_.row(b) += profiles.row(l.ids[s]);
      if (k > 0) support_mean_.row(b) /= static_cast<Scalar>(k);
      fill_input(content.row(item), support_mean_.row(b), k, x_.row(b));
    }
    if (n == 0) return;
    out = support_mean_ + model_.forward(x_, false);
  }

 private:
  void check_config(const char* where) const {
    for (std::size_t k = 0; k < config_.hidden.size(); ++k)
      KSHOT_CHECK(config_.hidden[k] >= 1, where,
                  detail::cat("config.hidden[", k, "] is ", config_.hidden[k], " but must be >= 1"));
    KSHOT_CHECK(config_.max_support >= 0, where,
                detail::cat("config.max_support is ", config_.max_support, " but must be >= 0"));
    KSHOT_CHECK(config_.items_per_step >= 1, where,
                detail::cat("config.items_per_step is ", config_.items_per_step, " but must be >= 1"));
    KSHOT_CHECK(config_.queries_per_item >= 1, where,
                detail::cat("config.queries_per_item is ", config_.queries_per_item, " but must be >= 1"));
    KSHOT_CHECK(std::isfinite(config_.temperature) && config_.temperature > 0.0, where,
                detail::cat("config.temperature is ", config_.temperature, " but must be finite and > 0"));
    KSHOT_CHECK(config_.steps >= 0, where, detail::cat("config.steps is ", config_.steps, " but must be >= 0"));
    KSHOT_CHECK(std::isfinite(config_.learning_rate) && config_.learning_rate > 0.0, where,
                detail::cat("config.learning_rate is ", config_.learning_rate, " but must be finite and > 0"));
  }

  void check_inputs(const ConstRowMatrixRef<Scalar>& content, const ConstRowMatrixRef<Scalar>& profiles,
                    const InteractionMatrix& interactions, const char* where) const {
    KSHOT_CHECK(content.rows() == interactions.num_items() && content.cols() == content_dim_, where,
                detail::cat("content is ", content.rows(), " x ", content.cols(), " but must be num_items x content_dim = ",
                            interactions.num_items(), " x ", content_dim_));
    KSHOT_CHECK(profiles.rows() == interactions.num_users() && profiles.cols() == dim_, where,
                detail::cat("profiles is ", profiles.rows(), " x ", profiles.cols(),
                            " but must be num_users x embedding_dim = ", interactions.num_users(), " x ", dim_));
    detail::check_finite(content, where, "content");
    detail::check_finite(profiles, where, "profiles");
  }

  template <class C, class S, class X>
  void fill_input(const C& c, const S& s, Index k, X&& x) const {
    x.head(content_dim_) = c;
    x.segment(content_dim_, dim_) = s;
    const Index K = std::max<Index>(config_.max_support, 1);
    x[content_dim_ + dim_] = static_cast<Scalar>(double(k) / double(K));
    x[content_dim_ + dim_ + 1] = k == 0 ? Scalar(1) : Scalar(0);
  }

  ColdItemConfig config_;
  Index content_dim_, dim_;
  Sequential<Scalar> model_;
  RowMatrixX<Scalar> x_, support_mean_, grad_, emb_, query_profiles_;
  std::vector<Index> positive_;
  detail::InBatchSoftmax<Scalar> softmax_;
  std::vector<Index> perm_;
};

}  // namespace kshot

#endif  // KSHOT_RECOMMEND_COLD_ITEM_HPP
