#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) and runs each one for a while.
#
#   scripts/fuzz.sh            # 60 s per target
#   scripts/fuzz.sh 600        # 10 minutes per target
#
# Targets (fuzz/): fuzz_http_request (arbitrary bytes as one request to the participant server,
# its application routes and a message consumer's route),
# fuzz_http_stream (pipelined requests with random framing through a connection's loop: no request
# is served that the framing did not delimit), fuzz_envelope (arbitrary bytes as a message envelope).
# The corpus grows in build/fuzz/corpus/<target> (seeded from fuzz/corpus/<target>); a crash is
# saved as build/fuzz/crash-<hash>, and `build/fuzz/fuzz/<target> <that file>` replays it.
#
# Environment:
#   DTX_FUZZ_BUILD_DIR   build directory (default: build/fuzz)
#   DTX_BUILD_JOBS       parallel compile jobs (default: nproc)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

seconds=${1:-60}
build=${DTX_FUZZ_BUILD_DIR:-$ROOT/build/fuzz}

cmake -S "$ROOT" -B "$build" -G Ninja \
  -DCMAKE_CXX_COMPILER=clang++ \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DDTX_BUILD_FUZZ=ON \
  -DDTX_BUILD_TESTS=OFF \
  -DDTX_BUILD_EXAMPLES=OFF \
  -DDTX_BUILD_BENCH=OFF \
  -DDTX_WERROR=ON >/dev/null
targets=(fuzz_http_request fuzz_http_stream fuzz_envelope)
cmake --build "$build" --target "${targets[@]}" --parallel "${DTX_BUILD_JOBS:-$(nproc)}"

for target in "${targets[@]}"; do
  name=${target#fuzz_}
  corpus="$build/corpus/$name"
  mkdir -p "$corpus"
  dict=()
  if [[ -f "$ROOT/fuzz/$name.dict" ]]; then
    dict=(-dict="$ROOT/fuzz/$name.dict")
  fi
  echo "fuzz.sh: $target for $seconds s"
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}" \
    "$build/fuzz/$target" \
    -max_total_time="$seconds" \
    -timeout=10 \
    "${dict[@]}" \
    -artifact_prefix="$build/" \
    -print_final_stats=1 \
    "$corpus" "$ROOT/fuzz/corpus/$name"
done
