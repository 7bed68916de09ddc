"""The message router never lets a failure end the connection's reader: what it could not handle is dead-lettered."""

from __future__ import annotations

from typing import Any

import pytest

from tickpipe.ingestor.service import TickRouter

pytestmark = pytest.mark.unit
TICK = '{"stream":"btcusdt@ticker","data":{"e":"24hrTicker","E":1764000000000,"s":"BTCUSDT","c":"97000.5","v":"1.5"}}'


class FailingSink:
    def __init__(self) -> None:
        self.rejected: list[tuple[str, str]] = []

    def send(self, tick: Any) -> None:
        raise RuntimeError("disk on fire")

    def reject(self, raw: str, reason: str) -> None:
        self.rejected.append((raw, reason))


class Named:
    name = "0.1"
    shutdown_notice = False


def test_an_unexpected_failure_dead_letters_the_message_with_its_reason() -> None:
    sink = FailingSink()
    router = TickRouter(sink, gap_after_ms=5000)  # type: ignore[arg-type]
    router(Named(), TICK)  # type: ignore[arg-type]
    assert sink.rejected == [(TICK, "internal error: RuntimeError: disk on fire")]


class KeepingSink:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, tick: Any) -> None:
        self.sent.append(tick)

    def reject(self, raw: str, reason: str) -> None:
        raise AssertionError(f"rejected: {reason}")


def accepted_samples() -> dict[str, float]:
    from prometheus_client import REGISTRY

    return {
        sample.labels["symbol"]: sample.value
        for family in REGISTRY.collect()
        if family.name == "tickpipe_ingest_messages"
        for sample in family.samples
        if sample.name == "tickpipe_ingest_messages_total" and sample.labels["symbol"].startswith("CELL")
    }


def test_the_accepted_ticks_counter_is_exact_when_scraped_across_routers() -> None:
    """Counted in plain cells (metrics.CellCounter), not a Counter per message: a scrape still sees every tick, and
    two routers (a test's, a replaced one's) add up; duplicates are not counted."""
    before = accepted_samples()
    routers = [TickRouter(KeepingSink(), gap_after_ms=None) for _ in range(2)]  # type: ignore[arg-type]
    for n, router in enumerate(routers):
        for i in range(5 + n):
            for symbol in ("CELLAUSDT", "CELLBUSDT"):
                router(Named(), TICK.replace("BTCUSDT", symbol).replace("1764000000000", str(1764000000000 + i)))  # type: ignore[arg-type]
        router(Named(), TICK.replace("BTCUSDT", "CELLAUSDT"))  # type: ignore[arg-type]  # a duplicate: not counted
    after = accepted_samples()
    assert {s: after[s] - before.get(s, 0) for s in after} == {"CELLAUSDT": 11, "CELLBUSDT": 11}
    assert sum(len(r.sink.sent) for r in routers) == 22  # type: ignore[union-attr]
