// SPDX-License-Identifier: MIT
// Sequential: model gradients and Hessian-vector products against central differences for a squared-error loss,
// float against double, bitwise identical results at 1 and 2 threads, building and dimension errors, flat
// parameter layout, copies, buffer reuse, bad input.
#include "test_util.hpp"

#include <kshot/core/threads.hpp>
#include <kshot/nn/activations.hpp>
#include <kshot/nn/dropout.hpp>
#include <kshot/nn/l2_normalize.hpp>
#include <kshot/nn/layer_norm.hpp>
#include <kshot/nn/linear.hpp>
#include <kshot/nn/residual.hpp>
#include <kshot/nn/sequential.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <stdexcept>

using kshot::Index;
using kshot::RowMatrixX;
using kshot::Sequential;
using kshot::VectorX;
using kshot::test::gradient_rel_error;
using kshot::test::random_matrix;

namespace {

/// L = ½‖model(x) − t‖²: value, gradient (dL/dθ, and dL/dx when asked) and Hessian-vector product.
struct SquaredError {
  Sequential<double>& model;
  const RowMatrixX<double>& x;
  const RowMatrixX<double>& t;

  double value(const VectorX<double>& theta) {
    model.parameters() = theta;
    return 0.5 * (model.forward(x, false) - t).squaredNorm();
  }
  VectorX<double> gradient(const VectorX<double>& theta) {
    model.parameters() = theta;
    model.zero_grad();
    const RowMatrixX<double> dy = model.forward(x, false) - t;
    model.backward(dy);
    return model.gradients();
  }
  VectorX<double> hessian_vector(const VectorX<double>& theta, const VectorX<double>& v) {
    model.parameters() = theta;
    model.zero_grad();
    const RowMatrixX<double> dy = model.forward(x, false) - t;
    model.backward(dy);
    const RowMatrixX<double> rdy = model.forward_r(v);  // R{y − t} = R{y}
    VectorX<double> hv(theta.size());
    model.backward_r(dy, rdy, hv);
    return hv;
  }
};

/// Central differences of a vector function along every coordinate (or of a scalar one).
VectorX<double> numeric_gradient(const std::function<double(const VectorX<double>&)>& f, const VectorX<double>& theta,
                                 double h = 1e-6) {
  VectorX<double> g(theta.size());
  VectorX<double> probe = theta;
  for (Index i = 0; i < theta.size(); ++i) {
    probe[i] = theta[i] + h;
    const double up = f(probe);
    probe[i] = theta[i] - h;
    const double down = f(probe);
    probe[i] = theta[i];
    g[i] = (up - down) / (2 * h);
  }
  return g;
}

/// Checks dL/dθ, dL/dx and H v of L = ½‖model(x) − t‖² against central differences.
void require_model_derivatives(Sequential<double>& model, const RowMatrixX<double>& x, std::uint64_t seed,
                               double tol = 1e-6) {
  const RowMatrixX<double> t = random_matrix<double>(x.rows(), model.output_dim(), seed);
  SquaredError loss{model, x, t};
  kshot::RandomStream rng(seed, 7);
  VectorX<double> theta = model.parameters();
  for (Index i = 0; i < theta.size(); ++i) theta[i] += 0.05 * rng.normal<double>();
  VectorX<double> v(theta.size());
  for (Index i = 0; i < v.size(); ++i) v[i] = rng.normal<double>();

  const VectorX<double> g = loss.gradient(theta);
  const double e_grad = gradient_rel_error(g, numeric_gradient([&](const VectorX<double>& p) { return loss.value(p); }, theta));

  // dL/dx through backward(dy, dx).
  model.parameters() = theta;
  model.zero_grad();
  const RowMatrixX<double> dy = model.forward(x, false) - t;
  RowMatrixX<double> dx(x.rows(), x.cols());
  model.backward(dy, dx);
  const RowMatrixX<double> dx_num = kshot::test::numeric_gradient(
      [&](const RowMatrixX<double>& probe) { return 0.5 * (model.forward(probe, false) - t).squaredNorm(); }, x);
  const double e_input = gradient_rel_error(dx, dx_num);

  // H v against the central difference of the gradient along v.
  const double h = 1e-6;
  const VectorX<double> hv = loss.hessian_vector(theta, v);
  const VectorX<double> hv_num = (loss.gradient(theta + h * v) - loss.gradient(theta - h * v)) / (2 * h);
  const double e_hv = gradient_rel_error(hv, hv_num);
  INFO("gradient " << e_grad << " input " << e_input << " hessian-vector " << e_hv);
  CHECK(e_grad < tol);
  CHECK(e_input < tol);
  CHECK(e_hv < tol);
  CHECK(hv.norm() > 0);
  model.parameters() = theta;
}

}  // namespace

