#!/usr/bin/env bash
# The crash soak: builds the crash test in Release (build/soak) and runs its driver with many
# more SIGKILLs than CI does (default 2000), checking the invariants every 250 kills and at the
# end. The last line is the driver's count line:
#   crash test: 2000 kills (… random, … at fault points), … transactions (…), invariants hold
#
#   scripts/soak.sh                         # 2000 kills, a random seed (printed)
#   DTX_SOAK_KILLS=5000 scripts/soak.sh     # more
#   scripts/soak.sh --seed 42 --verbose     # arguments go to dtx_crash_driver
#
# On a violated invariant it exits non-zero and keeps the data directory (its path is printed);
# `dtx_crash_driver --check-only --dir DIR` checks such a directory again.
#
#   scripts/soak.sh --postgres              # the PostgreSQL crash test instead: three coordinator
#                                           # processes sharing one journal, 500 kills by default,
#                                           # checked every 250 (other arguments go to
#                                           # dtx_crash_postgres_driver)
#
#   scripts/soak.sh --http                  # the HTTP failure test instead: participant processes
#                                           # behind fault-injecting proxies, a coordinator calling
#                                           # them by URL; 500 kills and at least 50000
#                                           # transactions by default (DTX_SOAK_TRANSACTIONS),
#                                           # checked every 100 kills (other arguments go to
#                                           # dtx_http_chaos, e.g. --seed 42)
#
#   scripts/soak.sh --messages              # the messages crash test instead: a producer with its
#                                           # outbox and relay, a consumer behind an inbox, 2000
#                                           # kills by default, checked at the end (other
#                                           # arguments go to dtx_messages_crash)
#
#   scripts/soak.sh --postgres-messages     # the PostgreSQL messages crash test instead: three
#                                           # nodes (producers, relays, an inbox consumer) on one
#                                           # database, 500 kills by default, checked at the end
#                                           # (other arguments go to dtx_postgres_messages_crash)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
BUILD="$ROOT/build/soak"
DRIVER=dtx_crash_driver
WORKLOAD=dtx_crash_workload
KILLS=${DTX_SOAK_KILLS:-2000}
CHECK_EVERY=250
EXTRA=()
ARGS=()
if [ "${1:-}" = --messages ]; then
  shift
  DRIVER=dtx_messages_crash
  WORKLOAD=dtx_messages_crash # plays every role itself
elif [ "${1:-}" = --postgres-messages ]; then
  shift
  DRIVER=dtx_postgres_messages_crash
  WORKLOAD=dtx_postgres_messages_crash # plays every role itself
  KILLS=${DTX_SOAK_KILLS:-500}
elif [ "${1:-}" = --postgres ]; then
  shift
  DRIVER=dtx_crash_postgres_driver
  WORKLOAD=dtx_crash_postgres_workload
  KILLS=${DTX_SOAK_KILLS:-500}
elif [ "${1:-}" = --http ]; then
  shift
  DRIVER=dtx_http_chaos
  WORKLOAD=dtx_http_chaos # plays every role itself
  KILLS=${DTX_SOAK_KILLS:-500}
  CHECK_EVERY=100
  EXTRA=(--transactions "${DTX_SOAK_TRANSACTIONS:-50000}")
fi

{
  scripts/install-deps.sh
  cmake -S "$ROOT" -B "$BUILD" -G Ninja \
    -DCMAKE_CXX_COMPILER="${CXX:-g++}" \
    -DCMAKE_BUILD_TYPE=Release \
    -DDTX_BUILD_TESTS=ON -DDTX_BUILD_EXAMPLES=OFF -DDTX_BUILD_BENCH=OFF
  cmake --build "$BUILD" --parallel "$(nproc)" --target "$DRIVER" "$WORKLOAD"
} >&2

if [ "$DRIVER" = dtx_crash_driver ] || [ "$DRIVER" = dtx_crash_postgres_driver ] ||
  [ "$DRIVER" = dtx_http_chaos ]; then
  ARGS=(--check-every "$CHECK_EVERY" --workload "$BUILD/tests/crash/$WORKLOAD")
fi
start=$SECONDS
"$BUILD/tests/crash/$DRIVER" --kills "$KILLS" ${ARGS[@]+"${ARGS[@]}"} \
  ${EXTRA[@]+"${EXTRA[@]}"} "$@"
echo "soak: $((SECONDS - start)) s" >&2
