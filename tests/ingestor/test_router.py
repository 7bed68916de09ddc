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
