"""The bad-input corpus itself: deterministic, as big as promised, and labelled with what the parsers say.

The labels come from how each item was broken; these tests hold the Python parsers (the ingestor's `normalize`,
the keyed engine's `parse_tick`) to them, item by item, in milliseconds. The same corpus then goes through the
real message paths in test_bad_inputs.py, and the JVM parser is held to the same labels in test_jvm_parser.py.
"""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from tests.fuzz.corpus import CONTROL, TICK, Item, binance_corpus, wire_corpus
from tickpipe.ingestor.normalize import Control, normalize
from tickpipe.schema import InvalidTick, Tick, parse_tick, reason_kind

pytestmark = pytest.mark.unit

STALE = {"duplicate tick", "out-of-order tick"}  # the job's verdicts, not the parser's


def digest(items: list[Item]) -> str:
    sha = hashlib.sha256()
    for item in items:
        sha.update(b"\0" if item.payload is None else item.payload)
        sha.update(f"\0{item.label}\0{item.key}\0".encode())
    return sha.hexdigest()


def test_the_same_seed_gives_the_same_corpus() -> None:
    assert digest(wire_corpus().items) == digest(wire_corpus().items)
    assert digest(binance_corpus().items) == digest(binance_corpus().items)
    assert digest(wire_corpus(seed=1).items) != digest(wire_corpus().items)


def test_each_corpus_has_ten_thousand_bad_inputs_of_every_kind_asked_for() -> None:
    for corpus in (wire_corpus(), binance_corpus()):
        assert len(corpus.bad) == 10_000
        assert len(corpus.ticks) == 2_000
        payloads = [item.payload or b"" for item in corpus.bad]
        assert sum(len(p) >= 900_000 for p in payloads) >= 5, "1 MB frames"
        assert any(p.count(b"[") > 1000 or p.count(b"{") > 1000 for p in payloads), "deep nesting"
        assert any(b"NaN" in p for p in payloads) and any(b"Infinity" in p for p in payloads)
        assert any(not p.isascii() for p in payloads), "unicode and binary"
        with pytest.raises(UnicodeDecodeError):
            b"".join(payloads).decode()  # binary frames: not even UTF-8
        assert len(corpus.expected_kinds()) >= 12, corpus.expected_kinds()


def as_text(payload: bytes | None) -> str | None:
    # What both paths hand the parser: the WebSocket client and Flink's raw format decode with replacement.
    return None if payload is None else payload.decode("utf-8", errors="replace")


def test_the_ingestor_gives_every_message_the_verdict_of_its_label() -> None:
    verdicts: Counter[tuple[str, str]] = Counter()
    for item in binance_corpus().items:
        try:
            result = normalize(as_text(item.payload) or "")
        except InvalidTick as error:
            got = reason_kind(str(error))
            assert "\n" not in str(error) and len(str(error)) <= 200
        else:
            got = TICK if isinstance(result, Tick) else CONTROL
            assert isinstance(result, Tick | Control)
            if item.tick is not None:
                assert result == item.tick
        verdicts[(item.label, got)] += 1
    assert {(label, got): n for (label, got), n in verdicts.items() if label != got} == {}


def test_the_keyed_engine_parser_gives_every_record_the_verdict_of_its_label() -> None:
    verdicts: Counter[tuple[str, str]] = Counter()
    for item in wire_corpus().items:
        try:
            tick = parse_tick(as_text(item.payload))
        except InvalidTick as error:
            got = reason_kind(str(error))
            assert "\n" not in str(error) and len(str(error)) <= 200
        else:
            got = item.label if item.label in STALE else TICK
            if item.tick is not None:
                assert (tick.symbol, tick.event_time_ms, tick.price, tick.volume) == (
                    item.tick.symbol,
                    item.tick.event_time_ms,
                    item.tick.price,
                    item.tick.volume,
                )
        verdicts[(item.label, got)] += 1
    assert {(label, got): n for (label, got), n in verdicts.items() if label != got} == {}