TEST_CASE("Sequential: gradient and Hessian-vector product match central differences") {
  SUBCASE("MLP with tanh") {
    auto model = kshot::make_mlp<double>({5, 7, 6, 3}, kshot::Activation::tanh, kshot::Init::pytorch_default, 1);
    require_model_derivatives(model, random_matrix<double>(9, 5, 2), 3);
  }
  SUBCASE("MLP with gelu and several row blocks (n = 70)") {
    auto model = kshot::make_mlp<double>({3, 4, 2}, kshot::Activation::gelu, kshot::Init::xavier_normal, 4);
    require_model_derivatives(model, random_matrix<double>(70, 3, 5), 6);
  }
  SUBCASE("MLP with relu") {
    auto model = kshot::make_mlp<double>({4, 6, 3}, kshot::Activation::relu, kshot::Init::kaiming_uniform, 7);
    require_model_derivatives(model, random_matrix<double>(8, 4, 8), 9);
  }
  SUBCASE("every layer type: Linear, GELU, ResidualBlock, LayerNorm, Dropout (eval), Tanh, L2Normalize") {
    Sequential<double> model;
    model.add<kshot::Linear>(4, 6);
    model.add<kshot::GELU>(6);
    model.add<kshot::ResidualBlock>(6, 5, kshot::Activation::tanh);
    model.add<kshot::LayerNorm>(6);
    model.add<kshot::Dropout>(6, 0.5, 3);
    model.add<kshot::Linear>(6, 5, false);
    model.add<kshot::Tanh>(5);
    model.add<kshot::L2Normalize>(5);
    model.initialize(10);
    require_model_derivatives(model, random_matrix<double>(7, 4, 11), 12);
  }
}

TEST_CASE("Sequential: building, flat layout, initialize and make_mlp") {
  Sequential<float> model;
  CHECK(model.empty());
  CHECK(model.input_dim() == 0);
  CHECK(model.num_parameters() == 0);
  auto& first = model.add<kshot::Linear<float>>(3, 4);
  auto& act = model.add<kshot::ReLU>(4);
  auto& last = model.add(std::make_unique<kshot::Linear<float>>(4, 2, false));
  CHECK(act.type_name() == "ReLU");
  CHECK(model.size() == 3);
  CHECK(model.input_dim() == 3);
  CHECK(model.output_dim() == 2);
  CHECK(model.num_parameters() == 3 * 4 + 4 + 4 * 2);
  CHECK(model.parameter_offset(0) == 0);
  CHECK(model.parameter_offset(1) == 16);
  CHECK(model.parameter_offset(2) == 16);
  CHECK(model.parameter_offset(3) == 24);
  // Layers view their slices of the flat vector (first's bias after its weight; last after first).
  CHECK(first.weight().data() == model.parameters().data());
  CHECK(first.bias().data() == model.parameters().data() + 12);
  CHECK(last.num_parameters() == 8);
  CHECK(model.parameters().size() == 24);
  CHECK(model.gradients().isZero(0));
  // A built model holds initialize(0)'s values; layer i draws from RandomStream(seed, i).
  const VectorX<float> built = model.parameters();
  model.initialize(0);
  CHECK(model.parameters() == built);
  model.initialize(42);
  kshot::Linear<float> reference(4, 2, false);
  VectorX<float> p(8), g(8);
  reference.bind(p.data(), g.data());
  kshot::RandomStream rng(42, 2);
  reference.initialize(rng);
  CHECK(model.parameters().tail(8) == p);
  CHECK(model.parameters() != built);

  const auto mlp = kshot::make_mlp<float>({784, 256, 64});
  CHECK(mlp.size() == 3);
  CHECK(mlp.layer(0).type_name() == "Linear");
  CHECK(mlp.layer(1).type_name() == "ReLU");
  CHECK(mlp.layer(2).config() == std::vector<double>{256, 64, 1, 0});
  CHECK(mlp.num_parameters() == 784 * 256 + 256 + 256 * 64 + 64);
  const auto gelu = kshot::make_mlp<double>({3, 5, 5, 2}, kshot::Activation::gelu, kshot::Init::zeros, 1, false);
  CHECK(gelu.size() == 5);
  CHECK(gelu.layer(3).type_name() == "GELU");
  CHECK(gelu.num_parameters() == 15 + 25 + 10);
  CHECK(gelu.parameters().isZero(0));
}

