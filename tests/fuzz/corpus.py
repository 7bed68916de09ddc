"""A seeded corpus of bad input, each item labelled with the reason kind it must be dead-lettered with.

Two grammars: Binance stream messages (what the ingestor reads from the WebSocket) and wire ticks (what the MA job
reads from Kafka). Each bad item is a valid message with exactly one thing broken (truncated JSON, wrong types,
huge numbers, NaN/Infinity, unicode, deep nesting, 1 MB frames, wrong event types, exchange error replies, binary
frames...), so the expected kind follows from how it was made, not from the parser under test. Valid ticks are
interleaved, in per-symbol event-time order, some of them in unusual but valid shapes (extra nested fields,
unicode in fields nobody reads, numbers as strings with blanks).

The same seed gives the same corpus, byte for byte.
"""

# Look-alike characters are the point of a fuzz corpus (RUF001), and a grammar is one branch per production
# (PLR0911, PLR0912).
# ruff: noqa: RUF001, PLR0911, PLR0912
from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from tickpipe.schema import Tick

SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "BNBUSDT")
START_MS = 1_790_000_000_000
MEGABYTE = 1_000_000
TICK = "tick"  # the label of a valid tick
CONTROL = "control"  # a subscription reply: neither a tick nor a dead letter

UNICODE = ["BTCÜSDT", "ＢＴＣＵＳＤＴ", "比特币", "BTC🚀", "ΒΤΣ", "BTC\u200bUSDT", "\ud800X", "ﬁUSDT", "ı" * 3]
UNICODE_NUMBERS = ["１２３", "١٢٣", "1_000", "12\u00a0", "⁵", "½", "1,5", "0x10", "1.5f", "--1", "1e", "e5", ".", ""]


@dataclass(frozen=True)
class Item:
    payload: bytes | None  # None: a Kafka record without a value
    label: str  # TICK, CONTROL, or the expected reason kind
    key: str | None = None  # the Kafka key (job corpus)
    tick: Tick | None = None  # the tick, for TICK items


@dataclass
class Corpus:
    items: list[Item] = field(default_factory=list)

    @property
    def ticks(self) -> list[Tick]:
        return [item.tick for item in self.items if item.tick is not None]

    @property
    def bad(self) -> list[Item]:
        return [item for item in self.items if item.label not in (TICK, CONTROL)]

    def expected_kinds(self) -> Counter[str]:
        return Counter(item.label for item in self.bad)


