// SPDX-License-Identifier: MIT
// recommend: interactions, user profiles and audience prototypes, the cold-start split protocol, and the
// cold-item generator (its loss gradient by central differences, training, determinism, errors).
// Built in unity batches with the nn tests: helpers live in the file's own namespace.
#include <kshot/core/threads.hpp>
#include <kshot/recommend/cold_item.hpp>
#include <kshot/recommend/interactions.hpp>
#include <kshot/recommend/profiles.hpp>
#include <kshot/recommend/recommender.hpp>
#include <kshot/recommend/split.hpp>

#include "test_util.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <tuple>
#include <vector>

namespace test_recommend {

using kshot::Index;
using kshot::Interaction;
using kshot::InteractionMatrix;

// Random events: each user gets `per_user` distinct items at random times.
std::vector<Interaction> random_events(Index users, Index items, Index per_user, std::uint64_t seed) {
  kshot::RandomStream rng(seed);
  std::vector<Interaction> events;
  std::vector<Index> pool(static_cast<std::size_t>(items));
  for (Index u = 0; u < users; ++u) {
    for (Index i = 0; i < items; ++i) pool[static_cast<std::size_t>(i)] = i;
    rng.shuffle(pool.begin(), pool.end());
    for (Index k = 0; k < std::min(per_user, items); ++k)
      events.push_back({u, pool[static_cast<std::size_t>(k)], rng.uniform<double>(), 1.0 + double(k % 3)});
  }
  return events;
}

auto key(const Interaction& e) { return std::make_tuple(e.user, e.item, e.time, e.weight); }

std::vector<std::tuple<Index, Index, double, double>> sorted_keys(const std::vector<Interaction>& events) {
  std::vector<std::tuple<Index, Index, double, double>> out;
  for (const auto& e : events) out.push_back(key(e));
  std::sort(out.begin(), out.end());
  return out;
}

TEST_CASE("InteractionMatrix indexes events by user and by item, in time order") {
  const std::vector<Interaction> events{{0, 2, 5.0, 1.0}, {0, 1, 1.0, 2.0}, {1, 2, 3.0, 1.0},
                                        {0, 2, 1.0, 1.0}, {2, 0, 0.0, 0.5}};
  const InteractionMatrix m(4, 3, events);
  CHECK(m.num_users() == 4);
  CHECK(m.num_items() == 3);
  CHECK(m.size() == 5);
  const auto u0 = m.user(0);
  REQUIRE(u0.size == 3);
  // time 1.0 (items 1 and 2: tie broken by item), then time 5.0.
  CHECK(u0.ids[0] == 1);
  CHECK(u0.ids[1] == 2);
  CHECK(u0.ids[2] == 2);
  CHECK(u0.times[2] == 5.0);
  CHECK(u0.weights[0] == 2.0);
  CHECK(m.user(3).empty());
  const auto i2 = m.item(2);
  REQUIRE(i2.size == 3);
  CHECK(i2.ids[0] == 0);
  CHECK(i2.times[0] == 1.0);
  CHECK(i2.ids[1] == 1);
  CHECK(i2.ids[2] == 0);
  CHECK(i2.contains(1));
  CHECK_FALSE(i2.contains(2));
  CHECK(m.item_counts() == std::vector<Index>{1, 1, 3});
  CHECK(sorted_keys(m.events()) == sorted_keys(events));
}

TEST_CASE("InteractionMatrix rejects bad events with their position and values") {
  KSHOT_CHECK_THROWS_WITH_ALL((InteractionMatrix(2, 2, {{0, 0, 0.0, 1.0}, {2, 0, 0.0, 1.0}})), std::invalid_argument, "kshot::InteractionMatrix::InteractionMatrix()", "events[1].user is 2", "[0, 2)");
  KSHOT_CHECK_THROWS_WITH_ALL((InteractionMatrix(2, 2, {{0, -1, 0.0, 1.0}})), std::invalid_argument, "events[0].item is -1");
  KSHOT_CHECK_THROWS_WITH_ALL((InteractionMatrix(2, 2, {{0, 0, std::nan(""), 1.0}})), std::invalid_argument, "events[0].time is nan");
  KSHOT_CHECK_THROWS_WITH_ALL((InteractionMatrix(2, 2, {{0, 0, 0.0, -1.0}})), std::invalid_argument, "events[0].weight is -1", "finite and >= 0");
  KSHOT_CHECK_THROWS_WITH_ALL((InteractionMatrix(-1, 2, {})), std::invalid_argument, "num_users is -1");
  const InteractionMatrix m(2, 2, {});
  KSHOT_CHECK_THROWS_WITH_ALL(m.user(2), std::out_of_range, "kshot::InteractionMatrix::user()", "u is 2");
  KSHOT_CHECK_THROWS_WITH_ALL(m.item(-1), std::out_of_range, "kshot::InteractionMatrix::item()", "i is -1");
}

TEST_CASE_TEMPLATE("user_profiles are weighted means with optional recency decay", Scalar, float, double) {
  using M = kshot::RowMatrixX<Scalar>;
  M items(3, 2);
  items << 1, 0, 0, 2, 4, 4;
  // User 0: item 0 at t=0 (w 1), item 1 at t=2 (w 3); user 1: item 2 with weight 0; user 2: nothing.
  const InteractionMatrix m(3, 3, {{0, 0, 0.0, 1.0}, {0, 1, 2.0, 3.0}, {1, 2, 1.0, 0.0}});
  M out(3, 2);
  CHECK(kshot::user_profiles<Scalar>(m, items, out) == 2);
  CHECK(out(0, 0) == doctest::Approx(0.25));
  CHECK(out(0, 1) == doctest::Approx(1.5));
  CHECK(out.row(1).isZero());
  CHECK(out.row(2).isZero());

  kshot::ProfileOptions o;
  o.half_life = 2.0;  // item 0 is one half-life older than the user's latest event: weight 1 * 0.5
  kshot::user_profiles<Scalar>(m, items, out, o);
  CHECK(out(0, 0) == doctest::Approx(0.5 / 3.5));
  CHECK(out(0, 1) == doctest::Approx(6.0 / 3.5));
  o.now = 4.0;  // a fixed clock: weights 0.25 and 3 * 0.5
  kshot::user_profiles<Scalar>(m, items, out, o);
  CHECK(out(0, 0) == doctest::Approx(0.25 / 1.75));
  CHECK(out(0, 1) == doctest::Approx(3.0 / 1.75));

  kshot::ProfileOptions last;
  last.max_events = 1;
  last.normalize = true;
  kshot::user_profiles<Scalar>(m, items, out, last);
  CHECK(out(0, 0) == doctest::Approx(0.0));
  CHECK(out(0, 1) == doctest::Approx(1.0));

  // max_events and half_life together, on unevenly spaced events: each kept event decays by its own age.
  const InteractionMatrix three(1, 3, {{0, 0, 0.0, 1.0}, {0, 1, 1.0, 1.0}, {0, 2, 4.0, 1.0}});
  kshot::ProfileOptions both;
  both.max_events = 2;
  both.half_life = 2.0;  // item 1 (t = 1) weighs 2^-1.5, item 2 (t = 4) weighs 1; item 0 is dropped
  M one(1, 2);
  CHECK(kshot::user_profiles<Scalar>(three, items, one, both) == 0);
  const double w1 = std::exp2(-1.5);
  CHECK(one(0, 0) == doctest::Approx(4.0 / (1.0 + w1)));
  CHECK(one(0, 1) == doctest::Approx((2.0 * w1 + 4.0) / (1.0 + w1)));

  M audience(3, 2);
  M profiles(3, 2);
  profiles << 1, 1, 3, 5, 7, 7;
  CHECK(kshot::audience_prototypes<Scalar>(m, profiles, audience) == 1);  // item 2's only event has weight 0
  CHECK(audience(0, 0) == doctest::Approx(1.0));
  CHECK(audience(1, 1) == doctest::Approx(1.0));
  CHECK(audience.row(2).isZero());
}

TEST_CASE("user_profiles: errors, and the same bits at 1 and 2 threads") {
  using M = kshot::RowMatrixX<double>;
  const Index users = 1500, items = 400, d = 24;
  const InteractionMatrix m(users, items, random_events(users, items, 30, 7));
  M emb = kshot::test::random_matrix<double>(items, d, 3);
  M one(users, d), two(users, d);
  {
    kshot::ThreadCountGuard g(1);
    kshot::user_profiles<double>(m, emb, one);
  }
  {
    kshot::ThreadCountGuard g(2);
    kshot::user_profiles<double>(m, emb, two);
  }
  CHECK(std::memcmp(one.data(), two.data(), sizeof(double) * std::size_t(one.size())) == 0);

  M bad(users, d + 1);
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::user_profiles<double>(m, emb, bad), std::invalid_argument, "kshot::user_profiles()", "out");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::user_profiles<double>(m, emb.topRows(10), one), std::invalid_argument, "item_embeddings has 10 rows but there are 400 items");
  kshot::ProfileOptions o;
  o.half_life = -1;
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::user_profiles<double>(m, emb, one, o), std::invalid_argument, "options.half_life is -1");
  emb(3, 2) = std::nan("");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::user_profiles<double>(m, emb, one), std::invalid_argument, "item_embeddings");
}

