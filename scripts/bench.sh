#!/usr/bin/env bash
# Builds the benchmarks in Release (-O2, build/bench) and runs every bench_*
# executable. Benchmarks print JSON lines on stdout; build output goes to
# stderr so that stdout stays pure JSON lines. Arguments are passed to every
# benchmark.
#
#   scripts/bench.sh > results.jsonl
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
BUILD="$ROOT/build/bench"

{
  scripts/install-deps.sh
  cmake -S "$ROOT" -B "$BUILD" -G Ninja \
    -DCMAKE_CXX_COMPILER="${CXX:-g++}" \
    -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_CXX_FLAGS_RELEASE="-O2 -DNDEBUG" \
    -DDTX_BUILD_TESTS=OFF -DDTX_BUILD_EXAMPLES=OFF -DDTX_BUILD_BENCH=ON
  cmake --build "$BUILD" --parallel "$(nproc)"
} >&2

mapfile -t benches < <(find "$BUILD/bench" -maxdepth 1 -type f -name 'bench_*' -perm -u+x | sort)
if ((${#benches[@]} == 0)); then
  echo "bench.sh: no bench_* executables found in $BUILD/bench" >&2
  exit 1
fi
for b in "${benches[@]}"; do
  echo "== $(basename "$b")" >&2
  "$b" "$@"
done
