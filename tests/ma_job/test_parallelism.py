"""JOB_PARALLELISM > 1 gives exactly the rows of parallelism 1: each symbol's ticks stay in order (Kafka key =
symbol, one reader per partition, then a shuffle by symbol), and windows and de-duplication stay per symbol."""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import TestStack
from tests.helpers import assert_same_rows, expected_rows, produce, random_walk, table_rows
from tests.ma_job.test_ma_job import JobUnderTest, keyed
from tickpipe.config import Settings
from tickpipe.kafka import ensure_topics
from tickpipe.ma_job.flink_rest import FlinkRest
from tickpipe.migrator.migrate import migrate

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(params=["sql"])  # the default engine; the keyed one shares its keying and is ~25x slower
def parallel_job(
    request: pytest.FixtureRequest, flink: TestStack, fresh_database: Settings, unique_topics: dict[str, str]
) -> Iterator[JobUnderTest]:
    engine, group = request.param, f"test-p4-{uuid.uuid4().hex[:8]}"
    settings = flink.settings(
        database_url=fresh_database.database_url, kafka_group_id=group, ma_engine=engine, **unique_topics
    )
    ensure_topics(settings)
    migrate(settings)
    env = flink.env(
        DATABASE_URL=settings.database_url,
        KAFKA_TOPIC=settings.kafka_topic,
        KAFKA_DLQ_TOPIC=settings.kafka_dlq_topic,
        KAFKA_GROUP_ID=group,
        MA_ENGINE=engine,
        JOB_PARALLELISM="4",  # the session cluster's one TaskManager has 4 slots
        CHECKPOINT_INTERVAL_SECONDS="1",
    )
    under_test = JobUnderTest(settings, env, FlinkRest(settings.flink_rest_url))
    try:
        yield under_test
    finally:
        under_test.cancel_all()


def test_parallelism_four_writes_the_rows_of_parallelism_one(parallel_job: JobUnderTest) -> None:
    symbols = [f"SYM{i}USDT" for i in range(12)]  # more symbols than subtasks and than partitions
    ticks = random_walk(symbols, 40, seed=21)
    resent = [ticks[100], ticks[5]]  # a duplicate and an older tick: refused on any subtask
    produce(parallel_job.settings, keyed(ticks[:200]) + keyed(resent) + keyed(ticks[200:]))
    job_id = parallel_job.submit_detached()
    parallel_job.wait_for_rows(len(ticks), f"{len(ticks)} rows at parallelism 4")
    assert_same_rows(table_rows(parallel_job.settings), expected_rows(ticks))
    with urllib.request.urlopen(f"{parallel_job.settings.flink_rest_url}/jobs/{job_id}", timeout=10) as response:  # noqa: S310
        vertices = json.load(response)["vertices"]
    assert max(vertex["parallelism"] for vertex in vertices) == 4, "the job did not run at parallelism 4"
