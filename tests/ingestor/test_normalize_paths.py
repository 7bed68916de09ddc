"""The ticker fast path (ordinary_tick, msgspec) and the full path (normalize_full, orjson) give the same verdicts.

normalize tries the fast path first: it must return a tick only where the full path returns the same tick, and
leave everything else to it. Held here over the fuzz corpus, the simulator's and the load generator's frames (which
must take the fast path), hand-made messages where the two decoders differ (duplicate keys, `"E": 1.0`, numbers
beyond a double in fields nobody reads, escapes, non-ASCII, nesting, invalid UTF-8, str and bytes) and random edits
of a real frame. A verdict is the result's repr (a float is not an int) or the rejection's reason, word for word.
"""

# Look-alike characters are the point of these inputs (RUF001).
# ruff: noqa: RUF001
from __future__ import annotations

import dataclasses
import json
import random
import sys
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import loadgen
from tests.fuzz.corpus import binance_corpus
from tickpipe.ingestor.normalize import normalize, normalize_full, ordinary_tick
from tickpipe.schema import InvalidTick, Tick, new_tick
from tickpipe.sim.candles import Candle, kline_event
from tickpipe.sim.market import Market, encode

pytestmark = pytest.mark.unit

relaxed = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=400)

# A ticker of the exchange, field by field (values as JSON text): the messages below are edits of it.
TICKER = [
    ("e", '"24hrTicker"'),
    ("E", "1796176635246"),
    ("s", '"BTCUSDT"'),
    ("p", '"-0.00008620"'),
    ("P", '"-0.056"'),
    ("w", '"97000.15473280"'),
    ("c", '"97000.50000000"'),
    ("Q", '"0.00100000"'),
    ("v", '"1234.50000000"'),
    ("q", '"0.10486944"'),
    ("O", "1796090235246"),
    ("C", "1796176635246"),
    ("F", "0"),
    ("L", "1"),
    ("n", "1"),
]
# JSON values (as text) where the two decoders could part: numbers beyond a double or long, exponents, escapes,
# surrogates, non-ASCII, nesting, literals orjson refuses, strings that are numbers only to a lenient reader.
EDGES = [
    "1e400",
    "-1e400",
    "1E+400",
    "1e-400",
    "1" * 400,
    "-" + "9" * 309,
    "9" * 308,
    "1" * 25,
    "18446744073709551616",
    "-9223372036854775809",
    "0." + "0" * 500 + "1",
    "1." + "5" * 400,
    "1.0",
    "1e3",
    "-0",
    "0",
    "NaN",
    "Infinity",
    "true",
    "false",
    "null",
    "[]",
    "{}",
    '{"a":{"b":[1,2,{"c":"ü"}]}}',
    "[" * 1100 + "]" * 1100,
    '{"a":' * 600 + "1" + "}" * 600,
    '"\\ud800"',
    '"\\udc00\\ud800"',
    '"\\ud83d\\ude80"',
    '"\\u0041\\u0042"',
    '"\\u0000"',
    '"\\\\\\""',
    '"ünïcødé 🚀"',
    '"\ud800"',
    '"1e5"',
    '" 1.5"',
    '"1."',
    '".5"',
    '"0.0"',
    '"-1"',
    '"+1"',
    '"１２３"',
    '"1_000"',
    '"' + "1" * 400 + '"',
    '"97000.50"',
    '"btcusdt"',
    '"BTCUSDT"',
    '"ETHUSDT"',
    '"24hrTicker"',
    '"24hr\\u0054icker"',
    '"B\\u0054CUSDT"',
    '"' + "x" * 300 + '"',
    "1796176635247",
]


def verdict(parse: Callable[[Any], object], raw: str | bytes) -> tuple[str, str]:
    try:
        return "result", repr(parse(raw))
    except InvalidTick as error:
        return "rejected", str(error)


def assert_same(raw: str | bytes) -> bool:
    """Both paths' verdicts on `raw` are equal (the full path's first: it teaches validate_tick the symbol, as the
    first ticker of a symbol does); True if the fast path decided."""
    full = verdict(normalize_full, raw)
    assert verdict(normalize, raw) == full, raw[:300]
    fast = ordinary_tick(raw)
    if fast is not None:
        assert ("result", repr(fast)) == full, raw[:300]
    return fast is not None


def message(fields: list[tuple[str, str]], *, combined: bool = True, stream: str = '"btcusdt@ticker"') -> str:
    data = "{" + ",".join(f'"{key}":{value}' for key, value in fields) + "}"
    return f'{{"stream":{stream},"data":{data}}}' if combined else data


