"""What a run that did not stop left behind, and how to stop it.

`tickpipe run` records what it starts in `$TICKPIPE_HOME/run.json`: each stage's pid with its start time (so a
recycled pid is never taken for it) and the engines it started itself. Every stage's command line carries the
marker `-X tickpipe_home=<state dir>`, so a stage is found even if it was started after the last write of that
file. The run's watchdog calls `stop_leftovers` when the run dies without stopping; the next run calls it too, in
case the watchdog itself was killed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path
from typing import Any

from tickpipe.stack.manager import LocalStack
from tickpipe.stack.process import (
    cmdline_contains,
    group_members,
    kill_all,
    kill_group,
    processes_with_argument,
    same_process,
    wait_until,
)

# The order that loses nothing: the exchange first, the ingestor flushes, the job takes a savepoint.
STAGE_ORDER = ("sim", "ingestor", "ma-job", "candle-job")


def marker(home: Path) -> str:
    """The argument (after -X) that names a run's processes on their command line."""
    return f"tickpipe_home={home}"


def read_state(home: Path) -> dict[str, Any]:
    try:
        state: dict[str, Any] = json.loads((home / "run.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return state


def stop_leftovers(
    home: Path,
    state: dict[str, Any],
    *,
    signal_stages: bool = True,
    grace: float = 60.0,
    exclude: frozenset[int] = frozenset(),
) -> list[str]:
    """Stop the stages and the engines of the run described by `state` (run.json), and any process carrying the
    state dir's marker; return `name (pid N)` for each that was still running.

    Stages get their own stop signal first (the job takes a savepoint) unless `signal_stages` is False (the kernel
    already sent it: PR_SET_PDEATHSIG); whatever of their process groups is left at the deadline is killed."""
    stopped: list[str] = []
    stages: dict[str, Any] = state.get("stages") or {}
    groups: list[tuple[int, int | None]] = []
    for name in sorted(stages, key=lambda n: STAGE_ORDER.index(n) if n in STAGE_ORDER else len(STAGE_ORDER)):
        info = stages[name]
        pid, started = int(info["pid"]), info.get("started")
        if started is None and not cmdline_contains(pid, "tickpipe.cli"):
            continue  # no start time recorded (an older run.json): only a live tickpipe stage is taken for it
        if not group_members(pid, started):
            continue
        stopped.append(f"{name} (pid {pid})")
        groups.append((pid, started))
        if signal_stages and same_process(pid, started):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, int(info.get("stop_signal", signal.SIGTERM)))
    wait_until(lambda: not any(group_members(pgid, since) for pgid, since in groups), grace, interval=0.2)
    for pgid, since in groups:
        kill_group(pgid, since)

    owned = tuple(state.get("engines") or ())
    if owned:
        stack = LocalStack(home, home)
        stopped += [f"{process} (pid {pid})" for process, pid in stack.running(owned).items()]
        stack.stop(list(owned))  # with what their groups hold: a PostgreSQL backend, a Python UDF worker

    strays = processes_with_argument(marker(home), exclude=exclude)
    stopped += [f"pid {pid}" for pid in strays]
    kill_all(strays)
    return stopped
