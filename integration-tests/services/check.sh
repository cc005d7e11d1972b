#!/usr/bin/env bash
# Smoke-test running services with real round trips (not just port checks):
#   check.sh [redis] [clickhouse] [kafka] [mongo]     (default: all)
# redis: PING + SET/GET; clickhouse: SELECT version() over TCP and HTTP;
# kafka: tansu topic create / produce / consume; mongo: pymongo insert/find.
# Exits non-zero on the first failure. Leaves small test keys/topics behind.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

names=("$@")
[[ ${#names[@]} -gt 0 ]] || names=("${ALL_SERVICES[@]}")
validate_names "${names[@]}"
stamp="$(date +%s)_$$"

check_redis() {
  local pong v
  pong="$(timeout 10 redis-cli -h "$BIND_HOST" -p "$REDIS_PORT" PING)"
  [[ "$pong" == PONG ]] || die "redis: PING answered '$pong'"
  timeout 10 redis-cli -h "$BIND_HOST" -p "$REDIS_PORT" SET "recflow:selftest" "$stamp" EX 60 >/dev/null
  v="$(timeout 10 redis-cli -h "$BIND_HOST" -p "$REDIS_PORT" GET "recflow:selftest")"
  [[ "$v" == "$stamp" ]] || die "redis: GET returned '$v'"
  log "redis ok: PING=$pong, $(timeout 10 redis-cli -h "$BIND_HOST" -p "$REDIS_PORT" INFO server | tr -d '\r' | grep '^redis_version:')"
}

check_clickhouse() {
  local v h
  v="$(timeout 20 clickhouse-client --host "$BIND_HOST" --port "$CLICKHOUSE_TCP_PORT" --query 'SELECT version()')"
  h="$(curl -fsS -m 10 "http://$BIND_HOST:$CLICKHOUSE_HTTP_PORT/" --data-binary 'SELECT 1 + 1')"
  [[ "$h" == 2 ]] || die "clickhouse: HTTP SELECT 1 + 1 returned '$h'"
  log "clickhouse ok: version() over TCP = $v; HTTP SELECT 1+1 = $h"
}

check_kafka() {
  local tb url topic out
  tb="$(tansu_bin)"
  url="tcp://$BIND_HOST:$KAFKA_PORT"
  topic="recflow_selftest_$stamp"
  timeout 20 "$tb" topic create "$topic" --partitions 1 --broker "$url" >/dev/null
  printf '{"key":"k","value":{"stamp":"%s"}}\n' "$stamp" |
    timeout 20 "$tb" cat produce "$topic" --broker "$url"
  out="$(timeout 20 "$tb" cat consume "$topic" --broker "$url" --max-wait-time-ms 1000)"
  [[ "$out" == *"$stamp"* ]] || die "kafka: consumed '$out', expected the produced record"
  timeout 20 "$tb" topic delete "$topic" --broker "$url" >/dev/null 2>&1 || true
  log "kafka ok: topic create + produce + consume round trip via tansu ($("$tb" --version))"
}

check_mongo() {
  local out
  out="$(timeout 30 "$(venv_python)" - "$BIND_HOST" "$MONGO_PORT" "$stamp" <<'PY'
import sys, pymongo
c = pymongo.MongoClient(sys.argv[1], int(sys.argv[2]), serverSelectionTimeoutMS=5000,
                        directConnection=True)
c.admin.command("ping")
col = c["recflow_selftest"]["docs"]
col.insert_one({"_id": sys.argv[3], "n": 1})
col.update_one({"_id": sys.argv[3]}, {"$inc": {"n": 1}}, upsert=True)
doc = col.find_one({"_id": sys.argv[3]})
assert doc and doc["n"] == 2, doc
col.delete_one({"_id": sys.argv[3]})
print(c.admin.command("hello").get("maxWireVersion", "?"))
PY
)" || die "mongo: pymongo round trip failed"
  log "mongo ok: ping + insert/update/find/delete via pymongo (hello: maxWireVersion $out)"
}

for n in "${names[@]}"; do "check_$n"; done
log "check passed: ${names[*]}"
