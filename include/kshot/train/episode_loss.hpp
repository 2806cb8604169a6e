/**
 * @file kshot/train/episode_loss.hpp
 * @brief The training objectives a kshot trainer runs: an episodic few-shot loss (ProtoNet by default, or
 * any classifier with an analytic loss gradient) over N-way K-shot episodes, and a metric-learning loss
 * over m-per-class batches.
 *
 * An objective does one step's work on the model: draw sample i, gather its rows, forward them through the
 * model in one batch, evaluate the loss and its gradient with respect to the embeddings, and backward
 * (which accumulates into the model's gradients). The trainer zeroes the gradients before and runs the
 * optimizer after.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_TRAIN_EPISODE_LOSS_HPP
#define KSHOT_TRAIN_EPISODE_LOSS_HPP

#include "kshot/core/check.hpp"
#include "kshot/core/types.hpp"
#include "kshot/fewshot/protonet.hpp"
#include "kshot/nn/sequential.hpp"
#include "kshot/sampling/batch_sampler.hpp"
#include "kshot/sampling/episode.hpp"
#include "kshot/sampling/episode_sampler.hpp"

#include <utility>

namespace kshot {

/**
 * @brief Episodic training objective: the query loss of a few-shot classifier over one episode.
 *
 * Step i draws episode i of the sampler (a pure function of the sampler's seed and i), stacks its support
 * rows over its query rows into one batch (one forward of n = N (K + Q) rows through the model), and
 * evaluates `classifier.loss(support_emb, support_labels, query_emb, query_labels, grad_support,
 * grad_query)`, whose gradients form dL/d(embeddings) for one model backward.
 *
 * @tparam Scalar float or double.
 * @tparam Classifier a few-shot classifier with the interface of kshot/fewshot/common.hpp (fit, predict;
 * copyable) and the gradient loss above: ProtoNet (the default, easyfsl's PrototypicalNetworks loss),
 * MatchingNetworks, SimpleShot, RidgeHead (its three scalars stay fixed). Validation copies it.
 * @note Buffers (the gathered batch and the embedding gradient) are members that are resized only when the
 * episode size changes (variable shots), so steps of one shape allocate nothing. Not thread-safe.
 */
template <class Scalar, class Classifier = ProtoNet<Scalar>>
class EpisodeObjective {
  static_assert(is_supported_scalar_v<Scalar>, "kshot::EpisodeObjective<Scalar>: Scalar must be float or double");

 public:
  /// The classifier validation episodes are scored with (a copy of the training one).
  using ValidationClassifier = Classifier;

  /**
   * @brief An objective over the episodes of `sampler` (copied).
   * @param sampler draws training episode i for step i.
   * @param classifier the loss (its hyperparameters, e.g. ProtoNet's distance and temperature).
   */
  explicit EpisodeObjective(EpisodeSampler sampler, Classifier classifier = Classifier())
      : sampler_(std::move(sampler)), classifier_(std::move(classifier)) {}

  /// The training sampler.
  const EpisodeSampler& sampler() const noexcept { return sampler_; }
  /// The classifier whose loss trains the model.
  Classifier& classifier() noexcept { return classifier_; }
  /// The classifier whose loss trains the model.
  const Classifier& classifier() const noexcept { return classifier_; }
  /// A copy of the classifier, for validation episodes.
  ValidationClassifier validation_classifier() const { return classifier_; }
  /// The name of one step in progress output.
  static const char* unit() noexcept { return "ep"; }
  /// The most rows one step forwards: N (K + Q).
  Index max_rows() const noexcept {
    const EpisodeConfig& c = sampler_.config();
    return c.ways * (c.shots + c.queries);
  }

  /**
   * @brief Checks that episode 0 refers only to rows of `features` (a sampler built on other labels).
   * @throws std::out_of_range naming the row and the number of rows.
   */
  void check_rows(const ConstRowMatrixRef<Scalar>& features, const char* where) const {
    const Episode e = sampler_.sample(0);
    for (const auto* rows : {&e.support_rows, &e.query_rows})
      for (Index r : *rows)
        KSHOT_CHECK_RANGE(r >= 0 && r < features.rows(), where,
                          detail::cat("training episode 0 uses row ", r, " but features has ", features.rows(), " rows"));
  }

