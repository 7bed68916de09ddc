"""PostgreSQL goes away while the MA job writes: the sink retries, the job restarts from its checkpoint for as long
as the outage lasts, and when the database is back every tick has exactly one row with exact MAs."""

from __future__ import annotations

import pytest

from tests.conftest import TestStack
from tests.helpers import assert_same_rows, expected_rows, produce, random_walk, row_count, table_rows, wait_for
from tests.ma_job.test_ma_job import JobUnderTest, keyed
from tests.ma_job.test_ma_job import job as job  # noqa: PLC0414 - the MA job tests' fixture, used here too
from tickpipe.ma_job.tables import job_name
from tickpipe.top.snapshot import probe_database, probe_flink

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def restarts(job: JobUnderTest) -> int:
    """How often Flink has restarted the job since it was submitted (its `numRestarts` metric)."""
    running = job.rest.jobs()
    ids = [info.job_id for info in running if info.name == job_name(job.settings) and info.state != "CANCELED"]
    return job.rest.restarts(ids[0]) if ids else 0


def test_a_database_outage_loses_and_doubles_nothing(job: JobUnderTest, flink: TestStack) -> None:
    ticks = random_walk(["BTCUSDT", "ETHUSDT"], 60, seed=3)
    before, during = ticks[:40], ticks[40:]
    produce(job.settings, keyed(before))
    job.submit_detached()
    job.wait_for_rows(len(before), "the rows written before the outage")

    flink.local.kill("postgres")  # a crash, not a clean stop: WAL recovery on the way back
    try:
        produce(job.settings, keyed(during))
        # The sink's retries run out and Flink restarts the job from its checkpoint, again and again; what a user
        # sees meanwhile: the database probe down, the job's restarts counted.
        wait_for(lambda: restarts(job) >= 1, 180, "the job to restart while the database is down")
        assert not probe_database(job.settings).ok
        assert "restart" in probe_flink(job.settings.flink_rest_url).detail.lower()
    finally:
        flink.local.up(("kafka", "postgres", "flink"))  # running engines are kept; postgres on its old port

    wait_for(lambda: row_count(job.settings) >= len(ticks), 240, f"{len(ticks)} rows after the database is back")
    assert_same_rows(table_rows(job.settings), expected_rows(ticks))