TEST_CASE("Sequential: backward accumulates, zero_grad clears, forward of zero rows") {
  auto model = kshot::make_mlp<double>({4, 5, 3}, kshot::Activation::tanh);
  const RowMatrixX<double> x = random_matrix<double>(6, 4, 1), dy = random_matrix<double>(6, 3, 2);
  model.forward(x);
  model.backward(dy);
  const VectorX<double> once = model.gradients();
  CHECK(once.norm() > 0);
  model.backward(dy);
  CHECK((model.gradients() - 2 * once).norm() <= 1e-14 * once.norm());
  model.zero_grad();
  CHECK(model.gradients().isZero(0));
  const RowMatrixX<double> none(0, 4);
  const auto& y = model.forward(none);
  CHECK(y.rows() == 0);
  CHECK(y.cols() == 3);
  model.backward(RowMatrixX<double>(0, 3));
  CHECK(model.gradients().isZero(0));
}

TEST_CASE_TEMPLATE("Sequential: float agrees with double", T, float, double) {
  auto md = kshot::make_mlp<double>({20, 30, 10}, kshot::Activation::gelu, kshot::Init::pytorch_default, 3);
  auto mt = kshot::make_mlp<T>({20, 30, 10}, kshot::Activation::gelu, kshot::Init::pytorch_default, 3);
  mt.parameters() = md.parameters().template cast<T>();
  const RowMatrixX<double> x = random_matrix<double>(80, 20, 4), dy = random_matrix<double>(80, 10, 5);
  const RowMatrixX<T> xt = x.cast<T>();
  const RowMatrixX<double> yd = md.forward(x);
  const RowMatrixX<T> yt = mt.forward(xt);
  CHECK(kshot::test::max_rel_error(yt, yd.cast<T>()) < kshot::test::Tolerances<T>::rel);
  md.backward(dy);
  mt.backward(dy.cast<T>());
  CHECK(kshot::test::max_rel_error(mt.gradients(), md.gradients().template cast<T>()) <
        10 * kshot::test::Tolerances<T>::rel);
  const VectorX<double> v = random_matrix<double>(md.num_parameters(), 1, 6);
  const RowMatrixX<double> ryd = md.forward_r(v);
  const RowMatrixX<T> ryt = mt.forward_r(v.cast<T>());
  CHECK(kshot::test::max_rel_error(ryt, ryd.cast<T>()) < 10 * kshot::test::Tolerances<T>::rel);
  VectorX<double> hvd(md.num_parameters());
  VectorX<T> hvt(mt.num_parameters());
  md.backward_r(dy, ryd, hvd);
  mt.backward_r(dy.cast<T>(), ryd.cast<T>(), hvt);
  CHECK(kshot::test::max_rel_error(hvt, hvd.cast<T>()) < 10 * kshot::test::Tolerances<T>::rel);
}

TEST_CASE("Sequential: bitwise identical results at 1 and 2 threads (512 x 256 input)") {
  const RowMatrixX<float> x = random_matrix<float>(512, 256, 1);
  const RowMatrixX<float> dy = random_matrix<float>(512, 64, 2);
  const VectorX<float> v = random_matrix<float>(256 * 300 + 300 + 300 * 64 + 64, 1, 3);
  auto run = [&](int threads) {
    kshot::ThreadCountGuard guard(threads);
    auto model = kshot::make_mlp<float>({256, 300, 64}, kshot::Activation::gelu, kshot::Init::pytorch_default, 4);
    std::vector<float> all;
    auto keep = [&](const auto& m) {
      const RowMatrixX<float> copy = m;
      all.insert(all.end(), copy.data(), copy.data() + copy.size());
    };
    keep(model.forward(x));
    RowMatrixX<float> dx(512, 256);
    model.backward(dy, dx);
    keep(dx);
    keep(model.gradients());
    const RowMatrixX<float> ry = model.forward_r(v);
    keep(ry);
    VectorX<float> hv(model.num_parameters());
    model.backward_r(dy, ry, hv);
    keep(hv);
    return all;
  };
  const std::vector<float> one = run(1), two = run(2);
  REQUIRE(one.size() == two.size());
  CHECK(std::memcmp(one.data(), two.data(), sizeof(float) * one.size()) == 0);
  bool finite = true;
  for (float f : one) finite = finite && std::isfinite(f);
  CHECK(finite);
}

