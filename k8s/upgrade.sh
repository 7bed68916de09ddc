#!/usr/bin/env bash
# k8s/upgrade.sh CHART [helm upgrade flags...]: upgrade a running tickpipe release, the MA job included, without
# losing or doubling a tick (k8s/README.md, "Upgrades"). CHART is charts/tickpipe or a packaged chart
# (dist/tickpipe-<version>.tgz from `make images`), e.g.
#   k8s/upgrade.sh dist/tickpipe-0.2.0.tgz -f dist/images-0.2.0.yaml
# What happens, in order:
#   1. preflight: the release exists and its FlinkDeployment's job is RUNNING (a job that is not cannot take the
#      savepoint the upgrade restores from: fix it first, `tickpipe k8s status` says what is wrong)
#   2. helm upgrade --wait: the migrator hook (pre-upgrade) changes the schema before any stage changes; the Flink
#      operator (upgradeMode savepoint) stops the job with a savepoint, starts the new image and restores it
#   3. the job is RUNNING again on the new spec (the operator's lifecycle STABLE), then `tickpipe k8s status`
# A job whose state the new version cannot read fails to restore: the operator reports it on the FlinkDeployment
# and this script stops there, naming the way out (k8s/README.md: allowNonRestoredState, or a fresh start).
# Knobs: NAMESPACE, RELEASE, CONTEXT (default: the current context), UPGRADE_TIMEOUT (seconds, 900),
# UPGRADE_POLL_SECONDS (5); KUBECTL, HELM, TICKPIPE name the commands.
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$PWD/.deps/tools/bin:$PATH"

chart=${1:?usage: k8s/upgrade.sh CHART [helm upgrade flags...]}
shift
namespace=${NAMESPACE:-tickpipe}
release=${RELEASE:-tickpipe}
timeout=${UPGRADE_TIMEOUT:-900}
poll=${UPGRADE_POLL_SECONDS:-5}
kubectl_cmd=${KUBECTL:-kubectl}
helm_cmd=${HELM:-helm}
tickpipe_cmd=${TICKPIPE:-.venv/bin/tickpipe}
context_flags=()
if [ -n "${CONTEXT:-}" ]; then context_flags=(--context "$CONTEXT"); fi
helm_context=()
if [ -n "${CONTEXT:-}" ]; then helm_context=(--kube-context "$CONTEXT"); fi

step() { printf '\033[1m==> %s\033[0m\n' "$*"; }
fail() { printf 'upgrade: FAILED: %s: %s\n' "$1" "$2" >&2; exit 1; }
k() { "$kubectl_cmd" "${context_flags[@]}" --namespace "$namespace" "$@"; }
flink() { k get "flinkdeployment/$release-ma-job" -o "jsonpath=$1"; }

step "preflight: $release in $namespace"
"$helm_cmd" status "$release" "${helm_context[@]}" --namespace "$namespace" > /dev/null 2>&1 ||
  fail preflight "no release $release in $namespace (a first install is \`helm install\`, not an upgrade)"
state=$(flink '{.status.jobStatus.state}' 2> /dev/null || true)
if [ -n "$state" ] && [ "$state" != RUNNING ]; then
  fail preflight "the MA job is $state, not RUNNING: it cannot take the savepoint the upgrade restores from"
fi
generation=$(flink '{.metadata.generation}' 2> /dev/null || echo 0)

step "helm upgrade $release $chart (migrations first, then the job: savepoint, new image, restore)"
"$helm_cmd" upgrade "$release" "$chart" "${helm_context[@]}" --namespace "$namespace" --wait --timeout 15m "$@" ||
  fail "helm upgrade" "see \`helm history $release -n $namespace\`; \`helm rollback $release\` returns to the last release"

if [ -n "$state" ]; then
  step "the MA job on the new spec"
  deadline=$((SECONDS + timeout))
  while true; do
    now_generation=$(flink '{.metadata.generation}')
    observed=$(flink '{.status.observedGeneration}')
    lifecycle=$(flink '{.status.lifecycleState}')
    state=$(flink '{.status.jobStatus.state}')
    error=$(flink '{.status.error}')
    if [ "$state" = RUNNING ] && [ "$lifecycle" = STABLE ] && [ "${observed:-0}" -ge "$now_generation" ]; then
      echo "  job RUNNING, lifecycle STABLE, generation $generation -> $now_generation"
      break
    fi
    if [ "$state" = FAILED ] || [ "$lifecycle" = FAILED ]; then
      fail ma-job "the job did not come back (${error:-no error recorded}); if it cannot restore the old state: k8s/README.md, Upgrades"
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      fail ma-job "not RUNNING and STABLE within ${timeout}s (state ${state:-?}, lifecycle ${lifecycle:-?}${error:+, $error})"
    fi
    sleep "$poll"
  done
fi

step "tickpipe k8s status"
"$tickpipe_cmd" k8s status --namespace "$namespace" "${context_flags[@]}" ||
  fail status "the release is not healthy after the upgrade (above)"
echo "upgrade: ok: $release in $namespace"
