#!/usr/bin/env bash
# Stop services that start.sh started, by the PIDs in <run dir>/<name>.pid.
#   stop.sh [redis] [clickhouse] [kafka] [mongo]     (default: all)
# SIGTERM (plus SIGCONT, in case it is paused), wait up to
# RECFLOW_STOP_TIMEOUT (15) seconds, then SIGKILL. Never kills by name.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

names=("$@")
[[ ${#names[@]} -gt 0 ]] || names=(mongo kafka clickhouse redis)
validate_names "${names[@]}"

# wait_gone PID SECONDS -> 0 once PID has exited
wait_gone() {
  local pid="$1" deadline=$((SECONDS + $2))
  while kill -0 "$pid" 2>/dev/null; do
    # A zombie counts as gone (its parent, start.sh's shell, is long gone,
    # so init reaps it; this is for the odd case where we are the parent).
    [[ "$(proc_state "$pid")" == Z ]] && return 0
    ((SECONDS < deadline)) || return 1
    sleep 0.1
  done
}

stop_one() {
  local name="$1" pid t port
  local pf
  pf="$(pid_file "$name")"
  if ! pid="$(read_pid "$name")"; then
    if [[ -e "$pf" ]]; then
      log "$name: not running (stale $pf removed)"
      rm -f "$pf"
    else
      log "$name: not running"
    fi
    return 0
  fi
  t="$(now_s)"
  kill -TERM "$pid" 2>/dev/null || true
  kill -CONT "$pid" 2>/dev/null || true
  if ! wait_gone "$pid" "$STOP_TIMEOUT"; then
    log "$name: pid $pid still alive after ${STOP_TIMEOUT}s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 10 || die "$name: pid $pid survived SIGKILL"
  fi
  rm -f "$pf"
  # The listening sockets go with the process; make sure of it.
  for port in $(service_ports "$name"); do
    local deadline=$((SECONDS + 5))
    while port_open "$port" && ((SECONDS < deadline)); do sleep 0.1; done
    if port_open "$port"; then log "WARNING: $name: port $port still open after stopping pid $pid"; fi
  done
  log "$name: stopped (pid $pid) in $(elapsed "$t")"
}

for n in "${names[@]}"; do stop_one "$n"; done
