#!/usr/bin/env bash
# Builds the benchmarks in Release (-O2, build/bench) and runs every bench_*
# executable (bench_core, bench_sqlite, bench_postgres, bench_barrier,
# bench_http_server, bench_e2e_http, bench_messages, ...), or only those named in $DTX_BENCHES.
# Benchmarks print JSON lines on stdout; build output goes to stderr so that
# stdout stays pure JSON lines. Arguments are passed to every benchmark run.
#
#   scripts/bench.sh > results.jsonl
#   DTX_BENCHES="bench_e2e_http" scripts/bench.sh --seconds=3
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

if [[ -n "${DTX_BENCHES:-}" ]]; then
  benches=()
  for name in $DTX_BENCHES; do
    if [[ ! -x "$BUILD/bench/$name" ]]; then
      echo "bench.sh: no benchmark $name in $BUILD/bench" >&2
      exit 1
    fi
    benches+=("$BUILD/bench/$name")
  done
else
  mapfile -t benches < <(find "$BUILD/bench" -maxdepth 1 -type f -name 'bench_*' -perm -u+x | sort)
fi
if ((${#benches[@]} == 0)); then
  echo "bench.sh: no bench_* executables found in $BUILD/bench" >&2
  exit 1
fi
for b in "${benches[@]}"; do
  echo "== $(basename "$b")" >&2
  "$b" "$@"
done
