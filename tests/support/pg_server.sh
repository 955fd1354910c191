#!/usr/bin/env bash
# A throwaway PostgreSQL server for tests, on 127.0.0.1 and a free port.
#
#   tests/support/pg_server.sh start DIR   # prints the port; data, socket and log live in DIR
#   tests/support/pg_server.sh stop DIR
#
# PostgreSQL refuses to run as root: when root, the server runs as the 'postgres' user (created
# by Debian's postgresql package), and DIR is handed to it.
set -euo pipefail

cmd=${1:?start or stop}
dir=${2:?directory}
bin=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1) || true
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
  echo "pg_server.sh: no PostgreSQL server found under /usr/lib/postgresql (scripts/install-deps.sh installs it)" >&2
  exit 2
fi

as_server_user() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "$cmd" in
start)
  mkdir -p "$dir"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; fi
  as_server_user "$bin/initdb" -D "$dir/data" -A trust -U dtx --no-sync -E UTF8 >"$dir/initdb.log" 2>&1 ||
    { cat "$dir/initdb.log" >&2; exit 1; }
  for _ in $(seq 1 20); do
    port=$((20000 + RANDOM % 30000))
    if as_server_user "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 30 \
         -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=50" start >/dev/null 2>&1; then
      echo "$port"
      exit 0
    fi
  done
  echo "pg_server.sh: could not start a server; last log:" >&2
  tail -n 20 "$dir/server.log" >&2 || true
  exit 1
  ;;
stop)
  if [ -d "$dir/data" ]; then
    as_server_user "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  ;;
*)
  echo "usage: $0 start|stop DIR" >&2
  exit 2
  ;;
esac
