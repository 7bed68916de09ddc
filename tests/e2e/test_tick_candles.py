"""Candles of a source without klines, end to end: `tickpipe run --source coingecko` (the CoinGecko simulator → its
ingestor → Kafka → the MA job and the candle job on the session Flink cluster → PostgreSQL). The candle job's 1m
candles of each series equal a plain-Python resample of the ticks the MA job stored in price_ticks, and those rows are
CoinGecko's own series with the MAs of their own prices (the CoinGecko case of test_pipeline.py's
test_another_source_runs_offline_into_its_own_series, checked on this run rather than on a second one)."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest

from tests.conftest import TestStack, traversable_tmpdir
from tests.e2e.test_pipeline import diagnose, interrupt, shortest_series, start_run
from tests.helpers import assert_same_rows, expected_rows, table_rows, wait_for
from tickpipe.config import Settings
from tickpipe.schema import Tick

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
MINUTE_MS = 60_000
SYMBOLS = ("bitcoin/usd", "ethereum/usd")


def candles(settings: Settings) -> dict[tuple[str, int], dict[str, Any]]:
    """The CoinGecko rows of candles_1m: (symbol, open time ms) → OHLC, volumes, trades."""
    try:
        with psycopg.connect(settings.conninfo("owner")) as conn:
            rows = conn.execute(
                "SELECT symbol, (extract(epoch FROM open_time) * 1000)::bigint, open, high, low, close, volume, "
                "quote_volume, trades FROM candles_1m WHERE source = 'coingecko'"
            ).fetchall()
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn):
        return {}  # the run is still applying the schema
    columns = ("open", "high", "low", "close", "volume", "quote_volume", "trades")
    return {(r[0], int(r[1])): dict(zip(columns, r[2:], strict=True)) for r in rows}


def resample(settings: Settings) -> dict[tuple[str, int], dict[str, Any]]:
    """The definition, in plain Python, over the ticks in price_ticks: per series and minute, the first and last
    price by time, the extremes, the count; no volume (the tick's is CoinGecko's rolling 24 h total)."""
    groups: dict[tuple[str, int], list[float]] = {}
    for row in table_rows(settings).itertuples():  # ordered by source, symbol, time
        if row.source == "coingecko":
            groups.setdefault((row.symbol, row.ms - row.ms % MINUTE_MS), []).append(row.price)
    return {
        key: {
            "open": prices[0],
            "high": max(prices),
            "low": min(prices),
            "close": prices[-1],
            "volume": None,
            "quote_volume": None,
            "trades": len(prices),
        }
        for key, prices in groups.items()
    }


def test_coingecko_ticks_become_1m_candles_equal_to_a_resample_of_price_ticks(
    flink: TestStack, fresh_database: Settings, unique_topics: dict[str, str]
) -> None:
    home = traversable_tmpdir("tickpipe-e2e-")
    env = flink.env(
        TICKPIPE_HOME=str(home),
        DATABASE_URL=fresh_database.database_url,
        **{key.upper(): value for key, value in unique_topics.items()},
        KAFKA_GROUP_ID=f"e2e-{uuid.uuid4().hex[:8]}",
        CANDLE_GROUP_ID=f"e2e-candles-{uuid.uuid4().hex[:8]}",
        # The simulator stamps its quotes with the wall clock: a minute closes 5 s after its end, not 60, and Yahoo's
        # branch (no ticks in this run) is idle after 5 s.
        CANDLES_FROM_TICKS_OUT_OF_ORDERNESS_SECONDS="5",
        CANDLES_FROM_TICKS_IDLE_SECONDS="5",
    )
    env.pop("FLINK_CONF_DIR", None)
    run = start_run(env, "--source", "coingecko", "--rate", "4", symbols=",".join(SYMBOLS))

    def three_minutes_each() -> bool:
        found = candles(fresh_database)
        return (
            all(sum(1 for s, _ in found if s == symbol) >= 3 for symbol in SYMBOLS)
            and shortest_series(fresh_database, "coingecko", len(SYMBOLS)) >= 21  # MA(20) in each series
        ) or run.poll() is not None

    try:
        try:
            wait_for(three_minutes_each, 300, "three closed minutes of each series in candles_1m")
        except AssertionError as error:
            raise AssertionError(f"{error}\n{diagnose(home, fresh_database)}") from None
        assert run.poll() is None, run.communicate()[0][-3000:]
    finally:
        interrupt(run)
    got, want = candles(fresh_database), resample(fresh_database)
    for symbol in SYMBOLS:
        minutes = sorted(m for s, m in want if s == symbol)
        built = sorted(m for s, m in got if s == symbol)
        # The closed minutes are the series' first ones, every one of them (the last may still be open).
        assert built == minutes[: len(built)], (symbol, built, minutes)
        assert len(built) >= 3
    assert got == {key: want[key] for key in got}

    rows = table_rows(fresh_database)
    assert set(rows["source"]) == {"coingecko"}
    assert set(rows["symbol"]) == set(SYMBOLS)
    # Every row's MAs are those of its own series' prices as stored: nothing of another series in its windows.
    ticks = [Tick(r.symbol, r.ms, r.price, r.volume, r.source) for r in rows.itertuples()]
    assert_same_rows(rows, expected_rows(ticks))
