"""The sql engine's JVM parser (PARSE_TICK) over the whole bad-input corpus: the verdict of each record's label.

test_corpus.py holds the Python parser to the same labels, so the two engines reject the same records with the same
reason kinds (and accept the same ticks) on 12,000 generated records, not only on hand-picked edge cases.
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.fuzz.corpus import TICK, wire_corpus
from tests.ma_job.test_parse_tick import jvm_parser, jvm_verdicts
from tickpipe.schema import reason_kind

pytestmark = [pytest.mark.integration, pytest.mark.slow]

__all__ = ["jvm_parser"]  # the fixture, used by name

STALE = {"duplicate tick", "out-of-order tick"}  # the job's verdicts after parsing, not the parser's


def test_the_jvm_parser_gives_every_record_the_verdict_of_its_label(jvm_parser: object) -> None:
    items = wire_corpus().items
    texts = [(item.payload or b"").decode("utf-8", errors="replace") for item in items]
    verdicts: Counter[tuple[str, str]] = Counter()
    for item, verdict in zip(items, jvm_verdicts(jvm_parser, texts), strict=True):
        if verdict[0] == "rejected":
            got = reason_kind(str(verdict[1]))
        else:
            got = item.label if item.label in STALE else TICK
            if item.tick is not None:
                assert verdict[:4] == (item.tick.symbol, item.tick.event_time_ms, item.tick.price, item.tick.volume)
        verdicts[(item.label, got)] += 1
    assert {(label, got): n for (label, got), n in verdicts.items() if label != got} == {}
