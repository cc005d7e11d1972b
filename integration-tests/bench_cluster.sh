#!/usr/bin/env bash
# Cluster-mode throughput (BENCHMARKS.md "Timely cluster"): N generated events
# on per-tenant Kafka topics (3 partitions each), consumed by processes ×
# workers = 1×1, 1×2, 2×1 (each with its own consumer group, from the
# earliest offset), embedded store (the dataflow, not the services, is
# measured). Needs a running Kafka-protocol broker ($KAFKA_BROKERS, see
# services/env.sh) and a release build.
#   bench_cluster.sh [EVENTS] [SHAPES...]        default: 300000 1x1 1x2 2x1
# Prints one Markdown row per shape. events/s = events / (wall − idle exit),
# wall = slowest process's run time (group join included).
set -euo pipefail
cd "$(dirname "$0")/.."
n="${1:-300000}"; shift || true
shapes=("${@:-1x1 1x2 2x1}"); read -r -a shapes <<<"${shapes[*]}"
bin="${CARGO_TARGET_DIR:-target}/release/recflow"
brokers="${KAFKA_BROKERS:?start the services and eval services/env.sh}"
idle=5
dir="$(mktemp -d /tmp/recflow-bench-cluster.XXXXXX)"
prefix="bc$(date +%s)"
"$bin" generate events --events "$n" --seed 7 --out "$dir/raw.jsonl" 2>/dev/null
sed "s/\"tenant_id\":\"tenant_/\"tenant_id\":\"${prefix}_tenant_/" "$dir/raw.jsonl" >"$dir/events.jsonl"
"$bin" generate catalog --seed 7 --out "$dir/raw_items.jsonl" 2>/dev/null
sed "s/\"tenant_id\":\"tenant_/\"tenant_id\":\"${prefix}_tenant_/" "$dir/raw_items.jsonl" >"$dir/items.jsonl"

config() { # GROUP -> config file
  cat >"$dir/$1.toml" <<EOT
[pipeline]
progress_interval_secs = 0
[embedded]
dlq_path = ""
raw_log_path = ""
[telemetry]
metrics_addr = ""
[kafka]
brokers = "$brokers"
group_id = "$1"
topic_pattern = "^user-behaviors-${prefix}_[a-z0-9_]+\$"
session_timeout_ms = 6000
partitions = 3
EOT
  echo "$dir/$1.toml"
}
"$bin" produce --config "$(config produce)" --input "$dir/events.jsonl" --partitions 3 2>/dev/null

echo "| processes × workers | events | wall s | events/s (wall − ${idle} s idle exit) |"
echo "|---|---|---|---|"
for shape in "${shapes[@]}"; do
  p="${shape%x*}"; w="${shape#*x}"; group="${prefix}_$shape"; cfg="$(config "$group")"
  : >"$dir/hosts-$shape"
  for ((i = 0; i < p; i++)); do echo "127.0.0.1:$((23100 + i))" >>"$dir/hosts-$shape"; done
  pids=()
  for ((i = 0; i < p; i++)); do
    cluster=()
    [[ $p -gt 1 ]] && cluster=(--processes "$p" --process "$i" --hosts "$dir/hosts-$shape")
    "$bin" run --config "$cfg" --catalog "$dir/items.jsonl" --workers "$w" --exit-when-idle "$idle" \
      --stats-json "$dir/stats-$shape-$i.json" "${cluster[@]}" 2>"$dir/log-$shape-$i.txt" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid"; done
  python3 - "$dir" "$shape" "$p" "$idle" <<'PY'
import json, sys
d, shape, p, idle = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
st = [json.load(open(f"{d}/stats-{shape}-{i}.json")) for i in range(p)]
ev = sum(s["events"] + s["invalid"] for s in st)
wall = max(s["seconds"] for s in st)
print(f"| {shape.replace('x', ' × ')} | {ev} | {wall:.1f} | {ev / max(wall - idle, 1e-9):.0f} |")
PY
done
rm -rf "$dir"
