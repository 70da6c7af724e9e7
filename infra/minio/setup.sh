#!/usr/bin/env bash
# Wire a MinIO deployment to deepfaas (see README.md in this folder).
#
#   setup.sh stream                     create the JetStream stream MinIO publishes into
#   setup.sh env                        print MinIO's NATS target settings (environment)
#   setup.sh config                     set them with `mc admin config set` and restart MinIO
#   setup.sh bucket BUCKET [PREFIX] [SUFFIX]
#                                       send the bucket's put/delete events to the target
#
# Settings (environment): NATS_URL (for `stream`), NATS_ADDRESS (host:port as MinIO reaches
# NATS), MINIO_ALIAS (an `mc alias`), TARGET_ID, STREAM, SUBJECT, QUEUE_DIR, PYTHON.
set -euo pipefail

NATS_URL=${NATS_URL:-nats://127.0.0.1:4222}
NATS_ADDRESS=${NATS_ADDRESS:-${NATS_URL#*://}}
MINIO_ALIAS=${MINIO_ALIAS:-deepfaas}
TARGET_ID=${TARGET_ID:-DEEPFAAS}
STREAM=${STREAM:-MINIO}
SUBJECT=${SUBJECT:-minio.events}
QUEUE_DIR=${QUEUE_DIR:-/var/lib/minio/events}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
ARN="arn:minio:sqs::${TARGET_ID}:nats"

usage() {
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
}

stream() {
    # the same declaration the bridge makes at start: idempotent
    cd "$ROOT"
    "$PYTHON" - "$NATS_URL" "$STREAM" "$SUBJECT" <<'EOF'
import asyncio
import sys

from eventbus.connection import Bus
from eventbus.minio_bridge import ensure_minio_stream


async def main(url: str, stream: str, subject: str) -> None:
    bus = await Bus.connect(url, name="minio-setup")
    try:
        await ensure_minio_stream(bus, stream=stream, subject=subject)
        info = await bus.js.stream_info(stream)
        print(f"stream {stream} holds {info.config.subjects} ({info.state.messages} messages)")
    finally:
        await bus.close()


asyncio.run(main(*sys.argv[1:4]))
EOF
}

env_lines() {
    cat <<EOF
MINIO_NOTIFY_NATS_ENABLE_${TARGET_ID}=on
MINIO_NOTIFY_NATS_ADDRESS_${TARGET_ID}=${NATS_ADDRESS}
MINIO_NOTIFY_NATS_SUBJECT_${TARGET_ID}=${SUBJECT}
MINIO_NOTIFY_NATS_JETSTREAM_${TARGET_ID}=on
MINIO_NOTIFY_NATS_QUEUE_DIR_${TARGET_ID}=${QUEUE_DIR}
MINIO_NOTIFY_NATS_QUEUE_LIMIT_${TARGET_ID}=100000
EOF
}

config() {
    command -v mc >/dev/null || { echo "mc (the MinIO client) is not installed" >&2; exit 1; }
    mc admin config set "$MINIO_ALIAS" "notify_nats:${TARGET_ID}" \
        address="$NATS_ADDRESS" subject="$SUBJECT" jetstream="on" \
        queue_dir="$QUEUE_DIR" queue_limit="100000"
    mc admin service restart "$MINIO_ALIAS"
}

bucket() {
    command -v mc >/dev/null || { echo "mc (the MinIO client) is not installed" >&2; exit 1; }
    local name=${1:?bucket name} prefix=${2:-} suffix=${3:-}
    local args=("$MINIO_ALIAS/$name" "$ARN" --event put,delete)
    [[ -n $prefix ]] && args+=(--prefix "$prefix")
    [[ -n $suffix ]] && args+=(--suffix "$suffix")
    mc event add "${args[@]}"
    mc event list "$MINIO_ALIAS/$name" "$ARN"
}

case ${1:-} in
    stream) stream ;;
    env) env_lines ;;
    config) config ;;
    bucket) shift; bucket "$@" ;;
    *) usage ;;
esac
