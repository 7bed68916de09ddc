"""The deployment files agree with each other and with the code: stage names, versions, environment variable
names, healthchecks, non-root images, no secrets. Static checks (no Docker engine here); the command lines the
images run are executed by test_images.py."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO
from tests.deploy.files import (
    IMAGE_PREFIX,
    STAGES,
    base_images,
    compose,
    env_file,
    global_args,
    skaffold,
    stages,
    target,
    versions,
)
from tickpipe.config import Settings

pytestmark = pytest.mark.unit
SETTINGS_VARIABLES = {name.upper() for name in Settings.model_fields}
# Variables the tickpipe images may set besides Settings' fields, each read by something named here.
OTHER_VARIABLES = {
    "TICKPIPE_HOME": "tickpipe.config.state_dir (README: Configuration)",
    "FLINK_PROPERTIES": "the Flink image's entrypoint: configuration of jobmanager/taskmanager",
    "JOB_MANAGER_RPC_ADDRESS": "the Flink image's entrypoint: where TaskManagers find the JobManager",
    "FLINK_LOG_DIR": "Flink's client scripts (where `flink run` logs)",
    "PATH": "the interpreter and the `tickpipe` command of /opt/venv",
    "PYTHONDONTWRITEBYTECODE": "Python",
    "PYTHONUNBUFFERED": "Python",
    "UV_PYTHON_INSTALL_DIR": "uv, in the ma-job image's build",
}
ONE_SHOT = "service_completed_successfully"


def services() -> dict[str, dict[str, Any]]:
    return dict(compose()["services"])


def tickpipe_services() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services().items() if s.get("image", "").startswith(IMAGE_PREFIX)}


def dotenv() -> dict[str, str]:
    return env_file(REPO / ".env")


def interpolate(text: str) -> str:
    """${VAR} from .env, as docker compose does (defaults `:-` honoured)."""

    def value(match: re.Match[str]) -> str:
        name, _, default = match.group(1).partition(":-")
        return dotenv().get(name, default)

    return re.sub(r"\$\{([^}:?]+(?::-[^}]*)?)\}", value, text)


# -- one set of stage names ---------------------------------------------------------------------------------------
def test_every_stage_has_a_dockerfile_target_a_chart_a_compose_service_and_a_skaffold_artifact() -> None:
    assert set(STAGES) <= set(stages()), f"stages without a Dockerfile target: {set(STAGES) - set(stages())}"
    assert not list((REPO / "services").glob("*/Dockerfile")), "one Dockerfile at the root, a target per stage"
    charts = {path.parent.name for path in (REPO / "charts").glob("*/Chart.yaml")}
    assert set(STAGES) <= charts, f"stages without a chart: {set(STAGES) - charts}"
    assert set(STAGES) <= set(services()), f"stages without a compose service: {set(STAGES) - set(services())}"
    artifacts = {
        a["image"]: (a["docker"]["dockerfile"], a["docker"]["target"]) for a in skaffold()["build"]["artifacts"]
    }
    assert artifacts == {f"{IMAGE_PREFIX}{stage}": ("Dockerfile", stage) for stage in STAGES}


def test_compose_builds_each_stage_image_from_its_dockerfile_target() -> None:
    for name, service in tickpipe_services().items():
        stage = service["image"].removeprefix(IMAGE_PREFIX).split(":")[0]
        assert stage in STAGES, f"{name} runs an image of no stage: {service['image']}"
        assert (service["build"]["dockerfile"], service["build"]["target"]) == ("Dockerfile", stage), name
        assert service["build"]["context"] == "."


def test_the_ma_job_image_is_built_and_run_as_linux_amd64() -> None:
    """PyFlink 1.20 has no Linux arm64 wheel: Apple-silicon machines must build (and run) the amd64 image."""
    for name, service in tickpipe_services().items():
        amd64 = service["image"].startswith(f"{IMAGE_PREFIX}ma-job:")
        assert (service.get("platform") == "linux/amd64") == amd64, name
        assert (service["build"].get("platforms") == ["linux/amd64"]) == amd64, name
    platforms = {a["image"]: a.get("platforms") for a in skaffold()["build"]["artifacts"]}
    assert platforms == {"tickpipe-ingestor": None, "tickpipe-migrator": None, "tickpipe-ma-job": ["linux/amd64"]}


def test_skaffold_sets_each_stage_subchart_image_repository_and_tag() -> None:
    templates = skaffold()["deploy"]["helm"]["releases"][0]["setValueTemplates"]
    for stage in STAGES:
        name = f"{IMAGE_PREFIX}{stage}".replace("-", "_")
        assert templates[f"{stage}.image.repository"] == f"{{{{.IMAGE_REPO_{name}}}}}"
        assert templates[f"{stage}.image.tag"] == f"{{{{.IMAGE_TAG_{name}}}}}"
        values = yaml.safe_load((REPO / "charts" / stage / "values.yaml").read_text())
        assert {"repository", "tag"} <= set(values["image"]), f"charts/{stage} has no image.repository/tag"
    assert skaffold()["deploy"]["helm"]["releases"][0]["chartPath"] == "charts/tickpipe"
    assert {profile["name"] for profile in skaffold()["profiles"]} == {"kind", "minikube"}


def test_skaffold_profiles_use_values_files_that_exist() -> None:
    for profile in skaffold()["profiles"]:
        for patch in profile["patches"]:
            for values_file in patch["value"]:
                assert (REPO / values_file).is_file(), f"profile {profile['name']}: {values_file} is missing"


# -- health and order ---------------------------------------------------------------------------------------------
def one_shots() -> set[str]:
    return {
        dependency
        for service in services().values()
        for dependency, spec in (service.get("depends_on") or {}).items()
        if spec["condition"] == ONE_SHOT
    }


def test_every_service_has_a_healthcheck_or_is_a_one_shot_that_others_wait_for() -> None:
    for name, service in services().items():
        check = service.get("healthcheck") or {}
        if name in one_shots():
            assert check.get("disable") is True and service.get("restart") == "no", name
        else:
            assert check.get("test"), f"{name} has no healthcheck"
            assert {"interval", "timeout", "retries", "start_period"} <= set(check), name


def test_dependencies_wait_for_health_or_successful_completion() -> None:
    for name, service in services().items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            assert dependency in services(), f"{name} depends on unknown {dependency}"
            assert spec["condition"] in {"service_healthy", ONE_SHOT}, f"{name} -> {dependency}"
    assert services()["ma-job"]["depends_on"]["migrator"]["condition"] == ONE_SHOT
    assert services()["ingestor"]["depends_on"]["sim"]["condition"] == "service_healthy"


def test_infra_profile_is_kafka_its_topics_timescaledb_prometheus_and_grafana() -> None:
    infra = {name for name, service in services().items() if "infra" in service.get("profiles", [])}
    assert infra == {"kafka", "topics", "timescaledb", "prometheus", "grafana"}
    # Every service runs with `docker compose up`, but for the other sources' (their own profiles, opted into).
    sources = {"coingecko", "yahoo"}
    for name, service in services().items():
        profiles = set(service.get("profiles", []))
        assert "pipeline" in profiles or (len(profiles) == 1 and profiles <= sources), name
    assert dotenv()["COMPOSE_PROFILES"] == "pipeline"  # `docker compose up` starts everything


def test_kafka_runs_kraft_with_a_host_and_an_internal_listener() -> None:
    kafka = services()["kafka"]
    environment = kafka["environment"]
    assert environment["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert "ZOOKEEPER" not in str(kafka).upper()
    assert environment["KAFKA_ADVERTISED_LISTENERS"] == "INTERNAL://kafka:29092,HOST://localhost:9092"
    assert kafka["ports"] == ["127.0.0.1:9092:9092"]
    internal = {s["environment"].get("KAFKA_BOOTSTRAP_SERVERS") for s in tickpipe_services().values()} - {None}
    assert internal == {"kafka:29092"}


def test_published_ports_are_kafka_timescaledb_prometheus_grafana_and_flink_on_loopback() -> None:
    published = {name: service["ports"] for name, service in services().items() if service.get("ports")}
    assert published == {
        "kafka": ["127.0.0.1:9092:9092"],
        "timescaledb": ["127.0.0.1:5432:5432"],
        "prometheus": ["127.0.0.1:9090:9090"],
        "grafana": ["127.0.0.1:3000:3000"],
        "flink-jobmanager": ["127.0.0.1:8081:8081"],
    }


def test_grafana_mounts_the_provisioning_and_dashboards_and_gets_every_variable_they_use() -> None:
    grafana = services()["grafana"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    assert "./grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana["volumes"]
    used = {
        variable
        for path in (REPO / "grafana" / "provisioning").rglob("*.y*ml")
        for variable in re.findall(r"\$\{(\w+)\}", path.read_text())
    }
    assert used <= set(grafana["environment"]), f"not set for Grafana: {used - set(grafana['environment'])}"


# -- metrics --------------------------------------------------------------------------------------------------------
PROMETHEUS_CONFIG = "compose/prometheus.yml"
FLINK_REPORTER = "org.apache.flink.metrics.prometheus.PrometheusReporterFactory"


def flink_properties(service: dict[str, Any]) -> dict[str, str]:
    """FLINK_PROPERTIES (`key: value` lines) of a compose service, as the Flink image's entrypoint reads them."""
    text = (service.get("environment") or {}).get("FLINK_PROPERTIES", "")
    pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def metrics_port(service: dict[str, Any]) -> int | None:
    """The port a compose service serves Prometheus metrics on: METRICS_PORT of a tickpipe stage, the Prometheus
    reporter's port of a Flink process; None when it serves none."""
    if "METRICS_PORT" in (service.get("environment") or {}):
        return int(service["environment"]["METRICS_PORT"])
    properties = flink_properties(service)
    if properties.get("metrics.reporter.prom.factory.class") == FLINK_REPORTER:
        return int(properties["metrics.reporter.prom.port"])  # one port per container, not a range
    return None


