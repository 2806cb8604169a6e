// SPDX-License-Identifier: MIT
// Linear, the activations, ResidualBlock and the init schemes: derivatives against central differences (backward
// and both halves of the R-operator), hand-computed values, init statistics, thread independence, bad input.
#include "nn/layer_checks.hpp"
#include "test_util.hpp"

#include <kshot/core/threads.hpp>
#include <kshot/nn/activations.hpp>
#include <kshot/nn/init.hpp>
#include <kshot/nn/linear.hpp>
#include <kshot/nn/residual.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <stdexcept>

using kshot::Index;
using kshot::RowMatrixX;
using kshot::VectorX;
using kshot::test::BoundLayer;
using kshot::test::random_matrix;
using kshot::test::require_layer_derivatives;

namespace {

/// Random normal values pushed at least `gap` away from zero (so that ReLU's kink is never straddled).
RowMatrixX<double> away_from_zero(Index n, Index d, std::uint64_t seed, double gap = 1e-2) {
  RowMatrixX<double> x = random_matrix<double>(n, d, seed);
  for (Index i = 0; i < x.size(); ++i)
    if (std::abs(x.data()[i]) < gap) x.data()[i] = x.data()[i] < 0 ? -gap : gap;
  return x;
}

/// A layer of Scalar bound to its own vectors.
template <class Scalar>
struct Bound {
  std::unique_ptr<kshot::Layer<Scalar>> layer;
  VectorX<Scalar> params, grads;
  explicit Bound(std::unique_ptr<kshot::Layer<Scalar>> l) : layer(std::move(l)) {
    params = VectorX<Scalar>::Zero(layer->num_parameters());
    grads = VectorX<Scalar>::Zero(layer->num_parameters());
    layer->bind(params.data(), grads.data());
  }
};

}  // namespace

TEST_CASE("Linear: backward and R-operator match central differences") {
  SUBCASE("with bias, one row block") {
    require_layer_derivatives(std::make_unique<kshot::Linear<double>>(5, 4), random_matrix<double>(7, 5, 1), 11);
  }
  SUBCASE("without bias") {
    require_layer_derivatives(std::make_unique<kshot::Linear<double>>(3, 6, false), random_matrix<double>(4, 3, 2),
                              12);
  }
  SUBCASE("several row blocks (n = 70 > 64, out = 66 > 64)") {
    require_layer_derivatives(std::make_unique<kshot::Linear<double>>(2, 66), random_matrix<double>(70, 2, 3), 13);
  }
  SUBCASE("kaiming init, a single input feature") {
    require_layer_derivatives(std::make_unique<kshot::Linear<double>>(1, 3, true, kshot::Init::kaiming_normal),
                              random_matrix<double>(5, 1, 4), 14);
  }
}

TEST_CASE("activations: backward and R-operator match central differences") {
  const RowMatrixX<double> x = away_from_zero(9, 6, 21);
  SUBCASE("ReLU") { require_layer_derivatives(std::make_unique<kshot::ReLU<double>>(6), x, 31); }
  SUBCASE("GELU") { require_layer_derivatives(std::make_unique<kshot::GELU<double>>(6), x, 32); }
  SUBCASE("Tanh") { require_layer_derivatives(std::make_unique<kshot::Tanh<double>>(6), x, 33); }
  SUBCASE("GELU and Tanh on large inputs (saturated tails)") {
    const RowMatrixX<double> big = 4.0 * x;
    require_layer_derivatives(std::make_unique<kshot::GELU<double>>(6), big, 34);
    require_layer_derivatives(std::make_unique<kshot::Tanh<double>>(6), big, 35);
  }
  SUBCASE("many rows (several blocks)") {
    require_layer_derivatives(std::make_unique<kshot::GELU<double>>(2), away_from_zero(130, 2, 22), 36);
  }
}

