/**
 * @file tests/nn/test_optimizers.cpp
 * @brief Optimizers (Sgd, Adam, AdamW), learning-rate schedules and gradient clipping: steps worked out by
 * hand, PyTorch's own results (tests/data/reference/torch_optim.json, written by generate_torch_optim.py),
 * bad input, checkpoint round trips, float against double, and bitwise identity across thread counts.
 *
 * SPDX-License-Identifier: MIT
 */
#include "reference.hpp"
#include "test_util.hpp"

#include <kshot/core/threads.hpp>
#include <kshot/nn/adam.hpp>
#include <kshot/nn/clip.hpp>
#include <kshot/nn/lr_schedule.hpp>
#include <kshot/nn/sgd.hpp>

#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

using namespace kshot;
using namespace kshot::test;

namespace {

template <class Scalar>
VectorX<Scalar> vec(std::initializer_list<double> values) {
  VectorX<Scalar> v(static_cast<Index>(values.size()));
  Index k = 0;
  for (double x : values) v[k++] = static_cast<Scalar>(x);
  return v;
}

template <class Scalar>
VectorX<Scalar> vec_of(const nlohmann::json& j) {
  VectorX<Scalar> v(static_cast<Index>(j.size()));
  for (Index k = 0; k < v.size(); ++k) v[k] = static_cast<Scalar>(j[static_cast<std::size_t>(k)].get<double>());
  return v;
}

template <class Scalar>
VectorX<Scalar> random_vector(Index n, std::uint64_t seed, double scale = 1.0) {
  VectorX<Scalar> v(n);
  RandomStream rng(seed);
  for (Index k = 0; k < n; ++k) v[k] = static_cast<Scalar>(scale * rng.normal<double>());
  return v;
}

template <class A, class B>
bool same_bits(const A& a, const B& b) {
  if (a.size() != b.size()) return false;
  return a.size() == 0 ||
         std::memcmp(a.data(), b.data(), static_cast<std::size_t>(a.size()) * sizeof(typename A::Scalar)) == 0;
}

/// |a - b| <= tol * |b| (exact equality accepted, for zeros).
bool rel_close(double a, double b, double tol) { return a == b || std::abs(a - b) <= tol * std::abs(b); }

const nlohmann::json& torch_reference() {
  static const ReferenceCase c = load_reference("torch_optim");
  return c.json;
}

/// Runs one torch_optim.json optimizer case in Scalar; returns the parameters after each step.
template <class Scalar>
std::vector<VectorX<Scalar>> run_torch_case(const nlohmann::json& c) {
  const auto& h = c.at("hyper");
  const std::string kind = c.at("optimizer").get<std::string>();
  VectorX<Scalar> p = vec_of<Scalar>(c.at("initial"));
  const bool scaled = !c.at("lr_scale").is_null();
  const VectorX<Scalar> scale = scaled ? vec_of<Scalar>(c.at("lr_scale")) : VectorX<Scalar>();
  std::vector<VectorX<Scalar>> history;
  auto run = [&](auto& opt) {
    for (const auto& gj : c.at("grads")) {
      const VectorX<Scalar> g = vec_of<Scalar>(gj);
      if (scaled) {
        opt.step(p, g, scale);
      } else {
        opt.step(p, g);
      }
      history.push_back(p);
    }
  };
  if (kind == "SGD") {
    Sgd<Scalar> opt(h.at("lr").get<double>(), h.at("momentum").get<double>(), h.at("dampening").get<double>(),
                    h.at("weight_decay").get<double>(), h.at("nesterov").get<bool>());
    run(opt);
  } else if (kind == "Adam") {
    Adam<Scalar> opt(h.at("lr").get<double>(), h.at("beta1").get<double>(), h.at("beta2").get<double>(),
                     h.at("eps").get<double>(), h.at("weight_decay").get<double>(), h.at("amsgrad").get<bool>());
    run(opt);
  } else {
    REQUIRE(kind == "AdamW");
    AdamW<Scalar> opt(h.at("lr").get<double>(), h.at("beta1").get<double>(), h.at("beta2").get<double>(),
                      h.at("eps").get<double>(), h.at("weight_decay").get<double>(), h.at("amsgrad").get<bool>());
    run(opt);
  }
  return history;
}

}  // namespace

// ---------------------------------------------------------------------------------------------------------
// Steps worked out by hand (double; p = [1, -2], g1 = [0.5, 1], g2 = [-1, 0.5], g3 = [0, 0]).

