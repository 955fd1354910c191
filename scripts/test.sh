#!/usr/bin/env bash
# The one command that sets up a fresh Debian 12 machine and runs every dtx test.
#
#   scripts/test.sh                          # all stages
#   DTX_TEST_STAGES="gcc" scripts/test.sh    # only the named stages, in that order
#   scripts/test.sh asan                     # stages may also be given as arguments
#
# Stages (each one is a stage_<name> function below; add new ones there and to
# ALL_STAGES):
#   gcc   checks that every C++ file is formatted as .clang-format asks and that
#         single_include/dtx/dtx.hpp is what scripts/amalgamate.py makes of
#         include/; g++, RelWithDebInfo, -Werror; tests, examples and
#         benchmarks built against the single header; each header of include/
#         compiled alone; the code of README.md and of the header comments
#         compiled (tests/doc_examples); helpers mixed up fail to compile with
#         one readable error (tests/compile_fail); consumer tests
#         (tests/consumer)                                   -> build/gcc
#   asan  clang++, ASan+UBSan, Debug at -O1, -Werror; tests and examples built
#         against include/ (no benchmarks)                   -> build/clang-asan
#         then a short libFuzzer run of each fuzz target       -> build/fuzz
#
# Environment:
#   DTX_TEST_STAGES   space-separated stages to run (default: all)
#   DTX_CTEST_JOBS    tests ctest runs at once (default: 1)
#   DTX_BUILD_JOBS    parallel compile jobs (default: nproc)
#   DTX_FUZZ_SECONDS  how long the asan stage fuzzes each target (default: 30; 0: not at all)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)

ALL_STAGES=(gcc asan)

BUILD_JOBS=${DTX_BUILD_JOBS:-$(nproc)}
CTEST_JOBS=${DTX_CTEST_JOBS:-1}

banner() {
  printf '\n==============================================================================\n'
  printf '== %s\n' "$*"
  printf '==============================================================================\n'
}

# configure_build_test <build-dir> <cmake args...>
configure_build_test() {
  local dir=$1
  shift
  cmake -S "$ROOT" -B "$dir" -G Ninja "$@"
  cmake --build "$dir" --parallel "$BUILD_JOBS"
  ctest --test-dir "$dir" --output-on-failure --no-tests=error --parallel "$CTEST_JOBS"
}

# check_format: every C++ source of the repository (the generated single header aside) is as
# clang-format-14 would write it.
check_format() {
  local files
  mapfile -t files < <(git -C "$ROOT" ls-files '*.hpp' '*.cpp' '*.h' ':!single_include')
  if ! clang-format-14 --dry-run --Werror "${files[@]}"; then
    echo "test.sh: the files above are not formatted: run" >&2
    echo "  git ls-files '*.hpp' '*.cpp' '*.h' ':!single_include' | xargs clang-format-14 -i" >&2
    return 1
  fi
  echo "format: ${#files[@]} files as .clang-format asks"
}

stage_gcc() {
  check_format
  python3 "$ROOT/scripts/amalgamate.py" --check
  configure_build_test "$ROOT/build/gcc" \
    -DCMAKE_CXX_COMPILER=g++ \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DDTX_WERROR=ON \
    -DDTX_TESTS_USE_SINGLE_HEADER=ON \
    -DDTX_TEST_HEADERS=ON \
    -DDTX_TEST_CONSUMERS=ON \
    -DDTX_TEST_ABI_NAMESPACE=ON
}

stage_asan() {
  # Debug keeps assert() on; -O1 keeps sanitized test runs reasonably fast.
  ASAN_OPTIONS="detect_leaks=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}" \
  UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}" \
    configure_build_test "$ROOT/build/clang-asan" \
      -DCMAKE_CXX_COMPILER=clang++ \
      -DCMAKE_BUILD_TYPE=Debug \
      -DCMAKE_CXX_FLAGS_DEBUG="-g -O1" \
      -DDTX_SANITIZE=address,undefined \
      -DDTX_WERROR=ON \
      -DDTX_TESTS_USE_SINGLE_HEADER=OFF \
      -DDTX_TEST_HEADERS=OFF \
      -DDTX_TEST_CONSUMERS=OFF \
      -DDTX_BUILD_BENCH=OFF
  local fuzz_seconds=${DTX_FUZZ_SECONDS:-30}
  if ((fuzz_seconds > 0)); then
    DTX_BUILD_JOBS=$BUILD_JOBS "$ROOT/scripts/fuzz.sh" "$fuzz_seconds"
  fi
}

if (($# > 0)); then
  stages=("$@")
else
  read -r -a stages <<<"${DTX_TEST_STAGES:-${ALL_STAGES[*]}}"
fi
if ((${#stages[@]} == 0)); then
  echo "test.sh: no stages selected (known: ${ALL_STAGES[*]})" >&2
  exit 2
fi
for s in "${stages[@]}"; do
  if ! declare -F "stage_$s" >/dev/null; then
    echo "test.sh: unknown stage '$s' (known: ${ALL_STAGES[*]})" >&2
    exit 2
  fi
done

banner "install-deps"
scripts/install-deps.sh
for tool in cmake ninja g++ clang++; do
  printf '%-8s %s\n' "$tool" "$("$tool" --version | head -n 1)"
done

start_all=$SECONDS
for s in "${stages[@]}"; do
  banner "stage: $s"
  start=$SECONDS
  "stage_$s"
  banner "stage $s passed in $((SECONDS - start)) s"
done
banner "all stages passed (${stages[*]}) in $((SECONDS - start_all)) s"
