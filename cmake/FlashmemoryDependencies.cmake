# Header-only dependencies of the host part: libcu++ (cuda::std::mdspan, from CCCL) and nlohmann-json.
# libcu++ ships with every CUDA 12+/13 toolkit under lib64/cmake; a standalone CCCL checkout works too.
include_guard(GLOBAL)

set(_fm_cccl_hints "")
foreach(_root IN ITEMS "$ENV{CUDA_PATH}" "$ENV{CUDA_HOME}" "${CUDAToolkit_ROOT}" "/usr/local/cuda")
  if(_root)
    list(APPEND _fm_cccl_hints "${_root}/lib64/cmake" "${_root}/lib/cmake")
  endif()
endforeach()
find_package(libcudacxx CONFIG REQUIRED HINTS ${_fm_cccl_hints})
find_package(nlohmann_json 3 CONFIG REQUIRED)
