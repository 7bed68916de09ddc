"""Each image's command line, run here in local mode.

There is no Docker engine here, so the containers' command lines (the Dockerfile targets' ENTRYPOINT + CMD, the compose
services' `command:`, the FlinkDeployment's PythonDriver entry point) run on the host against the session's local
stack, with the variable names the image and the compose service set: what a container runs is exactly what these
tests run. Paths inside an image (/app/storage/migrations, /opt/flink/usrlib, /flink-data) become the repository's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, TestStack
from tests.deploy.files import compose, target
from tests.helpers import consume, produce, random_walk, row_count, wait_for
from tickpipe.config import Settings
from tickpipe.kafka import ensure_topics
from tickpipe.ma_job.flink_rest import FlinkRest
from tickpipe.migrator.migrate import migrate
from tickpipe.run.stages import StageProcess
from tickpipe.stack.process import free_port

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent  # the venv's `tickpipe` is the image's /opt/venv/bin/tickpipe
IMAGE_PATHS = {  # where an image keeps what the repository keeps elsewhere
    "MIGRATIONS_DIR": str(REPO / "storage" / "migrations"),
    "JARS_DIR": str(REPO / ".deps" / "jars"),
}


def image_command(stage: str) -> list[str]:
    image = target(stage)
    return image.exec_form("ENTRYPOINT") + image.exec_form("CMD")


def service_command(service: str) -> list[str]:
    """What the compose service runs: its image's entrypoint (tickpipe's, or Flink's pass-through) + its command."""
    spec = compose()["services"][service]
    stage = spec["image"].split(":")[0].removeprefix("tickpipe-")
    command = [str(part) for part in spec.get("command") or target(stage).exec_form("CMD")]
    entrypoint = target(stage).exec_form("ENTRYPOINT")
    # The Flink image's /docker-entrypoint.sh runs anything but jobmanager/taskmanager as given.
    return command if not entrypoint else entrypoint + command


def on_host(argv: list[str]) -> list[str]:
    assert argv[0] == "tickpipe", f"an image command starts with the tickpipe entry point: {argv}"
    return [str(BIN / "tickpipe"), *argv[1:]]


def stage_env(stack: TestStack, stage: str, service: str, values: dict[str, str], home: Path) -> dict[str, str]:
    """The environment a container of `service` gets (image ENV + compose environment), pointed at this stack.
    `values` must give every variable the compose service sets, by the same names."""
    image_env = {key: value for key, value in target(stage).env().items() if key != "PATH"}
    compose_env = compose()["services"][service].get("environment") or {}
    local_only = {"TICKPIPE_HOME", "FLINK_LOG_DIR"}  # container paths; the test's own state folder instead
    missing = set(compose_env) - set(values) - local_only
    assert not missing, f"the test must set what compose sets for {service}: {missing}"
    extra = set(values) - set(compose_env)
    assert not extra, f"the test sets variables compose does not set for {service}: {extra}"
    env = stack.env(**image_env)
    env.update({key: IMAGE_PATHS[key] for key in IMAGE_PATHS if key in image_env})
    env.update(values)
    # As the image's PATH=/opt/venv/bin:$PATH: `python` and `tickpipe` are the venv's.
    env.update(TICKPIPE_HOME=str(home), PATH=f"{BIN}:{env.get('PATH', '')}")
    env.pop("FLINK_CONF_DIR", None)  # a container has none: Flink's client uses its own distribution's
    return env


class ImageProcess(StageProcess):
    """A stage started with the image's own entry point (the venv's `tickpipe` script), not `python -m`."""

    @property
    def argv(self) -> list[str]:
        return on_host(["tickpipe", *self.args])


def test_commands_come_from_the_dockerfile_and_compose() -> None:
    assert image_command("migrator") == ["tickpipe", "migrate", "--wait", "120"]
    assert image_command("ingestor") == ["tickpipe", "ingest"]
    assert service_command("ingestor") == ["tickpipe", "ingest"]
    assert service_command("sim")[:2] == ["tickpipe", "sim"]
    assert service_command("ma-job") == ["tickpipe", "ma-job", "--resume-if-possible"]


