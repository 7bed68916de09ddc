"""Memory as the machine pays it (PSS over process trees) and the engines' memory limits (STACK_MEMORY)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from tests.conftest import REPO
from tests.helpers import wait_for

from tickpipe.config import load_settings
from tickpipe.errors import ConfigError
from tickpipe.stack.manager import LocalStack
from tickpipe.stack.memory import MIB, MemoryReport, ProcessMemory, measure, process_tree, run_processes
from tickpipe.stack.process import start_time
from tickpipe.stack.sizing import MIN_BUDGET_MB, EngineSizes, check_setting

SHARED_MB, PRIVATE_MB, CHILDREN = 64, 16, 3

# A parent that fills a shared anonymous mapping, then forks children that each fill a private buffer: every process
# maps the shared pages (RSS counts them in each), and PSS must count them once over the tree.
TREE = f"""
import mmap, os, sys, time
shared = mmap.mmap(-1, {SHARED_MB} << 20, flags=mmap.MAP_SHARED | mmap.MAP_ANONYMOUS)
for offset in range(0, len(shared), 4096):
    shared[offset] = 1
ready_r, ready_w = os.pipe()
for _ in range({CHILDREN}):
    if os.fork() == 0:
        private = bytearray({PRIVATE_MB} << 20)
        for offset in range(0, len(private), 4096):
            private[offset] = 1
        total = sum(shared[offset] for offset in range(0, len(shared), 4096))  # read: the pages stay shared
        os.write(ready_w, b"x")
        time.sleep(600)
        os._exit(0)
for _ in range({CHILDREN}):
    os.read(ready_r, 1)
