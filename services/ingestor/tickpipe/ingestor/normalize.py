"""Binance stream messages → ticks. Pure functions: the ingestor's only knowledge of Binance's payloads.

A @ticker event (24hrTicker) carries `s` symbol, `E` event time (ms), `c` last price and `v` base volume, the
numbers as strings; a combined stream wraps it as {"stream": ..., "data": ...}. Anything that is not a tick, a
subscription reply or a `serverShutdown` notice is rejected with a reason (InvalidTick) for the dead-letter topic.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import orjson

from tickpipe.schema import InvalidTick, Tick, validate_tick

SOURCE = "binance"


class Control(Enum):
    SUBSCRIPTION_REPLY = "subscription_reply"  # {"result": ..., "id": ...}
    SERVER_SHUTDOWN = "server_shutdown"  # the exchange will close this connection soon: rotate now


def normalize(raw: str | bytes) -> Tick | Control:
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
            raise InvalidTick(f"exchange error reply: {message['error']}")
        return Control.SUBSCRIPTION_REPLY
    kind = message.get("e")
    if kind == "serverShutdown":
        return Control.SERVER_SHUTDOWN
    if kind != "24hrTicker":
        raise InvalidTick(f"unknown message shape: event type {kind!r}")
    missing = [name for name in ("s", "E", "c", "v") if name not in message]
    if missing:
        raise InvalidTick(f"missing fields: {', '.join(missing)}")
    return validate_tick(message["s"], message["E"], message["c"], message["v"], SOURCE)


def reason_kind(reason: str) -> str:
    """A bounded metric label from a reason: the text before its first detail ("price is not a number: 'x'")."""
    return reason.split(":", 1)[0].split(",", 1)[0][:40]
