"""The tick: the one message every stage agrees on, and the dead-letter record for what is not a tick.

On the wire (Kafka topic `price-ticks`, key = the tick's series, `series_key`) a tick is UTF-8 JSON:
    {"symbol": "BTCUSDT", "timestamp": "2026-11-24T12:00:00.123Z", "price": 97000.5, "volume": 1234.5,
     "source": "binance"}
`timestamp` is the exchange's event time, ISO-8601 UTC with milliseconds.
"""

from __future__ import annotations

import functools
import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

TICK_FIELDS = ("symbol", "timestamp", "price", "volume", "source")

# The symbol rules, one per source, defined here once. Each says which symbols its source has (matched in either
# case, ASCII only) and the one case a symbol is stored in (ticks, Kafka, tables):
#   binance    2 to 20 letters and digits (spot symbols: BTCUSDT), stored upper case;
#   coingecko  <coin id>/<vs currency> (bitcoin/usd): a CoinGecko id (letters, digits, hyphens; it is not a ticker)
#              and the quote currency the price is in, stored lower case as CoinGecko writes both;
#   yahoo      Yahoo Finance's symbols: AAPL, BRK-B, BTC-USD, EURUSD=X, 0700.HK, ^GSPC (an index), ES=F (a future):
#              letters and digits in parts joined by '.', '-' or '=', an optional leading '^', at most 20 characters,
#              stored upper case.
# Settings (SYMBOLS per SOURCE), the ticks (validate_tick) and the JVM parser (services/ma-job/udf ParseTick: the same
# patterns, tests/ma_job/test_parse_tick.py runs both parsers on the same payloads) apply these. is_symbol(text) alone
# is Binance's rule, as before: the alert levels and migration 0003's CHECK state it for the stored form
# (SYMBOL_SQL_PATTERN; an applied migration cannot change, so tests/dlq/test_symbol_rule.py holds them equal).
SOURCES = ("binance", "coingecko", "yahoo")
SYMBOL_RULE = "2 to 20 letters and digits"
SYMBOL_SQL_PATTERN = "^[A-Z0-9]{2,20}$"


@dataclass(frozen=True, slots=True)
class SymbolRule:
    """One source's symbols: `pattern` (ASCII, either case) and at most `max_length` characters, stored upper or
    lower case."""

    pattern: re.Pattern[str]
    max_length: int
    upper: bool
    description: str
    example: str

    def matches(self, text: object) -> bool:
        return isinstance(text, str) and len(text) <= self.max_length and self.pattern.fullmatch(text) is not None

    def stored(self, text: str) -> str:
        """The stored form of a symbol this rule matches (ASCII only: upper()/lower() change nothing else)."""
        return text.upper() if self.upper else text.lower()


SYMBOL_RULES = {
    "binance": SymbolRule(re.compile(r"[A-Za-z0-9]{2,20}"), 20, True, SYMBOL_RULE, "btcusdt"),
    "coingecko": SymbolRule(
        re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,99}/[A-Za-z]{2,10}"),
        111,
        False,
        "<coin id>/<vs currency>: an id of letters, digits and hyphens, a currency of 2 to 10 letters",
        "bitcoin/usd",
    ),
    "yahoo": SymbolRule(
        re.compile(r"\^?[A-Za-z0-9]+(?:[.=-][A-Za-z0-9]+)*"),
        20,
        True,
        "up to 20 letters and digits in parts joined by '.', '-' or '=', optionally after '^'",
        "AAPL,BTC-USD,^GSPC",
    ),
}

