"""Binance stream messages → ticks and candles. Pure functions: the ingestor's only knowledge of Binance's payloads.

A @ticker event (24hrTicker) carries `s` symbol, `E` event time (ms), `c` last price and `v` base volume, the
numbers as strings; a combined stream wraps it as {"stream": ..., "data": ...}. A @kline_1m event (`e` = "kline")
carries the candle in `k`: `t` open time, `T` close time (ms), `s` symbol, `i` interval, `o h l c` prices, `v` base
and `q` quote volume (strings), `n` trades and `x` whether the candle is closed; the open candle is pushed every ~2 s,
the closed one once, when its minute ends. REST `GET /api/v3/klines` answers the same candles as arrays
`[t, o, h, l, c, v, T, q, n, V, Q, B]` (rest_candle). Anything that is not a tick, a closed candle, an open candle,
a subscription reply or a `serverShutdown` notice is rejected with a reason (InvalidTick, or its subclass
InvalidCandle for a kline) for the dead-letter topic.

Two paths, one verdict. Nearly every message is a combined-stream 24hrTicker of a symbol seen before: `ordinary_tick`
decodes it with msgspec into a Struct of the spot ticker's fields (typed attributes, no dict; a ticker with other
fields into one of `s`, `E`, `c` and `v` alone that skips the rest, behind guards) and hands back the tick, or None
for anything it cannot vouch for. Everything else takes `normalize_full` (orjson, the whole message), which gives
every reason. The fast path returns a tick only where the full path returns the same tick:
tests/ingestor/test_normalize_paths.py runs both over the fuzz corpus, the exchange's frames and edits of them.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Annotated, Any

import msgspec
import orjson

from tickpipe.candle_schema import INTERVAL, InvalidCandle, WireCandle, validate_candle
from tickpipe.schema import (
    MAX_EVENT_TIME_MS,
    InvalidTick,
    Tick,
    known_symbols,
    new_tick,
    plain_decimal,
    reason_kind,
    validate_tick,
)

__all__ = ["SOURCE", "Control", "normalize", "normalize_full", "ordinary_tick", "reason_kind", "rest_candle"]

SOURCE = "binance"


class Control(Enum):
    SUBSCRIPTION_REPLY = "subscription_reply"  # {"result": ..., "id": ...}
    SERVER_SHUTDOWN = "server_shutdown"  # the exchange will close this connection soon: rotate now
    OPEN_CANDLE = "open_candle"  # a kline update of a minute not yet over: not published (only closed candles are)


class _Ticker(msgspec.Struct):
    """The 24hrTicker fields a tick is made of; msgspec skips the others without building them."""

    e: str
    E: int
    s: str
    c: str
    v: str


class _Combined(msgspec.Struct):
    stream: str
    data: _Ticker


# An integer well within a double (orjson refuses a message with a number beyond one, even in a field nobody reads).
_Int = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]


class _SpotTicker(_Ticker, forbid_unknown_fields=True):
    """Binance's spot 24hrTicker, every field of it typed: a message with no other field has nothing skipped unread,
    so nothing the full path would refuse can hide in it (see _BIG_NUMBER)."""

    price_change: str = msgspec.field(default="", name="p")
    price_change_percent: str = msgspec.field(default="", name="P")
    weighted_average: str = msgspec.field(default="", name="w")
    previous_close: str = msgspec.field(default="", name="x")
    last_quantity: str = msgspec.field(default="", name="Q")
    bid: str = msgspec.field(default="", name="b")
    bid_quantity: str = msgspec.field(default="", name="B")
    ask: str = msgspec.field(default="", name="a")
    ask_quantity: str = msgspec.field(default="", name="A")
    open: str = msgspec.field(default="", name="o")
    high: str = msgspec.field(default="", name="h")
    low: str = msgspec.field(default="", name="l")
    quote_volume: str = msgspec.field(default="", name="q")
    open_time: _Int = msgspec.field(default=0, name="O")
    close_time: _Int = msgspec.field(default=0, name="C")
    first_trade: _Int = msgspec.field(default=0, name="F")
    last_trade: _Int = msgspec.field(default=0, name="L")
    trades: _Int = msgspec.field(default=0, name="n")


class _SpotCombined(msgspec.Struct, forbid_unknown_fields=True):
    stream: str
    data: _SpotTicker


_decode_spot = msgspec.json.Decoder(_SpotCombined).decode
_decode_combined = msgspec.json.Decoder(_Combined).decode
_known_symbol = known_symbols(SOURCE).get
# Where msgspec and orjson differ, the fast path must not decide. orjson refuses numbers beyond a double (an exponent
# or 309+ integer digits), and nesting deeper than 1024; msgspec skips a field it does not read without evaluating its
# number, and nests as deep as Python's recursion limit. A message with fields the spot ticker does not have is only
# decoded by the fast path without a '[', with no more than the two objects of a combined ticker, and without a
# number with an exponent or more than 300 digits and points (a number follows a ':' when there is no array).
# (Possessive and bounded: no backtracking over the digits of the ordinary numbers.)
_BIG_NUMBER = re.compile(r":[ \t\n\r]*+-?[0-9][0-9.]{0,299}+[eE0-9]")


def normalize(raw: str | bytes) -> Tick | WireCandle | Control:
    """One WebSocket message → a tick or a control notice; InvalidTick (and nothing else) for anything else."""
    tick = ordinary_tick(raw)
    return tick if tick is not None else normalize_full(raw)


def ordinary_tick(raw: str | bytes) -> Tick | None:
    """The tick of a combined-stream 24hrTicker in the exchange's usual form, of a symbol validate_tick accepted
    before, with plain decimal prices; None for anything else, which normalize_full decides (this never rejects)."""
    text = raw if type(raw) is str else _strict_text(raw)
    if text is None:
        return None
    data = _spot_ticker(text)
    if data is None:
        if "[" in text or text.count("{") != 2 or _BIG_NUMBER.search(text) is not None:
            return None
        try:
            data = _decode_combined(text).data
        except Exception:  # whatever it cannot decode (malformed, another shape, a lone surrogate) is the full path's
            return None
    symbol = _known_symbol(data.s) if data.e == "24hrTicker" and 0 < data.E <= MAX_EVENT_TIME_MS else None
    price, volume = plain_decimal(data.c), plain_decimal(data.v)
    if symbol is None or price is None or volume is None or price <= 0:
        return None
    return new_tick(symbol, data.E, price, volume, SOURCE)


def _spot_ticker(text: str) -> _Ticker | None:
    try:
        return _decode_spot(text).data
    except Exception:  # not a spot ticker with the spot ticker's fields alone: decided as any other message
        return None


def _strict_text(raw: object) -> str | None:
    # Strict: orjson refuses invalid UTF-8 anywhere in a message, msgspec only in the fields it reads.
    if type(raw) is not bytes:
        return None
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return None


def normalize_full(raw: str | bytes) -> Tick | WireCandle | Control:
    """normalize for any message: orjson decodes it whole and bounds it for us (nesting deeper than 1024 and numbers
    beyond a double are "not JSON")."""
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
