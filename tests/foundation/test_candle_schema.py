"""The candle on the wire (tickpipe.candle_schema): what the ingestor publishes, the candle job reads back equal,
and anything else is refused with a one-line reason for the dead-letter topic."""

from __future__ import annotations

import pytest

from tickpipe.candle_schema import InvalidCandle, WireCandle, parse_candle, validate_candle

pytestmark = pytest.mark.unit

MINUTE = 29_000_000 * 60_000  # a whole minute in 2025


def candle(**changes: object) -> WireCandle:
    values = {"volume": "12.5", "quote_volume": "1000.25", "trades": 7, "origin": "repair", **changes}
    return validate_candle("binance", "btcusdt", MINUTE, ("100", "110.5", "99", "101"), **values)  # type: ignore[arg-type]


def test_a_candle_round_trips_with_its_source_in_the_key() -> None:
    original = candle()
    assert original.symbol == "BTCUSDT" and original.key == b"binance:BTCUSDT"
    assert original.high == 110.5 and original.volume == 12.5 and original.trades == 7
    assert parse_candle(original.to_json()) == original
    assert parse_candle(candle(volume=None, quote_volume=None, trades=None).to_json()).volume is None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "not JSON: empty record"),
        (b"{", "not JSON"),
        (b"[]", "not a JSON object"),
        (b'{"source": "binance"}', "missing fields: symbol, interval, open_time, open, high, low, close"),
        (candle().to_json().replace(b'"1m"', b'"5m"'), "unsupported interval: '5m'"),
        (candle().to_json().replace(b":00.000Z", b":30.000Z"), "invalid open time"),
        (candle().to_json().replace(b'"high":110.5', b'"high":100.5'), "inconsistent candle"),
        (candle().to_json().replace(b'"low":99.0', b'"low":-1'), "prices must be positive"),
        (candle().to_json().replace(b'"open":100.0', b'"open":"x"'), "open is not a number"),
        (candle().to_json().replace(b'"trades":7', b'"trades":-1'), "trades must be a count"),
        (candle().to_json().replace(b'"volume":12.5', b'"volume":-2'), "volumes must not be negative"),
        (candle().to_json().replace(b'"origin":"repair"', b'"origin":"guess"'), "invalid origin"),
        (candle().to_json().replace(b'"BTCUSDT"', b'"BTC USDT"'), "invalid symbol"),
        (candle().to_json().replace(b'"binance"', b'"bin ance"'), "invalid source"),
    ],
)
def test_anything_else_is_refused_with_its_reason(raw: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidCandle) as refused:
        parse_candle(raw)
    assert str(refused.value).startswith(reason)
    assert "\n" not in str(refused.value)
