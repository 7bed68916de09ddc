# syntax=docker/dockerfile:1
# The tickpipe images, one target per stage, built from the repository root:
#   docker build --target ingestor -t tickpipe-ingestor .   Binance WebSocket -> Kafka (and `tickpipe sim`)
#   docker build --target migrator -t tickpipe-migrator .   storage/migrations -> TimescaleDB, then exits
#   docker build --target ma-job --platform linux/amd64 -t tickpipe-ma-job .   the PyFlink MA job
# `make images` builds all three for a registry; compose and skaffold select the same targets.
#
# The stages every image shares are written once:
#   uv            uv itself, from its release image
#   lock, project what a venv is built from: the lock first (a layer rebuilt only when uv.lock changes), then the code
#   python        the official Python image (ingestor, migrator); flink-python: Flink plus a uv-managed CPython
#                 (the Flink image's Ubuntu has no Python 3.11)
#   build-*       the base + uv, set to sync /opt/venv from uv.lock
#   venv-<target> /opt/venv with only that target's extras: its dependencies first, then tickpipe itself as a wheel
#   runtime-*     the base + an unprivileged numeric user + PATH/logging; each target adds its venv and command
# Versions: PYTHON_VERSION (3.11; PYTHON_PATCH_VERSION is its patch release), UV_VERSION, FLINK_VERSION and
# MAVEN_VERSION in versions.env (tests/deploy/test_compose.py checks these defaults against it).
#
# ma-job is linux/amd64 only: PyFlink 1.20 publishes no Linux arm64 wheel and the Flink image has no compiler to
# build one, so compose and skaffold build it with `platform: linux/amd64` (emulated on Apple silicon).
ARG PYTHON_PATCH_VERSION=3.11.18
ARG UV_VERSION=0.13.9
ARG FLINK_VERSION=1.20.5
ARG MAVEN_VERSION=3.9.16

# == shared ========================================================================================================
FROM ghcr.io/astral-sh/uv:${UV_VERSION} AS uv

# -- lock, project: the inputs of every venv (the dependency layer is rebuilt only when these change) ---------------
FROM scratch AS lock
COPY pyproject.toml uv.lock README.md /src/

FROM lock AS project
COPY src/ /src/src/
COPY services/ /src/services/

# -- python: the official image, the base of ingestor and migrator --------------------------------------------------
FROM python:${PYTHON_PATCH_VERSION}-slim-bookworm AS python

# -- flink-python: Flink (Scala 2.12, Java 17, the JVM local mode runs Flink 1.20 on) + a checksum-verified CPython --
FROM flink:${FLINK_VERSION}-scala_2.12-java17 AS flink

FROM flink AS cpython
ARG PYTHON_PATCH_VERSION
COPY --from=uv /uv /usr/local/bin/uv
RUN uv python install --no-bin --install-dir /opt/python "${PYTHON_PATCH_VERSION}"

FROM flink AS flink-python
COPY --from=cpython /opt/python /opt/python
# uv finds the interpreter here (the venv stage); PyFlink's Python workers run the venv's interpreter.
ENV UV_PYTHON_INSTALL_DIR=/opt/python

# -- build-*: a base that builds /opt/venv from the lock with uv ---------------------------------------------------
FROM python AS build-python
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /src

FROM flink-python AS build-flink
COPY --from=uv /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /src

# -- runtime-python: ingestor and migrator run as uid/gid 10001 ----------------------------------------------------
FROM python AS runtime-python
RUN groupadd --system --gid 10001 tickpipe \
    && useradd --system --uid 10001 --gid tickpipe --no-create-home --shell /usr/sbin/nologin tickpipe
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 LOG_FORMAT=json

# == per target: the venv with the target's extras ==================================================================
FROM build-python AS venv-ingestor
COPY --from=lock /src/ ./
RUN uv sync --frozen --no-dev --no-install-project --extra ingestor --extra sim
COPY --from=project /src/ ./
RUN uv sync --frozen --no-dev --no-editable --extra ingestor --extra sim

FROM build-python AS venv-migrator
COPY --from=lock /src/ ./
RUN uv sync --frozen --no-dev --no-install-project --extra migrator
COPY --from=project /src/ ./
RUN uv sync --frozen --no-dev --no-editable --extra migrator

FROM build-flink AS venv-ma-job
COPY --from=lock /src/ ./
RUN uv sync --frozen --no-dev --no-install-project --extra ma-job
COPY --from=project /src/ ./
RUN uv sync --frozen --no-dev --no-editable --extra ma-job

