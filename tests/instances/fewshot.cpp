// SPDX-License-Identifier: MIT
// The library copy of the "fewshot" group of instances.hpp: explicit instantiation definitions, compiled once.
#define KSHOT_TEST_INSTANCES_DEFINE fewshot
#include "instances.hpp"
