#!/usr/bin/env bash
# install-test-deps.sh — installs what Berth's end-to-end tests need to drive
# real registry clients. Idempotent and fast when everything is present.
#
#   Debian packages: reference registry (docker-registry = distribution 2.8),
#                    skopeo, podman, buildah, umoci, docker.io (dockerd 20.10
#                    + containerd + runc), wrk, openssl (make-test-image.sh),
#                    curl (health checks), postgresql (scripts/postgres.sh,
#                    the metadata tests on PostgreSQL), python3-venv (only if needed)
#   Cargo tools:     cargo-machete, cargo-deny (the CI gates of test.sh)
#   Garage:          scripts/garage.sh install (cargo install garage --locked,
#                    unless a garage binary is present)
#   Python venv:     ${BERTH_VENV:-<repo>/target/venv} with the PyPI "oras"
#                    SDK (version ${BERTH_ORAS_VERSION:-0.2.43}; the test
#                    script subclasses its Registry class, so keep it pinned)
#
# Env: BERTH_VENV, BERTH_ORAS_VERSION, PYTHON (interpreter for the venv;
#      default python3 from PATH, falling back to /usr/bin/python3).
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${BERTH_VENV:-$repo/target/venv}
oras_version=${BERTH_ORAS_VERSION:-0.2.43}

packages=(docker-registry skopeo podman buildah umoci docker.io wrk openssl curl ca-certificates postgresql)

say() { echo "install-test-deps: $*"; }

# Root for apt; use sudo when run by a developer as a normal user.
if [ "$(id -u)" = 0 ]; then sudo=(); else sudo=(sudo); fi

installed() { # PKG -> 0 if installed
  [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

# apt-get update is slow: only when something must be installed and the
# package lists are missing or older than a day, or when an install failed
# (e.g. a stale list pointing at a removed .deb).
apt_lists_fresh() {
  local n
  n=$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -1440 2>/dev/null | wc -l)
  [ "$n" -gt 0 ]
}

apt_install() { # PKGS...
  local apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -y -q -o Dpkg::Use-Pty=0)
  if ! apt_lists_fresh; then
    say "apt-get update (package lists missing or older than a day)"
    "${apt[@]}" update >/dev/null
  fi
  say "apt-get install $*"
  if ! "${apt[@]}" install "$@" >/dev/null; then
    say "install failed; apt-get update and retry"
    "${apt[@]}" update >/dev/null
    "${apt[@]}" install "$@" >/dev/null
  fi
}

# Pick a Python whose venv module can bootstrap pip (Debian's python3 needs the
# python3-venv package for ensurepip).
python_ok() { "$1" -c 'import venv, ensurepip' >/dev/null 2>&1; }
pick_python() {
  local p
  for p in ${PYTHON:-} python3 /usr/bin/python3; do
    if command -v "$p" >/dev/null 2>&1 && python_ok "$p"; then
      command -v "$p"
      return 0
    fi
  done
  return 1
}

# --- Debian packages -------------------------------------------------------
missing=()
for p in "${packages[@]}"; do
  installed "$p" || missing+=("$p")
done
venv_ready=0
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import oras.version as v, sys; sys.exit(v.__version__ != '$oras_version')" 2>/dev/null; then
  venv_ready=1
fi
if [ "$venv_ready" = 0 ] && ! pick_python >/dev/null; then
  missing+=(python3 python3-venv)
fi

if [ ${#missing[@]} -gt 0 ]; then
  apt_install "${missing[@]}"
else
  say "Debian packages already installed: ${packages[*]}"
fi

# docker.io's postinst may start a system dockerd/containerd under systemd;
# the tests never use them (scripts/dockerd.sh runs a private engine), and in
# containers without systemd nothing is started. Nothing to do here.

# --- Python venv with oras -------------------------------------------------
if [ "$venv_ready" = 1 ]; then
  say "venv $venv already has oras $oras_version"
else
  py=$(pick_python) || { say "no python3 with venv/ensurepip found"; exit 1; }
  if [ ! -x "$venv/bin/python" ]; then
    say "creating venv $venv with $py"
    mkdir -p "$(dirname "$venv")"
    "$py" -m venv "$venv"
  fi
  say "pip install oras==$oras_version into $venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "oras==$oras_version"
fi

# --- Cargo tools of the CI gates ------------------------------------------------
# cargo-machete (unused dependencies, about a minute to build) and cargo-deny
# (licenses, bans, sources; about four minutes), pinned, built once.
cargo_tool() { # BINARY CRATE VERSION
  if command -v "$1" >/dev/null 2>&1 && "$1" --version 2>/dev/null | grep -q "$3"; then
    say "$2 $3 already installed"
  else
    say "cargo install $2 $3"
    cargo install "$2" --version "$3" --locked >&2
  fi
}
cargo_tool cargo-machete cargo-machete 0.9.2
cargo_tool cargo-deny cargo-deny 0.20.2

# --- Garage (S3-compatible object store) ------------------------------------
# Built from crates.io once (about 20 minutes on 2 cores); a binary already
# present is reused.
"$repo/scripts/garage.sh" install

# --- Summary ---------------------------------------------------------------
say "versions:"
{
  echo "  docker-registry: $(dpkg-query -W -f='${Version}' docker-registry)"
  echo "  skopeo:          $(skopeo --version | awk '{print $3}')"
  echo "  podman:          $(podman --version | awk '{print $3}')"
  echo "  buildah:         $(buildah --version | awk '{print $3}')"
  echo "  umoci:           $(umoci --version | awk '{print $3}')"
  echo "  dockerd:         $(dockerd --version 2>/dev/null | awk '{print $3}' | tr -d ,)"
  echo "  docker (Debian): $(/usr/bin/docker --version | awk '{print $3}' | tr -d ,)"
  echo "  oras (python):   $("$venv/bin/python" -c 'import oras.version as v; print(v.__version__)')"
  echo "  postgresql:      $(dpkg-query -W -f='${Version}' postgresql)"
  echo "  garage:          $("$repo/scripts/garage.sh" install 2>&1 | sed 's/.*(//; s/)$//')"
} || true
say "BERTH_VENV=$venv"
