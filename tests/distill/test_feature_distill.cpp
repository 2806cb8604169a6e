// SPDX-License-Identifier: MIT
// FitNetLoss, AttentionTransferLoss, SPLoss and PKTLoss: the torchdistill (and mdistiller) reference cases, the
// definitions computed directly, central-difference gradients at random and degenerate points, float against
// double, 1 vs 2 threads, errors.
#include "distill/distill_checks.hpp"

#include <kshot/distill/attention_transfer.hpp>
#include <kshot/distill/fitnet.hpp>
#include <kshot/distill/pkt.hpp>
#include <kshot/distill/sp.hpp>

#if KSHOT_HAS_EIGEN_TENSOR
#include <unsupported/Eigen/CXX11/Tensor>  // kshot declares Eigen::Tensor only
#endif

#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

// One unity translation unit with the other distillation tests: helpers stay in this namespace.
namespace test_feature_distill {

using namespace kshot;
using namespace kshot::test;
using namespace kshot::test::distill_checks;

namespace {

DistillReduction reduction_of(const std::string& r) {
  return r == "sum" ? DistillReduction::sum : r == "batchmean" ? DistillReduction::batchmean : DistillReduction::mean;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------- FitNet

TEST_CASE("FitNetLoss: torchdistill reference cases") {
  const auto all = cases("MSELoss");
  REQUIRE(!all.empty());
  for (const auto& c : all) {
    INFO("case " << c.json.at("case").get<std::string>());
    FitNetLoss<double> loss;
    loss.reduction = reduction_of(param_string(c, "reduction", "mean"));
    const auto& in = c.json.at("inputs");
    const std::string sk = key_with(in, "student"), tk = key_with(in, "teacher");
    const RowMatrixX<double> s = c.input(sk), t = c.input(tk);
    const std::vector<Index> shape = shape_of(c, sk);
    const std::string wk = in.contains("regressor_weight") ? "regressor_weight" : in.contains("weight") ? "weight" : "";
    RowMatrixX<double> grad(s.rows(), s.cols());
    if (!wk.empty()) {
      // A 1x1 convolution (or linear) regressor: weight [C_t, C_s(, 1, 1)], bias [C_t].
      const std::vector<Index> ws = shape_of(c, wk);
      loss.use_regressor = true;
      loss.spatial = shape.size() == 4 ? shape[2] * shape[3] : 1;
      loss.weight = RowMatrixX<double>(Eigen::Map<const RowMatrixX<double>>(c.input(wk).data(), ws[0], ws[1]));
      const std::string bk = in.contains("regressor_bias") ? "regressor_bias" : in.contains("bias") ? "bias" : "";
      loss.use_bias = !bk.empty();
      if (loss.use_bias) loss.bias = c.input(bk).reshaped();
      RowMatrixX<double> gw(ws[0], ws[1]);
      VectorX<double> gb(ws[0]);
      const double value = loss.evaluate(s, t, grad, gw, gb);
      CHECK(scalar_rel(value, c.loss()) <= reference_tolerance);
      if (c.json.at("grad").contains(wk))
        CHECK(matrix_rel(gw, Eigen::Map<const RowMatrixX<double>>(c.grad(wk).data(), ws[0], ws[1])) <=
              reference_tolerance);
      if (loss.use_bias && c.json.at("grad").contains("bias"))
        CHECK(matrix_rel(gb, VectorX<double>(c.grad("bias").reshaped())) <= reference_tolerance);
    } else {
      const double value = loss.evaluate(s, t, grad);
      CHECK(scalar_rel(value, c.loss()) <= reference_tolerance);
      CHECK(loss.evaluate(s, t) == value);
    }
    CHECK(matrix_rel(grad, c.grad(key_with(c.json.at("grad"), "student"))) <= reference_tolerance);
  }
}

TEST_CASE("FitNetLoss: value and gradients (student, weight, bias) against the definition and central differences") {
  const Index n = 3, cs = 4, ct = 5, hw = 6;
  const RowMatrixX<double> s = random_matrix<double>(n, cs * hw, 1), t = random_matrix<double>(n, ct * hw, 2);
  for (const auto red : {DistillReduction::mean, DistillReduction::batchmean, DistillReduction::sum}) {
    for (const bool bias : {true, false}) {
      INFO("reduction " << reduction_name(red) << " bias " << bias);
      FitNetLoss<double> loss;
      loss.reduction = red;
      loss.spatial = hw;
      loss.init_regressor(cs, ct, 7);
      loss.use_bias = bias;
      RowMatrixX<double> g(n, cs * hw), gw(ct, cs);
      VectorX<double> gb(ct);
      const double v = loss.evaluate(s, t, g, gw, gb);
      // By hand: the 1x1 convolution position by position.
      long double total = 0;
      for (Index i = 0; i < n; ++i)
        for (Index o = 0; o < ct; ++o)
          for (Index p = 0; p < hw; ++p) {
            long double r = bias ? loss.bias[o] : 0.0;
            for (Index k = 0; k < cs; ++k) r += loss.weight(o, k) * s(i, k * hw + p);
            const long double diff = r - t(i, o * hw + p);
            total += diff * diff;
          }
      const double denom = red == DistillReduction::mean        ? double(n * ct * hw)
                           : red == DistillReduction::batchmean ? double(n)
                                                                : 1.0;
      CHECK(scalar_rel(v, static_cast<double>(total / denom)) < 1e-13);
      check_gradient([&](const RowMatrixX<double>& x) { return loss.evaluate(x, t); }, s, g);
      const RowMatrixX<double> w0 = loss.weight;
      check_gradient(
          [&](const RowMatrixX<double>& w) {
            loss.weight = w;
            const double out = loss.evaluate(s, t);
            loss.weight = w0;
            return out;
          },
          w0, gw);
      if (bias) {
        const VectorX<double> b0 = loss.bias;
        check_gradient(
            [&](const RowMatrixX<double>& b) {
              loss.bias = b.transpose();
              const double out = loss.evaluate(s, t);
              loss.bias = b0;
              return out;
            },
            RowMatrixX<double>(b0.transpose()), RowMatrixX<double>(gb.transpose()));
      } else {
        CHECK(gb.isZero(0));
      }
    }
  }
  // Without a regressor: plain MSE.
  FitNetLoss<double> plain;
  const RowMatrixX<double> a = random_matrix<double>(4, 7, 3), b = random_matrix<double>(4, 7, 4);
  RowMatrixX<double> g(4, 7);
  CHECK(scalar_rel(plain.evaluate(a, b, g), (a - b).squaredNorm() / 28.0) < 1e-14);
  check_gradient([&](const RowMatrixX<double>& x) { return plain.evaluate(x, b); }, a, g);
}

TEST_CASE("FitNetLoss: float agrees with double; 1 vs 2 threads bitwise; errors") {
  const Index n = 64, cs = 32, ct = 48, hw = 16;
  const RowMatrixX<double> s = random_matrix<double>(n, cs * hw, 5), t = random_matrix<double>(n, ct * hw, 6);
  FitNetLoss<double> ld;
  ld.spatial = hw;
  ld.init_regressor(cs, ct, 9);
  FitNetLoss<float> lf;
  lf.spatial = hw;
  lf.init_regressor(cs, ct, 9);
  lf.weight = ld.weight.cast<float>();
  lf.bias = ld.bias.cast<float>();
  RowMatrixX<double> gd(n, cs * hw), gwd(ct, cs);
  VectorX<double> gbd(ct);
  RowMatrixX<float> gf(n, cs * hw), gwf(ct, cs);
  VectorX<float> gbf(ct);
  const double vd = ld.evaluate(s, t, gd, gwd, gbd);
  const float vf = lf.evaluate(s.cast<float>(), t.cast<float>(), gf, gwf, gbf);
  CHECK(std::abs(vf - vd) / vd < 1e-5);
  CHECK(max_rel_error(gf.cast<double>(), gd) < 1e-5);
  CHECK(max_rel_error(gwf.cast<double>(), gwd) < 1e-5);
  check_threads_bitwise([&](RowMatrixX<double>& g) { return ld.evaluate(s, t, g); }, n, cs * hw);
  check_threads_bitwise(
      [&](RowMatrixX<double>& gw) {
        RowMatrixX<double> g(n, cs * hw);
        VectorX<double> gb(ct);
        return ld.evaluate(s, t, g, gw, gb);
      },
      ct, cs);
  FitNetLoss<double> loss;
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(s, t), std::invalid_argument, "kshot::FitNetLoss::evaluate()",
                              "teacher has 768 columns but student has 512");
  loss.use_regressor = true;
  loss.spatial = 5;
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(s, t), std::invalid_argument, "not a multiple of spatial = 5");
  loss.spatial = hw;
  loss.weight.resize(3, 3);
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(s, t), std::invalid_argument, "weight is 3 x 3 but must be 48 x 32");
  FitNetLoss<double> off;
  RowMatrixX<double> g(n, cs * hw), gw(1, 1);
  VectorX<double> gb(1);
  KSHOT_CHECK_THROWS_WITH_ALL(off.evaluate(s, s, g, gw, gb), std::invalid_argument, "use_regressor is false");
}

