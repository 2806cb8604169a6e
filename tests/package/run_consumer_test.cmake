# SPDX-License-Identifier: MIT
# Installs kshot into a fresh prefix, then configures, builds and runs tests/package as a separate project
# that finds kshot through find_package(kshot). Run by ctest as `cmake -P`.
file(REMOVE_RECURSE "${KSHOT_WORK_DIR}")
set(prefix "${KSHOT_WORK_DIR}/prefix")
execute_process(COMMAND "${CMAKE_COMMAND}" --install "${KSHOT_BINARY_DIR}" --prefix "${prefix}"
                RESULT_VARIABLE rc OUTPUT_QUIET)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "installing kshot into ${prefix} failed (${rc})")
endif()
foreach(f include/kshot/kshot.hpp include/kshot/core/version.hpp share/cmake/kshot/kshotConfig.cmake
          share/cmake/kshot/kshotConfigVersion.cmake share/cmake/kshot/kshotTargets.cmake)
  if(NOT EXISTS "${prefix}/${f}")
    message(FATAL_ERROR "the install lacks ${f}")
  endif()
endforeach()
execute_process(COMMAND "${CMAKE_COMMAND}" -S "${KSHOT_SOURCE_DIR}/tests/package" -B "${KSHOT_WORK_DIR}/build"
                        -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_CXX_COMPILER=${KSHOT_CXX_COMPILER}
                        -DCMAKE_BUILD_TYPE=  # unoptimised: the test is about the package, and -O0 compiles fastest
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "configuring the consumer project failed (${rc})")
endif()
execute_process(COMMAND "${CMAKE_COMMAND}" --build "${KSHOT_WORK_DIR}/build" RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "building the consumer project failed (${rc})")
endif()
foreach(program consumer consumer_optional)
  execute_process(COMMAND "${KSHOT_WORK_DIR}/build/${program}" RESULT_VARIABLE rc OUTPUT_VARIABLE out)
  message(STATUS "${program}: ${out}")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "the consumer program ${program} failed (${rc}): ${out}")
  endif()
  if(NOT out MATCHES "kshot [0-9]+\\.[0-9]+\\.[0-9]+ ok")
    message(FATAL_ERROR "the consumer program ${program} printed an unexpected line: ${out}")
  endif()
endforeach()
