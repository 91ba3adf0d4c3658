# Overlay port: the sources are the flashmemory checkout this port lives in (packaging/vcpkg/ports/flashmemory).
#   vcpkg install flashmemory --overlay-ports=<checkout>/packaging/vcpkg/ports
# libcu++ (CCCL) and, for the `cuda` component, the CUDA Toolkit come from the system toolkit: there is no
# dependency on vcpkg's `cuda` port, which would download NVIDIA's redistributables.
get_filename_component(SOURCE_PATH "${CMAKE_CURRENT_LIST_DIR}/../../../.." ABSOLUTE)

# The version has one home, CMakeLists.txt's project(); vcpkg.json must agree with it.
file(STRINGS "${SOURCE_PATH}/CMakeLists.txt" project_line REGEX "^project\\(flashmemory VERSION ")
string(REGEX MATCH "VERSION ([0-9.]+)" _ "${project_line}")
if(NOT CMAKE_MATCH_1 STREQUAL VERSION)
  message(FATAL_ERROR "vcpkg.json says ${PORT} ${VERSION} but ${SOURCE_PATH}/CMakeLists.txt says ${CMAKE_MATCH_1}")
endif()

set(VCPKG_BUILD_TYPE release)  # header-only: one configure, nothing to build
vcpkg_cmake_configure(
  SOURCE_PATH "${SOURCE_PATH}"
  OPTIONS
    -DFLASHMEMORY_BUILD_TESTS=OFF
    -DFLASHMEMORY_BUILD_EXAMPLES=OFF
    -DFLASHMEMORY_BUILD_BENCH=OFF)
vcpkg_cmake_install()
vcpkg_cmake_config_fixup(CONFIG_PATH share/flashmemory)

file(INSTALL "${CMAKE_CURRENT_LIST_DIR}/usage" DESTINATION "${CURRENT_PACKAGES_DIR}/share/${PORT}")
vcpkg_install_copyright(FILE_LIST "${SOURCE_PATH}/LICENSE")
