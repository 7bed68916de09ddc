"""`tickpipe run`'s lifetime: what it starts dies with it however it ends, one run per state dir, leftovers of a
killed run stopped by the next, a stack that was already up left running, and dead stages restarted.

Each test drives real `tickpipe run --headless` processes on the simulated exchange, each in a session of its own
as a terminal would start it. The pipelines are expensive, so one running pipeline serves several checks.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import REPO, traversable_tmpdir
from tests.e2e.test_make_run import processes_mentioning
from tests.helpers import wait_for
from tickpipe.stack.process import group_members, pid_alive

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

START_TIMEOUT = 420  # engines, schema, stages and the first rows on a busy 2-core machine
TICKPIPE = [sys.executable, "-m", "tickpipe.cli"]


def clean_env(home: Path) -> dict[str, str]:
    env = {**os.environ, "TICKPIPE_HOME": str(home), "LOG_FORMAT": "json"}
    for variable in [key for key in env if key.startswith(("KAFKA_", "DATABASE_", "FLINK_"))]:
        del env[variable]  # its own stack, not the test session's
    return env


@dataclass
class Run:
    """A `tickpipe run --headless` in its own session, its output collected line by line."""

    home: Path
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, home: Path, *extra: str) -> Run:
        process = subprocess.Popen(
            [*TICKPIPE, "run", "--headless", "--rate", "2", *extra],
            cwd=REPO,
            env=clean_env(home),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        run = cls(home, process)
        threading.Thread(target=lambda: run.lines.extend(process.stdout or []), daemon=True).start()
        return run

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in list(self.lines):
            if f'"{name}"' in line:
                try:
                    found.append(json.loads(line))
                except ValueError:
                    continue
        return found

    def state(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads((self.home / "run.json").read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return data

    def wait_running(self) -> None:
        """Until every stage is up (the run reports it) or the run ended."""
        wait_for(
            lambda: "pipeline running" in self.output or self.process.poll() is not None,
            START_TIMEOUT,
            "the run to report `pipeline running`",
        )
        assert self.process.poll() is None, self.output[-4000:]

    def newest_row_ms(self) -> int | None:
        """The newest row's event time in price_ticks, read with the stack's own credentials."""
        env = dict(line.split("=", 1) for line in (self.home / "stack.env").read_text().splitlines() if "=" in line)
        url = env["DATABASE_URL"].split("?")[0]
        host_port, dbname = url.split("@", 1)[1].split("/", 1)
        host, port = host_port.split(":")
        try:
            with psycopg.connect(
                host=host, port=port, dbname=dbname, user="tickpipe", password=env["DATABASE_PASSWORD"]
            ) as conn:
                row = conn.execute("SELECT (extract(epoch FROM max(time)) * 1000)::bigint FROM price_ticks").fetchone()
        except psycopg.Error:
            return None
        return int(row[0]) if row and row[0] is not None else None

    def rows_arrive_after(self, since_ms: int, timeout: float, what: str) -> None:
        wait_for(lambda: (self.newest_row_ms() or 0) > since_ms, timeout, what, interval=1.0)

    def kill_everything(self) -> None:
        """Test clean-up: whatever is left of this run and its engines."""
        with_signal(self.process.pid, signal.SIGKILL)
        for line in processes_mentioning(str(self.home)):
            with_signal(int(line.split(":")[0]), signal.SIGKILL, group=False)


def with_signal(pid: int, sig: signal.Signals, group: bool = True) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        (os.killpg if group else os.kill)(pid, sig)


def now_ms() -> int:
    return int(time.time() * 1000)


def nothing_left(home: Path) -> bool:
    return not processes_mentioning(str(home))


@pytest.fixture(scope="module")
def shared_run() -> Iterator[Run]:
    """One pipeline for the checks that don't end it; the last check ends it with SIGHUP."""
    home = traversable_tmpdir("tickpipe-run-shared-")
    run = Run.start(home)
    try:
        run.wait_running()
        yield run
    finally:
        run.kill_everything()
        shutil.rmtree(home, ignore_errors=True)


