// SPDX-License-Identifier: MIT
// The code blocks of docs/nn.md and docs/optimizers.md, compiled and run: an MLP embedding with flat parameters,
// a model built layer by layer, an exact Hessian-vector product, save/load, and an optimizer with a schedule,
// clipping and a checkpoint of its state.
#include <kshot/nn/activations.hpp>
#include <kshot/nn/layer_norm.hpp>
#include <kshot/nn/l2_normalize.hpp>
#include <kshot/nn/linear.hpp>
#include <kshot/nn/residual.hpp>
#include <kshot/nn/sequential.hpp>

#include <kshot/nn/adam.hpp>
#include <kshot/nn/clip.hpp>
#include <kshot/nn/lr_schedule.hpp>
#include <kshot/nn/sgd.hpp>

#include <cstdint>
#include <cstdio>
#include <sstream>

void quick_start() {
// ---- block 1
// An embedding network for 784-dimensional product features: Linear(784, 256), ReLU, Linear(256, 64).
kshot::Sequential<float> model = kshot::make_mlp<float>({784, 256, 64}, kshot::Activation::relu,
                                                        kshot::Init::pytorch_default, /*seed=*/42);

kshot::RowMatrixX<float> x = kshot::RowMatrixX<float>::Random(100, 784);  // one product per row
model.zero_grad();
const auto& emb = model.forward(x);                  // 100 x 64, a view of the model's output buffer
kshot::RowMatrixX<float> grad = emb;                  // a loss would write dL/d(emb) here; L = ½‖emb‖²
model.backward(grad);                                 // model.gradients() += dL/dθ
model.parameters() -= 0.01f * model.gradients();      // one plain SGD step on the flat vector
// ---- end
}

void building() {
// ---- block 2
kshot::Sequential<float> model;
model.add<kshot::Linear>(784, 256);                                  // a layer template at the model's Scalar
model.add<kshot::GELU>(256);
model.add<kshot::ResidualBlock>(256, 512, kshot::Activation::gelu);  // y = x + fc2(gelu(fc1(x)))
model.add<kshot::LayerNorm>(256);
model.add(std::make_unique<kshot::Linear<float>>(256, 64, /*bias=*/false, kshot::Init::xavier_uniform));
model.add<kshot::L2Normalize>(64);
model.initialize(/*seed=*/7);                                        // layer i draws from RandomStream(7, i)

std::printf("%ld layers, %ld -> %ld, %ld parameters\n", static_cast<long>(model.size()),
            static_cast<long>(model.input_dim()), static_cast<long>(model.output_dim()),
            static_cast<long>(model.num_parameters()));
// ---- end
// ---- block 3
// The first Linear's weight is the first 256 x 784 entries of parameters(), row by row, then its bias.
const auto& fc = static_cast<const kshot::Linear<float>&>(model.layer(0));
float w01 = model.parameters()[1];                          // == fc.weight()(0, 1)
float b0 = model.parameters()[model.parameter_offset(0) + 256 * 784];   // == fc.bias()(0)
Eigen::Map<const kshot::VectorX<float>> last_layer(         // the slice of layer 4 (the bias-free Linear)
    model.parameters().data() + model.parameter_offset(4), model.layer(4).num_parameters());
// ---- end
(void)fc; (void)w01; (void)b0; (void)last_layer;
}

void hessian() {
// ---- block 4
// H v for L = ½‖model(x) − t‖²: dL/dy = y − t and R{dL/dy} = R{y}.
kshot::Sequential<double> model = kshot::make_mlp<double>({16, 32, 4}, kshot::Activation::tanh);
const kshot::RowMatrixX<double> x = kshot::RowMatrixX<double>::Random(50, 16);
const kshot::RowMatrixX<double> t = kshot::RowMatrixX<double>::Random(50, 4);
const kshot::VectorX<double> v = kshot::VectorX<double>::Random(model.num_parameters());

model.zero_grad();
const kshot::RowMatrixX<double> dy = model.forward(x) - t;
model.backward(dy);                               // gradient in model.gradients()
const kshot::RowMatrixX<double> rdy = model.forward_r(v);   // R{y} along v
kshot::VectorX<double> hv(model.num_parameters());
model.backward_r(dy, rdy, hv);                    // hv = H v, exact
// ---- end
}

void save_load() {
// ---- block 5
kshot::Sequential<float> model = kshot::make_mlp<float>({784, 256, 64});
model.save("embedder.kshot");      // written to embedder.kshot.tmp, then renamed over embedder.kshot

kshot::Sequential<float> restored = kshot::Sequential<float>::load("embedder.kshot");
kshot::Sequential<double> widened = kshot::Sequential<double>::load("embedder.kshot", /*convert_scalar=*/true);

std::stringstream checkpoint;      // streams: a model can be followed by other data (optimizer state ...)
model.save(checkpoint);
checkpoint << "more data";
kshot::Sequential<float> again = kshot::Sequential<float>::load(checkpoint);   // stops after the model
// ---- end
(void)restored; (void)widened; (void)again;
std::remove("embedder.kshot");
}

void optimizers() {
// ---- docs/optimizers.md
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
// ---- end
std::printf("AdamW after %ld steps: |params - target| = %.2e\n", static_cast<long>(resumed.steps()), static_cast<double>((params - target).norm()));
}

int main() {
  quick_start();
  building();
  hessian();
  save_load();
  optimizers();
  std::puts("ok");
}
