#!/usr/bin/env bash
# Runs the Node.js client's tests (node's built-in runner) against yolohookd.
#   run.sh YOLOHOOKD CLIENT_NODE_DIR TEST_FILE...
# Exits 77 (ctest's SKIP_RETURN_CODE) only when node is not installed.
set -euo pipefail
yolohookd=$1 node_dir=$2
shift 2
if ! command -v node >/dev/null; then
  echo "SKIP: node is not installed (deploy/setup.sh installs it)"
  exit 77
fi
if [ ! -d "$node_dir/node_modules/@grpc/grpc-js" ] || [ ! -d "$node_dir/node_modules/@grpc/proto-loader" ]; then
  echo "$node_dir/node_modules is missing @grpc/grpc-js or @grpc/proto-loader: run deploy/setup.sh (npm ci there)" >&2
  exit 1
fi
YOLOHOOKD=$yolohookd exec node --test "$@"
