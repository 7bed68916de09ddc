"""The local stack: real engines up, ready, reachable, and gone after `down`."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import Consumer, Producer
from tests.conftest import REPO, TestStack
from tests.helpers import wait_for

from tickpipe.errors import StackError
from tickpipe.kafka import admin_client, ensure_topics
from tickpipe.stack.components import Postgres
from tickpipe.stack.lock import StateDirBusy, StateDirLock, holder
from tickpipe.stack.manager import LocalStack
from tickpipe.stack.process import group_members, pid_alive, spawn, start_time, stop_pid

pytestmark = pytest.mark.integration


def test_kafka_round_trips_a_keyed_message(kafka: TestStack, unique_topics: dict[str, str]) -> None:
    settings = kafka.settings(**unique_topics)
    ensure_topics(settings)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap_servers, "enable.idempotence": True})
    producer.produce(settings.kafka_topic, key=b"BTCUSDT", value=b"hello")
    assert producer.flush(10) == 0
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": uuid.uuid4().hex,
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([settings.kafka_topic])
    try:
        message = None
        for _ in range(100):
            message = consumer.poll(0.2)
            if message is not None and not message.error():
                break
        assert message is not None and message.error() is None
        assert (message.key(), message.value()) == (b"BTCUSDT", b"hello")
    finally:
        consumer.close()


def test_topics_are_created_once_with_the_configured_partitions(
    kafka: TestStack, unique_topics: dict[str, str]
) -> None:
    settings = kafka.settings(**unique_topics, kafka_topic_partitions=3)
    ensure_topics(settings)
    ensure_topics(settings)  # idempotent
    topics = admin_client(settings.kafka_bootstrap_servers).list_topics(timeout=10).topics
    assert len(topics[settings.kafka_topic].partitions) == 3
    assert len(topics[settings.kafka_dlq_topic].partitions) == 1


def test_postgres_answers_as_the_owner_and_runs_unprivileged(postgres: TestStack) -> None:
    with psycopg.connect(postgres.settings().conninfo("owner")) as conn:
        assert conn.execute("SELECT current_user, 1").fetchone() == ("tickpipe", 1)
    pid = postgres.local._load()["components"]["postgres"]["pids"]["postgres"]
    assert Path(f"/proc/{pid}").stat().st_uid != 0


def test_a_private_stack_starts_and_stops_without_leftovers(stack_home: Path) -> None:
    tmp_path = stack_home
    stack = LocalStack(tmp_path, (REPO / ".deps" / "jars").resolve())
    exports = stack.up(("postgres",), timeout=60)
    assert exports["DATABASE_URL"].startswith("postgresql://tickpipe@127.0.0.1:")
    pids = [row.pid for row in stack.status() if row.running]
    assert len(pids) == 1
    assert stack.up(("postgres",)) == exports  # already running: kept, same address
    stack.down()
    assert all(pid is not None and not pid_alive(pid) for pid in pids)
    assert not (tmp_path / "stack.env").exists()
    assert (tmp_path / "postgres" / "data" / "PG_VERSION").exists()  # data kept for the next run


def test_stopping_an_engine_ends_what_its_process_group_still_holds(tmp_path: Path) -> None:
    """A child that ignores the stop signal, or one the engine started after it (a Flink TaskManager's Python UDF
    worker), must not outlive the engine: nothing would stop it later."""
    leader = spawn(["bash", "-c", "(trap '' TERM; exec sleep 300) & wait"], log_path=tmp_path / "engine.log")
    started = start_time(leader)
    try:
        child = wait_for(lambda: [pid for pid in group_members(leader, started) if pid != leader], 10, "the child")[0]
        assert not stop_pid(leader, timeout=10, started=started)  # the leader ended on SIGTERM, not killed
        wait_for(lambda: not pid_alive(child), 10, "the child that ignored SIGTERM to be killed")
        assert not group_members(leader, started)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(leader, signal.SIGKILL)


def test_a_group_whose_number_names_another_process_now_is_not_the_recorded_one(tmp_path: Path) -> None:
    leader = spawn(["sleep", "300"], log_path=tmp_path / "leader.log")  # a group of its own
    try:
        started = start_time(leader)
        assert started is not None
        assert group_members(leader, started) == [leader]
        assert group_members(leader, started - 1) == []  # recorded with another start time: another process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(leader, signal.SIGKILL)


def test_a_taken_fixed_port_is_reported_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stack = LocalStack(tmp_path, (REPO / ".deps" / "jars").resolve())
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        # Stand in a busy port for 5432, so the test never fights a real server on the spec port.
        monkeypatch.setattr(Postgres, "fixed_ports", {"sql": port})
        with pytest.raises(StackError, match=rf"postgres: port {port} \(sql\) is already in use"):
            stack.up(("postgres",), fixed_ports=True)


def test_a_crashing_engine_fails_fast_naming_its_log(tmp_path: Path) -> None:
    stack = LocalStack(tmp_path, tmp_path / "no-jars")
    with pytest.raises(StackError, match=r"kafka: broker jars missing in .*no-jars.*make setup"):
        stack.up(("kafka",), timeout=10)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another user")
def test_postgres_starts_as_root_from_a_folder_others_cannot_enter() -> None:
    """A clone in a mode-700 home: the server's user cannot enter the state dir, so its data and socket go to a
    folder of its own (recorded in the state dir), and the stack just starts."""
    parent = Path(tempfile.mkdtemp(prefix="tickpipe-private-"))
    parent.chmod(0o700)
    home = parent / "clone" / ".tickpipe"
    stack = LocalStack(home, (REPO / ".deps" / "jars").resolve())
    outside: Path | None = None
    try:
        exports = stack.up(("postgres",), timeout=90)
        outside = Path((home / "postgres" / "server-dir").read_text().strip())
        assert not outside.is_relative_to(parent)
        url = exports["DATABASE_URL"]
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        with psycopg.connect(
            host="127.0.0.1", port=port, dbname="tickpipe", user="tickpipe", password=exports["DATABASE_PASSWORD"]
        ) as conn:
            assert conn.execute("SELECT current_setting('data_directory')").fetchone() == (str(outside / "data"),)
        assert (home / "postgres" / "data" / "PG_VERSION").exists()  # found where the README says, via a link
        assert [row.running for row in stack.status() if row.component == "postgres"] == [True]
    finally:
        stack.down()
        shutil.rmtree(parent, ignore_errors=True)
        if outside is not None:
            shutil.rmtree(outside, ignore_errors=True)


def test_one_run_per_state_dir_the_second_is_told_who_has_it(tmp_path: Path) -> None:
    first = StateDirLock(tmp_path)
    first.acquire()
    try:
        with pytest.raises(
            StateDirBusy, match=rf"already running on {tmp_path} \(tickpipe run, pid {os.getpid()}, since "
        ):
            StateDirLock(tmp_path).acquire()  # flock is per open file: the same process is refused too
        held = holder(tmp_path)
        assert held is not None and held.pid == os.getpid()
    finally:
        first.release()
    assert holder(tmp_path) is None
    second = StateDirLock(tmp_path)
    second.acquire()  # free again once released, whatever the file says
    second.release()


def test_stack_up_and_down_refuse_while_a_run_holds_the_state_dir(tmp_path: Path) -> None:
    lock = StateDirLock(tmp_path)
    lock.acquire()
    try:
        env = {**os.environ, "TICKPIPE_HOME": str(tmp_path)}
        for action in ("up", "down"):
            result = subprocess.run(
                [sys.executable, "-m", "tickpipe.cli", "stack", action],
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
            assert result.returncode == 1, result.stderr
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr
            assert f"tickpipe run (pid {os.getpid()}, since " in result.stderr
        assert not (tmp_path / "stack.json").exists()  # nothing was started
    finally:
        lock.release()