TEST_CASE("make_cold_start_split places every event in exactly one set, by the documented rules") {
  const Index users = 200, items = 60;
  const auto events = random_events(users, items, 25, 11);
  const InteractionMatrix all(users, items, events);
  std::vector<char> cold_items(static_cast<std::size_t>(items), 0);
  for (Index i = 0; i < items; i += 4) cold_items[static_cast<std::size_t>(i)] = 1;
  kshot::ColdStartConfig c;
  c.cold_user_fraction = 0.25;
  c.cold_user_support = 2;
  c.cold_item_support = 3;
  c.warm_test_fraction = 0.3;
  c.seed = 5;
  const kshot::ColdStartSplit s = kshot::make_cold_start_split(all, cold_items, c);

  // A partition of the events.
  auto joined = s.train.events();
  for (const auto* part : {&s.warm_test, &s.cold_user_test, &s.cold_item_test, &s.both_cold_test})
    joined.insert(joined.end(), part->begin(), part->end());
  CHECK(sorted_keys(joined) == sorted_keys(events));
  CHECK(std::count(s.cold_users.begin(), s.cold_users.end(), 1) == 50);

  auto is_cold_user = [&](Index u) { return s.cold_users[static_cast<std::size_t>(u)] != 0; };
  auto is_cold_item = [&](Index i) { return cold_items[static_cast<std::size_t>(i)] != 0; };
  for (const auto& e : s.warm_test) CHECK((!is_cold_user(e.user) && !is_cold_item(e.item)));
  for (const auto& e : s.cold_user_test) CHECK((is_cold_user(e.user) && !is_cold_item(e.item)));
  for (const auto& e : s.cold_item_test) CHECK((!is_cold_user(e.user) && is_cold_item(e.item)));
  for (const auto& e : s.both_cold_test) CHECK((is_cold_user(e.user) && is_cold_item(e.item)));

  for (Index u = 0; u < users; ++u) {
    const auto full = all.user(u), kept = s.train.user(u);
    Index warm_total = 0, warm_kept = 0;
    for (Index k = 0; k < full.size; ++k) warm_total += is_cold_item(full.ids[k]) ? 0 : 1;
    double last_kept = -1, first_test = 2;
    for (Index k = 0; k < kept.size; ++k) {
      if (is_cold_item(kept.ids[k])) {
        CHECK_FALSE(is_cold_user(u));  // cold users never see cold items
        continue;
      }
      ++warm_kept;
      last_kept = std::max(last_kept, kept.times[k]);
    }
    const auto& tests = is_cold_user(u) ? s.cold_user_test : s.warm_test;
    for (const auto& e : tests)
      if (e.user == u) first_test = std::min(first_test, e.time);
    if (is_cold_user(u)) {
      CHECK(warm_kept == std::min<Index>(2, warm_total));
    } else {
      const auto test = static_cast<Index>(std::ceil(0.3 * double(warm_total)));
      CHECK(warm_kept == std::max<Index>(1, warm_total - test));
    }
    CHECK(last_kept <= first_test);  // the visible events come first in time
  }
  for (Index i = 0; i < items; ++i) {
    if (!is_cold_item(i)) continue;
    const auto kept = s.train.item(i);
    Index warm_users = 0;
    for (Index k = 0; k < all.item(i).size; ++k) warm_users += is_cold_user(all.item(i).ids[k]) ? 0 : 1;
    CHECK(kept.size == std::min<Index>(3, warm_users));
    for (const auto& e : s.cold_item_test)
      if (e.item == i) CHECK(e.time >= kept.times[kept.size - 1]);
  }

  const kshot::ColdStartSplit again = kshot::make_cold_start_split(all, cold_items, c);
  CHECK(again.cold_users == s.cold_users);
  CHECK(sorted_keys(again.train.events()) == sorted_keys(s.train.events()));

  kshot::ColdStartConfig bad = c;
  bad.cold_user_fraction = 1.5;
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::make_cold_start_split(all, cold_items, bad), std::invalid_argument, "kshot::make_cold_start_split()", "cold_user_fraction is 1.5");
  KSHOT_CHECK_THROWS_WITH_ALL((kshot::make_cold_start_split(all, std::vector<char>(3, 0), c)), std::invalid_argument, "cold_items has 3 entries but there are 60 items");
}

