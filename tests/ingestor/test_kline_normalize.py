"""Binance kline payloads → candles (pure), the candle ledger's hole finding, stream URLs and the REST weight budget."""

from __future__ import annotations

import dataclasses

import orjson
import pytest

from tickpipe.candle_schema import InvalidCandle, WireCandle
from tickpipe.ingestor.normalize import Control, normalize, rest_candle
from tickpipe.ingestor.repair import CandleLedger, Hole, newest_closed
from tickpipe.ingestor.rest import WeightBudget
from tickpipe.ingestor.service import stream_urls
from tickpipe.schema import InvalidTick, Tick
from tickpipe.sim.candles import Candle, kline_event

pytestmark = pytest.mark.unit
MINUTE = 60_000
T0 = 1_764_590_400_000  # 2025-12-01T12:00:00Z, a whole minute
# Binance's documented @kline_1m event (wss://stream.binance.com, "Kline/Candlestick Streams").
CLOSED = {
    "e": "kline",
    "E": T0 + MINUTE + 5,
    "s": "BTCUSDT",
    "k": {
        "t": T0,
        "T": T0 + MINUTE - 1,
        "s": "BTCUSDT",
        "i": "1m",
        "f": 100,
        "L": 200,
        "o": "97000.50000000",
        "c": "97001.00000000",
        "h": "97010.00000000",
        "l": "96990.00000000",
        "v": "12.50000000",
        "n": 101,
        "x": True,
        "q": "1212512.50000000",
        "V": "6.25000000",
        "Q": "606256.25000000",
        "B": "0",
    },
}


def combined(event: dict[str, object]) -> str:
    return orjson.dumps({"stream": "btcusdt@kline_1m", "data": event}).decode()


def with_k(**changes: object) -> dict[str, object]:
    k = {**CLOSED["k"], **changes}  # type: ignore[dict-item]
    return {**CLOSED, "k": {name: value for name, value in k.items() if value is not ...}}


def test_a_closed_kline_becomes_a_streamed_candle() -> None:
    candle = normalize(combined(CLOSED))
    assert candle == WireCandle(
        "binance", "BTCUSDT", T0, 97000.5, 97010.0, 96990.0, 97001.0, 12.5, 1212512.5, 101, "stream"
    )
    assert isinstance(candle, WireCandle) and candle.key == b"binance:BTCUSDT"


def test_an_open_kline_is_not_a_candle_and_not_an_error() -> None:
    assert normalize(combined(with_k(x=False))) is Control.OPEN_CANDLE
    assert normalize(combined(with_k(x=False, o="garbage"))) is Control.OPEN_CANDLE  # only closed ones are read


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ({**CLOSED, "k": "nope"}, "kline without its candle object `k`"),
        (with_k(x="true"), "kline `x` (closed) is not true or false: 'true'"),
        (with_k(o=...), "missing kline fields: o"),
        (with_k(i="5m"), "unsupported kline interval: '5m' (only 1m)"),
        (with_k(t=T0 + 1), "invalid open time"),
        (with_k(h="96000"), "inconsistent candle"),
        (with_k(c="abc"), "close is not a number: 'abc'"),
        (with_k(v="-1"), "volumes must not be negative"),
        (with_k(s="BTC USDT"), "invalid symbol"),
        (with_k(n=1.5), "trades must be a count"),
    ],
)
def test_a_bad_kline_is_rejected_with_its_reason(event: dict[str, object], reason: str) -> None:
    with pytest.raises(InvalidCandle) as error:
        normalize(combined(event))
    assert str(error.value).startswith(reason)
    assert isinstance(error.value, InvalidTick)  # the router's one except: the same DLQ path as ticks


def test_ticks_still_come_first_and_unchanged() -> None:
    tick = '{"stream":"btcusdt@ticker","data":{"e":"24hrTicker","E":1764000000000,"s":"BTCUSDT","c":"97000.5","v":"1"}}'
    assert normalize(tick) == Tick("BTCUSDT", 1_764_000_000_000, 97000.5, 1.0, "binance")
    assert normalize('{"e":"serverShutdown","E":1}') is Control.SERVER_SHUTDOWN


def test_a_rest_row_and_the_streamed_kline_of_one_candle_are_the_same_candle() -> None:
    candle = Candle("ETHUSDT", T0, 3000.0, 3010.25, 2990.5, 3005.125, 1.5, 4511.0, 7, 1, 7)
    streamed = normalize(orjson.dumps(kline_event(candle, True, T0 + MINUTE)))
    repaired = rest_candle("ETHUSDT", orjson.loads(orjson.dumps(candle.rest_row())))
    assert isinstance(streamed, WireCandle)
    assert repaired.origin == "repair" and streamed.origin == "stream"
    assert repaired == dataclasses.replace(streamed, origin="repair")