  /**
   * @brief One step's loss and gradient: accumulates dL/dparameters of episode i into model.gradients().
   * @return the episode's mean query loss.
   * @throws std::invalid_argument / std::out_of_range if features does not fit the sampler's rows or the
   * model's input; whatever the classifier's loss throws (e.g. a non-finite embedding).
   */
  Scalar step(Index i, const ConstRowMatrixRef<Scalar>& features, Sequential<Scalar>& model) {
    sampler_.sample(i, episode_);
    const auto ns = static_cast<Index>(episode_.support_rows.size());
    const auto nq = static_cast<Index>(episode_.query_rows.size());
    const Index d = features.cols();
    if (x_.rows() != ns + nq || x_.cols() != d) x_.resize(ns + nq, d);
    gather_rows<Scalar>(features, episode_.support_rows, x_.topRows(ns));
    gather_rows<Scalar>(features, episode_.query_rows, x_.bottomRows(nq));
    const RowMatrixX<Scalar>& emb = model.forward(x_, true);
    if (grad_.rows() != emb.rows() || grad_.cols() != emb.cols()) grad_.resize(emb.rows(), emb.cols());
    const Scalar value = classifier_.loss(emb.topRows(ns), episode_.support_label_vector(), emb.bottomRows(nq),
                                          episode_.query_label_vector(), grad_.topRows(ns), grad_.bottomRows(nq));
    model.backward(grad_);
    return value;
  }

 private:
  EpisodeSampler sampler_;
  Classifier classifier_;
  Episode episode_;
  RowMatrixX<Scalar> x_, grad_;
};

/**
 * @brief Metric-learning objective: a loss of kshot/losses (TripletMarginLoss, ContrastiveLoss, SupConLoss,
 * MultiSimilarityLoss, ...) over the embeddings of one m-per-class batch.
 *
 * Step b draws batch b of the MPerClassSampler (a pure function of its seed and b), forwards its rows, and
 * evaluates `loss.evaluate(embeddings, labels, grad)`; labels are the dataset's. Losses with their own
 * parameters (proxies, class weights: ProxyNCA, ProxyAnchor, ArcFace, CosFace) need those trained too and
 * are not handled by this objective. Validation scores episodes with ProtoNet (Euclidean) on the embeddings.
 *
 * @tparam Scalar float or double.
 * @tparam Loss a loss with `Scalar evaluate(ConstRowMatrixRef<Scalar>, ConstLabelRef, RowMatrixRef<Scalar>)`.
 * @note Buffers are members sized on the first step; later steps allocate nothing. Not thread-safe.
 */
template <class Scalar, class Loss>
class MetricObjective {
  static_assert(is_supported_scalar_v<Scalar>, "kshot::MetricObjective<Scalar>: Scalar must be float or double");

 public:
  /// Validation episodes are scored by a prototypical network on the embeddings.
  using ValidationClassifier = ProtoNet<Scalar>;

  /**
   * @brief An objective over the batches of `sampler` (copied) with `loss`.
   */
  MetricObjective(MPerClassSampler sampler, Loss loss) : sampler_(std::move(sampler)), loss_(std::move(loss)) {}

  /// The batch sampler.
  const MPerClassSampler& sampler() const noexcept { return sampler_; }
  /// The loss (its hyperparameters and stats()).
  Loss& loss() noexcept { return loss_; }
  /// The loss.
  const Loss& loss() const noexcept { return loss_; }
  /// ProtoNet (Euclidean), for validation episodes.
  ValidationClassifier validation_classifier() const { return ProtoNet<Scalar>(); }
  /// The name of one step in progress output.
  static const char* unit() noexcept { return "batch"; }
  /// The rows of one batch.
  Index max_rows() const noexcept { return sampler_.batch_size(); }

  /**
   * @brief Checks that batch 0 refers only to rows of `features`.
   * @throws std::out_of_range naming the row and the number of rows.
   */
  void check_rows(const ConstRowMatrixRef<Scalar>& features, const char* where) const {
    const Batch b = sampler_.sample(0);
    for (Index r : b.rows)
      KSHOT_CHECK_RANGE(r >= 0 && r < features.rows(), where,
                        detail::cat("training batch 0 uses row ", r, " but features has ", features.rows(), " rows"));
  }

  /**
   * @brief One step: accumulates dL/dparameters of batch b into model.gradients() and returns the loss.
   * @throws as EpisodeObjective::step, and whatever the loss throws.
   */
  Scalar step(Index b, const ConstRowMatrixRef<Scalar>& features, Sequential<Scalar>& model) {
    sampler_.sample(b, batch_);
    const auto n = static_cast<Index>(batch_.rows.size());
    if (x_.rows() != n || x_.cols() != features.cols()) x_.resize(n, features.cols());
    gather_rows<Scalar>(features, batch_.rows, x_);
    const RowMatrixX<Scalar>& emb = model.forward(x_, true);
    if (grad_.rows() != emb.rows() || grad_.cols() != emb.cols()) grad_.resize(emb.rows(), emb.cols());
    const Scalar value = loss_.evaluate(emb, batch_.label_vector(), grad_);
    model.backward(grad_);
    return value;
  }

 private:
  MPerClassSampler sampler_;
  Loss loss_;
  Batch batch_;
  RowMatrixX<Scalar> x_, grad_;
};

}  // namespace kshot

#endif  // KSHOT_TRAIN_EPISODE_LOSS_HPP