TEST_CASE("InBatchSoftmax: gradient against central differences, masking, degenerate rows") {
  using M = kshot::RowMatrixX<double>;
  const Index nq = 7, B = 5, d = 4;
  const M q = kshot::test::random_matrix<double>(nq, d, 21);
  M e = kshot::test::random_matrix<double>(B, d, 22);
  const std::vector<Index> positive{0, 1, 1, 4, 2, 3, 0};
  auto mask = [](Index r, Index j) { return (r + j) % 4 == 0; };  // masks some negatives (never the positive)
  kshot::detail::InBatchSoftmax<double> loss;
  M grad(B, d);
  kshot::RowMatrixRef<double> g(grad);
  const double value = loss.evaluate(q, e, positive, 0.3, mask, &g);
  // The value by hand.
  double expected = 0;
  for (Index r = 0; r < nq; ++r) {
    const Index p = positive[static_cast<std::size_t>(r)];
    double sum = 0;
    for (Index j = 0; j < B; ++j)
      if (j == p || !mask(r, j)) sum += std::exp(q.row(r).dot(e.row(j)) / 0.3);
    expected -= std::log(std::exp(q.row(r).dot(e.row(p)) / 0.3) / sum);
  }
  CHECK(value == doctest::Approx(expected / double(nq)).epsilon(1e-12));
  M numeric(B, d);
  const double h = 1e-6;
  for (Index i = 0; i < B; ++i)
    for (Index k = 0; k < d; ++k) {
      const double keep = e(i, k);
      e(i, k) = keep + h;
      const double up = loss.evaluate(q, e, positive, 0.3, mask, nullptr);
      e(i, k) = keep - h;
      const double down = loss.evaluate(q, e, positive, 0.3, mask, nullptr);
      e(i, k) = keep;
      numeric(i, k) = (up - down) / (2 * h);
    }
  CHECK(kshot::test::gradient_rel_error(grad, numeric) < 1e-7);

  // Every negative masked: loss 0 and no gradient; huge logits stay finite.
  const double zero = loss.evaluate(q, e, positive, 0.3, [](Index, Index) { return true; }, &g);
  CHECK(zero == 0.0);
  CHECK(grad.isZero());
  const double big = loss.evaluate(q * 1e3, e * 1e3, positive, 1e-3, mask, &g);
  CHECK(std::isfinite(big));
  CHECK(grad.allFinite());
}