def replaced(key: str, value: str) -> list[tuple[str, str]]:
    return [(k, value if k == key else v) for k, v in TICKER]


def both(text: str) -> Iterator[str | bytes]:
    yield text
    yield text.encode("utf-8", errors="surrogatepass")


def test_an_ordinary_ticker_takes_the_fast_path_and_both_give_the_same_tick() -> None:
    text = message(TICKER)
    assert assert_same(text)
    assert assert_same(text.encode())
    assert ordinary_tick(text) == normalize_full(text)


def test_a_tick_made_with_the_slot_setters_is_the_same_frozen_tick() -> None:
    made, plain = new_tick("BTCUSDT", 5, 1.5, 2.0, "binance"), Tick("BTCUSDT", 5, 1.5, 2.0, "binance")
    assert made == plain and hash(made) == hash(plain) and repr(made) == repr(plain)
    assert made.to_json() == plain.to_json()
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.price = 2.0  # type: ignore[misc]


def test_the_fuzz_corpus_gets_the_same_verdicts_as_str_and_as_bytes() -> None:
    fast = 0
    for item in binance_corpus().items:
        assert item.payload is not None
        for raw in (item.payload.decode("utf-8", errors="replace"), item.payload):
            fast += assert_same(raw)
    assert fast > 1000  # the corpus' valid tickers in the exchange's form took the fast path, as str and as bytes


def test_every_simulator_ticker_of_a_known_symbol_takes_the_fast_path() -> None:
    symbols = [f"SYM{i:03d}USDT" for i in range(50)] + ["BTCUSDT", "ETHUSDT"]
    market = Market(symbols, seed=5)
    for round_ in range(20):
        for symbol in symbols:
            text = f'{{"stream":"{symbol.lower()}@ticker","data":{encode(market.tick(symbol))}}}'
            assert assert_same(text), (round_, text)
    candle = Candle("BTCUSDT", 1_796_176_620_000, 1.5, 2.5, 1.0, 2.0)
    for closed in (False, True):  # klines are not tickers: the full path's
        kline = json.dumps({"stream": "btcusdt@kline_1m", "data": kline_event(candle, closed, 1_796_176_680_001)})
        assert not assert_same(kline)


def _payload(frame: bytes | bytearray) -> bytes:
    """A server's unmasked WebSocket frame → its payload (lengths up to 65,535 bytes)."""
    return bytes(frame[4:] if frame[1] & 0x7F == 126 else frame[2:])


def test_every_load_generator_frame_gets_the_same_verdict_and_tickers_take_the_fast_path() -> None:
    symbols = [f"LG{i:03d}USDT" for i in range(40)]
    market, rng = Market(symbols, seed=9), random.Random(9)
    templates = [loadgen.template(market, symbol, rng) for symbol in symbols]
    first = _payload(templates[0].frame).decode()
    assert "24hrTicker" in first, first[:200]
    for template in templates:
        assert_same(_payload(template.frame).decode())  # each symbol once: validate_tick learns it
    rounds = loadgen.Round.of(templates)
    for number in range(1, 30):
        stamp = np.frombuffer(str(loadgen.TEMPLATE_MS + number).encode(), dtype=np.uint8)
        opened = np.frombuffer(str(loadgen.TEMPLATE_MS + number - loadgen.DAY_MS).encode(), dtype=np.uint8)
        buffer, at = bytes(rounds.patch(number, stamp, opened)), 0
        for template in templates:
            frame = buffer[at : at + len(template.frame)]
            at += len(template.frame)
            assert assert_same(_payload(frame).decode())
    klines = [loadgen.kline_template(template, symbol) for template, symbol in zip(templates, symbols, strict=True)]
    for kline in klines:
        assert not assert_same(_payload(kline.frame).decode())


@pytest.mark.parametrize("value", EDGES, ids=range(len(EDGES)))
@pytest.mark.parametrize("key", ["e", "E", "s", "c", "v", "p", "n", "extra"])
def test_an_unusual_value_in_any_field_gets_the_same_verdict(key: str, value: str) -> None:
    fields = replaced(key, value) if key != "extra" else [*TICKER, (key, value)]
    for raw in both(message(fields)):
        assert_same(raw)


