// SPDX-License-Identifier: MIT
/**
 * @file examples/maml_sine.cpp
 * @brief The sine-wave regression experiment of Finn et al. 2017 (MAML, section 5.1): meta-train an MLP so
 * that one or a few SGD steps on K = 10 points fit a new sine wave, and compare it with the same MLP
 * pre-trained on all tasks.
 *
 * Tasks: y = A sin(x - phi) with amplitude A ~ U[0.1, 5], phase phi ~ U[0, pi], inputs x ~ U[-5, 5].
 * Model: MLP 1-40-40-1 with ReLU. MAML: K = 10 support and 10 query points per task, one inner SGD step of
 * lr 0.01, meta-batches of 25 tasks, Adam with lr 1e-3 on the exact (second-order) meta-gradient. The
 * baseline ("pre-trained") is the same MLP trained by Adam (lr 1e-3) on the same number of steps, each on the
 * same 25 tasks x 20 points pooled into one regression. First-order MAML and Reptile get the same budget of
 * meta-iterations. Evaluation: 600 fresh tasks, K = 10 support points and 100 query points each; the mean
 * squared error on the query points after 0, 1 and 10 SGD steps (lr 0.01) on the support points, with a 95%
 * confidence interval.
 *
 * Usage: maml_sine [meta-iterations (default 8000)] [seed (default 1)] [threads (default 1)]
 *
 * The model is tiny (1761 parameters, batches of 10 to 500 rows), so the example runs on one thread unless told
 * otherwise; the results are bitwise identical for any thread count.
 */
#include <kshot/core/threads.hpp>
#include <kshot/eval/confidence.hpp>
#include <kshot/meta/maml.hpp>
#include <kshot/meta/reptile.hpp>
#include <kshot/meta/task_loss.hpp>
#include <kshot/nn/adam.hpp>
#include <kshot/nn/sequential.hpp>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