// Users in two taste groups; items 0..79 in four groups; group g of users likes item groups g and g + 2.
struct Toy {
  Index users = 300, items = 80, d = 6, content_dim = 5;
  InteractionMatrix interactions;
  kshot::RowMatrixX<double> content, profiles, item_emb;
};

Toy make_toy() {
  Toy t;
  kshot::RandomStream rng(3);
  t.item_emb = kshot::test::random_matrix<double>(t.items, t.d, 4);
  t.content = kshot::test::random_matrix<double>(t.items, t.content_dim, 5);
  std::vector<Interaction> events;
  for (Index u = 0; u < t.users; ++u) {
    const Index g = u % 2;
    for (int k = 0; k < 12; ++k) {
      const Index group = g + 2 * static_cast<Index>(rng.uniform_index(2));
      const Index item = group * 20 + rng.uniform_index(20);
      events.push_back({u, item, rng.uniform<double>(), 1.0});
    }
  }
  t.interactions = InteractionMatrix(t.users, t.items, events);
  t.profiles.resize(t.users, t.d);
  kshot::user_profiles<double>(t.interactions, t.item_emb, t.profiles);
  return t;
}

TEST_CASE("ColdItemEmbedder trains down its loss, reproducibly, with the same bits at 1 and 2 threads") {
  const Toy t = make_toy();
  std::vector<Index> warm(static_cast<std::size_t>(t.items));
  for (Index i = 0; i < t.items; ++i) warm[static_cast<std::size_t>(i)] = i;
  kshot::ColdItemConfig c;
  c.hidden = {16};
  c.steps = 150;
  c.items_per_step = 32;
  c.learning_rate = 3e-3;
  c.seed = 9;
  kshot::ColdItemEmbedder<double> one(t.content_dim, t.d, c), two(t.content_dim, t.d, c);
  kshot::ColdItemReport r1, r2;
  Index callbacks = 0;
  {
    kshot::ThreadCountGuard g(1);
    r1 = one.fit(t.content, t.profiles, t.interactions, warm, [&](Index, double loss) {
      ++callbacks;
      CHECK(std::isfinite(loss));
    });
  }
  {
    kshot::ThreadCountGuard g(2);
    r2 = two.fit(t.content, t.profiles, t.interactions, warm);
  }
  CHECK(callbacks == 150);
  CHECK(r1.steps == 150);
  CHECK(r1.trainable_items == t.items);
  CHECK(r1.last_loss < r1.first_loss - 0.1);
  CHECK(r1.first_loss == r2.first_loss);
  CHECK(one.model().parameters() == two.model().parameters());

  // embed(): the first max_support events of each item, s + MLP([c, s, k / K, k == 0]).
  const std::vector<Index> items{0, 21, 79};
  kshot::RowMatrixX<double> out(3, t.d);
  one.embed(t.content, t.profiles, t.interactions, items, out);
  CHECK(out.allFinite());
  kshot::RowMatrixX<double> x(1, one.input_dim());
  const auto l = t.interactions.item(21);
  const Index k = std::min<Index>(c.max_support, l.size);
  kshot::RowVectorX<double> s = kshot::RowVectorX<double>::Zero(t.d);
  for (Index j = 0; j < k; ++j) s += t.profiles.row(l.ids[j]);
  s /= double(k);
  x << t.content.row(21), s, double(k) / double(c.max_support), 0.0;
  const kshot::RowVectorX<double> expected = s + one.model().forward(x, false).row(0);
  CHECK((out.row(1) - expected).norm() < 1e-12);

  // content_dim = 0: a generator of the first interactions alone; untrained, it is exactly the audience mean.
  kshot::ColdItemEmbedder<double> clicks_only(0, t.d, c);
  const kshot::RowMatrixX<double> none(t.items, 0);
  clicks_only.embed(none, t.profiles, t.interactions, items, out);
  CHECK((out.row(1) - s).norm() < 1e-12);
  const auto r0 = clicks_only.fit(none, t.profiles, t.interactions, warm);
  CHECK(r0.last_loss < r0.first_loss);
}

