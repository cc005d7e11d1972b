#!/usr/bin/env bash
# Fault injection: make services started by start.sh unavailable.
#   pause.sh NAME...          SIGSTOP: process frozen, port still open, clients
#                             connect but get no answer (a hung server)
#   pause.sh --down NAME...   stop it (stop.sh): connection refused (a dead
#                             server); note kafka (memory://) loses its data
# Undo with resume.sh NAME...
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

mode=stop
names=()
for a in "$@"; do
  case "$a" in
    --down) mode=down ;;
    --freeze | --sigstop) mode=stop ;;
    -h | --help) sed -n '2,8p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) names+=("$a") ;;
  esac
done
[[ ${#names[@]} -gt 0 ]] || die "usage: pause.sh [--down] NAME... (names: ${ALL_SERVICES[*]})"
validate_names "${names[@]}"

if [[ $mode == down ]]; then
  exec "$SERVICES_DIR/stop.sh" "${names[@]}"
fi

for n in "${names[@]}"; do
  pid="$(read_pid "$n")" || die "$n is not running (under start.sh's control)"
  kill -STOP "$pid"
  # SIGSTOP is asynchronous: wait until the kernel reports it stopped.
  for _ in $(seq 50); do
    [[ "$(proc_state "$pid")" == T ]] && break
    sleep 0.02
  done
  [[ "$(proc_state "$pid")" == T ]] || die "$n (pid $pid) did not stop"
  log "$n paused (SIGSTOP pid $pid)"
done
