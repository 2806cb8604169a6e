// SPDX-License-Identifier: MIT
#include "losses/loss_checks.hpp"
#include "losses/pml_cases.hpp"

#include <kshot/losses/contrastive.hpp>
#include <kshot/losses/detail/distance_matrix.hpp>
#include <kshot/losses/miners.hpp>

#include <algorithm>
#include <array>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

// Everything below lives in a namespace of its own: the loss tests are compiled in unity batches (see
// tests/CMakeLists.txt), where the helpers of different files must not collide.
namespace test_miners {

using namespace kshot;
using namespace kshot::test;

namespace {

// ---------------------------------------------------------------------------------------------------------
// Helpers

/// The library's distance matrix (the brute forces below select from the same values, so that the tests
/// check the selection rules, not the rounding of two distance computations).
template <class S>
RowMatrixX<S> library_matrix(const LossDistance& d, const RowMatrixX<S>& emb) {
  detail::LossDistanceMatrix<S> m;
  LossStats st;
  m.compute_self(d, emb, st);
  return m.matrix();
}

using Pair = std::array<Index, 2>;
using Triple = std::array<Index, 3>;

std::vector<Pair> positives_of(const MinedPairs& t) {
  std::vector<Pair> v;
  for (std::size_t k = 0; k < t.a1.size(); ++k) v.push_back({t.a1[k], t.p[k]});
  return v;
}
std::vector<Pair> negatives_of(const MinedPairs& t) {
  std::vector<Pair> v;
  for (std::size_t k = 0; k < t.a2.size(); ++k) v.push_back({t.a2[k], t.n[k]});
  return v;
}
std::vector<Triple> triples_of(const MinedTriplets& t) {
  std::vector<Triple> v;
  for (std::size_t k = 0; k < t.a.size(); ++k) v.push_back({t.a[k], t.p[k], t.n[k]});
  return v;
}
template <class T>
std::vector<T> sorted(std::vector<T> v) {
  std::sort(v.begin(), v.end());
  return v;
}

/// Exact equality of two pair tuples, in order.
void check_same(const MinedPairs& got, const MinedPairs& want) {
  CHECK(got.a1 == want.a1);
  CHECK(got.p == want.p);
  CHECK(got.a2 == want.a2);
  CHECK(got.n == want.n);
}
void check_same(const MinedTriplets& got, const MinedTriplets& want) {
  CHECK(got.a == want.a);
  CHECK(got.p == want.p);
  CHECK(got.n == want.n);
}

/// A random batch: n rows of dimension d with `classes` classes, shuffled labels.
struct Batch {
  RowMatrixX<double> emb;
  LabelVector labels;
};
Batch random_batch(Index n, Index d, Index classes, std::uint64_t seed) {
  return Batch{random_matrix<double>(n, d, seed), cyclic_labels(n, classes, seed + 101)};
}

/// A batch with many exact ties: small integer coordinates, compared without normalisation (every
/// distance and product is then computed exactly).
Batch tie_batch(Index n, Index d, Index classes, std::uint64_t seed) {
  Batch b{RowMatrixX<double>(n, d), cyclic_labels(n, classes, seed + 7)};
  RandomStream rng(seed);
  for (Index i = 0; i < n; ++i)
    for (Index k = 0; k < d; ++k) b.emb(i, k) = double(rng.uniform_index(3));
  return b;
}

const std::vector<MiningStrategy> all_strategies = {MiningStrategy::easy, MiningStrategy::semihard,
                                                    MiningStrategy::hard, MiningStrategy::all};
const std::vector<TripletType> all_types = {TripletType::all, TripletType::hard, TripletType::semihard,
                                            TripletType::easy};

bool valid_combination(MiningStrategy p, MiningStrategy n) {
  if (p == MiningStrategy::semihard && n == MiningStrategy::semihard) return false;
  if (p == MiningStrategy::semihard && n == MiningStrategy::all) return false;
  if (p == MiningStrategy::all && n == MiningStrategy::semihard) return false;
  return true;
}

/// Distances the brute-force tests run over.
std::vector<LossDistance> test_distances() {
  return {LossDistance::lp(), LossDistance::cosine(), LossDistance::lp(2), LossDistance::lp(1, false),
          LossDistance::dot_product(false)};
}

// ---------------------------------------------------------------------------------------------------------
// Brute-force re-implementations, written from pytorch-metric-learning's description: whole-matrix masks,
// plain loops over every candidate.

template <class S>
struct RowResult {
  std::vector<S> value;
  std::vector<Index> index;
  std::vector<bool> kept;
};

/// get_x_per_row: masks as a full matrix of 1 / ±finfo.max, then the first min or max of each row.
template <class S>
RowResult<S> bf_x_per_row(bool take_min, const RowMatrixX<S>& M, const LabelVector& y, bool positives,
                          const std::vector<S>* thresholds, const std::optional<AllowedRange<S>>& range) {
  const Index n = M.rows();
  const S inf = take_min ? std::numeric_limits<S>::max() : std::numeric_limits<S>::lowest();
  RowMatrixX<S> mask = RowMatrixX<S>::Constant(n, n, inf);
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < n; ++j)
      if (positives ? (i != j && y[i] == y[j]) : (y[i] != y[j])) mask(i, j) = 1;
  if (thresholds != nullptr)
    for (Index i = 0; i < n; ++i)
      for (Index j = 0; j < n; ++j) {
        const S t = (*thresholds)[std::size_t(i)];
        if (take_min ? M(i, j) <= t : M(i, j) >= t) mask(i, j) = inf;
      }
  if (range)
    for (Index i = 0; i < n; ++i)
      for (Index j = 0; j < n; ++j)
        if (M(i, j) > range->high || M(i, j) < range->low) mask(i, j) = inf;
  RowResult<S> r;
  RowMatrixX<S> mat = M;
  for (Index i = 0; i < n; ++i) {
    bool any = false;
    for (Index j = 0; j < n; ++j) {
      if (mask(i, j) != inf) any = true;
      if (mask(i, j) == inf) mat(i, j) = inf;
    }
    Index best = 0;
    for (Index j = 1; j < n; ++j)
      if (take_min ? mat(i, j) < mat(i, best) : mat(i, j) > mat(i, best)) best = j;
    r.value.push_back(mat(i, best));
    r.index.push_back(best);
    r.kept.push_back(any);
  }
  return r;
}

/// BatchEasyHardMiner.mine, step by step as the peer runs it.
template <class S>
MinedPairs bf_easy_hard(const RowMatrixX<S>& M, const LabelVector& y, MiningStrategy ps, MiningStrategy ns, bool inv,
                        const std::optional<AllowedRange<S>>& prange, const std::optional<AllowedRange<S>>& nrange) {
  using MS = MiningStrategy;
  const Index n = M.rows();
  auto fn_min = [&](MS s) {  // get_mine_function: true for get_min_per_row
    if (s == MS::hard || s == MS::semihard) return inv;
    return !inv;
  };
  auto positives = [&](const std::vector<S>* thr) { return bf_x_per_row<S>(fn_min(ps), M, y, true, thr, prange); };
  auto negatives = [&](const std::vector<S>* thr) {
    return bf_x_per_row<S>(fn_min(ns == MS::hard || ns == MS::semihard ? MS::easy : MS::hard), M, y, false, thr,
                           nrange);
  };
  RowResult<S> pos, neg;
  if (ps == MS::semihard && ns != MS::all) {
    neg = negatives(nullptr);
    pos = positives(&neg.value);
  } else if (ns == MS::semihard && ps != MS::all) {
    pos = positives(nullptr);
    neg = negatives(&pos.value);
  } else {
    if (ps != MS::all) pos = positives(nullptr);
    if (ns != MS::all) neg = negatives(nullptr);
  }
  MinedPairs out;
  auto all_pairs = [&](bool want_pos, std::vector<Index>& a, std::vector<Index>& b) {
    for (Index i = 0; i < n; ++i)
      for (Index j = 0; j < n; ++j)
        if (want_pos ? (i != j && y[i] == y[j]) : (y[i] != y[j])) {
          a.push_back(i);
          b.push_back(j);
        }
  };
  if (ps != MS::all && ns != MS::all) {
    for (Index i = 0; i < n; ++i)
      if (pos.kept[std::size_t(i)] && neg.kept[std::size_t(i)]) {
        out.a1.push_back(i);
        out.p.push_back(pos.index[std::size_t(i)]);
        out.a2.push_back(i);
        out.n.push_back(neg.index[std::size_t(i)]);
      }
    return out;
  }
  if (ps == MS::all) {
    all_pairs(true, out.a1, out.p);
  } else {
    for (Index i = 0; i < n; ++i)
      if (pos.kept[std::size_t(i)]) {
        out.a1.push_back(i);
        out.p.push_back(pos.index[std::size_t(i)]);
      }
  }
  if (ns == MS::all) {
    all_pairs(false, out.a2, out.n);
  } else {
    for (Index i = 0; i < n; ++i)
      if (neg.kept[std::size_t(i)]) {
        out.a2.push_back(i);
        out.n.push_back(neg.index[std::size_t(i)]);
      }
  }
  return out;
}

/// TripletMarginMiner: every (a, p, n) in row-major order, tested one by one.
template <class S>
MinedTriplets bf_triplet_margin(const RowMatrixX<S>& M, const LabelVector& y, S margin, TripletType type, bool inv) {
  MinedTriplets out;
  const Index n = M.rows();
  for (Index a = 0; a < n; ++a)
    for (Index p = 0; p < n; ++p)
      for (Index q = 0; q < n; ++q) {
        if (a == p || y[a] != y[p] || y[q] == y[a]) continue;
        const S m = inv ? M(a, p) - M(a, q) : M(a, q) - M(a, p);
        bool keep = false;
        switch (type) {
          case TripletType::easy: keep = m > margin; break;
          case TripletType::all: keep = m <= margin; break;
          case TripletType::hard: keep = m <= margin && m <= 0; break;
          case TripletType::semihard: keep = m <= margin && m > 0; break;
        }
        if (keep) {
          out.a.push_back(a);
          out.p.push_back(p);
          out.n.push_back(q);
        }
      }
  return out;
}

template <class S>
MinedPairs bf_pair_margin(const RowMatrixX<S>& M, const LabelVector& y, S pm, S nm, bool inv) {
  MinedPairs out;
  const Index n = M.rows();
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < n; ++j) {
      if (i != j && y[i] == y[j] && (inv ? M(i, j) < pm : M(i, j) > pm)) {
        out.a1.push_back(i);
        out.p.push_back(j);
      }
      if (y[i] != y[j] && (inv ? M(i, j) > nm : M(i, j) < nm)) {
        out.a2.push_back(i);
        out.n.push_back(j);
      }
    }
  return out;
}

