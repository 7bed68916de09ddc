"""The tick schema shared by every stage: wire format, validation, dead-letter records."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tickpipe.schema import InvalidTick, Tick, dead_letter, format_timestamp, parse_tick, validate_tick

pytestmark = pytest.mark.unit

ticks = st.builds(
    Tick,
    symbol=st.from_regex(r"[A-Z0-9]{2,12}", fullmatch=True),
    event_time_ms=st.integers(min_value=1, max_value=4_102_444_800_000),  # up to 2100
    price=st.floats(min_value=1e-12, max_value=1e12, allow_nan=False, allow_infinity=False),
    volume=st.floats(min_value=0, max_value=1e15, allow_nan=False, allow_infinity=False),
    source=st.sampled_from(["binance", "yahoo"]),  # sources whose symbols these are (tickpipe.schema.SYMBOL_RULES)
)


@given(ticks)
def test_a_tick_survives_the_wire_unchanged(tick: Tick) -> None:
    assert parse_tick(tick.to_json()) == tick


def test_wire_format_is_the_seed_message_plus_source() -> None:
    tick = Tick("BTCUSDT", 1_795_000_000_123, 97000.5, 12.25, "binance")
    assert json.loads(tick.to_json()) == {
        "symbol": "BTCUSDT",
        "timestamp": "2026-11-18T11:06:40.123Z",
        "price": 97000.5,
        "volume": 12.25,
        "source": "binance",
    }


def test_timestamps_are_iso_utc_with_milliseconds() -> None:
    assert format_timestamp(0) == "1970-01-01T00:00:00.000Z"
    assert format_timestamp(1_700_000_000_007) == "2023-11-14T22:13:20.007Z"


def test_binance_strings_become_numbers_and_symbols_upper_case() -> None:
    assert validate_tick("btcusdt", 1, "0.00001234", "100", "binance") == Tick("BTCUSDT", 1, 0.00001234, 100.0)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"not json", "not JSON"),
        (b"[1,2]", "not a JSON object"),
        (b'{"symbol":"BTCUSDT"}', "missing fields: timestamp, price, volume, source"),
        (
            b'{"symbol":"BTCUSDT","timestamp":"yesterday","price":1,"volume":1,"source":"x"}',
            "invalid timestamp",
        ),
        (
            b'{"symbol":"BTCUSDT","timestamp":"2026-01-01T00:00:00","price":1,"volume":1,"source":"x"}',
            "invalid timestamp",
        ),
        (
            b'{"symbol":"BTCUSDT","timestamp":"2026-01-01T00:00:00Z","price":"abc","volume":1,"source":"x"}',
            "price is not a number",
        ),
        (
            b'{"symbol":"BTCUSDT","timestamp":"2026-01-01T00:00:00Z","price":-1,"volume":1,"source":"x"}',
            "price must be positive",
        ),
        (
            b'{"symbol":"BTCUSDT","timestamp":"2026-01-01T00:00:00Z","price":1,"volume":-2,"source":"x"}',
            "volume must not be negative",
        ),
        (
            b'{"symbol":"BTC/USDT","timestamp":"2026-01-01T00:00:00Z","price":1,"volume":1,"source":"binance"}',
            "invalid symbol",
        ),
        (
            b'{"symbol":"BTCUSDT","timestamp":"2026-01-01T00:00:00Z","price":"NaN","volume":1,"source":"x"}',
            "price is not finite",
        ),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_invalid_records_are_rejected_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidTick, match=reason):
        parse_tick(raw)


@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise_anything_but_invalid_tick(raw: bytes) -> None:
    with contextlib.suppress(InvalidTick):
        parse_tick(raw)


def test_dead_letter_keeps_the_raw_payload_verbatim_with_the_reason() -> None:
    record = json.loads(dead_letter(b'{"broken": ', "not JSON: Expecting value", "ingestor", source="binance"))
    assert record["raw"] == '{"broken": '
    assert record["reason"] == "not JSON: Expecting value"
    assert record["stage"] == "ingestor"
    assert record["source"] == "binance"
    assert record["rejected_at"].endswith("Z")
