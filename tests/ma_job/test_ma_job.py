"""The MA job on a real Flink session cluster, reading a real Kafka topic, writing a real PostgreSQL table."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import psutil
import pytest

from tests.conftest import TestStack
from tests.helpers import (
    assert_same_rows,
    consume,
    expected_rows,
    produce,
    random_walk,
    row_count,
    table_rows,
    wait_for,
)
from tickpipe.config import Settings
from tickpipe.kafka import ensure_topics
from tickpipe.ma_job.cli import ResumePoint
from tickpipe.ma_job.flink_rest import FlinkRest
from tickpipe.ma_job.tables import job_name
from tickpipe.migrator.migrate import migrate
from tickpipe.schema import Tick, parse_tick

pytestmark = pytest.mark.integration


@dataclass
class JobUnderTest:
    settings: Settings
    env: dict[str, str]
    rest: FlinkRest

    def command(self, *args: str, **popen: object) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "tickpipe.cli", "ma-job", *args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            **popen,  # type: ignore[call-overload]
        )

    def submit_detached(self, *args: str) -> str:
        process = self.command("--detached", *args)
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, output
        return output.split("SUBMITTED ")[1].split()[0]

    def wait_for_rows(self, count: int, what: str, timeout: float = 120) -> None:
        try:
            wait_for(lambda: row_count(self.settings) >= count, timeout, what)
        except AssertionError as error:
            raise AssertionError(f"{error}; {self.diagnose()}") from None

    def diagnose(self) -> str:
        """The job's state, per-operator record counts and root exception, for a failure message."""
        import json
        import urllib.request

        lines = []
        for info in self.rest.jobs():
            if info.name != job_name(self.settings):
                continue
            base = f"{self.settings.flink_rest_url}/jobs/{info.job_id}"
            with urllib.request.urlopen(base, timeout=5) as response:  # noqa: S310
                job = json.load(response)
            with urllib.request.urlopen(f"{base}/exceptions", timeout=5) as response:  # noqa: S310
                root = " ".join(
                    line for line in str(json.load(response).get("root-exception")).splitlines() if "Caused by" in line
                )[:3000]
            counts = [(v["name"][:40], v["metrics"]["write-records"]) for v in job["vertices"]]
            lines.append(f"job {info.job_id} {info.state} {counts} root exception: {root}")
        return " | ".join(lines) or "no job"

    def cancel_all(self) -> None:
        for job in self.rest.running(job_name(self.settings)):
            self.rest.cancel(job.job_id)


@pytest.fixture(params=["sql"])
def job(
    request: pytest.FixtureRequest, flink: TestStack, fresh_database: Settings, unique_topics: dict[str, str]
) -> Iterator[JobUnderTest]:
    """A job on private topics and database, of the engine given by the test's parametrisation (default: sql), or of
    a dict of environment overrides with the engine under MA_ENGINE (e.g. {"MA_ENGINE": "sql", "JOB_PARALLELISM":
    "4"})."""
    extra = dict(request.param) if isinstance(request.param, dict) else {"MA_ENGINE": request.param}
    engine = extra["MA_ENGINE"]
    under_test = job_under_test(
        flink,
        env=extra,
        database_url=fresh_database.database_url,
        kafka_group_id=f"test-{engine}-{uuid.uuid4().hex[:8]}",
        ma_engine=engine,
        **unique_topics,
    )
    try:
        yield under_test
    finally:
        under_test.cancel_all()


