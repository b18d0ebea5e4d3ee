#!/usr/bin/env bash
# Pushes and pulls one big blob through Berth and through the reference
# registry (distribution 2.8) side by side, and reports each server's peak
# resident memory (VmHWM) and the transfer times. Blob bodies must stream:
# peak memory should not grow with the blob size.
#
#   bench/big-blob-rss.sh [SIZE_MIB]     (default 2048)
#
# Needs curl, sha256sum and docker-registry (scripts/install-test-deps.sh).
# Not part of the test suite: a measurement, printed as a table.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-2048}
work=$(mktemp -d "${TMPDIR:-/tmp}/berth-bigblob.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --release -q -p berth
berth=target/release/berth

echo "generating a ${size_mib} MiB blob" >&2
head -c "$((size_mib * 1024 * 1024))" /dev/urandom > "$work/blob"
digest="sha256:$(sha256sum "$work/blob" | cut -d' ' -f1)"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_up() { for _ in $(seq 1 300); do curl -sf -o /dev/null "http://$1/v2/" && return 0; sleep 0.1; done; echo "$1 did not start" >&2; return 1; }
hwm_mib() { awk '/VmHWM/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
rss_mib() { awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$1/status"; }
secs() { python3 -c "import time; print(time.time())"; }

measure() { # NAME PID ADDR
  local name=$1 pid=$2 addr=$3 t0 t1 t2 t3 loc
  local idle; idle=$(rss_mib "$pid")
  t0=$(secs)
  # Monolithic: POST a session, then PUT the whole body with the digest (what
  # oras and containerd do; distribution 2.8 has no single-request POST).
  loc=$(curl -sf -o /dev/null -D - -X POST "http://$addr/v2/big/blob/blobs/uploads/" | awk -F': ' 'tolower($1)=="location" {print $2}' | tr -d '\r')
  case $loc in http*) ;; *) loc="http://$addr$loc" ;; esac
  sep='?'; case $loc in *\?*) sep='&' ;; esac
  code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -T - -H "Content-Length: $((size_mib * 1024 * 1024))" \
    -H 'Content-Type: application/octet-stream' "$loc${sep}digest=$digest" < "$work/blob")
  [ "$code" = 201 ] || { echo "$name: monolithic push answered $code" >&2; return 1; }
  t1=$(secs)
  loc=$(curl -sf -o /dev/null -D - -X POST "http://$addr/v2/big/chunked/blobs/uploads/" | awk -F': ' 'tolower($1)=="location" {print $2}' | tr -d '\r')
  case $loc in http*) ;; *) loc="http://$addr$loc" ;; esac
  # The PATCH answer's Location is the one to finish with (distribution signs the offset into it).
  loc=$(curl -sf -o /dev/null -D - -X PATCH -T - -H "Content-Length: $((size_mib * 1024 * 1024))" \
    -H 'Content-Type: application/octet-stream' "$loc" < "$work/blob" \
    | awk -F': ' 'tolower($1)=="location" {print $2}' | tr -d '\r') || { echo "$name: PATCH failed" >&2; return 1; }
  case $loc in http*) ;; *) loc="http://$addr$loc" ;; esac
  sep='?'; case $loc in *\?*) sep='&' ;; esac
  curl -sf -o /dev/null -X PUT "$loc${sep}digest=$digest" || { echo "$name: PUT failed" >&2; return 1; }
  t2=$(secs)
  got=$(curl -sf "http://$addr/v2/big/blob/blobs/$digest" | sha256sum | cut -d' ' -f1)
  t3=$(secs)
  [ "sha256:$got" = "$digest" ] || { echo "$name: pulled blob does not match" >&2; return 1; }
  python3 - "$name" "$idle" "$(hwm_mib "$pid")" "$t0" "$t1" "$t2" "$t3" "$size_mib" <<'PY'
import sys
name, idle, hwm, t0, t1, t2, t3, mib = sys.argv[1], sys.argv[2], sys.argv[3], *map(float, sys.argv[4:9])
print(f"{name:<22} idle RSS {idle:>7} MiB   peak RSS {hwm:>7} MiB   "
      f"push {mib/(t1-t0):7.0f} MiB/s   chunked push {mib/(t2-t1):7.0f} MiB/s   pull+sha256 {mib/(t3-t2):7.0f} MiB/s")
PY
}

port=$(free_port)
mkdir -p "$work/berth"
cat > "$work/berth.yml" <<YML
version: 0.1
log: {level: warn, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/berth}}
http: {addr: "127.0.0.1:$port"}
YML
"$berth" serve "$work/berth.yml" >/dev/null 2>&1 & pids+=($!); bpid=$!
wait_up "127.0.0.1:$port"
measure "berth" "$bpid" "127.0.0.1:$port"
kill "$bpid"; wait "$bpid" 2>/dev/null || true
rm -rf "$work/berth"

if command -v docker-registry >/dev/null; then
  port=$(free_port)
  cat > "$work/ref.yml" <<YML
version: 0.1
log: {level: error, accesslog: {disabled: true}}
storage: {filesystem: {rootdirectory: $work/ref}}
http: {addr: "127.0.0.1:$port"}
YML
  docker-registry serve "$work/ref.yml" >/dev/null 2>&1 & pids+=($!); rpid=$!
  wait_up "127.0.0.1:$port"
  measure "docker-registry 2.8" "$rpid" "127.0.0.1:$port"
fi