# Event times a tick may carry: after 1970, before the year 10000 (what ISO-8601 with 4-digit years, PostgreSQL
# and Flink's TIMESTAMP(3) all represent).
MAX_EVENT_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
# JSON numbers longer than this are not read (Python's int() stops at 4300 digits), nor documents nested deeper than
# this (json.loads would hit the recursion limit near 1000). The JVM parser applies the same limits.
MAX_NUMBER_LENGTH = 1000
MAX_NESTING = 500
# A reason is one line of at most this many characters: it is a label and a hint, never a dump of the input.
MAX_REASON_LENGTH = 200
# A dead letter keeps at most this many characters of the raw payload: a record must fit in a Kafka message
# (1 MB) even when every character needs a 6-byte JSON escape. Longer payloads are cut and marked truncated.
MAX_RAW_LENGTH = 65_536
# Version 2 added `v`, `raw_length` and `raw_truncated`; version 1 records (without `v`) have the raw payload whole.
DEAD_LETTER_VERSION = 2
_TIMESTAMP = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,9})?)?(?:Z|[+-][0-9]{2}:[0-9]{2})"
)
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NOT_FINITE = frozenset({"nan", "inf", "infinity"})
_BLANK = "".join(map(chr, range(33)))  # what Java's String.trim() removes: controls and space
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
# Per source, symbol as sent → stored form, for symbols validate_tick found valid; bounded (a feed of made-up
# symbols cannot grow it past this: those are matched every time instead).
MAX_KNOWN_SYMBOLS = 100_000
_KNOWN_SYMBOLS: dict[str, dict[str, str]] = {source: {} for source in SOURCES}


def is_symbol(text: object, source: str = "binance") -> bool:
    """Whether `text` is a symbol of `source` (in either case); by default Binance's: 2 to 20 ASCII letters and
    digits. False for an unknown source."""
    rule = SYMBOL_RULES.get(source)
    return rule is not None and rule.matches(text)


def one_line(reason: str) -> str:
    """A reason as the dead-letter record carries it: control characters as spaces, at most MAX_REASON_LENGTH."""
    text = _CONTROL.sub(" ", reason)
    return text if len(text) <= MAX_REASON_LENGTH else text[: MAX_REASON_LENGTH - 1] + "…"


def reason_kind(reason: str) -> str:
    """The kind of a reason, a bounded label: the text before its first detail ("price is not a number: 'x'" →
    "price is not a number", "price must be positive, got -1" → "price must be positive")."""
    return reason.split(":", 1)[0].split(",", 1)[0][:60].strip()


class InvalidTick(ValueError):
    """A record that is not a valid tick; `str(error)` is the reason recorded in the dead-letter topic (one line,
    bounded: see one_line)."""

    def __init__(self, reason: str) -> None:
        super().__init__(one_line(reason))


def series_key(source: str, symbol: str) -> str:
    """A series (one symbol of one source) as one string: the Kafka key of its ticks, the MA job's partition key.
    A Binance series is its symbol, the key its ticks had before there were other sources: an upgrade moves no
    series to another partition and the keyed job's saved windows carry on. Other sources' series are
    `<source>:<symbol>` (no source's symbols contain ':'), so the same symbol from two sources never shares one."""
    return symbol if source == "binance" else f"{source}:{symbol}"


@dataclass(frozen=True, slots=True)
class Tick:
    symbol: str
    event_time_ms: int
    price: float
    volume: float
    source: str = "binance"

    @property
    def key(self) -> str:
        """The tick's series (series_key): its Kafka key and the MA job's partition key."""
        return series_key(self.source, self.symbol)

    @property
    def timestamp(self) -> str:
        return format_timestamp(self.event_time_ms)

    def to_json(self) -> bytes:
        # Hand-formatted: this is the ingestor's hot path, and repr() of a float round-trips exactly. The timestamp
        # is format_timestamp's, inlined (two calls fewer per tick).
        seconds, millis = divmod(self.event_time_ms, 1000)
        return (
            f'{{"symbol":"{self.symbol}","timestamp":"{_second(seconds)}.{millis:03d}Z","price":{self.price!r},'
            f'"volume":{self.volume!r},"source":"{self.source}"}}'
        ).encode()


# A frozen dataclass's __init__ sets each field through object.__setattr__, most of what making a Tick costs; the
# slots' own setters do the same for less. Only for values already validated (validate_tick, the ingestor's fast path).
_SET_TICK_FIELDS = tuple(
    Tick.__dict__[name].__set__ for name in ("symbol", "event_time_ms", "price", "volume", "source")
)
_new = object.__new__


def new_tick(symbol: str, event_time_ms: int, price: float, volume: float, source: str) -> Tick:
    """Tick(symbol, event_time_ms, price, volume, source), made faster: the same frozen object."""
    tick = _new(Tick)
    set_symbol, set_time, set_price, set_volume, set_source = _SET_TICK_FIELDS
    set_symbol(tick, symbol)
    set_time(tick, event_time_ms)
    set_price(tick, price)
    set_volume(tick, volume)
    set_source(tick, source)
    return tick