// ------------------------------------------------------------------------------------------ attention transfer

namespace {

/// Attention transfer from its definition (long double).
double at_by_hand(const RowMatrixX<double>& s, const RowMatrixX<double>& t, Index hw, bool code, double w) {
  const Index n = s.rows(), cs = s.cols() / hw, ct = t.cols() / hw;
  auto att = [&](const RowMatrixX<double>& f, Index i, Index c) {
    std::vector<long double> a(static_cast<std::size_t>(hw), 0.0L);
    for (Index k = 0; k < c; ++k)
      for (Index p = 0; p < hw; ++p) a[static_cast<std::size_t>(p)] += (long double)f(i, k * hw + p) * f(i, k * hw + p);
    long double nrm = 0;
    for (auto& v : a) {
      if (code) v /= c;
      nrm += v * v;
    }
    nrm = std::max(std::sqrt(nrm), 1e-12L);
    for (auto& v : a) v /= nrm;
    return a;
  };
  long double total = 0;
  for (Index i = 0; i < n; ++i) {
    const auto as = att(s, i, cs), a_t = att(t, i, ct);
    long double sq = 0;
    for (std::size_t p = 0; p < as.size(); ++p) sq += (as[p] - a_t[p]) * (as[p] - a_t[p]);
    total += code ? sq : std::sqrt(sq);
  }
  return static_cast<double>(w * (code ? total / (n * hw) : total / n));
}

}  // namespace

