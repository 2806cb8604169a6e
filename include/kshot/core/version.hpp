/**
 * @file kshot/core/version.hpp
 * @brief The library version, single-sourced here (CMake parses these three lines).
 *
 * SPDX-License-Identifier: MIT
 */
#ifndef KSHOT_CORE_VERSION_HPP
#define KSHOT_CORE_VERSION_HPP

#define KSHOT_VERSION_MAJOR 0
#define KSHOT_VERSION_MINOR 1
#define KSHOT_VERSION_PATCH 0

#define KSHOT_VERSION_STRINGIFY_IMPL(x) #x
#define KSHOT_VERSION_STRINGIFY(x) KSHOT_VERSION_STRINGIFY_IMPL(x)
/// The version as a string literal, e.g. "0.1.0".
#define KSHOT_VERSION_STRING                                                                       \
  KSHOT_VERSION_STRINGIFY(KSHOT_VERSION_MAJOR)                                                     \
  "." KSHOT_VERSION_STRINGIFY(KSHOT_VERSION_MINOR) "." KSHOT_VERSION_STRINGIFY(KSHOT_VERSION_PATCH)

namespace kshot {

/// The library version as numbers and as a string.
struct Version {
  static constexpr int major = KSHOT_VERSION_MAJOR;
  static constexpr int minor = KSHOT_VERSION_MINOR;
  static constexpr int patch = KSHOT_VERSION_PATCH;
  /// "major.minor.patch".
  static constexpr const char* string() noexcept { return KSHOT_VERSION_STRING; }
  /// major * 10000 + minor * 100 + patch, for compile-time comparisons.
  static constexpr int number() noexcept { return major * 10000 + minor * 100 + patch; }
};

}  // namespace kshot

#endif  // KSHOT_CORE_VERSION_HPP
