#!/usr/bin/env bash
# dockerd.sh start DIR | stop DIR | status DIR
#
# Runs a private Docker engine (Debian's docker.io dockerd 20.10) whose every
# piece of state lives under DIR, so tests never touch a system daemon:
#   DIR/data  data-root       DIR/exec  exec-root (containerd sockets too)
#   DIR/docker.sock           DIR/dockerd.pid    DIR/dockerd.log
#   DIR/daemon.json (keeps /etc/docker/daemon.json out), DIR/key.json
#   DIR/docker-config         client config dir (use as DOCKER_CONFIG)
#
# `start` waits (bounded) until the API answers, then prints on stdout:
#   DOCKER_HOST=unix://DIR/docker.sock
#   DOCKER_CONFIG=DIR/docker-config
#   DOCKER_CLI=/usr/bin/docker
# Everything else goes to stderr. `stop` terminates dockerd (which stops its
# managed containerd child), waits, and kills leftovers that it started.
#
# Env: DOCKER_CLI (client binary, default /usr/bin/docker = Debian 20.10,
#      API 1.41, same as the engine), DOCKERD (default: dockerd in PATH or
#      /usr/sbin/dockerd), BERTH_DOCKER_STORAGE_DRIVER (e.g. vfs if DIR is on
#      a filesystem where overlay2 does not work; default: dockerd's choice),
#      BERTH_DOCKER_START_TIMEOUT (seconds, default 60).
set -euo pipefail

