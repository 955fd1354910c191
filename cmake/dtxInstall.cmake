# Install rules (included from the top-level CMakeLists.txt when DTX_INSTALL is on).
#   include/dtx/...                        the headers
#   share/licenses/dtx/LICENSE             Boost Software License 1.0
#   share/cmake/dtx/dtxConfig.cmake        find_package(dtx [COMPONENTS sqlite postgres tls])
#   share/cmake/dtx/dtx[-<part>]Targets.cmake, dtxConfigVersion.cmake
#   share/pkgconfig/dtx[-<part>].pc
include(CMakePackageConfigHelpers)

set(DTX_INSTALL_CMAKEDIR "${CMAKE_INSTALL_DATADIR}/cmake/dtx" CACHE STRING
  "Where dtx's CMake package goes, relative to the install prefix")
set(DTX_INSTALL_PKGCONFIGDIR "${CMAKE_INSTALL_DATADIR}/pkgconfig" CACHE STRING
  "Where dtx's pkg-config files go, relative to the install prefix")

install(DIRECTORY include/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
# The license (Boost Software License 1.0, SPDX BSL-1.0) travels with the headers.
install(FILES LICENSE DESTINATION ${CMAKE_INSTALL_DATADIR}/licenses/dtx)

# One export set per part: dtxConfig.cmake loads a part's targets only when that
# part is asked for, after finding its dependency.
install(TARGETS dtx EXPORT dtxTargets)
install(EXPORT dtxTargets NAMESPACE dtx:: DESTINATION ${DTX_INSTALL_CMAKEDIR})
foreach(part IN LISTS DTX_PARTS)
  install(TARGETS dtx_${part} EXPORT dtx-${part}Targets)
  install(EXPORT dtx-${part}Targets NAMESPACE dtx:: DESTINATION ${DTX_INSTALL_CMAKEDIR})
endforeach()

# Before 1.0 a minor version may break compatibility (see DTX_ABI_NAMESPACE in
# <dtx/version.hpp>), from 1.0 on only a major one.
if(PROJECT_VERSION_MAJOR EQUAL 0)
  set(_dtx_compatibility SameMinorVersion)
else()
  set(_dtx_compatibility SameMajorVersion)
endif()
configure_package_config_file(cmake/dtxConfig.cmake.in
  "${PROJECT_BINARY_DIR}/dtxConfig.cmake"
  INSTALL_DESTINATION ${DTX_INSTALL_CMAKEDIR})
write_basic_package_version_file("${PROJECT_BINARY_DIR}/dtxConfigVersion.cmake"
  COMPATIBILITY ${_dtx_compatibility}
  ARCH_INDEPENDENT)
install(FILES
  "${PROJECT_BINARY_DIR}/dtxConfig.cmake"
  "${PROJECT_BINARY_DIR}/dtxConfigVersion.cmake"
  DESTINATION ${DTX_INSTALL_CMAKEDIR})

# pkg-config: dtx for the core, dtx-<part> for each part (it requires dtx and the
# part's dependency). Boost ships no pkg-config file: its headers must be on the
# compiler's default search path. The prefix is found from the .pc file's place.
file(RELATIVE_PATH _dtx_pc_to_prefix "/${DTX_INSTALL_PKGCONFIGDIR}" "/")
string(REGEX REPLACE "/$" "" _dtx_pc_to_prefix "${_dtx_pc_to_prefix}")
set(_dtx_pc_requires_ "nlohmann_json >= 3.11")
set(_dtx_pc_requires_http "dtx = ${PROJECT_VERSION}")
set(_dtx_pc_requires_tls "dtx-http = ${PROJECT_VERSION}, openssl")
set(_dtx_pc_requires_sqlite "dtx = ${PROJECT_VERSION}, sqlite3")
set(_dtx_pc_requires_postgres "dtx = ${PROJECT_VERSION}, libpq")
foreach(part "" ${DTX_PARTS})
  if(part STREQUAL "")
    set(DTX_PC_NAME dtx)
    set(DTX_PC_DESCRIPTION "${PROJECT_DESCRIPTION}")
    set(DTX_PC_CFLAGS "-I\${includedir} -pthread")
    set(DTX_PC_LIBS "-pthread")
  else()
    set(DTX_PC_NAME dtx-${part})
    set(DTX_PC_DESCRIPTION "dtx: the ${part} part")
    set(DTX_PC_CFLAGS "")
    set(DTX_PC_LIBS "")
  endif()
  set(DTX_PC_PREFIX "\${pcfiledir}/${_dtx_pc_to_prefix}")
  set(DTX_PC_REQUIRES "${_dtx_pc_requires_${part}}")
  configure_file(cmake/dtx.pc.in "${PROJECT_BINARY_DIR}/pkgconfig/${DTX_PC_NAME}.pc" @ONLY)
  install(FILES "${PROJECT_BINARY_DIR}/pkgconfig/${DTX_PC_NAME}.pc"
    DESTINATION ${DTX_INSTALL_PKGCONFIGDIR})
endforeach()