TEST_CASE("Sequential: copies are deep and independent; moves leave the source empty") {
  auto original = kshot::make_mlp<double>({4, 6, 3}, kshot::Activation::tanh, kshot::Init::pytorch_default, 5);
  const RowMatrixX<double> x = random_matrix<double>(5, 4, 6), dy = random_matrix<double>(5, 3, 7);
  const RowMatrixX<double> y0 = original.forward(x);
  original.backward(dy);
  const VectorX<double> p0 = original.parameters(), g0 = original.gradients();

  Sequential<double> copy = original;
  CHECK(copy.parameters() == p0);
  CHECK(copy.gradients() == g0);
  CHECK(copy.parameters().data() != original.parameters().data());
  CHECK(RowMatrixX<double>(copy.forward(x)) == y0);
  copy.parameters().array() += 1.0;
  copy.zero_grad();
  copy.forward(x);
  copy.backward(dy);
  CHECK(original.parameters() == p0);
  CHECK(original.gradients() == g0);
  CHECK(RowMatrixX<double>(original.output()) == y0);  // the original's buffers are its own
  // The original still runs backward on its own forward state.
  original.zero_grad();
  original.backward(dy);
  CHECK(original.gradients() == g0);

  Sequential<double> assigned;
  assigned = copy;
  CHECK(assigned.parameters() == copy.parameters());
  assigned.parameters().setZero();
  CHECK(copy.parameters() != assigned.parameters());
  const auto cloned = original.clone();
  CHECK(cloned.parameters() == p0);

  Sequential<double> moved = std::move(copy);
  CHECK(moved.size() == 3);
  CHECK(copy.empty());  // NOLINT(bugprone-use-after-move): documented state
  CHECK(copy.num_parameters() == 0);
  CHECK(RowMatrixX<double>(moved.forward(x)) != y0);
  moved.swap(original);
  CHECK(original.parameters() != p0);
  CHECK(moved.parameters() == p0);
  CHECK(RowMatrixX<double>(moved.forward(x)) == y0);
}

TEST_CASE("Sequential: a column-major input is kept by the model, so backward stays correct") {
  auto model = kshot::make_mlp<double>({4, 5, 2}, kshot::Activation::tanh, kshot::Init::pytorch_default, 8);
  const RowMatrixX<double> x = random_matrix<double>(6, 4, 9), dy = random_matrix<double>(6, 2, 10);
  model.forward(x);
  model.backward(dy);
  const VectorX<double> expected = model.gradients();
  model.zero_grad();
  {
    const Eigen::MatrixXd column_major = x;
    model.forward(column_major);
  }
  // Clobber the memory the temporary used, then run backward.
  const Eigen::MatrixXd other = Eigen::MatrixXd::Constant(6, 4, 1e3);
  model.backward(dy);
  CHECK(model.gradients() == expected);
  CHECK(other(0, 0) == 1e3);
  // An expression is copied the same way.
  model.zero_grad();
  model.forward(2.0 * x);
  model.backward(dy);
  const VectorX<double> from_expression = model.gradients();
  model.zero_grad();
  const RowMatrixX<double> twice = 2.0 * x;
  model.forward(twice);
  model.backward(dy);
  CHECK(model.gradients() == from_expression);
}

TEST_CASE("Sequential: the output is a member reused while the shape stays; auto copies it") {
  auto model = kshot::make_mlp<float>({8, 16, 4}, kshot::Activation::relu, kshot::Init::pytorch_default, 1);
  const RowMatrixX<float> big = random_matrix<float>(75, 8, 2), small = random_matrix<float>(25, 8, 3);
  const float* p_big = model.forward(big).data();
  CHECK(model.forward(big).data() == p_big);
  CHECK(&model.forward(big) == &model.output());
  auto copy = model.forward(big);  // a RowMatrixX: survives the next forward
  const RowMatrixX<float> kept = copy;
  const auto& small_out = model.forward(small);
  CHECK(small_out.rows() == 25);
  CHECK(model.output().rows() == 25);
  CHECK(copy == kept);
  model.reserve(200);
  const RowMatrixX<float> huge = random_matrix<float>(200, 8, 4);
  CHECK(model.forward(huge).rows() == 200);
}

