"""The local stack with `--tls`: a Kafka broker that only speaks SASL_SSL (SCRAM users made at format time, a test
CA) and a PostgreSQL that only accepts TLS; the stages run through them and no log holds a password."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Consumer, Producer

from tests.conftest import REPO, traversable_tmpdir
from tests.helpers import wait_for
from tickpipe.config import Settings, load_settings
from tickpipe.db import price_tick_rows, wait_for_database
from tickpipe.errors import DatabaseNotReady, KafkaNotReady
from tickpipe.kafka import consumer_config, ensure_topics, producer_config, wait_for_broker
from tickpipe.run.stages import StageProcess
from tickpipe.sim.server import SimOptions, SimThread
from tickpipe.stack.manager import LocalStack
from tickpipe.stack.process import free_port
from tickpipe.stack.tls import make_ca

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SYMBOLS = ["BTCUSDT", "ETHUSDT"]


@dataclass
class TlsStack:
    home: Path
    exports: dict[str, str]

    def settings(self, **overrides: object) -> Settings:
        values: dict[str, object] = {k.lower(): v for k, v in self.exports.items()}
        values.update(overrides)
        return load_settings(**values)

    def env(self, **overrides: str) -> dict[str, str]:
        env = {key: value for key, value in os.environ.items() if not key.startswith(("KAFKA_", "DATABASE_"))}
        env.update(self.exports, TICKPIPE_HOME=str(self.home), LOG_FORMAT="json", PYTHONPATH=str(REPO))
        env.update(overrides)
        return env

    def passwords(self) -> dict[str, str]:
        """Every password this stack knows: the stages' ones and the broker's own SCRAM password."""
        found = {key: value for key, value in self.exports.items() if "PASSWORD" in key}
        for user, password in json.loads((self.home / "kafka" / "scram.json").read_text()).items():
            found[f"scram:{user}"] = password
        return found


@pytest.fixture(scope="module")
def tls_stack() -> Iterator[TlsStack]:
    home = traversable_tmpdir("tickpipe-test-tls-")
    stack = LocalStack(home, (REPO / ".deps" / "jars").resolve(), tls=True)
    try:
        yield TlsStack(home, stack.up(("kafka", "postgres"), timeout=180))
    finally:
        stack.down()
        shutil.rmtree(home, ignore_errors=True)


def topics() -> dict[str, str]:
    suffix = uuid.uuid4().hex[:10]
    return {"kafka_topic": f"price-ticks-{suffix}", "kafka_dlq_topic": f"price-ticks-{suffix}.dlq"}


def read_all(settings: Settings, topic: str, count: int, timeout: float = 60.0) -> list[bytes]:
    consumer = Consumer(consumer_config(settings, f"t-{uuid.uuid4().hex}", **{"auto.offset.reset": "earliest"}))
    consumer.subscribe([topic])
    values: list[bytes] = []
    try:
        wait_for(lambda: _poll_into(consumer, values) >= count, timeout, f"{count} records from {topic}", 0)
    finally:
        consumer.close()
    return values


def _poll_into(consumer: Consumer, values: list[bytes]) -> int:
    message = consumer.poll(0.5)
    if message is not None and not message.error():
        values.append(message.value())
    return len(values)


def test_the_stack_exports_sasl_ssl_and_verify_full(tls_stack: TlsStack) -> None:
    settings = tls_stack.settings()
    assert settings.kafka_security_protocol == "SASL_SSL"
    assert settings.kafka_ssl_ca_location == tls_stack.home / "tls" / "ca.pem"
    assert settings.database.sslmode == "verify-full"


def test_produces_and_consumes_through_sasl_ssl(tls_stack: TlsStack) -> None:
    settings = tls_stack.settings(**topics())
    ensure_topics(settings)
    producer = Producer(producer_config(settings))
    for i in range(100):
        producer.produce(settings.kafka_topic, key=b"BTCUSDT", value=str(i).encode())
    assert producer.flush(30) == 0
    assert [int(v) for v in read_all(settings, settings.kafka_topic, 100)] == list(range(100))


def test_a_wrong_password_is_refused_with_the_reason(tls_stack: TlsStack) -> None:
    settings = tls_stack.settings(kafka_sasl_password="not-the-password")
    with pytest.raises(KafkaNotReady, match="Authentication failed"):
        wait_for_broker(settings, timeout=5)


def test_a_plaintext_client_gets_no_metadata(tls_stack: TlsStack) -> None:
    with pytest.raises(KafkaNotReady):
        wait_for_broker(tls_stack.settings(kafka_security_protocol="PLAINTEXT"), timeout=4)


def test_a_client_that_does_not_trust_the_test_ca_is_refused(tls_stack: TlsStack, tmp_path: Path) -> None:
    other = make_ca(tmp_path / "other-ca")
    with pytest.raises(KafkaNotReady, match="certificate verify failed"):
        wait_for_broker(tls_stack.settings(kafka_ssl_ca_location=str(other.cert)), timeout=5)


@pytest.fixture
def run_home() -> Iterator[Path]:
    """The state dir of a `tickpipe run` (its logs and run.json), removed afterwards."""
    home = traversable_tmpdir("tickpipe-test-tls-run-")
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def stop(run: subprocess.Popen[str]) -> str:
    """Ctrl-C to the run's process group; SIGKILL if it has not ended within 4 minutes. Returns its output."""
    if run.poll() is None:
        os.killpg(run.pid, signal.SIGINT)
    try:
        return run.communicate(timeout=240)[0]
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        return run.communicate(timeout=30)[0] + "\n(killed: did not stop within 240 s)"


