/**
 * @file kshot/nn/sequential.hpp
 * @brief Sequential model: a chain of layers over one flat parameter vector and one flat gradient vector,
 * with forward, backward, exact Hessian-vector products (Pearlmutter's R-operator), deep copies and
 * save/load; and make_mlp().
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_NN_SEQUENTIAL_HPP
#define KSHOT_NN_SEQUENTIAL_HPP

#include "kshot/core/binary_io.hpp"
#include "kshot/core/check.hpp"
#include "kshot/core/random.hpp"
#include "kshot/core/types.hpp"
#include "kshot/core/workspace.hpp"
#include "kshot/nn/activations.hpp"
#include "kshot/nn/init.hpp"
#include "kshot/nn/layer.hpp"
#include "kshot/nn/linear.hpp"
#include "kshot/nn/serialize.hpp"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <istream>
#include <limits>
#include <memory>
#include <ostream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace kshot {
namespace detail {

/// Tells whether a `const Ref` argument had to copy its source to bind (a column-major matrix, an expression):
/// the copy lives in the Ref, which dies when the call returns.
template <class Scalar>
struct RefCopyProbe : ConstRowMatrixRef<Scalar> {
  static bool copied(const ConstRowMatrixRef<Scalar>& ref) noexcept {
    const RowMatrixX<Scalar>& owned = ref.*(&RefCopyProbe::m_object);
    return owned.size() > 0 && owned.data() == ref.data();
  }
};

}  // namespace detail

/**
 * @brief A chain of layers y = f_{L-1}(... f_1(f_0(x))), trained as one flat parameter vector.
 *
 * The model owns its layers and two vectors of num_parameters() scalars: parameters() and gradients().
 * Layer i reads and writes the slice that starts at parameter_offset(i), laid out as that layer documents
 * (Linear: [W row by row, b]). Optimizers, meta-learners and checkpoints therefore see a model as one vector.
 *
 * Usage:
 * @code
 * kshot::Sequential<float> model = kshot::make_mlp<float>({784, 256, 64});   // Linear-ReLU-Linear
 * model.zero_grad();
 * const auto& emb = model.forward(x);         // x: n x 784, row-major; emb: n x 64
 * // ... a loss fills dL/demb into grad (n x 64) ...
 * model.backward(grad);                        // gradients() += dL/dparameters
 * @endcode
 *
 * Calls follow the layer protocol: forward(), then backward() (any number of times, each accumulates), then
 * optionally forward_r() and backward_r() for a Hessian-vector product. The input x of forward() is not
 * copied: it must stay alive and unchanged until the last backward() / backward_r() that uses it (a
 * column-major x, or an expression, is copied into the model instead, since the temporary that Eigen makes to
 * bind it dies with the call). Do not change parameters() between forward() and backward().
 *
 * A new layer (add()) gets the values initialize(0) would give it, so a model is usable as built;
 * initialize(seed) redraws every layer, layer i from RandomStream(seed, i).
 *
 * @tparam Scalar float or double.
 * @note Intermediate values (one n x width matrix per layer for forward, backward, and each half of the
 * R-operator) live in member buffers that grow and never shrink; the outputs of forward() and forward_r() are
 * member matrices resized when their shape changes. After the first call with a given batch size nothing
 * allocates, and alternating batch sizes (support and query sets) reallocate only those two output matrices
 * (n x output_dim()). Products run in fixed row blocks,
 * so results are bitwise identical for any number of OpenMP threads. Not thread-safe: one model per thread
 * (copies are independent).
 */
template <class Scalar = float>
class Sequential {
  static_assert(is_supported_scalar_v<Scalar>, "kshot::Sequential<Scalar>: Scalar must be float or double");

 public:
  /// The layer type this model holds.
  using LayerType = Layer<Scalar>;

  /// An empty model (no layers, no parameters).
  Sequential() = default;

  /// A deep copy: cloned layers, the same parameters and gradients, no forward state.
  Sequential(const Sequential& other) : params_(other.params_), grads_(other.grads_), offsets_(other.offsets_) {
    layers_.reserve(other.layers_.size());
    for (const auto& layer : other.layers_) layers_.push_back(layer->clone());
    rebind();
  }

  /// Moves the layers and vectors; `other` is left empty.
  Sequential(Sequential&& other) noexcept { swap(other); }

