#!/usr/bin/env bash
# Benchmarks Berth against the reference registry (distribution 2.8) side by
# side: builds both tools in release mode, installs wrk, skopeo and the
# reference registry if missing, and runs every workload once.
#
#   bench/run.sh            full run (about 20 minutes on 2 cores, half of it gc)
#   bench/run.sh --quick    a short run
#   bench/run.sh --only requests,listing
#   bench/run.sh --only s3  both on one single-node Garage (scripts/garage.sh)
#
# Prints a table (markdown on stdout, progress on stderr) and writes
# target/bench/results.json. Not part of the test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-test-deps.sh >/dev/null
cargo build --release -q -p berth -p berth-bench
exec target/release/berth-bench "$@"
