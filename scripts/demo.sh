#!/usr/bin/env bash
# The one command that sets up a fresh Debian 12 machine, builds the quick_start
# example (Release, build/gcc) and runs it. Extra arguments go to quick_start.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

scripts/install-deps.sh

cmake -S "$ROOT" -B "$ROOT/build/gcc" -G Ninja \
  -DCMAKE_CXX_COMPILER=g++ \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo
cmake --build "$ROOT/build/gcc" --parallel "$(nproc)" --target quick_start

echo "== running quick_start" >&2
exec "$ROOT/build/gcc/examples/quick_start" "$@"