  /// Deep copy (strong guarantee: on failure *this is unchanged).
  Sequential& operator=(const Sequential& other) {
    if (this != &other) {
      Sequential copy(other);
      swap(copy);
    }
    return *this;
  }

  /// Move; `other` is left empty.
  Sequential& operator=(Sequential&& other) noexcept {
    if (this != &other) {
      Sequential moved(std::move(other));
      swap(moved);
    }
    return *this;
  }

  ~Sequential() = default;

  /// A deep copy (the same as the copy constructor).
  Sequential clone() const { return Sequential(*this); }

  /// Exchanges two models (layers, vectors, buffers and forward state).
  void swap(Sequential& other) noexcept {
    layers_.swap(other.layers_);
    params_.swap(other.params_);
    grads_.swap(other.grads_);
    offsets_.swap(other.offsets_);
    direction_.swap(other.direction_);
    std::swap(acts_, other.acts_);
    std::swap(grads_ws_, other.grads_ws_);
    std::swap(racts_, other.racts_);
    std::swap(rgrads_, other.rgrads_);
    std::swap(misc_, other.misc_);
    std::swap(rows_, other.rows_);
    std::swap(backward_done_, other.backward_done_);
    std::swap(r_done_, other.r_done_);
    out_.swap(other.out_);
    rout_.swap(other.rout_);
    rebind();
    other.rebind();
  }

  // ---- Building ---------------------------------------------------------------------------------------------

  /**
   * @brief Appends a layer (the model takes ownership) and returns it.
   *
   * The parameter and gradient vectors grow by the layer's num_parameters(); earlier values are kept and
   * every layer is re-bound. The new layer's parameters are drawn from RandomStream(0, index), as
   * initialize(0) would; the gradients of the new slice are zero. Any forward state is discarded.
   *
   * @throws std::invalid_argument if `layer` is null, or its input_dim() differs from the model's
   * output_dim() (the message names both layers, their indices and both numbers).
   * @note Allocates (the vectors are rebuilt): build models before training.
   */
  LayerType& add(std::unique_ptr<LayerType> layer) {
    constexpr const char* where = "kshot::Sequential::add()";
    KSHOT_CHECK(layer != nullptr, where, "layer is null");
    const Index index = size();
    if (index > 0) {
      const LayerType& last = *layers_.back();
      KSHOT_CHECK(layer->input_dim() == last.output_dim(), where,
                  detail::cat("layer ", index, " (", layer->type_name(), ") has input_dim ", layer->input_dim(),
                              " but layer ", index - 1, " (", last.type_name(), ") has output_dim ",
                              last.output_dim()));
    }
    LayerType& added = append(std::move(layer));
    RandomStream rng(0, static_cast<std::uint64_t>(index));
    added.initialize(rng);
    return added;
  }

  /**
   * @brief Constructs a layer of type L (e.g. `Linear<float>`) in place: `model.add<Linear<float>>(784, 256)`.
   * @throws std::invalid_argument as add(std::unique_ptr) and as L's constructor.
   */
  template <class L, class... Args>
  L& add(Args&&... args) {
    static_assert(std::is_base_of_v<LayerType, L>,
                  "kshot::Sequential<Scalar>::add<L>(): L must derive from kshot::Layer<Scalar> with the model's "
                  "Scalar (e.g. Linear<float> for Sequential<float>)");
    return static_cast<L&>(add(std::make_unique<L>(std::forward<Args>(args)...)));
  }

  /**
   * @brief Constructs a layer template at the model's Scalar: `model.add<Linear>(784, 256)`.
   * @throws std::invalid_argument as add(std::unique_ptr) and as the layer's constructor.
   */
  template <template <class> class L, class... Args>
  L<Scalar>& add(Args&&... args) {
    return add<L<Scalar>>(std::forward<Args>(args)...);
  }

