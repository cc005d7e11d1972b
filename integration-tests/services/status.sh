#!/usr/bin/env bash
# Show each service's state: running/paused/stopped, PID, health.
#   status.sh [names]    exit 0 if every named service is running and healthy
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

names=("$@")
[[ ${#names[@]} -gt 0 ]] || names=("${ALL_SERVICES[@]}")
validate_names "${names[@]}"

rc=0
for n in "${names[@]}"; do
  ports="$(service_ports "$n" | tr ' ' ,)"
  if pid="$(read_pid "$n")"; then
    if [[ "$(proc_state "$pid")" == T ]]; then
      printf '%-10s paused   pid %-7s port %s\n' "$n" "$pid" "$ports"; rc=1
    elif healthy "$n"; then
      printf '%-10s running  pid %-7s port %s  healthy\n' "$n" "$pid" "$ports"
    else
      printf '%-10s running  pid %-7s port %s  NOT answering\n' "$n" "$pid" "$ports"; rc=1
    fi
  else
    printf '%-10s stopped             port %s\n' "$n" "$ports"; rc=1
  fi
done
exit $rc
