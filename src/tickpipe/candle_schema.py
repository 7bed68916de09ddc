"""The closed 1m candle: the message of the `candles` topic, shared by the ingestor (which publishes the exchange's
candles, streamed or repaired from REST) and the candle job (which stores them with their indicators).

On the wire (Kafka topic `candles`, key = `<source>:<symbol>`, e.g. `binance:BTCUSDT`) a candle is UTF-8 JSON:
    {"source": "binance", "symbol": "BTCUSDT", "interval": "1m", "open_time": "2026-12-01T12:00:00.000Z",
     "open": 97000.5, "high": 97010.0, "low": 96990.0, "close": 97001.0, "volume": 12.5, "quote_volume": 1212512.5,
     "trades": 310, "origin": "stream"}
`open_time` is the start of the minute (UTC, a whole minute); `volume` is the base asset traded in that minute
(null where a source has no interval volume: never a 24 h rolling total), `quote_volume` the quote asset, `trades`
the trade count (null where unknown). `origin` says how the ingestor got it: `stream` (a kline with `x = true`) or
`repair` (REST `GET /api/v3/klines` after a gap). The key carries the source because the same symbol from two
sources must never share a series.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from tickpipe.schema import (
    MAX_EVENT_TIME_MS,
    InvalidTick,
    _number,
    _show,
    format_timestamp,
    is_symbol,
    load_record,
    parse_timestamp,
)

CANDLE_FIELDS = ("source", "symbol", "interval", "open_time", "open", "high", "low", "close")
INTERVAL = "1m"
MINUTE_MS = 60_000
ORIGINS = frozenset({"stream", "repair"})


class InvalidCandle(InvalidTick):
    """A record that is not a valid candle; `str(error)` is the dead-letter reason (one line, bounded)."""


@dataclass(frozen=True, slots=True)
class WireCandle:
    source: str
    symbol: str
    open_time_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float | None = None
    quote_volume: float | None = None
    trades: int | None = None
    origin: str = "stream"

    @property
    def key(self) -> bytes:
        return candle_key(self.source, self.symbol)

    def to_json(self) -> bytes:
        record = {
            "source": self.source,
            "symbol": self.symbol,
            "interval": INTERVAL,
            "open_time": format_timestamp(self.open_time_ms),
            "open": self.open,
            "high": self.high,
            "low": self.low,
            "close": self.close,
            "volume": self.volume,
            "quote_volume": self.quote_volume,
            "trades": self.trades,
            "origin": self.origin,
        }
        return json.dumps(record, separators=(",", ":")).encode()


def candle_key(source: str, symbol: str) -> bytes:
    return f"{source}:{symbol}".encode()


def validate_candle(
    source: Any,
    symbol: Any,
    open_time_ms: Any,
    prices: tuple[Any, Any, Any, Any],
    *,
    volume: Any = None,
    quote_volume: Any = None,
    trades: Any = None,
    origin: Any = "stream",
) -> WireCandle:
    """Build a WireCandle from loosely typed values (Binance sends prices as strings); InvalidCandle says why not."""
    if not isinstance(source, str) or not source or not source.isascii() or not source.isalnum():
        raise InvalidCandle(f"invalid source: {_show(source)}")
    if not is_symbol(symbol):
        raise InvalidCandle(f"invalid symbol: {_show(symbol)}")
    if (
        isinstance(open_time_ms, bool)
        or not isinstance(open_time_ms, int)
        or not 0 < open_time_ms <= MAX_EVENT_TIME_MS
        or open_time_ms % MINUTE_MS
    ):
        raise InvalidCandle(f"invalid open time: {_show(open_time_ms)} is not the start of a minute")
    try:
        open_, high, low, close = (
            _number(name, value) for name, value in zip(("open", "high", "low", "close"), prices, strict=True)
        )
        volumes = [
            None if value is None else _number(name, value)
            for name, value in (("volume", volume), ("quote_volume", quote_volume))
        ]
    except InvalidTick as error:
        raise InvalidCandle(str(error)) from None
    if min(open_, high, low, close) <= 0:
        raise InvalidCandle(f"prices must be positive, got open={open_!r} high={high!r} low={low!r} close={close!r}")
    if not low <= min(open_, close) <= max(open_, close) <= high:
        raise InvalidCandle(f"inconsistent candle: low={low!r} high={high!r} open={open_!r} close={close!r}")
    if any(value is not None and value < 0 for value in volumes):
        raise InvalidCandle(f"volumes must not be negative, got {volumes[0]!r} and {volumes[1]!r}")
    if trades is not None and (isinstance(trades, bool) or not isinstance(trades, int) or trades < 0):
        raise InvalidCandle(f"trades must be a count, got {_show(trades)}")
    if origin not in ORIGINS:
        raise InvalidCandle(f"invalid origin: {_show(origin)}")
    return WireCandle(
        source, symbol.upper(), open_time_ms, open_, high, low, close, volumes[0], volumes[1], trades, origin
    )


def parse_candle(raw: bytes | str | None) -> WireCandle:
    """Parse a candle from its wire JSON; raise InvalidCandle with the reason (and nothing else, whatever `raw` is)."""
    try:
        data = load_record(raw, CANDLE_FIELDS)
    except InvalidTick as error:
        raise InvalidCandle(str(error)) from None
    if data["interval"] != INTERVAL:
        raise InvalidCandle(f"unsupported interval: {_show(data['interval'])} (only {INTERVAL})")
    try:
        open_time_ms = parse_timestamp(data["open_time"]) if isinstance(data["open_time"], str) else None
    except ValueError:
        open_time_ms = None
    if open_time_ms is None:
        raise InvalidCandle(f"invalid open time: {_show(data['open_time'])}")
    prices = (data["open"], data["high"], data["low"], data["close"])
    if any(isinstance(value, float) and not math.isfinite(value) for value in prices):
        raise InvalidCandle("prices must be finite")
    return validate_candle(
        data["source"],
        data["symbol"],
        open_time_ms,
        prices,
        volume=data.get("volume"),
        quote_volume=data.get("quote_volume"),
        trades=data.get("trades"),
        origin=data.get("origin", "stream"),
    )
