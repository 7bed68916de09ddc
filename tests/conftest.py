"""Session fixtures: one real local stack (Kafka KRaft, PostgreSQL, Flink) shared by the whole test session.

Engines start lazily, only when a test asks for them, on free ports in a private state folder, so parallel test
runs don't collide. Set TICKPIPE_TEST_EXTERNAL=1 to run against an already running stack given by the usual
environment variables (KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL, DATABASE_PASSWORD, FLINK_REST_URL, ...).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
import urllib.request
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tickpipe.config import Settings, load_settings
from tickpipe.ma_job.flink_rest import TERMINAL_STATES, FlinkRest
from tickpipe.stack.manager import LocalStack
from tickpipe.stack.process import pid_alive, wait_until

REPO = Path(__file__).resolve().parent.parent
EXTERNAL = os.environ.get("TICKPIPE_TEST_EXTERNAL") == "1"
# What session fixtures put in the environment: it stays when a test's changes are undone (restore_environment),
# also when the fixture was first asked for in the middle of a test (request.getfixturevalue).
SESSION_ENVIRONMENT: dict[str, str] = {}

# A shell starts its background jobs with SIGINT ignored, and an ignored signal stays ignored in every child: the
# tests that press Ctrl-C on a stage (os.killpg(..., SIGINT)) would then wait for nothing. A handler of our own is
# reset to the default in the children instead.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


class TestStack:
    """The session's stack: `require(name)` starts an engine once; `settings(**overrides)` points at it."""

    __test__ = False  # a fixture object, not a test class

    def __init__(self, home: Path) -> None:
        self.home = home
        self.local = LocalStack(home, (REPO / ".deps" / "jars").resolve())
        self.exports: dict[str, str] = {}
        self._started: set[str] = set()

    def require(self, *names: str) -> None:
        if EXTERNAL:
            return
        missing = [name for name in names if name not in self._started]
        if missing:
            self.exports.update(self.local.up(tuple(self._started | set(missing)), timeout=180))
            self._started.update(missing)

    def settings(self, **overrides: object) -> Settings:
        env = {key.lower(): value for key, value in self.exports.items() if key.lower() in Settings.model_fields}
        env.update({key: value for key, value in overrides.items()})
        env.setdefault("jars_dir", REPO / ".deps" / "jars")
        env.setdefault("migrations_dir", REPO / "storage" / "migrations")
        return load_settings(**env)

    def env(self, **overrides: str) -> dict[str, str]:
        """Environment for a stage started as a subprocess (`tickpipe ...`), pointed at this stack."""
        env = dict(os.environ)
        env.update(self.exports)
        env.update(TICKPIPE_HOME=str(self.home), LOG_FORMAT="json")
        env.update(overrides)
        return env


