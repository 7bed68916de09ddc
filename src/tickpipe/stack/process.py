"""Start, find and stop the stack's engine processes: detached, logged to a file, tracked by pid file.

A process may be tied to the life of the one that starts it (`die_with_parent`): the kernel signals it when its
parent dies, however the parent dies (PR_SET_PDEATHSIG). That is what `tickpipe run` uses for everything it
starts; `tickpipe stack up` does not, its engines outlive the command.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@dataclass(frozen=True)
class RunAs:
    """An unprivileged account to run a process as (PostgreSQL refuses to run as root)."""

    uid: int
    gid: int


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes; reap it if it is our child.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def cmdline_contains(pid: int, marker: str) -> bool:
    """Guard against a recycled pid: only signal a process whose command line names our state dir."""
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return False


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(sig: signal.Signals) -> Callable[[], None]:
    """A `preexec_fn` that makes the kernel send `sig` to the child when its parent dies.

    The kernel fires it when the *thread* that forked exits, so callers fork from their main thread. It runs after
    the child's uid change (Popen's user=), which would otherwise clear it. If the parent died between fork and
    prctl, the child would never be signalled: it checks and exits instead.
    """
    parent = os.getpid()
    prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up before the fork: the child only calls it

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


def spawn(
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    run_as: RunAs | None = None,
    cwd: Path | None = None,
    tied_to_parent: signal.Signals | None = None,
) -> int:
    """Start a detached process (own session, so Ctrl-C in the caller's terminal doesn't reach it); return pid.

    With `tied_to_parent`, the process gets that signal when the caller dies (see `die_with_parent`)."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
            user=run_as.uid if run_as else None,
            group=run_as.gid if run_as else None,
            extra_groups=[] if run_as else None,
            preexec_fn=die_with_parent(tied_to_parent) if tied_to_parent else None,  # noqa: PLW1509 - see die_with_parent
        )
    return process.pid


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22): with the pid, it names one
    process for good, so a recorded pid that was recycled is never mistaken for ours."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return int(fields[19])


def same_process(pid: int, started: int | None) -> bool:
    """Is `pid` still the process that was recorded with start time `started`, and alive?"""
    return pid_alive(pid) and (started is None or start_time(pid) == started)


def group_members(pgid: int, since: int | None = None) -> list[int]:
    """Live processes of process group `pgid` started at or after `since` (a recorded leader's start time), so a
    recycled group id is never taken for a stage's group: its children (a Flink client, UDF workers) included."""
    if since is not None and pid_alive(pgid) and start_time(pgid) != since:
        # The number names another live process now (pid_max may be 32768), so the recorded group is gone: the
        # kernel hands out a group's number again only after its last member has ended.
        return []
    members = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z" and (since is None or int(fields[19]) >= since):
            members.append(int(proc.name))
    return members


def processes_with_argument(argument: str, exclude: set[int] | frozenset[int] = frozenset()) -> list[int]:
    """Live processes with exactly `argument` on their command line (a marker such as the one `tickpipe run` gives
    its stages), other than this process, its parent and `exclude`."""
    skip = {os.getpid(), os.getppid(), *exclude}
    wanted = argument.encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) in skip:
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if wanted in args and pid_alive(int(proc.name)):
            found.append(int(proc.name))
    return found


def kill_all(pids: list[int], sig: signal.Signals = signal.SIGKILL) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def kill_group(pgid: int, since: int | None) -> None:
    """SIGKILL every member of process group `pgid` started at or after `since` (see `group_members`), again until
    none is left: a member may fork while it is being killed (a UDF runner script starting its Python)."""

    def emptied() -> bool:
        members = group_members(pgid, since)
        kill_all(members)
        return not members

    wait_until(emptied, 5.0)


def stop_pid(
    pid: int, *, sig: signal.Signals = signal.SIGTERM, timeout: float = 30.0, started: int | None = None
) -> bool:
    """Signal the process group, wait for its leader to exit, SIGKILL it at the deadline; then SIGKILL what is left of
    the group when the leader's start time `started` is known (it tells the group from a later one reusing the
    number): a child that ignores the signal, or one the leader started after it. Return True if the leader had to
    be killed."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, sig)
    killed = not wait_until(lambda: not pid_alive(pid), timeout)
    if killed:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(pid), 10.0)
    if started is not None:
        kill_group(pid, started)
    return killed


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def tail(path: Path, lines: int = 5) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log written)"