TEST_CASE("Sgd: hand-computed steps for every option") {
  const VectorX<double> g1 = vec<double>({0.5, 1}), g2 = vec<double>({-1, 0.5}), g3 = vec<double>({0, 0});
  auto expect = [](const VectorX<double>& p, double a, double b) {
    CHECK(p[0] == doctest::Approx(a).epsilon(1e-14));
    CHECK(p[1] == doctest::Approx(b).epsilon(1e-14));
  };

  SUBCASE("plain, lr 0.1") {
    // p1 = p - 0.1 g1 = [0.95, -2.1];  p2 = p1 - 0.1 g2 = [1.05, -2.15]
    Sgd<double> opt(0.1);
    VectorX<double> p = vec<double>({1, -2});
    opt.step(p, g1);
    expect(p, 0.95, -2.1);
    opt.step(p, g2);
    expect(p, 1.05, -2.15);
    CHECK(opt.steps() == 2);
    CHECK(opt.state_size() == 0);
  }
  SUBCASE("momentum 0.9: the first buffer is the gradient") {
    // b1 = g1 = [0.5, 1];                        p1 = [1 - 0.05, -2 - 0.1]      = [0.95, -2.1]
    // b2 = 0.9 b1 + g2 = [-0.55, 1.4];           p2 = [0.95 + 0.055, -2.1 - 0.14] = [1.005, -2.24]
    // b3 = 0.9 b2 + g3 = [-0.495, 1.26];         p3 = [1.005 + 0.0495, -2.24 - 0.126] = [1.0545, -2.366]
    Sgd<double> opt(0.1, 0.9);
    VectorX<double> p = vec<double>({1, -2});
    opt.step(p, g1);
    expect(p, 0.95, -2.1);
    opt.step(p, g2);
    expect(p, 1.005, -2.24);
    opt.step(p, g3);
    expect(p, 1.0545, -2.366);
    const VectorX<double> b = opt.state();
    REQUIRE(b.size() == 2);
    CHECK(b[0] == doctest::Approx(-0.495).epsilon(1e-14));
    CHECK(b[1] == doctest::Approx(1.26).epsilon(1e-14));
  }
  SUBCASE("momentum 0.9, dampening 0.5: no dampening on the first buffer") {
    // b1 = g1 = [0.5, 1];                               p1 = [0.95, -2.1]
    // b2 = 0.9 b1 + 0.5 g2 = [0.45 - 0.5, 0.9 + 0.25] = [-0.05, 1.15];  p2 = [0.95 + 0.005, -2.1 - 0.115]
    Sgd<double> opt(0.1, 0.9, 0.5);
    VectorX<double> p = vec<double>({1, -2});
    opt.step(p, g1);
    expect(p, 0.95, -2.1);
    opt.step(p, g2);
    expect(p, 0.955, -2.215);
  }
  SUBCASE("Nesterov, momentum 0.9") {
    // b1 = g1 = [0.5, 1];        d1 = g1 + 0.9 b1 = [0.95, 1.9];       p1 = [0.905, -2.19]
    // b2 = 0.9 b1 + g2 = [-0.55, 1.4];  d2 = g2 + 0.9 b2 = [-1.495, 1.76];  p2 = [1.0545, -2.366]
    Sgd<double> opt(0.1, 0.9, 0.0, 0.0, true);
    VectorX<double> p = vec<double>({1, -2});
    opt.step(p, g1);
    expect(p, 0.905, -2.19);
    opt.step(p, g2);
    expect(p, 1.0545, -2.366);
  }
  SUBCASE("weight decay 0.1 is added to the gradient") {
    // d1 = g1 + 0.1 p = [0.6, 0.8];            p1 = [0.94, -2.08]
    // d2 = g2 + 0.1 p1 = [-0.906, 0.292];      p2 = [0.94 + 0.0906, -2.08 - 0.0292] = [1.0306, -2.1092]
    Sgd<double> opt(0.1, 0.0, 0.0, 0.1);
    VectorX<double> p = vec<double>({1, -2});
    opt.step(p, g1);
    expect(p, 0.94, -2.08);
    opt.step(p, g2);
    expect(p, 1.0306, -2.1092);
  }
  SUBCASE("per-parameter learning rate") {
    // lr 0.1 with scales [1, 2]: p1 = [1 - 0.05, -2 - 0.2] = [0.95, -2.2]
    Sgd<double> opt(0.1);
    VectorX<double> p = vec<double>({1, -2});
    opt.step(p, g1, vec<double>({1, 2}));
    expect(p, 0.95, -2.2);
  }
}

TEST_CASE("Adam and AdamW: hand-computed steps") {
  // p = [1, -2], g = [0.5, -1] at every step, lr 0.1, betas (0.9, 0.999), eps 1e-8.
  // Step 1: m = 0.1 g, v = 0.001 g^2, bias corrections 0.1 and 0.001, so m_hat = g and sqrt(v_hat) = |g|:
  //   p1 = p - 0.1 g / (|g| + 1e-8)  (one step of lr against the sign of g).
  // Step 2: m = 0.19 g, v = 0.001999 g^2, corrections 0.19 and 0.001999: again m_hat = g, sqrt(v_hat) = |g|.
  const VectorX<double> g = vec<double>({0.5, -1});
  const double eps = 1e-8;
  auto move = [&](double gi) { return 0.1 * gi / (std::abs(gi) + eps); };
  SUBCASE("Adam") {
    Adam<double> opt(0.1);
    VectorX<double> p = vec<double>({1, -2});
    opt.step(p, g);
    CHECK(p[0] == doctest::Approx(1 - move(0.5)).epsilon(1e-14));  // 0.900000002
    CHECK(p[1] == doctest::Approx(-2 - move(-1)).epsilon(1e-14));  // -1.900000001
    const VectorX<double> s = opt.state();                         // [m, v]
    REQUIRE(s.size() == 4);
    CHECK(s[0] == doctest::Approx(0.05).epsilon(1e-14));
    CHECK(s[1] == doctest::Approx(-0.1).epsilon(1e-14));
    CHECK(s[2] == doctest::Approx(0.00025).epsilon(1e-12));
    CHECK(s[3] == doctest::Approx(0.001).epsilon(1e-12));
    opt.step(p, g);
    CHECK(p[0] == doctest::Approx(1 - 2 * move(0.5)).epsilon(1e-12));
    CHECK(p[1] == doctest::Approx(-2 - 2 * move(-1)).epsilon(1e-12));
  }
  SUBCASE("Adam with L2 weight decay 0.1: the gradient becomes g + 0.1 p = [0.6, -1.2]") {
    Adam<double> opt(0.1, 0.9, 0.999, eps, 0.1);
    VectorX<double> p = vec<double>({1, -2});
    opt.step(p, g);
    CHECK(p[0] == doctest::Approx(1 - move(0.6)).epsilon(1e-14));
    CHECK(p[1] == doctest::Approx(-2 - move(-1.2)).epsilon(1e-14));
  }
  SUBCASE("AdamW with weight decay 0.1: p first shrinks by 1 - 0.1 * 0.1 = 0.99") {
    AdamW<double> opt(0.1, 0.9, 0.999, eps, 0.1);
    VectorX<double> p = vec<double>({1, -2});
    opt.step(p, g);
    CHECK(p[0] == doctest::Approx(0.99 - move(0.5)).epsilon(1e-14));
    CHECK(p[1] == doctest::Approx(-1.98 - move(-1)).epsilon(1e-14));
  }
  SUBCASE("AdamW's default weight decay is torch's 0.01") {
    CHECK(AdamW<float>().weight_decay == 0.01);
    CHECK(Adam<float>().weight_decay == 0.0);
  }
  SUBCASE("AMSGrad keeps the largest second moment") {
    // beta2 0.5, lr 0.1, p = [0], g1 = [2], g2 = [0.5].
    // Step 1: m = 0.2, v = 2, corrections 0.1 and 0.5: p1 = -(0.1 / 0.1) * 0.2 / (sqrt(2) / sqrt(0.5) + eps)
    // Step 2: m = 0.9 * 0.2 + 0.1 * 0.5 = 0.23, v = 0.5 * 2 + 0.5 * 0.25 = 1.125, v_max = 2,
    //         corrections 0.19 and 0.75: p2 = p1 - (0.1 / 0.19) * 0.23 / (sqrt(v_hat) / sqrt(0.75) + eps)
    //         with v_hat = 2 (AMSGrad) or 1.125 (plain).
    const double p1 = -(0.1 / 0.1) * 0.2 / (std::sqrt(2.0) / std::sqrt(0.5) + eps);
    for (bool ams : {false, true}) {
      Adam<double> opt(0.1, 0.9, 0.5, eps, 0.0, ams);
      VectorX<double> p = vec<double>({0});
      opt.step(p, vec<double>({2}));
      CHECK(p[0] == doctest::Approx(p1).epsilon(1e-14));
      opt.step(p, vec<double>({0.5}));
      const double v_hat = ams ? 2.0 : 1.125;
      CHECK(p[0] ==
            doctest::Approx(p1 - (0.1 / 0.19) * 0.23 / (std::sqrt(v_hat) / std::sqrt(0.75) + eps)).epsilon(1e-13));
      CHECK(opt.state_size() == (ams ? 3 : 2));
    }
  }
  SUBCASE("per-parameter learning rate") {
    Adam<double> opt(0.1);
    VectorX<double> p = vec<double>({1, -2});
    opt.step(p, g, vec<double>({0.5, 3}));
    CHECK(p[0] == doctest::Approx(1 - 0.5 * move(0.5)).epsilon(1e-14));
    CHECK(p[1] == doctest::Approx(-2 - 3 * move(-1)).epsilon(1e-14));
  }
  SUBCASE("zero gradients leave the parameters in place") {
    Adam<double> opt(0.1);
    VectorX<double> p = vec<double>({1, -2});
    opt.step(p, vec<double>({0, 0}));
    CHECK(p[0] == 1.0);
    CHECK(p[1] == -2.0);
  }
}

