# Builds and runs the consumer project (project/) in one mode; the CTest tests of
# tests/consumer/CMakeLists.txt call it.
#
#   cmake -DMODE=<mode> -DDTX_SOURCE_DIR=<checkout> -DWORK_DIR=<dir>
#         -DGENERATOR=<generator> -DCXX=<compiler> [-DPREFIX=<install prefix>]
#         -P run.cmake
#
# MODE install: installs the dtx build tree BUILD_DIR into PREFIX (a fresh one) for
# the modes find_package and pkg_config.
foreach(var MODE WORK_DIR)
  if(NOT DEFINED ${var})
    message(FATAL_ERROR "run.cmake: -D${var}=... missing")
  endif()
endforeach()

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    list(JOIN ARGN " " command)
    message(FATAL_ERROR "consumer ${MODE}: failed (${rc}): ${command}")
  endif()
endfunction()

file(REMOVE_RECURSE "${WORK_DIR}")
if(MODE STREQUAL "install")
  run("${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${WORK_DIR}")
  return()
endif()

set(args
  -S "${CMAKE_CURRENT_LIST_DIR}/project" -B "${WORK_DIR}" -G "${GENERATOR}"
  -DCMAKE_CXX_COMPILER=${CXX}
  -DDTX_CONSUMER_MODE=${MODE}
  -DDTX_SOURCE_DIR=${DTX_SOURCE_DIR})
if(MODE STREQUAL "find_package")
  list(APPEND args -DCMAKE_PREFIX_PATH=${PREFIX} -DDTX_EXPECTED_PREFIX=${PREFIX})
elseif(MODE STREQUAL "pkg_config")
  set(ENV{PKG_CONFIG_PATH} "${PREFIX}/share/pkgconfig")
  list(APPEND args -DDTX_EXPECTED_PREFIX=${PREFIX})
elseif(MODE STREQUAL "fetchcontent")
  list(APPEND args -DFETCHCONTENT_SOURCE_DIR_DTX=${DTX_SOURCE_DIR})
endif()
run("${CMAKE_COMMAND}" ${args})
run("${CMAKE_COMMAND}" --build "${WORK_DIR}")
execute_process(COMMAND "${WORK_DIR}/consumer" WORKING_DIRECTORY "${WORK_DIR}" RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "consumer ${MODE}: the program failed (${rc})")
endif()