print("READY", flush=True)
time.sleep(600)
"""


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Rss:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no Rss line for pid {pid}")


@pytest.fixture
def tree() -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen([sys.executable, "-c", TREE], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().strip() == "READY"  # blocks until the children have filled their pages
        yield process
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)


@pytest.mark.integration
def test_pss_of_a_process_tree_counts_shared_pages_once(tree: subprocess.Popen[str]) -> None:
    members = process_tree(tree.pid)
    assert len(members) == 1 + CHILDREN

    report = measure([("tree", tree.pid)])
    (item,) = report.items
    assert (item.name, item.pid, item.processes) == ("tree", tree.pid, 1 + CHILDREN)
    assert item.pss >= (SHARED_MB + CHILDREN * PRIVATE_MB) * MIB
    # RSS counts the shared mapping in each of the 4 processes; PSS once in all: at least 3 x 64 MB apart.
    rss = sum(_rss(pid) for pid in members)
    assert rss - item.pss >= (CHILDREN * SHARED_MB - 8) * MIB, (rss, item.pss)


@pytest.mark.integration
def test_a_process_named_twice_is_counted_once(tree: subprocess.Popen[str]) -> None:
    child = next(pid for pid in process_tree(tree.pid) if pid != tree.pid)
    report = measure([("child", child), ("tree", tree.pid)])
    assert [(item.name, item.processes) for item in report.items] == [("child", 1), ("tree", CHILDREN)]
    assert report.processes == 1 + CHILDREN
    assert report.total == sum(item.pss for item in report.items)


@pytest.mark.integration
def test_run_processes_follows_run_json_and_skips_a_recycled_pid(tree: subprocess.Popen[str], tmp_path: Path) -> None:
    stages = {
        "ingestor": {"pid": tree.pid, "started": start_time(tree.pid)},
        "sim": {"pid": tree.pid, "started": (start_time(tree.pid) or 0) + 1},  # a pid that now names another process
    }
    (tmp_path / "run.json").write_text(json.dumps({"pid": 1, "started": -1, "stages": stages}))
    assert run_processes(tmp_path, {"kafka": 12345}) == [("kafka", 12345), ("ingestor", tree.pid)]
    assert run_processes(tmp_path / "no-run", {}) == []


@pytest.mark.integration
def test_measuring_a_run_never_reaps_a_dead_stage_before_its_supervisor(tmp_path: Path) -> None:
    # `tickpipe run` measures its own stages: a waitpid there would take a dead stage's exit code from its Popen.
    stage = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    started = start_time(stage.pid)

    def zombie() -> bool:
        return Path(f"/proc/{stage.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"

    wait_for(zombie, 30, "the stage to exit (a zombie until its parent waits)", interval=0.05)
    (tmp_path / "run.json").write_text(json.dumps({"stages": {"ingestor": {"pid": stage.pid, "started": started}}}))
    assert run_processes(tmp_path, {}) == [("ingestor", stage.pid)]
    assert measure(run_processes(tmp_path, {})).items == []  # a zombie has no memory left
    assert stage.wait(10) == 3


@pytest.mark.unit
def test_auto_is_small_for_a_light_run_and_large_otherwise() -> None:
    assert EngineSizes.named("auto", ticks_per_second=5).label == "small"
    assert EngineSizes.named("auto", ticks_per_second=10_000).label == "large"
    assert EngineSizes.named("auto").label == "large"  # `stack up`: the load is not known
    large = EngineSizes.named("LARGE")
    assert (large.jobmanager_mb, large.taskmanager_mb, large.kafka_heap_mb, large.shared_buffers_mb) == (
        1024,
        2560,
        1024,
        256,
    )
    assert not large.lean and large.kafka_jvm_options() == ["-Xms256m", "-Xmx1024m", "-XX:+UseG1GC"]


@pytest.mark.unit
def test_a_budget_in_mb_shares_out_like_small_and_adds_up() -> None:
    small = EngineSizes.named("small")
    assert small.lean
    assert small.kafka_heap_mb + small.jobmanager_mb + small.taskmanager_mb + small.shared_buffers_mb == MIN_BUDGET_MB
    bigger = EngineSizes.named("3000")
    assert bigger.kafka_heap_mb + bigger.jobmanager_mb + bigger.taskmanager_mb + bigger.shared_buffers_mb == 3000
    assert bigger.taskmanager_mb > small.taskmanager_mb and bigger.jobmanager_mb <= 1024
    assert not bigger.lean  # heaps this size get G1


@pytest.mark.unit
def test_a_bad_stack_memory_is_one_line_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    assert check_setting(" Small ") == "small"
    assert check_setting("2000") == "2000"
    monkeypatch.setenv("STACK_MEMORY", "512")
    with pytest.raises(ConfigError) as error:
        load_settings()
    assert str(error.value) == (
        f"invalid STACK_MEMORY: expected auto, small, large or a size in MB of at least {MIN_BUDGET_MB}, got '512'"
    )


@pytest.mark.unit
def test_the_live_view_shows_the_total_and_the_largest_processes() -> None:
    from rich.console import Console

    from tickpipe.top.snapshot import Snapshot
    from tickpipe.top.view import render

    report = MemoryReport(
        [
            ProcessMemory("kafka", 10, 1, 200 * MIB),
            ProcessMemory("flink-taskmanager", 11, 1, 350 * MIB),
            ProcessMemory("postgres", 12, 9, 40 * MIB),
        ]
    )
    console = Console(width=160, record=True)
    console.print(render(Snapshot([], [], 0, time.time(), {}, report)))
    assert "590 MB in 11 processes: flink-taskmanager 350 MB, kafka 200 MB, postgres 40 MB" in console.export_text()


@pytest.mark.integration
def test_a_small_stack_starts_postgres_with_its_sizes_and_status_shows_its_pss(stack_home: Path) -> None:
    stack = LocalStack(stack_home, (REPO / ".deps" / "jars").resolve(), sizes=EngineSizes.named("small"))
    exports = stack.up(("postgres",), timeout=120)
    settings = load_settings(database_url=exports["DATABASE_URL"], database_password=exports["DATABASE_PASSWORD"])
    with psycopg.connect(settings.conninfo("owner")) as conn:
        row = conn.execute("SHOW shared_buffers").fetchone()
    assert row == ("64MB",)
    assert json.loads((stack_home / "stack.json").read_text())["components"]["postgres"]["memory"] == "small"

    result = subprocess.run(
        [sys.executable, "-m", "tickpipe.cli", "stack", "status"],
        env={"PATH": "/usr/bin:/bin", "TICKPIPE_HOME": str(stack_home)},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    postgres = next(line for line in result.stdout.splitlines() if line.startswith("postgres"))
    assert " MB  log: " in postgres, result.stdout
    assert "memory (PSS) of " in result.stdout, result.stdout
    assert "memory limits (STACK_MEMORY) small: " in result.stdout, result.stdout
