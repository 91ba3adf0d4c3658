# Installs a build tree into a fresh prefix, as a user's `cmake --install` would, and checks that the
# installed package files are relocatable (they name neither the build nor the source folder).
#   cmake -DSOURCE_DIR=<source> -DBUILD_DIR=<build> -DPREFIX=<prefix> [-DCONFIGURE=<options>] -P stage.cmake
# With CONFIGURE (a ;-list of -D options), SOURCE_DIR is first configured into BUILD_DIR with them.
cmake_minimum_required(VERSION 3.25)
if(DEFINED CONFIGURE)
  execute_process(COMMAND "${CMAKE_COMMAND}" -S "${SOURCE_DIR}" -B "${BUILD_DIR}" ${CONFIGURE} COMMAND_ERROR_IS_FATAL ANY)
endif()
file(REMOVE_RECURSE "${PREFIX}")
execute_process(COMMAND "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${PREFIX}" COMMAND_ERROR_IS_FATAL ANY)

file(GLOB package_files "${PREFIX}/share/flashmemory/*.cmake")
if(NOT package_files)
  message(FATAL_ERROR "no package files under ${PREFIX}/share/flashmemory")
endif()
foreach(file IN LISTS package_files)
  file(READ "${file}" text)
  foreach(dir IN ITEMS "${BUILD_DIR}" "${SOURCE_DIR}" "${PREFIX}")
    string(FIND "${text}" "${dir}" at)
    if(NOT at EQUAL -1)
      message(FATAL_ERROR "${file} names the absolute path ${dir}: the package would not be relocatable")
    endif()
  endforeach()
endforeach()
