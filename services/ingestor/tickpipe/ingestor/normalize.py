"""Binance stream messages → ticks and candles. Pure functions: the ingestor's only knowledge of Binance's payloads.

A @ticker event (24hrTicker) carries `s` symbol, `E` event time (ms), `c` last price and `v` base volume, the
numbers as strings; a combined stream wraps it as {"stream": ..., "data": ...}. A @kline_1m event (`e` = "kline")
carries the candle in `k`: `t` open time, `T` close time (ms), `s` symbol, `i` interval, `o h l c` prices, `v` base
and `q` quote volume (strings), `n` trades and `x` whether the candle is closed; the open candle is pushed every ~2 s,
the closed one once, when its minute ends. REST `GET /api/v3/klines` answers the same candles as arrays
`[t, o, h, l, c, v, T, q, n, V, Q, B]` (rest_candle). Anything that is not a tick, a closed candle, an open candle,
a subscription reply or a `serverShutdown` notice is rejected with a reason (InvalidTick, or its subclass
InvalidCandle for a kline) for the dead-letter topic.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import orjson

from tickpipe.candle_schema import INTERVAL, InvalidCandle, WireCandle, validate_candle
from tickpipe.schema import InvalidTick, Tick, reason_kind, validate_tick

__all__ = ["SOURCE", "Control", "normalize", "reason_kind", "rest_candle"]

SOURCE = "binance"


class Control(Enum):
    SUBSCRIPTION_REPLY = "subscription_reply"  # {"result": ..., "id": ...}
    SERVER_SHUTDOWN = "server_shutdown"  # the exchange will close this connection soon: rotate now
    OPEN_CANDLE = "open_candle"  # a kline update of a minute not yet over: not published (only closed candles are)


def normalize(raw: str | bytes) -> Tick | WireCandle | Control:
    """One WebSocket message → a tick or a control notice; InvalidTick (and nothing else) for anything else.
    orjson bounds the input for us: nesting deeper than 1024 and numbers beyond a double are "not JSON"."""
    try:
        message: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidTick("not JSON") from None
    if not isinstance(message, dict):
        raise InvalidTick("not a JSON object")
    if "data" in message and "stream" in message:
        message = message["data"]
        if not isinstance(message, dict):
            raise InvalidTick("combined-stream data is not a JSON object")
    elif "id" in message and ("result" in message or "error" in message):
        if "error" in message:
            raise InvalidTick(f"exchange error reply: {orjson.dumps(message['error']).decode()}")
        return Control.SUBSCRIPTION_REPLY
    kind = message.get("e")
    if kind == "24hrTicker":  # first: ticks are nearly every message
        try:
            fields = message["s"], message["E"], message["c"], message["v"]
        except KeyError:
            missing = [name for name in ("s", "E", "c", "v") if name not in message]
            raise InvalidTick(f"missing fields: {', '.join(missing)}") from None
        return validate_tick(*fields, SOURCE)
    if kind == "kline":
        return _kline(message)
    if kind == "serverShutdown":
        return Control.SERVER_SHUTDOWN
    shown = repr(kind) if not isinstance(kind, str) or len(kind) <= 40 else repr(kind[:40]) + "…"
    raise InvalidTick(f"unknown message shape: event type {shown}")


def _kline(message: dict[str, Any]) -> WireCandle | Control:
    k = message.get("k")
    if not isinstance(k, dict):
        raise InvalidCandle("kline without its candle object `k`")
    closed = k.get("x")
    if not isinstance(closed, bool):
        raise InvalidCandle(f"kline `x` (closed) is not true or false: {_shown(closed)}")
    if not closed:
        return Control.OPEN_CANDLE
    missing = [name for name in ("t", "s", "i", "o", "h", "l", "c", "v") if name not in k]
    if missing:
        raise InvalidCandle(f"missing kline fields: {', '.join(missing)}")
    if k["i"] != INTERVAL:
        raise InvalidCandle(f"unsupported kline interval: {_shown(k['i'])} (only {INTERVAL})")
    return validate_candle(
        SOURCE,
        k["s"],
        k["t"],
        (k["o"], k["h"], k["l"], k["c"]),
        volume=k["v"],
        quote_volume=k.get("q"),
        trades=k.get("n"),
        origin="stream",
    )


def rest_candle(symbol: str, row: Any) -> WireCandle:
    """One row of `GET /api/v3/klines` → a repaired candle; InvalidCandle says why not."""
    if not isinstance(row, list) or len(row) < 9:
        raise InvalidCandle(f"kline row is not an array of at least 9 values: {_shown(row)}")
    return validate_candle(
        SOURCE,
        symbol,
        row[0],
        (row[1], row[2], row[3], row[4]),
        volume=row[5],
        quote_volume=row[7],
        trades=row[8],
        origin="repair",
    )


def _shown(value: Any) -> str:
    if isinstance(value, dict | list):
        return "{...}" if isinstance(value, dict) else "[...]"
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "…"