TEST_CASE("ResidualBlock: backward and R-operator match central differences") {
  const RowMatrixX<double> x = random_matrix<double>(8, 5, 41);
  SUBCASE("tanh") {
    require_layer_derivatives(std::make_unique<kshot::ResidualBlock<double>>(5, 7, kshot::Activation::tanh), x, 51);
  }
  SUBCASE("gelu") {
    require_layer_derivatives(std::make_unique<kshot::ResidualBlock<double>>(5, 3, kshot::Activation::gelu), x, 52);
  }
  SUBCASE("relu (hidden pre-activations away from the kink at this seed)") {
    // With relu the central differences are exact unless a hidden unit sits within h of zero; check that.
    BoundLayer b(std::make_unique<kshot::ResidualBlock<double>>(5, 4, kshot::Activation::relu));
    kshot::RandomStream rng(53, 1);
    b.layer->initialize(rng);
    const auto& block = static_cast<const kshot::ResidualBlock<double>&>(*b.layer);
    const RowMatrixX<double> h = (x * block.fc1().weight().transpose()).rowwise() + block.fc1().bias().transpose();
    CHECK(h.cwiseAbs().minCoeff() > 1e-3);
    require_layer_derivatives(std::make_unique<kshot::ResidualBlock<double>>(5, 4, kshot::Activation::relu), x, 53);
  }
}

TEST_CASE("Linear: values against a hand-computed case and parameter layout") {
  Bound<double> b(std::make_unique<kshot::Linear<double>>(2, 3));
  // [W row by row, b]
  b.params << 1, 2, 3, 4, 5, 6, 0.5, -1, 2;
  auto& lin = static_cast<kshot::Linear<double>&>(*b.layer);
  CHECK(lin.weight()(1, 0) == 3);
  CHECK(lin.bias()(2) == 2);
  RowMatrixX<double> x(2, 2), y(2, 3);
  x << 1, -1, 2, 0.5;
  lin.forward(x, y, true);
  RowMatrixX<double> expected(2, 3);
  expected << -0.5, -2, 1, 3.5, 7, 15;
  CHECK(y == expected);

  // dy = ones: dW = dy^T x (every row = column sums of x), db = n, dx = dy W (column sums of W).
  RowMatrixX<double> dy = RowMatrixX<double>::Ones(2, 3), dx(2, 2);
  lin.backward(dy, dx, true);
  VectorX<double> grad_expected(9);
  grad_expected << 3, -0.5, 3, -0.5, 3, -0.5, 2, 2, 2;
  CHECK(b.grads == grad_expected);
  CHECK(dx(0, 0) == 9);
  CHECK(dx(1, 1) == 12);
  // backward accumulates.
  lin.backward(dy, dx, false);
  CHECK(b.grads == 2 * grad_expected);
  CHECK(lin.config() == std::vector<double>{2, 3, 1, 0});
  CHECK(lin.type_name() == "Linear");
  CHECK(kshot::Linear<float>(3, 2, false).num_parameters() == 6);
}

TEST_CASE("activations: values against hand-computed cases") {
  RowMatrixX<double> x(1, 5), y(1, 5), dx(1, 5);
  x << -1, 0, 1, 2, -3;
  const RowMatrixX<double> dy = RowMatrixX<double>::Ones(1, 5);
  SUBCASE("ReLU: max(x, 0); gradient 0 at exactly 0 as torch") {
    kshot::ReLU<double> relu(5);
    relu.forward(x, y, true);
    CHECK(y == (RowMatrixX<double>(1, 5) << 0, 0, 1, 2, 0).finished());
    relu.backward(dy, dx, true);
    CHECK(dx == (RowMatrixX<double>(1, 5) << 0, 0, 1, 1, 0).finished());
  }
  SUBCASE("GELU: x Phi(x) (torch.nn.GELU() values)") {
    kshot::GELU<double> gelu(5);
    gelu.forward(x, y, true);
    CHECK(y(0, 0) == doctest::Approx(-0.15865525393145707).epsilon(1e-15));
    CHECK(y(0, 1) == 0.0);
    CHECK(y(0, 2) == doctest::Approx(0.8413447460685429).epsilon(1e-15));
    CHECK(y(0, 3) == doctest::Approx(1.9544997361036416).epsilon(1e-15));
    CHECK(y(0, 4) == doctest::Approx(-0.00404969409489031).epsilon(1e-12));
    gelu.backward(dy, dx, true);
    CHECK(dx(0, 1) == 0.5);                                                  // Phi(0) + 0
    CHECK(dx(0, 2) == doctest::Approx(1.0833154705876864).epsilon(1e-14));  // Phi(1) + phi(1)
  }
  SUBCASE("Tanh") {
    kshot::Tanh<double> th(5);
    th.forward(x, y, true);
    CHECK(y(0, 2) == doctest::Approx(std::tanh(1.0)).epsilon(1e-15));
    th.backward(dy, dx, true);
    CHECK(dx(0, 1) == 1.0);
    CHECK(dx(0, 4) == doctest::Approx(1 - std::tanh(3.0) * std::tanh(3.0)).epsilon(1e-12));
  }
  CHECK(kshot::make_activation<float>(kshot::Activation::gelu, 3)->type_name() == "GELU");
  CHECK(kshot::make_activation<float>(kshot::Activation::tanh, 3)->config() == std::vector<double>{3});
  CHECK(std::string(kshot::to_string(kshot::Activation::relu)) == "relu");
}

