# vcpkg port of dtx, as an overlay port of the checkout that holds it:
#   vcpkg install "dtx[sqlite,http]" --overlay-ports=<checkout>/ports
# It builds on dtx's own CMake install (the one tests/consumer checks). For a
# registry, take the sources from a release instead of the checkout:
#   vcpkg_from_github(OUT_SOURCE_PATH SOURCE_PATH REPO <owner>/dtx REF "v${VERSION}" SHA512 <sha512>)
get_filename_component(SOURCE_PATH "${CMAKE_CURRENT_LIST_DIR}/../.." ABSOLUTE)

set(VCPKG_BUILD_TYPE release) # header-only: nothing differs between debug and release

# The parts with a link dependency are switched on or off explicitly (never found by chance).
vcpkg_check_features(OUT_FEATURE_OPTIONS FEATURE_OPTIONS
  FEATURES
    tls      DTX_TLS
    sqlite   DTX_SQLITE
    postgres DTX_POSTGRES
)

vcpkg_cmake_configure(
  SOURCE_PATH "${SOURCE_PATH}"
  OPTIONS
    ${FEATURE_OPTIONS}
    -DDTX_BUILD_TESTS=OFF
    -DDTX_BUILD_EXAMPLES=OFF
    -DDTX_BUILD_BENCH=OFF
    -DDTX_INSTALL=ON
    -DDTX_INSTALL_CMAKEDIR=share/dtx
    -DDTX_INSTALL_PKGCONFIGDIR=share/pkgconfig
)
vcpkg_cmake_install()
vcpkg_cmake_config_fixup(PACKAGE_NAME dtx CONFIG_PATH share/dtx)
vcpkg_fixup_pkgconfig()

file(INSTALL "${CMAKE_CURRENT_LIST_DIR}/usage" DESTINATION "${CURRENT_PACKAGES_DIR}/share/${PORT}")
vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/LICENSE")