def scrape_targets() -> dict[str, list[str]]:
    """host:port targets of compose/prometheus.yml by job name."""
    config = yaml.safe_load((REPO / PROMETHEUS_CONFIG).read_text())
    return {
        job["job_name"]: [target for static in job["static_configs"] for target in static["targets"]]
        for job in config["scrape_configs"]
    }


def test_flink_processes_enable_the_prometheus_reporter_on_one_fixed_port() -> None:
    for name in ("flink-jobmanager", "flink-taskmanager"):
        properties = flink_properties(services()[name])
        assert properties.get("metrics.reporter.prom.factory.class") == FLINK_REPORTER, name
        assert re.fullmatch(r"\d+", properties.get("metrics.reporter.prom.port", "")), name


def test_prometheus_scrapes_each_service_on_the_port_it_serves_metrics_on() -> None:
    scraped: set[str] = set()
    for job, targets in scrape_targets().items():
        for address in targets:
            host, _, port = address.rpartition(":")
            assert host in services(), f"{PROMETHEUS_CONFIG} job {job}: {host} is not a compose service"
            assert int(port) == metrics_port(services()[host]), f"{job}: {address} is not where {host} serves metrics"
            scraped.add(host)
    exporting = {name for name, service in services().items() if metrics_port(service) is not None}
    assert (
        scraped
        == exporting
        == {
            "ingestor",
            "ingestor-coingecko",
            "ingestor-yahoo",
            "flink-jobmanager",
            "flink-taskmanager",
        }
    )


