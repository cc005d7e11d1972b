#!/usr/bin/env bash
# Print `export` lines with the addresses of the services start.sh runs
# (honouring the same *_PORT overrides). Use:
#   eval "$(integration-tests/services/env.sh)"
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

cat <<EOT
export REDIS_URL=redis://$BIND_HOST:$REDIS_PORT
export CLICKHOUSE_URL=http://$BIND_HOST:$CLICKHOUSE_HTTP_PORT
export KAFKA_BROKERS=$BIND_HOST:$KAFKA_PORT
export MONGO_URL=mongodb://$BIND_HOST:$MONGO_PORT
export RECFLOW_TANSU_BIN=$(tansu_bin || true)
export RECFLOW_S3_SERVER_BIN=$(moto_server_bin)
EOT
