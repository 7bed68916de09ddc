"""`tickpipe run`'s machinery on real processes, without engines: processes tied to the run die with it, and a stage
that keeps dying is restarted with backoff until the restart budget stops the run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.helpers import wait_for

from tickpipe.config import load_settings
from tickpipe.run.pipeline import LocalPipeline, RestartLimitReached, RunOptions
from tickpipe.stack.process import pid_alive

PARENT = """
import signal, sys, time
from pathlib import Path
from tickpipe.stack.process import spawn
pid = spawn(["sleep", "300"], log_path=Path(sys.argv[1]), tied_to_parent=signal.SIGTERM)
print(pid, flush=True)
time.sleep(300)
"""


@pytest.mark.integration
def test_a_process_tied_to_its_parent_dies_when_the_parent_is_killed(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path / "child.log")], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert pid_alive(child)
        parent.kill()  # SIGKILL: no handler of the parent runs
        parent.wait(10)
        wait_for(lambda: not pid_alive(child), 10, "the child to die with its parent")
    finally:
        parent.kill()
        if "child" in locals() and pid_alive(child):
            os.kill(child, signal.SIGKILL)


@pytest.mark.integration
def test_a_stage_that_keeps_dying_is_restarted_then_stops_the_run_naming_its_log(tmp_path: Path) -> None:
    settings = load_settings(run_max_restarts=2, run_restart_window_seconds=120)
    pipeline = LocalPipeline(settings, tmp_path, RunOptions())
    stage = pipeline._stage("ingestor", ["no-such-command"])  # exits at once with a usage error

    def limit_reached() -> RestartLimitReached | None:
        try:
            pipeline.check()
        except RestartLimitReached as error:
            return error
        return None

    started = time.monotonic()
    error = wait_for(limit_reached, 60, "the restart budget to run out", interval=0.1)
    # Two restarts with backoff (1 s, then 2 s) before the third death stops the run.
    assert time.monotonic() - started >= 3.0
    message = str(error)
    assert message == (
        f"ingestor died 3 times within 120 s (RUN_MAX_RESTARTS=2); stopping the run; see its log {stage.log_path}"
    )
    state = json.loads((tmp_path / "run.json").read_text())
    assert state["restarts"] == {"ingestor": 2}
    assert "invalid choice: 'no-such-command'" in stage.log_path.read_text()


@pytest.mark.unit
def test_the_live_view_shows_restarts_from_the_run_state(tmp_path: Path) -> None:
    from rich.console import Console

    from tickpipe.top.snapshot import Snapshot, run_state
    from tickpipe.top.view import render

    (tmp_path / "run.json").write_text(json.dumps({"restarts": {"ingestor": 2, "flink-taskmanager": 1}}))
    snapshot = Snapshot([], [], 0, time.time(), run_state(tmp_path)["restarts"])
    console = Console(width=120, record=True)
    console.print(render(snapshot))
    assert "flink-taskmanager 1x, ingestor 2x" in console.export_text()
