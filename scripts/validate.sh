#!/usr/bin/env bash
# `make validate`: everything about deployment that can be checked without a cluster or a Docker engine, offline,
# with the tools and schemas `make setup` pinned into .deps/tools (setup/tools.sh):
#   1. every chart (charts/*), with each of its ci/*-values.yaml: helm lint --strict, helm template, and kubeconform
#      -strict of the output against the Kubernetes $KUBERNETES_VERSION schemas and the CRD schemas of the pinned
#      Strimzi and Flink Kubernetes Operator releases (and prometheus-operator's ServiceMonitor/PodMonitor)
#      and the umbrella chart packaged (`helm package`, as a release is), with its parts inside
#   2. checkov on all rendered manifests and on the Dockerfile, hadolint on the Dockerfile: any finding not skipped
#      with a written reason (setup/tools/checkov.yaml, setup/tools/hadolint.yaml) fails; shellcheck on every shell
#      script (k8s/, scripts/, setup/, the charts' files/)
#   3. docker-compose.yml against the Compose specification schema, skaffold.yaml against the skaffold schema of
#      its apiVersion (each skipped with a message when the file does not exist yet)
# Prints one line per check and a summary; exits non-zero when any check fails. VERBOSE=1 shows tool output of
# passing checks too.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
source versions.env
source k8s/versions.env
source setup/tools/versions.env
TOOLS=$PWD/.deps/tools
SCHEMAS=$TOOLS/schemas
for tool in helm kubeconform checkov hadolint shellcheck; do
  if [ ! -x "$TOOLS/bin/$tool" ]; then
    echo "validate: $TOOLS/bin/$tool is missing: run \`make setup\` (setup/tools.sh installs the pinned tools)" >&2
    exit 2
  fi
done
export PATH="$TOOLS/bin:$PATH" HELM_CACHE_HOME="$TOOLS/helm/cache" HELM_CONFIG_HOME="$TOOLS/helm/config" \
  HELM_DATA_HOME="$TOOLS/helm/data"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/rendered" "$work/logs"
passed=0 failed=0 skipped=0
failures=()
green() { printf '\033[32m%s\033[0m' "$*"; }
red() { printf '\033[31m%s\033[0m' "$*"; }

# check NAME COMMAND...: run, record, print one line (and the output when it fails).
check() {
  local name=$1 log
  shift
  log="$work/logs/$passed-$failed-$RANDOM.log"
  if "$@" >"$log" 2>&1; then
    passed=$((passed + 1))
    printf '  %s %s\n' "$(green ok)" "$name"
    if [ -n "${VERBOSE:-}" ]; then sed 's/^/      /' "$log"; fi
  else
    failed=$((failed + 1))
    failures+=("$name")
    printf '  %s %s\n' "$(red FAIL)" "$name"
    sed 's/^/      /' "$log"
  fi
}
skip() { skipped=$((skipped + 1)); printf '  \033[33mskip\033[0m %s\n' "$*"; }

# Helm reads the grafana chart's provisioning through a symbolic link (charts/grafana/files/grafana -> grafana/) and
# says so on every run; that line is expected, anything else on stderr is shown.
helm_quiet() { helm "$@" 2> >(grep -v 'found symbolic link in path' >&2); }

kubeconform_strict() {
  kubeconform -strict -summary -kubernetes-version "$KUBERNETES_VERSION" \
    -schema-location "$SCHEMAS/kubernetes/{{.NormalizedKubernetesVersion}}-standalone{{.StrictSuffix}}/{{.ResourceKind}}{{.KindSuffix}}.json" \
    -schema-location "$SCHEMAS/crds/{{.Group}}/{{.ResourceKind}}_{{.ResourceAPIVersion}}.json" \
    "$1"
}

