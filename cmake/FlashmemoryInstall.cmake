# install() + export: find_package(flashmemory CONFIG REQUIRED [COMPONENTS cuda]) from an installed prefix.
include_guard(GLOBAL)
include(CMakePackageConfigHelpers)

set(FLASHMEMORY_INSTALL_CMAKEDIR "${CMAKE_INSTALL_DATADIR}/flashmemory" CACHE STRING
    "Where flashmemoryConfig.cmake is installed (relative to the prefix)")

install(DIRECTORY "${PROJECT_SOURCE_DIR}/include/flashmemory" DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}")
install(FILES "${PROJECT_BINARY_DIR}/include/flashmemory/version.hpp"
        DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}/flashmemory")

install(TARGETS flashmemory EXPORT flashmemoryTargets)
install(EXPORT flashmemoryTargets NAMESPACE flashmemory:: DESTINATION "${FLASHMEMORY_INSTALL_CMAKEDIR}")
if(TARGET flashmemory_cuda)
  install(TARGETS flashmemory_cuda EXPORT flashmemoryCudaTargets)
  install(EXPORT flashmemoryCudaTargets NAMESPACE flashmemory:: DESTINATION "${FLASHMEMORY_INSTALL_CMAKEDIR}")
endif()

configure_package_config_file(cmake/flashmemoryConfig.cmake.in
  "${PROJECT_BINARY_DIR}/flashmemoryConfig.cmake"
  INSTALL_DESTINATION "${FLASHMEMORY_INSTALL_CMAKEDIR}")
write_basic_package_version_file("${PROJECT_BINARY_DIR}/flashmemoryConfigVersion.cmake"
  COMPATIBILITY SameMajorVersion ARCH_INDEPENDENT)
install(FILES "${PROJECT_BINARY_DIR}/flashmemoryConfig.cmake" "${PROJECT_BINARY_DIR}/flashmemoryConfigVersion.cmake"
        DESTINATION "${FLASHMEMORY_INSTALL_CMAKEDIR}")