TEST_CASE("AttentionTransferLoss: torchdistill reference cases") {
  const auto all = cases("ATLoss");
  REQUIRE(!all.empty());
  for (const auto& c : all) {
    INFO("case " << c.json.at("case").get<std::string>());
    AttentionTransferLoss<double> loss;
    loss.mode = param_string(c, "mode", "code") == "paper" ? AttentionMode::paper : AttentionMode::code;
    loss.weight = param(c, "weight", 1.0);
    const std::string sk = key_with(c.json.at("inputs"), "student"), tk = key_with(c.json.at("inputs"), "teacher");
    const std::vector<Index> shape = shape_of(c, sk);
    REQUIRE(shape.size() == 4);
    loss.height = shape[2];
    loss.width = shape[3];
    const RowMatrixX<double> s = c.input(sk), t = c.input(tk);
    RowMatrixX<double> grad(s.rows(), s.cols());
    const double value = loss.evaluate(s, t, grad);
    CHECK(scalar_rel(value, c.loss()) <= reference_tolerance);
    CHECK(matrix_rel(grad, c.grad(key_with(c.json.at("grad"), "student"))) <= reference_tolerance);
  }
}

TEST_CASE("AttentionTransferLoss: both modes against the definition and central differences") {
  const Index n = 3, cs = 2, ct = 4, h = 3, w = 2, hw = h * w;
  const RowMatrixX<double> s = random_matrix<double>(n, cs * hw, 11), t = random_matrix<double>(n, ct * hw, 12);
  for (const auto mode : {AttentionMode::code, AttentionMode::paper}) {
    const bool code = mode == AttentionMode::code;
    INFO("mode " << (code ? "code" : "paper"));
    AttentionTransferLoss<double> loss;
    loss.mode = mode;
    loss.weight = 1.5;
    loss.height = h;
    loss.width = w;
    RowMatrixX<double> g(n, cs * hw);
    CHECK(scalar_rel(loss.evaluate(s, t, g), at_by_hand(s, t, hw, code, 1.5)) < 1e-13);
    check_gradient([&](const RowMatrixX<double>& x) { return loss.evaluate(x, t); }, s, g);
    // A zero student map: attention 0 (the floor), finite gradient (zero, since F = 0).
    RowMatrixX<double> z = s;
    z.row(1).setZero();
    CHECK(std::isfinite(loss.evaluate(z, t, g)));
    CHECK(detail::all_finite(g));
    CHECK(g.row(1).isZero(0));
    // The same maps: paper mode's norm is 0, with a zero (sub)gradient.
    RowMatrixX<double> ss = s;
    CHECK(std::abs(loss.evaluate(ss, ss, g)) < 1e-15);
    CHECK(g.cwiseAbs().maxCoeff() < 1e-12);
  }
}