def test_a_bad_rest_row_is_rejected_with_its_reason() -> None:
    with pytest.raises(InvalidCandle, match="kline row is not an array"):
        rest_candle("BTCUSDT", {"t": 1})
    with pytest.raises(InvalidCandle, match="prices must be positive"):
        rest_candle("BTCUSDT", [T0, "0", "1", "0", "1", "1", T0 + MINUTE - 1, "1", 1])


def test_stream_urls_keep_a_symbols_ticker_and_kline_on_one_connection() -> None:
    urls = stream_urls("ws://x", ("a", "b", "c"), 4, klines=True)
    assert urls == [
        "ws://x/stream?streams=a@ticker/a@kline_1m/b@ticker/b@kline_1m",
        "ws://x/stream?streams=c@ticker/c@kline_1m",
    ]
    assert stream_urls("ws://x", ("a", "b", "c"), 2) == [
        "ws://x/stream?streams=a@ticker/b@ticker",
        "ws://x/stream?streams=c@ticker",
    ]


def test_the_ledger_publishes_each_minute_once_and_names_the_missing_ones() -> None:
    ledger = CandleLedger()
    assert ledger.streamed("BTCUSDT", T0) == (True, None)
    assert ledger.streamed("BTCUSDT", T0) == (False, None)  # a rotation's overlap
    assert ledger.streamed("BTCUSDT", T0 + MINUTE) == (True, None)
    assert ledger.streamed("BTCUSDT", T0 + 5 * MINUTE) == (
        True,
        Hole("BTCUSDT", T0 + 2 * MINUTE, T0 + 4 * MINUTE, "stream_gap"),
    )
    assert ledger.streamed("BTCUSDT", T0 + 3 * MINUTE) == (False, None)  # older than the newest: the repair's


def test_the_start_up_repairs_from_the_stored_candle_and_claims_up_to_the_newest_closed_one() -> None:
    ledger = CandleLedger()
    floor, closed = T0 - 1440 * MINUTE, T0 + 10 * MINUTE
    assert ledger.seed("BTCUSDT", T0, floor, closed) == Hole("BTCUSDT", T0 + MINUTE, closed, "start")
    assert ledger.streamed("BTCUSDT", closed) == (False, None)  # claimed: the repair sends it
    assert ledger.streamed("BTCUSDT", closed + MINUTE) == (True, None)
    assert ledger.seed("ETHUSDT", None, floor, closed) == Hole("ETHUSDT", floor, closed, "start")  # never seen
    assert ledger.seed("SOLUSDT", closed, floor, closed) is None  # nothing missed
    assert ledger.seed("XRPUSDT", T0 - 9999 * MINUTE, floor, closed) == Hole("XRPUSDT", floor, closed, "start")


def test_a_stream_that_began_before_the_start_up_read_bounds_the_hole() -> None:
    ledger = CandleLedger()
    ledger.streamed("BTCUSDT", T0 + 7 * MINUTE)
    hole = ledger.seed("BTCUSDT", T0, T0 - 1440 * MINUTE, T0 + 9 * MINUTE)
    assert hole == Hole("BTCUSDT", T0 + MINUTE, T0 + 6 * MINUTE, "start")
    takeover = ledger.seed("BTCUSDT", T0, T0 - 1440 * MINUTE, T0 + 9 * MINUTE, takeover=True)
    assert takeover == Hole("BTCUSDT", T0 + MINUTE, T0 + 9 * MINUTE, "takeover")


def test_only_minutes_a_full_minute_old_are_closed() -> None:
    assert newest_closed(T0 + MINUTE) == T0
    assert newest_closed(T0 + MINUTE - 1) == T0 - MINUTE


def test_the_weight_budget_waits_once_the_minute_is_spent() -> None:
    budget = WeightBudget(5, window=60.0)
    assert [budget.wait_time(2), budget.wait_time(2)] == [0.0, 0.0]
    assert 59.0 < budget.wait_time(2) <= 60.0
    assert budget.wait_time(1) == 0.0


def test_the_simulators_rest_answer_does_not_take_a_closed_candle_from_the_stream() -> None:
    from tickpipe.sim.candles import CandleBook

    book = CandleBook("BTCUSDT")
    assert book.trade(T0 + 5, 100.0, 1.0, 1) == []
    assert [c.open_time_ms for c in book.klines(None, None, 1000, T0 + 2 * MINUTE + 1)] == [T0, T0 + MINUTE]
    closed = book.trade(T0 + 2 * MINUTE + 5, 101.0, 1.0, 2)  # the trade that ends those minutes on the stream
    assert [(c.open_time_ms, c.close) for c in closed] == [(T0, 100.0), (T0 + MINUTE, 100.0)]