def format_timestamp(event_time_ms: int) -> str:
    seconds, millis = divmod(event_time_ms, 1000)
    return f"{_second(seconds)}.{millis:03d}Z"


@functools.lru_cache(maxsize=4096)
def _second(seconds: int) -> str:
    # Ticks of one second share this prefix: formatted once, not for each of the thousands of them.
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


def parse_timestamp(value: str) -> int:
    """ISO-8601 `yyyy-MM-ddTHH:mm[:ss[.f…]]` with `Z` or `±HH:MM` → epoch milliseconds; ValueError if it is not one
    or its UTC year is not 1 to 9999. Only this form: fromisoformat() alone also takes week dates, basic formats and
    any separator, which the JVM parser (ISO_OFFSET_DATE_TIME) does not."""
    if not _TIMESTAMP.fullmatch(value):
        raise ValueError("not an ISO-8601 timestamp with a zone")
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    try:
        return round(moment.astimezone(UTC).timestamp() * 1000)
    except OverflowError:  # an offset that moves year 1 or 9999 out of range
        raise ValueError("timestamp out of range") from None


def _show(value: Any) -> str:
    """A value as a reason quotes it: its repr, abbreviated (a 1 MB string stays out of the reason)."""
    if isinstance(value, str) and len(value) > 40:
        return repr(value[:40]) + "…"
    if isinstance(value, dict | list):
        return "{...}" if isinstance(value, dict) else "[...]"
    return repr(value)


def validate_tick(symbol: Any, event_time_ms: Any, price: Any, volume: Any, source: str) -> Tick:
    """Build a Tick from loosely typed values (numbers may be strings, as Binance sends them). The symbol is checked
    against its source's rule and stored in that rule's case; an unknown source is rejected, last (the JVM parser
    checks in the same order, so both give the same first reason)."""
    rule = SYMBOL_RULES.get(source) if isinstance(source, str) else None
    # A symbol seen valid before is not matched again (the exchange repeats the same few hundred, every second).
    known = _KNOWN_SYMBOLS.get(source) if type(source) is str else None
    stored = known.get(symbol) if known is not None and type(symbol) is str else None
    if stored is None and rule is not None and not rule.matches(symbol):
        raise InvalidTick(f"invalid symbol: {_show(symbol)}")
    price_value = _number("price", price)
    volume_value = _number("volume", volume)
    if price_value <= 0:
        raise InvalidTick(f"price must be positive, got {_show(price)}")
    if volume_value < 0:
        raise InvalidTick(f"volume must not be negative, got {_show(volume)}")
    if (
        isinstance(event_time_ms, bool)
        or not isinstance(event_time_ms, int)
        or not 0 < event_time_ms <= MAX_EVENT_TIME_MS
    ):
        raise InvalidTick(f"invalid event time: {_show(event_time_ms)}")
    if rule is None:
        raise InvalidTick(f"unknown source: {_show(source)} (expected {', '.join(SOURCES)})")
    if stored is None:
        stored = rule.stored(symbol)
        if known is not None and len(known) < MAX_KNOWN_SYMBOLS:
            known[symbol] = stored
    return new_tick(stored, event_time_ms, price_value, volume_value, source)


def known_symbols(source: str) -> Mapping[str, str]:
    """Symbols validate_tick has accepted from `source` (as sent) → their stored form; it grows as ticks come."""
    return _KNOWN_SYMBOLS[source]


def plain_decimal(text: str) -> float | None:
    """`text` as a number if it is a plain unsigned decimal of ASCII digits with at most one point ("97000.50", the
    exchange's form) and finite; None otherwise. _number reads every such string so, before its other checks."""
    digits = text.replace(".", "", 1)
    if digits.isdigit() and digits.isascii():  # ASCII digits only (isdigit alone takes "²")
        number = float(text)
        if number < math.inf:  # more than 308 digits: "not finite" (_number)
            return number
    return None


