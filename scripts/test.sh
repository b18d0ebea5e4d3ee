#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the end-to-end tests need
# (Debian packages, the oras venv, cargo tools), checks formatting, lints,
# unused dependencies, licenses and docs, then runs
# every test of the workspace (unit, in-process API, and end-to-end tests
# with the real binary, real clients and the reference registry; the
# metadata tests also on PostgreSQL, started by scripts/postgres.sh), and the
# end-to-end tests a second time with a one-registry registries block.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
export BERTH_VENV="${BERTH_VENV:-$PWD/target/venv}"

echo "== rustfmt"
cargo fmt --all -- --check
echo "== clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== unused dependencies (cargo machete)"
cargo machete
echo "== licenses, bans, sources (cargo deny; deny.toml)"
cargo deny --locked check licenses bans sources
echo "== docs"
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --workspace --locked --quiet
echo "== tests"
# A throwaway PostgreSQL for the metadata tests (each makes its own database),
# unless one is given; stopped at the end if this run started it.
if [ -z "${BERTH_TEST_POSTGRES_URL:-}" ]; then
  if ! scripts/postgres.sh url >/dev/null 2>&1; then
    trap 'scripts/postgres.sh stop || true' EXIT
  fi
  BERTH_TEST_POSTGRES_URL=$(scripts/postgres.sh start)
  export BERTH_TEST_POSTGRES_URL
fi
echo "PostgreSQL for the tests: $BERTH_TEST_POSTGRES_URL"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --locked --no-fail-fast "$@"
else
  cargo test --workspace --locked --no-fail-fast "$@"
fi
# The end-to-end tests again, each configuration gaining a registries block
# of one registry: adding the key to a single-registry deployment changes nothing.
echo "== end-to-end tests as one of registries (BERTH_TEST_ONE_REGISTRY=1)"
if cargo nextest --version >/dev/null 2>&1; then
  BERTH_TEST_ONE_REGISTRY=1 cargo nextest run -p berth -E 'kind(test)' --locked --no-fail-fast "$@"
else
  BERTH_TEST_ONE_REGISTRY=1 cargo test -p berth --tests --locked --no-fail-fast "$@"
fi
