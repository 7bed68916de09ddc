"""The tick: the one message every stage agrees on, and the dead-letter record for what is not a tick.

On the wire (Kafka topic `price-ticks`, key = symbol) a tick is UTF-8 JSON:
    {"symbol": "BTCUSDT", "timestamp": "2026-11-24T12:00:00.123Z", "price": 97000.5, "volume": 1234.5,
     "source": "binance"}
`timestamp` is the exchange's event time, ISO-8601 UTC with milliseconds.
"""

from __future__ import annotations

import functools
import json
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

TICK_FIELDS = ("symbol", "timestamp", "price", "volume", "source")


class InvalidTick(ValueError):
    """A record that is not a valid tick; `str(error)` is the reason recorded in the dead-letter topic."""


@dataclass(frozen=True, slots=True)
class Tick:
    symbol: str
    event_time_ms: int
    price: float
    volume: float
    source: str = "binance"

    @property
    def timestamp(self) -> str:
        return format_timestamp(self.event_time_ms)

    def to_json(self) -> bytes:
        # Hand-formatted: this is the ingestor's hot path, and repr() of a float round-trips exactly.
        return (
            f'{{"symbol":"{self.symbol}","timestamp":"{self.timestamp}","price":{self.price!r},'
            f'"volume":{self.volume!r},"source":"{self.source}"}}'
        ).encode()


def format_timestamp(event_time_ms: int) -> str:
    seconds, millis = divmod(event_time_ms, 1000)
    return f"{_second(seconds)}.{millis:03d}Z"


@functools.lru_cache(maxsize=4096)
def _second(seconds: int) -> str:
    # Ticks of one second share this prefix: formatted once, not for each of the thousands of them.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def parse_timestamp(value: str) -> int:
    """ISO-8601 (UTC, `Z` or offset) → epoch milliseconds."""
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError("timestamp has no time zone")
    return round(moment.astimezone(UTC).timestamp() * 1000)


def validate_tick(symbol: Any, event_time_ms: Any, price: Any, volume: Any, source: str) -> Tick:
    """Build a Tick from loosely typed values (numbers may be strings, as Binance sends them)."""
    if not isinstance(symbol, str) or not symbol.isalnum():
        raise InvalidTick(f"invalid symbol: {symbol!r}")
    price_value = _number("price", price)
    volume_value = _number("volume", volume)
    if price_value <= 0:
        raise InvalidTick(f"price must be positive, got {price!r}")
    if volume_value < 0:
        raise InvalidTick(f"volume must not be negative, got {volume!r}")
    if isinstance(event_time_ms, bool) or not isinstance(event_time_ms, int) or event_time_ms <= 0:
        raise InvalidTick(f"invalid event time: {event_time_ms!r}")
    return Tick(symbol.upper(), event_time_ms, price_value, volume_value, source)


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidTick(f"{name} is not a number: {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise InvalidTick(f"{name} is not a number: {value!r}") from None
    if not math.isfinite(number):
        raise InvalidTick(f"{name} is not finite: {value!r}")
    return number


def parse_tick(raw: bytes | str) -> Tick:
    """Parse a tick from its wire JSON; raise InvalidTick with the reason."""
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidTick(f"not JSON: {error.msg if hasattr(error, 'msg') else error}") from None
    if not isinstance(data, dict):
        raise InvalidTick("not a JSON object")
    missing = [name for name in TICK_FIELDS if name not in data]
    if missing:
        raise InvalidTick(f"missing fields: {', '.join(missing)}")
    try:
        event_time_ms = parse_timestamp(data["timestamp"]) if isinstance(data["timestamp"], str) else None
    except ValueError:
        event_time_ms = None
    if event_time_ms is None:
        raise InvalidTick(f"invalid timestamp: {data['timestamp']!r}")
    return validate_tick(data["symbol"], event_time_ms, data["price"], data["volume"], str(data["source"]))


def dead_letter(raw: bytes | str, reason: str, stage: str, *, source: str | None = None) -> bytes:
    """The dead-letter record: the raw payload, verbatim, with why it was rejected and by whom."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    record = {
        "reason": reason,
        "stage": stage,
        "source": source,
        "raw": text,
        "rejected_at": format_timestamp(time.time_ns() // 1_000_000),
    }
    return json.dumps(record, separators=(",", ":")).encode()
