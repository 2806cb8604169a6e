/**
 * @file examples/new_product_recommendation.cpp
 * @brief The flagship demo: recommend new products (whole new product lines) to shoppers from their first few
 * interactions, on the real Fashion-MNIST catalogue with SIMULATED shoppers.
 *
 * The products are real: 300 test images of each of the ten Fashion-MNIST categories (3,000 items). The old
 * product lines are T-shirt/top, Trouser, Pullover, Dress and Coat; the new lines, launched with no history,
 * are Sandal, Shirt, Sneaker, Bag and Ankle boot (1,500 new items). The shoppers are simulated (no real
 * shopper data is used or implied): each belongs to one of 8 taste segments, and a segment likes a few
 * categories, old and new alike, drawn at random; within a category a shopper prefers items along a hidden
 * random projection of the pixels, and every item has a hidden appeal. Each shopper clicks 20 to 50
 * distinct items, drawn without replacement with probability proportional to exp(utility).
 *
 * The pipeline, as a shop would run it:
 *  1. learn a content embedding (MLP 784 -> 256 -> 64, episodic ProtoNet) on the old lines' training images;
 *  2. user profiles = the mean embedding of the old products each shopper clicked (kshot::user_profiles);
 *  3. each new product gets its first 3 clicks (kshot::make_cold_start_split); its embedding comes from its
 *     content and the profiles of those 3 shoppers (kshot::ColdItemEmbedder, trained on the old products by
 *     simulating their cold start);
 *  4. recommend new products to every shopper with exact top-K search, excluding what they already clicked
 *     (kshot::Recommender), and the reverse: which shoppers to show one new product to.
 * Evaluation: recall@K and NDCG@K (K = 10 and 50) of the new products each shopper clicked later, against a
 * popularity baseline (new products ranked by their clicks so far) and a content-only baseline (the new
 * product's content embedding scored against the profile), with 95% intervals over shoppers.
 *
 * Usage: new_product_recommendation [fashion-mnist-directory]
 */
#include <kshot/data.hpp>
#include <kshot/eval.hpp>
#include <kshot/nn/adam.hpp>
#include <kshot/nn/sequential.hpp>
#include <kshot/recommend.hpp>
#include <kshot/retrieval.hpp>
#include <kshot/sampling.hpp>
#include <kshot/train.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <iostream>
#include <string>
#include <utility>
#include <vector>