def traversable_tmpdir(prefix: str) -> Path:
    """A temp folder PostgreSQL's unprivileged user can enter (pytest's own tmp dirs are private to root)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


@pytest.fixture(scope="session")
def stack() -> Iterator[TestStack]:
    home = traversable_tmpdir("tickpipe-test-stack-")
    # Stages read $TICKPIPE_HOME/stack.env: make every process of this session use the test stack, not a
    # developer's running one.
    SESSION_ENVIRONMENT["TICKPIPE_HOME"] = os.environ["TICKPIPE_HOME"] = str(home)
    test_stack = TestStack(home)
    try:
        yield test_stack
    finally:
        if not EXTERNAL:
            test_stack.local.down()
            shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(autouse=True)
def restore_environment() -> Iterator[None]:
    """Every test ends with the environment it began with. A PyFlink job run in this process (tests/helpers.py)
    starts Beam's loopback worker pool here, which writes into os.environ the environment of every Python worker it
    is asked to start (PYTHON_LOOPBACK_SERVER_ADDRESS, FLINK_LIB_DIR of the cluster that asked, ...): inherited by
    the processes later tests start, a Flink client would look for its jars in a deleted stack's folder, and a
    TaskManager would hand its Python functions to this process instead of running them itself."""
    before = dict(os.environ)
    yield
    before.update(SESSION_ENVIRONMENT)
    if os.environ != before:
        os.environ.clear()
        os.environ.update(before)


@pytest.fixture
def kafka(stack: TestStack) -> TestStack:
    stack.require("kafka")
    return stack


@pytest.fixture
def postgres(stack: TestStack) -> TestStack:
    stack.require("postgres")
    return stack


@pytest.fixture
def flink(stack: TestStack) -> TestStack:
    stack.require("kafka", "postgres", "flink")
    revive_dead_flink_processes(stack)
    cancel_leftover_jobs(stack)
    recycle_full_taskmanagers(stack)
    return stack


def revive_dead_flink_processes(stack: TestStack) -> None:
    """A TaskManager that an earlier test's job took down (a fatal error, "OutOfMemoryError: Metaspace" after many
    jobs on one session cluster) is started again, so that one test's casualty does not fail every later job test.
    It is reported as a warning: CI shows it."""
    if EXTERNAL:
        return
    dead = stack.local.dead_processes("flink")
    for process in dead:
        log = stack.local.log_dir / f"{process}.log"
        last = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
        warnings.warn(f"restarting {process}, found dead; its log ended: {' | '.join(last)[:600]}", stacklevel=1)
    if dead:
        stack.local.up(("kafka", "postgres", "flink"), timeout=180)  # starts the dead processes only


def cancel_leftover_jobs(stack: TestStack) -> None:
    """Tests run one at a time, so a job still on the shared session cluster when a test starts is an earlier
    test's leftover. One whose database was dropped with its test restarts forever, and its declared slot
    requirements starve the next jobs (NoResourceAvailableException with every slot shown free): cancel them."""
    url = stack.exports.get("FLINK_REST_URL")
    if EXTERNAL or not url:
        return
    rest = FlinkRest(url)
    leftovers = [job for job in rest.jobs() if job.state not in TERMINAL_STATES]
    for job in leftovers:
        warnings.warn(f"cancelled a leftover job: {job.name} {job.job_id} ({job.state})", stacklevel=1)
        rest.cancel(job.job_id)
    deadline = time.monotonic() + 60  # cleanup, not a check: a job slow to cancel must not fail the next test
    while time.monotonic() < deadline and any(rest.state(job.job_id) not in TERMINAL_STATES for job in leftovers):
        time.sleep(0.2)


# Every job that finished on the shared session cluster leaves ~10-15 MB of its classes in the TaskManager's
# metaspace (their class loaders stay reachable; the root is not in a heap dump): ~26 job tests filled 300 MB of
# it in CI. A TaskManager past this share is restarted between tests, before a job test pushes it over.
METASPACE_RECYCLE_SHARE = 0.6


def recycle_full_taskmanagers(stack: TestStack) -> None:
    """Restart the shared cluster's TaskManagers (between tests, no job running) once one's metaspace is mostly
    used by earlier jobs' classes; wait until the new ones have registered."""
    url = stack.exports.get("FLINK_REST_URL")
    if EXTERNAL or not url:
        return

    def get(path: str) -> Any:
        with urllib.request.urlopen(f"{url}{path}", timeout=10) as response:  # noqa: S310 - the stack's loopback URL
            return json.load(response)

    ids = [tm["id"] for tm in get("/taskmanagers")["taskmanagers"]]
    shares = []
    for tm_id in ids:
        metrics = {
            m["id"]: float(m["value"])
            for m in get(
                f"/taskmanagers/{tm_id}/metrics?get=Status.JVM.Memory.Metaspace.Used,Status.JVM.Memory.Metaspace.Max"
            )
        }
        if metrics.get("Status.JVM.Memory.Metaspace.Max", 0) > 0:
            shares.append(metrics["Status.JVM.Memory.Metaspace.Used"] / metrics["Status.JVM.Memory.Metaspace.Max"])
    if not shares or max(shares) < METASPACE_RECYCLE_SHARE:
        return
    warnings.warn(f"restarting the shared TaskManagers: metaspace {max(shares):.0%} used by earlier jobs", stacklevel=1)
    # SIGTERM: a TaskManager that shuts down deregisters at once (a killed one would stay listed until its
    # heartbeat times out, and the next job could be given its slots).
    for process, pid in stack.local.pids(("flink",)).items():
        if process.startswith("flink-taskmanager"):
            os.killpg(pid, signal.SIGTERM)
            if not wait_until(partial(_gone, pid), 60):
                os.killpg(pid, signal.SIGKILL)
    stack.local.up(("kafka", "postgres", "flink"), timeout=180)  # starts the stopped processes only

    def fresh_ones_registered() -> bool:
        registered = {tm["id"] for tm in get("/taskmanagers")["taskmanagers"]}
        return len(registered) >= len(ids) and not registered & set(ids)

    deadline = time.monotonic() + 120
    while not fresh_ones_registered():
        if time.monotonic() > deadline:
            raise RuntimeError("the restarted TaskManagers did not replace the old ones within 120 s")
        time.sleep(0.5)


