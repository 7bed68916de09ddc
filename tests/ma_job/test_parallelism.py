"""The MA job at parallelism 4 on a Flink cluster of two TaskManagers (2 slots each, STACK_FLINK_TASKMANAGERS=2):
exactly the rows of parallelism 1, also when one TaskManager is killed with -9 mid-stream and comes back (the job
restarts from its checkpoint). Each symbol's ticks stay in order (Kafka key = symbol, then a shuffle by symbol), and
windows and de-duplication stay per symbol. A private cluster: the session's shared one runs other tests' jobs."""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, TestStack
from tests.helpers import assert_same_rows, expected_rows, produce, random_walk, row_count, table_rows, wait_for
from tests.ma_job.test_ma_job import JobUnderTest, job_under_test, keyed
from tickpipe.config import Settings
from tickpipe.stack.manager import LocalStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def two_taskmanagers(stack_home: Path) -> Iterator[LocalStack]:
    cluster = LocalStack(stack_home, (REPO / ".deps" / "jars").resolve(), flink_taskmanagers=2)
    cluster.up(("flink",), timeout=240)
    yield cluster  # stack_home stops it


@pytest.fixture
def job(
    kafka: TestStack,
    fresh_database: Settings,
    unique_topics: dict[str, str],
    two_taskmanagers: LocalStack,
) -> Iterator[JobUnderTest]:
    under_test = job_under_test(
        kafka,
        database_url=fresh_database.database_url,
        flink_rest_url=f"http://127.0.0.1:{two_taskmanagers.ports('flink')['rest']}",
        kafka_group_id=f"test-parallel-{uuid.uuid4().hex[:8]}",
        job_parallelism=4,
        **unique_topics,
    )
    try:
        yield under_test
    finally:
        under_test.cancel_all()


def overview(job: JobUnderTest) -> dict[str, int]:
    with urllib.request.urlopen(f"{job.settings.flink_rest_url}/overview", timeout=10) as response:  # noqa: S310
        return dict(json.load(response))


def completed_checkpoints(job: JobUnderTest, job_id: str) -> int:
    url = f"{job.settings.flink_rest_url}/jobs/{job_id}/checkpoints"
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310
        return int(json.load(response)["counts"]["completed"])


def test_parallelism_four_over_two_taskmanagers_survives_losing_one_with_the_rows_of_parallelism_one(
    job: JobUnderTest, two_taskmanagers: LocalStack
) -> None:
    assert overview(job)["taskmanagers"] == 2 and overview(job)["slots-total"] == 4
    symbols = [f"SYM{i}USDT" for i in range(12)]  # more symbols than subtasks and than partitions
    ticks = random_walk(symbols, 60, seed=21)
    first, second = ticks[:360], ticks[360:]
    resent = [ticks[100], ticks[5]]  # a duplicate and an older tick: refused on any subtask
    produce(job.settings, keyed(first) + keyed(resent))
    job_id = job.submit_detached()
    try:
        wait_for(lambda: row_count(job.settings) >= 200, 300, "rows at parallelism 4")
        wait_for(lambda: completed_checkpoints(job, job_id) >= 1, 60, "a completed checkpoint")
        # Lose a node mid-stream: the job fails over, and runs again once the TaskManager is back.
        two_taskmanagers.kill_process("flink", "flink-taskmanager-2")
        produce(job.settings, keyed(second))
        wait_for(lambda: overview(job)["taskmanagers"] == 1, 60, "the killed TaskManager gone from the cluster")
        two_taskmanagers.restart_process("flink", "flink-taskmanager-2")
        wait_for(lambda: row_count(job.settings) >= len(ticks), 300, f"{len(ticks)} rows after the failover")
    except AssertionError as error:
        raise AssertionError(f"{error}; {job.diagnose()}; cluster {overview(job)}") from None
    assert_same_rows(table_rows(job.settings), expected_rows(ticks))
    with urllib.request.urlopen(f"{job.settings.flink_rest_url}/jobs/{job_id}", timeout=10) as response:  # noqa: S310
        details = json.load(response)
    assert max(vertex["parallelism"] for vertex in details["vertices"]) == 4, "the job did not run at parallelism 4"
    # The metric comes from the REST server's background fetch: wait for it rather than read it once.
    wait_for(lambda: job.rest.restarts(job_id) >= 1, 30, "a restart counted: the kill did not hit the job")