namespace {

using kshot::Index;
using Matrix = kshot::RowMatrixX<float>;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

constexpr Index per_category = 300;
constexpr Index num_shoppers = 3000;

/// The simulated shoppers (see the file comment).
struct Shoppers {
  Index segments = 8;
  Index min_clicks = 20, max_clicks = 50;
  float style_weight = 2.0f, appeal_weight = 1.0f;
  std::uint64_t seed = 42;
};

std::vector<kshot::Interaction> simulate_shoppers(const Matrix& pixels, const kshot::LabelVector& categories,
                                                  const Shoppers& s) {
  const Index n = pixels.rows();
  const Index style_dims = 6;
  kshot::RandomStream rng(s.seed);
  Matrix projection(pixels.cols(), style_dims);
  rng.fill_normal(projection);
  Matrix style = pixels * projection;
  style.rowwise().normalize();
  std::vector<float> appeal(static_cast<std::size_t>(n));
  for (auto& a : appeal) a = rng.normal<float>();
  Matrix affinity(s.segments, 10);  // log-affinity of each segment for each category
  for (Index g = 0; g < s.segments; ++g) {
    for (Index c = 0; c < 10; ++c) affinity(g, c) = -4.0f + 0.5f * rng.normal<float>();
    for (int k = 0; k < 3; ++k) affinity(g, rng.uniform_index(10)) = 0.5f * rng.normal<float>();
  }
  std::vector<kshot::Interaction> events;
  std::vector<std::pair<float, Index>> keys(static_cast<std::size_t>(n));
  for (Index u = 0; u < num_shoppers; ++u) {
    kshot::RandomStream r(s.seed, static_cast<std::uint64_t>(u) + 1);
    const Index segment = r.uniform_index(s.segments);
    Eigen::RowVectorXf taste(style_dims);
    for (Index k = 0; k < style_dims; ++k) taste[k] = r.normal<float>();
    taste.normalize();
    const Index clicks = s.min_clicks + r.uniform_index(s.max_clicks - s.min_clicks + 1);
    // Gumbel-top-k: `clicks` distinct items with probabilities proportional to exp(utility).
    for (Index i = 0; i < n; ++i) {
      const float utility = affinity(segment, categories[i]) + s.style_weight * style.row(i).dot(taste) +
                            s.appeal_weight * appeal[static_cast<std::size_t>(i)];
      const double uniform = std::max(r.uniform<double>(), 1e-300);
      keys[static_cast<std::size_t>(i)] = {utility - static_cast<float>(std::log(-std::log(uniform))), i};
    }
    std::partial_sort(keys.begin(), keys.begin() + clicks, keys.end(), [](const auto& a, const auto& b) {
      return a.first > b.first || (a.first == b.first && a.second < b.second);
    });
    for (Index k = 0; k < clicks; ++k)
      events.push_back({u, keys[static_cast<std::size_t>(k)].second, r.uniform<double>(), 1.0});
  }
  return events;
}

/// The first `per_category` images of each category.
void keep_per_category(kshot::LabeledImages<float>& data) {
  std::vector<Index> keep, seen(10, 0);
  for (Index i = 0; i < data.features.rows(); ++i)
    if (seen[static_cast<std::size_t>(data.labels[i])]++ < per_category) keep.push_back(i);
  Matrix features(static_cast<Index>(keep.size()), data.features.cols());
  kshot::LabelVector labels(static_cast<Index>(keep.size()));
  for (std::size_t k = 0; k < keep.size(); ++k) {
    features.row(static_cast<Index>(k)) = data.features.row(keep[k]);
    labels[static_cast<Index>(k)] = data.labels[keep[k]];
  }
  data.features = std::move(features);
  data.labels = std::move(labels);
}

struct Method {
  const char* name;
  Matrix vectors;  // one row per new product, in the order of `cold_items`
};

}  // namespace

