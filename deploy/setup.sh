#!/usr/bin/env bash
# Installs the Debian 12 packages yolohook needs (only those missing) and the
# npm packages its Node.js code pins (npm ci where node_modules does not match
# the lockfile), then configures and builds the project into build/ (or
# $YOLOHOOK_BUILD_DIR).
#
#   deploy/setup.sh              install what is missing, build everything
#   deploy/setup.sh --deps       install what is missing, do not build
#   deploy/setup.sh --build-deps install only what building the programs needs
#                                (no test tools, browser or npm packages; the
#                                container image's build stage)
#
# Idempotent and quiet when everything is already there.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build_dir=${YOLOHOOK_BUILD_DIR:-$root/build}

mode=${1:-}
case "$mode" in
  "" | --deps | --build-deps) ;;
  *) echo "setup: unknown option '$mode' (expected --deps or --build-deps)" >&2; exit 2 ;;
esac

# Packages that building yolohookd, the CLI and the Python package needs, all
# from Debian 12.
packages=(
  build-essential cmake ninja-build pkg-config
  libtorch-dev libopencv-dev libyaml-cpp-dev libsqlite3-dev libonnx-dev
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc libabsl-dev
  python3
)
# And what the tests and benchmarks need besides.
test_packages=(
  libgtest-dev libgmock-dev libbenchmark-dev openssl
  python3-grpcio python3-protobuf
  chromium
)

# Directories with a package-lock.json whose packages `npm ci` installs.
npm_dirs=(client/node tests/dashboard)

[ "$mode" = --build-deps ] || packages+=("${test_packages[@]}")

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js and npm from Debian, unless some node / npm is already installed (a
# Node.js from elsewhere bundles its own npm, which Debian's npm conflicts with).
if [ "$mode" != --build-deps ]; then
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
fi
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# True when $1/node_modules holds exactly the packages its package-lock.json
# pins (npm records what it installed in node_modules/.package-lock.json).
npm_installed() {
  node -e '
    const fs = require("fs");
    const read = (f) => JSON.parse(fs.readFileSync(f, "utf8")).packages || {};
    const want = read(process.argv[1] + "/package-lock.json");
    let have;
    try { have = read(process.argv[1] + "/node_modules/.package-lock.json"); } catch { process.exit(1); }
    for (const [p, w] of Object.entries(want)) {
      if (p === "" || (w.optional && !have[p])) continue;
      if (!have[p] || have[p].version !== w.version || have[p].integrity !== w.integrity) process.exit(1);
    }
    for (const p of Object.keys(have)) if (!(p in want)) process.exit(1);
  ' "$1"
}
[ "$mode" = --build-deps ] && exit 0
for d in "${npm_dirs[@]}"; do
  npm_installed "$root/$d" && continue
  echo "setup: npm ci in $d"
  (cd "$root/$d" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
done

[ "$mode" = --deps ] && exit 0

if [ ! -f "$build_dir/build.ninja" ]; then
  cmake -S "$root" -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
fi
cmake --build "$build_dir" -j "$(nproc)"
