// SPDX-License-Identifier: MIT
// Meta-learners: a second task with the same shapes allocates nothing (MAML second and first order, ANIL,
// Meta-SGD, Reptile with SGD and Adam, single tasks and meta-batches). Support and query sets have the same
// row count: Sequential reallocates its output matrix when consecutive forward() calls change the row count.
#include "noalloc/alloc_counter.hpp"
#include "test_util.hpp"

#include <kshot/meta/maml.hpp>
#include <kshot/meta/meta_sgd.hpp>
#include <kshot/meta/reptile.hpp>
#include <kshot/nn/adam.hpp>
#include <kshot/nn/sequential.hpp>

#include <doctest/doctest.h>

#include <vector>

using namespace kshot;
using namespace kshot::test;

TEST_CASE("noalloc: Maml, ANIL, MetaSgd and Reptile allocate nothing after the first task") {
  Sequential<float> model = make_mlp<float>({1, 40, 40, 1});
  std::vector<MetaTask<float, MseLoss<float>>> tasks(3);
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    tasks[i].x_support = random_matrix<float>(10, 1, 10 + i);
    tasks[i].y_support = random_matrix<float>(10, 1, 20 + i);
    tasks[i].x_query = random_matrix<float>(10, 1, 30 + i);
    tasks[i].y_query = random_matrix<float>(10, 1, 40 + i);
  }
  const auto& t = tasks[0];
  VectorX<float> g(model.num_parameters()), ga(model.num_parameters());
  Maml<float> maml(0.01f, false, 3);
  check_second_call_allocates_nothing(
      [&] { maml.meta_gradient(model, t.x_support, t.y_support, t.x_query, t.y_query, g); });
  check_second_call_allocates_nothing([&] { maml.meta_gradient(model, tasks, g); });
  check_second_call_allocates_nothing([&] { maml.evaluate(model, t.x_support, t.y_support, t.x_query, t.y_query); });
  Maml<float> fomaml(0.01f, true, 2);
  check_second_call_allocates_nothing([&] { fomaml.meta_gradient(model, tasks, g); });
  auto anil = make_anil(model, 0.01, 2);
  check_second_call_allocates_nothing([&] { anil.adapt(model, t.x_support, t.y_support, g); });
  MetaSgd<float> meta(model, 0.01, 2);
  check_second_call_allocates_nothing([&] { meta.meta_gradient(model, tasks, g, ga); });
  Reptile<float> reptile(0.01, 3, 0.1);
  check_second_call_allocates_nothing([&] { reptile.step(model, tasks); });
  Reptile<float, MseLoss<float>, Adam<float>> reptile_adam(0.01, 3, 0.1);
  check_second_call_allocates_nothing([&] { reptile_adam.meta_gradient(model, tasks, g); });
}

TEST_CASE("noalloc: a task-parallel meta-batch (2 threads) allocates nothing after the first call") {
  Sequential<float> model = make_mlp<float>({1, 40, 40, 1});
  std::vector<MetaTask<float, MseLoss<float>>> tasks(25);
  for (std::size_t i = 0; i < tasks.size(); ++i) {
    tasks[i].x_support = random_matrix<float>(10, 1, 10 + i);
    tasks[i].y_support = random_matrix<float>(10, 1, 40 + i);
    tasks[i].x_query = random_matrix<float>(10, 1, 70 + i);
    tasks[i].y_query = random_matrix<float>(10, 1, 100 + i);
  }
  VectorX<float> g(model.num_parameters()), ga(model.num_parameters());
  Maml<float> maml(0.01f, false, 1);
  MetaSgd<float> meta(model, 0.01, 1);
  ThreadCountGuard threads(2);
  maml.meta_gradient(model, tasks, g);
  meta.meta_gradient(model, tasks, g, ga);
  long news = 0;
  {
    AllocationGuard guard;
    maml.meta_gradient(model, tasks, g);
    meta.meta_gradient(model, tasks, g, ga);
    news = guard.news();
  }
  CHECK(news == 0);
}
