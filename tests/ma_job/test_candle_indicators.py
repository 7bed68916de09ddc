"""The candle indicators against TA-Lib itself: each streamed value equals TA-Lib's batch function on the complete
series of closes (real recorded series, random walks, and the edge cases TA-Lib defines in its own way)."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import talib
from hypothesis import given, settings
from hypothesis import strategies as st

from tickpipe.ma_job.candle_indicators import CandleIndicators, Indicators

pytestmark = pytest.mark.unit
# The stated tolerance (README): TA-Lib's own bound for its fused multiply-adds. RSI, EMA, MACD and the middle band
# follow TA-Lib's arithmetic step for step; the Bollinger deviation is a two-pass one, TA-Lib 0.8's is shifted.
RTOL, ATOL = 1e-9, 1e-12
FIELDS = Indicators.__slots__


def streamed(closes: np.ndarray) -> dict[str, np.ndarray]:
    state = CandleIndicators()
    rows = [state.step(float(close)) for close in closes]
    return {name: np.array([math.nan if (v := getattr(r, name)) is None else v for r in rows]) for name in FIELDS}


def reference(closes: np.ndarray) -> dict[str, np.ndarray]:
    upper, middle, lower = talib.BBANDS(closes, timeperiod=20, nbdevup=2.0, nbdevdn=2.0, matype=talib.MA_Type.SMA)
    macd, signal, hist = talib.MACD(closes, fastperiod=12, slowperiod=26, signalperiod=9)
    return {
        "rsi": talib.RSI(closes, timeperiod=14),
        "bb_middle": middle,
        "bb_upper": upper,
        "bb_lower": lower,
        "ema_fast": talib.EMA(closes, timeperiod=12),
        "ema_slow": talib.EMA(closes, timeperiod=26),
        "macd": macd,
        "macd_signal": signal,
        "macd_hist": hist,
    }


def assert_equal_to_talib(closes: np.ndarray) -> None:
    got, want = streamed(closes), reference(closes)
    for name in FIELDS:
        # NULL exactly where TA-Lib has no value yet (its lookback), equal everywhere else.
        np.testing.assert_array_equal(np.isnan(got[name]), np.isnan(want[name]), err_msg=f"{name}: warm-up")
        np.testing.assert_allclose(got[name], want[name], rtol=RTOL, atol=ATOL, equal_nan=True, err_msg=name)


@pytest.mark.parametrize("dataset", ["sp500", "nasdaq"])
def test_equal_to_talib_on_twenty_years_of_recorded_daily_closes(dataset: str) -> None:
    from importlib import import_module

    closes = import_module(f"arch.data.{dataset}").load()["Close"].to_numpy(dtype=float)
    assert len(closes) > 5000
    assert_equal_to_talib(closes)


@settings(max_examples=60, deadline=None)
@given(
    start=st.floats(1e-6, 1e6),
    shocks=st.lists(st.floats(-0.2, 0.2), min_size=1, max_size=300),
)
def test_equal_to_talib_on_random_walks_at_any_price_level(start: float, shocks: list[float]) -> None:
    assert_equal_to_talib(start * np.exp(np.cumsum(shocks)))


def test_warm_up_lengths_are_talib_s_lookbacks() -> None:
    state = CandleIndicators()
    rows = [state.step(100.0 + (i % 7)) for i in range(40)]
    first = {name: next(i for i, row in enumerate(rows) if getattr(row, name) is not None) for name in FIELDS}
    assert first == {
        "rsi": 14,
        "bb_middle": 19,
        "bb_upper": 19,
        "bb_lower": 19,
        "ema_fast": 11,
        "ema_slow": 25,
        "macd": 33,
        "macd_signal": 33,
        "macd_hist": 33,
    }


def test_a_flat_series_has_rsi_zero_and_bands_of_zero_width_as_in_talib() -> None:
    closes = np.full(60, 97_000.5)
    assert_equal_to_talib(closes)
    last = CandleIndicators()
    for close in closes:
        row = last.step(float(close))
    assert row.rsi == 0.0  # no gains and no losses: TA-Lib's definition, not 50
    assert row.bb_upper == row.bb_middle == row.bb_lower == 97_000.5


def test_a_jump_from_a_million_to_a_hundred_millionth_equals_talib() -> None:
    assert_equal_to_talib(np.array([1e6] * 30 + [1e-8 * (1 + 0.01 * (i % 5)) for i in range(60)]))


def test_state_survives_a_checkpoint_mid_series() -> None:
    closes = 100 * np.exp(np.cumsum(np.random.default_rng(5).normal(0, 0.01, 120)))
    state = CandleIndicators()
    for close in closes[:50]:
        state.step(float(close))
    restored: CandleIndicators = pickle.loads(pickle.dumps(state))  # noqa: S301 - our own state
    tail_restored = [restored.step(float(c)) for c in closes[50:]]
    tail_original = [state.step(float(c)) for c in closes[50:]]
    assert tail_restored == tail_original