@pytest.mark.parametrize(
    "text",
    [
        message([*TICKER, ("c", '"1.25"')]),  # duplicate keys: the last one counts, in both decoders
        message([*TICKER, ("c", "1.25")]),  # ...even when it is not a string
        message([("c", "1.25"), *TICKER]),  # ...or the first one is not
        message([*TICKER, ("E", "1.0")]),
        message([*TICKER, ("s", '"ETHUSDT"')]),
        message([*TICKER, ("e", '"trade"')]),
        message([("\\u0063", '"1.25"'), *TICKER]),  # an escaped key is the key
        message([*TICKER, ("\\u0063", '"1.25"')]),
        message([*TICKER, ("\\u0045", "1796176635247")]),
        message(TICKER) + "\n",
        message(TICKER) + " x",
        message(TICKER).replace(":", " :\t\r\n "),
        "\ufeff" + message(TICKER),
        message(TICKER).replace('"data":', '"data":{"x":1},"data":', 1),
        message(TICKER) + message(TICKER),
        message(TICKER).replace('"stream":"btcusdt@ticker",', ""),
        message(TICKER).replace('"stream":"btcusdt@ticker",', '"stream":"a","id":1,"result":null,'),
        message(TICKER, stream="5"),
        message(TICKER, stream="null"),
        message(TICKER, stream='"btcusdt@ticker:1e5"'),
        message(TICKER, stream='"ünï@ticker"'),
        message(TICKER, combined=False),
        message([*TICKER, ("id", "1"), ("result", "null")], combined=False),
        message([(k, v) for k, v in TICKER if k != "v"]),
        '{"stream":"btcusdt@ticker","data":' + message(TICKER, combined=False)[:-1] + ',"k":{"x":true}}}',
        '{"stream":"btcusdt@ticker","data":5}',
        '{"result":null,"id":1}',
        '{"e":"serverShutdown","E":1}',
        message(TICKER)[:-1],
        "",
    ],
)
def test_an_unusual_message_gets_the_same_verdict_as_str_and_as_bytes(text: str) -> None:
    for raw in both(text):
        assert_same(raw)


@pytest.mark.parametrize(
    "raw",
    [
        message([*TICKER, ("x", '"\xff"')]).encode("latin-1"),  # invalid UTF-8 in a field nobody reads
        message([*TICKER, ("x", '"\ud800"')]).encode("utf-8", errors="surrogatepass"),
        message(replaced("s", '"BTC\xffUSDT"')).encode("latin-1"),
        b"\xff" + message(TICKER).encode(),
    ],
)
def test_invalid_utf8_gets_the_same_verdict(raw: bytes) -> None:
    assert_same(raw)
    assert_same(raw.decode("utf-8", errors="replace"))  # as the connection hands it on


def test_a_raised_recursion_limit_changes_no_verdict() -> None:
    # msgspec nests as deep as Python's recursion limit allows, orjson to 1024 levels: the fast path must not care.
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)
    try:
        for depth in (1020, 1100, 5000):
            for nested in ("[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth):
                for raw in both(message([*TICKER, ("x", nested)])):
                    assert_same(raw)
    finally:
        sys.setrecursionlimit(limit)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=8,
)
value_texts = (
    st.sampled_from(EDGES) | json_values.map(json.dumps) | json_values.map(lambda v: json.dumps(v, ensure_ascii=False))
)


@relaxed
@given(
    edits=st.lists(
        st.tuples(st.sampled_from([*(k for k, _ in TICKER), "x", "\\u0063"]), value_texts, st.booleans()),
        max_size=4,
    ),
    combined=st.booleans(),
)
def test_a_ticker_with_fields_replaced_or_added_gets_the_same_verdict(
    edits: list[tuple[str, str, bool]], combined: bool
) -> None:
    fields = list(TICKER)
    for key, value, append in edits:
        fields = [*fields, (key, value)] if append else [(k, value if k == key else v) for k, v in fields]
    for raw in both(message(fields, combined=combined)):
        assert_same(raw)


@relaxed
@given(
    st.lists(
        st.tuples(st.integers(0, 400), st.integers(0, 3), st.sampled_from(list(' "{}[],:.-+eE019\\\x00ü\ud800'))),
        min_size=1,
        max_size=3,
    )
)
def test_a_ticker_edited_character_by_character_gets_the_same_verdict(edits: list[tuple[int, int, str]]) -> None:
    text = message(TICKER)
    for position, cut, char in edits:
        at = min(position, len(text))
        text = text[:at] + char + text[at + cut :]
    for raw in both(text):
        assert_same(raw)
