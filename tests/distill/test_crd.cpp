// SPDX-License-Identifier: MIT
// CRDLoss and EmbeddingDistillLoss: the definitions computed directly, central-difference gradients (student and
// teacher sides), the memory update, seeded negatives, degenerate inputs, float against double, 1 vs 2 threads,
// errors; and torchdistill's CRDLoss itself on the cases of tests/data/reference/td_crd_*.json (and any CRD case of the
// shared reference set).
#include "distill/distill_checks.hpp"

#include <kshot/distill/crd.hpp>
#include <kshot/distill/embedding_distill.hpp>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

// One unity translation unit with the other distillation tests: helpers stay in this namespace.
namespace test_crd {

using namespace kshot;
using namespace kshot::test;
using namespace kshot::test::distill_checks;

namespace {

RowMatrixX<double> unit_rows(const RowMatrixX<double>& x) {
  RowMatrixX<double> out = x;
  for (Index i = 0; i < out.rows(); ++i) out.row(i).normalize();
  return out;
}

/// CRD as torchdistill's code reads (exp, division, log), for given memories, indices and Z.
double crd_by_hand(const RowMatrixX<double>& s, const RowMatrixX<double>& t, const RowMatrixX<double>& m1,
                   const RowMatrixX<double>& m2, const IndexRowMatrix& idx, double T, double zs, double zt, double eps,
                   double num_samples) {
  const Index b = s.rows(), kk = idx.cols();
  const long double mpn = (kk - 1) / (long double)num_samples;
  auto side = [&](const RowMatrixX<double>& x, const RowMatrixX<double>& mem, double z) {
    long double total = 0;
    for (Index i = 0; i < b; ++i)
      for (Index k = 0; k < kk; ++k) {
        const long double out = std::exp((long double)mem.row(idx(i, k)).dot(x.row(i)) / T) / z;
        total += k == 0 ? std::log(out / (out + mpn + eps)) : std::log(mpn / (out + mpn + eps));
      }
    return -total / b;
  };
  return static_cast<double>(side(s, m2, zs) + side(t, m1, zt));
}

}  // namespace

TEST_CASE("CRDLoss: torchdistill reference cases") {
  // tests/data/reference/td_crd_*.json (generate_torchdistill_crd.py), plus any CRD case of the shared set.
  const auto all = cases("CRDLoss");
  REQUIRE(all.size() >= 2);
  for (const auto& c : all) {
    INFO("case " << c.json.at("case").get<std::string>());
    const auto& in = c.json.at("inputs");
    const RowMatrixX<double> s = c.input(key_with(in, "student"));
    const RowMatrixX<double> t = c.input(key_with(in, "teacher"));
    const RowMatrixX<double> m1 = c.input("memory_v1"), m2 = c.input("memory_v2");
    const RowMatrixX<double> ci = c.input("contrast_idx");
    IndexRowMatrix idx = ci.cast<Index>();
    CRDLoss<double> loss;
    loss.memory_student = m1;
    loss.memory_teacher = m2;
    loss.temperature = param(c, "temperature", 0.07);
    loss.momentum = param(c, "momentum", 0.5);
    loss.eps = param(c, "eps", 1e-7);
    loss.num_samples = static_cast<Index>(param(c, "num_samples", double(m1.rows())));
    loss.z_student = param(c, "z_v1", -1.0);
    loss.z_teacher = param(c, "z_v2", -1.0);
    RowMatrixX<double> gs(s.rows(), s.cols()), gt(t.rows(), t.cols());
    const double value = loss.evaluate_with_indices(s, t, idx, gs, gt);
    CHECK(scalar_rel(value, c.loss()) <= reference_tolerance);
    const auto& g = c.json.at("grad");
    CHECK(matrix_rel(gs, c.grad(key_with(g, "student"))) <= reference_tolerance);
    if (!key_with(g, "teacher").empty()) CHECK(matrix_rel(gt, c.grad(key_with(g, "teacher"))) <= reference_tolerance);
    if (c.json.contains("outputs") && c.json.at("outputs").contains("memory_v1")) {
      CHECK(matrix_rel(loss.memory_student, c.output("memory_v1")) <= reference_tolerance);
      CHECK(matrix_rel(loss.memory_teacher, c.output("memory_v2")) <= reference_tolerance);
    }
    if (c.json.contains("outputs") && c.json.at("outputs").contains("z_v1")) {
      // torchdistill's z_v1 normalises memory_v2 . student (kshot's z_student), z_v2 the teacher's side.
      CHECK(scalar_rel(loss.z_student, c.json.at("outputs").at("z_v1").get<double>()) <= reference_tolerance);
      CHECK(scalar_rel(loss.z_teacher, c.json.at("outputs").at("z_v2").get<double>()) <= reference_tolerance);
    }
  }
}

TEST_CASE("CRDLoss: value against the definition, both gradients against central differences") {
  const Index b = 5, d = 6, m = 40, k = 7;
  const RowMatrixX<double> s = unit_rows(random_matrix<double>(b, d, 1)), t = unit_rows(random_matrix<double>(b, d, 2));
  IndexVector pos(b);
  pos << 3, 17, 3, 39, 0;
  for (const double T : {0.07, 0.5}) {
    INFO("T " << T);
    CRDLoss<double> loss(d, m, 11);
    loss.temperature = T;
    loss.num_negatives = k;
    loss.update_memory = false;
    RowMatrixX<double> gs(b, d), gt(b, d);
    const double v = loss.evaluate(s, t, pos, gs, gt);
    const IndexRowMatrix idx = loss.last_indices();
    REQUIRE(idx.rows() == b);
    REQUIRE(idx.cols() == k + 1);
    for (Index i = 0; i < b; ++i) CHECK(idx(i, 0) == pos[i]);
    CHECK(loss.z_student > 0);
    CHECK(loss.z_teacher > 0);
    CHECK(scalar_rel(v, crd_by_hand(s, t, loss.memory_student, loss.memory_teacher, idx, T, loss.z_student,
                                    loss.z_teacher, 1e-7, double(m))) < 1e-12);
    // Z was fixed by the first call: mean(exp(score / T)) * memory_size.
    long double mean = 0;
    for (Index i = 0; i < b; ++i)
      for (Index c = 0; c < k + 1; ++c) mean += std::exp(loss.memory_teacher.row(idx(i, c)).dot(s.row(i)) / T);
    CHECK(scalar_rel(loss.z_student, static_cast<double>(mean / (b * (k + 1)) * m)) < 1e-12);
    RowMatrixX<double> none(0, 0);
    check_gradient([&](const RowMatrixX<double>& x) { return loss.evaluate_with_indices(x, t, idx, none, none); }, s,
                   gs);
    check_gradient([&](const RowMatrixX<double>& x) { return loss.evaluate_with_indices(s, x, idx, none, none); }, t,
                   gt);
    // The value-only and student-only forms agree.
    loss.seed_negatives(0);
    RowMatrixX<double> gs2(b, d);
    CHECK(loss.evaluate_with_indices(s, t, idx, gs2, none) == v);
    CHECK(gs2 == gs);
  }
  // num_samples and eps enter the noise constant.
  CRDLoss<double> loss(d, m, 3);
  loss.num_negatives = k;
  loss.update_memory = false;
  loss.num_samples = 1000;
  loss.eps = 1e-3;
  RowMatrixX<double> gs(b, d);
  const double v = loss.evaluate(s, t, pos, gs);
  CHECK(scalar_rel(v, crd_by_hand(s, t, loss.memory_student, loss.memory_teacher, loss.last_indices(), 0.07,
                                  loss.z_student, loss.z_teacher, 1e-3, 1000.0)) < 1e-12);
}

TEST_CASE("CRDLoss: memory update, seeded negatives, large scores") {
  const Index b = 4, d = 3, m = 10;
  const RowMatrixX<double> s = unit_rows(random_matrix<double>(b, d, 21)),
                           t = unit_rows(random_matrix<double>(b, d, 22));
  IndexVector pos(b);
  pos << 2, 5, 2, 9;  // a repeated index keeps its last row
  CRDLoss<double> a(d, m, 5), c(d, m, 5);
  a.num_negatives = c.num_negatives = 6;
  const RowMatrixX<double> m1 = a.memory_student, m2 = a.memory_teacher;
  a.evaluate(s, t, pos);
  c.evaluate(s, t, pos);
  CHECK(a.last_indices() == c.last_indices());
  CHECK(a.memory_student == c.memory_student);
  for (const Index i : {Index(1), Index(2), Index(3)}) {
    const RowVectorX<double> u1 = (0.5 * m1.row(pos[i]) + 0.5 * s.row(i)).normalized();
    const RowVectorX<double> u2 = (0.5 * m2.row(pos[i]) + 0.5 * t.row(i)).normalized();
    CHECK(max_rel_error(a.memory_student.row(pos[i]), u1) < 1e-15);
    CHECK(max_rel_error(a.memory_teacher.row(pos[i]), u2) < 1e-15);
  }
  CHECK(a.memory_student.row(0) == m1.row(0));
  // The next draw differs from the first (the stream moves on).
  const IndexRowMatrix first = a.last_indices();
  a.evaluate(s, t, pos);
  CHECK(!(a.last_indices() == first));
  // Unnormalised inputs with scores far beyond exp's range: finite (all in log space).
  CRDLoss<double> big(d, m, 6);
  big.num_negatives = 4;
  big.temperature = 1e-3;
  RowMatrixX<double> gs(b, d), gt(b, d);
  const RowMatrixX<double> huge = random_matrix<double>(b, d, 23) * 1e3;
  big.z_student = big.z_teacher = 1.0;
  CHECK(std::isfinite(big.evaluate(huge, -huge, pos, gs, gt)));
  CHECK(detail::all_finite(gs));
  CHECK(detail::all_finite(gt));
  // Zero embeddings: finite.
  CRDLoss<double> zero(d, m, 7);
  zero.num_negatives = 3;
  const RowMatrixX<double> z = RowMatrixX<double>::Zero(b, d);
  CHECK(std::isfinite(zero.evaluate(z, z, pos, gs, gt)));
  CHECK(detail::all_finite(gs));
}

TEST_CASE("CRDLoss: float vs double, 1 vs 2 threads, errors") {
  const Index b = 64, d = 128, m = 5000, k = 4096;
  const RowMatrixX<double> s = unit_rows(random_matrix<double>(b, d, 31)),
                           t = unit_rows(random_matrix<double>(b, d, 32));
  IndexVector pos(b);
  for (Index i = 0; i < b; ++i) pos[i] = (i * 37) % m;
  CRDLoss<double> ld(d, m, 9);
  ld.num_negatives = k;
  ld.update_memory = false;
  CRDLoss<float> lf(d, m, 9);
  lf.num_negatives = k;
  lf.update_memory = false;
  lf.memory_student = ld.memory_student.cast<float>();
  lf.memory_teacher = ld.memory_teacher.cast<float>();
  RowMatrixX<double> gd(b, d);
  RowMatrixX<float> gf(b, d);
  const double vd = ld.evaluate(s, t, pos, gd);
  const float vf = lf.evaluate(s.cast<float>(), t.cast<float>(), pos, gf);
  CHECK(lf.last_indices() == ld.last_indices());
  CHECK(std::abs(vf - vd) / vd < 1e-4);
  CHECK(gradient_rel_error(gf.cast<double>(), gd) < 1e-4);
  const IndexRowMatrix idx = ld.last_indices();
  RowMatrixX<double> none(0, 0);
  check_threads_bitwise([&](RowMatrixX<double>& g) { return ld.evaluate_with_indices(s, t, idx, g, none); }, b, d);

  CRDLoss<double> empty;
  KSHOT_CHECK_THROWS_WITH_ALL(empty.evaluate(s, t, pos), std::invalid_argument, "kshot::CRDLoss::evaluate()",
                              "the memory is empty");
  CRDLoss<double> loss(d, 100, 1);
  loss.num_negatives = 8;
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(s, t, pos), std::out_of_range, "pos[", "outside the memory of 100 rows");
  IndexVector short_pos = IndexVector::Zero(3);
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(s, t, short_pos), std::invalid_argument,
                              "pos has 3 entries but student has 64 rows");
  const IndexVector ok = IndexVector::Zero(b);
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(s, RowMatrixX<double>(t.leftCols(5)), ok), std::invalid_argument,
                              "teacher has 5 columns but student has 128");
  loss.momentum = 2;
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(s, t, ok), std::invalid_argument, "momentum is 2");
  loss.momentum = 0.5;
  IndexRowMatrix bad = IndexRowMatrix::Zero(b, 3);
  bad(4, 2) = 100;
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate_with_indices(s, t, bad, none, none), std::out_of_range,
                              "memory index (4, 2) = 100");
  KSHOT_CHECK_THROWS_WITH_ALL(CRDLoss<double>(0, 10), std::invalid_argument, "dim is 0");
}