namespace {

using Scalar = float;
using Task = kshot::MetaTask<Scalar, kshot::MseLoss<Scalar>>;
using Clock = std::chrono::steady_clock;

constexpr kshot::Index kShots = 10;       // K, support points per task
constexpr kshot::Index kTrainQuery = 10;  // query points per task during meta-training
constexpr kshot::Index kEvalQuery = 100;  // query points per task during evaluation
constexpr kshot::Index kMetaBatch = 25;   // tasks per meta-iteration
constexpr int kEvalTasks = 600;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

/// Fills x (U[-5, 5]) and y = A sin(x - phi).
void fill_points(kshot::RandomStream& rng, Scalar amplitude, Scalar phase, kshot::RowMatrixX<Scalar>& x,
                 kshot::RowMatrixX<Scalar>& y) {
  for (kshot::Index i = 0; i < x.rows(); ++i) {
    x(i, 0) = rng.uniform<Scalar>(-5, 5);
    y(i, 0) = amplitude * std::sin(x(i, 0) - phase);
  }
}

/// Task `index` of stream `seed`: a pure function of (seed, index), support and query from the same wave.
void sample_task(std::uint64_t seed, std::uint64_t index, Task& task) {
  kshot::RandomStream rng(seed, index);
  const Scalar amplitude = rng.uniform<Scalar>(Scalar(0.1), Scalar(5));
  const Scalar phase = rng.uniform<Scalar>(0, Scalar(3.14159265358979));
  fill_points(rng, amplitude, phase, task.x_support, task.y_support);
  fill_points(rng, amplitude, phase, task.x_query, task.y_query);
}

void resize(Task& task, kshot::Index support, kshot::Index query) {
  task.x_support.resize(support, 1);
  task.y_support.resize(support, 1);
  task.x_query.resize(query, 1);
  task.y_query.resize(query, 1);
}

/// Meta-training data of iteration `it`: tasks it * 25 ... it * 25 + 24 of the training stream.
void sample_batch(std::uint64_t seed, long it, std::vector<Task>& batch) {
  for (std::size_t j = 0; j < batch.size(); ++j)
    sample_task(seed, static_cast<std::uint64_t>(it) * batch.size() + j, batch[j]);
}

struct Row {
  std::string name;
  kshot::MeanInterval mse[3];
  double train_seconds = 0;
};

/// Query MSE after 0, 1 and 10 SGD steps (lr 0.01) on K = 10 support points, over 600 fresh tasks.
Row evaluate(const std::string& name, kshot::Sequential<Scalar>& model, std::uint64_t seed, double train_seconds) {
  kshot::Maml<Scalar> adapter(0.01);
  Task task;
  resize(task, kShots, kEvalQuery);
  const kshot::Index steps[3] = {0, 1, 10};
  std::vector<double> values[3];
  for (int t = 0; t < kEvalTasks; ++t) {
    sample_task(seed, static_cast<std::uint64_t>(t), task);
    for (int s = 0; s < 3; ++s) {
      adapter.inner_steps = steps[s];
      values[s].push_back(adapter.evaluate(model, task.x_support, task.y_support, task.x_query, task.y_query));
    }
  }
  Row row;
  row.name = name;
  for (int s = 0; s < 3; ++s) row.mse[s] = kshot::mean_ci95(values[s]);
  row.train_seconds = train_seconds;
  return row;
}

void progress(const char* name, const char* what, long it, long iterations, double loss, Clock::time_point start) {
  if (iterations < 4 || (it + 1) % (iterations / 4) == 0)
    std::printf("  %-12s iteration %6ld / %ld   %-28s %7.4f   %5.1f s\n", name, it + 1, iterations, what, loss,
                seconds_since(start));
}

/// MAML (second order, or first order) with Adam on the meta-gradient.
double train_maml(kshot::Sequential<Scalar>& model, bool first_order, long iterations, std::uint64_t seed) {
  const auto start = Clock::now();
  kshot::Maml<Scalar> maml(0.01, first_order, 1);
  kshot::Adam<Scalar> meta_opt(1e-3);
  std::vector<Task> batch(kMetaBatch);
  for (Task& t : batch) resize(t, kShots, kTrainQuery);
  kshot::VectorX<Scalar> meta_grad(model.num_parameters());
  for (long it = 0; it < iterations; ++it) {
    sample_batch(seed, it, batch);
    const Scalar loss = maml.meta_gradient(model, batch, meta_grad);
    meta_opt.step(model.parameters(), meta_grad);
    progress(first_order ? "FOMAML" : "MAML", "query MSE after 1 step", it, iterations, loss, start);
  }
  return seconds_since(start);
}

/// Reptile: 5 inner SGD steps (lr 0.01) on each task's 20 points; the meta-gradient theta - mean theta' to Adam.
double train_reptile(kshot::Sequential<Scalar>& model, long iterations, std::uint64_t seed) {
  const auto start = Clock::now();
  kshot::Reptile<Scalar> reptile(0.01, 5, 0.1);  // outer_lr is step()'s; Adam takes the meta step here
  kshot::Adam<Scalar> meta_opt(1e-3);
  std::vector<Task> batch(kMetaBatch), all(kMetaBatch);
  for (Task& t : batch) resize(t, kShots, kTrainQuery);
  for (Task& t : all) resize(t, kShots + kTrainQuery, 0);
  kshot::VectorX<Scalar> meta_grad(model.num_parameters());
  for (long it = 0; it < iterations; ++it) {
    sample_batch(seed, it, batch);
    for (std::size_t j = 0; j < batch.size(); ++j) {  // Reptile trains on all of a task's points
      all[j].x_support << batch[j].x_support, batch[j].x_query;
      all[j].y_support << batch[j].y_support, batch[j].y_query;
    }
    const Scalar loss = reptile.meta_gradient(model, all, meta_grad);
    meta_opt.step(model.parameters(), meta_grad);
    progress("Reptile", "task MSE before adaptation", it, iterations, loss, start);
  }
  return seconds_since(start);
}

/// The baseline: plain regression on the pooled points of the same tasks, one Adam step per meta-iteration.
double train_pretrained(kshot::Sequential<Scalar>& model, long iterations, std::uint64_t seed) {
  const auto start = Clock::now();
  kshot::Adam<Scalar> opt(1e-3);
  kshot::MseLoss<Scalar> loss;
  std::vector<Task> batch(kMetaBatch);
  for (Task& t : batch) resize(t, kShots, kTrainQuery);
  const kshot::Index per_task = kShots + kTrainQuery, n = kMetaBatch * per_task;
  kshot::RowMatrixX<Scalar> x(n, 1), y(n, 1), dy(n, 1);
  for (long it = 0; it < iterations; ++it) {
    sample_batch(seed, it, batch);
    for (kshot::Index j = 0; j < kMetaBatch; ++j) {
      const Task& t = batch[static_cast<std::size_t>(j)];
      x.middleRows(j * per_task, per_task) << t.x_support, t.x_query;
      y.middleRows(j * per_task, per_task) << t.y_support, t.y_query;
    }
    model.zero_grad();
    const Scalar value = loss.evaluate(model.forward(x, false), y, dy);
    model.backward(dy);
    opt.step(model.parameters(), model.gradients());
    progress("pre-trained", "pooled regression MSE", it, iterations, value, start);
  }
  return seconds_since(start);
}

}  // namespace

