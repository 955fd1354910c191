#!/usr/bin/env bash
# Installs the Debian 12 packages dtx needs to build, test and run its examples.
# Idempotent: when everything is already installed it returns in well under a second.
#
#   scripts/install-deps.sh            # build + test dependencies
#
set -euo pipefail

packages=(
  build-essential cmake ninja-build g++ clang
  libboost1.81-dev          # Asio, Beast (header-only parts); 1.81 is the floor
  nlohmann-json3-dev doctest-dev
  libsqlite3-dev libpq-dev libssl-dev
  postgresql-15             # server for the PostgreSQL journal tests (started by the tests)
  libclang-rt-14-dev        # sanitizer runtimes for clang
  clang-format-14           # the formatting check (scripts/test.sh, stage gcc)
  python3 pkg-config        # scripts/amalgamate.py (single header); the pkg-config consumer test
  curl                      # the shop demo's calls to its public API (examples/shop/scenario.sh)
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  exit 0
fi

echo "install-deps: installing ${missing[*]}" >&2
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