# -- ma-job's Java parts: the Kafka and JDBC connectors + PostgreSQL driver (the pom local mode uses), and the job's
# functions (PARSE_TICK, NEWEST_BEFORE), built with the same Maven commands as `make setup` ---------------------------
FROM maven:${MAVEN_VERSION}-eclipse-temurin-17 AS jars
WORKDIR /build
COPY setup/maven/flink-connectors/pom.xml pom.xml
RUN mvn --batch-mode --quiet --no-transfer-progress -Dstyle.color=never dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory=/build/flink-connectors

FROM maven:${MAVEN_VERSION}-eclipse-temurin-17 AS udf
WORKDIR /build
COPY services/ma-job/udf/ ./
RUN mvn --batch-mode --quiet --no-transfer-progress -Dstyle.color=never package

# == targets =======================================================================================================
# -- migrator: applies storage/migrations (a Helm hook Job, a one-shot compose service) ------------------------------
FROM runtime-python AS migrator
LABEL org.opencontainers.image.title="tickpipe-migrator" \
      org.opencontainers.image.description="TimescaleDB schema migrations for tickpipe" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=venv-migrator /opt/venv /opt/venv
COPY storage/migrations/ /app/storage/migrations/
ENV MIGRATIONS_DIR=/app/storage/migrations
USER 10001:10001
# A one-shot job: it is done when it exits 0; there is nothing to probe meanwhile.
HEALTHCHECK NONE
ENTRYPOINT ["tickpipe"]
CMD ["migrate", "--wait", "120"]

# -- ma-job: one image, two ways to run the same job module --------------------------------------------------------
#   Kubernetes  the Flink Kubernetes Operator starts it in application mode with the FlinkDeployment's
#               org.apache.flink.client.python.PythonDriver -pym tickpipe.ma_job.job (the chart's job.* values)
#   compose     `jobmanager` / `taskmanager` (Flink's entrypoint) form a session cluster and
#               `tickpipe ma-job --resume-if-possible` submits the same module to it, as `make run` does
FROM flink-python AS ma-job
LABEL org.opencontainers.image.title="tickpipe-ma-job" \
      org.opencontainers.image.description="PyFlink MA(5)/MA(20) per symbol: Kafka price-ticks to TimescaleDB" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=venv-ma-job /opt/venv /opt/venv
# usrlib/ is the user classpath of an application cluster (Flink scans it recursively); the job also ships the
# jars from JARS_DIR/{flink-connectors,ma-job-udf} as pipeline.jars, which is how a session cluster (compose)
# gets them.
COPY --from=jars /build/flink-connectors/ /opt/flink/usrlib/flink-connectors/
COPY --from=udf /build/target/tickpipe-flink-udf.jar /opt/flink/usrlib/ma-job-udf/
# /flink-data: checkpoints, savepoints, HA metadata and the launcher's resume point (a volume in compose, a PVC
# in Kubernetes), owned by Flink's user so that a fresh volume starts out writable.
RUN mkdir -p /flink-data && chown flink:flink /flink-data
ENV PATH=/opt/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 LOG_FORMAT=json \
    JARS_DIR=/opt/flink/usrlib TICKPIPE_HOME=/flink-data/tickpipe
# The official image's `flink` user (uid/gid 9999), numeric so that runAsNonRoot can verify it.
USER 9999:9999
# JobManager and TaskManagers are probed by the operator (Kubernetes) and by compose's healthchecks.
HEALTHCHECK NONE
# ENTRYPOINT stays Flink's /docker-entrypoint.sh: `jobmanager` / `taskmanager` start Flink (the operator passes
# them), anything else runs as given (compose: `tickpipe ma-job ...`).
CMD ["help"]

# -- ingestor (the default target): Binance WebSocket -> Kafka price-ticks; also the simulated exchange (`tickpipe sim`)
FROM runtime-python AS ingestor
LABEL org.opencontainers.image.title="tickpipe-ingestor" \
      org.opencontainers.image.description="Binance WebSocket to Kafka price-ticks (and the simulated exchange)" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=venv-ingestor /opt/venv /opt/venv
# The disk buffer's folder (INGEST_SPILL_DIR in compose and the chart: a volume there, a PVC in Kubernetes), owned by
# the image's user so that a fresh volume mounted on it starts out writable.
RUN mkdir -p /var/lib/tickpipe/ingest-spill && chown 10001:10001 /var/lib/tickpipe/ingest-spill
ENV METRICS_PORT=9100
USER 10001:10001
EXPOSE 9100
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('METRICS_PORT', '9100') + '/healthz', timeout=2)"]
ENTRYPOINT ["tickpipe"]
CMD ["ingest"]