def test_prometheus_image_is_pinned_to_a_v3_release_in_dotenv() -> None:
    assert services()["prometheus"]["image"] == "prom/prometheus:${PROMETHEUS_VERSION}"
    assert re.fullmatch(r"v3\.\d+\.\d+", dotenv()["PROMETHEUS_VERSION"]), dotenv()["PROMETHEUS_VERSION"]


def test_prometheus_reads_its_config_read_only_and_keeps_data_on_a_named_volume() -> None:
    prometheus = services()["prometheus"]
    assert f"./{PROMETHEUS_CONFIG}:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    assert "prometheus-data:/prometheus" in prometheus["volumes"]
    assert "prometheus-data" in compose()["volumes"]
    assert "user" not in prometheus, "the image's own user (nobody) runs Prometheus: not root"
    assert "/-/ready" in " ".join(prometheus["healthcheck"]["test"])


def test_grafana_queries_the_compose_prometheus_once_it_is_ready() -> None:
    grafana = services()["grafana"]
    assert grafana["environment"]["PROMETHEUS_URL"] == "http://prometheus:9090"
    assert grafana["depends_on"]["prometheus"]["condition"] == "service_healthy"
    assert set(services()["prometheus"]["profiles"]) == set(grafana["profiles"]) == {"infra", "pipeline"}


