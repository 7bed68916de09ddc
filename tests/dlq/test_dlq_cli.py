"""`tickpipe dlq` against a real broker and a real PostgreSQL: stats, tail, and replay after a parser fix.

The replay scenario: some ticks were dead-lettered by a parser bug (their price came as a string with blanks, which
an older parser refused), so the table holds what the job computes without them: rows for the other ticks, with
MAs over the incomplete series. The bug is fixed (today's parser reads them); `tickpipe dlq replay` must leave the
table equal to pandas' MAs over the complete series, and a second replay must change nothing.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
from collections.abc import Iterable

import pandas as pd
import psycopg
import pytest
from confluent_kafka import Producer

from tests.conftest import TestStack
from tests.helpers import assert_same_rows, expected_rows, random_walk, table_rows
from tickpipe.config import Settings
from tickpipe.kafka import ensure_topics, producer_config
from tickpipe.migrator.migrate import migrate
from tickpipe.schema import Tick, dead_letter

pytestmark = pytest.mark.integration

BUG = "price is not a number"


@pytest.fixture
def dlq_stack(
    kafka: TestStack, fresh_database: Settings, unique_topics: dict[str, str]
) -> tuple[Settings, dict[str, str]]:
    settings = kafka.settings(database_url=fresh_database.database_url, **unique_topics)
    ensure_topics(settings)
    migrate(settings)
    env = kafka.env(
        DATABASE_URL=settings.database_url,
        KAFKA_TOPIC=settings.kafka_topic,
        KAFKA_DLQ_TOPIC=settings.kafka_dlq_topic,
    )
    return settings, env


def tickpipe_dlq(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "tickpipe.cli", "dlq", *args],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def produce_dead_letters(settings: Settings, records: Iterable[bytes]) -> None:
    producer = Producer(producer_config(settings))
    for record in records:
        producer.produce(settings.kafka_dlq_topic, value=record)
    assert producer.flush(30) == 0


def buggy_wire(tick: Tick) -> bytes:
    """The tick as a record the buggy parser refused: its price as a string with blanks around it."""
    record = json.loads(tick.to_json())
    record["price"] = f" {tick.price!r} "
    return json.dumps(record).encode()


def store(settings: Settings, frame: pd.DataFrame) -> None:
    """Rows as the job writes them (pandas' MAs are what the job writes: tests/ma_job holds it to that)."""

    def value(x: float) -> float | None:
        return None if math.isnan(x) else float(x)

    with psycopg.connect(settings.conninfo("owner")) as conn:
        conn.cursor().executemany(
            "INSERT INTO price_ticks (time, source, symbol, price, volume, ma_short, ma_long) "
            "VALUES (to_timestamp(%s / 1000.0), %s, %s, %s, %s, %s, %s)",
            [
                (int(row.ms), row.source, row.symbol, row.price, row.volume, value(row.ma_short), value(row.ma_long))
                for row in frame.itertuples()
            ],
        )


def test_stats_and_tail_read_the_dead_letter_topic(dlq_stack: tuple[Settings, dict[str, str]]) -> None:
    settings, env = dlq_stack
    produce_dead_letters(
        settings,
        [dead_letter(f"junk {i}", "not JSON: Expecting value", "ingestor", source="binance") for i in range(7)]
        + [dead_letter('{"price": -1}', "price must be positive, got -1", "ma-job") for _ in range(3)]
        + [dead_letter("x" * 100_000, "not JSON: Unexpected character", "ma-job")],
    )
    stats = json.loads(tickpipe_dlq(env, "stats", "--json"))
    assert {(row["stage"], row["reason"]): row["count"] for row in stats} == {
        ("ingestor", "not JSON"): 7,
        ("ma-job", "price must be positive"): 3,
        ("ma-job", "not JSON"): 1,
    }
    table = tickpipe_dlq(env, "stats")
    assert "not JSON" in table and "total" in table and "11" in table
    assert tickpipe_dlq(env, "stats", "--since", "2099-01-01T00:00Z").strip().endswith("no dead letters")

    lines = tickpipe_dlq(env, "tail", "-n", "4").splitlines()
    assert len(lines) == 4
    assert all("ma-job" in line for line in lines)
    assert "[truncated]" in lines[-1] and "100,000 chars" not in lines[-1]  # cut to 65,536 when dead-lettered


def test_replay_after_a_parser_fix_leaves_the_table_as_if_the_ticks_had_arrived_on_time(
    dlq_stack: tuple[Settings, dict[str, str]],
) -> None:
    settings, env = dlq_stack
    ticks = random_walk(["BTCUSDT", "ETHUSDT", "SOLUSDT"], 60)
    # Dead-lettered by the bug: a lone tick, two in a row (one window holds both), the very first of a symbol.
    rejected = [ticks[30], ticks[91], ticks[94], ticks[2]]
    store(settings, expected_rows([tick for tick in ticks if tick not in rejected]))
    produce_dead_letters(
        settings,
        [dead_letter(buggy_wire(tick), f"{BUG}: ' {tick.price!r} '", "ma-job") for tick in rejected]
        + [dead_letter("not json", "not JSON: Expecting value", "ma-job")]
        + [dead_letter(ticks[5].to_json(), "duplicate tick: event time ... is not after ...", "ma-job")],
    )

    dry = tickpipe_dlq(env, "replay", "--reason", BUG, "--dry-run")
    assert "would write 4 ticks" in dry
    assert len(table_rows(settings)) == len(ticks) - 4

    output = tickpipe_dlq(env, "replay", "--reason", BUG)
    assert "4 rows inserted" in output, output
    assert_same_rows(table_rows(settings), expected_rows(ticks))

    before = table_rows(settings)
    again = tickpipe_dlq(env, "replay", "--reason", BUG)
    assert "0 rows inserted, 4 already in the table, 0 rows with recomputed MAs" in again, again
    pd.testing.assert_frame_equal(table_rows(settings), before)  # not a bit changed


def test_a_tick_inside_the_jobs_window_is_deferred_until_allowed(dlq_stack: tuple[Settings, dict[str, str]]) -> None:
    settings, env = dlq_stack
    ticks = random_walk(["BTCUSDT"], 40)
    recent = ticks[-5]  # 4 newer rows: the running job's last 20 prices do not include it
    store(settings, expected_rows([tick for tick in ticks if tick != recent]))
    produce_dead_letters(settings, [dead_letter(buggy_wire(recent), f"{BUG}: 'x'", "ma-job")])

    output = tickpipe_dlq(env, "replay", "--reason", BUG)
    assert "deferred BTCUSDT" in output and "only 4 newer rows" in output, output
    assert "0 rows inserted" in output
    assert len(table_rows(settings)) == len(ticks) - 1

    output = tickpipe_dlq(env, "replay", "--reason", BUG, "--allow-recent")
    assert "1 rows inserted" in output, output
    assert_same_rows(table_rows(settings), expected_rows(ticks))


def test_tail_follow_prints_new_dead_letters_until_ctrl_c(dlq_stack: tuple[Settings, dict[str, str]]) -> None:
    settings, env = dlq_stack
    produce_dead_letters(settings, [dead_letter("old", "not JSON: old", "ingestor")])
    process = subprocess.Popen(
        [sys.executable, "-m", "tickpipe.cli", "dlq", "tail", "-n", "0", "--follow"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None and process.stdout is not None
        assert "following" in process.stderr.readline()  # blocks until it follows (the test's timeout bounds it)
        produce_dead_letters(settings, [dead_letter("new one", "price is not a number: 'new'", "ma-job")])
        line = process.stdout.readline()
        assert "ma-job" in line and "price is not a number" in line and "raw: new one" in line
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
        assert "old" not in process.stdout.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_replay_recomputes_a_ticks_own_sources_series_and_never_the_same_symbol_of_another(
    dlq_stack: tuple[Settings, dict[str, str]],
) -> None:
    settings, env = dlq_stack
    # The same symbol at the same times from Binance and Yahoo, at other price levels (BTCUSDT is a Yahoo symbol too).
    binance = random_walk(["BTCUSDT"], 60)
    yahoo = [
        Tick(t.symbol, t.event_time_ms, t.price * 3, t.volume + 1, "yahoo")
        for t in random_walk(["BTCUSDT"], 60, seed=11)
    ]
    ticks = binance + yahoo
    # Dead-lettered: Yahoo's 11th and 31st, Binance's 21st; the Yahoo tick at Binance's 21st time arrived.
    rejected = [yahoo[10], yahoo[30], binance[20]]
    store(settings, expected_rows([tick for tick in ticks if tick not in rejected]))
    produce_dead_letters(
        settings, [dead_letter(buggy_wire(tick), f"{BUG}: ' {tick.price!r} '", "ma-job") for tick in rejected]
    )

    output = tickpipe_dlq(env, "replay", "--reason", BUG)
    assert "3 rows inserted" in output and "symbols: BTCUSDT, yahoo:BTCUSDT" in output, output
    actual, expected = table_rows(settings), expected_rows(ticks)
    assert actual.groupby("source").size().to_dict() == {"binance": 60, "yahoo": 60}
    pd.testing.assert_frame_equal(actual, expected, check_dtype=False, rtol=1e-9, atol=0)
    again = tickpipe_dlq(env, "replay", "--reason", BUG)
    assert "0 rows inserted, 3 already in the table, 0 rows with recomputed MAs" in again, again
    pd.testing.assert_frame_equal(table_rows(settings), actual)