TEST_CASE("ResidualBlock: value is x + fc2(act(fc1(x)))") {
  Bound<double> b(std::make_unique<kshot::ResidualBlock<double>>(3, 2, kshot::Activation::relu));
  CHECK(b.layer->num_parameters() == 2 * 3 + 2 + 3 * 2 + 3);
  // fc1: W1 = [[1, 0, -1], [0, 2, 0]], b1 = [0, -1]; fc2: W2 = [[1, 1], [0, -1], [2, 0]], b2 = [0.5, 0, 0].
  b.params << 1, 0, -1, 0, 2, 0, 0, -1, 1, 1, 0, -1, 2, 0, 0.5, 0, 0;
  RowMatrixX<double> x(1, 3), y(1, 3);
  x << 1, 1, 3;
  b.layer->forward(x, y, true);
  // h = [1 - 3, 2 - 1] = [-2, 1]; relu = [0, 1]; fc2 = [1 + 0.5, -1, 0]; y = x + that.
  CHECK(y == (RowMatrixX<double>(1, 3) << 2.5, 0, 3).finished());
  CHECK(b.layer->config() == std::vector<double>{3, 2, 0, 0});
}

TEST_CASE("init: schemes, bounds, statistics and reproducibility") {
  const Index out = 200, in = 300;
  auto draw = [&](kshot::Init init, std::uint64_t seed) {
    Bound<double> b(std::make_unique<kshot::Linear<double>>(in, out, true, init));
    kshot::RandomStream rng(seed, 0);
    b.layer->initialize(rng);
    return b.params;
  };
  const Index nw = out * in;
  SUBCASE("pytorch_default: weight and bias in U(-1/sqrt(in), 1/sqrt(in))") {
    const VectorX<double> p = draw(kshot::Init::pytorch_default, 1);
    const double bound = 1 / std::sqrt(double(in));
    CHECK(p.cwiseAbs().maxCoeff() <= bound);
    CHECK(p.head(nw).cwiseAbs().maxCoeff() > 0.99 * bound);
    CHECK(p.tail(out).cwiseAbs().maxCoeff() > 0.9 * bound);
    // Variance of U(-a, a) is a^2 / 3.
    CHECK(p.head(nw).squaredNorm() / double(nw) == doctest::Approx(bound * bound / 3).epsilon(0.02));
  }
  SUBCASE("xavier and kaiming: variance, bound, zero bias") {
    const VectorX<double> xu = draw(kshot::Init::xavier_uniform, 2);
    CHECK(xu.head(nw).cwiseAbs().maxCoeff() <= std::sqrt(6.0 / (in + out)));
    CHECK(xu.head(nw).squaredNorm() / double(nw) == doctest::Approx(2.0 / (in + out)).epsilon(0.02));
    CHECK(xu.tail(out).isZero(0));
    const VectorX<double> xn = draw(kshot::Init::xavier_normal, 3);
    CHECK(xn.head(nw).squaredNorm() / double(nw) == doctest::Approx(2.0 / (in + out)).epsilon(0.02));
    const VectorX<double> ku = draw(kshot::Init::kaiming_uniform, 4);
    CHECK(ku.head(nw).cwiseAbs().maxCoeff() <= std::sqrt(6.0 / in));
    CHECK(ku.head(nw).squaredNorm() / double(nw) == doctest::Approx(2.0 / in).epsilon(0.02));
    const VectorX<double> kn = draw(kshot::Init::kaiming_normal, 5);
    CHECK(kn.head(nw).squaredNorm() / double(nw) == doctest::Approx(2.0 / in).epsilon(0.02));
    CHECK(std::abs(kn.head(nw).mean()) < 0.01 * std::sqrt(2.0 / in));
    CHECK(kn.tail(out).isZero(0));
  }
  SUBCASE("zeros, and the same seed gives the same values") {
    CHECK(draw(kshot::Init::zeros, 6).isZero(0));
    CHECK(draw(kshot::Init::kaiming_normal, 7) == draw(kshot::Init::kaiming_normal, 7));
    CHECK(draw(kshot::Init::kaiming_normal, 7) != draw(kshot::Init::kaiming_normal, 8));
  }
  SUBCASE("float draws the same stream") {
    RowMatrixX<float> wf(3, 4);
    RowMatrixX<double> wd(3, 4);
    kshot::RandomStream a(9), c(9);
    kshot::initialize_weight<float>(wf, kshot::Init::xavier_normal, a);
    kshot::initialize_weight<double>(wd, kshot::Init::xavier_normal, c);
    CHECK((wf.cast<double>() - wd).cwiseAbs().maxCoeff() < 1e-6);
  }
  CHECK(std::string(kshot::to_string(kshot::Init::kaiming_uniform)) == "kaiming_uniform");
}