// ---------------------------------------------------------------------------------------------------------
// PyTorch itself.

TEST_CASE("Optimizers match torch.optim (double to 1e-12, float to 1e-6)") {
  const auto& cases = torch_reference().at("optimizers");
  REQUIRE(cases.size() >= 18);
  for (const auto& c : cases) {
    const std::string name = c.at("name").get<std::string>();
    CAPTURE(name);
    const auto& expected = c.at("params");
    const auto& expected_float = c.at("params_float32");
    const auto got = run_torch_case<double>(c);
    const auto got_float = run_torch_case<float>(c);
    REQUIRE(got.size() == expected.size());
    for (std::size_t t = 0; t < got.size(); ++t) {
      CAPTURE(t);
      const VectorX<double> ref = vec_of<double>(expected[t]);
      CHECK(max_rel_error(got[t], ref) < 1e-12);
      CHECK(max_rel_error(got_float[t], vec_of<double>(expected_float[t])) < 1e-6);
    }
  }
}

TEST_CASE("AMSGrad changes the torch AMSGrad case (the case exercises the running maximum)") {
  for (const auto& c : torch_reference().at("optimizers")) {
    if (!c.at("hyper").contains("amsgrad") || !c.at("hyper").at("amsgrad").get<bool>()) continue;
    nlohmann::json plain = c;
    plain["hyper"]["amsgrad"] = false;
    CAPTURE(c.at("name").get<std::string>());
    CHECK(max_rel_error(run_torch_case<double>(plain).back(), vec_of<double>(c.at("params").back())) > 1e-6);
  }
}

TEST_CASE("Schedules match torch.optim.lr_scheduler") {
  int seen = 0;
  for (const auto& c : torch_reference().at("schedules")) {
    const std::string name = c.at("name").get<std::string>(), type = c.at("type").get<std::string>();
    CAPTURE(name);
    const auto& q = c.at("params");
    const double base = q.at("base_lr").get<double>();
    LrSchedule schedule;
    if (type == "StepLR") {
      schedule = StepLr(base, q.at("step_size").get<std::int64_t>(), q.at("gamma").get<double>());
    } else if (type == "CosineAnnealingLR") {
      schedule = CosineLr(base, q.at("T_max").get<std::int64_t>(), q.at("eta_min").get<double>());
    } else if (type == "LinearLR") {
      schedule =
          LinearWarmup(q.at("total_iters").get<std::int64_t>(), q.at("start_factor").get<double>(), ConstantLr(base));
    } else {
      REQUIRE(type == "SequentialLR");
      const auto warmup = q.at("warmup").get<std::int64_t>();
      const double factor = q.at("start_factor").get<double>();
      if (q.at("inner").get<std::string>() == "CosineAnnealingLR") {
        schedule = LinearWarmup(warmup, factor,
                                CosineLr(base, q.at("T_max").get<std::int64_t>(), q.at("eta_min").get<double>()));
      } else {
        schedule = LinearWarmup(warmup, factor,
                                StepLr(base, q.at("step_size").get<std::int64_t>(), q.at("gamma").get<double>()));
      }
    }
    ++seen;
    const auto& lrs = c.at("lrs");
    for (std::size_t t = 0; t < lrs.size(); ++t) {
      CAPTURE(t);
      const double got = schedule.learning_rate(static_cast<std::int64_t>(t));
      // torch's chained (recursive) rates carry a few roundings per step: compare against the base rate.
      CHECK(std::abs(got - lrs[t].get<double>()) <= 1e-12 * base);
      if (c.contains("closed_form")) CHECK(rel_close(got, c.at("closed_form")[t].get<double>(), 1e-12));
    }
  }
  CHECK(seen == 7);
}

