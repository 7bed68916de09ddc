"""candles_1m and its hourly and daily rollups, on plain PostgreSQL (views) and on TimescaleDB (hierarchical
continuous aggregates): the same relations, each equal to a pandas resample of the minutes."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pandas as pd
import psycopg
import pytest

from tickpipe.config import Settings
from tickpipe.migrator.migrate import migrate

pytestmark = pytest.mark.integration
START = datetime(2026, 11, 28, 22, 0, tzinfo=UTC)  # two days across a month-end and midnight UTC
COLUMNS = ["source", "symbol", "open_time", "open", "high", "low", "close", "volume", "quote_volume", "trades"]


@pytest.fixture(params=["postgres", "timescaledb"])
def database(request: pytest.FixtureRequest) -> Iterator[Settings]:
    name = "fresh_database" if request.param == "postgres" else "fresh_timescaledb"
    settings: Settings = request.getfixturevalue(name)
    migrate(settings)
    yield settings


def minutes(count: int, seed: int) -> list[tuple[object, ...]]:
    """Random 1m candles for two symbols of two sources, with a missing minute now and then."""
    rng = random.Random(seed)
    rows = []
    for source, symbol in [("binance", "BTCUSDT"), ("binance", "ETHUSDT"), ("coingecko", "BTCUSDT")]:
        price = rng.uniform(10, 1000)
        for i in range(count):
            if rng.random() < 0.02:
                continue
            open_ = price
            price *= 1 + rng.gauss(0, 0.002)
            high, low = max(open_, price) * (1 + rng.random() / 1000), min(open_, price) * (1 - rng.random() / 1000)
            volume = None if source == "coingecko" else rng.uniform(0, 50)
            quote = None if volume is None else volume * price
            trades = None if source == "coingecko" else rng.randint(0, 500)
            rows.append((source, symbol, START + timedelta(minutes=i), open_, high, low, price, volume, quote, trades))
    return rows


INSERT = f"INSERT INTO candles_1m ({', '.join(COLUMNS)}) VALUES "  # noqa: S608 - fixed column names


def insert(settings: Settings, rows: list[tuple[object, ...]]) -> None:
    # Multi-row statements of 100 rows: the TimescaleDB engine (WebAssembly) dies on a 5,000-parameter statement.
    placeholders = "(" + ", ".join(["%s"] * len(COLUMNS)) + ")"
    with psycopg.connect(settings.conninfo("owner")) as conn:
        for i in range(0, len(rows), 100):
            batch = rows[i : i + 100]
            conn.execute(INSERT + ", ".join([placeholders] * len(batch)), [v for row in batch for v in row])


def refresh(settings: Settings) -> None:
    """TimescaleDB's engine here runs no background jobs: refresh the aggregates as their policies would."""
    with psycopg.connect(settings.conninfo("owner"), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone():
            conn.execute("CALL refresh_continuous_aggregate('candles_1h', NULL, NULL)")
            conn.execute("CALL refresh_continuous_aggregate('candles_1d', NULL, NULL)")


def rollup(settings: Settings, relation: str) -> pd.DataFrame:
    with psycopg.connect(settings.conninfo("reader")) as conn:
        rows = conn.execute(
            f"SELECT {', '.join(COLUMNS)}, minutes FROM {relation} ORDER BY source, symbol, open_time"  # noqa: S608
        ).fetchall()
    return typed(pd.DataFrame(rows, columns=[*COLUMNS, "minutes"]))


def typed(frame: pd.DataFrame) -> pd.DataFrame:
    """Times as UTC timestamps, every number as float (NULL as NaN), whatever the driver or pandas returned."""
    frame["open_time"] = pd.to_datetime(frame["open_time"], utc=True)
    for column in frame.columns[3:]:
        frame[column] = pd.to_numeric(frame[column]).astype(float)
    return frame


def resampled(rows: list[tuple[object, ...]], rule: str) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=COLUMNS)
    frame["open_time"] = pd.to_datetime(frame["open_time"], utc=True)
    frame = frame.sort_values("open_time")
    frame["bucket"] = frame["open_time"].dt.floor(rule)
    grouped = frame.groupby(["source", "symbol", "bucket"])
    out = grouped.agg(
        open=("open", "first"),
        high=("high", "max"),
        low=("low", "min"),
        close=("close", "last"),
        volume=("volume", lambda s: s.sum(min_count=1)),
        quote_volume=("quote_volume", lambda s: s.sum(min_count=1)),
        trades=("trades", lambda s: s.sum(min_count=1)),
        minutes=("open", "size"),
    ).reset_index()
    return typed(out.rename(columns={"bucket": "open_time"})[[*COLUMNS, "minutes"]])


def assert_rollup(settings: Settings, relation: str, rows: list[tuple[object, ...]], rule: str) -> None:
    actual, expected = rollup(settings, relation), resampled(rows, rule)
    pd.testing.assert_frame_equal(actual, expected, rtol=1e-12)


def test_hourly_and_daily_candles_equal_a_pandas_resample_of_the_minutes(database: Settings) -> None:
    rows = minutes(2 * 24 * 60, seed=4)
    insert(database, rows)
    refresh(database)
    assert_rollup(database, "candles_1h", rows, "1h")
    assert_rollup(database, "candles_1d", rows, "1D")


def test_minutes_written_after_the_last_refresh_are_in_the_rollups_already(database: Settings) -> None:
    rows = minutes(3 * 60, seed=9)
    boundary = START + timedelta(hours=2)  # the last refresh materialized the hours before this one
    early = [row for row in rows if row[2] < boundary]  # type: ignore[operator]
    insert(database, early)
    refresh(database)
    insert(database, [row for row in rows if row not in early])  # real-time aggregates: no refresh needed
    assert_rollup(database, "candles_1h", rows, "1h")
    assert_rollup(database, "candles_1d", rows, "1D")


def test_a_repaired_minute_reaches_the_rollups_after_the_next_refresh(database: Settings) -> None:
    rows = minutes(3 * 60, seed=5)
    repaired = rows.pop(70)  # missed while disconnected...
    insert(database, rows)
    refresh(database)
    insert(database, [repaired])  # ...and fetched from REST later, inside the refresh window
    refresh(database)
    assert_rollup(database, "candles_1h", [*rows, repaired], "1h")


def test_the_writer_may_upsert_candles_and_the_reader_may_not(fresh_database: Settings) -> None:
    # On PostgreSQL only: the TimescaleDB engine here is single-user and enforces no privileges.
    database = fresh_database
    migrate(database)
    row = minutes(1, seed=1)[0]
    upsert = (
        INSERT
        + "("
        + ", ".join(["%s"] * len(COLUMNS))
        + ") ON CONFLICT (source, symbol, open_time) DO UPDATE SET close = EXCLUDED.close"
    )
    with psycopg.connect(database.conninfo("writer")) as conn:
        conn.execute(upsert, row)
        conn.execute(upsert, row)
    with psycopg.connect(database.conninfo("reader")) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(upsert, row)