#if KSHOT_HAS_EIGEN_TENSOR
TEST_CASE("AttentionTransferLoss: Eigen::Tensor overloads map the data and match the row form") {
  using Tensor4 = AttentionTransferLoss<double>::Tensor4;
  Tensor4 s(2, 3, 4, 5), t(2, 6, 4, 5), g(2, 3, 4, 5);
  const RowMatrixX<double> rs = random_matrix<double>(2, 60, 21), rt = random_matrix<double>(2, 120, 22);
  std::copy(rs.data(), rs.data() + rs.size(), s.data());
  std::copy(rt.data(), rt.data() + rt.size(), t.data());
  AttentionTransferLoss<double> a, b;
  b.height = 4;
  b.width = 5;
  RowMatrixX<double> gr(2, 60);
  const double v = a.evaluate(s, t, g);
  CHECK(v == b.evaluate(rs, rt, gr));
  CHECK(std::equal(gr.data(), gr.data() + gr.size(), g.data()));
  CHECK(a.evaluate(s, t) == v);
  Tensor4 bad(2, 3, 5, 4);
  KSHOT_CHECK_THROWS_WITH_ALL(a.evaluate(s, bad), std::invalid_argument, "student maps are 4 x 5",
                              "teacher maps are 5 x 4");
  Tensor4 badg(1, 3, 4, 5);
  KSHOT_CHECK_THROWS_WITH_ALL(a.evaluate(s, t, badg), std::invalid_argument, "grad is 1 x 3 x 4 x 5");
}
#endif

TEST_CASE("AttentionTransferLoss: float vs double, 1 vs 2 threads, errors") {
  const Index n = 64, cs = 16, ct = 32, h = 8, w = 8;
  const RowMatrixX<double> s = random_matrix<double>(n, cs * h * w, 31), t = random_matrix<double>(n, ct * h * w, 32);
  AttentionTransferLoss<double> ld;
  AttentionTransferLoss<float> lf;
  ld.height = lf.height = h;
  ld.width = lf.width = w;
  for (const auto mode : {AttentionMode::code, AttentionMode::paper}) {
    ld.mode = mode;
    lf.mode = mode;
    check_float_and_threads(ld, lf, s, t, 1e-5);
  }
  AttentionTransferLoss<double> loss;
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(s, t), std::invalid_argument, "kshot::AttentionTransferLoss::evaluate()",
                              "height and width are 0 and 0");
  loss.height = 7;
  loss.width = 7;
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(s, t), std::invalid_argument, "student has 1024 columns",
                              "not a multiple of H * W = 49");
  loss.height = 8;
  loss.width = 8;
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(s, RowMatrixX<double>(t.topRows(3))), std::invalid_argument,
                              "teacher has 3 rows but student has 64 rows");
}

