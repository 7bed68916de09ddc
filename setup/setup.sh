#!/usr/bin/env bash
# `make setup`: everything tickpipe needs on a fresh machine, idempotent; a second run takes seconds.
# `setup.sh --runtime`: all but the validation tools (what running the pipeline and the benchmarks needs).
#   - system packages (apt): PostgreSQL server, JDK 17, Maven, Node.js (only what is missing)
#   - Python virtualenv .venv from uv.lock (uv itself pinned in versions.env)
#   - pinned jars from Maven Central (setup/maven/*/pom.xml) into .deps/jars/<set>
#   - the MA job's Java functions (services/ma-job/udf, Maven) into .deps/jars/ma-job-udf
#   - the TimescaleDB engine (WebAssembly, npm) used to test the TimescaleDB-only SQL
#   - @grafana/schema + TypeScript (npm): the dashboards' schema check
set -euo pipefail
cd "$(dirname "$0")/.."
source versions.env
DEPS=.deps
step() { printf '\033[1m==> %s\033[0m\n' "$*"; }

# -- system packages ----------------------------------------------------------------------------------------------
need=()
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
command -v java >/dev/null || need+=(openjdk-17-jdk-headless)
command -v mvn >/dev/null || need+=(maven)
command -v node >/dev/null || need+=(nodejs npm)
if [ ${#need[@]} -gt 0 ]; then
  step "apt: installing ${need[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

# -- Python -------------------------------------------------------------------------------------------------------
if [ ! -x "$DEPS/uv/bin/uv" ] || [ "$("$DEPS/uv/bin/uv" --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
  step "uv $UV_VERSION"
  python3.11 -m venv "$DEPS/uv"
  "$DEPS/uv/bin/pip" install --quiet --disable-pip-version-check "uv==$UV_VERSION"
fi
step "Python packages from uv.lock (.venv)"
UV_PYTHON_DOWNLOADS=never "$DEPS/uv/bin/uv" sync --frozen --all-extras --python python3.11 --quiet

# -- jars ---------------------------------------------------------------------------------------------------------
for pom in setup/maven/*/pom.xml; do
  set_name=$(basename "$(dirname "$pom")")
  out="$DEPS/jars/$set_name"
  stamp="$out/.pom.sha256"
  sum=$(sha256sum "$pom" | cut -d' ' -f1)
  if [ "$(cat "$stamp" 2>/dev/null)" != "$sum" ]; then
    step "jars: $set_name (Maven Central)"
    rm -rf "$out"
    mvn --batch-mode --quiet --no-transfer-progress -Dstyle.color=never -f "$pom" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$PWD/$out"
    echo "$sum" > "$stamp"
  fi
done

# -- the MA job's Java functions (services/ma-job/udf, Maven) ------------------------------------------------------
udf=services/ma-job/udf
sum=$(find "$udf/pom.xml" "$udf/src" -type f | sort | xargs sha256sum | sha256sum | cut -d' ' -f1)
if [ "$(cat "$DEPS/jars/ma-job-udf/.sources.sha256" 2>/dev/null)" != "$sum" ]; then
  step "MA job functions (services/ma-job/udf, Maven)"
  mvn --batch-mode --quiet --no-transfer-progress -Dstyle.color=never -f "$udf/pom.xml" package
  rm -rf "$DEPS/jars/ma-job-udf" && mkdir -p "$DEPS/jars/ma-job-udf"
  cp "$udf/target/tickpipe-flink-udf.jar" "$DEPS/jars/ma-job-udf/"
  echo "$sum" > "$DEPS/jars/ma-job-udf/.sources.sha256"
fi

# -- TimescaleDB engine (npm) -------------------------------------------------------------------------------------
engine=setup/timescaledb
if [ -f "$engine/package-lock.json" ]; then
  sum=$(sha256sum "$engine/package-lock.json" | cut -d' ' -f1)
  if [ "$(cat "$engine/node_modules/.lock.sha256" 2>/dev/null)" != "$sum" ]; then
    step "TimescaleDB engine (npm)"
    npm ci --prefix "$engine" --legacy-peer-deps --no-audit --no-fund --loglevel=error
    echo "$sum" > "$engine/node_modules/.lock.sha256"
  fi
fi

# -- Grafana dashboard schema check (npm) -------------------------------------------------------------------------
schema=setup/grafana
if [ -f "$schema/package-lock.json" ]; then
  sum=$(sha256sum "$schema/package-lock.json" | cut -d' ' -f1)
  if [ "$(cat "$schema/node_modules/.lock.sha256" 2>/dev/null)" != "$sum" ]; then
    step "Grafana dashboard schema (npm)"
    npm ci --prefix "$schema" --no-audit --no-fund --loglevel=error
    echo "$sum" > "$schema/node_modules/.lock.sha256"
  fi
fi

# -- validation tools (helm, kubeconform, ...) --------------------------------------------------------------------
# Not needed to run the pipeline: `--runtime` (make run, bench, stack-up) skips the few minutes they take to build.
if [ "${1:-}" != "--runtime" ]; then setup/tools.sh; fi

step "setup complete"
