// SPDX-License-Identifier: MIT
// A second optimizer step, clipping call or schedule lookup with the same sizes allocates nothing.
#include "noalloc/alloc_counter.hpp"
#include "test_util.hpp"

#include <kshot/nn/adam.hpp>
#include <kshot/nn/clip.hpp>
#include <kshot/nn/lr_schedule.hpp>
#include <kshot/nn/sgd.hpp>

#include <doctest/doctest.h>

using namespace kshot;
using namespace kshot::test;

TEST_CASE("Optimizers, clipping and schedules: a second call allocates nothing") {
  const Index n = 1000;
  VectorX<double> p = VectorX<double>::Constant(n, 0.5), g = VectorX<double>::Constant(n, 0.25);
  const VectorX<double> scale = VectorX<double>::Constant(n, 2.0);
  Sgd<double> sgd(0.1, 0.9, 0.0, 0.01, true);
  Adam<double> adam(0.01, 0.9, 0.999, 1e-8, 0.01, true);
  AdamW<double> adamw(0.01);
  const LrSchedule schedule = LinearWarmup(10, 0.1, CosineLr(0.1, 100));
  double sink = 0.0;
  check_second_call_allocates_nothing([&] {
    sgd.step(p, g);
    sgd.step(p, g, scale);
    adam.step(p, g);
    adam.step(p, g, scale);
    adamw.step(p, g);
    sink += clip_grad_norm(g, 1e9);
    sink += clip_grad_norm(g, 1e9, 3.0);
    clip_grad_value(g, 1e9);
    sink += schedule.learning_rate(adam.steps());
  });
  // After reset(), a model with fewer parameters reuses the storage.
  sgd.reset();
  adam.reset();
  VectorX<double> q = p.head(n / 2), h = g.head(n / 2);
  check_second_call_allocates_nothing([&] {
    sgd.reset();
    adam.reset();
    sgd.step(q, h);
    adam.step(q, h);
  });
  CHECK(sink > 0.0);
}
