#!/usr/bin/env bash
# `make k8s-up [K8S=kind|minikube]`: a local cluster with what tickpipe's charts need, at the versions pinned in
# k8s/versions.env: cert-manager (the Flink operator's webhook certificate), the Strimzi cluster operator (Kafka),
# the Flink Kubernetes Operator (the MA job's FlinkDeployment) and Traefik (the Grafana Ingress). Safe to re-run:
# an existing cluster is reused and every install is a `helm upgrade --install`. Then `make dev`.
set -euo pipefail
cd "$(dirname "$0")/.."
source versions.env
source k8s/versions.env
target=${K8S:-kind}
node_version=${KIND_NODE_IMAGE#*:}  # v1.34.11@sha256:... -> v1.34.11
node_version=${node_version%%@*}
PATH="$PWD/.deps/tools/bin:$PATH"  # helm from `make setup`

need() { command -v "$1" > /dev/null || { echo "k8s-up: '$1' not found; $2" >&2; exit 1; }; }
step() { printf '\033[1m==> %s\033[0m\n' "$*"; }
need kubectl "install kubectl $KUBERNETES_VERSION (https://kubernetes.io/docs/tasks/tools/)"
need helm "run 'make setup' (it installs helm into .deps/tools/bin)"

case "$target" in
  kind)
    need kind "install kind $KIND_VERSION (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)"
    # The node image is pinned by the digest kind's release notes list for this kind version: another kind
    # version may not run it.
    installed=$(kind version 2> /dev/null | awk '{print $2}')
    if [ "$installed" != "$KIND_VERSION" ]; then
      echo "k8s-up: warning: kind $installed is installed; $KIND_NODE_IMAGE belongs to kind $KIND_VERSION" >&2
    fi
    if ! kind get clusters 2> /dev/null | grep -qx tickpipe; then
      step "kind cluster 'tickpipe' ($KIND_NODE_IMAGE)"
      kind create cluster --config k8s/kind-config.yaml --image "$KIND_NODE_IMAGE" --wait 120s
    fi
    context=kind-tickpipe
    traefik=(--values k8s/traefik/kind.yaml --wait)
    ;;
  minikube)
    need minikube "install minikube (https://minikube.sigs.k8s.io/docs/start/)"
    if ! minikube status > /dev/null 2>&1; then
      step "minikube (Kubernetes $node_version, the kind node image's release)"
      minikube start --kubernetes-version "$node_version" --cpus 4 --memory 8g
    fi
    context=minikube
    # No --wait: helm would wait for the LoadBalancer's address, which only `minikube tunnel` gives; the rollout
    # is waited for below instead.
    traefik=(--values k8s/traefik/minikube.yaml)
    ;;
  *)
    echo "k8s-up: K8S must be kind or minikube, not '$target'" >&2
    exit 2
    ;;
esac
kubectl config use-context "$context" > /dev/null
helm_install() {  # release chart namespace version [helm flags...]
  local release=$1 chart=$2 namespace=$3 version=$4
  shift 4
  step "$release $version ($namespace)"
  helm upgrade --install "$release" "$chart" --kube-context "$context" --namespace "$namespace" \
    --version "$version" --timeout 10m "$@"
}

step "namespaces"
kubectl --context "$context" apply -f k8s/namespaces.yaml
helm_install cert-manager cert-manager cert-manager "$CERT_MANAGER_VERSION" \
  --repo https://charts.jetstack.io --set crds.enabled=true --wait
helm_install strimzi oci://quay.io/strimzi-helm/strimzi-kafka-operator strimzi "$STRIMZI_VERSION" \
  --set "watchNamespaces={tickpipe}" --wait
helm_install flink-kubernetes-operator flink-kubernetes-operator flink-operator "$FLINK_OPERATOR_VERSION" \
  --repo "https://archive.apache.org/dist/flink/flink-kubernetes-operator-$FLINK_OPERATOR_VERSION/" \
  --set "watchNamespaces={tickpipe}" --wait
# The flags are in k8s/traefik/<target>.yaml, where tests/deploy check them (string label values, the Service type
# where chart >= 40 reads it, a rolling update that frees the host ports first).
helm_install traefik traefik traefik "$TRAEFIK_CHART_VERSION" --repo https://traefik.github.io/charts \
  --create-namespace "${traefik[@]}"
kubectl --context "$context" --namespace traefik rollout status deployment/traefik --timeout 5m

echo "k8s-up: $context is ready. Next: make dev K8S=$target   (then: tickpipe k8s status --namespace tickpipe)"