# -- migrator -----------------------------------------------------------------------------------------------------
def test_migrator_image_command_applies_the_schema_and_exits_zero(
    stack: TestStack, fresh_database: Settings, tmp_path: Path
) -> None:
    argv = on_host(image_command("migrator"))
    env = stage_env(
        stack,
        "migrator",
        "migrator",
        {
            "DATABASE_URL": fresh_database.database_url,
            "DATABASE_PASSWORD": stack.exports["DATABASE_PASSWORD"],
            "DATABASE_WRITER_USER": "tickpipe_writer",
            "DATABASE_WRITER_PASSWORD": stack.exports["DATABASE_WRITER_PASSWORD"],
            "DATABASE_READER_USER": "tickpipe_reader",
            "DATABASE_READER_PASSWORD": stack.exports["DATABASE_READER_PASSWORD"],
            "LOG_FORMAT": "json",
        },
        tmp_path,
    )
    first = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180, check=False)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.startswith("applied ")
    again = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180, check=False)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.strip() == "schema is current"  # the compose one-shot may run on every `up`


# -- sim + ingestor -----------------------------------------------------------------------------------------------
@pytest.fixture
def sim_and_ingestor(kafka: TestStack, unique_topics: dict[str, str], tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The compose services `sim` and `ingestor`, as their containers run them, wired to each other and Kafka."""
    settings = kafka.settings(**unique_topics)
    ensure_topics(settings)
    sim_port, metrics_port = free_port(), free_port()
    symbols = "btcusdt,ethusdt"
    sim_argv = service_command("sim")
    sim_argv[sim_argv.index("--port") + 1] = str(sim_port)  # the container's 9443, on a free port here
    sim_argv = [part.replace("${SIM_RATE:-2}", "20") for part in sim_argv]
    sim = ImageProcess(
        "sim",
        sim_argv[1:],
        tmp_path / "sim.log",
        env=stage_env(kafka, "ingestor", "sim", {"SYMBOLS": symbols, "LOG_FORMAT": "json"}, tmp_path),
    )
    ingestor_values = {
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "KAFKA_TOPIC": settings.kafka_topic,
        "KAFKA_DLQ_TOPIC": settings.kafka_dlq_topic,
        "BINANCE_WS_URL": f"ws://127.0.0.1:{sim_port}",
        "BINANCE_REST_URL": f"http://127.0.0.1:{sim_port}",
        "KAFKA_CANDLES_TOPIC": settings.kafka_candles_topic,
        "INGEST_KLINES": "true",
        "INGEST_REPAIR_LOOKBACK_MINUTES": "60",
        "INGEST_REPAIR_MAX_WEIGHT_PER_MINUTE": "1200",
        "INGEST_DISCOVERY_INTERVAL_SECONDS": "3600",
        "SYMBOLS": symbols,
        "METRICS_PORT": str(metrics_port),
        "LOG_FORMAT": "json",
        # The compose volume's path is the container's; the test's own folder instead, with compose's budget.
        "INGEST_SPILL_DIR": str(tmp_path / "ingest-spill"),
        "INGEST_SPILL_MAX_BYTES": str(1 << 30),
    }
    ingestor = ImageProcess(
        "ingestor",
        service_command("ingestor")[1:],
        tmp_path / "ingestor.log",
        env=stage_env(kafka, "ingestor", "ingestor", ingestor_values, tmp_path),
    )
    try:
        sim.start().wait_for_line("READY ", 60)
        ingestor.start()
        yield {"settings": settings, "ingestor": ingestor, "metrics": f"http://127.0.0.1:{metrics_port}",
               "spill_dir": Path(ingestor_values["INGEST_SPILL_DIR"])}  # fmt: skip
    finally:
        ingestor.stop(timeout=60)
        sim.stop(timeout=30)


def probe(url: str) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - our own loopback URL
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


def test_ingestor_image_command_publishes_simulated_ticks_and_passes_its_healthchecks(
    sim_and_ingestor: dict[str, Any],
) -> None:
    running, ingestor = sim_and_ingestor, sim_and_ingestor["ingestor"]
    # The image's HEALTHCHECK probes /healthz; the compose healthcheck (what `depends_on` waits for) /readyz.
    wait_for(lambda: ingestor.check_alive() or probe(f"{running['metrics']}/readyz"), 60, "the ingestor's /readyz")
    assert probe(f"{running['metrics']}/healthz")
    assert (running["spill_dir"] / ".lock").is_file()  # the disk buffer is where compose's volume would be
    ticks = consume(running["settings"], running["settings"].kafka_topic, 10, timeout=60)
    assert {tick["symbol"] for tick in ticks} <= {"BTCUSDT", "ETHUSDT"}  # SYMBOLS, by the compose name
    assert ingestor.stop(timeout=60), "the ingestor did not stop on SIGTERM (docker stop)"
    assert ingestor.exit_code() == 0


# -- ma-job -------------------------------------------------------------------------------------------------------
@pytest.fixture
def ma_job_settings(flink: TestStack, fresh_database: Settings, unique_topics: dict[str, str]) -> Settings:
    group = f"image-test-{uuid.uuid4().hex[:8]}"
    settings = flink.settings(database_url=fresh_database.database_url, kafka_group_id=group, **unique_topics)
    ensure_topics(settings)
    migrate(settings)
    return settings


def ma_job_values(settings: Settings, stack: TestStack) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "KAFKA_TOPIC": settings.kafka_topic,
        "KAFKA_DLQ_TOPIC": settings.kafka_dlq_topic,
        "DATABASE_URL": settings.database_url,
        "DATABASE_WRITER_USER": settings.database_writer_user,
        "DATABASE_WRITER_PASSWORD": stack.exports["DATABASE_WRITER_PASSWORD"],
        "FLINK_REST_URL": settings.flink_rest_url,
        "MA_ENGINE": "sql",
        "CHECKPOINT_INTERVAL_SECONDS": "2",
        "LOG_FORMAT": "json",
    }


@pytest.mark.slow
def test_ma_job_compose_command_runs_the_job_and_stops_it_with_a_savepoint(
    flink: TestStack, ma_job_settings: Settings, tmp_path: Path
) -> None:
    settings = ma_job_settings
    env = stage_env(flink, "ma-job", "ma-job", ma_job_values(settings, flink), tmp_path)
    env["KAFKA_GROUP_ID"] = settings.kafka_group_id  # private to this test (compose uses the default group)
    launcher = ImageProcess("ma-job", service_command("ma-job")[1:], tmp_path / "ma-job.log", env=env).start()
    rest = FlinkRest(settings.flink_rest_url)
    try:
        launcher.wait_for_line("SUBMITTED ", 300)
        produce(settings, [(t.symbol, t.to_json()) for t in random_walk(["BTCUSDT"], 25)])
        wait_for(lambda: launcher.check_alive() or row_count(settings) >= 25, 180, "25 rows from the compose ma-job")
        # What the compose healthcheck asks: a RUNNING job at FLINK_REST_URL.
        assert any(job.state == "RUNNING" for job in rest.jobs())
        assert launcher.stop(timeout=180), "the launcher did not stop on SIGTERM (docker stop)"
        assert launcher.exit_code() == 0
        assert '"event": "job_stopped"' in launcher.log_path.read_text()
        saved = json.loads((tmp_path / "ma-job" / f"{settings.kafka_group_id}.json").read_text())
        assert "savepoint" in saved["location"]
    finally:
        launcher.stop(timeout=60)
        for job in rest.jobs():
            if job.state == "RUNNING" and settings.kafka_group_id in job.name:
                rest.cancel(job.job_id)


@pytest.mark.slow
def test_flinkdeployment_entry_point_starts_the_job_module_through_pythondriver(
    flink: TestStack, ma_job_settings: Settings, tmp_path: Path
) -> None:
    """The operator runs `PythonDriver -pym tickpipe.ma_job.job` from the flink-python jar (charts/ma-job values):
    the same entry class, jar and arguments, given to Flink's client against the session cluster."""
    import yaml

    from tickpipe.stack.components import flink_home, java

    job = yaml.safe_load((REPO / "charts" / "ma-job" / "values.yaml").read_text())["job"]
    jar = flink_home() / "opt" / Path(job["jarURI"].removeprefix("local://")).name
    assert jar.is_file(), f"{jar.name}: the chart's jarURI must be the flink-python jar of FLINK_VERSION"
    settings = ma_job_settings
    env = stage_env(flink, "ma-job", "ma-job", ma_job_values(settings, flink), tmp_path)
    env.update(KAFKA_GROUP_ID=settings.kafka_group_id, FLINK_HOME=str(flink_home()))
    env.setdefault("JAVA_HOME", str(Path(java()).resolve().parent.parent))
    rest_address = settings.flink_rest_url.removeprefix("http://")
    command = ["bash", str(flink_home() / "bin" / "flink"), "run", "--detached", "--jobmanager", rest_address,
               "--class", job["entryClass"], str(jar), *job["args"]]  # fmt: skip
    rest = FlinkRest(settings.flink_rest_url)
    before = {info.job_id for info in rest.jobs()}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    try:
        produce(settings, [(t.symbol, t.to_json()) for t in random_walk(["ETHUSDT"], 10)])
        wait_for(lambda: row_count(settings) >= 10, 180, "10 rows from the PythonDriver-started job")
    finally:
        for info in rest.jobs():
            if info.job_id not in before and info.state == "RUNNING":
                rest.cancel(info.job_id)
