#!/usr/bin/env bash
# `make images REGISTRY=ghcr.io/you [TAG=<version>] [PUSH=1]`: a release of tickpipe for any cluster.
#   1. the three stage images from the Dockerfile's targets, as <REGISTRY>/tickpipe-{ingestor,migrator,ma-job}:<TAG>
#      (ma-job always linux/amd64: PyFlink 1.20 has no Linux arm64 wheel); PUSH=1 pushes them (docker buildx --push)
#   2. the umbrella chart packaged with its parts, dist/tickpipe-<chart version>.tgz (helm package)
#   3. dist/images-<TAG>.yaml: the values that point the chart at those images
# Then: helm install tickpipe dist/tickpipe-<version>.tgz -n tickpipe -f dist/images-<TAG>.yaml
# TAG defaults to the charts' appVersion. DRY_RUN=1 prints the docker commands instead of running them (the chart
# is still packaged); DIST=<dir> writes elsewhere than dist/.
set -euo pipefail
cd "$(dirname "$0")/.."
source versions.env
PATH="$PWD/.deps/tools/bin:$PATH"  # helm from `make setup`
STAGES=(ingestor migrator ma-job)

fail() { echo "images: $*" >&2; exit 2; }
registry=${REGISTRY:-}
[ -n "$registry" ] || fail "set REGISTRY, the registry (and path) to tag the images for, e.g. REGISTRY=ghcr.io/you"
[[ "$registry" =~ ^[a-z0-9.-]+(:[0-9]+)?(/[a-z0-9._-]+)*$ ]] || fail "REGISTRY '$registry' is not a registry path (e.g. ghcr.io/you)"
registry=${registry%/}
chart_version=$(sed -n 's/^version: *//p' charts/tickpipe/Chart.yaml)
app_version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' charts/tickpipe/Chart.yaml)
tag=${TAG:-$app_version}
[[ "$tag" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || fail "TAG '$tag' is not an image tag"
dist=${DIST:-dist}
mkdir -p "$dist"

run() {
  if [ -n "${DRY_RUN:-}" ]; then printf '%q ' "$@"; echo; else "$@"; fi
}
if [ -z "${DRY_RUN:-}" ]; then
  command -v docker > /dev/null || fail "docker (with buildx) not found: it builds the images"
fi

for stage in "${STAGES[@]}"; do
  image="$registry/tickpipe-$stage:$tag"
  args=(docker buildx build --file Dockerfile --target "$stage" --tag "$image"
        --build-arg "PYTHON_PATCH_VERSION=$PYTHON_PATCH_VERSION" --build-arg "UV_VERSION=$UV_VERSION")
  if [ "$stage" = ma-job ]; then
    args+=(--platform linux/amd64 --build-arg "FLINK_VERSION=$FLINK_VERSION" --build-arg "MAVEN_VERSION=$MAVEN_VERSION")
  fi
  if [ -n "${PUSH:-}" ]; then args+=(--push); else args+=(--load); fi
  echo "images: $image"
  run "${args[@]}" .
done

# The chart as a release is: its parts packaged inside it, from a copy with the symbolic links resolved (the
# grafana chart reads the repository's grafana/ folder through one).
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -rL charts "$work/charts"
helm dependency build --skip-refresh "$work/charts/tickpipe" > /dev/null
helm package "$work/charts/tickpipe" --destination "$dist" > /dev/null
echo "images: chart $dist/tickpipe-$chart_version.tgz"

values="$dist/images-$tag.yaml"
{
  echo "# The images \`make images REGISTRY=$registry TAG=$tag\` built: helm install ... -f $values"
  for stage in "${STAGES[@]}"; do
    printf '%s:\n  image:\n    registry: %s\n    repository: tickpipe-%s\n    tag: "%s"\n' "$stage" "$registry" "$stage" "$tag"
  done
} > "$values"
echo "images: values $values"
echo "images: next: helm upgrade --install tickpipe $dist/tickpipe-$chart_version.tgz -n tickpipe --create-namespace -f $values"
