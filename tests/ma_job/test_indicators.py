"""The MA maths against pandas' rolling mean, and the stale-tick rule, without Flink."""

from __future__ import annotations

import pytest

from tests.helpers import expected_rows
from tickpipe.ma_job.indicators import SymbolWindow, stale_reason
from tickpipe.schema import Tick

pytestmark = pytest.mark.unit


def run(prices: list[float]) -> list[tuple[float | None, float | None]]:
    window = SymbolWindow()
    out = []
    for i, price in enumerate(prices):
        assert window.accepts(i + 1)
        averages = window.add(i + 1, price)
        out.append((averages.ma_short, averages.ma_long))
    return out


def test_matches_pandas_rolling_means_including_the_leading_nulls() -> None:
    prices = [100 + (i * 37 % 11) - 5 + i * 0.01 for i in range(60)]
    got = run(prices)
    want = expected_rows(Tick("BTCUSDT", i + 1, p, 1.0) for i, p in enumerate(prices))
    assert [g[0] is None for g in got] == list(want["ma_short"].isna())
    assert [g[1] is None for g in got] == list(want["ma_long"].isna())
    assert got[4][0] == pytest.approx(want["ma_short"][4], rel=1e-12)
    for (short, long_), (w_short, w_long) in zip(got[19:], want[["ma_short", "ma_long"]].values[19:], strict=True):
        assert short == pytest.approx(w_short, rel=1e-12)
        assert long_ == pytest.approx(w_long, rel=1e-12)


def test_a_jump_across_orders_of_magnitude_leaves_no_residue() -> None:
    # A running sum with retraction would keep ~1e-10 of the 1e6 prices in the later 1e-8 averages.
    prices = [1e6] * 20 + [1e-8] * 25
    got = run(prices)
    assert got[-1] == (pytest.approx(1e-8, rel=1e-12), pytest.approx(1e-8, rel=1e-12))


def test_duplicate_and_older_ticks_are_refused_with_a_reason() -> None:
    window = SymbolWindow()
    window.add(1000, 1.0)
    assert not window.accepts(1000)
    assert not window.accepts(999)
    assert window.accepts(1001)
    assert stale_reason(1000, 1000).startswith("duplicate tick")
    assert stale_reason(999, 1000).startswith("out-of-order tick")


def test_state_round_trips_and_keeps_only_the_long_window() -> None:
    window = SymbolWindow()
    for i in range(30):
        window.add(i + 1, float(i))
    restored = SymbolWindow.from_state(window.to_state())
    assert restored.prices == [float(i) for i in range(10, 30)]
    assert restored.last_event_time_ms == 30
    assert SymbolWindow.from_state(None).prices == []