TEST_CASE_TEMPLATE("Linear and activations: float agrees with double", T, float, double) {
  const RowMatrixX<double> xd = random_matrix<double>(70, 33, 61);
  Bound<double> bd(std::make_unique<kshot::ResidualBlock<double>>(33, 40, kshot::Activation::gelu));
  Bound<T> bt(std::make_unique<kshot::ResidualBlock<T>>(33, 40, kshot::Activation::gelu));
  kshot::RandomStream rng(62);
  bd.layer->initialize(rng);
  bt.params = bd.params.cast<T>();
  RowMatrixX<double> yd(70, 33);
  RowMatrixX<T> yt(70, 33);
  const RowMatrixX<T> xt = xd.cast<T>();
  bd.layer->forward(xd, yd, true);
  bt.layer->forward(xt, yt, true);
  CHECK(kshot::test::max_rel_error(yt, yd.cast<T>()) < kshot::test::Tolerances<T>::rel);
  RowMatrixX<double> dxd(70, 33);
  RowMatrixX<T> dxt(70, 33);
  const RowMatrixX<double> dy = random_matrix<double>(70, 33, 63);
  bd.layer->backward(dy, dxd, true);
  bt.layer->backward(dy.cast<T>(), dxt, true);
  CHECK(kshot::test::max_rel_error(dxt, dxd.cast<T>()) < kshot::test::Tolerances<T>::rel);
  CHECK(kshot::test::max_rel_error(bt.grads, bd.grads.cast<T>()) < 10 * kshot::test::Tolerances<T>::rel);
}

TEST_CASE("Linear and ResidualBlock: bitwise identical results at 1 and 2 threads") {
  const RowMatrixX<float> x = random_matrix<float>(300, 256, 71);
  const RowMatrixX<float> dy = random_matrix<float>(300, 256, 72);
  auto run = [&](int threads) {
    kshot::ThreadCountGuard guard(threads);
    Bound<float> b(std::make_unique<kshot::ResidualBlock<float>>(256, 300, kshot::Activation::tanh));
    kshot::RandomStream rng(73);
    b.layer->initialize(rng);
    RowMatrixX<float> y(300, 256), dx(300, 256), ry(300, 256), rdx(300, 256);
    b.layer->forward(x, y, true);
    b.layer->backward(dy, dx, true);
    const VectorX<float> v = b.params.reverse();
    VectorX<float> hv = VectorX<float>::Zero(b.params.size());
    b.layer->forward_r(dy, v.data(), ry);
    b.layer->backward_r(dy, x, v.data(), hv.data(), rdx, true);
    VectorX<float> all(y.size() + dx.size() + b.grads.size() + ry.size() + hv.size() + rdx.size());
    all << Eigen::Map<VectorX<float>>(y.data(), y.size()), Eigen::Map<VectorX<float>>(dx.data(), dx.size()), b.grads,
        Eigen::Map<VectorX<float>>(ry.data(), ry.size()), hv, Eigen::Map<VectorX<float>>(rdx.data(), rdx.size());
    return all;
  };
  const VectorX<float> one = run(1), two = run(2);
  REQUIRE(one.size() == two.size());
  CHECK(kshot::detail::all_finite(one));
  CHECK(std::memcmp(one.data(), two.data(), sizeof(float) * static_cast<std::size_t>(one.size())) == 0);
}