TEST_CASE("Sequential: bad input throws with the function, the argument and the numbers") {
  using E = std::invalid_argument;
  Sequential<float> model;
  const RowMatrixX<float> x = RowMatrixX<float>::Ones(3, 4);
  KSHOT_CHECK_THROWS_WITH_ALL(model.forward(x), E, "kshot::Sequential::forward()", "the model has no layers");
  model.add<kshot::Linear>(4, 5);
  KSHOT_CHECK_THROWS_WITH_ALL(model.add<kshot::Linear>(6, 2), E, "kshot::Sequential::add()",
                              "layer 1 (Linear) has input_dim 6 but layer 0 (Linear) has output_dim 5");
  KSHOT_CHECK_THROWS_WITH_ALL(model.add<kshot::GELU>(4), E, "layer 1 (GELU) has input_dim 4",
                              "layer 0 (Linear) has output_dim 5");
  CHECK(model.size() == 1);  // failed adds change nothing
  CHECK(model.num_parameters() == 25);
  KSHOT_CHECK_THROWS_WITH_ALL(model.add(nullptr), E, "layer is null");
  model.add<kshot::ReLU>(5);

  KSHOT_CHECK_THROWS_WITH_ALL(model.backward(RowMatrixX<float>::Ones(3, 5)), E, "kshot::Sequential::backward()",
                              "call forward() first");
  VectorX<float> v = VectorX<float>::Zero(25), hv(25);
  KSHOT_CHECK_THROWS_WITH_ALL(model.forward_r(v), E, "kshot::Sequential::forward_r()", "call forward() first");
  KSHOT_CHECK_THROWS_WITH_ALL(model.forward(RowMatrixX<float>::Ones(3, 5)), E,
                              "x has 5 columns but the model's input_dim is 4");
  RowMatrixX<float> bad = x;
  bad(1, 2) = std::nanf("");
  KSHOT_CHECK_THROWS_WITH_ALL(model.forward(bad), E, "x has a non-finite value", "row 1, column 2");

  model.forward(x);
  KSHOT_CHECK_THROWS_WITH_ALL(model.backward(RowMatrixX<float>::Ones(2, 5)), E, "dy is 2 x 5 but must be 3 x 5");
  RowMatrixX<float> dx(3, 3);
  KSHOT_CHECK_THROWS_WITH_ALL(model.backward(RowMatrixX<float>::Ones(3, 5), dx), E, "dx is 3 x 3 but must be 3 x 4");
  RowMatrixX<float> dy_nan = RowMatrixX<float>::Ones(3, 5);
  dy_nan(0, 0) = std::numeric_limits<float>::infinity();
  KSHOT_CHECK_THROWS_WITH_ALL(model.backward(dy_nan), E, "dy has a non-finite value");
  KSHOT_CHECK_THROWS_WITH_ALL(model.backward_r(dy_nan, dy_nan, hv), E, "kshot::Sequential::backward_r()",
                              "call forward() and backward() first");
  const RowMatrixX<float> dy = RowMatrixX<float>::Ones(3, 5);
  model.backward(dy);
  KSHOT_CHECK_THROWS_WITH_ALL(model.backward_r(dy, dy, hv), E, "call forward_r() after forward() first");
  KSHOT_CHECK_THROWS_WITH_ALL(model.forward_r(VectorX<float>::Zero(3)), E,
                              "v has 3 entries but the model has 25 parameters");
  model.forward_r(v);
  VectorX<float> short_hv(2);
  KSHOT_CHECK_THROWS_WITH_ALL(model.backward_r(dy, dy, short_hv), E, "hv has 2 entries but the model has 25 parameters");
  model.backward_r(dy, dy, hv);
  KSHOT_CHECK_THROWS_WITH_ALL(model.set_parameters(VectorX<float>::Zero(3)), E, "kshot::Sequential::set_parameters()",
                              "values has 3 entries but the model has 25 parameters");
  KSHOT_CHECK_THROWS_WITH_ALL(model.layer(2), std::out_of_range, "kshot::Sequential::layer()",
                              "i is 2 but the model has 2 layers");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::make_mlp<float>({4}), E, "kshot::make_mlp()", "at least 2 entries");
  KSHOT_CHECK_THROWS_WITH_ALL(kshot::make_mlp<float>({4, 0, 2}), E, "dims[1] is 0 but must be at least 1");
  // A new forward invalidates the R pass of the previous one.
  model.forward(x);
  model.backward(dy);
  KSHOT_CHECK_THROWS_WITH_ALL(model.backward_r(dy, dy, hv), E, "call forward_r() after forward() first");
}
