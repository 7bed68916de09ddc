"""Candles arriving late, repaired, corrected or repeated: the written indicators always end equal to TA-Lib on the
complete series, and no row is ever written with indicators computed over a hole."""

from __future__ import annotations

import dataclasses
import math
import pickle
import random

import numpy as np
import pytest

from tests.ma_job.test_candle_indicators import ATOL, FIELDS, RTOL, reference
from tickpipe.ma_job.candle_series import MINUTE_MS, Candle, CandleRow, CandleSeries

pytestmark = pytest.mark.unit
T0 = 1_764_000_000_000 - 1_764_000_000_000 % MINUTE_MS


def candles(count: int, seed: int = 1) -> list[Candle]:
    rng = random.Random(seed)
    price, out = 100.0, []
    for i in range(count):
        open_ = price
        price *= math.exp(rng.gauss(0, 0.01))
        out.append(Candle(T0 + i * MINUTE_MS, open_, max(open_, price), min(open_, price), price, 1.0, price, 3))
    return out


def with_close(candle: Candle, close: float) -> Candle:
    return dataclasses.replace(candle, close=close)


class Table:
    """candles_1m as the sink leaves it: upserts by open time; checks every write against the final truth."""

    def __init__(self, truth: list[Candle]) -> None:
        closes = np.array([c.close for c in truth])
        self.expected = {c.open_time_ms: {n: v[i] for n, v in reference(closes).items()} for i, c in enumerate(truth)}
        self.rows: dict[int, CandleRow] = {}
        self.writes = 0

    def write(self, rows: list[CandleRow], *, check: bool = True) -> None:
        for row in rows:
            self.writes += 1
            if check and row.indicators is not None:  # what is written with indicators is already the final value
                self.assert_final(row)
            self.rows[row.candle.open_time_ms] = row

    def assert_final(self, row: CandleRow) -> None:
        assert row.indicators is not None
        want = self.expected[row.candle.open_time_ms]
        for name in FIELDS:
            got = getattr(row.indicators, name)
            if math.isnan(want[name]):
                assert got is None, (row.candle.open_time_ms, name)
            else:
                assert got == pytest.approx(want[name], rel=RTOL, abs=ATOL), (row.candle.open_time_ms, name)

    def assert_complete(self, truth: list[Candle]) -> None:
        assert sorted(self.rows) == [c.open_time_ms for c in truth]
        for candle in truth:
            row = self.rows[candle.open_time_ms]
            assert row.candle == candle
            self.assert_final(row)


def test_in_order_candles_get_talib_s_indicators_one_write_each() -> None:
    truth = candles(200)
    table, series = Table(truth), CandleSeries()
    for candle in truth:
        table.write(series.add(candle))
    table.assert_complete(truth)
    assert table.writes == len(truth)


def test_a_hole_filled_later_holds_the_indicators_back_then_computes_them_in_order() -> None:
    truth = candles(200, seed=2)
    missing = truth[100:105]
    table, series = Table(truth), CandleSeries()
    for candle in truth[:100] + truth[105:150]:
        table.write(series.add(candle))
    held = [row for row in table.rows.values() if row.candle.open_time_ms > truth[99].open_time_ms]
    assert held
    assert all(row.indicators is None for row in held), "indicators computed over a hole"
    for candle in missing:  # gap repair, from REST, after later live candles
        table.write(series.add(candle))
    for candle in truth[150:]:
        table.write(series.add(candle))
    table.assert_complete(truth)


def test_a_corrected_candle_rewrites_the_indicators_from_its_minute_on() -> None:
    original = candles(300, seed=3)
    corrected = with_close(original[250], original[250].close * 1.05)
    truth = [*original[:250], corrected, *original[251:]]
    table, series = Table(truth), CandleSeries()
    for candle in original:
        series.add(candle)
    rows = series.add(corrected)
    assert [row.candle.open_time_ms for row in rows] == [c.open_time_ms for c in truth[250:]]
    for candle in truth:
        table.rows[candle.open_time_ms] = CandleRow(candle, None)
    table.write(rows)
    for row in rows:
        table.assert_final(row)


def test_the_same_candle_again_writes_nothing() -> None:
    truth = candles(80, seed=4)
    series = CandleSeries()
    for candle in truth:
        series.add(candle)
    assert series.add(truth[10]) == []
    assert series.add(truth[-1]) == []


def test_a_candle_before_the_first_one_is_prepended_and_a_hole_after_it_is_held() -> None:
    truth = candles(60, seed=5)
    table, series = Table(truth), CandleSeries()
    for candle in truth[3:]:  # the series seems to start here, until its real first minutes arrive
        table.write(series.add(candle), check=False)
    table.write(series.add(truth[0]))  # two minutes missing between it and the rest: those are held again
    assert all(row.indicators is None for t, row in table.rows.items() if t > truth[0].open_time_ms)
    table.write(series.add(truth[1]))
    table.write(series.add(truth[2]))
    table.assert_complete(truth)


def test_a_hole_nobody_fills_is_given_up_after_the_hold_time() -> None:
    series = CandleSeries(max_hold_ms=30 * MINUTE_MS)
    full = candles(120, seed=6)
    truth = full[:40] + full[41:]  # minute 40 never arrives
    rows = [row for candle in truth for row in series.add(candle)]
    assert series.holes_given_up == 1
    final = {row.candle.open_time_ms: row for row in rows}
    closes = np.array([c.close for c in truth])
    want = reference(closes)["rsi"]
    got = [final[c.open_time_ms].indicators for c in truth]
    assert got[-1] is not None
    assert got[-1].rsi == pytest.approx(want[-1], rel=RTOL)


def test_state_round_trips_through_a_checkpoint_while_holding() -> None:
    truth = candles(150, seed=7)
    series = CandleSeries()
    for candle in truth[:60] + truth[62:100]:
        series.add(candle)
    restored: CandleSeries = pickle.loads(pickle.dumps(series))  # noqa: S301 - our own state
    tail = truth[60:62] + truth[100:]
    assert [restored.add(c) for c in tail] == [series.add(c) for c in tail]


def test_a_long_series_keeps_bounded_state_and_still_corrects_within_the_look_back() -> None:
    truth = candles(3000, seed=8)
    series = CandleSeries(keep_ms=300 * MINUTE_MS)
    for candle in truth:
        series.add(candle)
    assert len(series.candles) < 500
    assert len(series.snapshots) < 10
    corrected = with_close(truth[-100], 1.0)
    rows = series.add(corrected)
    assert len(rows) == 100
    too_old = with_close(truth[10], 1.0)
    assert series.add(too_old) == [CandleRow(too_old, None)]
