#!/usr/bin/env bash
# Undo pause.sh:
#   resume.sh NAME...   a paused (SIGSTOPped) service gets SIGCONT; a service
#                       that is not running is started again (start.sh NAME).
# Either way, waits until the service answers again.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[[ $# -gt 0 ]] || die "usage: resume.sh NAME... (names: ${ALL_SERVICES[*]})"
case "$1" in -h | --help) sed -n '2,5p' "${BASH_SOURCE[0]}"; exit 0 ;; esac
validate_names "$@"

for n in "$@"; do
  if pid="$(read_pid "$n")"; then
    if [[ "$(proc_state "$pid")" == T ]]; then
      kill -CONT "$pid"
      t="$(now_s)"
      deadline=$((SECONDS + START_TIMEOUT))
      until healthy "$n"; do
        ((SECONDS < deadline)) || die "$n (pid $pid) resumed but not healthy after ${START_TIMEOUT}s"
        sleep 0.1
      done
      log "$n resumed (SIGCONT pid $pid), healthy after $(elapsed "$t")"
    else
      log "$n (pid $pid) is not paused; nothing to do"
    fi
  else
    "$SERVICES_DIR/start.sh" "$n"
  fi
done
