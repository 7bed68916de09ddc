"""The MA(5)/MA(20) cross signals of the candle job: the averages equal TA-Lib's SMA of the same closes, the event
carries them, a flat series never crosses, and a signal pickled by an earlier candle job (a savepoint taken before the
MA fields existed) still restores."""

from __future__ import annotations

import dataclasses
import json
import math
import pickle

import numpy as np
import pytest
import talib

from tests.ma_job.test_candle_indicators import ATOL, RTOL
from tests.ma_job.test_candle_job import candle, walk
from tickpipe.ma_job.candle_series import CandleSeries
from tickpipe.ma_job.candle_signals import SIGNAL_FIELDS, Signal, SignalKind, SymbolCandles

MA_KINDS = {SignalKind.MA5_CROSSED_ABOVE_MA20, SignalKind.MA5_CROSSED_BELOW_MA20}


@pytest.mark.unit
def test_ma_crosses_carry_talib_s_moving_averages_and_happen_where_talib_s_cross() -> None:
    series = walk("BTCUSDT", 600, seed=7)
    state = SymbolCandles(CandleSeries())
    events = []
    for wire in series:
        events += [json.loads(c.to_json("binance", "BTCUSDT")) for c in state.add(candle(wire))[1]]
    closes = np.array([c.close for c in series])
    ma5, ma20 = talib.SMA(closes, timeperiod=5), talib.SMA(closes, timeperiod=20)
    index = {c.open_time_ms: i for i, c in enumerate(series)}
    expected = set()
    for i in range(1, len(series)):
        if math.isnan(ma20[i - 1]):
            continue
        if ma5[i] > ma20[i] and ma5[i - 1] <= ma20[i - 1]:
            expected.add((i, SignalKind.MA5_CROSSED_ABOVE_MA20.value))
        if ma5[i] < ma20[i] and ma5[i - 1] >= ma20[i - 1]:
            expected.add((i, SignalKind.MA5_CROSSED_BELOW_MA20.value))
    crosses = [e for e in events if e["kind"] in MA_KINDS]
    got = {(index[_ms(e["open_time"])], e["kind"]) for e in crosses}
    assert got == expected and len(crosses) == len(expected)
    assert len(expected) >= 4, "the walk must cross both ways"
    for event in crosses:
        i = index[_ms(event["open_time"])]
        for key, value in (("ma_5", ma5[i]), ("ma_20", ma20[i]), ("previous_ma_5", ma5[i - 1])):
            assert event[key] == pytest.approx(value, rel=RTOL, abs=ATOL), (event, key)
        assert event["previous_ma_20"] == pytest.approx(ma20[i - 1], rel=RTOL, abs=ATOL)
    # Every signal carries its candle's averages (None while not warm).
    for event in events:
        i = index[_ms(event["open_time"])]
        assert event["ma_5"] == pytest.approx(None if math.isnan(ma5[i]) else ma5[i], rel=RTOL, abs=ATOL)


@pytest.mark.unit
def test_a_flat_series_never_crosses() -> None:
    series = walk("FLATUSDT", 80, seed=1)
    state = SymbolCandles(CandleSeries())
    changes = []
    for wire in series:
        changes += state.add(candle(dataclasses.replace(wire, open=5.0, high=5.0, low=5.0, close=5.0)))[1]
    assert not [c for c in changes if c.signal.kind in MA_KINDS]


@pytest.mark.unit
def test_a_signal_pickled_before_the_moving_averages_existed_restores_with_none() -> None:
    signal = Signal(SignalKind.RSI_CROSSED_ABOVE_70, 60_000, 2.0, 1.0, 71.0, 69.0, 3.0, 2.0, 1.0, 1.5, 1.4, 1.3, 1.2)
    assert pickle.loads(pickle.dumps(signal)) == signal  # noqa: S301 - bytes pickled right here
    old = Signal.__new__(Signal)
    old.__setstate__(list(signal.__getstate__())[:9])  # type: ignore[attr-defined]  # the earlier 9 fields
    assert old == Signal(SignalKind.RSI_CROSSED_ABOVE_70, 60_000, 2.0, 1.0, 71.0, 69.0, 3.0, 2.0, 1.0)
    assert SIGNAL_FIELDS[9:] == ("ma_5", "ma_20", "previous_ma_5", "previous_ma_20")


def _ms(text: str) -> int:
    return int(np.datetime64(text.rstrip("Z"), "ms").astype(np.int64))
