#!/bin/sh
# Prints the platform's Secrets as YAML, with fresh random passwords:
#   infra/kubernetes/platform/secrets.sh | kubectl apply -f -
# deepfaas-nats (namespace deepfaas): one NATS password per platform role, twice: as <role>
#   (nats-server and the single-role pods read it as an environment variable) and as
#   <role>.json (the controller mounts its own and its workers' roles as DEEPFAAS_NATS_CREDENTIALS_DIR).
# deepfaas-worker-nats (namespace deepfaas-runtimes): the `worker` role, as the environment of
#   the runtimes the kubernetes provider starts (DEEPFAAS_KUBERNETES_WORKER_SECRET).
# deepfaas-s3 (namespace deepfaas): the S3 keys, from S3_ACCESS_KEY and S3_SECRET_KEY.
# Running it again makes new passwords: restart nats and every platform pod after applying.
set -eu
ROLES="admin gateway controller dispatcher deliverer bridge worker platform-worker"

password() {
    head -c 32 /dev/urandom | base64 | tr -d '/+=\n' | cut -c1-40
}

echo "apiVersion: v1"
echo "kind: Secret"
echo "metadata: {name: deepfaas-nats, namespace: deepfaas}"
echo "type: Opaque"
echo "stringData:"
worker=""
for role in $ROLES; do
    pw=$(password)
    [ "$role" = worker ] && worker=$pw
    echo "  $role: \"$pw\""
    echo "  $role.json: '{\"user\": \"$role\", \"password\": \"$pw\"}'"
done
echo "---"
echo "apiVersion: v1"
echo "kind: Secret"
echo "metadata: {name: deepfaas-worker-nats, namespace: deepfaas-runtimes}"
echo "type: Opaque"
echo "stringData:"
echo "  DEEPFAAS_NATS_USER: worker"
echo "  DEEPFAAS_NATS_PASSWORD: \"$worker\""
echo "  DEEPFAAS_NATS_INBOX_PREFIX: _INBOX.worker"
echo "---"
echo "apiVersion: v1"
echo "kind: Secret"
echo "metadata: {name: deepfaas-s3, namespace: deepfaas}"
echo "type: Opaque"
echo "stringData:"
echo "  DEEPFAAS_STORAGE_S3_ACCESS_KEY: \"${S3_ACCESS_KEY:?set S3_ACCESS_KEY}\""
echo "  DEEPFAAS_STORAGE_S3_SECRET_KEY: \"${S3_SECRET_KEY:?set S3_SECRET_KEY}\""