def localhost_url(settings: Settings, query: str) -> str:
    """The stack's database at `localhost`, the name its server certificate is made for."""
    return f"postgresql://{settings.database.user}@localhost:{settings.database.port}/postgres?{query}"


def test_postgres_verify_full_succeeds_against_the_test_ca(tls_stack: TlsStack) -> None:
    base = tls_stack.settings()
    settings = tls_stack.settings(
        database_url=localhost_url(base, "sslmode=verify-full"),
        database_ssl_root_cert=str(tls_stack.home / "tls" / "ca.pem"),
    )
    with psycopg.connect(settings.conninfo("owner"), connect_timeout=10) as conn:
        row = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
    assert row == (True,)


def test_postgres_with_a_wrong_ca_fails_with_a_clear_message(tls_stack: TlsStack, tmp_path: Path) -> None:
    other = make_ca(tmp_path / "other-ca")
    settings = tls_stack.settings(
        database_url=localhost_url(tls_stack.settings(), f"sslmode=verify-full&sslrootcert={other.cert}")
    )
    with pytest.raises(DatabaseNotReady, match=r"TLS verification failed .*certificate verify failed.*DATABASE_SSL"):
        wait_for_database(settings.conninfo("owner"), timeout=20)


def test_postgres_refuses_a_client_without_tls(tls_stack: TlsStack) -> None:
    settings = tls_stack.settings(database_url=localhost_url(tls_stack.settings(), "sslmode=disable"))
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(settings.conninfo("owner"), connect_timeout=10).close()


