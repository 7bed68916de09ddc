"""`tickpipe dlq replay` next to the running MA job (sql engine on the real Flink cluster).

Some ticks never reached the table: an older parser dead-lettered them (their price came as a string with blanks).
The job wrote every other tick, with MAs over the incomplete series. After the fix, replay puts them back; one of
them is among its symbol's last 20 rows, inside the job's in-memory window, so it is deferred until 20 newer ticks
have arrived. At the end — job still running, new ticks written after the replay by the job itself — the table
equals pandas' MAs over the complete series.
"""

from __future__ import annotations

import pytest

from tests.dlq.test_dlq_cli import BUG, buggy_wire, produce_dead_letters, tickpipe_dlq
from tests.helpers import assert_same_rows, expected_rows, produce, random_walk, table_rows, wait_for
from tests.ma_job.test_ma_job import JobUnderTest, job
from tickpipe.schema import Tick, dead_letter

pytestmark = [pytest.mark.integration, pytest.mark.slow]

__all__ = ["job"]  # the MA job fixture, used by name


def keyed(ticks: list[Tick]) -> list[tuple[str, bytes]]:
    return [(tick.symbol, tick.to_json()) for tick in ticks]


def test_replay_while_the_job_runs_ends_with_the_table_of_the_complete_series(job: JobUnderTest) -> None:
    series = random_walk(["BTCUSDT", "ETHUSDT"], 90)
    first, later = series[:120], series[120:]  # 60 ticks per symbol now, 30 more after the replay
    old = [first[20], first[21], first[60]]  # BTCUSDT #10 and #30, ETHUSDT #10: far behind the newest
    recent = first[111]  # ETHUSDT #55: 4 newer rows, inside the job's window
    rejected = [*old, recent]
    arrived = [tick for tick in first if tick not in rejected]
    produce(job.settings, keyed(arrived))
    job.submit_detached()
    job.wait_for_rows(len(arrived), f"{len(arrived)} rows written by the job")
    produce_dead_letters(
        job.settings, [dead_letter(buggy_wire(tick), f"{BUG}: ' {tick.price!r} '", "ma-job") for tick in rejected]
    )
    env = job.env

    output = tickpipe_dlq(env, "replay", "--reason", BUG)
    assert "3 rows inserted" in output and "deferred ETHUSDT" in output, output
    assert_same_rows(table_rows(job.settings), expected_rows([tick for tick in first if tick != recent]))

    produce(job.settings, keyed(later))  # the job goes on from its window, which the replay did not touch
    job.wait_for_rows(len(series) - 1, "the job's rows for the newer ticks")
    output = tickpipe_dlq(env, "replay", "--reason", BUG)
    assert "1 rows inserted, 3 already in the table" in output, output
    wait_for(lambda: len(table_rows(job.settings)) == len(series), 30, "every tick in the table")
    assert_same_rows(table_rows(job.settings), expected_rows(series))