TEST_CASE("clip_grad_norm and clip_grad_value match torch.nn.utils") {
  int seen = 0;
  for (const auto& c : torch_reference().at("clipping")) {
    const std::string name = c.at("name").get<std::string>();
    CAPTURE(name);
    VectorX<double> g = vec_of<double>(c.at("grads"));
    VectorX<float> gf = g.cast<float>();
    const VectorX<double> expected = vec_of<double>(c.at("clipped"));
    if (c.at("kind").get<std::string>() == "norm") {
      const double p =
          c.at("norm_type").is_string() ? std::numeric_limits<double>::infinity() : c.at("norm_type").get<double>();
      const double max_norm = c.at("max_norm").get<double>();
      const double total = clip_grad_norm(g, max_norm, p);
      CHECK(rel_close(total, c.at("total_norm").get<double>(), 1e-12));
      const double total_float = clip_grad_norm(gf, max_norm, p);
      CHECK(rel_close(total_float, c.at("total_norm").get<double>(), 1e-6));
    } else {
      clip_grad_value(g, c.at("clip_value").get<double>());
      clip_grad_value(gf, c.at("clip_value").get<double>());
    }
    CHECK(max_rel_error(g, expected) < 1e-12);
    CHECK(max_rel_error(gf, expected) < 1e-6);
    ++seen;
  }
  CHECK(seen == 7);
}

// ---------------------------------------------------------------------------------------------------------
// Schedules: closed forms, shifts, type erasure.

TEST_CASE("Schedules: closed forms at any step, warm-up shift, LrSchedule") {
  CHECK(ConstantLr(0.3).learning_rate(123456789) == 0.3);
  const StepLr step(0.1, 3, 0.5);
  CHECK(step.learning_rate(2) == 0.1);
  CHECK(step.learning_rate(3) == 0.05);
  CHECK(step.learning_rate(30) == doctest::Approx(0.1 * std::pow(0.5, 10)).epsilon(1e-15));

  const CosineLr cosine(0.1, 10, 0.01);
  CHECK(cosine.learning_rate(0) == doctest::Approx(0.1).epsilon(1e-15));
  CHECK(cosine.learning_rate(5) == doctest::Approx(0.055).epsilon(1e-15));  // halfway: (0.1 + 0.01) / 2
  CHECK(cosine.learning_rate(10) == 0.01);
  CHECK(cosine.learning_rate(11) == 0.01);  // held at min_lr after the schedule (torch's would turn back up)
  CHECK(cosine.learning_rate(1000000) == 0.01);

  // Warm-up of 4 steps from 0 to the inner schedule's first rate, then the inner schedule from its step 0.
  const LinearWarmup warm(4, 0.0, cosine);
  CHECK(warm.learning_rate(0) == 0.0);
  CHECK(warm.learning_rate(2) == doctest::Approx(0.05).epsilon(1e-15));
  for (std::int64_t t = 4; t < 20; ++t) CHECK(warm.learning_rate(t) == cosine.learning_rate(t - 4));
  const LinearWarmup none(0, 0.5, step);
  for (std::int64_t t = 0; t < 10; ++t) CHECK(none.learning_rate(t) == step.learning_rate(t));

  // Type erasure: same numbers, nesting, plain functions, copies.
  LrSchedule erased = warm;
  for (std::int64_t t = 0; t < 20; ++t) CHECK(erased.learning_rate(t) == warm.learning_rate(t));
  const LinearWarmup<LrSchedule> nested(2, 0.5, erased);
  CHECK(nested.learning_rate(2) == erased.learning_rate(0));
  const LrSchedule fn(std::function<double(std::int64_t)>([](std::int64_t t) { return 1.0 / double(t + 1); }));
  CHECK(fn.learning_rate(3) == 0.25);
  const LrSchedule copy = fn;
  CHECK(copy.learning_rate(1) == 0.5);
  CHECK(static_cast<bool>(copy));
  CHECK_FALSE(static_cast<bool>(LrSchedule()));
}

TEST_CASE("Schedules: bad input") {
  KSHOT_CHECK_THROWS_WITH_ALL(ConstantLr(-0.1), std::invalid_argument, "kshot::ConstantLr::ConstantLr()",
                              "base_lr must be finite and >= 0, got -0.1");
  KSHOT_CHECK_THROWS_WITH_ALL(ConstantLr(0.1).learning_rate(-1), std::invalid_argument,
                              "kshot::ConstantLr::learning_rate()", "step must be >= 0, got -1");
  KSHOT_CHECK_THROWS_WITH_ALL(StepLr(0.1, 0), std::invalid_argument, "kshot::StepLr::StepLr()",
                              "step_size must be >= 1, got 0");
  KSHOT_CHECK_THROWS_WITH_ALL(StepLr(0.1, 2, -0.5), std::invalid_argument, "gamma must be finite and >= 0, got -0.5");
  KSHOT_CHECK_THROWS_WITH_ALL(StepLr(0.1, 1, 10.0).learning_rate(1000), std::invalid_argument,
                              "kshot::StepLr::learning_rate()", "the rate overflows at step 1000");
  KSHOT_CHECK_THROWS_WITH_ALL(CosineLr(0.1, 0), std::invalid_argument, "kshot::CosineLr::CosineLr()",
                              "total_steps must be >= 1, got 0");
  KSHOT_CHECK_THROWS_WITH_ALL(CosineLr(0.1, 5, std::nan("")), std::invalid_argument, "min_lr must be finite");
  KSHOT_CHECK_THROWS_WITH_ALL(LinearWarmup(3, 1.5, ConstantLr(0.1)), std::invalid_argument,
                              "kshot::LinearWarmup::LinearWarmup()", "start_factor must be in [0, 1], got 1.5");
  KSHOT_CHECK_THROWS_WITH_ALL(LinearWarmup(-1, 0.5, ConstantLr(0.1)), std::invalid_argument,
                              "warmup_steps must be >= 0, got -1");
  StepLr changed(0.1, 2);
  changed.step_size = 0;  // public members are checked at every call
  KSHOT_CHECK_THROWS_WITH_ALL(changed.learning_rate(3), std::invalid_argument, "kshot::StepLr::learning_rate()",
                              "step_size must be >= 1, got 0");
  KSHOT_CHECK_THROWS_WITH_ALL(LrSchedule().learning_rate(0), std::invalid_argument,
                              "kshot::LrSchedule::learning_rate()", "the schedule is empty");
  const LrSchedule negative(std::function<double(std::int64_t)>([](std::int64_t) { return -1.0; }));
  KSHOT_CHECK_THROWS_WITH_ALL(negative.learning_rate(4), std::invalid_argument,
                              "the schedule returned -1 at step 4; a rate must be finite and >= 0");
}

