/**
 * @file kshot/train/progress.hpp
 * @brief A one-line progress bar for training loops: steps done, rate, ETA, running loss and the last
 * validation accuracy, redrawn in place on a stream (stderr by default) and silent when switched off.
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_TRAIN_PROGRESS_HPP
#define KSHOT_TRAIN_PROGRESS_HPP

#include "kshot/core/check.hpp"

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <ostream>
#include <string>
#include <utility>

namespace kshot {

/**
 * @brief A progress bar redrawn in place ("\r") on a stream:
 * `[=========>          ] 4500/10000  812 ep/s  ETA 0:07  loss 0.4312  val 78.41% +- 0.92%`.
 *
 * The bar prints nothing at all when its stream is null (switched off). When on, it redraws at most once
 * every `interval_seconds` (and always on finish()), so it costs nothing measurable in a training loop.
 * kshot prints nowhere else: this bar is the library's only output, and only when a trainer is asked for it.
 *
 * @note Not thread-safe; one bar per training loop. The rate is measured from start() on the steady clock.
 */
class ProgressBar {
 public:
  /**
   * @brief A bar on `stream` (nullptr: off, prints nothing).
   * @param stream where to draw, e.g. `&std::cerr`; nullptr switches the bar off.
   * @param unit the name of one step in the rate, e.g. "ep" (episodes) or "batch".
   * @param interval_seconds the least time between two redraws (>= 0).
   * @throws std::invalid_argument if interval_seconds is negative or not finite.
   */
  explicit ProgressBar(std::ostream* stream = nullptr, std::string unit = "ep", double interval_seconds = 0.2)
      : stream_(stream), unit_(std::move(unit)), interval_(interval_seconds) {
    KSHOT_CHECK(std::isfinite(interval_seconds) && interval_seconds >= 0, "kshot::ProgressBar::ProgressBar()",
                detail::cat("interval_seconds must be finite and >= 0, got ", interval_seconds));
  }

  /// True when the bar draws (its stream is not null).
  bool enabled() const noexcept { return stream_ != nullptr; }

  /// Starts the clock for a run of `total` steps (the bar shows done / total).
  void start(std::int64_t total) {
    total_ = total < 0 ? 0 : total;
    done_ = 0;
    start_ = last_draw_ = std::chrono::steady_clock::now();
    drawn_ = false;
  }

  /// Records the latest training loss (shown as given).
  void set_loss(double loss) noexcept { loss_ = loss; }

  /// Records the latest validation accuracy and its 95% half-width (fractions in [0, 1]).
  void set_validation(double accuracy, double half_width) noexcept {
    val_ = accuracy;
    val_half_ = half_width;
    has_val_ = true;
  }

  /// Sets the steps done and redraws if the interval has passed.
  void update(std::int64_t done) {
    done_ = done;
    if (!enabled()) return;
    const auto now = std::chrono::steady_clock::now();
    if (drawn_ && std::chrono::duration<double>(now - last_draw_).count() < interval_) return;
    draw(now);
  }

  /// Draws the final state and ends the line. Does nothing when off.
  void finish() {
    if (!enabled()) return;
    draw(std::chrono::steady_clock::now());
    *stream_ << '\n';
    stream_->flush();
  }

  /// The line the bar would draw now (without "\r"), for logs and tests.
  std::string line() const { return format(std::chrono::steady_clock::now()); }

 private:
  void draw(std::chrono::steady_clock::time_point now) {
    *stream_ << '\r' << format(now);
    stream_->flush();
    last_draw_ = now;
    drawn_ = true;
  }

  static std::string clock(double seconds) {
    if (!std::isfinite(seconds) || seconds < 0) return "?";
    const auto s = static_cast<std::int64_t>(seconds + 0.5);
    char buffer[32];
    if (s >= 3600)
      std::snprintf(buffer, sizeof(buffer), "%lld:%02lld:%02lld", static_cast<long long>(s / 3600),
                    static_cast<long long>((s / 60) % 60), static_cast<long long>(s % 60));
    else
      std::snprintf(buffer, sizeof(buffer), "%lld:%02lld", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
    return buffer;
  }

  std::string format(std::chrono::steady_clock::time_point now) const {
    constexpr int width = 24;
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    const double fraction = total_ > 0 ? static_cast<double>(done_) / static_cast<double>(total_) : 1.0;
    const int filled = static_cast<int>(std::floor(fraction * width));
    std::string bar = "[";
    for (int k = 0; k < width; ++k) bar += k < filled ? '=' : (k == filled ? '>' : ' ');
    bar += "]";
    const double rate = elapsed > 0 ? static_cast<double>(done_) / elapsed : 0.0;
    const double eta = rate > 0 ? static_cast<double>(total_ - done_) / rate : -1.0;
    char buffer[160];
    std::snprintf(buffer, sizeof(buffer), " %lld/%lld  %.0f %s/s  ETA %s", static_cast<long long>(done_),
                  static_cast<long long>(total_), rate, unit_.c_str(), clock(eta).c_str());
    std::string text = bar + buffer;
    if (std::isfinite(loss_)) {
      std::snprintf(buffer, sizeof(buffer), "  loss %.4f", loss_);
      text += buffer;
    }
    if (has_val_) {
      std::snprintf(buffer, sizeof(buffer), "  val %.2f%% +- %.2f%%", 100 * val_, 100 * val_half_);
      text += buffer;
    }
    return text;
  }

  std::ostream* stream_;
  std::string unit_;
  double interval_;
  std::int64_t total_ = 0, done_ = 0;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now(), last_draw_ = start_;
  bool drawn_ = false;
  double loss_ = std::nan("");
  double val_ = 0, val_half_ = 0;
  bool has_val_ = false;
};

}  // namespace kshot

#endif  // KSHOT_TRAIN_PROGRESS_HPP
