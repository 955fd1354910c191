# cmake -DDTX_INCLUDE_DIR=<dir> -P dtxCheckAbiNamespace.cmake
#
# Fails when a header under <dir>/dtx opens namespace dtx other than through the
# macro pair of <dtx/version.hpp>, which opens the inline ABI namespace too:
#     DTX_NAMESPACE_BEGIN ... DTX_NAMESPACE_END     (not: namespace dtx { ... })
# or when a header's BEGINs and ENDs do not pair up. A declaration outside the ABI
# namespace would keep the same mangled name across versions whose layouts differ.
if(NOT DTX_INCLUDE_DIR)
  message(FATAL_ERROR "usage: cmake -DDTX_INCLUDE_DIR=<dir> -P dtxCheckAbiNamespace.cmake")
endif()
file(GLOB_RECURSE headers RELATIVE "${DTX_INCLUDE_DIR}" "${DTX_INCLUDE_DIR}/dtx/*.hpp")
list(SORT headers)
set(bad "")
set(count 0)
foreach(header IN LISTS headers)
  if(header STREQUAL "dtx/version.hpp") # defines the pair
    continue()
  endif()
  file(STRINGS "${DTX_INCLUDE_DIR}/${header}" lines
    REGEX "^[ \t]*((inline[ \t]+)?namespace[ \t]+dtx([ \t{]|::|$)|DTX_NAMESPACE_(BEGIN|END))")
  set(depth 0)
  foreach(line IN LISTS lines)
    string(STRIP "${line}" line)
    if(line STREQUAL "DTX_NAMESPACE_BEGIN")
      math(EXPR count "${count} + 1")
      math(EXPR depth "${depth} + 1")
    elseif(line STREQUAL "DTX_NAMESPACE_END")
      math(EXPR depth "${depth} - 1")
    else()
      list(APPEND bad "  ${header}: ${line}")
    endif()
    if(depth LESS 0 OR depth GREATER 1)
      list(APPEND bad "  ${header}: DTX_NAMESPACE_BEGIN and DTX_NAMESPACE_END do not pair up")
    endif()
  endforeach()
  if(NOT depth EQUAL 0)
    list(APPEND bad "  ${header}: DTX_NAMESPACE_BEGIN without DTX_NAMESPACE_END")
  endif()
endforeach()
if(bad)
  list(JOIN bad "\n" bad)
  message(FATAL_ERROR "namespace dtx opened outside DTX_NAMESPACE_BEGIN / DTX_NAMESPACE_END "
    "of <dtx/version.hpp>:\n${bad}")
endif()
message(STATUS "${count} openings of namespace dtx in ${DTX_INCLUDE_DIR}/dtx, all through DTX_NAMESPACE_BEGIN")