def _number(name: str, value: Any) -> float:
    """A JSON number, or a string holding a plain decimal one (Binance sends prices as strings), finite. Stricter
    than float(), which also takes "1_000" and non-ASCII digits: the JVM parser reads exactly the same strings."""
    if type(value) is str:  # the exchange's plain decimals ("97000.50"): the checks below would pass them all
        plain = plain_decimal(value)
        if plain is not None:
            return plain
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidTick(f"{name} is not a number: {_show(value)}")
    if isinstance(value, str):
        text = value.strip(_BLANK)
        unsigned = text[1:] if text.startswith(("+", "-")) else text
        if unsigned.lower() in _NOT_FINITE:
            raise InvalidTick(f"{name} is not finite: {_show(value)}")
        if not _DECIMAL.fullmatch(text):
            raise InvalidTick(f"{name} is not a number: {_show(value)}")
        value = text  # float() strips spaces only; the JVM's trim() also the control characters around it
    try:
        number = float(value)
    except OverflowError:  # an integer beyond the largest double
        number = math.inf
    if not math.isfinite(number):
        raise InvalidTick(f"{name} is not finite: {_show(value)}")
    return number


def _json_number(text: str) -> int | float:
    # json.loads would read a 5000-digit integer into int() (ValueError past 4300 digits) or keep a 10**400 that
    # float() cannot hold: numbers are bounded as the JVM parser bounds them.
    if len(text) > MAX_NUMBER_LENGTH:
        raise InvalidTick(f"not JSON: number longer than {MAX_NUMBER_LENGTH} characters")
    return float(text) if any(c in text for c in ".eE") else int(text)


def _nested_deeper_than(value: Any, limit: int) -> bool:
    """Whether containers nest more than `limit` deep (the root container is 1). Iterative: no recursion limit."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, dict | list):
            continue
        if depth > limit:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def load_record(raw: bytes | str | None, fields: tuple[str, ...]) -> dict[str, Any]:
    """A Kafka record's JSON object with `fields` present; InvalidTick with the reason otherwise. Numbers and nesting
    are bounded as the JVM parser bounds them."""
    if raw is None:  # a Kafka record without a value
        raise InvalidTick("not JSON: empty record")
    try:
        data = json.loads(raw, parse_int=_json_number, parse_float=_json_number)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InvalidTick(f"not JSON: {error.msg if hasattr(error, 'msg') else error}") from None
    except RecursionError:
        raise InvalidTick("not JSON: nested too deeply") from None
    if _nested_deeper_than(data, MAX_NESTING):
        raise InvalidTick("not JSON: nested too deeply")
    if not isinstance(data, dict):
        raise InvalidTick("not a JSON object")
    missing = [name for name in fields if name not in data]
    if missing:
        raise InvalidTick(f"missing fields: {', '.join(missing)}")
    return data


def parse_tick(raw: bytes | str | None) -> Tick:
    """Parse a tick from its wire JSON; raise InvalidTick with the reason (and nothing else, whatever `raw` is)."""
    data = load_record(raw, TICK_FIELDS)
    try:
        event_time_ms = parse_timestamp(data["timestamp"]) if isinstance(data["timestamp"], str) else None
    except ValueError:
        event_time_ms = None
    if event_time_ms is None:
        raise InvalidTick(f"invalid timestamp: {_show(data['timestamp'])}")
    return validate_tick(data["symbol"], event_time_ms, data["price"], data["volume"], str(data["source"]))


def dead_letter(raw: bytes | str | None, reason: str, stage: str, *, source: str | None = None) -> bytes:
    """The dead-letter record: the raw payload, verbatim (up to MAX_RAW_LENGTH characters, then marked truncated),
    with why it was rejected (one line) and by whom. `tickpipe dlq` reads these (tickpipe.dlq.records)."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    length = 0 if text is None else len(text)
    record = {
        "v": DEAD_LETTER_VERSION,
        "reason": one_line(reason),
        "stage": stage,
        "source": source,
        "raw": text if text is None or length <= MAX_RAW_LENGTH else text[:MAX_RAW_LENGTH],
        "raw_length": length,
        "raw_truncated": length > MAX_RAW_LENGTH,
        "rejected_at": format_timestamp(time.time_ns() // 1_000_000),
    }
    return json.dumps(record, separators=(",", ":")).encode()