// ---------------------------------------------------------------------------------------------------------
// Clipping beyond torch's cases.

TEST_CASE_TEMPLATE("clip_grad_norm: coefficient, degenerate and non-finite gradients", T, float, double) {
  SUBCASE("a 3-4-5 vector clipped to norm 1") {
    VectorX<T> g = vec<T>({3, -4});
    const double total = clip_grad_norm(g, 1.0);
    CHECK(total == doctest::Approx(5.0).epsilon(1e-7));
    CHECK(static_cast<double>(g[0]) == doctest::Approx(3.0 / (5.0 + 1e-6)).epsilon(1e-6));
    CHECK(static_cast<double>(g[1]) == doctest::Approx(-4.0 / (5.0 + 1e-6)).epsilon(1e-6));
    VectorX<T> h = vec<T>({3, -4});
    CHECK(clip_grad_norm(h, 1.0, std::numeric_limits<double>::infinity()) == 4.0);
    CHECK(clip_grad_norm(h, 1e9, 1.0) == doctest::Approx(7.0 / (4.0 + 1e-6)).epsilon(1e-6));
  }
  SUBCASE("zero gradients and an empty vector") {
    VectorX<T> g = VectorX<T>::Zero(4);
    CHECK(clip_grad_norm(g, 1.0) == 0.0);
    CHECK(g.isZero(0));
    VectorX<T> empty;
    CHECK(clip_grad_norm(empty, 1.0) == 0.0);
    VectorX<T> unclipped = vec<T>({0.1, 0.2});
    const VectorX<T> before = unclipped;
    clip_grad_norm(unclipped, std::numeric_limits<double>::infinity());  // measures only
    CHECK(same_bits(unclipped, before));
  }
  SUBCASE("a segment of a larger vector binds without a copy") {
    VectorX<T> all = vec<T>({100, 3, -4, 100});
    CHECK(clip_grad_norm(all.segment(1, 2), 1.0) == doctest::Approx(5.0));
    CHECK(all[0] == T(100));
    CHECK(all[3] == T(100));
    CHECK(std::abs(static_cast<double>(all[1]) - 0.6) < 1e-6);
  }
  SUBCASE("non-finite gradients throw by default, or scale as torch does when asked") {
    VectorX<T> g = vec<T>({1, std::numeric_limits<double>::infinity(), 2});
    const VectorX<T> before = g;
    KSHOT_CHECK_THROWS_WITH_ALL(clip_grad_norm(g, 1.0), std::invalid_argument, "kshot::clip_grad_norm()",
                                "the 2-norm of grads is not finite (inf)", "at index 1", "error_if_nonfinite = false");
    CHECK(same_bits(g, before));
    CHECK(std::isinf(clip_grad_norm(g, 1.0, 2.0, false)));  // coefficient 0: finite entries become 0
    CHECK(g[0] == T(0));
    CHECK(std::isnan(g[1]));  // inf * 0
    VectorX<T> n = vec<T>({1, std::nan(""), 2});
    CHECK(std::isnan(clip_grad_norm(n, 1.0, std::numeric_limits<double>::infinity(), false)));
    CHECK(std::isnan(n[0]));
  }
  SUBCASE("bad arguments") {
    VectorX<T> g = vec<T>({1, 2});
    KSHOT_CHECK_THROWS_WITH_ALL(clip_grad_norm(g, -1.0), std::invalid_argument, "kshot::clip_grad_norm()",
                                "max_norm must be >= 0 (+inf allowed), got -1");
    KSHOT_CHECK_THROWS_WITH_ALL(clip_grad_norm(g, 1.0, 0.0), std::invalid_argument, "norm_type must be > 0", "got 0");
    KSHOT_CHECK_THROWS_WITH_ALL(clip_grad_norm(g, 1.0, std::nan("")), std::invalid_argument, "norm_type must be > 0");
    KSHOT_CHECK_THROWS_WITH_ALL(clip_grad_value(g, -0.5), std::invalid_argument, "kshot::clip_grad_value()",
                                "clip_value must be >= 0 (+inf allowed), got -0.5");
    VectorX<T> bad = vec<T>({1, std::nan("")});
    KSHOT_CHECK_THROWS_WITH_ALL(clip_grad_value(bad, 0.5), std::invalid_argument, "grads has a non-finite value",
                                "at index 1");
    CHECK(bad[0] == T(1));
    VectorX<T> inf = vec<T>({-std::numeric_limits<double>::infinity(), 3, std::nan("")});
    clip_grad_value(inf, 0.5, false);
    CHECK(inf[0] == T(-0.5));
    CHECK(inf[1] == T(0.5));
    CHECK(std::isnan(inf[2]));
  }
}

TEST_CASE("clip_grad_norm: finite entries whose squares overflow give a finite norm") {
  VectorX<double> g = vec<double>({3e200, -4e200});
  const double total = clip_grad_norm(g, 1.0);
  CHECK(total == doctest::Approx(5e200).epsilon(1e-14));
  CHECK(g[0] == doctest::Approx(0.6).epsilon(1e-14));
  CHECK(g[1] == doctest::Approx(-0.8).epsilon(1e-14));
  VectorX<double> h = vec<double>({3e200, -4e200});
  CHECK(clip_grad_norm(h, 1.0, 3.0) == doctest::Approx(std::cbrt(91.0) * 1e200).epsilon(1e-13));
}

// ---------------------------------------------------------------------------------------------------------
// Bad input to the optimizers.