TEST_CASE("ColdItemEmbedder rejects bad configuration and inputs") {
  kshot::ColdItemConfig c;
  c.temperature = 0;
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::ColdItemEmbedder<float>(4, 3, c), std::invalid_argument, "kshot::ColdItemEmbedder::ColdItemEmbedder()", "config.temperature is 0");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::ColdItemEmbedder<float>(-1, 3), std::invalid_argument, "content_dim is -1");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::ColdItemEmbedder<float>(2, 0), std::invalid_argument, "embedding_dim is 0");
  const Toy t = make_toy();
  kshot::ColdItemEmbedder<double> gen(t.content_dim, t.d);
  KSHOT_CHECK_THROWS_WITH_ALL((gen.fit(t.content.topRows(5), t.profiles, t.interactions, {0})), std::invalid_argument, "kshot::ColdItemEmbedder::fit()", "content is 5 x 5");
  KSHOT_CHECK_THROWS_WITH_ALL((gen.fit(t.content, t.profiles, t.interactions, {80})), std::out_of_range, "warm_items[0] is 80");
  const InteractionMatrix sparse(t.users, t.items, {{0, 1, 0.0, 1.0}});
  KSHOT_CHECK_THROWS_WITH_ALL((gen.fit(t.content, t.profiles, sparse, {1})), std::invalid_argument, "none of the 1 warm items has 2 interactions");
  kshot::RowMatrixX<double> out(2, t.d);
  KSHOT_CHECK_THROWS_WITH_ALL((gen.embed(t.content, t.profiles, t.interactions, {0}, out)), std::invalid_argument, "kshot::ColdItemEmbedder::embed()", "out");
}

}  // namespace test_recommend