TEST_CASE("layers: bad input throws with the function, the argument and the numbers") {
  using E = std::invalid_argument;
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::Linear<float>(0, 3), E, "kshot::Linear::Linear()", "in must be at least 1, got 0");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::Linear<float>(3, -1), E, "out must be at least 1, got -1");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::Linear<float>(3, 2, true, static_cast<kshot::Init>(9)), E, "unknown code 9");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::ReLU<float>(0), E, "kshot::ReLU::ReLU()", "dim must be at least 1, got 0");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::ResidualBlock<float>(4, 0), E, "kshot::ResidualBlock::ResidualBlock()",
                              "hidden must be at least 1, got 0");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::ResidualBlock<float>(4, 2, static_cast<kshot::Activation>(7)), E,
                              "act has the unknown code 7");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::make_activation<float>(static_cast<kshot::Activation>(5), 2), E,
                              "kshot::make_activation()", "unknown code 5");

  RowMatrixX<float> x(4, 3), y(4, 2), bad_y(4, 3), dx(4, 3);
  x.setOnes();
  kshot::Linear<float> unbound(3, 2);
  KSHOT_CHECK_THROWS_WITH_ALL(unbound.forward(x, y, true), E, "kshot::Linear::forward()", "not bound");
  Bound<float> b(std::make_unique<kshot::Linear<float>>(3, 2));
  KSHOT_CHECK_THROWS_WITH_ALL(b.layer->backward(y, dx, true), E, "kshot::Linear::backward()", "call forward() first");
  KSHOT_CHECK_THROWS_WITH_ALL(b.layer->forward(y, y, true), E, "x has 2 columns but the layer has in = 3");
  KSHOT_CHECK_THROWS_WITH_ALL(b.layer->forward(x, bad_y, true), E, "y is 4 x 3 but must be 4 x 2");
  b.layer->forward(x, y, true);
  KSHOT_CHECK_THROWS_WITH_ALL(b.layer->backward(x, dx, true), E, "dy is 4 x 3 but must be 4 x 2");
  KSHOT_CHECK_THROWS_WITH_ALL(b.layer->backward(y, bad_y.leftCols(2), true), E, "dx is 4 x 2 but must be 4 x 3");
  VectorX<float> v = VectorX<float>::Zero(8), hv = VectorX<float>::Zero(8);
  KSHOT_CHECK_THROWS_WITH_ALL(b.layer->backward_r(y, y, v.data(), hv.data(), dx, true), E,
                              "kshot::Linear::backward_r()", "call forward_r() after forward() first");

  kshot::GELU<float> gelu(3);
  KSHOT_CHECK_THROWS_WITH_ALL(gelu.backward(x, dx, true), E, "kshot::GELU::backward()", "call forward() first");
  KSHOT_CHECK_THROWS_WITH_ALL(gelu.forward(y, y, true), E, "kshot::GELU::forward()",
                              "x has 2 columns but the layer has dim = 3");
  Bound<float> r(std::make_unique<kshot::ResidualBlock<float>>(3, 2));
  RowMatrixX<float> ry(4, 3);
  KSHOT_CHECK_THROWS_WITH_ALL(r.layer->backward(x, dx, true), E, "kshot::ResidualBlock::backward()",
                              "call forward() first");
  r.layer->forward(x, ry, true);
  VectorX<float> rv = VectorX<float>::Zero(r.params.size()), rh = rv;
  r.layer->forward_r(x, rv.data(), ry);
  KSHOT_CHECK_THROWS_WITH_ALL(r.layer->backward_r(x, x, rv.data(), rh.data(), dx, true), E,
                              "kshot::ResidualBlock::backward_r()", "call backward() after forward() first");
}

TEST_CASE("layers: clone is an unbound copy with the same configuration") {
  const kshot::ResidualBlock<double> block(4, 6, kshot::Activation::gelu, kshot::Init::xavier_normal);
  const auto copy = block.clone();
  CHECK(copy->type_name() == "ResidualBlock");
  CHECK(copy->config() == block.config());
  CHECK(copy->num_parameters() == block.num_parameters());
  const kshot::Linear<double> lin(4, 6, false, kshot::Init::zeros);
  CHECK(lin.clone()->config() == lin.config());
  RowMatrixX<double> x(1, 4), y(1, 6);
  x.setOnes();
  auto unbound = lin.clone();
  CHECK_THROWS_AS(unbound->forward(x, y, true), std::invalid_argument);
}
