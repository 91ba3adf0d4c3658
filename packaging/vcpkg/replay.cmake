# Replays the overlay port without vcpkg, which CI cannot install from a package registry: validates
# ports/flashmemory/vcpkg.json, then runs ports/flashmemory/portfile.cmake with stand-ins for the vcpkg
# helpers it calls, each doing the CMake steps of its namesake, into a staging prefix laid out as
# vcpkg's packages/<port>_<triplet> folder.
#   cmake -DPREFIX=<staging prefix> -DWORK=<scratch folder> [-DGENERATOR=Ninja] -P packaging/vcpkg/replay.cmake
# Not replayed: vcpkg's dependency resolution (nlohmann-json comes from the system), its toolchain file
# and its post-build lint beyond the layout check at the end.
cmake_minimum_required(VERSION 3.25)
set(port_dir "${CMAKE_CURRENT_LIST_DIR}/ports/flashmemory")
if(NOT GENERATOR)
  set(GENERATOR Ninja)
endif()

# ---- the manifest: valid JSON with the fields vcpkg needs --------------------------------------------
file(READ "${port_dir}/vcpkg.json" manifest)
foreach(field IN ITEMS name version-semver description supports dependencies)
  string(JSON value ERROR_VARIABLE error GET "${manifest}" ${field})
  if(error)
    message(FATAL_ERROR "vcpkg.json: ${error}")
  endif()
endforeach()
string(JSON PORT GET "${manifest}" name)
string(JSON VERSION GET "${manifest}" version-semver)
if(NOT PORT MATCHES "^[a-z0-9]+(-[a-z0-9]+)*$" OR NOT VERSION MATCHES "^[0-9]+\\.[0-9]+\\.[0-9]+$")
  message(FATAL_ERROR "vcpkg.json: bad name '${PORT}' or version-semver '${VERSION}'")
endif()
set(host_tools "")
string(JSON count LENGTH "${manifest}" dependencies)
math(EXPR last "${count} - 1")
foreach(i RANGE ${last})
  string(JSON type TYPE "${manifest}" dependencies ${i})
  if(type STREQUAL "OBJECT")
    string(JSON name GET "${manifest}" dependencies ${i} name)
    string(JSON host ERROR_VARIABLE no_host GET "${manifest}" dependencies ${i} host)
    if(host)
      list(APPEND host_tools ${name})
    endif()
  else()
    string(JSON name GET "${manifest}" dependencies ${i})
  endif()
  if(name STREQUAL "cuda")
    message(FATAL_ERROR "vcpkg.json: no dependency on the cuda port (it downloads NVIDIA's redistributables)")
  endif()
endforeach()
if(NOT "vcpkg-cmake" IN_LIST host_tools OR NOT "vcpkg-cmake-config" IN_LIST host_tools)
  message(FATAL_ERROR "vcpkg.json: vcpkg-cmake and vcpkg-cmake-config must be host dependencies")
endif()

# ---- stand-ins for the vcpkg helpers the portfile calls ----------------------------------------------
set(CURRENT_PACKAGES_DIR "${PREFIX}")
set(TARGET_TRIPLET x64-linux)
set(_replay_build "${WORK}/${TARGET_TRIPLET}-rel")

function(vcpkg_cmake_configure)
  cmake_parse_arguments(arg "" "SOURCE_PATH" "OPTIONS;OPTIONS_RELEASE" ${ARGN})
  if(NOT VCPKG_BUILD_TYPE STREQUAL "release")
    message(FATAL_ERROR "portfile: a header-only port builds the release configuration only")
  endif()
  execute_process(COMMAND "${CMAKE_COMMAND}" -S "${arg_SOURCE_PATH}" -B "${_replay_build}" -G "${GENERATOR}"
                          -DCMAKE_BUILD_TYPE=Release "-DCMAKE_INSTALL_PREFIX=${CURRENT_PACKAGES_DIR}"
                          ${arg_OPTIONS} ${arg_OPTIONS_RELEASE}
                  COMMAND_ERROR_IS_FATAL ANY)
endfunction()

function(vcpkg_cmake_install)
  execute_process(COMMAND "${CMAKE_COMMAND}" --build "${_replay_build}" --target install COMMAND_ERROR_IS_FATAL ANY)
endfunction()

# The package already installs its config to share/<port>, so vcpkg's fixup has nothing to move.
function(vcpkg_cmake_config_fixup)
  cmake_parse_arguments(arg "" "CONFIG_PATH" "" ${ARGN})
  if(NOT arg_CONFIG_PATH STREQUAL "share/${PORT}" OR NOT EXISTS "${CURRENT_PACKAGES_DIR}/share/${PORT}/${PORT}Config.cmake")
    message(FATAL_ERROR "portfile: the package config must be installed to share/${PORT}")
  endif()
endfunction()

# vcpkg installs the license as share/<port>/copyright.
function(vcpkg_install_copyright)
  cmake_parse_arguments(arg "" "" "FILE_LIST" ${ARGN})
  file(READ "${arg_FILE_LIST}" text)
  file(WRITE "${CURRENT_PACKAGES_DIR}/share/${PORT}/copyright" "${text}")
endfunction()

# ---- the replay --------------------------------------------------------------------------------------
file(REMOVE_RECURSE "${PREFIX}" "${WORK}")
include("${port_dir}/portfile.cmake")

# What vcpkg's post-build checks require of a header-only port: headers, share/<port> with the config and
# usage, and no lib/, bin/ or debug/ folders.
file(GLOB top RELATIVE "${PREFIX}" "${PREFIX}/*")
list(SORT top)
if(NOT top STREQUAL "include;share" OR NOT EXISTS "${PREFIX}/share/${PORT}/usage"
   OR NOT EXISTS "${PREFIX}/share/${PORT}/copyright"
   OR NOT EXISTS "${PREFIX}/include/${PORT}/version.hpp")
  message(FATAL_ERROR "replay: unexpected package layout under ${PREFIX}: ${top}")
endif()
message(STATUS "replay: ${PORT} ${VERSION} staged in ${PREFIX}")
