"""One pipeline per state dir: `tickpipe run` holds an exclusive lock on `$TICKPIPE_HOME/run.lock` while it runs.

An flock, not only a pid file: the kernel drops it when the holder dies, however it dies, so a crashed run never
blocks the next one, and two runs started at the same instant cannot both get it. The file also says who holds it
(pid, since when), for the message the second run prints. The file is never deleted (deleting a lock file lets two
processes lock two different files).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from tickpipe.errors import StackError


class StateDirBusy(StackError):
    """Another `tickpipe run` holds the state dir."""


@dataclass(frozen=True)
class Holder:
    pid: int
    since: str  # local time, human-readable

    def describe(self) -> str:
        return f"pid {self.pid}, since {self.since}"


class StateDirLock:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.path = home / "run.lock"
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise StateDirBusy naming the run that has it."""
        self.home.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            found = holder(self.home)
            who = found.describe() if found else "pid unknown"
            raise StateDirBusy(
                f"a pipeline is already running on {self.home} (tickpipe run, {who}); stop it first "
                "(Ctrl-C in its terminal), or use another TICKPIPE_HOME"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "since": time.strftime("%Y-%m-%d %H:%M:%S %Z")}).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing drops the flock
            self._fd = None


def holder(home: Path) -> Holder | None:
    """The run holding `home`, or None when no run holds it (whatever a stale file says)."""
    path = home / "run.lock"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # held: read who holds it
        else:
            return None
        try:
            data = json.loads(os.read(fd, 4096) or b"{}")
            return Holder(int(data["pid"]), str(data["since"]))
        except (ValueError, KeyError):
            return Holder(0, "an unknown time")  # the holder is still writing its name
    finally:
        os.close(fd)