TEST_CASE("Sgd: bad hyperparameters and shapes throw and change nothing") {
  VectorX<double> p = vec<double>({1, 2, 3});
  const VectorX<double> g = vec<double>({0.1, 0.2, 0.3});
  const VectorX<double> before = p;
  auto bad = [&](Sgd<double> opt, const char* expected) {
    KSHOT_CHECK_THROWS_WITH_ALL(opt.step(p, g), std::invalid_argument, "kshot::Sgd::step()", expected);
    CHECK(same_bits(p, before));
    CHECK(opt.steps() == 0);
  };
  bad(Sgd<double>(-0.1), "lr must be finite and >= 0, got -0.1");
  bad(Sgd<double>(std::numeric_limits<double>::infinity()), "lr must be finite and >= 0, got inf");
  bad(Sgd<double>(0.1, -0.5), "momentum must be finite and >= 0, got -0.5");
  bad(Sgd<double>(0.1, 0.9, 1.5), "dampening must be in [0, 1], got 1.5");
  bad(Sgd<double>(0.1, 0.0, 0.0, -1.0), "weight_decay must be finite and >= 0, got -1");
  bad(Sgd<double>(0.1, 0.0, 0.0, 0.0, true), "nesterov requires momentum > 0 and dampening == 0, got momentum 0");
  bad(Sgd<double>(0.1, 0.9, 0.1, 0.0, true),
      "nesterov requires momentum > 0 and dampening == 0, got momentum 0.9 and dampening 0.1");

  Sgd<double> opt(0.1, 0.9);
  KSHOT_CHECK_THROWS_WITH_ALL(opt.step(p, vec<double>({1, 2})), std::invalid_argument, "kshot::Sgd::step()",
                              "grads has 2 entries but params has 3");
  KSHOT_CHECK_THROWS_WITH_ALL(opt.step(p, g, vec<double>({1})), std::invalid_argument,
                              "lr_scale has 1 entries but params has 3");
  KSHOT_CHECK_THROWS_WITH_ALL(opt.step(p, g, vec<double>({1, std::nan(""), 1})), std::invalid_argument,
                              "lr_scale has a non-finite value (nan) at index 1");
  KSHOT_CHECK_THROWS_WITH_ALL(opt.step(p, vec<double>({0, 0, std::numeric_limits<double>::infinity()})),
                              std::invalid_argument, "grads has a non-finite value (inf) at index 2");
  VectorX<double> nan_params = vec<double>({std::nan(""), 0, 0});
  KSHOT_CHECK_THROWS_WITH_ALL(opt.step(nan_params, g), std::invalid_argument,
                              "params has a non-finite value (nan) at index 0");
  CHECK(same_bits(p, before));
  CHECK(opt.steps() == 0);
  CHECK(opt.num_parameters() == -1);

  opt.step(p, g);
  VectorX<double> other = vec<double>({1, 2});
  KSHOT_CHECK_THROWS_WITH_ALL(opt.step(other, vec<double>({1, 1})), std::invalid_argument, "kshot::Sgd::step()",
                              "params has 2 entries but the optimizer's state is for 3 parameters", "reset()");
  opt.reset();
  CHECK(opt.steps() == 0);
  CHECK(opt.num_parameters() == -1);
  opt.step(other, vec<double>({1, 1}));  // a new model after reset()
  CHECK(opt.num_parameters() == 2);

  KSHOT_CHECK_THROWS_WITH_ALL(opt.set_state(-1, VectorX<double>()), std::invalid_argument, "kshot::Sgd::set_state()",
                              "steps must be >= 0, got -1");
  KSHOT_CHECK_THROWS_WITH_ALL(opt.set_state(3, vec<double>({1, std::nan("")})), std::invalid_argument,
                              "state has a non-finite value (nan) at index 1");
}

TEST_CASE_TEMPLATE("Adam and AdamW: bad hyperparameters and shapes throw and change nothing", T, float, double) {
  VectorX<T> p = vec<T>({1, 2, 3});
  const VectorX<T> g = vec<T>({0.1, 0.2, 0.3});
  const VectorX<T> before = p;
  auto check_adam = [&](auto opt, const char* where, const char* expected) {
    KSHOT_CHECK_THROWS_WITH_ALL(opt.step(p, g), std::invalid_argument, where, expected);
    CHECK(same_bits(p, before));
    CHECK(opt.steps() == 0);
  };
  for (int w = 0; w < 2; ++w) {
    const bool decoupled = w == 1;
    const char* where = decoupled ? "kshot::AdamW::step()" : "kshot::Adam::step()";
    auto bad = [&](double lr, double b1, double b2, double eps, double wd, const char* expected) {
      if (decoupled) {
        check_adam(AdamW<T>(lr, b1, b2, eps, wd), where, expected);
      } else {
        check_adam(Adam<T>(lr, b1, b2, eps, wd), where, expected);
      }
    };
    bad(-1e-3, 0.9, 0.999, 1e-8, 0.0, "lr must be finite and >= 0, got -0.001");
    bad(std::nan(""), 0.9, 0.999, 1e-8, 0.0, "lr must be finite and >= 0, got nan");
    bad(1e-3, 1.0, 0.999, 1e-8, 0.0, "beta1 must be in [0, 1), got 1");
    bad(1e-3, -0.1, 0.999, 1e-8, 0.0, "beta1 must be in [0, 1), got -0.1");
    bad(1e-3, 0.9, 1.0, 1e-8, 0.0, "beta2 must be in [0, 1), got 1");
    bad(1e-3, 0.9, 0.999, 0.0, 0.0, "eps must be finite and > 0, got 0");
    bad(1e-3, 0.9, 0.999, 1e-8, -0.01, "weight_decay must be finite and >= 0, got -0.01");
  }
  Adam<T> opt;
  KSHOT_CHECK_THROWS_WITH_ALL(opt.step(p, vec<T>({1, 2})), std::invalid_argument, "kshot::Adam::step()",
                              "grads has 2 entries but params has 3");
  KSHOT_CHECK_THROWS_WITH_ALL(opt.step(p, vec<T>({1, std::nan(""), 2})), std::invalid_argument,
                              "grads has a non-finite value (nan) at index 1");
  opt.step(p, g);
  VectorX<T> longer = vec<T>({1, 2, 3, 4});
  KSHOT_CHECK_THROWS_WITH_ALL(opt.step(longer, vec<T>({1, 1, 1, 1})), std::invalid_argument,
                              "params has 4 entries but the optimizer's state is for 3 parameters");
  AdamW<T> w;
  KSHOT_CHECK_THROWS_WITH_ALL(w.step(p, g, vec<T>({1, 1})), std::invalid_argument, "kshot::AdamW::step()",
                              "lr_scale has 2 entries but params has 3");

  // set_state: layout checks.
  Adam<T> restore;
  KSHOT_CHECK_THROWS_WITH_ALL(restore.set_state(1, vec<T>({1, 2, 3})), std::invalid_argument,
                              "kshot::Adam::set_state()", "state has 3 entries, not a multiple of 2",
                              "amsgrad is false: [m, v]");
  KSHOT_CHECK_THROWS_WITH_ALL(restore.set_state(0, vec<T>({1, 2})), std::invalid_argument,
                              "state has 2 entries but steps is 0");
  KSHOT_CHECK_THROWS_WITH_ALL(restore.set_state(2, VectorX<T>()), std::invalid_argument,
                              "state has 0 entries but steps is 2");
  KSHOT_CHECK_THROWS_WITH_ALL(restore.set_state(2, vec<T>({1, -2})), std::invalid_argument,
                              "state has a negative second moment (-2)");
  restore.amsgrad = true;
  KSHOT_CHECK_THROWS_WITH_ALL(restore.set_state(2, vec<T>({1, 2, 3, 4})), std::invalid_argument, "not a multiple of 3",
                              "amsgrad is true: [m, v, v_max]");
  CHECK(restore.num_parameters() == -1);
  CHECK(restore.steps() == 0);
}