# -- configuration ------------------------------------------------------------------------------------------------
def test_tickpipe_services_set_only_variables_the_code_reads() -> None:
    for name, service in tickpipe_services().items():
        unknown = set(service.get("environment") or {}) - SETTINGS_VARIABLES - set(OTHER_VARIABLES)
        assert not unknown, f"{name} sets variables nothing reads: {unknown}"
    for stage in STAGES:
        unknown = set(target(stage).env()) - SETTINGS_VARIABLES - set(OTHER_VARIABLES)
        assert not unknown, f"the Dockerfile's target {stage} sets variables nothing reads: {unknown}"


def test_passwords_come_from_the_users_environment_and_are_required() -> None:
    for name, service in services().items():
        for variable, value in (service.get("environment") or {}).items():
            if "PASSWORD" in variable:
                source = re.fullmatch(r"\$\{(\w+):\?[^}]+\}", str(value))
                assert source, f"{name}: {variable} must be ${{VAR:?message}} (required, no default), got {value!r}"
    assert not [key for key in dotenv() if "PASSWORD" in key or "SECRET" in key or "TOKEN" in key]


def test_live_binance_is_one_variable_away_from_the_simulator() -> None:
    ingestor = services()["ingestor"]["environment"]
    assert ingestor["BINANCE_WS_URL"] == "${BINANCE_WS_URL:-ws://sim:9443}"
    all_interfaces = "0.0.0.0"  # noqa: S104 - inside its container, for the ingestor's container to reach it
    assert services()["sim"]["command"][:5] == ["sim", "--host", all_interfaces, "--port", "9443"]


def test_ingestor_spills_to_a_named_volume_its_user_can_write() -> None:
    """The disk buffer survives a recreated container: INGEST_SPILL_DIR is a named volume, and the image creates
    that folder owned by its user (Docker copies the ownership into a fresh volume; root would own it otherwise)."""
    ingestor = services()["ingestor"]
    spill_dir = ingestor["environment"]["INGEST_SPILL_DIR"]
    assert f"ingest-spill:{spill_dir}" in ingestor["volumes"]
    assert "ingest-spill" in compose()["volumes"]
    assert re.fullmatch(r"\$\{INGEST_SPILL_MAX_BYTES:-[1-9]\d*\}", ingestor["environment"]["INGEST_SPILL_MAX_BYTES"])
    runs = [value for keyword, value in target("ingestor").instructions if keyword == "RUN"]
    user = target("ingestor").user()
    assert any(f"mkdir -p {spill_dir}" in run and f"chown {user} {spill_dir}" in run for run in runs), runs


# -- versions -----------------------------------------------------------------------------------------------------
def test_compose_versions_equal_versions_env() -> None:
    pinned, env = versions(), dotenv()
    for name in ("KAFKA_VERSION", "FLINK_VERSION", "UV_VERSION", "TIMESCALEDB_IMAGE_TAG", "GRAFANA_VERSION",
                 "PYTHON_PATCH_VERSION", "MAVEN_VERSION"):  # fmt: skip
        assert env[name] == pinned[name], name
    assert pinned["PYTHON_PATCH_VERSION"].startswith(pinned["PYTHON_VERSION"] + ".")


def test_every_compose_image_is_pinned() -> None:
    images = {name: interpolate(service["image"]) for name, service in services().items()}
    assert images["kafka"] == f"apache/kafka:{versions()['KAFKA_VERSION']}"
    assert images["timescaledb"] == f"timescale/timescaledb:{versions()['TIMESCALEDB_IMAGE_TAG']}"
    assert images["grafana"] == f"grafana/grafana:{versions()['GRAFANA_VERSION']}"
    assert images["prometheus"] == f"prom/prometheus:{dotenv()['PROMETHEUS_VERSION']}"
    for name, image in images.items():
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image) and not image.endswith(":latest"), f"{name}: {image}"


