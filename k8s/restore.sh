#!/usr/bin/env bash
# k8s/restore.sh DUMP: restore the tickpipe database of a release from one of its backup CronJob's dumps
# (k8s/README.md, "Backup and restore"). DUMP is a file name in the backups claim (`k8s/restore.sh --list` lists them).
#   1. the writers stop: the ingestor scaled to 0, the MA job suspended (the operator takes a savepoint)
#   2. a one-off pod with the backups claim and the chart's scripts runs restore.sh into a new database, then swaps
#      the names: <db> becomes <db>_before_<time>, the restored one becomes <db>
#   3. the writers start again: the job resumes from its savepoint and upserts, the ingestor produces
# The old database is kept (drop it when satisfied). Knobs: NAMESPACE, RELEASE, CONTEXT, DATABASE (tickpipe),
# OWNER (tickpipe); KUBECTL names the command.
set -euo pipefail
cd "$(dirname "$0")/.."

namespace=${NAMESPACE:-tickpipe}
release=${RELEASE:-tickpipe}
database=${DATABASE:-tickpipe}
owner=${OWNER:-tickpipe}
kubectl_cmd=${KUBECTL:-kubectl}
context_flags=()
if [ -n "${CONTEXT:-}" ]; then context_flags=(--context "$CONTEXT"); fi
dump=${1:?usage: k8s/restore.sh DUMP | --list}
db=$release-timescaledb
pod=$release-timescaledb-restore

fail() { printf 'restore: FAILED: %s: %s\n' "$1" "$2" >&2; exit 1; }
step() { printf '\033[1m==> %s\033[0m\n' "$*"; }
k() { "$kubectl_cmd" "${context_flags[@]}" --namespace "$namespace" "$@"; }

[[ "$dump" == --list || "$dump" =~ ^[A-Za-z0-9_.-]+\.dump$ ]] || fail arguments "DUMP is a file name such as $database-20260101T031700Z.dump"
image=$(k get "statefulset/$db" -o 'jsonpath={.spec.template.spec.containers[0].image}') ||
  fail preflight "no StatefulSet $db in $namespace"
k get "pvc/$db-backups" > /dev/null || fail preflight "no backups claim $db-backups (backup.enabled in charts/timescaledb)"

# The pod: the database's image, the backups claim read-only, the chart's scripts, the owner's password, the backup
# runs' labels (the database's NetworkPolicy admits them) and the chart's security context.
run_pod() {  # COMMAND: runs it in the restore pod, prints its output, returns its exit code
  local overrides
  overrides=$(RELEASE=$release DB=$db OWNER=$owner IMAGE=$image python3 - "$1" <<'PY'
import json, os, sys
release, db = os.environ["RELEASE"], os.environ["DB"]
labels = {"app.kubernetes.io/name": "timescaledb-backup", "app.kubernetes.io/instance": release,
          "app.kubernetes.io/component": "backup", "app.kubernetes.io/part-of": "tickpipe"}
env = [{"name": "PGHOST", "value": db}, {"name": "PGUSER", "value": os.environ["OWNER"]},
       {"name": "PGDATABASE", "value": "postgres"},
       {"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {"name": db, "key": "DATABASE_PASSWORD"}}}]
container = {
    "name": "restore", "image": os.environ["IMAGE"], "command": ["sh", "-ec", sys.argv[1]], "env": env,
    "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]}},
    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}},
    "volumeMounts": [{"name": "backups", "mountPath": "/backups", "readOnly": True},
                     {"name": "scripts", "mountPath": "/scripts", "readOnly": True},
                     {"name": "tmp", "mountPath": "/tmp"}],
}
print(json.dumps({"apiVersion": "v1", "metadata": {"labels": labels}, "spec": {
    "restartPolicy": "Never", "automountServiceAccountToken": False,
    "securityContext": {"runAsNonRoot": True, "runAsUser": 70, "runAsGroup": 70, "fsGroup": 70,
                        "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [container],
    "volumes": [{"name": "backups", "persistentVolumeClaim": {"claimName": f"{db}-backups", "readOnly": True}},
                {"name": "scripts", "configMap": {"name": f"{db}-backup-scripts"}},
                {"name": "tmp", "emptyDir": {}}]}}))
PY
)
  k run "$pod" --image "$image" --restart Never --rm --attach --quiet --overrides "$overrides" --pod-running-timeout 5m
}

if [ "$dump" = --list ]; then
  run_pod 'ls -l /backups'
  exit 0
fi

step "stop the writers: ingestor scaled to 0, MA job suspended (with a savepoint)"
replicas=$(k get "statefulset/$release-ingestor" -o 'jsonpath={.spec.replicas}' 2> /dev/null || echo 0)
k scale "statefulset/$release-ingestor" --replicas 0 > /dev/null 2>&1 || true
k patch "flinkdeployment/$release-ma-job" --type merge -p '{"spec":{"job":{"state":"suspended"}}}' > /dev/null 2>&1 || true
k wait "flinkdeployment/$release-ma-job" --for 'jsonpath={.status.jobStatus.state}=FINISHED' --timeout 10m \
  > /dev/null 2>&1 || echo "  (the MA job did not report FINISHED; continuing: its writes are upserts)"

step "restore $dump into $database (the current one is kept as ${database}_before_<time>)"
stamp=$(date -u +%Y%m%d%H%M%S)
# One command string is one transaction: both renames happen, or neither (the sessions on the database are ended
# first; ALTER DATABASE RENAME needs it unused).
script="sh /scripts/restore.sh /backups/$dump ${database}_restored_$stamp
psql --no-psqlrc --set=ON_ERROR_STOP=1 --quiet --command=\"SELECT pg_terminate_backend(pid) FROM pg_stat_activity
  WHERE datname = '$database' AND pid <> pg_backend_pid(); ALTER DATABASE \\\"$database\\\" RENAME TO
  \\\"${database}_before_$stamp\\\"; ALTER DATABASE \\\"${database}_restored_$stamp\\\" RENAME TO \\\"$database\\\"\""
if ! run_pod "$script"; then
  failed=yes
fi

step "start the writers again"
k patch "flinkdeployment/$release-ma-job" --type merge -p '{"spec":{"job":{"state":"running"}}}' > /dev/null 2>&1 || true
k scale "statefulset/$release-ingestor" --replicas "${replicas:-1}" > /dev/null 2>&1 || true
if [ -n "${failed:-}" ]; then
  fail restore "the restore pod failed (above); $database is unchanged and the writers run again"
fi
echo "restore: ok: $database restored from $dump; the previous one is ${database}_before_$stamp (drop it when satisfied)"
