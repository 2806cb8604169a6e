/**
 * @file tests/reference.hpp
 * @brief Reads the reference cases of the Python peers (the JSON files in tests/data/reference, copied from the
 * project's shared reference set; see the README there for their conventions).
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_TESTS_REFERENCE_HPP
#define KSHOT_TESTS_REFERENCE_HPP

#include <kshot/core/types.hpp>

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <fstream>
#include <string>

namespace kshot {
namespace test {

/// One reference case: the parsed JSON.
struct ReferenceCase {
  nlohmann::json json;

  /// A {"shape": [n, d], "data": [...]} (or a flat list, or a list of lists) as an n x d double matrix;
  /// a 1-D shape gives n x 1.
  static RowMatrixX<double> to_matrix(const nlohmann::json& j) {
    if (j.is_object() && j.contains("shape")) {
      const auto& shape = j.at("shape");
      const auto& data = j.at("data");
      const Index rows = shape.size() > 0 ? shape[0].get<Index>() : 1;
      const Index cols = shape.size() > 1 ? Index(data.size()) / std::max<Index>(rows, 1) : 1;
      RowMatrixX<double> m(rows, cols);
      for (Index k = 0; k < rows * cols; ++k) m.data()[k] = data[static_cast<std::size_t>(k)].get<double>();
      return m;
    }
    if (j.is_array() && !j.empty() && j[0].is_array()) {
      RowMatrixX<double> m(Index(j.size()), Index(j[0].size()));
      for (Index i = 0; i < m.rows(); ++i)
        for (Index k = 0; k < m.cols(); ++k) m(i, k) = j[static_cast<std::size_t>(i)][static_cast<std::size_t>(k)].get<double>();
      return m;
    }
    RowMatrixX<double> m(Index(j.size()), 1);
    for (Index i = 0; i < m.rows(); ++i) m(i, 0) = j[static_cast<std::size_t>(i)].get<double>();
    return m;
  }

  RowMatrixX<double> input(const std::string& name) const { return to_matrix(json.at("inputs").at(name)); }
  RowMatrixX<double> output(const std::string& name) const { return to_matrix(json.at("outputs").at(name)); }
  RowMatrixX<double> grad(const std::string& name) const { return to_matrix(json.at("grad").at(name)); }
  /// Labels stored as a list, or as {"shape", "data"}.
  LabelVector labels(const std::string& name) const {
    const RowMatrixX<double> m = input(name);
    LabelVector out(m.size());
    for (Index i = 0; i < m.size(); ++i) out[i] = static_cast<Label>(m.data()[i]);
    return out;
  }
  double loss() const { return json.at("loss").get<double>(); }
  const nlohmann::json& params() const { return json.at("params"); }
};

/// Loads tests/data/reference/<name>.json (name without the extension).
inline ReferenceCase load_reference(const std::string& name) {
  const std::string path = std::string(KSHOT_REFERENCE_DIR) + "/" + name + ".json";
  std::ifstream in(path);
  REQUIRE_MESSAGE(in.good(), "cannot open reference case " << path);
  ReferenceCase c;
  in >> c.json;
  return c;
}

}  // namespace test
}  // namespace kshot

#endif  // KSHOT_TESTS_REFERENCE_HPP
