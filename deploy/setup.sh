#!/usr/bin/env bash
# Installs the Debian 12 packages yolohook needs (only those missing), then
# configures and builds the project into build/ (or $YOLOHOOK_BUILD_DIR).
#
#   deploy/setup.sh            install what is missing, build everything
#   deploy/setup.sh --deps     install what is missing, do not build
#
# Idempotent and quiet when everything is already there.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${YOLOHOOK_BUILD_DIR:-$root/build}

# Build and runtime packages, all from Debian 12.
packages=(
  build-essential cmake ninja-build pkg-config
  libtorch-dev libopencv-dev libyaml-cpp-dev libsqlite3-dev libonnx-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc libabsl-dev
  libgtest-dev libgmock-dev libbenchmark-dev
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

[ "${1:-}" = "--deps" ] && exit 0

if [ ! -f "$build_dir/build.ninja" ]; then
  cmake -S "$root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$build_dir" -j "$(nproc)"