def job_under_test(
    stack: TestStack, *, migrated: bool = True, env: dict[str, str] | None = None, **settings: Any
) -> JobUnderTest:
    """The MA job's settings (checkpoints every second) on the stack, with `settings` on top (the test's own topics,
    group and database), and the environment its launcher runs with: the same values, `env` on top. Its topics
    exist; its database is migrated unless `migrated` is False (a test that chooses the schema)."""
    job_settings = stack.settings(checkpoint_interval_seconds=1.0, **settings)
    ensure_topics(job_settings)
    if migrated:
        migrate(job_settings)
    values = {
        "KAFKA_BOOTSTRAP_SERVERS": job_settings.kafka_bootstrap_servers,
        "FLINK_REST_URL": job_settings.flink_rest_url,
        "DATABASE_URL": job_settings.database_url,
        "KAFKA_TOPIC": job_settings.kafka_topic,
        "KAFKA_DLQ_TOPIC": job_settings.kafka_dlq_topic,
        "KAFKA_GROUP_ID": job_settings.kafka_group_id,
        "CHECKPOINT_INTERVAL_SECONDS": "1",
        "MA_ENGINE": job_settings.ma_engine.value,
        "JOB_PARALLELISM": str(job_settings.job_parallelism),
    }
    return JobUnderTest(job_settings, stack.env(**(values | (env or {}))), FlinkRest(job_settings.flink_rest_url))


def killed(launcher: subprocess.Popen[str]) -> str:
    """Kill a launcher (and its process group, when it has one of its own) with SIGKILL; the end of its output."""
    if os.getpgid(launcher.pid) == launcher.pid:  # started in a session of its own: its children go too
        os.killpg(launcher.pid, signal.SIGKILL)
    else:
        launcher.kill()
    output = launcher.communicate(timeout=30)[0] or ""
    return output[-2000:]


def keyed(ticks: list[Tick]) -> list[tuple[str, bytes]]:
    return [(t.key, t.to_json()) for t in ticks]


@pytest.mark.parametrize("job", ["sql", "keyed"], indirect=True)
def test_moving_averages_match_pandas_and_bad_records_go_to_the_dead_letter_topic(job: JobUnderTest) -> None:
    ticks = random_walk(["BTCUSDT", "ETHUSDT", "SOLUSDT"], 45)
    ticks += [Tick("DOGEUSDT", 1_700_000_000_000 + i, p, 1.0) for i, p in enumerate([1e6] * 20 + [1e-8] * 5)]
    bad = [
        ("X", b"this is not json"),
        ("X", b'{"symbol": "BTCUSDT", "timestamp": "2026-11-24T12:00:00.000Z"}'),
        ("X", b'{"symbol":"BTCUSDT","timestamp":"2026-11-24T12:00:00.000Z","price":-1,"volume":1,"source":"t"}'),
        # Re-sent ticks must not enter the windows twice: BTCUSDT's latest so far, and an older one.
        ("BTCUSDT", ticks[57].to_json()),
        ("BTCUSDT", ticks[0].to_json()),
    ]
    # The same symbol from another source is a series of its own: its own windows, its own rows.
    other_source = [replace(t, source="yahoo") for t in random_walk(["BTCUSDT"], 25, seed=99)]
    produce(job.settings, keyed(ticks[:60]) + bad + keyed(ticks[60:]) + keyed(other_source))
    ticks += other_source
    job.submit_detached()

    job.wait_for_rows(len(ticks), f"{len(ticks)} rows in price_ticks")
    assert_same_rows(table_rows(job.settings), expected_rows(ticks))

    dead = consume(job.settings, job.settings.kafka_dlq_topic, 5)
    # Both engines give the same reasons (the details after ":" or "," may be formatted differently).
    assert sorted(record["reason"].split(":")[0].split(",")[0] for record in dead) == [
        "duplicate tick",
        "missing fields",
        "not JSON",
        "out-of-order tick",
        "price must be positive",
    ]
    assert {record["stage"] for record in dead} == {"ma-job"}
    assert "this is not json" in {record["raw"] for record in dead}
    # A stale tick's record carries the tick itself, as JSON text like every raw record.
    stale = [record["raw"] for record in dead if record["reason"].startswith(("duplicate", "out-of-order"))]
    assert sorted(parse_tick(raw).event_time_ms for raw in stale) == [ticks[0].event_time_ms, ticks[57].event_time_ms]


