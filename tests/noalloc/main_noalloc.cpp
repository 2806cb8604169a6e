// SPDX-License-Identifier: MIT
// The no-allocation test runner: doctest's main plus a counting operator new (see alloc_counter.hpp).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
