"""JOB_PARALLELISM > 1 gives exactly the rows of parallelism 1: each symbol's ticks stay in order (Kafka key =
symbol, one reader per partition, then a shuffle by symbol), and windows and de-duplication stay per symbol."""

from __future__ import annotations

import json
import urllib.request

import pytest

from tests.helpers import assert_same_rows, expected_rows, produce, random_walk, row_count, table_rows, wait_for
from tests.ma_job.test_ma_job import JobUnderTest, keyed
from tests.ma_job.test_ma_job import job as job  # noqa: PLC0414 - the MA job tests' fixture, used here too

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def free_slots(job: JobUnderTest) -> int:
    with urllib.request.urlopen(f"{job.settings.flink_rest_url}/overview", timeout=10) as response:  # noqa: S310
        return int(json.load(response)["slots-available"])


# The default engine (the keyed one shares its keying and is ~25x slower). Two of the session TaskManager's four slots:
# in the full suite on a fresh machine a job at parallelism 4 once waited on NoResourceAvailableException for over two
# minutes with all four slots reported free (not reproduced alone or in the job tests' order; see the closing note).
@pytest.mark.parametrize("job", [{"MA_ENGINE": "sql", "JOB_PARALLELISM": "2"}], indirect=True)
def test_parallelism_two_writes_the_rows_of_parallelism_one(job: JobUnderTest) -> None:
    symbols = [f"SYM{i}USDT" for i in range(12)]  # more symbols than subtasks and than partitions
    ticks = random_walk(symbols, 40, seed=21)
    resent = [ticks[100], ticks[5]]  # a duplicate and an older tick: refused on any subtask
    produce(job.settings, keyed(ticks[:200]) + keyed(resent) + keyed(ticks[200:]))
    # An earlier test's cancelled job may still be releasing its slots.
    wait_for(lambda: free_slots(job) >= 2, 120, f"2 free task slots (jobs: {job.rest.jobs()})")
    job_id = job.submit_detached()
    try:
        wait_for(lambda: row_count(job.settings) >= len(ticks), 300, f"{len(ticks)} rows at parallelism 2")
    except AssertionError as error:
        raise AssertionError(f"{error}; {job.diagnose()}; free slots now {free_slots(job)}") from None
    assert_same_rows(table_rows(job.settings), expected_rows(ticks))
    with urllib.request.urlopen(f"{job.settings.flink_rest_url}/jobs/{job_id}", timeout=10) as response:  # noqa: S310
        vertices = json.load(response)["vertices"]
    assert max(vertex["parallelism"] for vertex in vertices) == 2, "the job did not run at parallelism 2"
