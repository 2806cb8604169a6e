// SPDX-License-Identifier: MIT
// LayerNorm, L2Normalize and Dropout: exact derivatives (backward and R-operator against central differences,
// also at near-degenerate points), values against hand-computed and torch-formula cases, Dropout's mask
// statistics and reproducibility, bitwise-identical results at 1 and 2 threads, and bad input.
#include "nn/layer_checks.hpp"
#include "test_util.hpp"

#include <kshot/core/random.hpp>
#include <kshot/core/threads.hpp>
#include <kshot/core/types.hpp>
#include <kshot/nn/dropout.hpp>
#include <kshot/nn/l2_normalize.hpp>
#include <kshot/nn/layer_norm.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>
#include <vector>

using namespace kshot;
using namespace kshot::test;

namespace {

/// A Dropout whose every forward() uses mask number `step`, so that every probe of a finite-difference
/// check sees the same mask.
class FixedStepDropout final : public Layer<double> {
 public:
  FixedStepDropout(Index dim, double p, std::uint64_t seed, std::uint64_t step) : inner_(dim, p, seed), step_(step) {}
  std::string type_name() const override { return inner_.type_name(); }
  Index input_dim() const noexcept override { return inner_.input_dim(); }
  Index output_dim() const noexcept override { return inner_.output_dim(); }
  void forward(ConstRowMatrixRef<double> x, RowMatrixRef<double> y, bool training) override {
    inner_.set_step(step_);
    inner_.forward(x, y, training);
  }
  void backward(ConstRowMatrixRef<double> dy, RowMatrixRef<double> dx, bool input_grad) override {
    inner_.backward(dy, dx, input_grad);
  }
  void forward_r(ConstRowMatrixRef<double> rx, const double* v, RowMatrixRef<double> ry) override {
    inner_.forward_r(rx, v, ry);
  }
  void backward_r(ConstRowMatrixRef<double> dy, ConstRowMatrixRef<double> rdy, const double* v, double* rgrad,
                  RowMatrixRef<double> rdx, bool input_grad) override {
    inner_.backward_r(dy, rdy, v, rgrad, rdx, input_grad);
  }
  std::vector<double> config() const override { return inner_.config(); }
  std::unique_ptr<Layer<double>> clone() const override {
    return std::make_unique<FixedStepDropout>(inner_.dim(), inner_.p(), inner_.seed(), step_);
  }