// ---------------------------------------------------------------------------------------------------------
// Checkpoints, reset, AMSGrad switched on late.

namespace {

/// Runs `total` steps straight, and `split` steps, a checkpoint into a fresh optimizer, then the rest;
/// checks that parameters and state agree bitwise.
template <class Optimizer, class Scalar>
void check_round_trip(Optimizer fresh, Index n, int split, int total) {
  Optimizer straight = fresh;
  Optimizer first = fresh;
  VectorX<Scalar> p = random_vector<Scalar>(n, 1);
  VectorX<Scalar> q = p;
  const VectorX<Scalar> scale = random_vector<Scalar>(n, 99).cwiseAbs();
  for (int t = 0; t < total; ++t) {
    const VectorX<Scalar> g = random_vector<Scalar>(n, 10 + static_cast<std::uint64_t>(t));
    straight.step(p, g, scale);
  }
  for (int t = 0; t < split; ++t) first.step(q, random_vector<Scalar>(n, 10 + static_cast<std::uint64_t>(t)), scale);
  const std::int64_t steps = first.steps();
  const VectorX<Scalar> state = first.state();
  CHECK(state.size() == first.state_size());
  Optimizer second = fresh;
  second.set_state(steps, state);
  CHECK(second.steps() == split);
  CHECK(same_bits(second.state(), state));
  for (int t = split; t < total; ++t)
    second.step(q, random_vector<Scalar>(n, 10 + static_cast<std::uint64_t>(t)), scale);
  CHECK(same_bits(p, q));
  CHECK(same_bits(straight.state(), second.state()));
  CHECK(second.steps() == total);
}

}  // namespace

TEST_CASE_TEMPLATE("Checkpoint: state() and set_state() continue bitwise", T, float, double) {
  check_round_trip<Sgd<T>, T>(Sgd<T>(0.1, 0.9, 0.1, 0.01), 37, 3, 6);
  check_round_trip<Sgd<T>, T>(Sgd<T>(0.1, 0.9, 0.0, 0.01, true), 37, 1, 4);
  check_round_trip<Sgd<T>, T>(Sgd<T>(0.1), 37, 2, 4);  // no momentum: an empty state
  check_round_trip<Adam<T>, T>(Adam<T>(0.01, 0.9, 0.99, 1e-8, 0.1), 37, 3, 6);
  check_round_trip<Adam<T>, T>(Adam<T>(0.01, 0.9, 0.5, 1e-8, 0.0, true), 37, 2, 5);
  check_round_trip<AdamW<T>, T>(AdamW<T>(0.01, 0.8, 0.9, 1e-6, 0.2, true), 37, 4, 7);
  check_round_trip<AdamW<T>, T>(AdamW<T>(), 37, 1, 3);
}

TEST_CASE("Checkpoint: the layouts are documented ones") {
  VectorX<double> p = vec<double>({1, 2});
  Adam<double> adam(0.1, 0.9, 0.99, 1e-8, 0.0, true);
  adam.step(p, vec<double>({2, -1}));
  const VectorX<double> s = adam.state();  // [m, v, v_max]: m = 0.1 g, v = v_max = 0.01 g^2
  REQUIRE(s.size() == 6);
  CHECK(s[0] == doctest::Approx(0.2).epsilon(1e-15));
  CHECK(s[1] == doctest::Approx(-0.1).epsilon(1e-15));
  CHECK(s[2] == doctest::Approx(0.04).epsilon(1e-14));
  CHECK(s[3] == doctest::Approx(0.01).epsilon(1e-14));
  CHECK(s[4] == s[2]);
  CHECK(s[5] == s[3]);
  adam.amsgrad = false;
  CHECK(adam.state_size() == 4);
  CHECK(same_bits(adam.state(), s.head(4).eval()));
}

TEST_CASE("reset() starts over like a fresh optimizer; AMSGrad switched on late starts its maximum then") {
  const VectorX<double> g1 = random_vector<double>(5, 3), g2 = random_vector<double>(5, 4);
  VectorX<double> p = random_vector<double>(5, 5), q = p;
  Adam<double> used(0.01), fresh(0.01);
  used.step(p, g1);
  used.step(p, g2);
  used.reset();
  p = q;
  used.step(p, g1);
  fresh.step(q, g1);
  CHECK(same_bits(p, q));
  CHECK(same_bits(used.state(), fresh.state()));

  // AMSGrad from step 2 on: v_max reads as zeros until the step, then equals v (the maximum starts there).
  Adam<double> late(0.01);
  VectorX<double> r = random_vector<double>(5, 5);
  late.step(r, g1);
  late.amsgrad = true;
  const VectorX<double> before = late.state();
  REQUIRE(before.size() == 15);
  CHECK(before.tail(5).isZero(0));
  late.step(r, g2);
  const VectorX<double> after = late.state();
  CHECK(same_bits(after.tail(5).eval(), after.segment(5, 5).eval()));

  // Sgd: a checkpoint before any momentum step is empty, and the buffer starts as the gradient afterwards.
  Sgd<double> sgd(0.1);
  VectorX<double> s = vec<double>({1, 1});
  sgd.step(s, vec<double>({1, 1}));
  CHECK(sgd.state().size() == 0);
  sgd.momentum = 0.5;
  sgd.step(s, vec<double>({2, 4}));
  CHECK(same_bits(sgd.state(), vec<double>({2, 4})));
}