// ------------------------------------------------------------------------------------------------------- SP

namespace {

double sp_by_hand(const RowMatrixX<double>& s, const RowMatrixX<double>& t, bool l1, bool batchmean) {
  auto gram = [&](const RowMatrixX<double>& z) {
    RowMatrixX<double> g = z * z.transpose();
    for (Index i = 0; i < g.rows(); ++i) g.row(i) /= std::max(l1 ? g.row(i).lpNorm<1>() : g.row(i).norm(), 1e-12);
    return g;
  };
  const double v = (gram(t) - gram(s)).squaredNorm();
  return batchmean ? v / double(s.rows() * s.rows()) : v;
}

}  // namespace

TEST_CASE("SPLoss: torchdistill (L1) and mdistiller (L2) reference cases") {
  std::vector<ReferenceCase> all = cases("SPKDLoss");
  for (auto& c : cases("mdistiller")) {
    const std::string name = c.json.at("case").get<std::string>();
    if (name.find("_sp") != std::string::npos) all.push_back(std::move(c));
  }
  REQUIRE(!all.empty());
  for (const auto& c : all) {
    const std::string name = c.json.at("case").get<std::string>();
    INFO("case " << name);
    SPLoss<double> loss;
    const bool mdistiller = c.json.value("peer", std::string()).find("mdistiller") != std::string::npos;
    const std::string norm = param_string(c, "norm", mdistiller ? "l2" : "l1");
    loss.norm = norm == "l2" || norm == "2" ? SPNorm::l2 : SPNorm::l1;
    loss.reduction =
        param_string(c, "reduction", "batchmean") == "batchmean" ? DistillReduction::batchmean : DistillReduction::sum;
    check_student_case(loss, c);
  }
}

TEST_CASE("SPLoss: both norms against the definition and central differences, degenerate rows") {
  const RowMatrixX<double> s = random_matrix<double>(5, 4, 41), t = random_matrix<double>(5, 7, 42);
  for (const auto norm : {SPNorm::l1, SPNorm::l2}) {
    for (const auto red : {DistillReduction::batchmean, DistillReduction::sum}) {
      const bool l1 = norm == SPNorm::l1;
      INFO("norm " << (l1 ? "l1" : "l2") << " reduction " << reduction_name(red));
      SPLoss<double> loss;
      loss.norm = norm;
      loss.reduction = red;
      RowMatrixX<double> g(5, 4);
      CHECK(scalar_rel(loss.evaluate(s, t, g), sp_by_hand(s, t, l1, red == DistillReduction::batchmean)) < 1e-12);
      check_gradient([&](const RowMatrixX<double>& x) { return loss.evaluate(x, t); }, s, g);
      // Identical samples and a zero row: finite, and the gradient still matches away from the floor.
      RowMatrixX<double> d = s;
      d.row(2) = d.row(0);
      loss.evaluate(d, t, g);
      check_gradient([&](const RowMatrixX<double>& x) { return loss.evaluate(x, t); }, d, g);
      d.row(3).setZero();
      CHECK(std::isfinite(loss.evaluate(d, t, g)));
      CHECK(detail::all_finite(g));
    }
  }
  SPLoss<double> loss;
  loss.reduction = DistillReduction::mean;
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(s, t), std::invalid_argument, "kshot::SPLoss::evaluate()", "'mean'");
  loss.reduction = DistillReduction::batchmean;
  KSHOT_CHECK_THROWS_WITH_ALL(loss.evaluate(s, RowMatrixX<double>(t.topRows(4))), std::invalid_argument,
                              "teacher has 4 rows but student has 5 rows");
}

