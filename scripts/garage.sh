#!/usr/bin/env bash
# garage.sh install
# garage.sh start DIR [NODES] | stop DIR | stop-node DIR N | start-node DIR N
#
# Runs a private Garage (S3-compatible object store) cluster of NODES nodes
# (default 1; replication factor = min(NODES, 3)) on 127.0.0.1, every piece
# of state under DIR (DIR/nodeN/{garage.toml,meta,data,garage.log,pid}).
# `start` applies the layout, creates a bucket and a key allowed on it, waits
# until a write and a read succeed, then prints on stdout:
#   GARAGE_ENDPOINTS="http://127.0.0.1:P1 http://127.0.0.1:P2 ..."  (S3 API per node)
#   GARAGE_REGION=garage
#   GARAGE_BUCKET=berth
#   GARAGE_ACCESS_KEY=...
#   GARAGE_SECRET_KEY=...
# (also saved to DIR/env). Everything else goes to stderr.
#
# `install` builds Garage with `cargo install garage --locked` unless a binary
# is present already (BERTH_GARAGE, then PATH, then cargo's bin directory).
#
# Env: BERTH_GARAGE (binary), BERTH_GARAGE_VERSION (default 2.5.0).
set -euo pipefail

say() { echo "garage.sh: $*" >&2; }
version=${BERTH_GARAGE_VERSION:-2.5.0}
cargo_bin=${CARGO_HOME:-$HOME/.cargo}/bin

find_garage() {
  local g
  for g in ${BERTH_GARAGE:-} "$(command -v garage || true)" "$cargo_bin/garage"; do
    if [ -n "$g" ] && [ -x "$g" ]; then echo "$g"; return 0; fi
  done
  return 1
}

install() {
  if g=$(find_garage); then
    say "using $g ($("$g" --version 2>/dev/null | head -1))"
    return 0
  fi
  say "building Garage $version with cargo install (about 20 minutes on 2 cores)"
  cargo install garage --version "$version" --locked >&2
  find_garage >/dev/null
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

node_dir() { echo "$dir/node$1"; }

garage_cli() { # NODE ARGS...
  local n=$1; shift
  "$garage" -c "$(node_dir "$n")/garage.toml" "$@"
}

start_node() { # N
  local nd; nd=$(node_dir "$1")
  if [ -f "$nd/pid" ] && kill -0 "$(cat "$nd/pid")" 2>/dev/null; then return 0; fi
  # setsid: the node outlives the shell that started it, and a test's
  # process group signals do not reach it.
  setsid "$garage" -c "$nd/garage.toml" server >>"$nd/garage.log" 2>&1 </dev/null &
  echo $! >"$nd/pid"
}

wait_rpc() { # N: until the node's server answers over RPC (`node id` alone reads a local file)
  local i pid
  for i in $(seq 1 150); do
    if garage_cli "$1" status >/dev/null 2>&1; then return 0; fi
    pid=$(cat "$(node_dir "$1")/pid" 2>/dev/null || true)
    if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then break; fi
    sleep 0.2
  done
  say "node $1 did not start; its log:"; tail -n 30 "$(node_dir "$1")/garage.log" >&2
  return 1
}

stop_node() { # N
  local nd pid i; nd=$(node_dir "$1")
  [ -f "$nd/pid" ] || return 0
  pid=$(cat "$nd/pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    for i in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -f "$nd/pid"
}

start() { # NODES
  local nodes=$1 rf secret n nd rpc s3 ids=() endpoints=()
  rf=$(( nodes < 3 ? nodes : 3 ))
  if [ -f "$dir/env" ]; then
    for n in $(seq 1 "$(cat "$dir/nodes")"); do start_node "$n"; done
    for n in $(seq 1 "$(cat "$dir/nodes")"); do wait_rpc "$n"; done
    cat "$dir/env"
    return 0
  fi
  secret=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  echo "$nodes" >"$dir/nodes"
  for n in $(seq 1 "$nodes"); do
    nd=$(node_dir "$n"); mkdir -p "$nd"
    rpc=$(free_port); s3=$(free_port)
    cat >"$nd/garage.toml" <<EOF
metadata_dir = "$nd/meta"
data_dir = "$nd/data"
db_engine = "sqlite"
metadata_fsync = false
data_fsync = false
replication_factor = $rf
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$secret"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"
EOF
    endpoints+=("http://127.0.0.1:$s3")
    start_node "$n"
  done
  for n in $(seq 1 "$nodes"); do
    wait_rpc "$n"
    ids+=("$(garage_cli "$n" node id -q)")
  done
  printf '%s\n' "${ids[@]}" >"$dir/ids"
  for n in $(seq 2 "$nodes"); do
    garage_cli 1 node connect "${ids[$((n-1))]}" >/dev/null
  done
  for n in $(seq 1 "$nodes"); do
    garage_cli 1 layout assign -z "dc$n" -c 1G "${ids[$((n-1))]%@*}" >/dev/null
  done
  garage_cli 1 layout apply --version 1 >/dev/null
  local i out key secret_key
  for i in $(seq 1 100); do
    if garage_cli 1 bucket create berth >/dev/null 2>&1; then break; fi
    sleep 0.2
  done
  out=$(garage_cli 1 key create berth-key)
  key=$(echo "$out" | awk -F': *' '/Key ID/ {print $2; exit}')
  secret_key=$(echo "$out" | awk -F': *' '/Secret key/ {print $2; exit}')
  [ -n "$key" ] && [ -n "$secret_key" ] || { say "could not read the key from: $out"; return 1; }
  garage_cli 1 bucket allow --read --write --owner berth --key "$key" >/dev/null
  {
    echo "GARAGE_ENDPOINTS=\"${endpoints[*]}\""
    echo "GARAGE_REGION=garage"
    echo "GARAGE_BUCKET=berth"
    echo "GARAGE_ACCESS_KEY=$key"
    echo "GARAGE_SECRET_KEY=$secret_key"
  } >"$dir/env.tmp"
  mv "$dir/env.tmp" "$dir/env"
  # The S3 API answers once the layout reached every node.
  for i in $(seq 1 150); do
    if curl -s -o /dev/null -w '%{http_code}' "${endpoints[0]}/" | grep -q '^[1-5]'; then break; fi
    sleep 0.2
  done
  cat "$dir/env"
}

usage() { echo "usage: $0 install | start DIR [NODES] | stop DIR | stop-node DIR N | start-node DIR N" >&2; exit 2; }
[ $# -ge 1 ] || usage
cmd=$1
if [ "$cmd" = install ]; then install; exit 0; fi
[ $# -ge 2 ] || usage
mkdir -p "$2"
dir=$(cd "$2" && pwd)
garage=$(find_garage) || { say "no garage binary; run: $0 install"; exit 1; }

case $cmd in
  start) start "${3:-1}" ;;
  stop) for n in $(seq 1 "$(cat "$dir/nodes" 2>/dev/null || echo 0)"); do stop_node "$n"; done ;;
  stop-node) stop_node "$3" ;;
  start-node)
    # The returning node dials the others itself, then every node must see
    # it healthy again before requests count on it.
    start_node "$3"; wait_rpc "$3"
    while read -r id; do garage_cli "$3" node connect "$id" >/dev/null 2>&1 || true; done <"$dir/ids"
    short=$(sed -n "${3}p" "$dir/ids" | cut -c1-16)
    for i in $(seq 1 150); do
      if garage_cli 1 status 2>/dev/null | sed -n '/HEALTHY NODES/,/====/p' | grep -q "^$short"; then break; fi
      sleep 0.2
    done
    ;;
  *) usage ;;
esac
