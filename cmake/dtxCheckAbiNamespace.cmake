# cmake -DDTX_INCLUDE_DIR=<dir> -P dtxCheckAbiNamespace.cmake
#
# Fails when a header under <dir>/dtx opens namespace dtx other than through the
# inline ABI namespace of <dtx/version.hpp>:
#     namespace dtx::inline DTX_ABI_NAMESPACE {            (was: namespace dtx {)
#     namespace dtx::inline DTX_ABI_NAMESPACE::http {      (was: namespace dtx::http {)
# A declaration outside it would keep the same mangled name across versions whose
# layouts differ.
if(NOT DTX_INCLUDE_DIR)
  message(FATAL_ERROR "usage: cmake -DDTX_INCLUDE_DIR=<dir> -P dtxCheckAbiNamespace.cmake")
endif()
file(GLOB_RECURSE headers RELATIVE "${DTX_INCLUDE_DIR}" "${DTX_INCLUDE_DIR}/dtx/*.hpp")
list(SORT headers)
set(bad "")
set(count 0)
foreach(header IN LISTS headers)
  file(STRINGS "${DTX_INCLUDE_DIR}/${header}" lines REGEX "^[ \t]*(inline[ \t]+)?namespace[ \t]+dtx([ \t{]|::|$)")
  foreach(line IN LISTS lines)
    math(EXPR count "${count} + 1")
    if(NOT line MATCHES "^[ \t]*namespace dtx::inline DTX_ABI_NAMESPACE( |::)")
      string(STRIP "${line}" line)
      list(APPEND bad "  ${header}: ${line}")
    endif()
  endforeach()
endforeach()
if(bad)
  list(JOIN bad "\n" bad)
  message(FATAL_ERROR "namespace dtx opened outside the ABI namespace "
    "(write namespace dtx::inline DTX_ABI_NAMESPACE...):\n${bad}")
endif()
message(STATUS "${count} openings of namespace dtx in ${DTX_INCLUDE_DIR}/dtx, all through DTX_ABI_NAMESPACE")
