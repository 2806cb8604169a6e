/**
 * @file tests/distill/distill_checks.hpp
 * @brief Shared helpers of the distillation-loss tests: the torchdistill and mdistiller reference cases (every
 * td_*.json and mdistiller_*.json in tests/data/reference and in the project's shared reference set, so cases
 * added there are picked up without code changes), central-difference gradient checks and the 1-vs-2-thread
 * bitwise check.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_TESTS_DISTILL_DISTILL_CHECKS_HPP
#define KSHOT_TESTS_DISTILL_DISTILL_CHECKS_HPP

#include "reference.hpp"
#include "test_util.hpp"

#include <kshot/core/threads.hpp>
#include <kshot/core/types.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

namespace kshot {
namespace test {
namespace distill_checks {

/// Relative tolerance against the peers' float64 values.
inline constexpr double reference_tolerance = 1e-9;
/// Asserted bound of ‖g − ĝ‖ / ‖g + ĝ‖ against central differences.
inline constexpr double gradient_tolerance = 1e-6;

/// Every td_*.json and mdistiller_*.json case whose "api" contains `api_fragment`, by file name (the shared set wins).
inline std::vector<ReferenceCase> cases(const std::string& api_fragment) {
  std::vector<std::string> dirs{KSHOT_REFERENCE_DIR};
#ifdef KSHOT_SHARED_REFERENCE_DIR
  if (std::filesystem::is_directory(KSHOT_SHARED_REFERENCE_DIR)) dirs.emplace_back(KSHOT_SHARED_REFERENCE_DIR);
#endif
  std::map<std::string, ReferenceCase> found;
  for (const auto& dir : dirs) {
    if (!std::filesystem::is_directory(dir)) continue;
    for (const auto& entry : std::filesystem::directory_iterator(dir)) {
      const std::string name = entry.path().filename().string();
      if (entry.path().extension() != ".json") continue;
      if (name.rfind("td_", 0) != 0 && name.rfind("mdistiller_", 0) != 0) continue;
      std::ifstream in(entry.path());
      ReferenceCase c;
      in >> c.json;
      if (c.json.value("api", std::string()).find(api_fragment) == std::string::npos) continue;
      found[name] = std::move(c);
    }
  }
  std::vector<ReferenceCase> out;
  for (auto& kv : found) out.push_back(std::move(kv.second));
  return out;
}

/// The name of the case's first input (or gradient) whose key starts with `prefix` ("student", "teacher").
inline std::string key_with(const nlohmann::json& obj, const std::string& prefix) {
  for (auto it = obj.begin(); it != obj.end(); ++it)
    if (it.key().rfind(prefix, 0) == 0) return it.key();
  return {};
}

/// A parameter as double, `fallback` when absent or null.
inline double param(const ReferenceCase& c, const std::string& name, double fallback) {
  const auto& p = c.json.at("params");
  if (!p.contains(name) || p.at(name).is_null()) return fallback;
  if (p.at(name).is_boolean()) return p.at(name).get<bool>() ? 1.0 : 0.0;
  return p.at(name).get<double>();
}

/// A string parameter, `fallback` when absent or null.
inline std::string param_string(const ReferenceCase& c, const std::string& name, const std::string& fallback) {
  const auto& p = c.json.at("params");
  if (!p.contains(name) || p.at(name).is_null()) return fallback;
  return p.at(name).get<std::string>();
}

/// The shape list of an input.
inline std::vector<Index> shape_of(const ReferenceCase& c, const std::string& input) {
  std::vector<Index> out;
  const auto& j = c.json.at("inputs").at(input);
  if (j.is_object() && j.contains("shape"))
    for (const auto& v : j.at("shape")) out.push_back(v.get<Index>());
  return out;
}

/// |a - b| / max(|b|, tiny).
inline double scalar_rel(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-300); }

/// max |a - b| / max |b| over the entries (a norm-relative error for gradients).
template <class DA, class DB>
double matrix_rel(const Eigen::MatrixBase<DA>& a, const Eigen::MatrixBase<DB>& b) {
  REQUIRE(a.rows() == b.rows());
  REQUIRE(a.cols() == b.cols());
  const double scale = std::max(b.cwiseAbs().maxCoeff(), 1e-300);
  return (a - b).cwiseAbs().maxCoeff() / scale;
}

/// Checks grad against central differences of f at x (double), asserting the relative error bound.
template <class F>
void check_gradient(F&& f, const RowMatrixX<double>& x, const RowMatrixX<double>& grad, double h = 1e-6,
                    double tolerance = gradient_tolerance) {
  const RowMatrixX<double> numeric = numeric_gradient(f, x, h);
  const double err = gradient_rel_error(grad, numeric);
  INFO("gradient error " << err << " (|g| = " << grad.norm() << ", |numeric| = " << numeric.norm() << ")");
  CHECK(err < tolerance);
}

/// f(out) run at 1 and at 2 threads gives the same bits (value and output).
template <class F>
void check_threads_bitwise(F&& f, Index rows, Index cols) {
  RowMatrixX<double> g1(rows, cols), g2(rows, cols);
  double v1 = 0, v2 = 0;
  {
    ThreadCountGuard guard(1);
    v1 = f(g1);
  }
  {
    ThreadCountGuard guard(2);
    v2 = f(g2);
  }
  CHECK(std::memcmp(&v1, &v2, sizeof(double)) == 0);
  CHECK(std::memcmp(g1.data(), g2.data(), sizeof(double) * static_cast<std::size_t>(g1.size())) == 0);
}

/// `loss.evaluate(student, teacher, grad)` on a case's "student*" and "teacher*" inputs against its loss and student
/// gradient; returns the value.
template <class Loss>
double check_student_case(Loss& loss, const ReferenceCase& c) {
  const RowMatrixX<double> s = c.input(key_with(c.json.at("inputs"), "student"));
  const RowMatrixX<double> t = c.input(key_with(c.json.at("inputs"), "teacher"));
  RowMatrixX<double> grad(s.rows(), s.cols());
  const double value = loss.evaluate(s, t, grad);
  CHECK(scalar_rel(value, c.loss()) <= reference_tolerance);
  CHECK(matrix_rel(grad, c.grad(key_with(c.json.at("grad"), "student"))) <= reference_tolerance);
  return value;
}

/// For a loss with `evaluate(student, teacher, grad)`: float against double (value and student gradient within
/// relative `tol`) and 1 against 2 threads bitwise in double, on student s and teacher t.
template <class LossD, class LossF>
void check_float_and_threads(LossD& ld, LossF& lf, const RowMatrixX<double>& s, const RowMatrixX<double>& t,
                             double tol) {
  RowMatrixX<double> gd(s.rows(), s.cols());
  RowMatrixX<float> gf(s.rows(), s.cols());
  const double vd = ld.evaluate(s, t, gd);
  const float vf = lf.evaluate(s.cast<float>(), t.cast<float>(), gf);
  CHECK(std::abs(static_cast<double>(vf) - vd) / std::abs(vd) < tol);
  CHECK(gradient_rel_error(gf.cast<double>(), gd) < tol);
  check_threads_bitwise([&](RowMatrixX<double>& g) { return ld.evaluate(s, t, g); }, s.rows(), s.cols());
}

}  // namespace distill_checks
}  // namespace test
}  // namespace kshot

#endif  // KSHOT_TESTS_DISTILL_DISTILL_CHECKS_HPP
