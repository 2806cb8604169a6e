// SPDX-License-Identifier: MIT
// The library copy of the "core" group of instances.hpp: explicit instantiation definitions, compiled once.
#define KSHOT_TEST_INSTANCES_DEFINE core
#include "instances.hpp"
