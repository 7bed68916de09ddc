"""Binance stream messages → ticks. Pure functions: the ingestor's only knowledge of Binance's payloads.

A @ticker event (24hrTicker) carries `s` symbol, `E` event time (ms), `c` last price and `v` base volume, the
numbers as strings; a combined stream wraps it as {"stream": ..., "data": ...}. Anything that is not a tick, a
subscription reply or a `serverShutdown` notice is rejected with a reason (InvalidTick) for the dead-letter topic.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

import orjson

from tickpipe.schema import InvalidTick, Tick, reason_kind, validate_tick

__all__ = ["SOURCE", "Control", "normalize", "reason_kind"]

SOURCE = "binance"


class Control(Enum):
    SUBSCRIPTION_REPLY = "subscription_reply"  # {"result": ..., "id": ...}
    SERVER_SHUTDOWN = "server_shutdown"  # the exchange will close this connection soon: rotate now


def normalize(raw: str | bytes) -> Tick | Control:
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
    if kind == "serverShutdown":
        return Control.SERVER_SHUTDOWN
    if kind != "24hrTicker":
        shown = repr(kind) if not isinstance(kind, str) or len(kind) <= 40 else repr(kind[:40]) + "…"
        raise InvalidTick(f"unknown message shape: event type {shown}")
    missing = [name for name in ("s", "E", "c", "v") if name not in message]
    if missing:
        raise InvalidTick(f"missing fields: {', '.join(missing)}")
    return validate_tick(message["s"], message["E"], message["c"], message["v"], SOURCE)
