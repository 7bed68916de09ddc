"""How much memory the stack and a run use, counted as PSS (proportional set size).

RSS counts a shared page in full in every process that maps it: PostgreSQL's shared buffers in every backend, the
Python interpreter's libraries in every stage. PSS divides each shared page among the processes that map it, so
the PSS of a set of processes adds up to what they cost the machine. The kernel keeps it per process in
/proc/<pid>/smaps_rollup (Linux 4.14+).

A process is counted with everything it started (its process tree): PostgreSQL's backends are children of the
postmaster, the Python UDF workers of the keyed engine children of the TaskManager, a Flink client a child of the
ma-job stage.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tickpipe.stack.process import cmdline_contains, start_time

PROC = Path("/proc")
MIB = 1 << 20


def process_pss(pid: int) -> int | None:
    """PSS of one process in bytes; None when it is gone or not ours to read."""
    try:
        text = (PROC / str(pid) / "smaps_rollup").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    for line in text.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024  # the kernel reports kB
    return None  # a kernel thread or a zombie: no address space


def children_by_parent() -> dict[int, list[int]]:
    """Every live process's pid under its parent's pid: one pass over /proc."""
    children: dict[int, list[int]] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # The command name (field 2) may hold spaces and parentheses: fields are counted after the last ")".
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    return children


def process_tree(pid: int, children: dict[int, list[int]] | None = None) -> list[int]:
    """`pid` and all its descendants."""
    children = children_by_parent() if children is None else children
    tree, todo, seen = [], [pid], set()
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        tree.append(current)
        todo.extend(children.get(current, ()))
    return tree


@dataclass(frozen=True)
class ProcessMemory:
    """One named process (a stage or an engine process) with its descendants."""

    name: str
    pid: int
    processes: int  # how many processes the tree holds
    pss: int  # bytes


@dataclass(frozen=True)
class MemoryReport:
    items: list[ProcessMemory]

    @property
    def total(self) -> int:
        return sum(item.pss for item in self.items)

    @property
    def processes(self) -> int:
        return sum(item.processes for item in self.items)

    def largest(self, count: int) -> list[ProcessMemory]:
        return sorted(self.items, key=lambda item: item.pss, reverse=True)[:count]


def measure(named: Iterable[tuple[str, int]]) -> MemoryReport:
    """PSS of each named process tree. A pid inside two trees is counted once, in the first that names it, so the
    total never counts a process twice (the run's own tree holds its stages, for instance)."""
    children = children_by_parent()
    counted: set[int] = set()
    items = []
    for name, pid in named:
        tree = [member for member in process_tree(pid, children) if member not in counted]
        sizes = [size for size in (process_pss(member) for member in tree) if size is not None]
        counted.update(tree)
        if sizes:
            items.append(ProcessMemory(name, pid, len(sizes), sum(sizes)))
    return MemoryReport(items)


def run_processes(home: Path, engines: dict[str, int]) -> list[tuple[str, int]]:
    """The processes of what runs on state dir `home`: the engines (process name → pid, live ones only, as
    `LocalStack.running` gives them), then the stages, watchdog and orchestrator of a `tickpipe run` recorded in its
    run.json. Stages come before the orchestrator, whose tree holds them, so each is reported under its own name."""
    named = list(engines.items())
    try:
        state: dict[str, Any] = json.loads((home / "run.json").read_text())
    except (FileNotFoundError, ValueError):
        return named
    for name, stage in (state.get("stages") or {}).items():
        if _recorded(stage.get("pid"), stage.get("started")):
            named.append((name, int(stage["pid"])))
    watchdog = state.get("watchdog")
    if watchdog and start_time(int(watchdog)) is not None and cmdline_contains(int(watchdog), str(home)):
        named.append(("watchdog", int(watchdog)))  # no start time recorded: its command line names the state dir
    if _recorded(state.get("pid"), state.get("started")):
        named.append(("tickpipe run", int(state["pid"])))
    return named


def _recorded(pid: Any, started: Any) -> bool:
    """Is `pid` still the process recorded with start time `started`? Read from /proc only: never waitpid, which
    (as `pid_alive` does) would reap a dead stage of the calling `tickpipe run` before its supervisor sees the exit
    code."""
    return bool(pid) and started is not None and start_time(int(pid)) == started


def megabytes(size: int) -> str:
    return f"{size / MIB:,.0f} MB"
