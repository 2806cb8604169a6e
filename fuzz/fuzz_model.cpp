// libFuzzer harness of kshot's model files: Sequential<float/double>::load(path) and load(std::istream&), with
// and without convert_scalar (kshot/nn/sequential.hpp, kshot/nn/serialize.hpp, kshot/core/binary_io.hpp).
//
// Input: byte 0 = options, the rest = the model file.
//   bit 0: the harness recomputes the file's checksum (its last 8 bytes) first, so that half the inputs reach
//          the parsing behind the checksum
//   bit 1: Sequential<double> (else Sequential<float>)
//   bit 2: convert_scalar = true
//   bit 3: load from a std::istringstream (else from the file)
//   bit 4: the forward pass after a successful load runs in training mode (Dropout active)
// After a successful load: every layer chains (input_dim = previous output_dim), a forward pass of two rows
// runs when the model is small enough for the harness to build an input, and save() then load() of what was
// loaded must give the same bytes again (what kshot writes, kshot reads).
//
// SPDX-License-Identifier: MIT

#include "fuzz_common.hpp"

#include "kshot/nn/sequential.hpp"

#include <memory>
#include <sstream>

namespace {

using kshot_fuzz::require;

template <class Scalar>
std::string saved(const kshot::Sequential<Scalar>& model) {
  std::ostringstream out(std::ios::binary);
  model.save(out);
  return out.str();
}

template <class Scalar>
void use(kshot::Sequential<Scalar>& model, bool training) {
  using kshot::Index;
  require(!model.empty() || model.num_parameters() == 0, "an empty model with parameters");
  Index widths = model.input_dim();
  for (Index i = 0; i < model.size(); ++i) {
    const auto& layer = model.layer(i);
    if (i > 0) require(layer.input_dim() == model.layer(i - 1).output_dim(), "loaded layers do not chain");
    widths += layer.output_dim();
  }
  // The round trip: the bytes save() writes must load, and saving that again must give the same bytes.
  const std::string first = saved(model);
  std::istringstream in(first, std::ios::binary);
  kshot::Sequential<Scalar> again = kshot::Sequential<Scalar>::load(in, false, "round trip");
  require(saved(again) == first, "save(load(save(model))) differs from save(model)");
  require(in.peek() == std::char_traits<char>::eof(), "load(std::istream&) did not read the whole saved model");

  // A forward pass of two rows, when the activations stay small (the harness itself allocates the input).
  if (model.empty() || widths > (Index{1} << 20)) return;
  kshot::RowMatrixX<Scalar> x(2, model.input_dim());
  for (Index j = 0; j < x.cols(); ++j) {
    x(0, j) = Scalar(0.25) * static_cast<Scalar>(j % 7) - Scalar(0.5);
    x(1, j) = Scalar(0);
  }
  kshot_fuzz::documented([&] {
    const kshot::RowMatrixX<Scalar>& y = model.forward(x, training);
    require(y.rows() == 2 && y.cols() == model.output_dim(), "forward() returned the wrong shape");
  });
}

template <class Scalar>
void run(const kshot_fuzz::TempFile& file, const std::vector<std::uint8_t>& bytes, std::uint8_t options) {
  const bool convert = (options & 4) != 0, from_stream = (options & 8) != 0, training = (options & 16) != 0;
  std::unique_ptr<kshot::Sequential<Scalar>> model;
  kshot_fuzz::documented([&] {
    if (from_stream) {
      std::istringstream in(std::string(bytes.begin(), bytes.end()), std::ios::binary);
      model = std::make_unique<kshot::Sequential<Scalar>>(kshot::Sequential<Scalar>::load(in, convert, "input"));
    } else {
      model = std::make_unique<kshot::Sequential<Scalar>>(kshot::Sequential<Scalar>::load(file.path(), convert));
    }
  });
  if (model) {
    // A file that loaded has a valid checksum over its whole length (the stream form may stop before the end).
    if (!from_stream) require(kshot_fuzz::checksum_ok(bytes), "a file whose checksum is wrong loaded");
    use(*model, training);
  }
}

}  // namespace

void fuzz_one(const std::uint8_t* data, std::size_t size) {
  static const kshot_fuzz::TempFile file("model");
  kshot_fuzz::checksummed_file(data, size,
                               [&](auto scalar, std::uint8_t options, const std::vector<std::uint8_t>& bytes) {
                                 if ((options & 8) == 0) file.write(bytes);
                                 run<decltype(scalar)>(file, bytes, options);
                               });
}

namespace {

template <class Scalar>
std::vector<std::uint8_t> model_bytes(const kshot::Sequential<Scalar>& model) {
  return kshot_fuzz::bytes_of(saved(model));
}

template <class Scalar>
kshot::Sequential<Scalar> every_layer() {
  using namespace kshot;
  Sequential<Scalar> model;
  model.add(std::make_unique<Linear<Scalar>>(3, 4, true, Init::xavier_uniform));
  model.add(std::make_unique<GELU<Scalar>>(4));
  model.add(std::make_unique<ResidualBlock<Scalar>>(4, 2, Activation::tanh, Init::kaiming_uniform));
  model.add(std::make_unique<LayerNorm<Scalar>>(4, 1e-5, true));
  model.add(std::make_unique<Dropout<Scalar>>(4, 0.25, 0x123456789ull));
  model.add(std::make_unique<Tanh<Scalar>>(4));
  model.add(std::make_unique<LayerNorm<Scalar>>(4, 1e-3, false));
  model.add(std::make_unique<Linear<Scalar>>(4, 2, false, Init::zeros));
  model.add(std::make_unique<ReLU<Scalar>>(2));
  model.add(std::make_unique<L2Normalize<Scalar>>(2, 1e-12));
  model.initialize(7);
  return model;
}

template <class Scalar>
void seeds_of(kshot_fuzz::SeedWriter& seeds, const char* tag, std::uint8_t scalar_bit) {
  const std::string t = tag;
  const auto mlp = model_bytes(kshot::make_mlp<Scalar>({3, 5, 2}, kshot::Activation::relu));
  const auto all = model_bytes(every_layer<Scalar>());
  const auto one = model_bytes(kshot::make_mlp<Scalar>({1, 1}, kshot::Activation::gelu, kshot::Init::zeros, 0, false));
  // Both halves: checksum left alone (bit 0 clear) and recomputed by the harness (bit 0 set); from the file
  // and from a stream; the matching scalar type and the other one with convert_scalar.
  for (std::uint8_t fix : {0, 1}) {
    seeds.add("mlp_" + t + "_" + std::to_string(fix), static_cast<std::uint8_t>(fix | scalar_bit), mlp);
    seeds.add("all_" + t + "_" + std::to_string(fix), static_cast<std::uint8_t>(fix | scalar_bit | 16), all);
    seeds.add("one_" + t + "_stream_" + std::to_string(fix), static_cast<std::uint8_t>(fix | scalar_bit | 8), one);
    seeds.add("all_" + t + "_convert_" + std::to_string(fix), static_cast<std::uint8_t>(fix | (scalar_bit ^ 2) | 4),
              all);
  }
}

}  // namespace

void write_seeds(kshot_fuzz::SeedWriter& seeds) {
  seeds_of<float>(seeds, "f32", 0);
  seeds_of<double>(seeds, "f64", 2);
}