// ------------------------------------------------------------------------------------------ embedding distillation

namespace {

double listwise_by_hand(const RowMatrixX<double>& s, const RowMatrixX<double>& t, double ts, double tt, bool norm,
                        double w) {
  const RowMatrixX<double> xs = norm ? unit_rows(s) : s, xt = norm ? unit_rows(t) : t;
  const Index n = s.rows();
  long double total = 0;
  for (Index i = 0; i < n; ++i) {
    long double zs = 0, zt = 0;
    for (Index j = 0; j < n; ++j)
      if (j != i) {
        zs += std::exp((long double)xs.row(i).dot(xs.row(j)) / ts);
        zt += std::exp((long double)xt.row(i).dot(xt.row(j)) / tt);
      }
    for (Index j = 0; j < n; ++j)
      if (j != i) {
        const long double p = std::exp((long double)xt.row(i).dot(xt.row(j)) / tt) / zt;
        const long double q = std::exp((long double)xs.row(i).dot(xs.row(j)) / ts) / zs;
        total += p * std::log(p / q);
      }
  }
  return static_cast<double>(w * total / n);
}

}  // namespace

TEST_CASE("EmbeddingDistillLoss: definition, central differences, degenerate inputs") {
  const RowMatrixX<double> s = random_matrix<double>(6, 4, 41), t = random_matrix<double>(6, 9, 42);
  for (const bool norm : {true, false}) {
    for (const double ts : {0.1, 1.0}) {
      INFO("normalize " << norm << " tau_s " << ts);
      EmbeddingDistillLoss<double> loss;
      loss.normalize = norm;
      loss.student_temperature = ts;
      loss.teacher_temperature = 0.5;
      loss.weight = 2;
      RowMatrixX<double> g(6, 4);
      CHECK(scalar_rel(loss.evaluate(s, t, g), listwise_by_hand(s, t, ts, 0.5, norm, 2)) < 1e-12);
      check_gradient([&](const RowMatrixX<double>& x) { return loss.evaluate(x, t); }, s, g);
      RowMatrixX<double> d = s;
      d.row(2) = d.row(0);
      loss.evaluate(d, t, g);
      check_gradient([&](const RowMatrixX<double>& x) { return loss.evaluate(x, t); }, d, g);
      d.row(3).setZero();
      CHECK(std::isfinite(loss.evaluate(d, t, g)));
      CHECK(detail::all_finite(g));
    }
  }
  EmbeddingDistillLoss<double> loss;
  // The student equal to the teacher (same width): 0.
  RowMatrixX<double> g(6, 9);
  CHECK(std::abs(loss.evaluate(t, t, g)) < 1e-14);
  CHECK(g.cwiseAbs().maxCoeff() < 1e-12);
  // A tiny temperature: finite.
  loss.student_temperature = loss.teacher_temperature = 1e-4;
  CHECK(std::isfinite(loss.evaluate(t, RowMatrixX<double>(-t), g)));
  CHECK(detail::all_finite(g));
  // One row: 0.
  RowMatrixX<double> g1(1, 4);
  CHECK(loss.evaluate(RowMatrixX<double>(s.topRows(1)), RowMatrixX<double>(t.topRows(1)), g1) == 0.0);
  CHECK(g1.isZero(0));
}

TEST_CASE("EmbeddingDistillLoss: float vs double, 1 vs 2 threads, errors") {
  const Index n = 256;
  const RowMatrixX<double> s = random_matrix<double>(n, 64, 51), t = random_matrix<double>(n, 128, 52);
  EmbeddingDistillLoss<double> ld;
  EmbeddingDistillLoss<float> lf;
  check_float_and_threads(ld, lf, s, t, 1e-4);
  ld.student_temperature = 0;
  KSHOT_CHECK_THROWS_WITH_ALL(ld.evaluate(s, t), std::invalid_argument, "kshot::EmbeddingDistillLoss::evaluate()",
                              "student_temperature is 0");
  ld.student_temperature = 0.1;
  KSHOT_CHECK_THROWS_WITH_ALL(ld.evaluate(s, RowMatrixX<double>(t.topRows(10))), std::invalid_argument,
                              "teacher has 10 rows but student has 256 rows");
}

}  // namespace test_crd