class _Clock:
    """Per-symbol event times, strictly increasing: every valid tick is new to the job and the ingestor."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.last = dict.fromkeys(SYMBOLS, START_MS)
        self.prices = {symbol: rng.uniform(1, 50_000) for symbol in SYMBOLS}
        self.history: dict[str, list[Tick]] = {symbol: [] for symbol in SYMBOLS}

    def tick(self) -> Tick:
        symbol = self.rng.choice(SYMBOLS)
        self.last[symbol] += self.rng.randint(1, 1500)
        self.prices[symbol] *= 1 + self.rng.gauss(0, 0.002)
        tick = Tick(symbol, self.last[symbol], self.prices[symbol], round(self.rng.uniform(0, 1e6), 3))
        self.history[symbol].append(tick)
        return tick


def _nested(depth: int, rng: random.Random) -> str:
    opener = rng.choice(["[", '{"a":'])
    closer = "]" if opener == "[" else "}"
    return opener * depth + "1" + closer * depth


def _truncate(text: str, rng: random.Random) -> str:
    return text[: rng.randrange(1, len(text))]


def _garbage(rng: random.Random, size: int) -> bytes:
    # Starts with a byte no UTF-8 text starts with: whatever follows, it is not JSON.
    return bytes([rng.randrange(0x80, 0xC0)]) + rng.randbytes(size)


def _wrong_value(rng: random.Random) -> object:
    return rng.choice([None, True, False, [1, 2], {"x": 1}, [], {}])


# -- Binance messages (the ingestor) --------------------------------------------------------------------------------


def _event(tick: Tick) -> dict[str, object]:
    return {
        "e": "24hrTicker",
        "E": tick.event_time_ms,
        "s": tick.symbol,
        "p": "0.5",
        "c": repr(tick.price),
        "v": repr(tick.volume),
        "q": "1.0",
    }


def _combined(event: object, symbol: str = "btcusdt") -> dict[str, object]:
    return {"stream": f"{symbol.lower()}@ticker", "data": event}


def _dumps(message: object) -> bytes:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8", errors="surrogatepass")


def binance_bad(rng: random.Random, clock: _Clock) -> tuple[bytes, str]:
    """One bad WebSocket message and the reason kind `normalize` must give it."""
    template = Tick(rng.choice(SYMBOLS), clock.last[SYMBOLS[0]] + 1, 100.0, 1.0)
    event = _event(template)
    wrap: Callable[[object], object] = (lambda e: _combined(e)) if rng.random() < 0.7 else (lambda e: e)  # noqa: PLW0108
    case = rng.randrange(22)
    if case == 0:
        return _dumps(wrap(event))[: rng.randrange(1, 60)], "not JSON"  # truncated
    if case == 1:
        return _garbage(rng, rng.randrange(0, 300)), "not JSON"  # a binary frame
    if case == 2:
        field_name = rng.choice(["c", "v"])
        name = "price" if field_name == "c" else "volume"
        return _dumps(wrap({**event, field_name: _wrong_value(rng)})), f"{name} is not a number"
    if case == 3:
        return _dumps(wrap({**event, "E": rng.choice([str(template.event_time_ms), 1.5e12, None, -5, 0, 10**17])})), (
            "invalid event time"
        )
    if case == 4:
        return _dumps(wrap({**event, "s": rng.choice([42, None, ["BTCUSDT"], "A", "X" * 21, "BTC-USDT", ""])})), (
            "invalid symbol"
        )
    if case == 5:  # huge numbers
        field_name = rng.choice(["c", "v"])
        name = "price" if field_name == "c" else "volume"
        value = rng.choice(["1e400", "1" * 400, "-1e999"]) if field_name == "v" else rng.choice(["1e400", "1" * 400])
        return _dumps(wrap({**event, field_name: value})), f"{name} is not finite"
    if case == 6:  # a number beyond a double in the JSON itself
        text = _dumps(wrap(event)).decode().replace('"c":"100.0"', '"c":1e400')
        return text.encode(), "not JSON"
    if case == 7:  # NaN and Infinity
        if rng.random() < 0.5:
            field_name = rng.choice(["c", "v"])
            name = "price" if field_name == "c" else "volume"
            return _dumps(wrap({**event, field_name: rng.choice(["NaN", "nan", "Infinity", "-inf", "+INF"])})), (
                f"{name} is not finite"
            )
        text = _dumps(wrap(event)).decode().replace('"c":"100.0"', f'"c":{rng.choice(["NaN", "Infinity"])}')
        return text.encode(), "not JSON"
    if case == 8:
        return _dumps(wrap({**event, "s": rng.choice(UNICODE)})), "invalid symbol"
    if case == 9:
        return _dumps(wrap({**event, "c": rng.choice(UNICODE_NUMBERS)})), "price is not a number"
    if case == 10:
        return _nested(rng.choice([1100, 5000, 50_000]), rng).encode(), "not JSON"  # deeper than orjson's 1024
    if case == 11:
        payload = _nested(rng.choice([2, 50, 500]), rng).encode()
        return payload, "not a JSON object" if payload.startswith(b"[") else "unknown message shape"
    if case == 12:
        kind = rng.choice(["trade", "kline", "depthUpdate", 5, None, "24HRTICKER", "24hrMiniTicker"])
        # A ticker's fields under the kline event type: a kline without its candle (the ingestor reads klines too).
        label = "kline without its candle object `k`" if kind == "kline" else "unknown message shape"
        return _dumps(wrap({**event, "e": kind})), label
    if case == 13:
        reply = {"id": rng.randrange(100), "error": {"code": 2, "msg": rng.choice(["Invalid request", "x" * 500])}}
        return _dumps(reply), "exchange error reply"
    if case == 14:
        missing = rng.sample(["s", "E", "c", "v"], rng.randint(1, 4))
        return _dumps(wrap({k: v for k, v in event.items() if k not in missing})), "missing fields"
    if case == 15:
        return _dumps({"stream": "btcusdt@ticker", "data": rng.choice([None, True, 7, "x", [1, 2]])}), (
            "combined-stream data is not a JSON object"
        )
    if case == 16:
        return rng.choice([b"[1,2]", b'"text"', b"42", b"null", b"true", b"[]"]), "not a JSON object"
    if case == 17:
        return _dumps(wrap({**event, "c": rng.choice(["0", "-1", "0.0", "-0"])})), "price must be positive"
    if case == 18:
        return _dumps(wrap({**event, "v": rng.choice(["-1", "-0.001", "-1e5"])})), "volume must not be negative"
    if case == 19:  # a 1 MB frame (rarely: each is a megabyte)
        if rng.random() < 0.05:
            if rng.random() < 0.5:
                return _dumps(wrap({**event, "s": "B" * MEGABYTE})), "invalid symbol"
            return b"{" + b"x" * MEGABYTE, "not JSON"
        return _dumps(wrap({**event, "s": "B" * rng.randrange(21, 5000)})), "invalid symbol"
    if case == 20:
        return rng.choice([b" ", b"\n", b"\x00", b"{", b"}", b"]", b'{"stream"']), "not JSON"
    # Every kind of broken UTF-8 and control character inside an otherwise valid message's symbol.
    return _dumps(wrap({**event, "s": rng.choice(["BTC\x00", "BTC\nUSDT", "BTC\ufffd", "\x7fBTC", "BTC USDT"])})), (
        "invalid symbol"
    )


def binance_valid(rng: random.Random, tick: Tick) -> bytes:
    event = _event(tick)
    shape = rng.randrange(10)
    if shape == 0:
        event["extra"] = {"nested": [[[{"deep": "ünïcødé 🚀"}]]]}
    elif shape == 1:
        event["c"] = f" \x01{event['c']}\x1f "  # blanks and controls around it: Java's trim() takes them off, so do we
    elif shape == 2:
        event["s"] = tick.symbol.lower()
    return _dumps(_combined(event, tick.symbol) if shape != 3 else event)


def binance_corpus(bad: int = 10_000, valid: int = 2_000, seed: int = 17) -> Corpus:
    rng = random.Random(seed)
    clock = _Clock(rng)
    corpus = Corpus()
    total = bad + valid
    valid_left = valid
    for position in range(total):
        if rng.random() < valid_left / (total - position):
            valid_left -= 1
            tick = clock.tick()
            corpus.items.append(Item(binance_valid(rng, tick), TICK, tick=tick))
            if rng.random() < 0.01:
                # Subscription replies. Not serverShutdown: the ingestor rotates its connection on it, and this
                # corpus is sent over one connection.
                reply = rng.choice([b'{"result":null,"id":1}', b'{"id":7,"result":[]}'])
                corpus.items.append(Item(reply, CONTROL))
        else:
            payload, kind = binance_bad(rng, clock)
            corpus.items.append(Item(payload, kind))
    return corpus


# -- wire ticks (the MA job) ---------------------------------------------------------------------------------------


def _wire(tick: Tick) -> dict[str, object]:
    return json.loads(tick.to_json())  # type: ignore[no-any-return]


def wire_bad(rng: random.Random, clock: _Clock) -> tuple[bytes | None, str, str | None]:
    """One bad Kafka record of the tick topic, the reason kind both parsers must give it, and its key."""
    symbol = rng.choice(SYMBOLS)
    template = Tick(symbol, clock.last[symbol] + 1, 100.0, 1.0)
    record = _wire(template)
    key = rng.choice([symbol, None, "junk"])
    case = rng.randrange(24)
    if case == 0:
        return _truncate(template.to_json().decode(), rng).encode(), "not JSON", key
    if case == 1:
        return _garbage(rng, rng.randrange(0, 300)), "not JSON", key  # binary, invalid UTF-8
    if case == 2:
        return rng.choice([b"[1,2]", b'"text"', b"42", b"null", b"true", b"[]", b"1.5"]), "not a JSON object", key
    if case == 3:
        missing = rng.sample(list(record), rng.randint(1, 5))
        return _dumps({k: v for k, v in record.items() if k not in missing}), "missing fields", key
    if case == 4:
        return (
            _dumps({**record, "timestamp": rng.choice([1_790_000_000_000, None, True, [1], {"t": 1}])}),
            ("invalid timestamp"),
            key,
        )
    if case == 5:
        bad_time = rng.choice(
            [
                "yesterday",
                "2026-11-24 12:00:00Z",
                "2026-11-24T12:00:00",
                "20261124T120000Z",
                "2026-13-01T00:00:00Z",
                "2026-11-24T25:00:00Z",
                "9999-12-31T23:59:59-01:00",
                "0001-01-01T00:00:00+01:00",
                "2026-11-24t12:00:00z",
                "2026-W47-1T12:00:00Z",
                "+12026-11-24T12:00:00Z",
                "2026-11-24T12:00:00.1234567890Z",
                "２０２６-11-24T12:00:00Z",
                "",
            ]
        )
        return _dumps({**record, "timestamp": bad_time}), "invalid timestamp", key
    if case == 6:
        return (
            _dumps({**record, "timestamp": rng.choice(["1969-12-31T23:59:59.000Z", "1970-01-01T00:00:00Z"])}),
            ("invalid event time"),
            key,
        )
    if case == 7:
        return (
            _dumps({**record, "symbol": rng.choice([42, None, ["BTCUSDT"], "A", "X" * 21, "BTC-USDT", ""])}),
            ("invalid symbol"),
            key,
        )
    if case == 8:
        return _dumps({**record, "symbol": rng.choice(UNICODE)}), "invalid symbol", key
    if case == 9:
        name = rng.choice(["price", "volume"])
        return _dumps({**record, name: _wrong_value(rng)}), f"{name} is not a number", key
    if case == 10:
        name = rng.choice(["price", "volume"])
        return _dumps({**record, name: rng.choice(UNICODE_NUMBERS)}), f"{name} is not a number", key
    if case == 11:  # huge numbers: beyond a double (not finite) or longer than any parser reads (not JSON)
        name = rng.choice(["price", "volume"])
        text = template.to_json().decode()
        old = f'"{name}":{record[name]!r}'
        if rng.random() < 0.5:
            return (
                text.replace(old, f'"{name}":{rng.choice(["1e400", "1" * 400, "9" * 500])}').encode(),
                (f"{name} is not finite"),
                key,
            )
        return text.replace(old, f'"{name}":{"1" * rng.choice([1001, 5000, 100_000])}').encode(), "not JSON", key
    if case == 12:  # NaN and Infinity, as JSON literals (both parsers read them) and as strings
        name = rng.choice(["price", "volume"])
        literal = rng.choice(["NaN", "Infinity", "-Infinity"])
        text = template.to_json().decode()
        if rng.random() < 0.5:
            return (
                text.replace(f'"{name}":{record[name]!r}', f'"{name}":{literal}').encode(),
                (f"{name} is not finite"),
                key,
            )
        return _dumps({**record, name: rng.choice(["NaN", "-nan", "inf", "Infinity"])}), f"{name} is not finite", key
    if case == 13:
        return _nested(rng.choice([2000, 20_000]), rng).encode(), "not JSON", key
    if case == 14:
        payload = _nested(rng.choice([2, 50, 500]), rng).encode()
        return payload, "not a JSON object" if payload.startswith(b"[") else "missing fields", key
    if case == 15:
        return _dumps({**record, "price": rng.choice([0, -1, "0", "-0.0", -1e-9])}), "price must be positive", key
    if case == 16:
        return _dumps({**record, "volume": rng.choice([-1, "-1", -1e-9])}), "volume must not be negative", key
    if case == 17:  # 1 MB records (rarely: each is a megabyte)
        if rng.random() < 0.05:
            if rng.random() < 0.5:
                return _dumps({**record, "symbol": "B" * (MEGABYTE - 200)}), "invalid symbol", key
            return b"{" + b"x" * (MEGABYTE - 200), "not JSON", key
        return _dumps({**record, "symbol": "B" * rng.randrange(21, 5000)}), "invalid symbol", key
    if case == 18:  # a Binance message on the tick topic
        return _dumps(_combined(_event(template))), "missing fields", key
    if case == 19:
        # None: a record without a value (a tombstone), which the raw format hands over as NULL
        return rng.choice([None, b"", b" ", b"\n", b"{", b"{}{}", b'{"symbol"', b"\x00"]), "not JSON", key
    if case == 20:
        return _dumps(record)[:-1] + b"} trailing", "not JSON", key
    if case == 21:
        return (
            _dumps({**record, "symbol": rng.choice(["BTC\x00", "BTC\nUSDT", "BTC\ufffd", "\x7fBTC", "BTC USDT"])}),
            ("invalid symbol"),
            key,
        )
    if case == 22 and clock.history[symbol]:  # a tick the job has already seen: the same again, or an older one
        seen = clock.history[symbol]
        if rng.random() < 0.5:
            return seen[-1].to_json(), "duplicate tick", symbol
        older = Tick(symbol, seen[-1].event_time_ms - rng.randint(1, 10_000), 100.0, 1.0)
        return older.to_json(), "out-of-order tick", symbol
    return _dumps({**record, "price": rng.choice([True, False])}), "price is not a number", key


def wire_valid(rng: random.Random, tick: Tick) -> bytes:
    shape = rng.randrange(10)
    if shape == 0:
        return _dumps({**_wire(tick), "extra": {"nested": [[[{"deep": "ünïcødé 🚀"}]]] * 3}})
    if shape == 1:
        return _dumps({**_wire(tick), "price": f" \x02{tick.price!r}\t", "volume": repr(tick.volume)})
    if shape == 2:
        return _dumps({**_wire(tick), "symbol": tick.symbol.lower()})  # a source's symbols in either case
    return tick.to_json()


def wire_corpus(bad: int = 10_000, valid: int = 2_000, seed: int = 23) -> Corpus:
    """Records for the tick topic; valid ticks and duplicates keyed by symbol (the job's per-symbol order)."""
    rng = random.Random(seed)
    clock = _Clock(rng)
    corpus = Corpus()
    total = bad + valid
    valid_left = valid
    for position in range(total):
        if rng.random() < valid_left / (total - position):
            valid_left -= 1
            tick = clock.tick()
            corpus.items.append(Item(wire_valid(rng, tick), TICK, key=tick.symbol, tick=tick))
        else:
            payload, kind, key = wire_bad(rng, clock)
            corpus.items.append(Item(payload, kind, key=key))
    return corpus
