/**
 * @file tests/losses/pml_cases.hpp
 * @brief Runs the pytorch-metric-learning reference cases: finds every pml_*.json case for a loss (in
 * tests/data/reference and, when present, the project's shared reference set beside the repository), and
 * reads its distance, reducer, parameters, mined tuple and miner into kshot's terms. Cases added to either
 * directory are picked up without code changes.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_TESTS_LOSSES_PML_CASES_HPP
#define KSHOT_TESTS_LOSSES_PML_CASES_HPP

#include "reference.hpp"
#include "test_util.hpp"

#include <kshot/losses/common.hpp>

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace kshot {
namespace test {

/// Directories scanned for reference cases: the copy in the repository, then the shared set if present.
inline std::vector<std::string> reference_dirs() {
  std::vector<std::string> dirs{KSHOT_REFERENCE_DIR};
#ifdef KSHOT_SHARED_REFERENCE_DIR
  if (std::filesystem::is_directory(KSHOT_SHARED_REFERENCE_DIR)) dirs.emplace_back(KSHOT_SHARED_REFERENCE_DIR);
#endif
  return dirs;
}

/// The class name of a "losses.Name(...)" or "miners.Name(...)" call, from the given prefix on.
inline std::string api_class(const std::string& api, const std::string& prefix) {
  const auto at = api.find(prefix);
  if (at == std::string::npos) return {};
  const auto start = at + prefix.size();
  const auto paren = api.find('(', start);
  return api.substr(start, paren == std::string::npos ? std::string::npos : paren - start);
}

/// Keyword arguments of the first "prefix Name(k=v, ...)" call in `api`, as strings (quotes stripped).
inline std::map<std::string, std::string> api_kwargs(const std::string& api, const std::string& prefix) {
  std::map<std::string, std::string> out;
  const auto at = api.find(prefix);
  if (at == std::string::npos) return out;
  const auto open = api.find('(', at);
  if (open == std::string::npos) return out;
  int depth = 0;
  std::string cur;
  std::vector<std::string> parts;
  for (std::size_t k = open + 1; k < api.size(); ++k) {
    const char c = api[k];
    if (c == '(' || c == '[') ++depth;
    if ((c == ')' || c == ']') && depth == 0) { parts.push_back(cur); break; }
    if (c == ')' || c == ']') --depth;
    if (c == ',' && depth == 0) { parts.push_back(cur); cur.clear(); continue; }
    cur += c;
  }
  for (auto& part : parts) {
    const auto eq = part.find('=');
    if (eq == std::string::npos) continue;
    auto trim = [](std::string s) {
      const auto b = s.find_first_not_of(" \t\"'");
      const auto e = s.find_last_not_of(" \t\"'");
      return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
    };
    out[trim(part.substr(0, eq))] = trim(part.substr(eq + 1));
  }
  return out;
}

/// Every pml_*.json case whose api calls losses.<loss_class>(...), by file name (the shared set wins).
inline std::vector<ReferenceCase> pml_cases(const std::string& loss_class) {
  std::map<std::string, ReferenceCase> found;
  for (const auto& dir : reference_dirs()) {
    for (const auto& entry : std::filesystem::directory_iterator(dir)) {
      const std::string name = entry.path().filename().string();
      if (name.rfind("pml_", 0) != 0 || entry.path().extension() != ".json") continue;
      std::ifstream in(entry.path());
      ReferenceCase c;
      in >> c.json;
      if (api_class(c.json.value("api", std::string()), "losses.") != loss_class) continue;
      found[name] = std::move(c);
    }
  }
  std::vector<ReferenceCase> out;
  for (auto& kv : found) out.push_back(std::move(kv.second));
  return out;
}

/// The case's distance object in kshot's terms.
inline LossDistance distance_of(const nlohmann::json& d) {
  LossDistance out;
  const std::string type = d.value("type", std::string("LpDistance"));
  if (type == "LpDistance") out.kind = DistanceKind::lp;
  else if (type == "CosineSimilarity") out.kind = DistanceKind::cosine;
  else if (type == "DotProductSimilarity") out.kind = DistanceKind::dot_product;
  else FAIL("unknown distance type " << type);
  out.normalize_embeddings = d.value("normalize_embeddings", true);
  out.p = d.value("p", 2.0);
  out.power = d.value("power", 1.0);
  return out;
}

/// One reducer type in kshot's terms; DivisorReducer is the loss's own default (only losses with a
/// divisor use it).
inline Reduction reduction_of_type(const std::string& type) {
  if (type == "MeanReducer") return Reduction::mean;
  if (type == "AvgNonZeroReducer") return Reduction::mean_nonzero;
  if (type == "SumReducer") return Reduction::sum;
  if (type == "DivisorReducer") return Reduction::loss_default;
  FAIL("unsupported reducer type " << type);
  return Reduction::loss_default;
}

/// The case's reducer in kshot's terms (MultipleReducers must use one type for every part).
inline Reduction reduction_of(const nlohmann::json& r) {
  const std::string type = r.value("type", std::string("MeanReducer"));
  if (type != "MultipleReducers") return reduction_of_type(type);
  std::string sub;
  for (const auto& kv : r.at("sub_losses").items()) {
    const std::string t = kv.value().value("type", std::string());
    if (kv.key() == "beta_reg_loss") continue;  // the margin loss's regulariser follows the main part
    if (sub.empty()) sub = t;
    REQUIRE_MESSAGE(sub == t, "sub-losses with different reducers are not supported");
  }
  return reduction_of_type(sub);
}

/// The mined tuple recorded in inputs.indices_tuple, if any.
struct CaseTuple {
  MinedPairs pairs;
  MinedTriplets triplets;
  int arity = 0;  ///< 0: none, 3: triplets, 4: pairs
  Mined view() const {
    if (arity == 3) return Mined(triplets);
    if (arity == 4) return Mined(pairs);
    return Mined();
  }
};

inline std::vector<Index> to_indices(const nlohmann::json& j) {
  std::vector<Index> v;
  const auto& data = j.is_object() ? j.at("data") : j;
  for (const auto& x : data) v.push_back(x.get<Index>());
  return v;
}

inline CaseTuple tuple_of(const ReferenceCase& c) {
  CaseTuple t;
  const auto& inputs = c.json.at("inputs");
  if (!inputs.contains("indices_tuple") || inputs.at("indices_tuple").is_null()) return t;
  const auto& it = inputs.at("indices_tuple");
  t.arity = static_cast<int>(it.size());
  if (t.arity == 3) {
    t.triplets.a = to_indices(it[0]);
    t.triplets.p = to_indices(it[1]);
    t.triplets.n = to_indices(it[2]);
  } else if (t.arity == 4) {
    t.pairs.a1 = to_indices(it[0]);
    t.pairs.p = to_indices(it[1]);
    t.pairs.a2 = to_indices(it[2]);
    t.pairs.n = to_indices(it[3]);
  } else {
    FAIL("indices_tuple has " << t.arity << " lists");
  }
  return t;
}

/// A numeric parameter of the case (params first, then the api's keyword arguments), or `fallback`.
inline double param(const ReferenceCase& c, const std::string& name, double fallback) {
  const auto& p = c.json.at("params");
  if (p.contains(name) && p.at(name).is_number()) return p.at(name).get<double>();
  const auto kw = api_kwargs(c.json.value("api", std::string()), "losses.");
  if (auto it = kw.find(name); it != kw.end()) return std::stod(it->second);
  return fallback;
}

/// A boolean parameter (true/false/True/False), or `fallback`.
inline bool param_bool(const ReferenceCase& c, const std::string& name, bool fallback) {
  const auto& p = c.json.at("params");
  if (p.contains(name) && p.at(name).is_boolean()) return p.at(name).get<bool>();
  const auto kw = api_kwargs(c.json.value("api", std::string()), "losses.");
  if (auto it = kw.find(name); it != kw.end()) return it->second == "True" || it->second == "true";
  return fallback;
}

/// A string parameter, or `fallback`.
inline std::string param_string(const ReferenceCase& c, const std::string& name, const std::string& fallback) {
  const auto& p = c.json.at("params");
  if (p.contains(name)) {
    if (p.at(name).is_string()) return p.at(name).get<std::string>();
    if (p.at(name).is_number_integer()) return std::to_string(p.at(name).get<long long>());
  }
  const auto kw = api_kwargs(c.json.value("api", std::string()), "losses.");
  if (auto it = kw.find(name); it != kw.end()) return it->second;
  return fallback;
}

/// The relative error of a scalar against the reference: |a - b| / max(|b|, 1e-300) (or |a| when b is 0).
inline double scalar_rel_error(double a, double b) {
  if (b == 0.0) return std::abs(a);
  return std::abs(a - b) / std::abs(b);
}

/// ||a - b|| / ||b|| (or ||a|| when b is zero): the error asserted against a reference gradient.
template <class DA, class DB>
double matrix_rel_error(const Eigen::MatrixBase<DA>& a, const Eigen::MatrixBase<DB>& b) {
  REQUIRE(a.rows() == b.rows());
  REQUIRE(a.cols() == b.cols());
  const double nb = b.template cast<double>().norm();
  const double diff = (a.template cast<double>() - b.template cast<double>()).norm();
  return nb == 0.0 ? diff : diff / nb;
}

/// The tolerance asserted against the peers in double precision (issue #5: 1e-9).
inline constexpr double reference_tolerance = 1e-9;

}  // namespace test
}  // namespace kshot

#endif  // KSHOT_TESTS_LOSSES_PML_CASES_HPP