namespace test_recommend {

TEST_CASE("Recommender: top-k for users with history excluded and filters, and the audience of an item") {
  using M = kshot::RowMatrixX<double>;
  // Items on a line: item i = (i, 1); users prefer large first coordinates (profile (1, 0)) or small ones.
  const Index n = 10;
  M items(n, 2);
  for (Index i = 0; i < n; ++i) items.row(i) << double(i), 1.0;
  kshot::Recommender<double> rec(2);
  kshot::IdVector ids(n);
  for (Index i = 0; i < n; ++i) ids[i] = i;
  rec.items().add(items, ids);
  M profiles(3, 2);
  profiles << 1, 0, -1, 0, 0, 1;  // user 2 scores every item 1: ties go to the lower id
  rec.set_profiles(profiles);
  const InteractionMatrix history(3, n, {{0, 9, 0.0, 1.0}, {0, 7, 1.0, 1.0}, {1, 0, 0.0, 1.0}});

  const auto r = rec.recommend({0, 1, 2}, 3, &history);
  CHECK(r.ids.row(0) == (kshot::IdMatrix(1, 3) << 8, 6, 5).finished());
  CHECK(r.ids.row(1) == (kshot::IdMatrix(1, 3) << 1, 2, 3).finished());
  CHECK(r.ids.row(2) == (kshot::IdMatrix(1, 3) << 0, 1, 2).finished());
  CHECK(r.scores(0, 0) == 8.0);
  // Users requested in another order than their rows: each result row follows its user, profile and history.
  const auto p = rec.recommend({2, 0, 1}, 3, &history);
  CHECK(p.ids.row(0) == r.ids.row(2));
  CHECK(p.ids.row(1) == r.ids.row(0));
  CHECK(p.ids.row(2) == r.ids.row(1));
  CHECK(rec.recommend({1}, 3, &history).ids.row(0) == r.ids.row(1));

  kshot::SearchOptions even;
  even.predicate = [](kshot::ItemId id) { return id % 2 == 0; };
  const auto f = rec.recommend({0}, 7, &history, even);
  CHECK(f.counts[0] == 5);  // 0, 2, 4, 6, 8: fewer than k, padded
  CHECK(f.ids(0, 0) == 8);
  CHECK(f.ids(0, 5) == -1);

  M item(1, 2);
  item << 5, 0;
  const auto a = rec.audience(item, 2);
  CHECK(a.ids(0, 0) == 0);  // user 0 scores 5
  CHECK(a.ids(0, 1) == 2);  // user 2 scores 0, user 1 scores -5

  KSHOT_CHECK_THROWS_WITH_ALL(rec.recommend({3}, 2), std::out_of_range, "kshot::Recommender::recommend()",
                              "users[0] is 3");
  KSHOT_CHECK_THROWS_WITH_ALL(rec.recommend({0}, 0), std::invalid_argument, "k is 0");
  const InteractionMatrix other(2, n, {});
  KSHOT_CHECK_THROWS_WITH_ALL(rec.recommend({0}, 1, &other), std::invalid_argument, "history has 2 users");
  KSHOT_CHECK_THROWS_WITH_ALL(rec.set_profiles(M(2, 3)), std::invalid_argument, "profiles has 3 columns");
}

}  // namespace test_recommend
