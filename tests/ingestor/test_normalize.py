"""Binance payloads → ticks, and every kind of bad input → a reason (never another exception)."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tickpipe.ingestor.connection import AttemptBudget, Backoff
from tickpipe.ingestor.normalize import Control, normalize, reason_kind
from tickpipe.ingestor.service import stream_urls
from tickpipe.schema import InvalidTick, Tick

pytestmark = pytest.mark.unit

EVENT = {"e": "24hrTicker", "E": 1732449600123, "s": "BTCUSDT", "c": "97000.50", "v": "1234.5", "p": "1.0"}


def test_a_combined_stream_ticker_becomes_a_tick() -> None:
    tick = normalize(json.dumps({"stream": "btcusdt@ticker", "data": EVENT}))
    assert tick == Tick("BTCUSDT", 1732449600123, 97000.5, 1234.5, "binance")
    assert json.loads(tick.to_json()) == {
        "symbol": "BTCUSDT",
        "timestamp": "2024-11-24T12:00:00.123Z",
        "price": 97000.5,
        "volume": 1234.5,
        "source": "binance",
    }


def test_raw_stream_events_and_control_messages() -> None:
    assert isinstance(normalize(json.dumps(EVENT)), Tick)
    assert normalize('{"result": null, "id": 1}') is Control.SUBSCRIPTION_REPLY
    assert normalize('{"e": "serverShutdown", "E": 1}') is Control.SERVER_SHUTDOWN


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"stream": "x", "data": 5}', "combined-stream data is not a JSON object"),
        ('{"e": "trade", "E": 1}', "unknown message shape: event type 'trade'"),
        ('{"foo": 1}', "unknown message shape: event type None"),
        (json.dumps({**EVENT, "c": "abc"}), "price is not a number: 'abc'"),
        (json.dumps({**EVENT, "c": "-1"}), "price must be positive, got '-1'"),
        (json.dumps({**EVENT, "c": "NaN"}), "price is not finite: 'NaN'"),
        (json.dumps({**EVENT, "v": "-3"}), "volume must not be negative, got '-3'"),
        (json.dumps({k: v for k, v in EVENT.items() if k != "c"}), "missing fields: c"),
        (json.dumps({**EVENT, "E": "soon"}), "invalid event time: 'soon'"),
        (json.dumps({**EVENT, "s": "BTC/USDT"}), "invalid symbol: 'BTC/USDT'"),
        ('{"error": {"code": 2, "msg": "Invalid request"}, "id": 3}', "exchange error reply"),
    ],
)
def test_bad_input_is_rejected_with_a_reason(raw: str, reason: str) -> None:
    with pytest.raises(InvalidTick) as error:
        normalize(raw)
    assert str(error.value).startswith(reason)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=4),
    max_leaves=10,
)


# The machine may be busy with engines of other tests: time is not what these tests are about.
relaxed = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@relaxed
@given(st.dictionaries(st.sampled_from(["e", "E", "s", "c", "v", "stream", "data", "id", "result"]), json_values))
def test_any_json_object_is_a_tick_a_control_or_a_reason(message: dict[str, object]) -> None:
    try:
        result = normalize(json.dumps(message))
    except InvalidTick as error:
        assert str(error)
        assert reason_kind(str(error))
    else:
        assert isinstance(result, Tick | Control)


@relaxed
@given(st.binary(max_size=50))
def test_any_bytes_are_a_tick_a_control_or_a_reason(raw: bytes) -> None:
    with contextlib.suppress(InvalidTick):
        normalize(raw)


def test_streams_are_split_across_connections() -> None:
    urls = stream_urls("wss://x:9443", tuple(f"s{i}usdt" for i in range(5)), 2)
    assert urls == [
        "wss://x:9443/stream?streams=s0usdt@ticker/s1usdt@ticker",
        "wss://x:9443/stream?streams=s2usdt@ticker/s3usdt@ticker",
        "wss://x:9443/stream?streams=s4usdt@ticker",
    ]


def test_backoff_grows_to_its_cap_and_resets() -> None:
    backoff = Backoff(base=1, cap=8, rng=lambda: 1.0)
    assert [backoff.next_delay() for _ in range(6)] == [1, 2, 4, 8, 8, 8]
    backoff.reset()
    assert backoff.next_delay() == 1
    assert Backoff(base=1, cap=8, rng=lambda: 0.0).next_delay() == 0.5


def test_attempt_budget_refuses_beyond_its_limit() -> None:
    budget = AttemptBudget(limit=3, window=300)
    assert [budget.wait_time() for _ in range(3)] == [0, 0, 0]
    assert budget.wait_time() > 299