# -- 1. charts -----------------------------------------------------------------------------------------------------
echo "charts (Kubernetes $KUBERNETES_VERSION, Strimzi $STRIMZI_VERSION, Flink operator $FLINK_OPERATOR_VERSION):"
# A copy with the symbolic links resolved, where the umbrella chart's file:// dependencies are packaged into
# charts/tickpipe/charts without touching the work tree (its Chart.lock is committed; `dependency build` keeps it).
cp -rL charts "$work/charts"
for chart_yaml in "$work"/charts/*/Chart.yaml; do
  chart_dir=$(dirname "$chart_yaml")
  if grep -q '^dependencies:' "$chart_yaml"; then
    check "$(basename "$chart_dir"): helm dependency build" helm_quiet dependency build --skip-refresh "$chart_dir"
  fi
done
for chart_dir in "$work"/charts/*/; do
  chart=$(basename "$chart_dir")
  values_files=("$chart_dir"ci/*-values.yaml)
  # The umbrella chart also with the example overrides in k8s/ (the values skaffold's kind/minikube profiles use).
  if [ "$chart" = tickpipe ]; then
    for extra in k8s/values-*.yaml; do [ -e "$extra" ] && values_files+=("$PWD/$extra"); done
  fi
  if [ ! -e "${values_files[0]}" ]; then
    failed=$((failed + 1)); failures+=("$chart: no ci/*-values.yaml")
    printf '  %s %s\n' "$(red FAIL)" "$chart: no ci/*-values.yaml (every chart is exercised with at least one)"
    continue
  fi
  for values in "${values_files[@]}"; do
    case "$values" in
      "$PWD"/k8s/*) case_name="$chart k8s/$(basename "$values")" ;;
      *) case_name="$chart ci/$(basename "$values")" ;;
    esac
    out="$work/rendered/$chart--$(basename "$values" .yaml).yaml"
    check "$case_name: helm lint --strict" \
      helm_quiet lint --strict --kube-version "$KUBERNETES_VERSION" --namespace tickpipe -f "$values" "$chart_dir"
    if helm_quiet template "$chart" "$chart_dir" --namespace tickpipe --kube-version "$KUBERNETES_VERSION" \
      -f "$values" >"$out" 2>"$work/logs/template.err"; then
      passed=$((passed + 1))
      printf '  %s %s\n' "$(green ok)" "$case_name: helm template ($(grep -c '^kind:' "$out") objects)"
      check "$case_name: kubeconform -strict" kubeconform_strict "$out"
    else
      failed=$((failed + 1)); failures+=("$case_name: helm template")
      printf '  %s %s\n' "$(red FAIL)" "$case_name: helm template"
      sed 's/^/      /' "$work/logs/template.err"
      rm -f "$out"
    fi
  done
done

pod_templates() {
  .venv/bin/python setup/tools/check_config.py pod-templates "$work"/rendered/*.yaml --out "$work/pod-templates.yaml" &&
    kubeconform_strict "$work/pod-templates.yaml"
}
check "FlinkDeployment pod templates: kubeconform -strict as Pods" pod_templates

# A released chart: the umbrella packaged with its parts (what `make images` publishes next to the images).
package_umbrella() {
  local listing
  helm_quiet package "$work/charts/tickpipe" --destination "$work/package" &&
    listing=$(tar -tzf "$work/package/tickpipe-$(sed -n 's/^version: *//p' charts/tickpipe/Chart.yaml).tgz") &&
    grep -q '^tickpipe/charts/ma-job/Chart.yaml$' <<< "$listing"
}
check "tickpipe: helm package (a versioned chart with its parts)" package_umbrella

# -- 2. security scans ---------------------------------------------------------------------------------------------
echo "security scans (skips with reasons: setup/tools/checkov.yaml, setup/tools/hadolint.yaml):"
dockerfiles=(Dockerfile)
checkov_scan() {
  # checkov names a Kubernetes object by kind.namespace.name: one folder per rendering keeps the ci cases apart.
  local dir=$work/checkov
  mkdir -p "$dir/manifests"
  for file in "$work"/rendered/*.yaml; do
    mkdir -p "$dir/manifests/$(basename "$file" .yaml)" && cp "$file" "$dir/manifests/$(basename "$file" .yaml)/"
  done
  local args=(--config-file setup/tools/checkov.yaml --directory "$dir/manifests")
  if [ -e "${dockerfiles[0]}" ]; then
    for dockerfile in "${dockerfiles[@]}"; do args+=(--file "$dockerfile"); done
  fi
  checkov "${args[@]}"
}
renderings=("$work"/rendered/*.yaml)
check "checkov: rendered manifests (${#renderings[@]} renderings) and ${#dockerfiles[@]} Dockerfile(s)" checkov_scan
if [ -e "${dockerfiles[0]}" ]; then
  for dockerfile in "${dockerfiles[@]}"; do
    check "hadolint: $dockerfile" hadolint --config setup/tools/hadolint.yaml "$dockerfile"
  done
else
  skip "hadolint: no Dockerfile yet"
fi
# -x: follow the files the scripts `source` (versions.env ...), from the repository root as the scripts run.
scripts=(k8s/*.sh scripts/*.sh setup/*.sh charts/*/files/*.sh)
check "shellcheck: ${#scripts[@]} shell scripts" shellcheck -x "${scripts[@]}"

# -- 3. compose and skaffold ---------------------------------------------------------------------------------------
echo "compose and skaffold:"
if [ -f docker-compose.yml ]; then
  check "docker-compose.yml: Compose specification ($COMPOSE_GO_VERSION)" \
    .venv/bin/python setup/tools/check_config.py compose docker-compose.yml --schema "$SCHEMAS/compose-spec.json" \
      --env-file .env
else
  skip "docker-compose.yml does not exist yet"
fi
if [ -f skaffold.yaml ]; then
  check "skaffold.yaml: skaffold $SKAFFOLD_SCHEMA schema (skaffold $SKAFFOLD_VERSION)" \
    .venv/bin/python setup/tools/check_config.py skaffold skaffold.yaml \
      --schema "$SCHEMAS/skaffold-$SKAFFOLD_SCHEMA.json" --api-version "skaffold/$SKAFFOLD_SCHEMA"
else
  skip "skaffold.yaml does not exist yet"
fi

echo
if [ "$failed" -gt 0 ]; then
  echo "validate: $(red "$failed failed"), $passed passed, $skipped skipped"
  printf '  - %s\n' "${failures[@]}"
  exit 1
fi
echo "validate: $(green "$passed passed"), 0 failed, $skipped skipped"
