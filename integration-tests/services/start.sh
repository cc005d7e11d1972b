#!/usr/bin/env bash
# Start the real services for recflow's integration tests, bound to 127.0.0.1.
#   start.sh [--fresh] [redis] [clickhouse] [kafka] [mongo]   (default: all)
# State, logs and PID files live in ${RECFLOW_RUN_DIR:-/tmp/recflow-services}.
# A service already started by this script and healthy is reused.
# --fresh wipes the state (data) of each named service that is not running.
# Run install.sh first.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

fresh=0
names=()
for a in "$@"; do
  case "$a" in
    --fresh) fresh=1 ;;
    -h | --help) sed -n '2,8p' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) names+=("$a") ;;
  esac
done
[[ ${#names[@]} -gt 0 ]] || names=("${ALL_SERVICES[@]}")
validate_names "${names[@]}"

mkdir -p "$RECFLOW_RUN_DIR"

need_cmd() { command -v "$1" >/dev/null 2>&1 || die "$1 not found: run $SERVICES_DIR/install.sh $2"; }

# ------------------------------------------------------------ launchers ----
# Each launcher starts the server in the background (no daemonizing of its
# own, so $! is the server's PID), stdout/stderr to <run dir>/<name>.log.

# AOF on: a Redis stopped and restarted by the fault tests comes back with its
# data, as a production one would.
launch_redis() {
  need_cmd redis-server redis
  need_cmd redis-cli redis
  local dir="$RECFLOW_RUN_DIR/redis"
  mkdir -p "$dir"
  nohup redis-server --daemonize no --bind "$BIND_HOST" --port "$REDIS_PORT" \
    --protected-mode yes --save '' --appendonly yes --appendfsync everysec --dir "$dir" \
    </dev/null >>"$(log_file redis)" 2>&1 &
  echo $! >"$(pid_file redis)"
}

launch_clickhouse() {
  need_cmd clickhouse-server clickhouse
  need_cmd curl clickhouse
  local dir="$RECFLOW_RUN_DIR/clickhouse"
  mkdir -p "$dir"/{data,tmp,user_files,format_schemas,log}
  local f
  for f in config users; do
    sed -e "s|@STATE_DIR@|$dir|g" -e "s|@HTTP_PORT@|$CLICKHOUSE_HTTP_PORT|g" \
      -e "s|@TCP_PORT@|$CLICKHOUSE_TCP_PORT|g" \
      "$SERVICES_DIR/clickhouse-$f.xml.in" >"$dir/$f.xml"
  done
  (cd "$dir" && exec nohup clickhouse-server --config-file="$dir/config.xml" \
    </dev/null >>"$(log_file clickhouse)" 2>&1) &
  echo $! >"$(pid_file clickhouse)"
}

launch_kafka() {
  local tb
  tb="$(tansu_bin 2>/dev/null)" || true
  [[ -n "$tb" && -x "$tb" ]] || die "tansu not found: run $SERVICES_DIR/install.sh kafka"
  local dir="$RECFLOW_RUN_DIR/kafka"
  mkdir -p "$dir"
  local url="tcp://$BIND_HOST:$KAFKA_PORT"
  (cd "$dir" && exec nohup "$tb" broker --listener-url "$url" \
    --advertised-listener-url "$url" --storage-engine memory://tansu/ \
    </dev/null >>"$(log_file kafka)" 2>&1) &
  echo $! >"$(pid_file kafka)"
}

launch_mongo() {
  local nx
  nx="$(nx27017_bin)"
  [[ -x "$nx" ]] || die "nx-27017 not found: run $SERVICES_DIR/install.sh mongo"
  local dir="$RECFLOW_RUN_DIR/mongo"
  mkdir -p "$dir/data"
  (cd "$dir" && exec nohup "$nx" --host "$BIND_HOST" -p "$MONGO_PORT" \
    --data-dir "$dir/data" --log-file "$dir/nx-27017.log" --pid-file "$dir/nx-27017.pid" \
    </dev/null >>"$(log_file mongo)" 2>&1) &
  echo $! >"$(pid_file mongo)"
}

port_env() {
  case "$1" in
    redis) echo REDIS_PORT ;;
    clickhouse) echo "CLICKHOUSE_HTTP_PORT / CLICKHOUSE_TCP_PORT" ;;
    kafka) echo KAFKA_PORT ;;
    mongo) echo MONGO_PORT ;;
  esac
}

service_logs() {
  case "$1" in
    clickhouse) echo "$(log_file clickhouse) $RECFLOW_RUN_DIR/clickhouse/log/clickhouse-server.err.log" ;;
    mongo) echo "$(log_file mongo) $RECFLOW_RUN_DIR/mongo/nx-27017.log" ;;
    *) log_file "$1" ;;
  esac
}

fail_with_logs() {
  local name="$1" msg="$2" f
  log "ERROR: $name: $msg"
  for f in $(service_logs "$name"); do tail_log "$f"; done
  exit 1
}

# wait_ready NAME PID
wait_ready() {
  local name="$1" pid="$2" t deadline
  t="$(now_s)"
  deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    if ! kill -0 "$pid" 2>/dev/null; then
      rm -f "$(pid_file "$name")"
      fail_with_logs "$name" "process $pid exited during startup"
    fi
    if healthy "$name"; then
      log "$name ready (pid $pid, port $(service_ports "$name"| tr ' ' ,)) in $(elapsed "$t")"
      return 0
    fi
    sleep 0.2
  done
  fail_with_logs "$name" "not ready after ${START_TIMEOUT}s (pid $pid still running; stop it with stop.sh $name)"
}

start_one() {
  local name="$1" pid port t
  if pid="$(read_pid "$name")"; then
    if [[ "$(proc_state "$pid")" == T ]]; then
      die "$name (pid $pid) is paused (SIGSTOP); run resume.sh $name"
    fi
    if healthy "$name"; then
      log "$name already running (pid $pid) and healthy: reusing"
      return 0
    fi
    log "$name already running (pid $pid) but not ready yet: waiting"
    wait_ready "$name" "$pid"
    return 0
  fi
  rm -f "$(pid_file "$name")"

  for port in $(service_ports "$name"); do
    if port_open "$port"; then
      if healthy "$name"; then
        log "WARNING: $name: 127.0.0.1:$port is served by a process this script did not start; reusing it (stop.sh/pause.sh cannot control it)"
        return 0
      fi
      ss -ltnp "sport = :$port" >&2 || true
      die "$name: 127.0.0.1:$port is already in use by something else (move it with $(port_env "$name"))"
    fi
  done

  if [[ $fresh == 1 ]]; then
    log "$name: --fresh: removing $RECFLOW_RUN_DIR/$name"
    rm -rf "${RECFLOW_RUN_DIR:?}/$name"
  fi
  t="$(now_s)"
  "launch_$name"
  pid="$(cat "$(pid_file "$name")")"
  log "$name started (pid $pid), waiting up to ${START_TIMEOUT}s"
  wait_ready "$name" "$pid"
}

T0="$(now_s)"
for n in "${names[@]}"; do start_one "$n"; done
log "all ready (${names[*]}) in $(elapsed "$T0"); run dir $RECFLOW_RUN_DIR"
