"""Conan 2 recipe for flashmemory, a header-only C++20 + CUDA library.

Run from the repository root:  conan create packaging/conan --no-remote
The sources are the repository itself (two folders up); the version is read from CMakeLists.txt's project().
The package is what `cmake --install` produces, including the generated flashmemoryConfig.cmake, which
consumers use directly: CMakeDeps could not express find_dependency(CUDAToolkit) for the `cuda` component.
nlohmann-json and libcu++ (CCCL, shipped with the CUDA Toolkit) are found on the system by that config.
"""

import os
import re

from conan import ConanFile
from conan.tools.cmake import CMake, CMakeToolchain, cmake_layout
from conan.tools.files import copy, load

# The repository root, seen from this recipe's folder.
_ROOT = os.path.join("..", "..")


class FlashmemoryConan(ConanFile):
    name = "flashmemory"
    description = "Lookahead Sparse Attention: long-context LLM decoding with a GPU-resident KV working set"
    license = "MIT"
    topics = ("cuda", "attention", "llm", "header-only")
    package_type = "header-library"
    # Declared because the package is produced by a CMake configure + install; cleared in package_id().
    settings = "os", "arch", "compiler", "build_type"
    no_copy_source = True

    def set_version(self):
        cmakelists = load(self, os.path.join(self.recipe_folder, _ROOT, "CMakeLists.txt"))
        self.version = re.search(r"project\(flashmemory VERSION ([0-9.]+)", cmakelists).group(1)

    def export_sources(self):
        for pattern in ("CMakeLists.txt", "LICENSE", "cmake/*", "include/*"):
            copy(self, pattern, os.path.join(self.recipe_folder, _ROOT), self.export_sources_folder)

    def layout(self):
        cmake_layout(self)

    def package_id(self):
        self.info.clear()

    def generate(self):
        toolchain = CMakeToolchain(self)
        for part in ("TESTS", "EXAMPLES", "BENCH"):
            toolchain.cache_variables[f"FLASHMEMORY_BUILD_{part}"] = False
        toolchain.generate()

    def build(self):
        CMake(self).configure()

    def package(self):
        CMake(self).install()
        copy(self, "LICENSE", self.source_folder, os.path.join(self.package_folder, "licenses"))

    def package_info(self):
        self.cpp_info.bindirs = []
        self.cpp_info.libdirs = []
        # Consumers find our own package config (CMakeToolchain puts builddirs on CMAKE_PREFIX_PATH).
        self.cpp_info.set_property("cmake_find_mode", "none")
        self.cpp_info.builddirs = [os.path.join("share", "flashmemory")]
