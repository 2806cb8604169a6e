// SPDX-License-Identifier: MIT
// The two complete programs of docs/meta.md, compiled and run: a MAML meta-training loop on sine-wave tasks, and
// a user-defined task loss (Huber) used with exact second-order MAML.
#include <kshot/meta/maml.hpp>
#include <kshot/nn/adam.hpp>
#include <kshot/nn/sequential.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <vector>

// ---- docs/meta.md, "Example (real code)"
int sine_meta_batch() {
  using Task = kshot::MetaTask<float, kshot::MseLoss<float>>;
  kshot::Sequential<float> model = kshot::make_mlp<float>({1, 40, 40, 1});  // Linear-ReLU-Linear-ReLU-Linear
  kshot::Maml<float> maml(/*inner_lr=*/0.01, /*first_order=*/false, /*inner_steps=*/1);
  kshot::Adam<float> meta_opt(1e-3);
  kshot::VectorX<float> meta_grad(model.num_parameters());

  std::vector<Task> tasks(25);  // a meta-batch of 25 sine waves, 10 support and 10 query points each
  for (std::size_t iteration = 0; iteration < 100; ++iteration) {
    for (std::size_t t = 0; t < tasks.size(); ++t) {
      kshot::RandomStream rng(/*seed=*/7, iteration * tasks.size() + t);
      const float amplitude = rng.uniform<float>(0.1f, 5.0f), phase = rng.uniform<float>(0.0f, 3.14159f);
      Task& task = tasks[t];
      task.x_support.resize(10, 1);
      task.x_query.resize(10, 1);
      rng.fill_uniform(task.x_support, -5.0f, 5.0f);
      rng.fill_uniform(task.x_query, -5.0f, 5.0f);
      task.y_support = amplitude * (task.x_support.array() - phase).sin();
      task.y_query = amplitude * (task.x_query.array() - phase).sin();
    }
    maml.meta_gradient(model, tasks, meta_grad);  // mean over tasks of d L_query(θ_1) / dθ, exact
    meta_opt.step(model.parameters(), meta_grad);
  }

  // Adapt to a task: θ' after one SGD step on its support set (the model itself keeps θ), and the query loss.
  kshot::VectorX<float> adapted(model.num_parameters());
  maml.adapt(model, tasks[0].x_support, tasks[0].y_support, adapted);
  const float query_mse = maml.evaluate(model, tasks[0].x_support, tasks[0].y_support, tasks[0].x_query,
                                        tasks[0].y_query);
  return std::isfinite(query_mse) ? 0 : 1;
}
// ---- end

// ---- docs/meta.md, the Huber loss
struct HuberLoss {
  using Target = kshot::RowMatrixX<double>;            // owning type of one task's targets (MetaTask holds it)
  using TargetRef = kshot::ConstRowMatrixRef<double>;  // the view the algorithms pass; Target binds to it

  // Throws std::invalid_argument unless the targets fit an output of rows x cols.
  void check_target(TargetRef t, kshot::Index rows, kshot::Index cols, const char* where, const char* name) const {
    kshot::check_shape(t, rows, cols, where, name);
    kshot::check_finite(t, where, name);
  }
  // The value: mean over elements of r²/2 (|r| <= 1) or |r| - 1/2, r = y - t.
  double evaluate(kshot::ConstRowMatrixRef<double> y, TargetRef t) const {
    double sum = 0;
    for (kshot::Index i = 0; i < y.rows(); ++i)
      for (kshot::Index j = 0; j < y.cols(); ++j) {
        const double r = std::abs(y(i, j) - t(i, j));
        sum += r <= 1 ? 0.5 * r * r : r - 0.5;
      }
    return y.size() > 0 ? sum / static_cast<double>(y.size()) : 0.0;
  }
  // The value; dy (overwritten) = dL/dy = clamp(r, -1, 1) / count.
  double evaluate(kshot::ConstRowMatrixRef<double> y, TargetRef t, kshot::RowMatrixRef<double> dy) const {
    const double scale = y.size() > 0 ? 1.0 / static_cast<double>(y.size()) : 0.0;
    for (kshot::Index i = 0; i < y.rows(); ++i)
      for (kshot::Index j = 0; j < y.cols(); ++j) dy(i, j) = std::clamp(y(i, j) - t(i, j), -1.0, 1.0) * scale;
    return evaluate(y, t);
  }
  // R{dL/dy} (overwritten) = (d²L/dy²) ry = 1[|r| <= 1] ry / count. Only second-order methods call it.
  void evaluate_r(kshot::ConstRowMatrixRef<double> y, TargetRef t, kshot::ConstRowMatrixRef<double> ry,
                  kshot::RowMatrixRef<double> rdy) const {
    const double scale = y.size() > 0 ? 1.0 / static_cast<double>(y.size()) : 0.0;
    for (kshot::Index i = 0; i < y.rows(); ++i)
      for (kshot::Index j = 0; j < y.cols(); ++j)
        rdy(i, j) = std::abs(y(i, j) - t(i, j)) <= 1 ? ry(i, j) * scale : 0.0;
  }
};

int custom_loss() {
  kshot::Sequential<double> model = kshot::make_mlp<double>({2, 16, 1});
  kshot::Maml<double, HuberLoss> maml(0.05, false, 2);  // second order through the Huber loss
  const kshot::RowMatrixX<double> x = kshot::RowMatrixX<double>::Random(8, 2), y = kshot::RowMatrixX<double>::Random(8, 1);
  kshot::VectorX<double> meta_grad(model.num_parameters());
  maml.meta_gradient(model, x, y, x, y, meta_grad);
  return meta_grad.allFinite() ? 0 : 1;
}
// ---- end

int main() {
  const int a = sine_meta_batch(), b = custom_loss();
  std::printf("meta_basics: %s\n", a == 0 && b == 0 ? "ok" : "failed");
  return a | b;
}
