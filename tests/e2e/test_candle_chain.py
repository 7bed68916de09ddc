"""The candle chain end to end: simulated exchange → ingestor (klines, gap repair) → Kafka `candles` → candle job
on the Flink session cluster → `candles_1m`. The exchange's clock runs 60 times as fast, the connection is cut and
refused for five exchange minutes; afterwards `candles_1m` has every minute, each equal to the exchange's REST candle,
and the indicators over the whole period equal TA-Lib on the complete series (never computed over the hole)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import talib

from tests.helpers import wait_for
from tests.ingestor.test_ingestor import Running
from tests.ingestor.test_klines import MINUTE, SYMBOLS, exchange_candles, first_minute, streamed
from tests.ingestor.test_klines import start as start  # noqa: PLC0414 - the kline tests' fixture, used here too
from tests.ma_job.test_candle_job import CandleJobUnderTest
from tests.ma_job.test_candle_job import candle_job as candle_job  # noqa: PLC0414 - the candle job tests' fixture

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def incomplete(job: CandleJobUnderTest, first_ms: int, through_ms: int) -> list[str]:
    """The minutes from `first_ms` to `through_ms` that candles_1m lacks, or has without its RSI (computed from the
    fifteenth minute on), per symbol: empty once the table is complete."""
    rows = job.candles()
    lacking = []
    for symbol in SYMBOLS:
        for minute in range(first_ms, through_ms + MINUTE, MINUTE):
            row = rows.get(("binance", symbol, minute))
            if row is None:
                lacking.append(f"{symbol} {minute}: no row")
            elif minute - first_ms >= 14 * MINUTE and row["rsi_14"] is None:
                lacking.append(f"{symbol} {minute}: no rsi_14")
    return lacking


def test_a_cut_connection_leaves_no_hole_in_candles_1m_and_indicators_equal_talib(
    start: Callable[..., Running], candle_job: CandleJobUnderTest
) -> None:
    candle_job.submit_detached()
    run = start(env={"KAFKA_CANDLES_TOPIC": candle_job.settings.kafka_candles_topic})
    wait_for(lambda: streamed(run) >= 20 * len(SYMBOLS), 120, "twenty streamed candles per symbol")
    run.sim.options.refuse_status = 503  # the exchange unreachable: no reconnection for a while
    run.sim_thread.call(run.sim.drop_connections())
    down_at = run.sim.now_ms()
    wait_for(lambda: run.sim.now_ms() - down_at >= 5 * MINUTE, 30, "five exchange minutes of outage")
    run.sim.options.refuse_status = None
    back = streamed(run)
    wait_for(lambda: streamed(run) >= back + 20 * len(SYMBOLS), 120, "twenty more streamed candles per symbol")
    run.stop_ingestor()
    repaired = {e["symbol"] for e in run.events() if e.get("event") == "candles_repaired" and e["minutes"] >= 4}
    assert repaired == set(SYMBOLS), "each symbol's outage was repaired from REST (streaming cannot fill it)"

    first = first_minute(run)

    def newest_of_each() -> int | None:
        minutes = [[m for (_, s, m) in candle_job.candles() if s == symbol] for symbol in SYMBOLS]
        newest = min(max(found) for found in minutes) if all(minutes) else 0
        return newest if newest >= down_at + 8 * MINUTE else None  # well past the outage

    last = wait_for(newest_of_each, 180, "every symbol's candles after the outage in candles_1m")
    try:
        wait_for(lambda: not incomplete(candle_job, first, last), 180, "every minute in candles_1m with its indicators")
    except AssertionError as error:
        lacking = incomplete(candle_job, first, last)
        raise AssertionError(
            f"{error}: {len(lacking)} lacking, e.g. {lacking[:6]} (first {first}, last {last})"
        ) from None
    rows = candle_job.candles()
    for symbol in SYMBOLS:
        exchange = exchange_candles(run, symbol, first, last)
        minutes = range(first, last + MINUTE, MINUTE)
        assert set(exchange) == set(minutes)
        for minute in minutes:
            mine = rows["binance", symbol, minute]
            for field in ("open", "high", "low", "close", "volume", "quote_volume", "trades"):
                assert mine[field] == pytest.approx(exchange[minute][field], rel=1e-12), (symbol, minute, field)
        closes = np.array([exchange[m]["close"] for m in minutes])
        want = {"rsi_14": talib.RSI(closes, 14), "ema_12": talib.EMA(closes, 12), "macd": talib.MACD(closes)[0]}
        want["bb_upper"] = talib.BBANDS(closes, 20)[0]
        for name, values in want.items():
            for minute, value in zip(minutes, values, strict=True):
                got = rows["binance", symbol, minute][name]
                if np.isnan(value):
                    assert got is None, (symbol, minute, name)
                else:
                    assert got == pytest.approx(value, rel=1e-9, abs=1e-12), (symbol, minute, name)
