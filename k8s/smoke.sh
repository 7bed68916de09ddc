#!/usr/bin/env bash
# `make k8s-smoke [K8S=kind|minikube]`: the check to run on a real cluster. On a cluster made by `make k8s-up`, it
# deploys the umbrella chart with the simulated exchange, waits for every part, and proves that data flows end to
# end: rows with MA(5) and MA(20) in TimescaleDB, `tickpipe k8s status` healthy, and Grafana's health endpoint and
# a dashboard query answered through the Ingress. Exits 0 when all of that holds; otherwise 1, naming the part that
# failed ("k8s-smoke: FAILED: <part>: <why>").
#
# Deploy: `skaffold run` with the profile of K8S (builds the images and loads them into the cluster, then the
# profile's values: the simulator, no registry), or, with REGISTRY (and TAG) set, `helm upgrade --install` of the
# chart with the images `make images REGISTRY=... PUSH=1` pushed (any cluster). SMOKE_DEPLOY=0 checks a release that
# is already deployed.
# Knobs: NAMESPACE (tickpipe), RELEASE (tickpipe), CONTEXT (kind-tickpipe / minikube), GRAFANA_URL
# (http://grafana.localtest.me; minikube needs `minikube tunnel`), SMOKE_TIMEOUT (seconds per part, 600),
# SMOKE_POLL_SECONDS (5), SMOKE_MIN_ROWS (20). KUBECTL, HELM, SKAFFOLD, CURL, TICKPIPE name the commands.
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$PWD/.deps/tools/bin:$PATH"  # helm from `make setup`

target=${K8S:-kind}
namespace=${NAMESPACE:-tickpipe}
release=${RELEASE:-tickpipe}
timeout=${SMOKE_TIMEOUT:-600}
poll=${SMOKE_POLL_SECONDS:-5}
min_rows=${SMOKE_MIN_ROWS:-20}
grafana_url=${GRAFANA_URL:-http://grafana.localtest.me}
kubectl_cmd=${KUBECTL:-kubectl}
helm_cmd=${HELM:-helm}
skaffold_cmd=${SKAFFOLD:-skaffold}
curl_cmd=${CURL:-curl}
tickpipe_cmd=${TICKPIPE:-.venv/bin/tickpipe}
case "$target" in
  kind) context=${CONTEXT:-kind-tickpipe} ;;
  minikube) context=${CONTEXT:-minikube} ;;
  *) echo "k8s-smoke: K8S must be kind or minikube, not '$target'" >&2; exit 2 ;;
esac

step() { printf '\033[1m==> %s\033[0m\n' "$*"; }
pass() { printf '  ok  %s\n' "$*"; }
fail() {  # PART WHY
  printf 'k8s-smoke: FAILED: %s: %s\n' "$1" "$2" >&2
  exit 1
}
need() { command -v "$1" > /dev/null || fail "$2" "'$1' not found"; }
k() { "$kubectl_cmd" --context "$context" --namespace "$namespace" "$@"; }

# wait_for PART WHAT COMMAND...: run COMMAND until it succeeds, at most SMOKE_TIMEOUT seconds; its last output is
# the reason when it never does.
last_output=""
wait_for() {
  local part=$1 what=$2 deadline=$((SECONDS + timeout))
  shift 2
  while true; do
    if last_output=$("$@" 2>&1); then
      pass "$part: $what"
      return 0
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      fail "$part" "$what: not within ${timeout}s (${last_output:-no output})"
    fi
    sleep "$poll"
  done
}