  /**
   * @brief Redraws every layer's parameters: layer i from RandomStream(seed, i), by its own scheme.
   * @note Gradients are left as they are.
   */
  void initialize(std::uint64_t seed) {
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      RandomStream rng(seed, static_cast<std::uint64_t>(i));
      layers_[i]->initialize(rng);
    }
  }

  // ---- Inspection -------------------------------------------------------------------------------------------

  /// Number of layers.
  Index size() const noexcept { return static_cast<Index>(layers_.size()); }
  /// True without layers.
  bool empty() const noexcept { return layers_.empty(); }
  /// Input features of the first layer (0 when empty).
  Index input_dim() const noexcept { return empty() ? 0 : layers_.front()->input_dim(); }
  /// Output features of the last layer (0 when empty).
  Index output_dim() const noexcept { return empty() ? 0 : layers_.back()->output_dim(); }
  /// Length of parameters() and gradients().
  Index num_parameters() const noexcept { return params_.size(); }

  /// Layer i. @throws std::out_of_range unless 0 <= i < size().
  const LayerType& layer(Index i) const { return *layers_[checked_index(i, "kshot::Sequential::layer()")]; }

  /**
   * @brief Layer i, writable (e.g. Dropout::set_step()). Do not bind() it: the model owns its binding.
   * @throws std::out_of_range unless 0 <= i < size().
   */
  LayerType& layer(Index i) { return *layers_[checked_index(i, "kshot::Sequential::layer()")]; }

  /// Where layer i's slice starts in parameters() (parameter_offset(size()) = num_parameters()).
  /// @throws std::out_of_range unless 0 <= i <= size().
  Index parameter_offset(Index i) const {
    KSHOT_CHECK_RANGE(i >= 0 && i <= size(), "kshot::Sequential::parameter_offset()",
                      detail::cat("i is ", i, " but the model has ", size(), " layers"));
    return offsets_.empty() ? 0 : offsets_[static_cast<std::size_t>(i)];
  }

  // ---- Parameters -------------------------------------------------------------------------------------------

  /// Every parameter, layer after layer (writable view: assign values, hand to an optimizer; cannot resize).
  Eigen::Map<VectorX<Scalar>> parameters() noexcept { return {params_.data(), params_.size()}; }
  /// Every parameter, read-only.
  Eigen::Map<const VectorX<Scalar>> parameters() const noexcept { return {params_.data(), params_.size()}; }
  /// The accumulated gradient of every parameter (same layout).
  Eigen::Map<VectorX<Scalar>> gradients() noexcept { return {grads_.data(), grads_.size()}; }
  /// The accumulated gradients, read-only.
  Eigen::Map<const VectorX<Scalar>> gradients() const noexcept { return {grads_.data(), grads_.size()}; }

  /**
   * @brief Copies `values` into parameters(), checked.
   * @throws std::invalid_argument if values has not num_parameters() entries or holds a non-finite value.
   */
  void set_parameters(ConstVectorRef<Scalar> values) {
    constexpr const char* where = "kshot::Sequential::set_parameters()";
    KSHOT_CHECK(values.size() == num_parameters(), where,
                detail::cat("values has ", values.size(), " entries but the model has ", num_parameters(),
                            " parameters"));
    detail::check_finite(values, where, "values");
    params_ = values;
  }

  /// Sets every gradient to zero (backward() accumulates).
  void zero_grad() noexcept { grads_.setZero(); }

  /// Grows every buffer for batches of up to `rows` rows, so that the first forward/backward/R passes do not
  /// allocate either. @throws std::invalid_argument if rows < 0.
  void reserve(Index rows) {
    KSHOT_CHECK(rows >= 0, "kshot::Sequential::reserve()", detail::cat("rows must be >= 0, got ", rows));
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      const Index n = rows * layers_[i]->output_dim();
      acts_.reserve(i, n);
      grads_ws_.reserve(i, n);
      racts_.reserve(i, n);
      rgrads_.reserve(i, n);
    }
    misc_.reserve(kInput, rows * input_dim());
    misc_.reserve(kScratch, rows * input_dim());
    misc_.reserve(kZero, rows * input_dim());
  }

  // ---- Forward and backward ---------------------------------------------------------------------------------

  /**
   * @brief y = model(x).
   * @param x n x input_dim() batch, one sample per row (n may be 0). Kept by view until the next forward():
   * keep it alive and unchanged through backward() and backward_r(). It must not be this model's output().
   * @param training switches training behaviour (Dropout) on.
   * @return the n x output_dim() output, a model member overwritten by the next forward() (copy it to keep it:
   * `RowMatrixX<float> y = model.forward(x);`). It is resized, and so reallocated, only when its shape changes.
   * @throws std::invalid_argument if the model is empty, x has not input_dim() columns, or x holds a
   * non-finite value.
   */
  const RowMatrixX<Scalar>& forward(ConstRowMatrixRef<Scalar> x, bool training = true) {
    constexpr const char* where = "kshot::Sequential::forward()";
    check_not_empty(where);
    KSHOT_CHECK(x.cols() == input_dim(), where,
                detail::cat("x has ", x.cols(), " columns but the model's input_dim is ", input_dim()));
    detail::check_finite(x, where, "x");
    rows_ = -1;  // no valid forward state until this call completes
    backward_done_ = r_done_ = false;
    const Index n = x.rows();
    if (detail::RefCopyProbe<Scalar>::copied(x)) {
      auto kept = misc_.matrix(kInput, n, input_dim());
      kept = x;
      run_forward(kept, n, training);
    } else {
      run_forward(x, n, training);
    }
    rows_ = n;
    return out_;
  }

  /// The output of the last forward() (0 x 0 before any).
  const RowMatrixX<Scalar>& output() const noexcept { return out_; }

  /**
   * @brief Accumulates dL/dparameters into gradients(), for the upstream gradient dy = dL/dy of the last
   * forward(). The first layer's dL/dx product is skipped.
   * @param dy n x output_dim(), n the rows of the last forward().
   * @throws std::invalid_argument if forward() has not run, dy has the wrong shape or a non-finite value.
   */
  void backward(ConstRowMatrixRef<Scalar> dy) { run_backward(dy, nullptr, "kshot::Sequential::backward()"); }

  /**
   * @brief As backward(dy), and also overwrites dx with dL/dx (n x input_dim()).
   * @throws std::invalid_argument also if dx is not n x input_dim().
   */
  void backward(ConstRowMatrixRef<Scalar> dy, RowMatrixRef<Scalar> dx) {
    constexpr const char* where = "kshot::Sequential::backward()";
    KSHOT_CHECK(rows_ >= 0, where, "call forward() first");
    detail::check_shape(dx, rows_, input_dim(), where, "dx");
    run_backward(dy, &dx, where);
  }

  // ---- Hessian-vector products (R-operator) -----------------------------------------------------------------

  /**
   * @brief R{y}: the directional derivative of the last forward()'s output along the parameter direction v
   * (the input held fixed), by Pearlmutter's R-operator.
   * @param v num_parameters() entries, laid out as parameters(); copied into the model.
   * @return n x output_dim(), a model member overwritten by the next forward_r().
   * @throws std::invalid_argument if forward() has not run, or v has the wrong size or a non-finite value.
   */
  const RowMatrixX<Scalar>& forward_r(ConstVectorRef<Scalar> v) {
    constexpr const char* where = "kshot::Sequential::forward_r()";
    KSHOT_CHECK(rows_ >= 0, where, "call forward() first");
    KSHOT_CHECK(v.size() == num_parameters(), where,
                detail::cat("v has ", v.size(), " entries but the model has ", num_parameters(), " parameters"));
    detail::check_finite(v, where, "v");
    r_done_ = false;
    direction_ = v;
    const Index n = rows_;
    auto rx = misc_.matrix(kZero, n, input_dim());
    rx.setZero();
    if (rout_.rows() != n || rout_.cols() != output_dim()) rout_.resize(n, output_dim());
    const std::size_t last = layers_.size() - 1;
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      LayerType& layer = *layers_[i];
      const Scalar* v_i = direction_.data() + offsets_[i];
      auto run = [&](const auto& rx_i) {
        if (i == last)
          layer.forward_r(rx_i, v_i, rout_);
        else
          layer.forward_r(rx_i, v_i, racts_.matrix(i, n, layer.output_dim()));
      };
      if (i == 0)
        run(rx);
      else
        run(racts_.matrix(i - 1, n, layer.input_dim()));
    }
    r_done_ = true;
    return rout_;
  }

  /**
   * @brief Overwrites hv with R{dL/dθ} along the direction of the last forward_r(): the Hessian-vector product
   * H v when rdy = R{dL/dy} is the loss's own R-operator applied to R{y} (for a squared error L = ½‖y − t‖²,
   * dy = y − t and rdy = R{y}).
   * @param dy the dL/dy given to the last backward() (n x output_dim()).
   * @param rdy R{dL/dy} (n x output_dim()).
   * @param hv num_parameters() entries, overwritten.
   * @throws std::invalid_argument if backward() and forward_r() have not both run after the last forward(),
   * or a shape is wrong, or dy / rdy hold a non-finite value.
   */
  void backward_r(ConstRowMatrixRef<Scalar> dy, ConstRowMatrixRef<Scalar> rdy, VectorRef<Scalar> hv) {
    constexpr const char* where = "kshot::Sequential::backward_r()";
    KSHOT_CHECK(rows_ >= 0 && backward_done_, where, "call forward() and backward() first");
    KSHOT_CHECK(r_done_, where, "call forward_r() after forward() first");
    detail::check_shape(dy, rows_, output_dim(), where, "dy");
    detail::check_shape(rdy, rows_, output_dim(), where, "rdy");
    KSHOT_CHECK(hv.size() == num_parameters(), where,
                detail::cat("hv has ", hv.size(), " entries but the model has ", num_parameters(), " parameters"));
    detail::check_finite(dy, where, "dy");
    detail::check_finite(rdy, where, "rdy");
    hv.setZero();
    const Index n = rows_;
    const std::size_t last = layers_.size() - 1;
    auto scratch = misc_.matrix(kScratch, n, input_dim());
    for (std::size_t k = layers_.size(); k-- > 0;) {
      LayerType& layer = *layers_[k];
      const Scalar* v = direction_.data() + offsets_[k];
      Scalar* rg = hv.data() + offsets_[k];
      auto run = [&](const auto& dy_k, const auto& rdy_k) {
        if (k > 0)
          layer.backward_r(dy_k, rdy_k, v, rg, rgrads_.matrix(k - 1, n, layer.input_dim()), true);
        else
          layer.backward_r(dy_k, rdy_k, v, rg, scratch, false);
      };
      if (k == last)
        run(dy, rdy);
      else
        run(grads_ws_.matrix(k, n, layer.output_dim()), rgrads_.matrix(k, n, layer.output_dim()));
    }
  }

  // ---- Save and load ----------------------------------------------------------------------------------------

  /**
   * @brief Writes the model (layer types, configurations, parameters; not gradients) in kshot's binary
   * format (kshot/nn/serialize.hpp) to `out`.
   * @throws std::invalid_argument if a parameter is not finite (nothing is written then).
   * @throws std::runtime_error if the stream fails.
   */
  void save(std::ostream& out) const {
    check_savable("kshot::Sequential::save()");
    write(out);
    if (!out) detail::throw_runtime_error("kshot::Sequential::save()", "the output stream failed");
  }

  /**
   * @brief Writes the model to `path`, through `path + ".tmp"` renamed over `path` at the end, so a failure
   * never leaves a half-written model file (the temporary is removed).
   * @throws std::invalid_argument if a parameter is not finite (no file is touched).
   * @throws std::runtime_error naming the path if the file cannot be written or renamed.
   */
  void save(const std::string& path) const {
    constexpr const char* where = "kshot::Sequential::save()";
    check_savable(where);
    detail::write_file_atomically(path, where, [&](std::ostream& out) { write(out); });
  }

  /**
   * @brief Reads a model saved by save(path) into a new model, returned only when everything checked.
   *
   * @param path the file.
   * @param convert_scalar when false (default) a file of the other scalar type throws; when true its values
   * are converted (float to double exactly; double to float rounded to nearest, values beyond float's range
   * throw).
   * @throws std::runtime_error naming the path and what is wrong: the file cannot be opened, wrong magic,
   * unknown format version, scalar size mismatch, unknown layer type or invalid configuration, a layer whose
   * input_dim differs from the previous layer's output_dim, a parameter count that differs from the layer's,
   * a non-finite parameter, a model without parameters wider than detail::model_max_unbacked_width (2^24: no
   * byte of the file backs its width), a truncated file, a checksum mismatch, or bytes after the checksum.
   */
  static Sequential load(const std::string& path, bool convert_scalar = false) {
    constexpr const char* where = "kshot::Sequential::load()";
    std::ifstream in(path, std::ios::binary);
    if (!in) detail::throw_runtime_error(where, detail::cat("'", path, "': cannot open the file"));
    in.seekg(0, std::ios::end);
    const std::streamoff size = in.tellg();
    in.seekg(0, std::ios::beg);
    if (!in || size < 0) detail::throw_runtime_error(where, detail::cat("'", path, "': cannot read the file size"));
    detail::ModelReader reader(in, where, "'" + path + "'", static_cast<std::int64_t>(size));
    Sequential model = read(reader, convert_scalar);
    if (reader.offset() != static_cast<std::int64_t>(size))
      reader.fail(detail::cat(static_cast<std::int64_t>(size) - reader.offset(),
                              " bytes of trailing data after the checksum"));
    return model;
  }

  /**
   * @brief Reads one model from `in` (as written by save(std::ostream&)) and leaves the stream just after it,
   * so that a model can be followed by other data in the same stream.
   * @param name names the source in messages.
   * @throws std::runtime_error as load(path), except that trailing bytes are not checked.
   */
  static Sequential load(std::istream& in, bool convert_scalar = false, const std::string& name = "stream") {
    detail::ModelReader reader(in, "kshot::Sequential::load()", name, -1);
    return read(reader, convert_scalar);
  }

 private:
  enum MiscSlot : std::size_t { kInput, kScratch, kZero };

  std::size_t checked_index(Index i, const char* where) const {
    KSHOT_CHECK_RANGE(i >= 0 && i < size(), where, detail::cat("i is ", i, " but the model has ", size(), " layers"));
    return static_cast<std::size_t>(i);
  }

  void check_not_empty(const char* where) const { KSHOT_CHECK(!empty(), where, "the model has no layers"); }

  /// Appends without checks or initialisation; grows the vectors (values kept, new slice zero) and rebinds.
  LayerType& append(std::unique_ptr<LayerType> layer) {
    if (offsets_.empty()) offsets_.push_back(0);
    const Index before = num_parameters(), after = before + layer->num_parameters();
    VectorX<Scalar> params = VectorX<Scalar>::Zero(after), grads = VectorX<Scalar>::Zero(after);
    params.head(before) = params_;
    grads.head(before) = grads_;
    layers_.reserve(layers_.size() + 1);
    offsets_.reserve(offsets_.size() + 1);
    layers_.push_back(std::move(layer));
    offsets_.push_back(after);
    params_.swap(params);
    grads_.swap(grads);
    rows_ = -1;
    backward_done_ = r_done_ = false;
    rebind();
    return *layers_.back();
  }

  void rebind() noexcept {
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      const Index off = offsets_[i];
      const bool has = layers_[i]->num_parameters() > 0;
      layers_[i]->bind(has ? params_.data() + off : nullptr, has ? grads_.data() + off : nullptr);
    }
  }

  void run_forward(const ConstRowMatrixRef<Scalar>& x, Index n, bool training) {
    if (out_.rows() != n || out_.cols() != output_dim()) out_.resize(n, output_dim());
    const std::size_t last = layers_.size() - 1;
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      LayerType& layer = *layers_[i];
      auto run = [&](const auto& x_i) {
        if (i == last)
          layer.forward(x_i, out_, training);
        else
          layer.forward(x_i, acts_.matrix(i, n, layer.output_dim()), training);
      };
      if (i == 0)
        run(x);
      else
        run(acts_.matrix(i - 1, n, layer.input_dim()));
    }
  }

  void run_backward(const ConstRowMatrixRef<Scalar>& dy, RowMatrixRef<Scalar>* dx, const char* where) {
    KSHOT_CHECK(rows_ >= 0, where, "call forward() first");
    detail::check_shape(dy, rows_, output_dim(), where, "dy");
    detail::check_finite(dy, where, "dy");
    const Index n = rows_;
    const std::size_t last = layers_.size() - 1;
    for (std::size_t k = layers_.size(); k-- > 0;) {
      LayerType& layer = *layers_[k];
      auto run = [&](const auto& dy_k) {
        if (k > 0)
          layer.backward(dy_k, grads_ws_.matrix(k - 1, n, layer.input_dim()), true);
        else if (dx != nullptr)
          layer.backward(dy_k, *dx, true);
        else
          layer.backward(dy_k, misc_.matrix(kScratch, n, input_dim()), false);
      };
      if (k == last)
        run(dy);
      else
        run(grads_ws_.matrix(k, n, layer.output_dim()));
    }
    backward_done_ = true;
  }

  void check_savable(const char* where) const {
    if (!detail::all_finite(params_)) {
      for (Index k = 0; k < num_parameters(); ++k) {
        if (std::isfinite(params_[k])) continue;
        std::size_t i = 0;
        while (offsets_[i + 1] <= k) ++i;
        detail::throw_invalid_argument(where, detail::cat("parameter ", k, " (layer ", i, ", ", layers_[i]->type_name(),
                                                          ") is not finite (", params_[k], ")"));
      }
    }
  }

  void write(std::ostream& out) const {
    detail::ModelWriter w(out);
    w.bytes(detail::model_magic, sizeof(detail::model_magic));
    w.u32(detail::model_format_version);
    w.u32(static_cast<std::uint32_t>(sizeof(Scalar)));
    w.u64(static_cast<std::uint64_t>(layers_.size()));
    for (std::size_t i = 0; i < layers_.size(); ++i) {
      const LayerType& layer = *layers_[i];
      const std::string name = layer.type_name();
      const std::vector<double> config = layer.config();
      w.u32(static_cast<std::uint32_t>(name.size()));
      w.bytes(name.data(), name.size());
      w.u32(static_cast<std::uint32_t>(config.size()));
      for (double c : config) w.f64(c);
      const Index count = layer.num_parameters();
      w.u64(static_cast<std::uint64_t>(count));
      w.scalars(params_.data() + offsets_[i], count);
    }
    w.finish();
  }

  static Sequential read(detail::ModelReader& r, bool convert_scalar) {
    char magic[sizeof(detail::model_magic)];
    r.bytes(magic, sizeof(magic), "the magic bytes");
    if (std::memcmp(magic, detail::model_magic, sizeof(magic)) != 0)
      r.fail("wrong magic bytes: not a kshot model file (expected \"KSHOTNN1\")");
    const std::uint32_t version = r.u32("the format version");
    if (version != detail::model_format_version)
      r.fail(detail::cat("unsupported format version ", version, " (this kshot reads version ",
                         detail::model_format_version, ")"));
    const std::uint32_t scalar_size = r.u32("the scalar size");
    if (scalar_size != 4 && scalar_size != 8)
      r.fail(detail::cat("scalar size ", scalar_size, " is neither 4 (float) nor 8 (double)"));
    if (scalar_size != sizeof(Scalar) && !convert_scalar)
      r.fail(detail::cat("the file holds ", scalar_size == 4 ? "float" : "double", " parameters but the model is ",
                         sizeof(Scalar) == 4 ? "Sequential<float>" : "Sequential<double>",
                         "; pass convert_scalar = true to convert them"));
    const std::uint64_t count = r.u64("the layer count");
    // Each layer takes at least 17 bytes (name length, a 1-byte name, config count, parameter count).
    if (count > (std::uint64_t(1) << 24)) r.fail(detail::cat("implausible layer count ", count));
    r.require_available(count * 17, "the layer table");

    Sequential model;
    std::vector<Scalar> values;
    for (std::uint64_t i = 0; i < count; ++i) {
      const std::uint32_t name_size = r.u32("a layer's type name length");
      if (name_size < 1 || name_size > detail::model_max_name)
        r.fail(detail::cat("layer ", i, ": type name length ", name_size, " is not in [1, ", detail::model_max_name,
                           "]"));
      std::string name(name_size, '\0');
      r.bytes(&name[0], name_size, "a layer's type name");
      const std::uint32_t config_size = r.u32("a layer's config count");
      if (config_size > detail::model_max_config)
        r.fail(detail::cat("layer ", i, " (", name, "): config count ", config_size, " exceeds ",
                           detail::model_max_config));
      std::vector<double> config(config_size);
      for (auto& c : config) c = r.f64("a layer's config");
      std::unique_ptr<LayerType> layer;
      try {
        layer = detail::make_layer<Scalar>(name, config);
      } catch (const std::exception& e) {
        r.fail(detail::cat("layer ", i, ": ", e.what()));
      }
      if (!model.empty() && layer->input_dim() != model.output_dim())
        r.fail(detail::cat("layer ", i, " (", name, ") has input_dim ", layer->input_dim(), " but layer ", i - 1,
                           " has output_dim ", model.output_dim()));
      const std::uint64_t stored = r.u64("a layer's parameter count");
      const auto expected = static_cast<std::uint64_t>(layer->num_parameters());
      if (stored != expected)
        r.fail(detail::cat("layer ", i, " (", name, "): the file has ", stored, " parameters but the layer has ",
                           expected));
      if (stored > std::numeric_limits<std::uint64_t>::max() / scalar_size)
        r.fail(detail::cat("layer ", i, " (", name, "): ", stored, " parameters of ", scalar_size,
                           " bytes overflow a 64-bit byte count"));
      r.require_available(stored * scalar_size, "the parameters");
      r.scalars(scalar_size, stored, values, detail::cat("parameters of layer ", i, " (", name, ")"));
      model.append(std::move(layer));
    }
    // Every width next to a layer with parameters is backed by at least that many stored parameters; a model
    // without any (activations, L2Normalize, Dropout, LayerNorm without affine) declares a width that no byte of
    // the file backs, and every forward() would be sized by it.
    if (!model.empty() && model.num_parameters() == 0 &&
        static_cast<std::uint64_t>(model.input_dim()) > detail::model_max_unbacked_width)
      r.fail(detail::cat("the model has no parameters but width ", model.input_dim(), "; a model file without ",
                         "parameters may declare a width of at most ", detail::model_max_unbacked_width));
    const std::uint64_t computed = r.hash();
    const std::uint64_t checksum = r.u64("the checksum");
    if (checksum != computed)
      r.fail(detail::cat("checksum mismatch (stored 0x", std::hex, checksum, ", computed 0x", computed, std::dec,
                         "): the data is corrupt"));
    if (!values.empty()) model.params_ = Eigen::Map<const VectorX<Scalar>>(values.data(), model.num_parameters());
    return model;
  }

  std::vector<std::unique_ptr<LayerType>> layers_;
  VectorX<Scalar> params_, grads_;
  std::vector<Index> offsets_;  // offsets_[i] = start of layer i's slice; offsets_[size()] = num_parameters()
  VectorX<Scalar> direction_;   // the v of the last forward_r()
  detail::Workspace<Scalar> acts_, grads_ws_, racts_, rgrads_, misc_;
  Index rows_ = -1;  // rows of the last completed forward(), -1 before
  bool backward_done_ = false, r_done_ = false;
  RowMatrixX<Scalar> out_, rout_;  // the outputs of forward() and forward_r()
};

