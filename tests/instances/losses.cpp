// SPDX-License-Identifier: MIT
// The library copy of the "losses" group of instances.hpp: explicit instantiation definitions, compiled once.
#define KSHOT_TEST_INSTANCES_DEFINE losses
#include "instances.hpp"