def test_a_killed_job_resumes_from_its_checkpoint_with_one_row_per_tick(job: JobUnderTest) -> None:
    ticks = random_walk(["BTCUSDT", "ETHUSDT"], 60, seed=11)
    first, second = ticks[:50], ticks[50:]
    produce(job.settings, keyed(first))
    launcher = job.command(start_new_session=True)
    resume_point = ResumePoint(job.settings.kafka_group_id)
    try:
        # The launcher's deadline includes the submission (a Python client that builds the job graph).
        job.wait_for_rows(len(first), "the first half in price_ticks", timeout=240)
        wait_for(resume_point.load, 60, "a completed checkpoint recorded by the launcher")
    except AssertionError as error:
        raise AssertionError(f"{error}; the launcher said: {killed(launcher)}") from None
    finally:
        if launcher.poll() is None:
            killed(launcher)  # the launcher dies without a savepoint...
    job.cancel_all()  # ...and so does the job: only its retained checkpoint is left
    produce(job.settings, keyed(second))

    job.submit_detached("--resume-if-possible")
    job.wait_for_rows(len(ticks), f"{len(ticks)} rows after the restart")
    # MA(20) right after the restart needs the restored per-symbol windows, not an empty state.
    assert_same_rows(table_rows(job.settings), expected_rows(ticks))


@pytest.mark.parametrize("job", ["keyed"], indirect=True)
def test_stopping_the_launcher_takes_a_savepoint_and_the_next_start_continues(job: JobUnderTest) -> None:
    ticks = random_walk(["BTCUSDT"], 40, seed=5)
    produce(job.settings, keyed(ticks[:25]))
    launcher = job.command()
    try:
        job.wait_for_rows(25, "25 rows in price_ticks", timeout=240)
    except AssertionError as error:
        raise AssertionError(f"{error}; the launcher said: {killed(launcher)}") from None
    launcher.send_signal(signal.SIGTERM)
    output, _ = launcher.communicate(timeout=120)
    assert launcher.returncode == 0, output
    assert "job_stopped" in output
    saved = ResumePoint(job.settings.kafka_group_id).load()
    assert saved is not None
    assert "savepoint" in saved
    assert not job.rest.running(job_name(job.settings))

    produce(job.settings, keyed(ticks[25:]))
    job.submit_detached("--resume-if-possible")
    job.wait_for_rows(40, "40 rows after the restart")
    assert_same_rows(table_rows(job.settings), expected_rows(ticks))


def test_a_ctrl_c_during_the_submission_stops_the_job_once_it_exists(job: JobUnderTest) -> None:
    """The launcher's process group gets SIGINT (a terminal's Ctrl-C) while Flink's client is still submitting: the
    job must not be left running behind a launcher that has gone, and the next start continues from its savepoint."""
    ticks = random_walk(["BTCUSDT"], 30, seed=8)
    produce(job.settings, keyed(ticks[:20]))
    launcher = job.command(start_new_session=True)
    try:
        wait_for(lambda: submitting(launcher.pid), 120, "Flink's client submitting the job")
    except AssertionError as error:
        raise AssertionError(f"{error}; the launcher said: {killed(launcher)}") from None
    assert not job.rest.running(job_name(job.settings)), "the test is late: the job was already submitted"
    os.killpg(launcher.pid, signal.SIGINT)
    output, _ = launcher.communicate(timeout=300)
    assert launcher.returncode == 0, output
    assert "SUBMITTED" in output and "job_stopped" in output, output
    assert not job.rest.running(job_name(job.settings)), output
    saved = ResumePoint(job.settings.kafka_group_id).load()
    assert saved is not None and "savepoint" in saved

    produce(job.settings, keyed(ticks[20:]))
    job.submit_detached("--resume-if-possible")
    job.wait_for_rows(len(ticks), f"{len(ticks)} rows after the restart")
    assert_same_rows(table_rows(job.settings), expected_rows(ticks))


def submitting(pid: int) -> bool:
    """Whether the launcher `pid` has Flink's client (`bin/flink run`) among its children."""
    for child in psutil.Process(pid).children():
        with contextlib.suppress(psutil.NoSuchProcess):
            if "flink" in " ".join(child.cmdline()):
                return True
    return False