// ---------------------------------------------------------------------------------------------------------
// Float against double, and thread counts.

TEST_CASE("Float optimizers track double ones") {
  const Index n = 200;
  VectorX<double> pd = random_vector<double>(n, 21);
  VectorX<float> pf = pd.cast<float>();
  Sgd<double> sd(0.05, 0.9, 0.0, 1e-3, true);
  Sgd<float> sf(0.05, 0.9, 0.0, 1e-3, true);
  Adam<double> ad(0.01, 0.9, 0.999, 1e-8, 0.01, true);
  Adam<float> af(0.01, 0.9, 0.999, 1e-8, 0.01, true);
  AdamW<double> wd(0.01);
  AdamW<float> wf(0.01);
  VectorX<double> qd = pd, rd = pd;
  VectorX<float> qf = pf, rf = pf;
  for (int t = 0; t < 20; ++t) {
    const VectorX<double> g = random_vector<double>(n, 500 + static_cast<std::uint64_t>(t));
    const VectorX<float> gf = g.cast<float>();
    sd.step(pd, g);
    sf.step(pf, gf);
    ad.step(qd, g);
    af.step(qf, gf);
    wd.step(rd, g);
    wf.step(rf, gf);
  }
  CHECK(max_rel_error(pf, pd) < 1e-5);
  CHECK(max_rel_error(qf, qd) < 1e-5);
  CHECK(max_rel_error(rf, rd) < 1e-5);
}

TEST_CASE_TEMPLATE("Optimizers and clipping are bitwise identical at 1 and 2 threads", T, float, double) {
  const Index n = Index(1) << 20;  // 64 chunks of 16384: the parallel path runs
  {
    ThreadCountGuard two(2);
    if (max_threads() > 1) CHECK(detail::worth_parallel(detail::elementwise_chunks(n), static_cast<double>(n)));
  }
  const VectorX<T> p0 = random_vector<T>(n, 1);
  const VectorX<T> scale = random_vector<T>(n, 2).cwiseAbs();
  auto run = [&](int threads) {
    ThreadCountGuard guard(threads);
    std::vector<VectorX<T>> out;
    VectorX<T> a = p0, b = p0, c = p0;
    Sgd<T> sgd(0.1, 0.9, 0.0, 0.01, true);
    Adam<T> adam(0.01, 0.9, 0.99, 1e-8, 0.01, true);
    AdamW<T> adamw(0.01);
    for (int t = 0; t < 3; ++t) {
      VectorX<T> g = random_vector<T>(n, 10 + static_cast<std::uint64_t>(t), 5.0);
      const double norm = clip_grad_norm(g, 1000.0);
      out.push_back(VectorX<T>::Constant(1, static_cast<T>(norm)));
      out.push_back(g);
      sgd.step(a, g, scale);
      adam.step(b, g, scale);
      adamw.step(c, g);
    }
    VectorX<T> g = random_vector<T>(n, 77);
    out.push_back(VectorX<T>::Constant(1, static_cast<T>(clip_grad_norm(g, 10.0, 3.0))));
    out.push_back(VectorX<T>::Constant(1, static_cast<T>(clip_grad_norm(g, 1.0, 1.0))));
    out.push_back(
        VectorX<T>::Constant(1, static_cast<T>(clip_grad_norm(g, 0.5, std::numeric_limits<double>::infinity()))));
    clip_grad_value(g, 1e-4);
    out.push_back(g);
    out.push_back(a);
    out.push_back(b);
    out.push_back(c);
    out.push_back(adam.state());
    return out;
  };
  const auto one = run(1);
  const auto two = run(2);
  REQUIRE(one.size() == two.size());
  for (std::size_t k = 0; k < one.size(); ++k) {
    CAPTURE(k);
    CHECK(same_bits(one[k], two[k]));
  }
}

// ---------------------------------------------------------------------------------------------------------
// The training-loop example of docs/optimizers.md, verbatim: it must compile and converge.

TEST_CASE("docs/optimizers.md example: AdamW with warm-up, cosine decay and clipping minimises a quadratic") {
  // Minimise f(w) = 0.5 * ||w - target||^2, whose gradient is w - target.
  const Eigen::Index n = 10;
  const Eigen::VectorXf target = Eigen::VectorXf::LinSpaced(n, -1.0f, 1.0f);
  Eigen::VectorXf params = Eigen::VectorXf::Zero(n);  // a model's flat parameter vector
  Eigen::VectorXf grads(n);                           // and its gradient

  kshot::AdamW<float> opt(/*lr=*/0.1, 0.9, 0.999, 1e-8, /*weight_decay=*/0.0);
  const kshot::LrSchedule schedule =
      kshot::LinearWarmup(/*warmup_steps=*/20, /*start_factor=*/0.1, kshot::CosineLr(0.1, /*total_steps=*/480));

  for (int it = 0; it < 500; ++it) {
    grads = params - target;                         // backward pass
    kshot::clip_grad_norm(grads, /*max_norm=*/1.0);  // returns the norm before clipping
    opt.lr = schedule.learning_rate(opt.steps());    // the rate of this step
    opt.step(params, grads);
  }

  // Checkpoint: save steps() and state(), restore them into a fresh optimizer with the same settings.
  const std::int64_t steps = opt.steps();
  const Eigen::VectorXf state = opt.state();
  kshot::AdamW<float> resumed(0.1, 0.9, 0.999, 1e-8, 0.0);
  resumed.set_state(steps, state);

  CHECK((params - target).norm() < 1e-3f);
  CHECK(resumed.steps() == 500);
}