/**
 * @brief A multilayer perceptron Linear-act-Linear-...-Linear (no activation after the last), e.g.
 * `make_mlp<float>({784, 256, 64})` = Linear(784, 256), ReLU, Linear(256, 64).
 *
 * @param dims the widths: input, hidden..., output (at least two entries, each >= 1).
 * @param act the activation between linear layers.
 * @param init the linear layers' initialisation scheme.
 * @param seed parameters are initialize(seed)'s.
 * @param bias whether the linear layers have a bias.
 * @throws std::invalid_argument if dims has fewer than two entries or one below 1 (naming its index).
 */
template <class Scalar = float>
Sequential<Scalar> make_mlp(const std::vector<Index>& dims, Activation act = Activation::relu,
                            Init init = Init::pytorch_default, std::uint64_t seed = 0, bool bias = true) {
  constexpr const char* where = "kshot::make_mlp()";
  KSHOT_CHECK(dims.size() >= 2, where, detail::cat("dims needs at least 2 entries (input and output), got ", dims.size()));
  for (std::size_t i = 0; i < dims.size(); ++i)
    KSHOT_CHECK(dims[i] >= 1, where, detail::cat("dims[", i, "] is ", dims[i], " but must be at least 1"));
  Sequential<Scalar> model;
  for (std::size_t i = 0; i + 1 < dims.size(); ++i) {
    model.add(std::make_unique<Linear<Scalar>>(dims[i], dims[i + 1], bias, init));
    if (i + 2 < dims.size()) model.add(make_activation<Scalar>(act, dims[i + 1]));
  }
  model.initialize(seed);
  return model;
}

}  // namespace kshot

#endif  // KSHOT_NN_SEQUENTIAL_HPP
