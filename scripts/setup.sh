#!/usr/bin/env bash
# Installs what flashmemory needs to build and test on a fresh Debian 12 / Ubuntu machine.
# Idempotent: a second run changes nothing. Needs root (or sudo) for apt.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive

# Debian 12 ships Catch2 v3 and a CMake that knows nvcc 13's C++20 only in bookworm-backports:
# add the suite to the Suites: line of the existing Debian entry (no host name is written here).
src=/etc/apt/sources.list.d/debian.sources
if [ -f "$src" ] && grep -q '^Suites:.*bookworm-updates' "$src" && ! grep -q 'bookworm-backports' "$src"; then
  $SUDO sed -i '0,/^Suites:.*bookworm-updates/s//& bookworm-backports/' "$src"
fi

backports=""
if apt-cache policy 2>/dev/null | grep -q bookworm-backports || grep -qs bookworm-backports "$src"; then
  backports="-t bookworm-backports"
fi

need_apt=0
for pkg in catch2 nlohmann-json3-dev ninja-build ccache clang libclang-rt-14-dev python3-venv; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt=1
done
cmake_ok=0
if command -v cmake >/dev/null; then
  v=$(cmake --version | head -1 | awk '{print $3}')
  if [ "$(printf '%s\n3.31\n' "$v" | sort -V | head -1)" = "3.31" ]; then cmake_ok=1; fi
fi
if [ "$need_apt" = 1 ] || [ "$cmake_ok" = 0 ]; then
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -qq $backports cmake catch2 >/dev/null
  $SUDO apt-get install -y -qq nlohmann-json3-dev ninja-build ccache clang libclang-rt-14-dev python3-venv >/dev/null
fi

# CUDA: the toolkit (nvcc 13 with CCCL) is expected under /usr/local/cuda or on PATH. Without it the
# host-only library, its references and tests still build; the CUDA part is skipped with a notice.
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  echo "setup: nvcc found at /usr/local/cuda/bin; add it to PATH"
fi
if ! command -v nvcc >/dev/null && [ ! -x /usr/local/cuda/bin/nvcc ]; then
  echo "setup: no CUDA toolkit found; install CUDA 13 (nvcc + CCCL) to build the CUDA part" >&2
fi

echo "setup: cmake $(cmake --version | head -1 | awk '{print $3}'), catch2 $(dpkg-query -W -f='${Version}' catch2 2>/dev/null || echo '?')"
