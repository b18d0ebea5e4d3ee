#!/usr/bin/env bash
# postgres.sh — a throwaway PostgreSQL cluster for the tests, on 127.0.0.1.
#
#   scripts/postgres.sh start   initialise (first time) and start the cluster,
#                               or reuse the one already running; prints its URL
#   scripts/postgres.sh url     prints the URL of the running cluster (exit 1 if none)
#   scripts/postgres.sh stop    stops it (nothing to do if it is not running)
#
# Only the URL goes to stdout (postgres://postgres@127.0.0.1:PORT/postgres),
# so `BERTH_TEST_POSTGRES_URL=$(scripts/postgres.sh start)` works. Everything
# (data/, the socket directory, the port and the server log) lives under
# $BERTH_POSTGRES_DIR, else <repo>/target/postgres; as root, else under
# /var/tmp/berth-postgres-<checksum of the checkout's path>, which the
# postgres user can enter whatever the checkout's permissions. Authentication is `trust`, TLS is on
# (a self-signed certificate, for sslmode=require), and the
# server runs without fsync: it holds nothing worth keeping. Run as root, the
# server runs as the `postgres` user (PostgreSQL refuses to run as root).
#
# Needs the Debian package postgresql (scripts/install-test-deps.sh installs it).
# Env: BERTH_POSTGRES_DIR, BERTH_POSTGRES_PORT (default: a free port).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -n "${BERTH_POSTGRES_DIR:-}" ]; then
  root=$BERTH_POSTGRES_DIR
elif [ "$(id -u)" = 0 ]; then
  # The server then runs as postgres, which may not be able to enter the
  # checkout (a 0700 home or temporary directory): one directory per
  # checkout under /var/tmp instead.
  root=/var/tmp/berth-postgres-$(printf %s "$repo" | cksum | cut -d' ' -f1)
else
  root=$repo/target/postgres
fi
data=$root/data
sock=$root/run
log=$root/server.log
portfile=$root/port

say() { echo "postgres.sh: $*" >&2; }
die() { say "$*"; exit 1; }

bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$d" ] && [ -x "$d/pg_ctl" ] || die "PostgreSQL not found in /usr/lib/postgresql/*/bin (install the Debian package postgresql, e.g. scripts/install-test-deps.sh)"
  echo "$d"
}

# Runs a PostgreSQL program as the owner of the cluster.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

running() {
  [ -f "$data/PG_VERSION" ] && [ -f "$portfile" ] && as_owner "$(bindir)/pg_ctl" -D "$data" status >/dev/null 2>&1
}

url() { echo "postgres://postgres@127.0.0.1:$(cat "$portfile")/postgres"; }

free_port() {
  if [ -n "${BERTH_POSTGRES_PORT:-}" ]; then
    echo "$BERTH_POSTGRES_PORT"
  elif command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
  else
    local p
    for p in $(seq 25432 25532); do
      if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        echo "$p"
        return
      fi
    done
    die "no free port in 25432-25532"
  fi
}

start() {
  local bin port
  bin=$(bindir)
  if running; then
    say "reusing the cluster running in $data"
    url
    return
  fi
  mkdir -p "$root" "$sock"
  if [ "$(id -u)" = 0 ]; then
    chown postgres: "$root" "$sock"
  fi
  if [ ! -f "$data/PG_VERSION" ]; then
    say "initialising $data"
    rm -rf "$data"
    as_owner "$bin/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >"$root/initdb.log" 2>&1 ||
      die "initdb failed; see $root/initdb.log"
  fi
  # TLS with a self-signed certificate, so clients can be tested with
  # sslmode=require (PostgreSQL wants the key readable by its owner only).
  if [ ! -f "$root/server.key" ]; then
    openssl req -new -x509 -days 3650 -nodes -subj /CN=127.0.0.1 \
      -keyout "$root/server.key" -out "$root/server.crt" >/dev/null 2>&1 || die "openssl could not make a certificate"
    chmod 600 "$root/server.key"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$root/server.key" "$root/server.crt"; fi
  fi
  port=$(free_port)
  echo "$port" >"$portfile"
  say "starting on 127.0.0.1:$port (log: $log)"
  : >"$log"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$log"; fi
  as_owner "$bin/pg_ctl" -D "$data" -l "$log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $sock -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c ssl=on -c ssl_cert_file=$root/server.crt -c ssl_key_file=$root/server.key" \
    start >/dev/null 9>&- || { tail -n 20 "$log" >&2; die "the server did not start"; }
  url
}

stop() {
  if running; then
    say "stopping the cluster in $data"
    as_owner "$(bindir)/pg_ctl" -D "$data" -m fast -w stop >/dev/null
  fi
}

# One caller at a time (two test runs starting at once share one cluster).
# The server must not inherit this descriptor (see `9>&-` above).
mkdir -p "$root"
exec 9>"$root/.lock"
flock 9

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  url) running || die "not running"; url ;;
  *) die "usage: $0 start|stop|url" ;;
esac
