#!/usr/bin/env bash
# The one command that sets up a fresh Debian 12 machine, builds the shop example (RelWithDebInfo,
# build/gcc) and runs its demo: seven services on 127.0.0.1, orders that succeed, are refused, lose
# their shipment, lose their payment service, their coordinator and their message relay (each
# killed with SIGKILL), messages to a mail service and notifications to a merchant's webhook that
# is down for a while, and the invariants checked across every service's database.
# examples/shop/README.md tells what to look at.
#
#   scripts/demo.sh                                       # the story (a few seconds)
#   scripts/demo.sh load [--orders N] [--concurrency C]   # load mode: 10,000 orders at 32 by default
#   scripts/demo.sh quick-start                           # the quick start program (examples/quick_start.cpp)
#
# Exits non-zero if any order ends otherwise than told or an invariant is broken.
#
# Environment: DTX_DEMO_BUILD_DIR   the build directory (default: build/gcc)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
BUILD=${DTX_DEMO_BUILD_DIR:-$ROOT/build/gcc}

scripts/install-deps.sh

cmake -S "$ROOT" -B "$BUILD" -G Ninja \
  -DCMAKE_CXX_COMPILER=g++ \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
echo "== building the shop and the quick start ($BUILD)" >&2
cmake --build "$BUILD" --parallel "$(nproc)" --target shop quick_start

if [[ ${1:-} == quick-start ]]; then
  shift
  exec "$BUILD/examples/quick_start" "$@"
fi
exec "$ROOT/examples/shop/scenario.sh" "$@" --shop "$BUILD/examples/shop"
