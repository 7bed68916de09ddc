"""Yahoo Finance's streamer message: `PricingData`, protobuf, as the streamer sends it base64-encoded in the
`message` field of each JSON frame (`wss://streamer.finance.yahoo.com/?version=2`).

The schema is the one the `yfinance` library ships (its pricing.proto), field for field; the message class is built
from it at import time with the `protobuf` package (no generated code, no hand decoding). Enums (quote type, market
hours) are varints on the wire and read here as plain ints. `price` and the other prices are 32-bit floats: the
exact price of a Yahoo tick is that float32 value, written as the shortest decimal that reads back to it
(`exact_price`), never the float32 widened to a float64's digits (189.9499969482422 for 189.95).
"""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

_F = descriptor_pb2.FieldDescriptorProto
# (name, number, type): the streamer's PricingData.
FIELDS = (
    ("id", 1, _F.TYPE_STRING),
    ("price", 2, _F.TYPE_FLOAT),
    ("time", 3, _F.TYPE_SINT64),  # event time, ms since the epoch
    ("currency", 4, _F.TYPE_STRING),
    ("exchange", 5, _F.TYPE_STRING),
    ("quote_type", 6, _F.TYPE_INT32),  # EQUITY 8, INDEX 9, CURRENCY 14, CRYPTOCURRENCY 41, ...
    ("market_hours", 7, _F.TYPE_INT32),  # PRE_MARKET 0, REGULAR_MARKET 1, POST_MARKET 2, EXTENDED_HOURS_MARKET 3
    ("change_percent", 8, _F.TYPE_FLOAT),
    ("day_volume", 9, _F.TYPE_SINT64),  # cumulative volume of the trading day
    ("day_high", 10, _F.TYPE_FLOAT),
    ("day_low", 11, _F.TYPE_FLOAT),
    ("change", 12, _F.TYPE_FLOAT),
    ("short_name", 13, _F.TYPE_STRING),
    ("expire_date", 14, _F.TYPE_SINT64),
    ("open_price", 15, _F.TYPE_FLOAT),
    ("previous_close", 16, _F.TYPE_FLOAT),
    ("strike_price", 17, _F.TYPE_FLOAT),
    ("underlying_symbol", 18, _F.TYPE_STRING),
    ("open_interest", 19, _F.TYPE_SINT64),
    ("options_type", 20, _F.TYPE_SINT64),
    ("mini_option", 21, _F.TYPE_SINT64),
    ("last_size", 22, _F.TYPE_SINT64),
    ("bid", 23, _F.TYPE_FLOAT),
    ("bid_size", 24, _F.TYPE_SINT64),
    ("ask", 25, _F.TYPE_FLOAT),
    ("ask_size", 26, _F.TYPE_SINT64),
    ("price_hint", 27, _F.TYPE_SINT64),
    ("vol_24hr", 28, _F.TYPE_SINT64),
    ("vol_all_currencies", 29, _F.TYPE_SINT64),
    ("from_currency", 30, _F.TYPE_STRING),
    ("last_market", 31, _F.TYPE_STRING),
    ("circulating_supply", 32, _F.TYPE_DOUBLE),
    ("market_cap", 33, _F.TYPE_DOUBLE),
)
REGULAR_MARKET = 1


def _message_class() -> Any:
    proto = descriptor_pb2.FileDescriptorProto(name="tickpipe/yahoo_pricing.proto", package="tickpipe.yahoo")
    proto.syntax = "proto3"
    message = proto.message_type.add(name="PricingData")
    for name, number, kind in FIELDS:
        message.field.add(name=name, number=number, type=kind, label=_F.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("tickpipe.yahoo.PricingData"))


PricingData = _message_class()


class InvalidFrame(ValueError):
    """A streamer frame that is not JSON with a base64 PricingData in `message`; the text says which part failed."""


def encode_frame(**fields: Any) -> str:
    """A streamer frame as Yahoo sends it (the simulator's side)."""
    message: Message = PricingData(**fields)
    return json.dumps({"type": "pricing", "message": base64.b64encode(message.SerializeToString()).decode()})


def decode_frame(frame: str | bytes) -> Message:
    """The PricingData of a streamer frame; raise InvalidFrame with the reason."""
    try:
        data = json.loads(frame)
    except (ValueError, UnicodeDecodeError):
        raise InvalidFrame("not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("message"), str):
        raise InvalidFrame("no base64 'message' field")
    try:
        raw = base64.b64decode(data["message"], validate=True)
    except ValueError:
        raise InvalidFrame("'message' is not base64") from None
    message: Message = PricingData()
    try:
        message.ParseFromString(raw)
    except DecodeError as error:
        raise InvalidFrame(f"'message' is not a PricingData protobuf: {error}") from None
    return message


def exact_price(value: float) -> str:
    """The float32 as its shortest round-tripping decimal: what Yahoo's price is, exactly."""
    as_float32 = struct.unpack("<f", struct.pack("<f", value))[0]
    for digits in range(1, 10):
        text = f"{as_float32:.{digits}g}"
        if struct.unpack("<f", struct.pack("<f", float(text)))[0] == as_float32:
            return text if "e" not in text else repr(float(text))
    return repr(as_float32)