def test_the_stages_run_through_tls_and_no_log_holds_a_password(tls_stack: TlsStack, tmp_path: Path) -> None:
    """migrate (verify-full), the ingestor (SASL_SSL) and `tickpipe top --once`-style probes, then every log of the
    run and every captured output is searched for every password the run was given."""
    settings = tls_stack.settings(**topics())
    outputs: list[str] = []
    migrate = subprocess.run(
        [sys.executable, "-m", "tickpipe.cli", "migrate"],
        env=tls_stack.env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    outputs += [migrate.stdout, migrate.stderr]
    assert migrate.returncode == 0, migrate.stdout + migrate.stderr
    ensure_topics(settings)
    with SimThread(SimOptions(symbols=SYMBOLS, rate=50.0)) as sim:
        ingestor = StageProcess(
            "ingestor",
            ["ingest", "--symbols", ",".join(SYMBOLS)],
            tmp_path / "ingestor.log",
            env=tls_stack.env(
                BINANCE_WS_URL=sim.url,
                BINANCE_REST_URL=sim.rest_url,
                KAFKA_TOPIC=settings.kafka_topic,
                KAFKA_DLQ_TOPIC=settings.kafka_dlq_topic,
                METRICS_PORT=str(free_port()),
                LOG_LEVEL="DEBUG",
            ),
        ).start()
        try:
            ticks = read_all(settings, settings.kafka_topic, 50, timeout=90)
        finally:
            assert ingestor.stop(timeout=60), "the ingestor did not stop on SIGTERM"
    assert ingestor.exit_code() == 0, ingestor.log_path.read_text()[-2000:]
    assert all(json.loads(tick)["symbol"] in SYMBOLS for tick in ticks)

    logs = [*tls_stack.home.rglob("*.log"), *tmp_path.rglob("*.log"), *(tls_stack.home / "logs").iterdir()]
    texts = {str(path): path.read_text(errors="replace") for path in set(logs) if path.is_file()}
    texts.update({f"captured output {i}": text for i, text in enumerate(outputs)})
    assert any("ingestor" in name for name in texts), "the ingestor's log is among the searched files"
    leaks = [
        f"{which} in {name}" for which, password in tls_stack.passwords().items() for name, text in texts.items()
        if password in text
    ]  # fmt: skip
    assert not leaks, leaks


@pytest.mark.timeout(1800)  # Flink's start and the job's submission are slow on a loaded 2-core machine
def test_a_whole_run_through_tls_writes_rows_and_logs_no_password(tls_stack: TlsStack, run_home: Path) -> None:
    """`tickpipe run` (simulator, ingestor, MA job) against the TLS stack: the job's Kafka source and dead-letter
    sink over SASL_SSL (Java client, PEM trust store), its JDBC sink with verify-full. Then every log of the run and
    of the engines, the run's state, its output and what Flink's REST API shows of the job hold no password."""
    from tickpipe.ma_job.flink_rest import FlinkRest
    from tickpipe.ma_job.tables import job_name
    from tickpipe.stack.components import flink_home

    tls_stack.exports.update(LocalStack(tls_stack.home, (REPO / ".deps" / "jars").resolve()).up(timeout=240))
    database = f"t_{uuid.uuid4().hex[:12]}"
    owner = tls_stack.settings()
    with psycopg.connect(owner.conninfo("owner"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    names = topics()
    settings = tls_stack.settings(
        database_url=owner.database_url.replace("/tickpipe?", f"/{database}?"),
        kafka_group_id=f"tls-{uuid.uuid4().hex[:8]}",
        **names,
    )
    assert settings.database.sslmode == "verify-full"
    env = tls_stack.env(
        TICKPIPE_HOME=str(run_home),
        DATABASE_URL=settings.database_url,
        KAFKA_TOPIC=names["kafka_topic"],
        KAFKA_DLQ_TOPIC=names["kafka_dlq_topic"],
        KAFKA_GROUP_ID=settings.kafka_group_id,
        CHECKPOINT_INTERVAL_SECONDS="2",
    )
    env.pop("FLINK_CONF_DIR", None)
    run = subprocess.Popen(
        [sys.executable, "-m", "tickpipe.cli", "run", "--external", "--headless", "--symbols", "btcusdt,ethusdt"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    published: dict[str, str] = {}  # what the run and Flink show while it runs
    try:
        wait_for(
            lambda: price_tick_rows(settings.conninfo("owner")) >= 40 or run.poll() is not None,
            900,
            "40 rows written through TLS",
        )
        assert run.poll() is None, "the run ended early"
        published["run.json"] = (run_home / "run.json").read_text() if (run_home / "run.json").exists() else ""
        for job in FlinkRest(settings.flink_rest_url).running(job_name(settings)):
            for view in ("", "/plan", "/config", "/exceptions"):
                url = f"{settings.flink_rest_url}/jobs/{job.job_id}{view}"
                with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - the test's own cluster
                    published[f"Flink REST {url}"] = response.read().decode()
    finally:
        output = stop(run)
    assert run.returncode == 0, output[-3000:]
    assert any("price_ticks" in text for text in published.values()), "the job graph names its sink"
    files = [*run_home.rglob("*"), *tls_stack.home.rglob("*.log"), *tls_stack.home.rglob("*.out")]
    files += [*(flink_home() / "log").glob("*")]  # the `flink run` client's log lives in the distribution
    texts = {str(path): path.read_text(errors="replace") for path in files if path.is_file()}
    texts.update(output=output, **published)
    assert any(name.endswith("ingestor.log") for name in texts), sorted(texts)
    leaks = [
        f"{which} in {name}" for which, password in tls_stack.passwords().items() for name, text in texts.items()
        if password in text
    ]  # fmt: skip
    assert not leaks, leaks