int main(int argc, char** argv) try {
  const auto t_start = Clock::now();
  const std::string directory = argc > 1 ? argv[1] : kshot::fashion_mnist_default_directory();
  std::printf("kshot %s: recommending new product lines from a few clicks (%d threads)\n", kshot::Version::string(),
              kshot::max_threads());
  std::printf("catalogue: Fashion-MNIST test images (real products); shoppers: SIMULATED (see the file comment)\n\n");

  auto train = kshot::load_fashion_mnist<float>(directory, kshot::FashionMnistSplit::train);
  auto catalogue = kshot::load_fashion_mnist<float>(directory, kshot::FashionMnistSplit::test);
  keep_per_category(catalogue);
  const kshot::ClassSplit lines = kshot::make_class_split({0, 1, 2, 3, 4}, {}, {5, 6, 7, 8, 9}, 10);
  const kshot::ClassIndex train_index(train.labels);
  kshot::RowVectorX<float> mean = kshot::RowVectorX<float>::Zero(train.features.cols());
  const auto base_rows = kshot::rows_of_classes(train_index, lines.base);
  for (Index r : base_rows) mean += train.features.row(r);
  mean /= static_cast<float>(base_rows.size());
  train.features.rowwise() -= mean;
  catalogue.features.rowwise() -= mean;
  const Index num_items = catalogue.features.rows();

  // 1. The content embedding, learned on the old product lines only.
  std::printf("[1/4] content embedding: episodic ProtoNet, MLP 784-256-64, on the old lines' training images\n");
  auto t0 = Clock::now();
  kshot::Sequential<float> model =
      kshot::make_mlp<float>({784, 256, 64}, kshot::Activation::relu, kshot::Init::pytorch_default, /*seed=*/1);
  kshot::EpisodeConfig episodes;
  episodes.ways = 5;
  episodes.shots = 5;
  episodes.queries = 15;
  kshot::TrainerConfig options;
  options.steps = 1000;
  options.step_threads = 1;  // 100-row episodes gain little from threads
  kshot::EpisodicTrainer<float> trainer(
      model, train.features,
      kshot::EpisodeObjective<float>(kshot::EpisodeSampler(train_index, episodes, /*seed=*/1, lines.base)),
      kshot::Adam<float>(1e-3), options);
  trainer.train();
  Matrix content = model.forward(catalogue.features, false);
  const kshot::RowVectorX<float> content_mean = content.colwise().mean();
  content.rowwise() -= content_mean;  // centred, so that a profile's common component does not dominate
  content.rowwise().normalize();
  const double t_content = seconds_since(t0);

  // 2. Shoppers and the cold-start split: new products show their first 3 clicks.
  t0 = Clock::now();
  const auto events = simulate_shoppers(catalogue.features, catalogue.labels, Shoppers{});
  const kshot::InteractionMatrix all(num_shoppers, num_items, events);
  std::vector<char> is_new(static_cast<std::size_t>(num_items), 0);
  std::vector<Index> old_items, new_items;
  for (Index i = 0; i < num_items; ++i) {
    const bool fresh = catalogue.labels[i] >= 5;
    is_new[static_cast<std::size_t>(i)] = fresh ? 1 : 0;
    (fresh ? new_items : old_items).push_back(i);
  }
  kshot::ColdStartConfig split_config;
  split_config.cold_user_fraction = 0.0;  // this demo is about new products; every shopper has a history
  split_config.cold_item_support = 3;
  const kshot::ColdStartSplit split = kshot::make_cold_start_split(all, is_new, split_config);
  // Profiles from old products only: the shoppers' history before the launch.
  std::vector<kshot::Interaction> old_events;
  for (const auto& e : split.train.events())
    if (!is_new[static_cast<std::size_t>(e.item)]) old_events.push_back(e);
  const kshot::InteractionMatrix history(num_shoppers, num_items, old_events);
  Matrix profiles(num_shoppers, content.cols());
  kshot::user_profiles<float>(history, content, profiles);
  const double t_shoppers = seconds_since(t0);
  std::printf("[2/4] %lld simulated shoppers, %lld clicks; %zu new products with %lld clicks visible, %zu later "
              "clicks on them to predict\n",
              static_cast<long long>(num_shoppers), static_cast<long long>(all.size()), new_items.size(),
              static_cast<long long>(split.train.size() - history.size()), split.cold_item_test.size());

  // 3. New-product embeddings from content + first clicks, trained on old products by simulating cold starts.
  std::printf("[3/4] training the new-product embedder on the old products' simulated cold starts\n");
  t0 = Clock::now();
  kshot::ColdItemConfig generator_config;
  generator_config.steps = 600;
  generator_config.max_support = 3;
  // No content input: the new lines' images are unlike anything the embedder can be trained on (it simulates
  // cold starts of old products only), and a content correction learned there lowered recall on the new lines
  // below the plain audience mean; the first clicks' audience transfers. See docs/recommendation.md.
  const Matrix no_content(num_items, 0);
  kshot::ColdItemEmbedder<float> embedder(/*content_dim=*/0, content.cols(), generator_config);
  kshot::ProgressBar progress(&std::cerr, "step");
  progress.start(generator_config.steps);
  const kshot::ColdItemReport report =
      embedder.fit(no_content, profiles, history, old_items, [&](Index step, double loss) {
        progress.set_loss(loss);
        progress.update(step + 1);
      });
  progress.finish();
  Method methods[4] = {{"popularity (clicks so far)", Matrix()},
                       {"content only", Matrix()},
                       {"audience of first clicks", Matrix()},
                       {"kshot ColdItemEmbedder", Matrix(static_cast<Index>(new_items.size()), content.cols())}};
  embedder.embed(no_content, profiles, split.train, new_items, methods[3].vectors);
  const double t_generator = seconds_since(t0);
  std::printf("      loss %.3f -> %.3f over %lld steps (%lld old products simulated)\n", report.first_loss,
              report.last_loss, static_cast<long long>(report.steps),
              static_cast<long long>(report.trainable_items));

  const auto n_new = static_cast<Index>(new_items.size());
  methods[0].vectors.resize(n_new, 1);
  methods[1].vectors.resize(n_new, content.cols());
  methods[2].vectors.resize(n_new, content.cols());
  for (Index j = 0; j < n_new; ++j) {
    const Index item = new_items[static_cast<std::size_t>(j)];
    const kshot::InteractionList first = split.train.item(item);
    methods[0].vectors(j, 0) = static_cast<float>(first.size);
    methods[1].vectors.row(j) = content.row(item);
    methods[2].vectors.row(j).setZero();
    for (Index k = 0; k < first.size; ++k) methods[2].vectors.row(j) += profiles.row(first.ids[k]);
    if (first.size > 0) methods[2].vectors.row(j) /= static_cast<float>(first.size);
  }

  // 4. Recommend new products to every shopper who clicked one later; evaluate against those clicks.
  std::vector<std::vector<kshot::ItemId>> later(static_cast<std::size_t>(num_shoppers));
  for (const auto& e : split.cold_item_test) later[static_cast<std::size_t>(e.user)].push_back(e.item);
  std::vector<Index> users;
  std::vector<std::vector<kshot::ItemId>> relevant;
  for (Index u = 0; u < num_shoppers; ++u) {
    auto& l = later[static_cast<std::size_t>(u)];
    if (l.empty()) continue;
    std::sort(l.begin(), l.end());
    l.erase(std::unique(l.begin(), l.end()), l.end());
    users.push_back(u);
    relevant.push_back(l);
  }
  const kshot::RelevanceSets relevance(relevant);
  std::printf("[4/4] recommending the new products to %zu shoppers (their own clicks excluded)\n\n", users.size());
  std::printf("  %-28s %-17s %-17s %-17s %-17s %s\n", "new-product embedding", "recall@10", "NDCG@10", "recall@50",
              "NDCG@50", "search");
  kshot::IdVector ids(n_new);
  for (Index j = 0; j < n_new; ++j) ids[j] = new_items[static_cast<std::size_t>(j)];
  double t_search_total = 0;
  for (const Method& m : methods) {
    const Index dim = m.vectors.cols();
    kshot::Recommender<float> recommender(dim);
    recommender.items().add(m.vectors, ids);
    if (dim == 1) {
      recommender.set_profiles(Matrix::Ones(num_shoppers, 1));  // popularity: the same list for everyone
    } else {
      recommender.set_profiles(profiles);
    }
    const auto ts = Clock::now();
    const kshot::SearchResult<float> top = recommender.recommend(users, 50, &split.train);
    const double t_search = seconds_since(ts);
    t_search_total += t_search;
    const kshot::RankingReport r10 = kshot::evaluate_ranking(top.ids, relevance, 10);
    const kshot::RankingReport r50 = kshot::evaluate_ranking(top.ids, relevance, 50);
    auto cell = [](const kshot::PerUserMetric& metric) {
      const kshot::MeanInterval ci = metric.ci95();
      static char buffer[4][32];
      static int next = 0;
      char* out = buffer[next++ % 4];
      std::snprintf(out, 32, "%.4f +- %.4f", ci.mean, ci.half_width);
      return out;
    };
    std::printf("  %-28s %-17s %-17s %-17s %-17s %.1f ms\n", m.name, cell(r10.recall), cell(r10.ndcg),
                cell(r50.recall), cell(r50.ndcg), 1e3 * t_search);
  }

  // The reverse: which shoppers should see one new product?
  kshot::Recommender<float> recommender(content.cols());
  recommender.set_profiles(profiles);
  const kshot::SearchResult<float> audience = recommender.audience(methods[3].vectors.topRows(1), 5);
  const Index product = new_items[0];
  std::printf("\nshow new product %lld (%s) first to shoppers:", static_cast<long long>(product),
              kshot::fashion_mnist_class_name(catalogue.labels[product]));
  for (Index k = 0; k < audience.counts[0]; ++k) std::printf(" %lld", static_cast<long long>(audience.ids(0, k)));
  std::printf("\n\ntimings: content model %.1f s, shoppers and profiles %.1f s, embedder %.1f s, searches %.2f s; "
              "total %.1f s\n",
              t_content, t_shoppers, t_generator, t_search_total, seconds_since(t_start));
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "new_product_recommendation: %s\n", e.what());
  return 1;
}
