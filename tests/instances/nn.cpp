// SPDX-License-Identifier: MIT
// The library copy of the "nn" group of instances.hpp: explicit instantiation definitions, compiled once.
#define KSHOT_TEST_INSTANCES_DEFINE nn
#include "instances.hpp"