def test_a_second_run_on_the_same_state_dir_refuses_naming_the_first(shared_run: Run) -> None:
    second = subprocess.run(
        [*TICKPIPE, "run", "--headless"],
        cwd=REPO,
        env=clean_env(shared_run.home),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert second.returncode != 0
    message = (second.stdout + second.stderr).strip()
    assert len(message.splitlines()) == 1, message
    assert f"pid {shared_run.process.pid}, since " in message, message
    assert "already running" in message
    # `tickpipe stack up/down` refuse too: the run supervises its engines.
    down = subprocess.run(
        [*TICKPIPE, "stack", "down"], env=clean_env(shared_run.home), capture_output=True, text=True, check=False
    )
    assert down.returncode != 0 and f"pid {shared_run.process.pid}" in down.stderr, down.stderr
    assert shared_run.process.poll() is None


def test_a_killed_ingestor_is_restarted_and_rows_keep_arriving(shared_run: Run) -> None:
    shared_run.rows_arrive_after(0, START_TIMEOUT, "the first rows in price_ticks")
    victim = shared_run.state()["stages"]["ingestor"]["pid"]
    os.kill(victim, signal.SIGKILL)
    killed_at = now_ms()
    restarted = wait_for(
        lambda: [e for e in shared_run.events("stage_restarted") if e["stage"] == "ingestor"], 60, "stage_restarted"
    )
    assert restarted[0]["previous_exit_code"] == -signal.SIGKILL
    assert shared_run.state()["restarts"]["ingestor"] >= 1
    assert shared_run.state()["stages"]["ingestor"]["pid"] != victim
    shared_run.rows_arrive_after(killed_at, 120, "rows ingested after the ingestor was restarted")


def test_a_killed_flink_taskmanager_is_restarted_and_the_job_recovers(shared_run: Run) -> None:
    shared_run.rows_arrive_after(0, START_TIMEOUT, "the first rows in price_ticks")
    stack = json.loads((shared_run.home / "stack.json").read_text())
    victim = stack["components"]["flink"]["pids"]["flink-taskmanager"]
    # Its Python UDF workers (the candle job's) are in its process group and outlive a SIGKILL of it.
    group = group_members(victim, stack["components"]["flink"]["started"]["flink-taskmanager"])
    os.kill(victim, signal.SIGKILL)
    killed_at = now_ms()
    wait_for(
        lambda: shared_run.state().get("restarts", {}).get("flink-taskmanager"),
        60,
        "the TaskManager's restart in run.json",
    )
    wait_for(
        lambda: not any(pid_alive(pid) for pid in group), 15, "the killed TaskManager's group to end with its restart"
    )
    # Flink restores the job from its newest checkpoint onto the new TaskManager; rows written after the kill
    # prove it runs again.
    shared_run.rows_arrive_after(killed_at, 240, "rows written after the TaskManager was killed")
    restarts = [e for e in shared_run.events("stage_restarted") if e["stage"] == "flink-taskmanager"]
    assert len(restarts) == 1, restarts  # restarted once, not again while the new one was starting
    assert shared_run.process.poll() is None


def test_closing_the_terminal_stops_everything_cleanly(shared_run: Run) -> None:
    """SIGHUP to the run's process group (what a closed terminal sends) stops it like SIGTERM: in order, with a
    savepoint, and nothing of the state dir keeps running."""
    os.killpg(shared_run.process.pid, signal.SIGHUP)
    shared_run.process.wait(240)
    assert shared_run.process.returncode == 0, shared_run.output[-3000:]
    try:
        wait_for(lambda: nothing_left(shared_run.home), 60, "no process of the state dir left")
    except AssertionError:
        raise AssertionError(f"left running: {processes_mentioning(str(shared_run.home))}") from None
    stopped = (shared_run.home / "logs" / "run.log").read_text()
    assert "stopping the local engines this run started" in stopped, stopped[-2000:]
    assert "Traceback" not in shared_run.output + stopped
    assert "job_stopped" in (shared_run.home / "logs" / "ma-job.log").read_text()  # with a savepoint
    assert not (shared_run.home / "run.json").exists()


def test_killing_the_run_kills_what_it_started() -> None:
    """SIGKILL of the run's main process: the kernel signals its stages and engines, its watchdog kills the rest."""
    home = traversable_tmpdir("tickpipe-run-killed-")
    run = Run.start(home)
    try:
        run.wait_running()
        started = [int(line.split(":")[0]) for line in processes_mentioning(str(home))]
        assert len(started) >= 7, started  # 4 engine processes, 3 stages (and the watchdog)
        os.kill(run.process.pid, signal.SIGKILL)
        # Both: a JVM still unmapping its heap after SIGKILL has no readable environment any more, but is not gone.
        wait_for(
            lambda: nothing_left(home) and not any(pid_alive(pid) for pid in started),
            180,
            "every process of the killed run to end",
        )
    finally:
        run.kill_everything()
        shutil.rmtree(home, ignore_errors=True)


def test_the_next_run_stops_leftovers_and_leaves_an_already_up_stack_running() -> None:
    """A stack brought up by `tickpipe stack up` is not the run's: the run uses it and leaves it running. Before
    that, the run finds a stage left by a run that was killed with its watchdog, stops it and says so."""
    home = traversable_tmpdir("tickpipe-run-stack-up-")
    env = clean_env(home)
    run: Run | None = None
    try:
        up = subprocess.run(
            [*TICKPIPE, "stack", "up"], env=env, capture_output=True, text=True, timeout=300, check=False
        )
        assert up.returncode == 0, up.stdout + up.stderr
        engines = json.loads((home / "stack.json").read_text())["components"]
        engine_pids = [pid for entry in engines.values() for pid in entry["pids"].values()]
        # What a killed run leaves when its watchdog was killed too: a stage still running (it carries the state
        # dir's marker) and a run.json naming a run that is gone.
        orphan = subprocess.Popen(
            [sys.executable, "-X", f"tickpipe_home={home}", "-m", "tickpipe.cli", "sim", "--port", "0"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        (home / "run.json").write_text(
            json.dumps(
                {
                    "pid": 999_999,
                    "since": "yesterday",
                    "engines": [],
                    "stages": {"sim": {"pid": orphan.pid, "started": None, "stop_signal": 15}},
                }
            )
        )
        run = Run.start(home)
        run.wait_running()
        assert orphan.poll() is not None, "the orphaned stage still runs"
        assert (
            "stopped the leftovers of an earlier run that did not stop (pid 999999, since yesterday): "
            f"sim (pid {orphan.pid})" in run.output
        )
        assert "using the engines already running (flink, kafka, postgres)" in run.output
        run.rows_arrive_after(0, START_TIMEOUT, "rows on the already-up stack")
        os.killpg(run.process.pid, signal.SIGTERM)
        run.process.wait(240)
        assert run.process.returncode == 0, run.output[-3000:]
        assert "stopping the local engines" not in run.output
        assert all(pid_alive(pid) for pid in engine_pids), "the run stopped engines it did not start"
        status = subprocess.run([*TICKPIPE, "stack", "status"], env=env, capture_output=True, text=True, check=False)
        assert status.returncode == 0, status.stdout
    finally:
        if run is not None:
            run.kill_everything()
        subprocess.run([*TICKPIPE, "stack", "down"], env=env, capture_output=True, timeout=180, check=False)
        assert nothing_left(home), processes_mentioning(str(home))
        shutil.rmtree(home, ignore_errors=True)