int main(int argc, char** argv) try {
  const long iterations = argc > 1 ? std::atol(argv[1]) : 8000;
  const std::uint64_t seed = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1;
  const int threads = argc > 3 ? std::atoi(argv[3]) : 1;
  if (iterations < 1 || threads < 1) {
    std::fprintf(stderr, "usage: maml_sine [meta-iterations >= 1] [seed] [threads >= 1]\n");
    return 2;
  }
  kshot::set_num_threads(threads);
  const std::uint64_t train_seed = seed, eval_seed = seed + 1000003;  // disjoint task streams
  std::printf(
      "kshot: sine-wave regression (Finn et al. 2017), MLP 1-40-40-1 ReLU, K = %ld, %ld meta-iterations "
      "of %ld tasks, %d threads\n",
      static_cast<long>(kShots), iterations, static_cast<long>(kMetaBatch), kshot::max_threads());

  // Every method starts from the same initial parameters.
  const kshot::Sequential<Scalar> init =
      kshot::make_mlp<Scalar>({1, 40, 40, 1}, kshot::Activation::relu, kshot::Init::pytorch_default, seed);
  std::vector<Row> rows;
  {
    kshot::Sequential<Scalar> model = init;
    const double s = train_pretrained(model, iterations, train_seed);
    rows.push_back(evaluate("pre-trained", model, eval_seed, s));
  }
  {
    kshot::Sequential<Scalar> model = init;
    const double s = train_maml(model, false, iterations, train_seed);
    rows.push_back(evaluate("MAML", model, eval_seed, s));
  }
  {
    kshot::Sequential<Scalar> model = init;
    const double s = train_maml(model, true, iterations, train_seed);
    rows.push_back(evaluate("first-order MAML", model, eval_seed, s));
  }
  {
    kshot::Sequential<Scalar> model = init;
    const double s = train_reptile(model, iterations, train_seed);
    rows.push_back(evaluate("Reptile", model, eval_seed, s));
  }

  std::printf("\nquery MSE on %d new tasks after k SGD steps (lr 0.01) on K = %ld points, mean +- 95%% interval\n",
              kEvalTasks, static_cast<long>(kShots));
  std::printf("  %-18s %18s %18s %18s %10s\n", "method", "k = 0", "k = 1", "k = 10", "train s");
  for (const Row& r : rows)
    std::printf("  %-18s %9.3f +- %5.3f %9.3f +- %5.3f %9.3f +- %5.3f %10.1f\n", r.name.c_str(), r.mse[0].mean,
                r.mse[0].half_width, r.mse[1].mean, r.mse[1].half_width, r.mse[2].mean, r.mse[2].half_width,
                r.train_seconds);
  const Row& base = rows[0];
  const Row& maml = rows[1];
  const bool ok = maml.mse[1].upper() < base.mse[1].lower() && maml.mse[2].upper() < base.mse[2].lower();
  std::printf("\nMAML after 1 step: %.2fx lower MSE than pre-training; after 10 steps: %.2fx lower (%s)\n",
              base.mse[1].mean / maml.mse[1].mean, base.mse[2].mean / maml.mse[2].mean,
              ok ? "intervals disjoint" : "NOT separated");
  return ok ? 0 : 1;
} catch (const std::exception& e) {
  std::fprintf(stderr, "maml_sine: %s\n", e.what());
  return 1;
}