/// MultiSimilarityMiner: the two sorting copies of the matrix, each row sorted (stable: ties by index),
/// then the peer's torch.where over (row, sorted position).
template <class S>
MinedPairs bf_multi_similarity(const RowMatrixX<S>& M, const LabelVector& y, S eps, bool inv) {
  MinedPairs out;
  const Index n = M.rows();
  bool any_pos = false, any_neg = false;
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < n; ++j) {
      if (i != j && y[i] == y[j]) any_pos = true;
      if (y[i] != y[j]) any_neg = true;
    }
  if (!any_pos || !any_neg) return out;
  const S big = std::numeric_limits<S>::max(), low = std::numeric_limits<S>::lowest();
  const S pos_ignore = inv ? big : low, neg_ignore = inv ? low : big;
  RowMatrixX<S> P = M, N = M;
  for (Index i = 0; i < n; ++i)
    for (Index j = 0; j < n; ++j) {
      if (y[i] != y[j]) P(i, j) = pos_ignore;
      if (i != j && y[i] == y[j]) N(i, j) = neg_ignore;
    }
  for (Index i = 0; i < n; ++i) {
    P(i, i) = pos_ignore;
    N(i, i) = neg_ignore;
  }
  for (Index i = 0; i < n; ++i) {
    std::vector<Index> po(static_cast<std::size_t>(n)), no(static_cast<std::size_t>(n));
    for (Index j = 0; j < n; ++j) po[std::size_t(j)] = no[std::size_t(j)] = j;
    std::stable_sort(po.begin(), po.end(), [&](Index u, Index v) { return P(i, u) < P(i, v); });
    std::stable_sort(no.begin(), no.end(), [&](Index u, Index v) { return N(i, u) < N(i, v); });
    const S pos_first = P(i, po.front()), pos_last = P(i, po.back());
    const S neg_first = N(i, no.front()), neg_last = N(i, no.back());
    for (Index k = 0; k < n; ++k) {
      const S v = P(i, po[std::size_t(k)]);
      if (inv ? v - eps < neg_last : v + eps > neg_first) {
        out.a1.push_back(i);
        out.p.push_back(po[std::size_t(k)]);
      }
    }
    for (Index k = 0; k < n; ++k) {
      const S v = N(i, no[std::size_t(k)]);
      if (inv ? v + eps > pos_first : v - eps < pos_last) {
        out.a2.push_back(i);
        out.n.push_back(no[std::size_t(k)]);
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Reference cases whose "miner" field names a miner of kshot

struct MinerCase {
  std::string file;
  ReferenceCase data;
  std::string cls;                           // e.g. "BatchHardMiner"
  std::map<std::string, std::string> kwargs;  // the miner's keyword arguments
};

const std::vector<std::string> implemented_miners = {"BatchEasyHardMiner", "BatchHardMiner", "TripletMarginMiner",
                                                     "PairMarginMiner", "MultiSimilarityMiner"};

std::vector<MinerCase> miner_cases() {
  std::map<std::string, MinerCase> found;
  for (const auto& dir : reference_dirs()) {
    for (const auto& entry : std::filesystem::directory_iterator(dir)) {
      const std::string name = entry.path().filename().string();
      if (name.rfind("pml_", 0) != 0 || entry.path().extension() != ".json") continue;
      std::ifstream in(entry.path());
      ReferenceCase c;
      in >> c.json;
      if (!c.json.contains("miner") || !c.json.at("miner").is_object()) continue;
      const auto& miner = c.json.at("miner");
      const std::string api = miner.value("api", std::string());
      const std::string cls = api_class(api, "miners.");
      if (std::find(implemented_miners.begin(), implemented_miners.end(), cls) == implemented_miners.end()) continue;
      MinerCase mc{name, std::move(c), cls, api_kwargs(api, "miners.")};
      // Parameters recorded beside the api string take precedence.
      const auto& m2 = mc.data.json.at("miner");
      if (m2.contains("params") && m2.at("params").is_object())
        for (const auto& kv : m2.at("params").items()) {
          const auto& v = kv.value();
          if (v.is_string()) mc.kwargs[kv.key()] = v.get<std::string>();
          else if (v.is_null()) mc.kwargs[kv.key()] = "None";
          else mc.kwargs[kv.key()] = v.dump();
        }
      found[name] = std::move(mc);
    }
  }
  std::vector<MinerCase> out;
  for (auto& kv : found) out.push_back(std::move(kv.second));
  return out;
}

std::string lower_tail(const std::string& s) {  // "BatchEasyHardMiner.HARD" -> "hard"
  std::string t = s.substr(s.find_last_of('.') == std::string::npos ? 0 : s.find_last_of('.') + 1);
  for (auto& ch : t) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return t;
}

MiningStrategy strategy_of(const std::string& s) {
  const std::string t = lower_tail(s);
  if (t == "easy") return MiningStrategy::easy;
  if (t == "semihard") return MiningStrategy::semihard;
  if (t == "hard") return MiningStrategy::hard;
  if (t == "all") return MiningStrategy::all;
  FAIL("unknown strategy " << s);
  return MiningStrategy::all;
}

TripletType triplet_type_of(const std::string& s) {
  const std::string t = lower_tail(s);
  if (t == "all") return TripletType::all;
  if (t == "hard") return TripletType::hard;
  if (t == "semihard") return TripletType::semihard;
  if (t == "easy") return TripletType::easy;
  FAIL("unknown type_of_triplets " << s);
  return TripletType::all;
}

/// "(0.1, 0.5)", "[0.1,0.5]" or "None".
std::optional<AllowedRange<double>> range_of(const std::map<std::string, std::string>& kw, const std::string& key) {
  const auto it = kw.find(key);
  if (it == kw.end() || it->second == "None" || it->second == "null") return std::nullopt;
  std::string s = it->second;
  for (auto& ch : s)
    if (ch == '(' || ch == ')' || ch == '[' || ch == ']' || ch == ',') ch = ' ';
  std::istringstream in(s);
  AllowedRange<double> r{};
  in >> r.low >> r.high;
  REQUIRE_MESSAGE(!in.fail(), "cannot read " << key << " = " << it->second);
  return r;
}

double kw_number(const std::map<std::string, std::string>& kw, const std::string& key, double fallback) {
  const auto it = kw.find(key);
  return it == kw.end() ? fallback : std::stod(it->second);
}

LossDistance miner_distance(const MinerCase& mc, const LossDistance& fallback) {
  const auto& miner = mc.data.json.at("miner");
  if (miner.contains("distance") && miner.at("distance").is_object()) return distance_of(miner.at("distance"));
  return fallback;
}

/// The recorded tuple of a case against what kshot mines, compared as sorted multisets.
void check_case(const MinerCase& mc) {
  const RowMatrixX<double> emb = mc.data.input("embeddings");
  const LabelVector labels = mc.data.labels("labels");
  const CaseTuple recorded = tuple_of(mc.data);
  const auto& kw = mc.kwargs;
  auto check_pairs = [&](const MinedPairs& got) {
    REQUIRE(recorded.arity == 4);
    CHECK(sorted(positives_of(got)) == sorted(positives_of(recorded.pairs)));
    CHECK(sorted(negatives_of(got)) == sorted(negatives_of(recorded.pairs)));
  };
  auto check_triplets = [&](const MinedTriplets& got) {
    REQUIRE(recorded.arity == 3);
    CHECK(sorted(triples_of(got)) == sorted(triples_of(recorded.triplets)));
  };
  if (mc.cls == "BatchHardMiner") {
    BatchHardMiner<double> m;
    m.distance = miner_distance(mc, m.distance);
    m.allowed_pos_range = range_of(kw, "allowed_pos_range");
    m.allowed_neg_range = range_of(kw, "allowed_neg_range");
    check_triplets(m.mine(emb, labels));
  } else if (mc.cls == "BatchEasyHardMiner") {
    BatchEasyHardMiner<double> m;
    m.distance = miner_distance(mc, m.distance);
    if (kw.count("pos_strategy")) m.pos_strategy = strategy_of(kw.at("pos_strategy"));
    if (kw.count("neg_strategy")) m.neg_strategy = strategy_of(kw.at("neg_strategy"));
    m.allowed_pos_range = range_of(kw, "allowed_pos_range");
    m.allowed_neg_range = range_of(kw, "allowed_neg_range");
    check_pairs(m.mine(emb, labels));
  } else if (mc.cls == "TripletMarginMiner") {
    TripletMarginMiner<double> m;
    m.distance = miner_distance(mc, m.distance);
    m.margin = kw_number(kw, "margin", 0.2);
    if (kw.count("type_of_triplets")) m.type_of_triplets = triplet_type_of(kw.at("type_of_triplets"));
    check_triplets(m.mine(emb, labels));
  } else if (mc.cls == "PairMarginMiner") {
    PairMarginMiner<double> m;
    m.distance = miner_distance(mc, m.distance);
    m.pos_margin = kw_number(kw, "pos_margin", 0.2);
    m.neg_margin = kw_number(kw, "neg_margin", 0.8);
    check_pairs(m.mine(emb, labels));
  } else if (mc.cls == "MultiSimilarityMiner") {
    MultiSimilarityMiner<double> m;
    m.distance = miner_distance(mc, m.distance);
    m.epsilon = kw_number(kw, "epsilon", 0.1);
    check_pairs(m.mine(emb, labels));
  } else {
    FAIL("no driver for " << mc.cls);
  }
}

}  // namespace

// =========================================================================================================
// Reference cases

TEST_CASE("BatchHardMiner: reproduces the tuple recorded in pml_triplet_batchhard") {
  const ReferenceCase c = load_reference("pml_triplet_batchhard");
  REQUIRE(c.json.at("miner").at("api").get<std::string>() == "miners.BatchHardMiner()");
  BatchHardMiner<double> miner;
  miner.distance = distance_of(c.json.at("miner").at("distance"));
  const RowMatrixX<double> emb = c.input("embeddings");
  const LabelVector labels = c.labels("labels");
  const CaseTuple recorded = tuple_of(c);
  REQUIRE(recorded.arity == 3);
  const MinedTriplets got = miner.mine(emb, labels);
  check_same(got, recorded.triplets);  // exactly, order included
  CHECK(miner.stats().triplets == Index(recorded.triplets.a.size()));
  CHECK(miner.stats().skipped_anchors == emb.rows() - got.size());
  // The loss over the mined triplets is the one recorded (the triplets are what ran).
  CHECK(got.size() == 16);
}

TEST_CASE("Miners: every reference case with a kshot miner reproduces its recorded tuple") {
  const auto cases = miner_cases();
  REQUIRE(!cases.empty());
  bool saw_batch_hard = false;
  for (const auto& mc : cases) {
    INFO("case " << mc.file << " miner " << mc.cls);
    saw_batch_hard = saw_batch_hard || mc.cls == "BatchHardMiner";
    check_case(mc);
  }
  CHECK(saw_batch_hard);
}

// =========================================================================================================
// BatchEasyHardMiner / BatchHardMiner

TEST_CASE_TEMPLATE("BatchEasyHardMiner: every strategy matches a brute force", T, float, double) {
  const Batch b = random_batch(23, 5, 4, 31);
  const RowMatrixX<T> emb = b.emb.cast<T>();
  Index combos = 0, nonempty = 0;
  for (const LossDistance& dist : test_distances()) {
    const RowMatrixX<T> M = library_matrix<T>(dist, emb);
    for (MiningStrategy ps : all_strategies)
      for (MiningStrategy ns : all_strategies) {
        if (!valid_combination(ps, ns)) continue;
        INFO("distance " << dist.describe() << " pos " << to_string(ps) << " neg " << to_string(ns));
        BatchEasyHardMiner<T> miner(ps, ns);
        miner.distance = dist;
        const MinedPairs got = miner.mine(emb, b.labels);
        const MinedPairs want = bf_easy_hard<T>(M, b.labels, ps, ns, dist.is_inverted(), {}, {});
        check_same(got, want);
        CHECK(miner.stats().pos_pairs == got.positive_count());
        CHECK(miner.stats().neg_pairs == got.negative_count());
        ++combos;
        if (got.positive_count() > 0) ++nonempty;
      }
  }
  CHECK(combos == 5 * 13);
  CHECK(nonempty == combos);
}

TEST_CASE("BatchEasyHardMiner: the picks are what the strategies say") {
  // Euclidean on normalised rows: check by hand that hard positives are the farthest, easy negatives the
  // farthest, semihard negatives the closest beyond the positive.
  const Batch b = random_batch(18, 4, 3, 5);
  const RowMatrixX<double> M = library_matrix<double>(LossDistance::lp(), b.emb);
  const Index n = 18;
  BatchEasyHardMiner<double> miner(MiningStrategy::hard, MiningStrategy::semihard);
  const MinedPairs got = miner.mine(b.emb, b.labels);
  REQUIRE(got.positive_count() > 0);
  for (std::size_t k = 0; k < got.a1.size(); ++k) {
    const Index a = got.a1[k], p = got.p[k], q = got.n[k];
    CHECK(got.a2[k] == a);
    CHECK(b.labels[p] == b.labels[a]);
    CHECK(b.labels[q] != b.labels[a]);
    CHECK(M(a, q) > M(a, p));
    for (Index j = 0; j < n; ++j) {
      if (j != a && b.labels[j] == b.labels[a]) CHECK(M(a, j) <= M(a, p));
      if (b.labels[j] != b.labels[a] && M(a, j) > M(a, p)) CHECK(M(a, j) >= M(a, q));
    }
  }
  // Statistics: the peer's easiest / hardest over the mined pairs.
  double hardest_pos = 0, easiest_pos = 1e9, easiest_neg = 0, hardest_neg = 1e9;
  for (std::size_t k = 0; k < got.a1.size(); ++k) {
    hardest_pos = std::max(hardest_pos, M(got.a1[k], got.p[k]));
    easiest_pos = std::min(easiest_pos, M(got.a1[k], got.p[k]));
    easiest_neg = std::max(easiest_neg, M(got.a2[k], got.n[k]));
    hardest_neg = std::min(hardest_neg, M(got.a2[k], got.n[k]));
  }
  CHECK(miner.stats().hardest_pos_pair == hardest_pos);
  CHECK(miner.stats().easiest_pos_pair == easiest_pos);
  CHECK(miner.stats().easiest_neg_pair == easiest_neg);
  CHECK(miner.stats().hardest_neg_pair == hardest_neg);
  CHECK(miner.stats().skipped_anchors == n - got.positive_count());
}

TEST_CASE_TEMPLATE("BatchEasyHardMiner: allowed ranges match a brute force", T, float, double) {
  const Batch b = random_batch(25, 4, 3, 77);
  const RowMatrixX<T> emb = b.emb.cast<T>();
  struct Setting {
    LossDistance dist;
    std::optional<AllowedRange<T>> pr, nr;
  };
  const std::vector<Setting> settings = {
      {LossDistance::lp(), AllowedRange<T>{T(0.4), T(1.1)}, AllowedRange<T>{T(0.7), T(1.5)}},
      {LossDistance::lp(), std::nullopt, AllowedRange<T>{T(0.9), T(1.2)}},
      {LossDistance::lp(), AllowedRange<T>{T(0), T(0.8)}, std::nullopt},
      {LossDistance::cosine(), AllowedRange<T>{T(-0.5), T(0.6)}, AllowedRange<T>{T(-0.2), T(0.9)}},
      {LossDistance::lp(), AllowedRange<T>{T(5), T(6)}, std::nullopt},  // nothing allowed
  };
  for (const auto& s : settings) {
    const RowMatrixX<T> M = library_matrix<T>(s.dist, emb);
    for (MiningStrategy ps : all_strategies)
      for (MiningStrategy ns : all_strategies) {
        if (!valid_combination(ps, ns)) continue;
        INFO("distance " << s.dist.describe() << " pos " << to_string(ps) << " neg " << to_string(ns));
        BatchEasyHardMiner<T> miner(ps, ns);
        miner.distance = s.dist;
        miner.allowed_pos_range = s.pr;
        miner.allowed_neg_range = s.nr;
        const MinedPairs got = miner.mine(emb, b.labels);
        check_same(got, bf_easy_hard<T>(M, b.labels, ps, ns, s.dist.is_inverted(), s.pr, s.nr));
        // Every picked pair lies in its range (the "all" side ignores the range, as the peer does).
        if (s.pr && ps != MiningStrategy::all)
          for (std::size_t k = 0; k < got.a1.size(); ++k) {
            CHECK(M(got.a1[k], got.p[k]) >= s.pr->low);
            CHECK(M(got.a1[k], got.p[k]) <= s.pr->high);
          }
      }
  }
  // Nothing in [5, 6]: no anchor has a positive.
  BatchEasyHardMiner<T> none(MiningStrategy::hard, MiningStrategy::hard);
  none.allowed_pos_range = AllowedRange<T>{T(5), T(6)};
  const MinedPairs empty = none.mine(emb, b.labels);
  CHECK(empty.positive_count() == 0);
  CHECK(empty.negative_count() == 0);
  CHECK(none.stats().skipped_anchors == 25);
}

TEST_CASE("BatchEasyHardMiner: ties go to the lower index") {
  // Anchor 0 at the origin; positives 1 and 2 at distance 1, negatives 3 and 4 at distance 2; no
  // normalisation, so every distance is exact.
  RowMatrixX<double> emb(6, 2);
  emb << 0, 0,  //
      1, 0,     //
      0, 1,     //
      2, 0,     //
      0, 2,     //
      0, -2;
  LabelVector labels(6);
  labels << 0, 0, 0, 1, 1, 1;
  BatchHardMiner<double> hard;
  hard.distance = LossDistance::lp(1, false);
  const MinedTriplets t = hard.mine(emb, labels);
  REQUIRE(t.size() == 6);
  CHECK(t.a[0] == 0);
  CHECK(t.p[0] == 1);  // 1 and 2 are both at distance 1
  CHECK(t.n[0] == 3);  // 3, 4 and 5 are all at distance 2
  BatchEasyHardMiner<double> easy(MiningStrategy::easy, MiningStrategy::easy);
  easy.distance = LossDistance::lp(1, false);
  const MinedPairs e = easy.mine(emb, labels);
  CHECK(e.p[0] == 1);
  CHECK(e.n[0] == 3);
  // A tie-rich batch, for every strategy and distance kind: the brute force takes the first extreme.
  const Batch b = tie_batch(30, 2, 3, 17);
  for (const LossDistance& dist :
       {LossDistance::lp(1, false), LossDistance::lp(2, false), LossDistance::dot_product(false)}) {
    const RowMatrixX<double> M = library_matrix<double>(dist, b.emb);
    for (MiningStrategy ps : all_strategies)
      for (MiningStrategy ns : all_strategies) {
        if (!valid_combination(ps, ns)) continue;
        INFO("distance " << dist.describe() << " pos " << to_string(ps) << " neg " << to_string(ns));
        BatchEasyHardMiner<double> miner(ps, ns);
        miner.distance = dist;
        check_same(miner.mine(b.emb, b.labels), bf_easy_hard<double>(M, b.labels, ps, ns, dist.is_inverted(), {}, {}));
      }
  }
}

TEST_CASE("BatchHardMiner: equals BatchEasyHardMiner with hard and hard") {
  const Batch b = random_batch(40, 6, 5, 3);
  for (const LossDistance& dist : test_distances()) {
    INFO("distance " << dist.describe());
    BatchHardMiner<double> hard;
    hard.distance = dist;
    hard.allowed_neg_range = AllowedRange<double>{-10, 10};
    BatchEasyHardMiner<double> general(MiningStrategy::hard, MiningStrategy::hard);
    general.distance = dist;
    general.allowed_neg_range = AllowedRange<double>{-10, 10};
    const MinedTriplets t = hard.mine(b.emb, b.labels);
    const MinedPairs p = general.mine(b.emb, b.labels);
    CHECK(t.a == p.a1);
    CHECK(t.a == p.a2);
    CHECK(t.p == p.p);
    CHECK(t.n == p.n);
    CHECK(t.size() == 40);
    CHECK(hard.stats().triplets == 40);
    CHECK(hard.stats().pos_pairs == 0);
    CHECK(hard.stats().hardest_pos_pair == general.stats().hardest_pos_pair);
    CHECK(hard.stats().easiest_triplet == general.stats().easiest_triplet);
  }
}

TEST_CASE("BatchEasyHardMiner: invalid combinations are rejected with the strategies named") {
  const Batch b = random_batch(8, 3, 2, 1);
  BatchEasyHardMiner<double> m(MiningStrategy::semihard, MiningStrategy::semihard);
  KSHOT_CHECK_THROWS_WITH_ALL(m.mine(b.emb, b.labels), std::invalid_argument, "kshot::BatchEasyHardMiner::mine()",
                              "both semihard");
  m.pos_strategy = MiningStrategy::all;
  KSHOT_CHECK_THROWS_WITH_ALL(m.mine(b.emb, b.labels), std::invalid_argument, "pos_strategy is all",
                              "neg_strategy is semihard", "cannot be combined with all");
  m.pos_strategy = MiningStrategy::semihard;
  m.neg_strategy = MiningStrategy::all;
  KSHOT_CHECK_THROWS_WITH_ALL(m.mine(b.emb, b.labels), std::invalid_argument, "pos_strategy is semihard",
                              "neg_strategy is all");
  m.neg_strategy = static_cast<MiningStrategy>(9);
  KSHOT_CHECK_THROWS_WITH_ALL(m.mine(b.emb, b.labels), std::invalid_argument, "neg_strategy is 9");
  m.neg_strategy = MiningStrategy::hard;
  m.allowed_neg_range = AllowedRange<double>{0.9, 0.1};
  KSHOT_CHECK_THROWS_WITH_ALL(m.mine(b.emb, b.labels), std::invalid_argument, "allowed_neg_range is [0.9, 0.1]");
  m.allowed_neg_range.reset();
  m.allowed_pos_range = AllowedRange<double>{std::nan(""), 1.0};
  KSHOT_CHECK_THROWS_WITH_ALL(m.mine(b.emb, b.labels), std::invalid_argument, "allowed_pos_range");
  m.allowed_pos_range.reset();
  CHECK_NOTHROW(m.mine(b.emb, b.labels));
  BatchHardMiner<double> h;
  KSHOT_CHECK_THROWS_WITH_ALL(h.mine(b.emb, cyclic_labels(7, 2)), std::invalid_argument,
                              "kshot::BatchHardMiner::mine()",
                              "labels has 7 entries", "8 rows");
}

// =========================================================================================================
// TripletMarginMiner

TEST_CASE_TEMPLATE("TripletMarginMiner: every type matches a brute force", T, float, double) {
  const Batch b = random_batch(21, 4, 3, 13);
  const RowMatrixX<T> emb = b.emb.cast<T>();
  Index nonempty = 0, runs = 0;
  for (const LossDistance& dist : test_distances()) {
    const RowMatrixX<T> M = library_matrix<T>(dist, emb);
    for (TripletType type : all_types)
      for (T margin : {T(0.2), T(0.05), T(-0.1), T(1.5)}) {
        INFO("distance " << dist.describe() << " type " << to_string(type) << " margin " << margin);
        TripletMarginMiner<T> miner(margin, type);
        miner.distance = dist;
        const MinedTriplets got = miner.mine(emb, b.labels);
        const MinedTriplets want = bf_triplet_margin<T>(M, b.labels, margin, type, dist.is_inverted());
        check_same(got, want);
        CHECK(miner.stats().triplets == got.size());
        CHECK(miner.count(emb, b.labels) == got.size());
        ++runs;
        if (got.size() > 0) ++nonempty;
      }
  }
  CHECK(runs == 80);
  CHECK(nonempty >= 60);
}

TEST_CASE("TripletMarginMiner: ties and a larger batch (sorted and scanned paths)") {
  // Integer coordinates: many margins are exactly 0 or exactly the margin.
  const Batch t = tie_batch(26, 2, 3, 23);
  for (const LossDistance& dist :
       {LossDistance::lp(1, false), LossDistance::lp(2, false), LossDistance::dot_product(false)}) {
    const RowMatrixX<double> M = library_matrix<double>(dist, t.emb);
    for (TripletType type : all_types)
      for (double margin : {0.0, 1.0, 2.0}) {
        INFO("distance " << dist.describe() << " type " << to_string(type) << " margin " << margin);
        TripletMarginMiner<double> miner(margin, type);
        miner.distance = dist;
        check_same(miner.mine(t.emb, t.labels),
                   bf_triplet_margin<double>(M, t.labels, margin, type, dist.is_inverted()));
      }
  }
  const Batch b = random_batch(90, 8, 6, 41);
  for (TripletType type : all_types) {
    INFO("type " << to_string(type));
    const RowMatrixX<float> ef = b.emb.cast<float>();
    const RowMatrixX<float> M = library_matrix<float>(LossDistance::lp(), ef);
    TripletMarginMiner<float> miner(0.3f, type);
    check_same(miner.mine(ef, b.labels), bf_triplet_margin<float>(M, b.labels, 0.3f, type, false));
  }
}

TEST_CASE("TripletMarginMiner: prepare and keep agree with mine and count") {
  const Batch b = random_batch(24, 5, 4, 8);
  for (const LossDistance& dist : {LossDistance::lp(), LossDistance::cosine()}) {
    for (TripletType type : all_types) {
      INFO("distance " << dist.describe() << " type " << to_string(type));
      TripletMarginMiner<double> miner(0.1, type);
      miner.distance = dist;
      const MinedTriplets mined = miner.mine(b.emb, b.labels);
      TripletMarginMiner<double> streaming(0.1, type);
      streaming.distance = dist;
      streaming.prepare(b.emb, b.labels);
      CHECK(streaming.prepared_rows() == 24);
      MinedTriplets kept;
      for (Index a = 0; a < 24; ++a)
        for (Index p = 0; p < 24; ++p)
          for (Index n = 0; n < 24; ++n)
            if (streaming.keep(a, p, n)) {
              kept.a.push_back(a);
              kept.p.push_back(p);
              kept.n.push_back(n);
            }
      check_same(kept, mined);
      CHECK(streaming.count(b.emb, b.labels) == mined.size());
      // keep() is false for anything that is not a label triplet.
      CHECK(!streaming.keep(0, 0, 1));
      // The statistics over every label triplet, by brute force.
      const RowMatrixX<double> M = library_matrix<double>(dist, b.emb);
      double ap = 0, an = 0;
      Index total = 0;
      for (Index a = 0; a < 24; ++a)
        for (Index p = 0; p < 24; ++p)
          for (Index n = 0; n < 24; ++n)
            if (a != p && b.labels[a] == b.labels[p] && b.labels[n] != b.labels[a]) {
              ap += M(a, p);
              an += M(a, n);
              ++total;
            }
      CHECK(miner.stats().pos_pair_dist == doctest::Approx(ap / double(total)).epsilon(1e-12));
      CHECK(miner.stats().neg_pair_dist == doctest::Approx(an / double(total)).epsilon(1e-12));
      const double margin_mean = dist.is_inverted() ? (ap - an) / double(total) : (an - ap) / double(total);
      CHECK(miner.stats().avg_triplet_margin == doctest::Approx(margin_mean).epsilon(1e-12));
    }
  }
}

TEST_CASE("TripletMarginMiner: more than max_triplets throws and points to the streaming path") {
  const Batch b = random_batch(30, 4, 3, 2);
  TripletMarginMiner<double> miner(0.2, TripletType::all);
  CHECK(miner.max_triplets == 50000000);
  const Index total = miner.count(b.emb, b.labels);
  REQUIRE(total > 10);
  miner.max_triplets = total - 1;
  MinedTriplets out;
  out.a = {1, 2, 3};
  const std::string count_text = std::to_string(total) + " triplets would be mined";
  const std::string limit_text = "max_triplets = " + std::to_string(total - 1);
  KSHOT_CHECK_THROWS_WITH_ALL(miner.mine(b.emb, b.labels, out), std::length_error,
                              "kshot::TripletMarginMiner::mine()", count_text.c_str(), limit_text.c_str(),
                              "prepare()", "keep()", "evaluate_streaming");
  CHECK(out.size() == 0);
  miner.max_triplets = total;  // exactly at the limit: fine
  CHECK(miner.mine(b.emb, b.labels).size() == total);
  // count() and the streaming path have no limit.
  miner.max_triplets = 0;
  CHECK(miner.count(b.emb, b.labels) == total);
  CHECK_NOTHROW(miner.prepare(b.emb, b.labels));
  miner.max_triplets = -1;
  KSHOT_CHECK_THROWS_WITH_ALL(miner.mine(b.emb, b.labels), std::invalid_argument, "max_triplets is -1");
}

TEST_CASE("TripletMarginMiner: bad parameters throw") {
  const Batch b = random_batch(6, 3, 2, 1);
  TripletMarginMiner<double> miner;
  miner.margin = std::numeric_limits<double>::infinity();
  KSHOT_CHECK_THROWS_WITH_ALL(miner.mine(b.emb, b.labels), std::invalid_argument, "kshot::TripletMarginMiner::mine()",
                              "margin is inf");
  KSHOT_CHECK_THROWS_WITH_ALL(miner.prepare(b.emb, b.labels), std::invalid_argument,
                              "kshot::TripletMarginMiner::prepare()", "margin");
  KSHOT_CHECK_THROWS_WITH_ALL(miner.count(b.emb, b.labels), std::invalid_argument,
                              "kshot::TripletMarginMiner::count()");
  miner.margin = 0.2;
  miner.type_of_triplets = static_cast<TripletType>(7);
  KSHOT_CHECK_THROWS_WITH_ALL(miner.mine(b.emb, b.labels), std::invalid_argument, "type_of_triplets is 7");
}

// =========================================================================================================
// PairMarginMiner

TEST_CASE_TEMPLATE("PairMarginMiner: matches a brute force", T, float, double) {
  const Batch b = random_batch(27, 5, 4, 19);
  const RowMatrixX<T> emb = b.emb.cast<T>();
  for (const LossDistance& dist : test_distances()) {
    const RowMatrixX<T> M = library_matrix<T>(dist, emb);
    for (auto margins : {std::array<T, 2>{T(0.2), T(0.8)}, std::array<T, 2>{T(1.2), T(1.3)},
                         std::array<T, 2>{T(0.3), T(-0.1)}}) {
      INFO("distance " << dist.describe() << " margins " << margins[0] << " " << margins[1]);
      PairMarginMiner<T> miner(margins[0], margins[1]);
      miner.distance = dist;
      const MinedPairs got = miner.mine(emb, b.labels);
      check_same(got, bf_pair_margin<T>(M, b.labels, margins[0], margins[1], dist.is_inverted()));
      CHECK(miner.stats().pos_pairs == got.positive_count());
      CHECK(miner.stats().neg_pairs == got.negative_count());
      double ps = 0, ns = 0;
      Index np = 0, nn = 0;
      for (Index i = 0; i < 27; ++i)
        for (Index j = 0; j < 27; ++j) {
          if (i != j && b.labels[i] == b.labels[j]) { ps += double(M(i, j)); ++np; }
          if (b.labels[i] != b.labels[j]) { ns += double(M(i, j)); ++nn; }
        }
      CHECK(miner.stats().pos_pair_dist == doctest::Approx(ps / double(np)).epsilon(1e-12));
      CHECK(miner.stats().neg_pair_dist == doctest::Approx(ns / double(nn)).epsilon(1e-12));
    }
  }
  // Distances exactly at a margin are not mined (strict comparisons, as the peer's).
  const Batch t = tie_batch(20, 2, 3, 29);
  const RowMatrixX<T> et = t.emb.cast<T>();
  for (const LossDistance& dist : {LossDistance::lp(2, false), LossDistance::dot_product(false)}) {
    const RowMatrixX<T> M = library_matrix<T>(dist, et);
    for (T margin : {T(1), T(2)}) {
      INFO("ties: distance " << dist.describe() << " margin " << margin);
      PairMarginMiner<T> miner(margin, margin);
      miner.distance = dist;
      const MinedPairs got = miner.mine(et, t.labels);
      check_same(got, bf_pair_margin<T>(M, t.labels, margin, margin, dist.is_inverted()));
      Index at_margin = 0;
      for (Index i = 0; i < 20; ++i)
        for (Index j = 0; j < 20; ++j) at_margin += (i != j && M(i, j) == margin) ? 1 : 0;
      CHECK(at_margin > 0);
    }
  }
  // Defaults: Euclidean on normalised rows, 0.2 and 0.8.
  PairMarginMiner<T> def;
  CHECK(def.pos_margin == T(0.2));
  CHECK(def.neg_margin == T(0.8));
  CHECK(def.distance.kind == DistanceKind::lp);
  def.neg_margin = std::numeric_limits<T>::quiet_NaN();
  KSHOT_CHECK_THROWS_WITH_ALL(def.mine(emb, b.labels), std::invalid_argument, "kshot::PairMarginMiner::mine()",
                              "neg_margin is nan");
}

// =========================================================================================================
// MultiSimilarityMiner

TEST_CASE_TEMPLATE("MultiSimilarityMiner: matches the sort-based brute force", T, float, double) {
  const Batch b = random_batch(26, 5, 4, 53);
  const RowMatrixX<T> emb = b.emb.cast<T>();
  Index nonempty = 0;
  for (const LossDistance& dist : test_distances()) {
    const RowMatrixX<T> M = library_matrix<T>(dist, emb);
    for (T eps : {T(0.1), T(0.5), T(0), T(-0.05)}) {
      INFO("distance " << dist.describe() << " epsilon " << eps);
      MultiSimilarityMiner<T> miner(eps);
      miner.distance = dist;
      const MinedPairs got = miner.mine(emb, b.labels);
      check_same(got, bf_multi_similarity<T>(M, b.labels, eps, dist.is_inverted()));  // order too
      CHECK(miner.stats().pos_pairs == got.positive_count());
      CHECK(miner.stats().neg_pairs == got.negative_count());
      if (got.positive_count() > 0 && got.negative_count() > 0) ++nonempty;
    }
  }
  CHECK(nonempty >= 15);
  MultiSimilarityMiner<T> def;
  CHECK(def.distance.kind == DistanceKind::cosine);
  CHECK(def.epsilon == T(0.1));
}

TEST_CASE("MultiSimilarityMiner: the rule by hand with ties and the sorted order") {
  const Batch b = random_batch(20, 4, 3, 9);
  MultiSimilarityMiner<double> miner;
  const MinedPairs got = miner.mine(b.emb, b.labels);
  const RowMatrixX<double> S = library_matrix<double>(LossDistance::cosine(), b.emb);
  // Positive (a, p) mined iff s_ap - 0.1 < max over negatives of s_an.
  std::vector<Pair> pos_want, neg_want;
  for (Index a = 0; a < 20; ++a) {
    double neg_max = -2, pos_min = 2;
    for (Index j = 0; j < 20; ++j) {
      if (b.labels[j] != b.labels[a]) neg_max = std::max(neg_max, S(a, j));
      else if (j != a) pos_min = std::min(pos_min, S(a, j));
    }
    for (Index j = 0; j < 20; ++j) {
      if (j != a && b.labels[j] == b.labels[a] && S(a, j) - 0.1 < neg_max) pos_want.push_back({a, j});
      if (b.labels[j] != b.labels[a] && S(a, j) + 0.1 > pos_min) neg_want.push_back({a, j});
    }
  }
  CHECK(sorted(positives_of(got)) == pos_want);
  CHECK(sorted(negatives_of(got)) == neg_want);
  // Within an anchor, ascending similarity.
  for (std::size_t k = 1; k < got.a1.size(); ++k)
    if (got.a1[k] == got.a1[k - 1]) CHECK(S(got.a1[k], got.p[k]) >= S(got.a1[k - 1], got.p[k - 1]));
  // Exact ties: integer coordinates under the unnormalised dot product and Euclidean distance.
  const Batch t = tie_batch(24, 2, 3, 5);
  for (const LossDistance& dist : {LossDistance::dot_product(false), LossDistance::lp(1, false)}) {
    for (double eps : {0.0, 1.0}) {
      INFO("distance " << dist.describe() << " epsilon " << eps);
      MultiSimilarityMiner<double> m(eps);
      m.distance = dist;
      check_same(m.mine(t.emb, t.labels),
                 bf_multi_similarity<double>(library_matrix<double>(dist, t.emb), t.labels, eps, dist.is_inverted()));
    }
  }
}

// =========================================================================================================
// Every miner: degenerate batches, threads, reuse, bad input

TEST_CASE("Miners: one class or a single row or zero rows or singletons give empty or finite results") {
  const RowMatrixX<double> emb = random_matrix<double>(8, 3, 4);
  const LabelVector one = LabelVector::Zero(8);
  BatchEasyHardMiner<double> beh(MiningStrategy::hard, MiningStrategy::semihard);
  BatchHardMiner<double> bh;
  TripletMarginMiner<double> tm;
  PairMarginMiner<double> pm;
  MultiSimilarityMiner<double> ms;
  SUBCASE("one class only: no negatives") {
    CHECK(beh.mine(emb, one).positive_count() == 0);
    CHECK(beh.stats().skipped_anchors == 8);
    CHECK(bh.mine(emb, one).size() == 0);
    CHECK(tm.mine(emb, one).size() == 0);
    CHECK(tm.count(emb, one) == 0);
    CHECK(tm.stats().pos_pair_dist == 0.0);  // no label triplet: 0, not the peer's NaN
    const MinedPairs p = pm.mine(emb, one);
    CHECK(p.negative_count() == 0);
    CHECK(ms.mine(emb, one).positive_count() == 0);
    // "all" positives still returns every positive pair.
    BatchEasyHardMiner<double> all_pos(MiningStrategy::all, MiningStrategy::hard);
    const MinedPairs ap = all_pos.mine(emb, one);
    CHECK(ap.positive_count() == 56);
    CHECK(ap.negative_count() == 0);
  }
  SUBCASE("a single row") {
    const RowMatrixX<double> row = random_matrix<double>(1, 3, 2);
    const LabelVector y = LabelVector::Zero(1);
    CHECK(beh.mine(row, y).positive_count() == 0);
    CHECK(bh.mine(row, y).size() == 0);
    CHECK(tm.mine(row, y).size() == 0);
    CHECK(pm.mine(row, y).positive_count() == 0);
    CHECK(ms.mine(row, y).negative_count() == 0);
  }
  SUBCASE("every row zero: distances through the normalisation floor") {
    const RowMatrixX<double> zero = RowMatrixX<double>::Zero(8, 3);
    const LabelVector y = cyclic_labels(8, 2);
    const MinedTriplets t = bh.mine(zero, y);
    CHECK(bh.stats().degenerate == 8);
    CHECK(t.size() == 8);  // all distances 0: ties give the lowest positive and negative
    CHECK(t.p[0] == 2);
    CHECK(t.n[0] == 1);
    CHECK(tm.mine(zero, y).size() == 8 * 3 * 4);  // margin 0 <= 0.2 for every triplet
    CHECK(pm.mine(zero, y).negative_count() == 32);
    const MinedPairs m = ms.mine(zero, y);  // cosine of zero rows is 0 everywhere: every pair is mined
    CHECK(m.positive_count() == 24);
    CHECK(m.negative_count() == 32);
  }
  SUBCASE("singleton classes: no positives") {
    const LabelVector y = cyclic_labels(8, 8);
    CHECK(bh.mine(emb, y).size() == 0);
    CHECK(tm.mine(emb, y).size() == 0);
    CHECK(ms.mine(emb, y).negative_count() == 0);
    const MinedPairs p = pm.mine(emb, y);
    CHECK(p.positive_count() == 0);
    CHECK(p.negative_count() > 0);
  }
}

TEST_CASE("Miners: threads do not change a single index") {
  const Batch b = random_batch(300, 16, 20, 61);  // large enough for the parallel regions
  const RowMatrixX<float> ef = b.emb.cast<float>();
  auto twice = [&](auto&& mine_once) {
    using Out = decltype(mine_once());
    Out one, two;
    {
      ThreadCountGuard guard(1);
      one = mine_once();
    }
    {
      ThreadCountGuard guard(2);
      two = mine_once();
    }
    check_same(two, one);
  };
  for (MiningStrategy ps : all_strategies)
    for (MiningStrategy ns : all_strategies) {
      if (!valid_combination(ps, ns)) continue;
      BatchEasyHardMiner<float> m(ps, ns);
      twice([&] { return m.mine(ef, b.labels); });
    }
  BatchHardMiner<double> bh;
  twice([&] { return bh.mine(b.emb, b.labels); });
  for (TripletType type : all_types) {
    TripletMarginMiner<float> tm(0.1f, type);
    twice([&] { return tm.mine(ef, b.labels); });
  }
  PairMarginMiner<float> pm;
  twice([&] { return pm.mine(ef, b.labels); });
  MultiSimilarityMiner<float> ms;
  twice([&] { return ms.mine(ef, b.labels); });
  MultiSimilarityMiner<double> msd;
  msd.distance = LossDistance::lp();
  twice([&] { return msd.mine(b.emb, b.labels); });
}

TEST_CASE("Miners: a second call with the same shapes reuses the output's storage") {
  const Batch b = random_batch(40, 6, 4, 12);
  const Batch c = random_batch(40, 6, 4, 13);
  TripletMarginMiner<double> tm(0.5);
  MinedTriplets t;
  tm.mine(b.emb, b.labels, t);
  t.a.reserve(40 * 40 * 40);
  t.p.reserve(40 * 40 * 40);
  t.n.reserve(40 * 40 * 40);
  const Index* data = t.a.data();
  tm.mine(c.emb, c.labels, t);
  CHECK(t.a.data() == data);
  CHECK(t.size() == tm.count(c.emb, c.labels));
  MultiSimilarityMiner<double> ms;
  MinedPairs p;
  ms.mine(b.emb, b.labels, p);
  p.a1.reserve(1600);
  p.p.reserve(1600);
  const Index* pd = p.p.data();
  ms.mine(c.emb, c.labels, p);
  CHECK(p.p.data() == pd);
  check_same(p, ms.mine(c.emb, c.labels));
}

TEST_CASE("Miners: bad input throws with the numbers") {
  const Batch b = random_batch(6, 3, 2, 1);
  RowMatrixX<double> bad = b.emb;
  bad(4, 2) = std::numeric_limits<double>::infinity();
  PairMarginMiner<double> pm;
  KSHOT_CHECK_THROWS_WITH_ALL(pm.mine(bad, b.labels), std::invalid_argument, "kshot::PairMarginMiner::mine()",
                              "embeddings", "row 4");
  MultiSimilarityMiner<double> ms;
  KSHOT_CHECK_THROWS_WITH_ALL(ms.mine(b.emb, cyclic_labels(4, 2)), std::invalid_argument,
                              "kshot::MultiSimilarityMiner::mine()", "labels has 4 entries", "6 rows");
  ms.epsilon = std::numeric_limits<double>::infinity();
  KSHOT_CHECK_THROWS_WITH_ALL(ms.mine(b.emb, b.labels), std::invalid_argument, "epsilon is inf");
  BatchHardMiner<double> bh;
  bh.distance.power = -1;
  KSHOT_CHECK_THROWS_WITH_ALL(bh.mine(b.emb, b.labels), std::invalid_argument, "distance.power is -1");
  TripletMarginMiner<double> tm;
  KSHOT_CHECK_THROWS_WITH_ALL(tm.mine(RowMatrixX<double>(0, 3), LabelVector(0)), std::invalid_argument,
                              "embeddings has 0 rows");
  // Finite embeddings whose unnormalised distance overflows: refused by the embeddings' norm bound that every
  // loss and miner shares (detail::check_embeddings), before the matrix is computed.
  tm.distance = LossDistance::dot_product(false);
  const RowMatrixX<double> huge = b.emb * 1e200;
  KSHOT_CHECK_THROWS_WITH_ALL(tm.mine(huge, b.labels), std::invalid_argument, "kshot::TripletMarginMiner::mine()",
                              "squared norm (overflows)", "rescale the data");
}

TEST_CASE("Miners: mined tuples feed a loss") {
  // The contrastive loss over PairMarginMiner's pairs equals the loss over the same pairs given by hand.
  const Batch b = random_batch(16, 4, 3, 27);
  PairMarginMiner<double> pm(0.3, 1.1);
  const MinedPairs pairs = pm.mine(b.emb, b.labels);
  REQUIRE(pairs.positive_count() > 1);
  ContrastiveLoss<double> loss;
  MinedPairs copy = pairs;
  RowMatrixX<double> g1(16, 4), g2(16, 4);
  CHECK(loss.evaluate(b.emb, b.labels, pm.mine(b.emb, b.labels), g1) == loss.evaluate(b.emb, b.labels, copy, g2));
  CHECK(g1 == g2);
  // BatchHardMiner's triplets as pairs: every pair is a violator or not, the value stays finite.
  BatchHardMiner<double> bh;
  CHECK(std::isfinite(loss.evaluate(b.emb, b.labels, bh.mine(b.emb, b.labels))));
}

}  // namespace test_miners
