#!/usr/bin/env bash
# The Conan and vcpkg ways in, checked offline (the CMake ways are CTests: ctest -L package).
#   1. Conan 2 (from PyPI, into a venv): `conan create packaging/conan --no-remote` builds the package and
#      its test_package; then a user-style `conan install` of tests/package/host/conanfile.txt, built and run.
#   2. vcpkg: the overlay port replayed by packaging/vcpkg/replay.cmake into a staging prefix (vcpkg itself
#      is not run), then tests/package/host built against that prefix and run.
# Usage: scripts/package_check.sh [build-dir]   (everything it writes goes under <build-dir>/package-check)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
work=$root/${1:-build}/package-check
mkdir -p "$work"
export PATH="/usr/local/cuda/bin:$PATH"

consume() {  # consume <name> <cmake options...>: configure, build and run tests/package/host
  local name=$1 dir=$work/$1 out; shift
  cmake -S tests/package/host -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >"$dir.log" 2>&1 \
    && cmake --build "$dir" >>"$dir.log" 2>&1 || { tail -50 "$dir.log"; exit 1; }
  out=$("$dir/my_app")
  echo "  $name: $out"
}

echo "== Conan"
if [ ! -x "$work/venv/bin/conan" ]; then
  python3 -m venv "$work/venv"
  "$work/venv/bin/pip" install --quiet conan
fi
export CONAN_HOME=$work/conan-home
conan=$work/venv/bin/conan
[ -f "$CONAN_HOME/profiles/default" ] || "$conan" profile detect >/dev/null 2>&1
"$conan" create packaging/conan --no-remote -c "tools.cmake.cmake_layout:test_folder=$work/conan-test" \
  >"$work/conan-create.log" 2>&1 || { tail -50 "$work/conan-create.log"; exit 1; }
echo "  conan create, test_package: $(grep -A2 'Running test()' "$work/conan-create.log" | tail -1)"
"$conan" install tests/package/host --no-remote --output-folder "$work/conan-toolchain" \
  -c tools.cmake.cmaketoolchain:user_presets= >"$work/conan-install.log" 2>&1 \
  || { tail -50 "$work/conan-install.log"; exit 1; }
consume conan-consumer -DCMAKE_TOOLCHAIN_FILE="$work/conan-toolchain/conan_toolchain.cmake"

echo "== vcpkg (overlay port replayed; vcpkg itself not run)"
cmake -DPREFIX="$work/vcpkg-prefix" -DWORK="$work/vcpkg-work" -P packaging/vcpkg/replay.cmake \
  >"$work/vcpkg-replay.log" 2>&1 || { tail -50 "$work/vcpkg-replay.log"; exit 1; }
echo "  $(grep -o 'replay:.*' "$work/vcpkg-replay.log")"
consume vcpkg-consumer -DCMAKE_PREFIX_PATH="$work/vcpkg-prefix"
echo "package_check: Conan and vcpkg packages built and consumed"
