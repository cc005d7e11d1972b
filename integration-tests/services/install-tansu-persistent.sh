#!/usr/bin/env bash
# Install the persistent tansu build (SQLite storage: survives a broker
# restart) used by tests/broker_restart.rs, into ~/.cargo/bin/tansu.
# About 17 minutes of compiling on 2 cores the first time; skipped when that
# version is already installed (~/.cargo survives between runs on a machine).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

version=0.6.0
bin="${CARGO_HOME:-$HOME/.cargo}/bin/tansu"
if [[ -x "$bin" ]] && "$bin" --version 2>&1 | grep -q "$version"; then
  log "kafka (persistent): tansu $version already at $bin"
  exit 0
fi
log "kafka (persistent): cargo install tansu $version (dynostore, libsql); this takes a while the first time"
cargo install tansu --version "$version" --features dynostore,libsql --quiet
"$bin" --version