def test_dockerfile_versions_equal_versions_env() -> None:
    pinned, args = versions(), global_args()
    for name in ("UV_VERSION", "PYTHON_PATCH_VERSION", "FLINK_VERSION", "MAVEN_VERSION"):
        assert args[name] == pinned[name], name
    assert set(compose()["x-build-args"]) | {"FLINK_VERSION", "MAVEN_VERSION"} <= set(args)
    assert f"flink:{pinned['FLINK_VERSION']}-scala_2.12-java17" in base_images()
    assert f"python:{pinned['PYTHON_PATCH_VERSION']}-slim-bookworm" in base_images()
    assert f"maven:{pinned['MAVEN_VERSION']}-eclipse-temurin-17" in base_images()
    lock = (REPO / "uv.lock").read_text()
    assert f'name = "apache-flink"\nversion = "{pinned["FLINK_VERSION"]}"' in lock


def test_base_images_are_pinned_to_a_release() -> None:
    for image in base_images():
        tag = image.rsplit(":", 1)[-1]
        assert ":" in image and re.search(r"\d+\.\d+\.\d+", tag), f"{image} is not pinned to a release"


# -- the images ---------------------------------------------------------------------------------------------------
def test_images_run_as_a_non_root_numeric_user() -> None:
    for stage in STAGES:
        user = target(stage).user()
        assert user and re.fullmatch(r"[1-9]\d*:[1-9]\d*", user), f"{stage}: USER {user}"


def test_each_target_gets_a_venv_with_only_its_own_extras_built_from_the_lock() -> None:
    """One way of building Python for every image: a venv-<target> stage on a shared build base syncs the lock with
    the target's extras (dependencies first, then tickpipe as a wheel), and the target copies only that venv."""
    for stage in STAGES:
        venv = target(f"venv-{stage}")
        assert venv.parent is not None and venv.parent.name in {"build-python", "build-flink"}, stage
        syncs = [value for keyword, value in venv.instructions if keyword == "RUN"]
        assert len(syncs) == 2 and all(value.startswith("uv sync --frozen --no-dev ") for value in syncs), stage
        assert "--no-install-project" in syncs[0] and "--no-editable" in syncs[1], stage
        extras = syncs[0].split()[syncs[0].split().index("--extra") :]
        assert extras == syncs[1].split()[syncs[1].split().index("--extra") :], stage
        assert extras[0::2] == ["--extra"] * (len(extras) // 2) and stage in extras[1::2], stage
        assert venv.copies() == [("lock", ["/src/"]), ("project", ["/src/"])], stage
        assert (f"venv-{stage}", ["/opt/venv"]) in target(stage).copies(), stage
        assert venv.env()["UV_PROJECT_ENVIRONMENT"] == "/opt/venv", stage


def test_ma_job_image_ships_the_connector_jars_from_the_local_modes_pom_into_usrlib() -> None:
    ma_job = target("ma-job")
    assert (None, ["setup/maven/flink-connectors/pom.xml"]) in target("jars").copies()
    assert ("jars", ["/build/flink-connectors/"]) in ma_job.copies()
    assert ma_job.env()["JARS_DIR"] == "/opt/flink/usrlib"  # the job looks in JARS_DIR/flink-connectors
    values = yaml.safe_load((REPO / "charts" / "ma-job" / "values.yaml").read_text())
    assert values["job"]["entryClass"] == "org.apache.flink.client.python.PythonDriver"
    assert values["job"]["jarURI"] == f"local:///opt/flink/opt/flink-python-{versions()['FLINK_VERSION']}.jar"


def test_build_context_lets_in_only_what_the_images_copy() -> None:
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    assert "*" in ignore, ".dockerignore must be an allow-list (`*`, then `!path` lines)"
    allowed = {line.removeprefix("!").rstrip("/") for line in ignore if line.startswith("!")}
    for stage in stages().values():
        for source_stage, sources in stage.copies():
            if source_stage is None:
                for source in sources:
                    path = Path(source.rstrip("/"))
                    assert any(str(p) in allowed for p in (path, *path.parents)), (
                        f"{stage.name}: COPY {source} is not in .dockerignore's allow-list"
                    )


def test_make_k8s_up_script_is_executable_and_uses_the_kind_config() -> None:
    script = REPO / "k8s" / "up.sh"
    assert script.stat().st_mode & 0o111, "k8s/up.sh must be executable"
    assert "k8s/kind-config.yaml" in script.read_text()
    assert yaml.safe_load((REPO / "k8s" / "kind-config.yaml").read_text())["name"] == "tickpipe"