# -- checks (each succeeds or fails once; wait_for repeats them) -----------------------------------------------------
ready_condition() {  # RESOURCE: its Ready condition is True
  [ "$(k get "$1" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')" = True ]
}
all_topics_ready() {
  local statuses
  statuses=$(k get kafkatopics -l "strimzi.io/cluster=$release" \
    -o 'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}')
  [ -n "$statuses" ] && ! grep -qv '^True$' <<< "$statuses"
}
rolled_out() {  # KIND/NAME
  k rollout status "$1" --timeout=10s
}
job_running() {
  local state
  state=$(k get "flinkdeployment/$release-ma-job" -o 'jsonpath={.status.jobStatus.state}')
  echo "job state: ${state:-none yet}"
  [ "$state" = RUNNING ]
}
rows_with_mas() {  # at least SMOKE_MIN_ROWS fresh rows with both moving averages
  local rows
  rows=$(k exec "statefulset/$release-timescaledb" -c timescaledb -- psql --username tickpipe --dbname tickpipe \
    --no-psqlrc --tuples-only --no-align --command \
    "SELECT count(*) FROM price_ticks WHERE ma_short IS NOT NULL AND ma_long IS NOT NULL
       AND time > now() - interval '10 minutes'")
  echo "$rows rows with MA(5) and MA(20) in the last 10 minutes"
  [ "${rows:-0}" -ge "$min_rows" ] 2> /dev/null
}
grafana_healthy() {
  local body
  body=$("$curl_cmd" --silent --show-error --fail --max-time 10 "$grafana_url/api/health")
  echo "$body"
  grep -q '"database": *"ok"' <<< "$body"
}
grafana_query() {  # a dashboard's kind of query, through the Ingress, as the admin
  local user password body
  user=$(k get secret "$release-grafana-admin" -o 'jsonpath={.data.GF_SECURITY_ADMIN_USER}' | base64 --decode)
  password=$(k get secret "$release-grafana-admin" -o 'jsonpath={.data.GF_SECURITY_ADMIN_PASSWORD}' | base64 --decode)
  body=$("$curl_cmd" --silent --show-error --fail --max-time 20 --user "$user:$password" \
    --header 'Content-Type: application/json' --data @- "$grafana_url/api/ds/query" <<'JSON'
{"from": "now-15m", "to": "now", "queries": [{"refId": "A", "datasource": {"uid": "tickpipe-db"}, "format": "table",
 "rawSql": "SELECT symbol, count(*) AS n FROM price_ticks WHERE ma_long IS NOT NULL AND $__timeFilter(time) GROUP BY symbol"}]}
JSON
  )
  echo "$body" | head -c 300
  # One frame with one row per symbol: a "values" array that is not empty.
  grep -q '"values":\[\[\"' <<< "$body"
}

# -- deploy -----------------------------------------------------------------------------------------------------------
need "$kubectl_cmd" "setup"
need "$curl_cmd" "setup"
"$kubectl_cmd" --context "$context" get namespace "$namespace" > /dev/null 2>&1 ||
  "$kubectl_cmd" --context "$context" create namespace "$namespace" > /dev/null 2>&1 ||
  fail "cluster" "no cluster at kube context $context (run \`make k8s-up K8S=$target\` first)"
if [ "${SMOKE_DEPLOY:-1}" = 0 ]; then
  step "release $release in $namespace (already deployed: SMOKE_DEPLOY=0)"
elif [ -n "${REGISTRY:-}" ]; then
  need "$helm_cmd" "deploy"
  step "helm upgrade --install $release with the images of ${REGISTRY}, and the simulated exchange"
  "$helm_cmd" dependency build charts/tickpipe > /dev/null || fail "deploy" "helm dependency build charts/tickpipe"
  tag=${TAG:-$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/tickpipe/Chart.yaml)}
  images=()
  for stage in ingestor migrator ma-job; do
    images+=(--set "$stage.image.registry=$REGISTRY" --set-string "$stage.image.tag=$tag")
  done
  "$helm_cmd" upgrade --install "$release" charts/tickpipe --kube-context "$context" --namespace "$namespace" \
    --wait --timeout 15m "${images[@]}" --set ingestor.sim.enabled=true \
    --set-string 'ingestor.env.BINANCE_WS_URL=ws://{{ include "ingestor.fullname" . }}-sim:9443' \
    --set-string 'ingestor.env.BINANCE_REST_URL=http://{{ include "ingestor.fullname" . }}-sim:9443' ||
    fail "deploy" "helm upgrade --install $release failed (kubectl -n $namespace get pods,events)"
else
  need "$skaffold_cmd" "deploy"
  step "skaffold run --profile $target (builds the images, deploys $release with the simulated exchange)"
  "$skaffold_cmd" run --profile "$target" --kube-context "$context" ||
    fail "deploy" "skaffold run --profile $target failed"
fi

# -- every part -------------------------------------------------------------------------------------------------------
step "parts"
wait_for kafka "Kafka $release Ready" ready_condition "kafka/$release"
wait_for topics "every KafkaTopic Ready" all_topics_ready
wait_for timescaledb "StatefulSet rolled out" rolled_out "statefulset/$release-timescaledb"
wait_for sim "simulated exchange rolled out" rolled_out "deployment/$release-ingestor-sim"
wait_for ingestor "StatefulSet rolled out (ready to produce)" rolled_out "statefulset/$release-ingestor"
wait_for ma-job "FlinkDeployment job RUNNING" job_running
wait_for grafana "Deployment rolled out" rolled_out "deployment/$release-grafana"

# -- data flows -------------------------------------------------------------------------------------------------------
step "data"
wait_for timescaledb-rows "at least $min_rows fresh rows with MA(5) and MA(20)" rows_with_mas
rows=$last_output
wait_for "tickpipe k8s status" "healthy" "$tickpipe_cmd" k8s status --namespace "$namespace" --context "$context"
wait_for grafana-ingress "health at $grafana_url/api/health" grafana_healthy
wait_for grafana-query "a dashboard query through the Ingress answered with rows" grafana_query

echo "k8s-smoke: ok: $release in $namespace on $context ($rows)"