 private:
  Dropout<double> inner_;
  std::uint64_t step_;
};

/// Everything one forward / backward / forward_r / backward_r pass of a layer writes.
template <class Scalar>
struct PassOutputs {
  RowMatrixX<Scalar> y, dx, ry, rdx;
  VectorX<Scalar> grad, rgrad;
};

/// One full pass of `layer` (bound here to `params` and a zeroed gradient vector) at random data.
template <class Scalar>
PassOutputs<Scalar> full_pass(Layer<Scalar>& layer, VectorX<Scalar>& params, Index n, bool training,
                              std::uint64_t seed) {
  const Index d = layer.input_dim();
  const RowMatrixX<Scalar> x = random_matrix<Scalar>(n, d, seed);
  const RowMatrixX<Scalar> dy = random_matrix<Scalar>(n, d, seed + 1);
  const RowMatrixX<Scalar> rx = random_matrix<Scalar>(n, d, seed + 2);
  const RowMatrixX<Scalar> rdy = random_matrix<Scalar>(n, d, seed + 3);
  const VectorX<Scalar> v = random_matrix<Scalar>(layer.num_parameters(), 1, seed + 4);
  PassOutputs<Scalar> out;
  out.grad = VectorX<Scalar>::Zero(layer.num_parameters());
  out.rgrad = VectorX<Scalar>::Zero(layer.num_parameters());
  layer.bind(params.data(), out.grad.data());
  out.y.resize(n, d);
  out.dx.resize(n, d);
  out.ry.resize(n, d);
  out.rdx.resize(n, d);
  layer.forward(x, out.y, training);
  layer.backward(dy, out.dx, true);
  layer.forward_r(rx, v.data(), out.ry);
  layer.backward_r(dy, rdy, v.data(), out.rgrad.data(), out.rdx, true);
  return out;
}

template <class Derived>
bool same_bits(const Eigen::DenseBase<Derived>& a, const Eigen::DenseBase<Derived>& b) {
  using Scalar = typename Derived::Scalar;
  if (a.rows() != b.rows() || a.cols() != b.cols()) return false;
  return a.size() == 0 ||
         std::memcmp(a.derived().data(), b.derived().data(), sizeof(Scalar) * static_cast<std::size_t>(a.size())) == 0;
}

template <class Scalar>
void check_same_bits(const PassOutputs<Scalar>& a, const PassOutputs<Scalar>& b) {
  CHECK(same_bits(a.y, b.y));
  CHECK(same_bits(a.dx, b.dx));
  CHECK(same_bits(a.ry, b.ry));
  CHECK(same_bits(a.rdx, b.rdx));
  CHECK(same_bits(a.grad, b.grad));
  CHECK(same_bits(a.rgrad, b.rgrad));
}

/// Rows of `x` replaced: row 1 near-constant, row 2 exactly constant.
RowMatrixX<double> layer_norm_probe_input(Index n, Index d, std::uint64_t seed) {
  RowMatrixX<double> x = random_matrix<double>(n, d, seed);
  const RowMatrixX<double> noise = random_matrix<double>(1, d, seed + 100);
  x.row(1) = RowVectorX<double>::Constant(d, 0.7) + 1e-3 * noise;
  x.row(2).setConstant(-1.25);
  return x;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// LayerNorm
// ---------------------------------------------------------------------------------------------------------

TEST_CASE("LayerNorm: backward and R-operator match central differences") {
  SUBCASE("affine, random rows with a near-constant and a constant row") {
    require_layer_derivatives(std::make_unique<LayerNorm<double>>(7), layer_norm_probe_input(6, 7, 1), 21);
  }
  SUBCASE("affine, training flag set (no effect), larger eps") {
    require_layer_derivatives(std::make_unique<LayerNorm<double>>(5, 0.1), random_matrix<double>(4, 5, 2), 22, true);
  }
  SUBCASE("without affine") {
    require_layer_derivatives(std::make_unique<LayerNorm<double>>(6, 1e-5, false), layer_norm_probe_input(5, 6, 3),
                              23);
  }
  SUBCASE("one feature (x̂ = 0 always, y = beta)") {
    require_layer_derivatives(std::make_unique<LayerNorm<double>>(1), random_matrix<double>(3, 1, 4), 24);
  }
  SUBCASE("more than one row block (70 rows)") {
    require_layer_derivatives(std::make_unique<LayerNorm<double>>(3), random_matrix<double>(70, 3, 5), 25);
  }
}

TEST_CASE("LayerNorm: torch.nn.LayerNorm values") {
  // torch.nn.LayerNorm(4)(torch.tensor([[1., 2., 3., 4.]])): mean 2.5, biased var 1.25, eps 1e-5 inside the
  // sqrt: (x - 2.5) / sqrt(1.25001) (values to 30 digits from Python's decimal module).
  LayerNorm<double> ln(4);
  VectorX<double> params(8), grads = VectorX<double>::Zero(8);
  ln.bind(params.data(), grads.data());
  RandomStream rng(0);
  ln.initialize(rng);
  CHECK(params.head(4) == VectorX<double>::Ones(4));
  CHECK(params.tail(4) == VectorX<double>::Zero(4));
  RowMatrixX<double> x(1, 4), y(1, 4);
  x << 1, 2, 3, 4;
  ln.forward(x, y, false);
  const double a = 1.34163541996892698256520657773, b = 0.447211806656308994188402192576;
  CHECK(y(0, 0) == doctest::Approx(-a).epsilon(1e-15));
  CHECK(y(0, 1) == doctest::Approx(-b).epsilon(1e-15));
  CHECK(y(0, 2) == doctest::Approx(b).epsilon(1e-15));
  CHECK(y(0, 3) == doctest::Approx(a).epsilon(1e-15));

  // Width 5 with gamma and beta: [-2, 0, 0, 2, 5] has mean 1 and biased variance 5.6.
  LayerNorm<double> ln5(5);
  VectorX<double> p5(10), g5 = VectorX<double>::Zero(10);
  p5 << 0.5, -1, 2, 1, 3, 0, 1, -1, 0.25, 0.5;
  ln5.bind(p5.data(), g5.data());
  RowMatrixX<double> x5(1, 5), y5(1, 5);
  x5 << -2, 0, 0, 2, 5;
  ln5.forward(x5, y5, true);
  const double xhat[5] = {-1.26773025019127107986099622376, -0.422576750063757026620332074587,
                          -0.422576750063757026620332074587, 0.422576750063757026620332074587,
                          1.69030700025502810648132829835};
  for (Index j = 0; j < 5; ++j) CHECK(y5(0, j) == doctest::Approx(p5[j] * xhat[j] + p5[5 + j]).epsilon(1e-14));

  // dL/dgamma = dy ∘ x̂, dL/dbeta = dy for a single row; accumulated on a second call.
  RowMatrixX<double> dy(1, 5), dx(1, 5);
  dy << 1, -2, 0.5, 3, -1;
  ln5.backward(dy, dx, true);
  ln5.backward(dy, dx, false);
  for (Index j = 0; j < 5; ++j) {
    CHECK(g5[j] == doctest::Approx(2 * dy(0, j) * xhat[j]).epsilon(1e-14));
    CHECK(g5[5 + j] == doctest::Approx(2 * dy(0, j)).epsilon(1e-14));
  }
  // dx sums to zero (y is invariant to a shift of x).
  CHECK(std::abs(dx.sum()) < 1e-13);
}

TEST_CASE("LayerNorm: a constant row gives beta and a finite gradient") {
  LayerNorm<double> ln(4);
  VectorX<double> params(8), grads = VectorX<double>::Zero(8);
  params << 2, 3, 4, 5, 0.1, 0.2, 0.3, 0.4;
  ln.bind(params.data(), grads.data());
  RowMatrixX<double> x = RowMatrixX<double>::Constant(2, 4, 3.0), y(2, 4), dx(2, 4), dy(2, 4);
  x.row(1).setZero();
  ln.forward(x, y, false);
  for (Index i = 0; i < 2; ++i) CHECK(y.row(i) == params.tail(4).transpose());
  dy << 1, 2, 3, 4, -1, 0, 1, 0;
  ln.backward(dy, dx, true);
  CHECK(detail::all_finite(dx));
  CHECK(detail::all_finite(grads));
  // x̂ = 0: dx = (g - mean(g)) / sqrt(eps) with g = gamma ∘ dy.
  const RowVectorX<double> g = params.head(4).transpose().cwiseProduct(dy.row(0));
  const RowVectorX<double> expected = (g.array() - g.mean()).matrix() / std::sqrt(1e-5);
  CHECK(max_rel_error(dx.row(0), expected) < 1e-12);
}

TEST_CASE_TEMPLATE("LayerNorm: rows whose variance overflows are scaled, not lost", Scalar, float, double) {
  // 1e20 (float) / 1e160 (double): the squares overflow; the output is that of [1, 2, 3, 4] with eps ~ 0.
  const Scalar big = std::is_same_v<Scalar, float> ? Scalar(1e20) : Scalar(1e160);
  LayerNorm<Scalar> ln(4, 1e-5, false);
  RowMatrixX<Scalar> x(2, 4), y(2, 4), dx(2, 4), dy = random_matrix<Scalar>(2, 4, 5);
  x << 1, 2, 3, 4, -4, -3, -2, -1;
  x *= big;
  ln.forward(x, y, false);
  const double a = 1.3416407864998738, b = 0.4472135954999579;  // 1.5 / sqrt(1.25), 0.5 / sqrt(1.25)
  CHECK(static_cast<double>(y(0, 0)) == doctest::Approx(-a).epsilon(1e-5));
  CHECK(static_cast<double>(y(0, 1)) == doctest::Approx(-b).epsilon(1e-5));
  CHECK(static_cast<double>(y(1, 3)) == doctest::Approx(a).epsilon(1e-5));
  ln.backward(dy, dx, true);
  CHECK(detail::all_finite(dx));
}

TEST_CASE_TEMPLATE("LayerNorm: float agrees with double", Scalar, float, double) {
  LayerNorm<Scalar> lf(9);
  LayerNorm<double> ld(9);
  VectorX<double> pd = VectorX<double>::Ones(18) + 0.2 * random_matrix<double>(18, 1, 8);
  VectorX<Scalar> pf = pd.cast<Scalar>();
  const auto of = full_pass(lf, pf, 20, true, 31);
  const auto od = full_pass(ld, pd, 20, true, 31);
  // Both passes draw the same doubles; float differs by input rounding and arithmetic.
  const double tol = std::is_same_v<Scalar, float> ? 1e-4 : 1e-14;
  CHECK(max_rel_error(of.y.template cast<double>(), od.y) < tol);
  CHECK(max_rel_error(of.dx.template cast<double>(), od.dx) < tol);
  CHECK(max_rel_error(of.ry.template cast<double>(), od.ry) < tol);
  CHECK(max_rel_error(of.rdx.template cast<double>(), od.rdx) < tol);
  CHECK(max_rel_error(of.grad.template cast<double>(), od.grad) < tol);
  CHECK(max_rel_error(of.rgrad.template cast<double>(), od.rgrad) < tol);
}

// ---------------------------------------------------------------------------------------------------------
// L2Normalize
// ---------------------------------------------------------------------------------------------------------

TEST_CASE("L2Normalize: backward and R-operator match central differences") {
  SUBCASE("random rows, default eps") {
    require_layer_derivatives(std::make_unique<L2Normalize<double>>(6), random_matrix<double>(5, 6, 6), 26);
  }
  SUBCASE("rows on both sides of the clamp and a zero row (eps = 0.5)") {
    // Norms 0.3 and 0.45 (clamped: y = x / eps), 0.55 and 2 (not clamped), and a zero row (clamped). The
    // probes move x by about 1e-6, far from the kink at 0.5.
    RowMatrixX<double> x = random_matrix<double>(5, 4, 7);
    const double norms[5] = {0.3, 0.45, 0.55, 2.0, 0.0};
    for (Index i = 0; i < 5; ++i) x.row(i) *= norms[i] / x.row(i).norm();
    require_layer_derivatives(std::make_unique<L2Normalize<double>>(4, 0.5), x, 27);
  }
  SUBCASE("many rows, training flag set (no effect)") {
    require_layer_derivatives(std::make_unique<L2Normalize<double>>(3), random_matrix<double>(70, 3, 8), 28, true);
  }
}

TEST_CASE_TEMPLATE("L2Normalize: torch.nn.functional.normalize values", Scalar, float, double) {
  L2Normalize<Scalar> l2(2);
  RowMatrixX<Scalar> x(5, 2), y(5, 2);
  const Scalar big = std::is_same_v<Scalar, float> ? Scalar(3e20) : Scalar(3e160);
  x << 3, 4,            // norm 5
      0, 0,             // zero row: zeros
      Scalar(3e-13), Scalar(4e-13),  // norm 5e-13 < eps = 1e-12: divided by eps
      big, big * 4 / 3,              // squares overflow: still (0.6, 0.8)
      Scalar(-1e-12), 0;             // norm == eps (exactly, in double): not clamped (torch's clamp_min)
  l2.forward(x, y, false);
  const double tol = std::is_same_v<Scalar, float> ? 1e-6 : 1e-15;
  auto near = [&](Index i, double a, double b) {
    CHECK(static_cast<double>(y(i, 0)) == doctest::Approx(a).epsilon(tol));
    CHECK(static_cast<double>(y(i, 1)) == doctest::Approx(b).epsilon(tol));
  };
  near(0, 0.6, 0.8);
  CHECK(y(1, 0) == Scalar(0));
  CHECK(y(1, 1) == Scalar(0));
  near(2, 0.3, 0.4);
  near(3, 0.6, 0.8);
  near(4, -1.0, 0.0);

  // The zero row's gradient is dy / eps, finite; the other rows' gradients are orthogonal to y.
  RowMatrixX<Scalar> dy(5, 2), dx(5, 2);
  dy << 1, 2, 3, -4, 1, 1, -1, 2, 0.5, 0.5;
  l2.backward(dy, dx, true);
  CHECK(detail::all_finite(dx));
  CHECK(static_cast<double>(dx(1, 0)) == doctest::Approx(3e12).epsilon(tol));
  CHECK(static_cast<double>(dx(1, 1)) == doctest::Approx(-4e12).epsilon(tol));
  CHECK(std::abs(static_cast<double>(dx.row(0).dot(y.row(0)))) < 1e-6);
  // Row 0: (dy - y (y·dy)) / 5 with y = (0.6, 0.8), y·dy = 2.2.
  CHECK(static_cast<double>(dx(0, 0)) == doctest::Approx((1 - 0.6 * 2.2) / 5).epsilon(1e-5));
  CHECK(static_cast<double>(dx(0, 1)) == doctest::Approx((2 - 0.8 * 2.2) / 5).epsilon(1e-5));
}

TEST_CASE_TEMPLATE("L2Normalize: float agrees with double", Scalar, float, double) {
  L2Normalize<Scalar> lf(9);
  L2Normalize<double> ld(9);
  VectorX<Scalar> pf;
  VectorX<double> pd;
  const auto of = full_pass(lf, pf, 20, false, 41);
  const auto od = full_pass(ld, pd, 20, false, 41);
  const double tol = std::is_same_v<Scalar, float> ? 1e-5 : 1e-14;
  CHECK(max_rel_error(of.y.template cast<double>(), od.y) < tol);
  CHECK(max_rel_error(of.dx.template cast<double>(), od.dx) < tol);
  CHECK(max_rel_error(of.ry.template cast<double>(), od.ry) < tol);
  CHECK(max_rel_error(of.rdx.template cast<double>(), od.rdx) < tol);
}

// ---------------------------------------------------------------------------------------------------------
// Dropout
// ---------------------------------------------------------------------------------------------------------

TEST_CASE("Dropout: backward and R-operator match central differences with a fixed mask") {
  SUBCASE("training, p = 0.3, mask number 5") {
    require_layer_derivatives(std::make_unique<FixedStepDropout>(6, 0.3, 99, 5), random_matrix<double>(7, 6, 9), 29,
                              true);
  }
  SUBCASE("evaluation (identity)") {
    require_layer_derivatives(std::make_unique<FixedStepDropout>(6, 0.3, 99, 5), random_matrix<double>(7, 6, 9), 30,
                              false);
  }
  SUBCASE("training, p = 0 (identity)") {
    require_layer_derivatives(std::make_unique<FixedStepDropout>(4, 0.0, 1, 0), random_matrix<double>(3, 4, 10), 31,
                              true);
  }
}

TEST_CASE_TEMPLATE("Dropout: kept units are scaled by 1 / (1 - p), dropped ones are 0", Scalar, float, double) {
  Dropout<Scalar> drop(8, 0.5, 3);
  RowMatrixX<Scalar> x = random_matrix<Scalar>(6, 8, 11), y(6, 8), dx(6, 8), ry(6, 8), rdx(6, 8);
  const RowMatrixX<Scalar> dy = random_matrix<Scalar>(6, 8, 12), rx = random_matrix<Scalar>(6, 8, 13),
                           rdy = random_matrix<Scalar>(6, 8, 14);
  CHECK(drop.step() == 0);
  drop.forward(x, y, true);
  CHECK(drop.step() == 1);
  drop.backward(dy, dx, true);
  drop.forward_r(rx, nullptr, ry);
  drop.backward_r(dy, rdy, nullptr, nullptr, rdx, true);
  Index kept = 0;
  for (Index i = 0; i < 6; ++i)
    for (Index j = 0; j < 8; ++j) {
      const bool keep = y(i, j) != Scalar(0);
      kept += keep ? 1 : 0;
      const Scalar m = keep ? Scalar(2) : Scalar(0);
      CHECK(y(i, j) == x(i, j) * m);
      CHECK(dx(i, j) == dy(i, j) * m);
      CHECK(ry(i, j) == rx(i, j) * m);
      CHECK(rdx(i, j) == rdy(i, j) * m);
    }
  CHECK(kept > 0);
  CHECK(kept < 48);

  // Evaluation: identity, and the step does not move.
  drop.forward(x, y, false);
  CHECK(drop.step() == 1);
  CHECK(y == x);
  drop.backward(dy, dx, true);
  CHECK(dx == dy);
  drop.backward_r(dy, rdy, nullptr, nullptr, rdx, true);
  CHECK(rdx == rdy);
  // p = 0 in training: identity, but the step advances.
  Dropout<Scalar> none(8, 0.0, 3);
  none.forward(x, y, true);
  CHECK(y == x);
  CHECK(none.step() == 1);
}

TEST_CASE("Dropout: the fraction of kept units is binomial (p = 0.3, 1e5 units)") {
  // Kept count ~ Binomial(1e5, 0.7): standard deviation sqrt(1e5 · 0.7 · 0.3) = 144.9, so the fraction is
  // within 0.7 ± 5 · 0.00145 = 0.7 ± 0.0072 except with probability 6e-7 (the seed is fixed, so the test is
  // deterministic; the bound says it is not tuned to the seed).
  const Index n = 1000, d = 100;
  for (double p : {0.3, 0.05, 0.9}) {
    Dropout<double> drop(d, p, 2024);
    const RowMatrixX<double> x = RowMatrixX<double>::Ones(n, d);
    RowMatrixX<double> y(n, d);
    for (int call = 0; call < 3; ++call) {
      drop.forward(x, y, true);
      const double kept = static_cast<double>((y.array() != 0.0).count()) / static_cast<double>(n * d);
      const double sd = std::sqrt(p * (1 - p) / static_cast<double>(n * d));
      INFO("p " << p << " call " << call << " kept " << kept);
      CHECK(std::abs(kept - (1 - p)) < 5 * sd);
      // The kept value is exactly 1 / (1 - p); the mean stays near 1 (inverted dropout is unbiased).
      CHECK((y.array() == 0.0 || y.array() == 1.0 / (1.0 - p)).all());
      CHECK(std::abs(y.mean() - 1.0) < 5 * sd / (1 - p));
      // No column or row pattern: the first and the last column agree with the rate over 1000 rows.
      const double sd_col = std::sqrt(p * (1 - p) / static_cast<double>(n));
      for (Index j : {Index(0), d - 1}) {
        const double col = static_cast<double>((y.col(j).array() != 0.0).count()) / static_cast<double>(n);
        CHECK(std::abs(col - (1 - p)) < 5 * sd_col);
      }
    }
  }
}

TEST_CASE("Dropout: masks are a pure function of (seed, step)") {
  const RowMatrixX<double> x = RowMatrixX<double>::Ones(20, 16);
  RowMatrixX<double> y(20, 16);
  auto masks = [&](Dropout<double>& drop, int calls) {
    std::vector<RowMatrixX<double>> out;
    for (int c = 0; c < calls; ++c) {
      drop.forward(x, y, true);
      out.push_back(y);
    }
    return out;
  };
  Dropout<double> a(16, 0.4, 77), b(16, 0.4, 77), other(16, 0.4, 78);
  const auto ma = masks(a, 4), mb = masks(b, 4), mo = masks(other, 4);
  for (int c = 0; c < 4; ++c) {
    CHECK(ma[static_cast<std::size_t>(c)] == mb[static_cast<std::size_t>(c)]);
    CHECK(ma[static_cast<std::size_t>(c)] != mo[static_cast<std::size_t>(c)]);
    if (c > 0) CHECK(ma[static_cast<std::size_t>(c)] != ma[static_cast<std::size_t>(c - 1)]);
  }
  CHECK(a.step() == 4);

  // set_step repeats a mask; evaluation forwards in between do not shift it.
  a.set_step(2);
  a.forward(x, y, false);
  a.forward(x, y, true);
  CHECK(y == ma[2]);
  CHECK(a.step() == 3);

  // A clone continues the same sequence.
  auto c = a.clone();
  RowMatrixX<double> yc(20, 16);
  c->forward(x, yc, true);
  CHECK(yc == ma[3]);

  // Row i of a mask does not depend on the batch size.
  Dropout<double> small(16, 0.4, 77);
  small.set_step(1);
  const RowMatrixX<double> x5 = RowMatrixX<double>::Ones(5, 16);
  RowMatrixX<double> y5(5, 16);
  small.forward(x5, y5, true);
  CHECK(y5 == ma[1].topRows(5));

  // A 64-bit seed: both halves matter.
  Dropout<double> high(16, 0.4, 77 + (std::uint64_t(1) << 40));
  high.forward(x, y, true);
  CHECK(y != ma[0]);
}

// ---------------------------------------------------------------------------------------------------------
// All three
// ---------------------------------------------------------------------------------------------------------

TEST_CASE_TEMPLATE("Norm layers: bitwise identical results at 1 and 2 threads", Scalar, float, double) {
  // 2048 x 128: every loop passes detail::worth_parallel (>= 2e5 operations, >= 2 rows or row blocks).
  const Index n = 2048, d = 128;
  auto run = [&](Layer<Scalar>& layer, VectorX<Scalar>& params, int threads) {
    ThreadCountGuard guard(threads);
    return full_pass(layer, params, n, true, 51);
  };
  SUBCASE("LayerNorm") {
    LayerNorm<Scalar> l1(d), l2(d);
    VectorX<Scalar> params = VectorX<Scalar>::Ones(2 * d) + Scalar(0.1) * random_matrix<Scalar>(2 * d, 1, 3);
    check_same_bits(run(l1, params, 1), run(l2, params, 2));
  }
  SUBCASE("L2Normalize") {
    L2Normalize<Scalar> l1(d), l2(d);
    VectorX<Scalar> params;
    check_same_bits(run(l1, params, 1), run(l2, params, 2));
  }
  SUBCASE("Dropout") {
    Dropout<Scalar> l1(d, 0.3, 5), l2(d, 0.3, 5);
    VectorX<Scalar> params;
    const auto a = run(l1, params, 1), b = run(l2, params, 2);
    check_same_bits(a, b);
    CHECK((a.y.array() == Scalar(0)).count() > 0);
  }
}

TEST_CASE("Norm layers: type names, configs and clones") {
  LayerNorm<float> ln(5, 1e-3, false);
  CHECK(ln.type_name() == "LayerNorm");
  CHECK(ln.config() == std::vector<double>{5, 1e-3, 0});
  CHECK(ln.num_parameters() == 0);
  CHECK(LayerNorm<float>(5).num_parameters() == 10);
  CHECK(LayerNorm<float>(5).config() == std::vector<double>{5, 1e-5, 1});
  L2Normalize<double> l2(3);
  CHECK(l2.type_name() == "L2Normalize");
  CHECK(l2.config() == std::vector<double>{3, 1e-12});
  CHECK(l2.num_parameters() == 0);
  const std::uint64_t seed = 0x123456789ABCDEF0ull;
  Dropout<float> drop(4, 0.25, seed);
  CHECK(drop.type_name() == "Dropout");
  CHECK(drop.config() == std::vector<double>{4, 0.25, double(0x9ABCDEF0u), double(0x12345678u)});
  for (const Layer<float>* layer : std::vector<const Layer<float>*>{&ln, &drop}) {
    const auto copy = layer->clone();
    CHECK(copy->type_name() == layer->type_name());
    CHECK(copy->config() == layer->config());
    CHECK(copy->input_dim() == layer->input_dim());
    CHECK(copy->output_dim() == layer->output_dim());
  }
  // A clone is unbound.
  LayerNorm<double> bound(2);
  VectorX<double> p(4), g(4);
  bound.bind(p.data(), g.data());
  const auto copy = bound.clone();
  RowMatrixX<double> x = RowMatrixX<double>::Ones(1, 2), y(1, 2);
  KSHOT_CHECK_THROWS_WITH_ALL(copy->forward(x, y, false), std::invalid_argument, "kshot::LayerNorm::forward()",
                              "bind()");
}

TEST_CASE("Norm layers: bad input throws with the call, the argument and the numbers") {
  using E = std::invalid_argument;
  KSHOT_CHECK_THROWS_WITH_ALL(LayerNorm<double>(0), E, "kshot::LayerNorm::LayerNorm()", "dim", "0");
  KSHOT_CHECK_THROWS_WITH_ALL(LayerNorm<double>(3, 0.0), E, "kshot::LayerNorm::LayerNorm()", "eps", "0");
  KSHOT_CHECK_THROWS_WITH_ALL(LayerNorm<double>(3, -1e-5), E, "eps", "-1e-05");
  KSHOT_CHECK_THROWS_WITH_ALL(LayerNorm<double>(3, std::nan("")), E, "eps", "nan");
  KSHOT_CHECK_THROWS_WITH_ALL(LayerNorm<float>(3, 1e-60), E, "eps", "1e-60", "Scalar");
  KSHOT_CHECK_THROWS_WITH_ALL(L2Normalize<double>(-2), E, "kshot::L2Normalize::L2Normalize()", "dim", "-2");
  KSHOT_CHECK_THROWS_WITH_ALL(L2Normalize<double>(2, 0.0), E, "kshot::L2Normalize::L2Normalize()", "eps");
  KSHOT_CHECK_THROWS_WITH_ALL(L2Normalize<float>(2, 1e300), E, "eps", "Scalar");
  KSHOT_CHECK_THROWS_WITH_ALL(Dropout<double>(0, 0.5, 1), E, "kshot::Dropout::Dropout()", "dim");
  KSHOT_CHECK_THROWS_WITH_ALL(Dropout<double>(3, 1.0, 1), E, "kshot::Dropout::Dropout()", "p must be in [0, 1), got 1",
                              "every unit");
  KSHOT_CHECK_THROWS_WITH_ALL(Dropout<double>(3, 1.5, 1), E, "p must be in [0, 1)", "1.5");
  KSHOT_CHECK_THROWS_WITH_ALL(Dropout<double>(3, -0.1, 1), E, "p must be in [0, 1)", "-0.1");
  KSHOT_CHECK_THROWS_WITH_ALL(Dropout<double>(3, std::nan(""), 1), E, "p must be in [0, 1)", "nan");

  LayerNorm<double> ln(3);
  L2Normalize<double> l2(3);
  Dropout<double> drop(3, 0.5, 1);
  VectorX<double> p(6), g(6);
  RowMatrixX<double> x = random_matrix<double>(4, 3, 1), y(4, 3), wide(4, 5), short_y(3, 3), dx(4, 3);
  RandomStream rng(1);

  // Unbound LayerNorm.
  KSHOT_CHECK_THROWS_WITH_ALL(ln.initialize(rng), E, "kshot::LayerNorm::initialize()", "6 parameters", "bind()");
  KSHOT_CHECK_THROWS_WITH_ALL(ln.forward(x, y, false), E, "kshot::LayerNorm::forward()", "bind()");
  ln.bind(p.data(), g.data());
  ln.initialize(rng);

  // Use before forward().
  KSHOT_CHECK_THROWS_WITH_ALL(ln.backward(x, dx, true), E, "kshot::LayerNorm::backward()", "forward()");
  KSHOT_CHECK_THROWS_WITH_ALL(l2.forward_r(x, nullptr, y), E, "kshot::L2Normalize::forward_r()", "forward()");
  KSHOT_CHECK_THROWS_WITH_ALL(drop.backward_r(x, x, nullptr, nullptr, dx, true), E, "kshot::Dropout::backward_r()",
                              "forward()");

  Layer<double>* layers[3] = {&ln, &l2, &drop};
  const char* names[3] = {"kshot::LayerNorm::", "kshot::L2Normalize::", "kshot::Dropout::"};
  for (int k = 0; k < 3; ++k) {
    Layer<double>& layer = *layers[k];
    INFO(names[k]);
    KSHOT_CHECK_THROWS_WITH_ALL(layer.forward(wide, y, true), E, names[k], "forward()", "x has 5 columns",
                                "dim is 3");
    KSHOT_CHECK_THROWS_WITH_ALL(layer.forward(x, short_y, true), E, "forward()", "y is 3 x 3 but must be 4 x 3");
    RowMatrixX<double> bad = x;
    bad(2, 1) = std::numeric_limits<double>::infinity();
    KSHOT_CHECK_THROWS_WITH_ALL(layer.forward(bad, y, true), E, "forward()", "x has a non-finite value (inf) at row 2",
                                "column 1");
    layer.forward(x, y, true);
    KSHOT_CHECK_THROWS_WITH_ALL(layer.backward(short_y, dx, true), E, "backward()", "dy is 3 x 3 but must be 4 x 3");
    KSHOT_CHECK_THROWS_WITH_ALL(layer.backward(x, short_y, true), E, "backward()", "dx is 3 x 3 but must be 4 x 3");
    bad(2, 1) = std::nan("");
    KSHOT_CHECK_THROWS_WITH_ALL(layer.backward(bad, dx, true), E, "backward()", "dy has a non-finite value");
    KSHOT_CHECK_THROWS_WITH_ALL(layer.forward_r(short_y, p.data(), y), E, "forward_r()", "rx is 3 x 3");
    KSHOT_CHECK_THROWS_WITH_ALL(layer.forward_r(bad, p.data(), y), E, "forward_r()", "rx has a non-finite value");
  }
  // backward_r needs forward_r for the layers whose R{dx} depends on rx.
  KSHOT_CHECK_THROWS_WITH_ALL(ln.backward_r(x, x, p.data(), g.data(), dx, true), E, "kshot::LayerNorm::backward_r()",
                              "forward_r()");
  KSHOT_CHECK_THROWS_WITH_ALL(l2.backward_r(x, x, nullptr, nullptr, dx, true), E,
                              "kshot::L2Normalize::backward_r()", "forward_r()");
  // The affine LayerNorm needs its direction and its Hessian-vector slice.
  KSHOT_CHECK_THROWS_WITH_ALL(ln.forward_r(x, nullptr, y), E, "kshot::LayerNorm::forward_r()", "v is null");
  ln.forward_r(x, p.data(), y);
  KSHOT_CHECK_THROWS_WITH_ALL(ln.backward_r(x, x, p.data(), nullptr, dx, true), E, "backward_r()", "rgrad is null");
  KSHOT_CHECK_THROWS_WITH_ALL(ln.backward_r(x, short_y, p.data(), g.data(), dx, true), E, "backward_r()",
                              "rdy is 3 x 3");
  // A new forward() invalidates the R pass.
  ln.forward(x, y, false);
  KSHOT_CHECK_THROWS_WITH_ALL(ln.backward_r(x, x, p.data(), g.data(), dx, true), E, "forward_r()");
}

TEST_CASE("Norm layers: inputs bind without a copy and empty batches are valid") {
  // A row block of a wider matrix binds as a strided view; L2Normalize keeps that view.
  RowMatrixX<double> big = random_matrix<double>(10, 3, 61);
  L2Normalize<double> l2(3);
  RowMatrixX<double> y(4, 3), dx(4, 3);
  const RowMatrixX<double> dy = random_matrix<double>(4, 3, 62);
  l2.forward(big.middleRows(3, 4), y, false);
  l2.backward(dy, dx, true);
  L2Normalize<double> ref(3);
  const RowMatrixX<double> copy = big.middleRows(3, 4);
  RowMatrixX<double> y2(4, 3), dx2(4, 3);
  ref.forward(copy, y2, false);
  ref.backward(dy, dx2, true);
  CHECK(y == y2);
  CHECK(dx == dx2);

  LayerNorm<double> ln(3);
  VectorX<double> p(6), g = VectorX<double>::Zero(6);
  ln.bind(p.data(), g.data());
  RandomStream rng(0);
  ln.initialize(rng);
  RowMatrixX<double> e(0, 3), ey(0, 3);
  ln.forward(e, ey, true);
  ln.backward(e, ey, true);
  CHECK(g == VectorX<double>::Zero(6));
  Dropout<double> drop(3, 0.5, 1);
  drop.forward(e, ey, true);
  CHECK(drop.step() == 1);
}

TEST_CASE("Norm layers: LayerNorm and Dropout may run in place") {
  const RowMatrixX<double> x = random_matrix<double>(9, 5, 71), dy = random_matrix<double>(9, 5, 72);
  VectorX<double> p = VectorX<double>::Ones(10) + 0.3 * random_matrix<double>(10, 1, 73);
  VectorX<double> g1 = VectorX<double>::Zero(10), g2 = VectorX<double>::Zero(10);
  LayerNorm<double> a(5), b(5);
  a.bind(p.data(), g1.data());
  b.bind(p.data(), g2.data());
  Dropout<double> da(5, 0.5, 9), db(5, 0.5, 9);
  RowMatrixX<double> y(9, 5), dx(9, 5), m = x, dm = dy;
  a.forward(x, y, true);
  a.backward(dy, dx, true);
  b.forward(m, m, true);
  b.backward(dm, dm, true);
  CHECK(m == y);
  CHECK(dm == dx);
  CHECK(g1 == g2);
  da.forward(y, y, true);
  db.forward(m, m, true);
  CHECK(m == y);
  da.backward(dx, dx, true);
  db.backward(dm, dm, true);
  CHECK(dm == dx);
}