usage() { echo "usage: $0 start|stop|status DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
cmd=$1
mkdir -p "$2"
dir=$(cd "$2" && pwd)

sock=$dir/docker.sock
pidfile=$dir/dockerd.pid
log=$dir/dockerd.log
ctr_pidfile=$dir/exec/containerd/containerd.pid

# Debian's client matches the engine's API (1.41). A newer client (e.g.
# /usr/local/bin/docker 28.x) also works since it negotiates down, but pinning
# avoids surprises.
docker_cli=${DOCKER_CLI:-/usr/bin/docker}
[ -x "$docker_cli" ] || docker_cli=$(command -v docker || true)
dockerd_bin=${DOCKERD:-$(command -v dockerd || echo /usr/sbin/dockerd)}

log_msg() { echo "dockerd.sh: $*" >&2; }

alive() { # PID -> is it running (and not a zombie)?
  [ -n "${1:-}" ] && [ -d "/proc/$1" ] && ! grep -q '^State:.*Z' "/proc/$1/status" 2>/dev/null
}

read_pid() { [ -s "$1" ] && tr -dc 0-9 < "$1" || true; }

api_up() { DOCKER_HOST=unix://$sock "$docker_cli" version >/dev/null 2>&1; }

print_env() {
  echo "DOCKER_HOST=unix://$sock"
  echo "DOCKER_CONFIG=$dir/docker-config"
  echo "DOCKER_CLI=$docker_cli"
}

wait_gone() { # PID SECONDS -> 0 if it exited in time
  local pid=$1 i
  for ((i = 0; i < $2 * 10; i++)); do
    alive "$pid" || return 0
    sleep 0.1
  done
  return 1
}

start() {
  [ -x "$dockerd_bin" ] || { log_msg "dockerd not found (run scripts/install-test-deps.sh)"; exit 1; }
  [ -n "$docker_cli" ] || { log_msg "docker client not found"; exit 1; }
  [ "$(id -u)" = 0 ] || { log_msg "dockerd needs root (rootless dockerd is not set up here)"; exit 1; }

  # Unix socket paths are limited to 107 bytes; containerd's longest one is
  # DIR/exec/containerd/containerd-debug.sock. Fail early with a clear message
  # instead of an obscure bind error.
  local longest="$dir/exec/containerd/containerd.sock.ttrpc"
  if [ ${#longest} -gt 107 ]; then
    log_msg "DIR too long for unix sockets (${#longest} > 107 bytes): $dir"
    exit 1
  fi

  local pid
  pid=$(read_pid "$pidfile")
  if alive "$pid" && api_up; then
    log_msg "already running (pid $pid)"
    print_env
    return 0
  fi

  mkdir -p "$dir/data" "$dir/exec" "$dir/docker-config"
  # Our own daemon config keeps /etc/docker/daemon.json out, and moves the
  # engine's trust key from /etc/docker/key.json into DIR (only settable here,
  # there is no command-line flag for it in dockerd 20.10).
  printf '{\n  "deprecated-key-path": "%s"\n}\n' "$dir/key.json" > "$dir/daemon.json"
  [ -f "$dir/docker-config/config.json" ] || echo '{}' > "$dir/docker-config/config.json"
  rm -f "$sock" "$pidfile"

  local args=(
    --data-root "$dir/data"
    --exec-root "$dir/exec"
    --pidfile "$pidfile"
    -H "unix://$sock"
    --config-file "$dir/daemon.json"
    # No networking setup: registries are on 127.0.0.1, containers (if any)
    # should use --network none/host. Avoids iptables and the docker0 bridge.
    --iptables=false --ip6tables=false --ip-masq=false --bridge=none
    # Lets `docker stop`/shutdown be quick in tests.
    --shutdown-timeout 5
  )
  if [ -n "${BERTH_DOCKER_STORAGE_DRIVER:-}" ]; then
    args+=(--storage-driver "$BERTH_DOCKER_STORAGE_DRIVER")
  fi

  log_msg "starting $dockerd_bin (log: $log)"
  # setsid: own session, so the engine survives the caller's shell/job control
  # and is not hit by signals meant for the test runner's process group.
  setsid "$dockerd_bin" "${args[@]}" </dev/null >>"$log" 2>&1 &
  local launcher=$!

  local timeout=${BERTH_DOCKER_START_TIMEOUT:-60} i
  for ((i = 0; i < timeout * 4; i++)); do
    if api_up; then
      log_msg "up after ~$((i / 4))s (pid $(read_pid "$pidfile"), client $docker_cli)"
      print_env
      return 0
    fi
    if ! alive "$launcher" && ! alive "$(read_pid "$pidfile")"; then
      log_msg "dockerd exited during startup; last log lines:"
      tail -n 20 "$log" >&2
      exit 1
    fi
    sleep 0.25
  done
  log_msg "dockerd did not answer within ${timeout}s; last log lines:"
  tail -n 20 "$log" >&2
  stop || true
  exit 1
}

stop() {
  local pid ctr_pid
  pid=$(read_pid "$pidfile")
  ctr_pid=$(read_pid "$ctr_pidfile")
  if alive "$pid"; then
    log_msg "stopping dockerd pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    # dockerd stops containers (shutdown-timeout 5) and its containerd.
    if ! wait_gone "$pid" 30; then
      log_msg "dockerd did not exit in 30s, SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      wait_gone "$pid" 5 || true
    fi
  else
    log_msg "dockerd not running"
  fi
  # The managed containerd normally exits with dockerd; make sure, but only
  # kill it if it is really ours (its command line names our exec-root).
  if alive "$ctr_pid" && tr '\0' ' ' < "/proc/$ctr_pid/cmdline" | grep -qF "$dir/exec/containerd"; then
    log_msg "stopping leftover containerd pid $ctr_pid"
    kill -TERM "$ctr_pid" 2>/dev/null || true
    wait_gone "$ctr_pid" 10 || { kill -KILL "$ctr_pid" 2>/dev/null || true; wait_gone "$ctr_pid" 5 || true; }
  fi
  # dockerd bind-mounts data-root onto itself and overlay2 mounts layers;
  # normally undone at shutdown, but a SIGKILL leaves them, which would make
  # `rm -rf DIR` fail. Unmount anything still mounted under DIR (deepest first).
  local m
  # (awk, not grep: grep's exit 1 on no match would trip pipefail.)
  awk -v d="$dir/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do
    if umount -l "$m" 2>/dev/null; then log_msg "unmounted $m"; fi
  done
  rm -f "$pidfile" "$sock"
}

status() {
  local pid
  pid=$(read_pid "$pidfile")
  if alive "$pid" && api_up; then
    log_msg "running (pid $pid)"
    print_env
  else
    log_msg "not running"
    return 1
  fi
}

case $cmd in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) usage ;;
esac
