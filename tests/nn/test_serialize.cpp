// SPDX-License-Identifier: MIT
// Model files: bitwise round trips (file and stream), every corrupt byte and every truncation rejected, wrong
// magic / version / scalar / layer type / dimensions / parameter count / trailing bytes rejected with the path,
// the target model unchanged on failure, no temporary file left behind, and the layer factory.
#include "test_util.hpp"

#include <kshot/nn/activations.hpp>
#include <kshot/nn/dropout.hpp>
#include <kshot/nn/l2_normalize.hpp>
#include <kshot/nn/layer_norm.hpp>
#include <kshot/nn/linear.hpp>
#include <kshot/nn/residual.hpp>
#include <kshot/nn/sequential.hpp>
#include <kshot/nn/serialize.hpp>

#include <doctest/doctest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>

using kshot::Index;
using kshot::RowMatrixX;
using kshot::Sequential;
using kshot::VectorX;
using kshot::test::random_matrix;

namespace {

namespace fs = std::filesystem;

/// A fresh directory under the system's temporary directory, removed with its contents at scope exit.
struct TempDir {
  fs::path path;
  explicit TempDir(const std::string& name) {
    // A random suffix: several test runs (build directories, users) may share the temporary directory.
    path = fs::temp_directory_path() /
           ("kshot_test_serialize_" + name + "_" + std::to_string(std::random_device{}()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~TempDir() {
    std::error_code ignored;
    fs::remove_all(path, ignored);
  }
  std::string file(const std::string& name) const { return (path / name).string(); }
};

/// A model with every layer type kshot can save.
template <class Scalar>
Sequential<Scalar> every_layer_model(std::uint64_t seed) {
  Sequential<Scalar> model;
  model.template add<kshot::Linear>(5, 8, true, kshot::Init::kaiming_normal);
  model.template add<kshot::GELU>(8);
  model.template add<kshot::ResidualBlock>(8, 6, kshot::Activation::tanh, kshot::Init::xavier_uniform);
  model.template add<kshot::LayerNorm>(8, 1e-6, true);
  model.template add<kshot::Dropout>(8, 0.25, 0x123456789abcdefull);
  model.template add<kshot::ReLU>(8);
  model.template add<kshot::Linear>(8, 4, false);
  model.template add<kshot::Tanh>(4);
  model.template add<kshot::L2Normalize>(4, 1e-10);
  model.initialize(seed);
  // LayerNorm starts at ones and zeros: move every parameter off its initial value.
  model.parameters().array() += Scalar(0.01);
  return model;
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

template <class Scalar>
void require_same_model(const Sequential<Scalar>& a, const Sequential<Scalar>& b) {
  REQUIRE(a.size() == b.size());
  for (Index i = 0; i < a.size(); ++i) {
    CHECK(a.layer(i).type_name() == b.layer(i).type_name());
    CHECK(a.layer(i).config() == b.layer(i).config());
  }
  REQUIRE(a.num_parameters() == b.num_parameters());
  CHECK(std::memcmp(a.parameters().data(), b.parameters().data(),
                    sizeof(Scalar) * static_cast<std::size_t>(a.num_parameters())) == 0);
}

/// A model file written by hand: header, then `layers` (each writes its own entries), then the checksum.
std::string craft(std::uint64_t layer_count, const std::function<void(kshot::detail::ModelWriter&)>& layers,
                  std::uint32_t version = 1, std::uint32_t scalar = 8) {
  std::ostringstream out;
  kshot::detail::ModelWriter w(out);
  w.bytes("KSHOTNN1", 8);
  w.u32(version);
  w.u32(scalar);
  w.u64(layer_count);
  layers(w);
  w.finish();
  return out.str();
}

void craft_layer(kshot::detail::ModelWriter& w, const std::string& name, const std::vector<double>& config,
                 const std::vector<double>& params) {
  w.u32(static_cast<std::uint32_t>(name.size()));
  w.bytes(name.data(), name.size());
  w.u32(static_cast<std::uint32_t>(config.size()));
  for (double c : config) w.f64(c);
  w.u64(params.size());
  w.scalars(params.data(), static_cast<Index>(params.size()));
}

}  // namespace

TEST_CASE_TEMPLATE("serialize: a file round trip is bitwise, with the same forward outputs", T, float, double) {
  TempDir dir(std::string("round_trip_") + (sizeof(T) == 4 ? "f" : "d"));
  const Sequential<T> model = every_layer_model<T>(1);
  const std::string path = dir.file("model.kshot");
  model.save(path);
  CHECK(fs::exists(path));
  CHECK_FALSE(fs::exists(path + ".tmp"));
  Sequential<T> loaded = Sequential<T>::load(path);
  require_same_model(model, loaded);
  const RowMatrixX<T> x = random_matrix<T>(6, 5, 2);
  Sequential<T> a = model;
  const RowMatrixX<T> ya = a.forward(x, false), yb = loaded.forward(x, false);
  CHECK(std::memcmp(ya.data(), yb.data(), sizeof(T) * static_cast<std::size_t>(ya.size())) == 0);
  // Saving the loaded model gives the same bytes.
  loaded.save(dir.file("again.kshot"));
  CHECK(read_bytes(path) == read_bytes(dir.file("again.kshot")));
  // Saving over an existing file replaces it.
  const auto small = kshot::make_mlp<T>({2, 3});
  small.save(path);
  require_same_model(small, Sequential<T>::load(path));
  CHECK_FALSE(fs::exists(path + ".tmp"));
  // An empty model round-trips too.
  Sequential<T>().save(dir.file("empty.kshot"));
  CHECK(Sequential<T>::load(dir.file("empty.kshot")).empty());
}

TEST_CASE("serialize: stream round trip leaves the stream after the model") {
  const auto model = every_layer_model<double>(3);
  std::stringstream stream;
  model.save(stream);
  stream << "after";
  const auto loaded = Sequential<double>::load(stream);
  require_same_model(model, loaded);
  std::string rest;
  stream >> rest;
  CHECK(rest == "after");
}

TEST_CASE("serialize: the header layout is as documented") {
  const auto model = kshot::make_mlp<float>({3, 2});
  std::ostringstream out;
  model.save(out);
  const std::string bytes = out.str();
  CHECK(bytes.substr(0, 8) == "KSHOTNN1");
  CHECK(bytes[8] == 1);   // version, little-endian u32
  CHECK(bytes[12] == 4);  // float
  CHECK(bytes[16] == 1);  // one layer
  CHECK(bytes.substr(24, 4) == std::string("\x06\x00\x00\x00", 4));
  CHECK(bytes.substr(28, 6) == "Linear");
  // magic, version, scalar, count, name length, name, config count, 4 config, parameter count, 8 floats, checksum
  CHECK(bytes.size() == 8 + 4 + 4 + 8 + 4 + 6 + 4 + 4 * 8 + 8 + 8 * 4 + 8);
}

TEST_CASE("serialize: every corrupted byte and every truncation throws, naming the path") {
  TempDir dir("corrupt");
  const auto model = every_layer_model<float>(4);
  const std::string path = dir.file("model.kshot");
  model.save(path);
  const std::string good = read_bytes(path);
  const std::string bad_path = dir.file("bad.kshot");
  Index corrupt_rejected = 0, truncated_rejected = 0;
  for (std::size_t at = 0; at < good.size(); ++at) {
    for (int flip : {0x01, 0x80}) {
      std::string bad = good;
      bad[at] = static_cast<char>(static_cast<unsigned char>(bad[at]) ^ static_cast<unsigned char>(flip));
      write_bytes(bad_path, bad);
      try {
        (void)Sequential<float>::load(bad_path);
        FAIL_CHECK("a file with byte " << at << " flipped by " << int(flip) << " loaded");
      } catch (const std::runtime_error& e) {
        ++corrupt_rejected;
        if (!kshot::test::contains(e.what(), "bad.kshot")) FAIL_CHECK("message without the path: " << e.what());
      }
    }
  }
  for (std::size_t length = 0; length < good.size(); ++length) {
    write_bytes(bad_path, good.substr(0, length));
    try {
      (void)Sequential<float>::load(bad_path);
      FAIL_CHECK("a file truncated to " << length << " bytes loaded");
    } catch (const std::runtime_error& e) {
      ++truncated_rejected;
      if (!kshot::test::contains(e.what(), "bad.kshot")) FAIL_CHECK("message without the path: " << e.what());
    }
  }
  CHECK(corrupt_rejected == static_cast<Index>(2 * good.size()));
  CHECK(truncated_rejected == static_cast<Index>(good.size()));
  // Truncations from the stream version too.
  for (std::size_t length : {std::size_t(0), std::size_t(5), std::size_t(30), good.size() / 2, good.size() - 1}) {
    std::istringstream in(good.substr(0, length));
    KSHOT_CHECK_THROWS_WITH_ALL(Sequential<float>::load(in, false, "memory"), std::runtime_error,
                                "kshot::Sequential::load(): memory: truncated");
  }
  // Specific messages.
  std::string flipped = good;
  flipped[good.size() - 1] = static_cast<char>(flipped[good.size() - 1] ^ 1);
  write_bytes(bad_path, flipped);
  KSHOT_CHECK_THROWS_WITH_ALL(Sequential<float>::load(bad_path), std::runtime_error, "checksum mismatch");
  write_bytes(bad_path, good.substr(0, good.size() - 3));
  KSHOT_CHECK_THROWS_WITH_ALL(Sequential<float>::load(bad_path), std::runtime_error, "truncated",
                              "inside the checksum");
  write_bytes(bad_path, good + "x");
  KSHOT_CHECK_THROWS_WITH_ALL(Sequential<float>::load(bad_path), std::runtime_error,
                              "1 bytes of trailing data after the checksum");
}

TEST_CASE("serialize: wrong magic, version, scalar type, layer type, dimensions and counts are rejected") {
  TempDir dir("header");
  const std::string path = dir.file("crafted.kshot");
  using E = std::runtime_error;
  auto expect = [&](const std::string& bytes, const char* expected) {
    write_bytes(path, bytes);
    KSHOT_CHECK_THROWS_WITH_ALL(Sequential<double>::load(path), E, "kshot::Sequential::load()", "crafted.kshot",
                                expected);
  };
  const auto linear = [](kshot::detail::ModelWriter& w) {
    craft_layer(w, "Linear", {2, 1, 1, 0}, {0.5, -0.5, 0.25});
  };
  // The crafted writer itself makes loadable files.
  write_bytes(path, craft(1, linear));
  CHECK(Sequential<double>::load(path).parameters()(2) == 0.25);

  std::string magic = craft(1, linear);
  magic[3] = 'X';
  expect(magic, "wrong magic bytes: not a kshot model file");
  expect("PK\x03\x04 a zip file, not a model", "wrong magic bytes");
  expect(craft(1, linear, 2), "unsupported format version 2 (this kshot reads version 1)");
  expect(craft(1, linear, 1, 2), "scalar size 2 is neither 4 (float) nor 8 (double)");
  expect(craft(1, [](kshot::detail::ModelWriter& w) { craft_layer(w, "Conv2d", {1}, {}); }),
         "layer 0: kshot::make_layer(): unknown layer type \"Conv2d\"");
  expect(craft(1, [](kshot::detail::ModelWriter& w) { craft_layer(w, "Linear", {2, 1, 1}, {}); }),
         "a Linear layer has 4 config numbers, got 3");
  expect(craft(1, [](kshot::detail::ModelWriter& w) { craft_layer(w, "Linear", {2.5, 1, 1, 0}, {}); }),
         "Linear in must be an integer in [1, 2^31), got 2.5");
  expect(craft(1, [](kshot::detail::ModelWriter& w) { craft_layer(w, "Linear", {2, 1, 1, 7}, {}); }),
         "Linear init must be an integer in [0, 5], got 7");
  expect(craft(1, [](kshot::detail::ModelWriter& w) { craft_layer(w, "LayerNorm", {3, -1, 1}, {}); }),
         "layer 0: kshot::LayerNorm");
  expect(craft(1, [](kshot::detail::ModelWriter& w) { craft_layer(w, "Linear", {2, 1, 1, 0}, {1, 2}); }),
         "layer 0 (Linear): the file has 2 parameters but the layer has 3");
  expect(craft(2,
               [&](kshot::detail::ModelWriter& w) {
                 linear(w);
                 craft_layer(w, "ReLU", {2}, {});
               }),
         "layer 1 (ReLU) has input_dim 2 but layer 0 has output_dim 1");
  expect(craft(1, [](kshot::detail::ModelWriter& w) { craft_layer(w, "Linear", {2, 1, 1, 0}, {1, std::nan(""), 2}); }),
         "parameters of layer 0 (Linear): value 1 is not finite");
  expect(craft(1, [](kshot::detail::ModelWriter& w) { craft_layer(w, "", {}, {}); }),
         "layer 0: type name length 0 is not in [1, 64]");
  expect(craft(1ull << 40, [](kshot::detail::ModelWriter&) {}), "implausible layer count");
  expect(craft(1000, [](kshot::detail::ModelWriter&) {}), "truncated: the layer table needs 17000 bytes");
  expect(craft(1,
               [](kshot::detail::ModelWriter& w) {
                 const std::string name = "Linear";
                 w.u32(6);
                 w.bytes(name.data(), 6);
                 w.u32(4);
                 for (double c : {100000.0, 100000.0, 1.0, 0.0}) w.f64(c);
                 w.u64(100000ull * 100000ull + 100000ull);
               }),
         "truncated: the parameters needs 80000800000 bytes");
  // The same announcement from a stream (no size known): memory grows only with the data, then "truncated".
  std::istringstream huge(craft(1, [](kshot::detail::ModelWriter& w) {
    const std::string name = "Linear";
    w.u32(6);
    w.bytes(name.data(), 6);
    w.u32(4);
    for (double c : {100000.0, 100000.0, 1.0, 0.0}) w.f64(c);
    w.u64(100000ull * 100000ull + 100000ull);
  }));
  KSHOT_CHECK_THROWS_WITH_ALL(Sequential<double>::load(huge, false, "huge"), E, "huge: truncated",
                              "inside parameters of layer 0 (Linear)");
  CHECK_THROWS_WITH_AS(Sequential<double>::load(dir.file("missing.kshot")),
                       doctest::Contains("missing.kshot': cannot open the file"), E);
}

TEST_CASE("serialize: float and double files, with and without conversion") {
  TempDir dir("scalar");
  const auto model_f = every_layer_model<float>(5);
  const auto model_d = every_layer_model<double>(5);
  model_f.save(dir.file("f.kshot"));
  model_d.save(dir.file("d.kshot"));
  KSHOT_CHECK_THROWS_WITH_ALL(Sequential<double>::load(dir.file("f.kshot")), std::runtime_error,
                              "the file holds float parameters but the model is Sequential<double>",
                              "convert_scalar = true");
  KSHOT_CHECK_THROWS_WITH_ALL(Sequential<float>::load(dir.file("d.kshot")), std::runtime_error,
                              "the file holds double parameters but the model is Sequential<float>");
  const auto widened = Sequential<double>::load(dir.file("f.kshot"), true);
  CHECK(widened.parameters() == model_f.parameters().cast<double>());  // exact
  const auto narrowed = Sequential<float>::load(dir.file("d.kshot"), true);
  CHECK(narrowed.parameters() == model_d.parameters().cast<float>());  // round to nearest, as a cast
  // A double value beyond float's range cannot be narrowed.
  write_bytes(dir.file("big.kshot"),
              craft(1, [](kshot::detail::ModelWriter& w) { craft_layer(w, "Linear", {1, 1, 1, 0}, {1e300, 0}); }));
  KSHOT_CHECK_THROWS_WITH_ALL(Sequential<float>::load(dir.file("big.kshot"), true), std::runtime_error,
                              "value 0 (1e+300) is out of the range of float");
}

TEST_CASE("serialize: a failed load leaves the target model unchanged; save leaves no temporary file") {
  TempDir dir("atomic");
  auto model = kshot::make_mlp<double>({3, 4, 2}, kshot::Activation::relu, kshot::Init::pytorch_default, 6);
  const VectorX<double> before = model.parameters();
  write_bytes(dir.file("junk.kshot"), "KSHOTNN1 but nothing sensible after it");
  CHECK_THROWS_AS(model = Sequential<double>::load(dir.file("junk.kshot")), std::runtime_error);
  CHECK(model.size() == 3);
  CHECK(model.parameters() == before);

  // A parameter that is not finite: save refuses before touching any file.
  auto broken = model;
  broken.parameters()(5) = std::numeric_limits<double>::infinity();
  KSHOT_CHECK_THROWS_WITH_ALL(broken.save(dir.file("broken.kshot")), std::invalid_argument,
                              "kshot::Sequential::save()", "parameter 5 (layer 0, Linear) is not finite");
  CHECK_FALSE(fs::exists(dir.file("broken.kshot")));
  CHECK_FALSE(fs::exists(dir.file("broken.kshot.tmp")));
  // An unwritable destination: a runtime_error naming the path, and no temporary left behind.
  const std::string nowhere = dir.file("no_such_dir/model.kshot");
  KSHOT_CHECK_THROWS_WITH_ALL(model.save(nowhere), std::runtime_error, "kshot::Sequential::save()", "no_such_dir");
  CHECK_FALSE(fs::exists(nowhere + ".tmp"));
  // The destination is a directory: the rename fails, the temporary is removed.
  fs::create_directories(dir.file("a_directory"));
  fs::create_directories(dir.file("a_directory/inside"));
  KSHOT_CHECK_THROWS_WITH_ALL(model.save(dir.file("a_directory")), std::runtime_error, "cannot rename");
  CHECK_FALSE(fs::exists(dir.file("a_directory.tmp")));
  // Only the expected files remain in the directory.
  Index files = 0;
  for (const auto& entry : fs::directory_iterator(dir.path)) {
    (void)entry;
    ++files;
  }
  CHECK(files == 2);  // junk.kshot and a_directory
}

TEST_CASE("serialize: make_layer rebuilds every layer from its type name and config") {
  using kshot::make_layer;
  const std::vector<std::unique_ptr<kshot::Layer<float>>> layers = [] {
    std::vector<std::unique_ptr<kshot::Layer<float>>> v;
    v.push_back(std::make_unique<kshot::Linear<float>>(3, 4, false, kshot::Init::xavier_normal));
    v.push_back(std::make_unique<kshot::ReLU<float>>(4));
    v.push_back(std::make_unique<kshot::GELU<float>>(4));
    v.push_back(std::make_unique<kshot::Tanh<float>>(4));
    v.push_back(std::make_unique<kshot::ResidualBlock<float>>(4, 9, kshot::Activation::gelu, kshot::Init::zeros));
    v.push_back(std::make_unique<kshot::LayerNorm<float>>(4, 1e-3, false));
    v.push_back(std::make_unique<kshot::L2Normalize<float>>(4, 1e-8));
    v.push_back(std::make_unique<kshot::Dropout<float>>(4, 0.1, 0xfedcba9876543210ull));
    return v;
  }();
  for (const auto& layer : layers) {
    const auto rebuilt = make_layer<float>(layer->type_name(), layer->config());
    CHECK(rebuilt->type_name() == layer->type_name());
    CHECK(rebuilt->config() == layer->config());
    CHECK(rebuilt->num_parameters() == layer->num_parameters());
  }
  using E = std::invalid_argument;
  KSHOT_CHECK_THROWS_WITH_ALL(make_layer<float>("Sigmoid", {3}), E, "unknown layer type \"Sigmoid\"");
  KSHOT_CHECK_THROWS_WITH_ALL(make_layer<float>("ReLU", {0}), E, "activation dim must be an integer in [1, 2^31), got 0");
  KSHOT_CHECK_THROWS_WITH_ALL(make_layer<float>("Dropout", {4, 0.5, 1, -1}), E, "Dropout seed high half");
  KSHOT_CHECK_THROWS_WITH_ALL(make_layer<float>("Linear", {3, 4, 2, 0}), E, "Linear bias must be an integer in [0, 1]");
}

namespace {

/// A model file of one parameter-free layer `name` of width `width` (60 bytes for a 4-letter name).
std::string parameter_free_model(const char* name, double width) {
  std::ostringstream out(std::ios::binary);
  kshot::detail::BinaryWriter writer(out);
  writer.bytes("KSHOTNN1", 8);
  writer.u32(1);  // format version
  writer.u32(4);  // float
  writer.u64(1);  // one layer
  const auto length = static_cast<std::uint32_t>(std::strlen(name));
  writer.u32(length);
  writer.bytes(name, length);
  writer.u32(1);  // config count
  writer.f64(width);
  writer.u64(0);  // parameter count
  writer.finish();
  return out.str();
}

}  // namespace

TEST_CASE("nn.serialize: a model without parameters cannot declare a width no byte backs (issue 17)") {
  // 60 bytes declared a ReLU of width 2^31 - 1, which every forward() was then sized by.
  const std::string bytes = parameter_free_model("ReLU", 2147483647.0);
  CHECK(bytes.size() == 60);
  std::istringstream in(bytes);
  KSHOT_CHECK_THROWS_WITH_ALL(Sequential<float>::load(in, false, "probe"), std::runtime_error,
                              "kshot::Sequential::load()", "probe",
                              "the model has no parameters but width 2147483647", "at most 16777216");
  // The bound itself loads, and so does an ordinary parameter-free model.
  std::istringstream at_bound(parameter_free_model("Tanh", 16777216.0));
  CHECK(Sequential<float>::load(at_bound).input_dim() == 16777216);
  std::istringstream small(parameter_free_model("ReLU", 8.0));
  const Sequential<float> relu = Sequential<float>::load(small);
  CHECK(relu.input_dim() == 8);
  CHECK(relu.num_parameters() == 0);
  // A file path goes through the same check.
  const TempDir dir("wide_relu");
  const std::string path = (dir.path / "model.bin").string();
  {
    std::ofstream file(path, std::ios::binary | std::ios::trunc);
    file.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  }
  KSHOT_CHECK_THROWS_WITH_ALL(Sequential<float>::load(path), std::runtime_error, path.c_str(),
                              "the model has no parameters but width 2147483647");
}
