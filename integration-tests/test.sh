#!/usr/bin/env bash
# The project's one test command (README, .ci/run): format, lints, then every
# test of the workspace in the `ci` profile (release's optimisation level, so
# timing-sensitive tests see production speed, without its LTO: Cargo.toml),
# with real Redis, ClickHouse, a Kafka-protocol broker and a MongoDB-protocol
# server installed if missing and started on 127.0.0.1 for the duration.
set -euo pipefail
cd "$(dirname "$0")/.."
services=integration-tests/services

if ! command -v python3 >/dev/null; then
  # The workload generator (shared/workload/gen_events.py) is used by tests.
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 >/dev/null
fi
if ! cargo fmt --version >/dev/null 2>&1; then rustup component add rustfmt; fi
if ! cargo clippy --version >/dev/null 2>&1; then rustup component add clippy; fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --profile ci --workspace --all-targets -- -D warnings

echo "== services"
bash "$services/install.sh"
bash "$services/start.sh" --fresh
trap 'bash "$services/stop.sh" || true' EXIT
eval "$(bash "$services/env.sh")"

echo "== cargo test"
# tests/cluster.rs and tests/deploy.rs run the `recflow` binary itself; build it
# here, outside the test environment (integration-tests/src/cli.rs).
cargo build --profile ci -p recflow --bin recflow
cargo test --profile ci --workspace