def _gone(pid: int) -> bool:
    return not pid_alive(pid)


FLINK_LOG_LINES = 60


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test that ran a job gets the shared Flink cluster's last warnings in its report: a job that never
    produced rows is explained there (slots, restarts, a connector's exception), and CI keeps nothing else."""
    outcome = yield
    report = outcome.get_result()
    test_stack = getattr(item, "funcargs", {}).get("flink")
    if not report.failed or not isinstance(test_stack, TestStack) or EXTERNAL:
        return
    dead = test_stack.local.dead_processes("flink")
    lines = [f"processes of the cluster that died: {', '.join(dead)}"] if dead else []
    for log in sorted(test_stack.local.log_dir.glob("flink-*.log")):
        text = log.read_text(errors="replace").splitlines()
        notable = [line[:400] for line in text if " WARN " in line or " ERROR " in line or "Exception" in line]
        lines += [f"--- {log.name} ({len(text)} lines; its last warnings and errors)", *notable[-FLINK_LOG_LINES:]]
    report.sections.append(("Flink cluster log", "\n".join(lines) or "no Flink logs"))


@pytest.fixture
def stack_home() -> Iterator[Path]:
    """A state folder for a private LocalStack (stopped by the test), removed afterwards."""
    home = traversable_tmpdir("tickpipe-test-home-")
    try:
        yield home
    finally:
        LocalStack(home, (REPO / ".deps" / "jars").resolve()).down()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def unique_topics() -> dict[str, str]:
    """Topic names private to one test, so tests never see each other's ticks."""
    suffix = uuid.uuid4().hex[:10]
    return {
        "kafka_topic": f"price-ticks-{suffix}",
        "kafka_dlq_topic": f"price-ticks-{suffix}.dlq",
        "kafka_candles_topic": f"candles-{suffix}",
        "kafka_signals_topic": f"signals-{suffix}",
    }


@pytest.fixture
def fresh_database(postgres: TestStack) -> Iterator[Settings]:
    """An empty database private to one test (dropped afterwards); settings point at it as owner."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    base = postgres.settings()
    with psycopg.connect(base.conninfo("owner"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = base.database_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield postgres.settings(database_url=url)
    finally:
        with psycopg.connect(base.conninfo("owner"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def timescaledb_engine() -> Iterator[Settings]:
    """A TimescaleDB engine (PGlite + timescaledb, WebAssembly, in memory); settings point at it as owner."""
    from tickpipe.stack.timescaledb import PASSWORD, TimescaleEngine

    home = traversable_tmpdir("tickpipe-test-timescaledb-")
    try:
        with TimescaleEngine(home / "timescaledb.log") as engine:
            yield load_settings(
                database_url=engine.url,
                database_password=PASSWORD,
                database_writer_password="writer-test-password",
                database_reader_password="reader-test-password",
                migrations_dir=REPO / "storage" / "migrations",
            )
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def timescaledb() -> Iterator[Settings]:
    """One engine shared by the session (queries, dashboards)."""
    with timescaledb_engine() as settings:
        yield settings


@pytest.fixture
def fresh_timescaledb() -> Iterator[Settings]:
    """An engine of its own, empty: for tests of the migrations themselves."""
    with timescaledb_engine() as settings:
        yield settings