TEST_CASE("SPLoss: float vs double and 1 vs 2 threads") {
  const Index n = 256;
  const RowMatrixX<double> s = random_matrix<double>(n, 64, 51), t = random_matrix<double>(n, 96, 52);
  for (const auto norm : {SPNorm::l1, SPNorm::l2}) {
    SPLoss<double> ld;
    SPLoss<float> lf;
    ld.norm = lf.norm = norm;
    check_float_and_threads(ld, lf, s, t, 1e-4);
  }
}

// ------------------------------------------------------------------------------------------------------ PKT

namespace {

double pkt_by_hand(const RowMatrixX<double>& s, const RowMatrixX<double>& t, double eps) {
  auto dist = [&](const RowMatrixX<double>& x) {
    RowMatrixX<double> xn = x;
    for (Index i = 0; i < x.rows(); ++i) xn.row(i) /= (x.row(i).norm() + eps);
    RowMatrixX<double> k = ((xn * xn.transpose()).array() + 1.0) / 2.0;
    for (Index i = 0; i < k.rows(); ++i) k.row(i) /= k.row(i).sum();
    return k;
  };
  const RowMatrixX<double> ps = dist(s), pt = dist(t);
  long double total = 0;
  for (Index i = 0; i < ps.rows(); ++i)
    for (Index j = 0; j < ps.cols(); ++j) total += pt(i, j) * std::log((pt(i, j) + eps) / (ps(i, j) + eps));
  return static_cast<double>(total / (ps.rows() * ps.cols()));
}

}  // namespace

TEST_CASE("PKTLoss: torchdistill reference cases") {
  const auto all = cases("PKTLoss");
  REQUIRE(!all.empty());
  for (const auto& c : all) {
    INFO("case " << c.json.at("case").get<std::string>());
    PKTLoss<double> loss;
    loss.eps = param(c, "eps", 1e-7);
    check_student_case(loss, c);
  }
}

TEST_CASE("PKTLoss: definition, central differences, degenerate rows, float, threads, errors") {
  const RowMatrixX<double> s = random_matrix<double>(6, 5, 61), t = random_matrix<double>(6, 8, 62);
  for (const double eps : {1e-7, 1e-3}) {
    PKTLoss<double> loss;
    loss.eps = eps;
    RowMatrixX<double> g(6, 5);
    CHECK(scalar_rel(loss.evaluate(s, t, g), pkt_by_hand(s, t, eps)) < 1e-12);
    check_gradient([&](const RowMatrixX<double>& x) { return loss.evaluate(x, t); }, s, g);
    RowMatrixX<double> d = s;
    d.row(1) = d.row(4);
    loss.evaluate(d, t, g);
    check_gradient([&](const RowMatrixX<double>& x) { return loss.evaluate(x, t); }, d, g);
    d.row(2).setZero();
    CHECK(std::isfinite(loss.evaluate(d, t, g)));
    CHECK(detail::all_finite(g));
    RowMatrixX<double> tz = t;
    tz.row(0).setZero();
    CHECK(std::isfinite(loss.evaluate(s, tz, g)));
  }
  const Index n = 256;
  const RowMatrixX<double> bs = random_matrix<double>(n, 64, 63), bt = random_matrix<double>(n, 32, 64);
  PKTLoss<double> ld;
  PKTLoss<float> lf;
  check_float_and_threads(ld, lf, bs, bt, 1e-3);
  ld.eps = 0;
  KSHOT_CHECK_THROWS_WITH_ALL(ld.evaluate(s, t), std::invalid_argument, "kshot::PKTLoss::evaluate()", "eps is 0");
  ld.eps = 1e-7;
  RowMatrixX<double> bad(5, 5);
  KSHOT_CHECK_THROWS_WITH_ALL(ld.evaluate(s, t, bad), std::invalid_argument, "grad is 5 x 5 but must be 6 x 5");
  RowMatrixX<double> inf = t;
  inf(3, 3) = std::numeric_limits<double>::infinity();
  KSHOT_CHECK_THROWS_WITH_ALL(ld.evaluate(s, inf), std::invalid_argument, "teacher has a non-finite value");
}

}  // namespace test_feature_distill
