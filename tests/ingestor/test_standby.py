"""The leader's gate of ingestor replicas (tickpipe.ingestor.standby), as a unit: a standby buffers, a takeover sends
exactly the buffered ticks Kafka does not have yet, a leader that cannot renew stops producing at once."""

from __future__ import annotations

from pathlib import Path

import pytest
import structlog.testing
from confluent_kafka import KafkaError, KafkaException

from tests.ingestor.test_leadership import Clock, advance
from tickpipe.ingestor.leadership import Elector, FileLeaseStore
from tickpipe.ingestor.standby import LeaderGate, Role
from tickpipe.schema import Tick

pytestmark = pytest.mark.unit


class Recorder:
    """Stands for the KafkaSink: what the gate handed on."""

    def __init__(self) -> None:
        self.sent: list[Tick] = []
        self.rejected: list[str] = []

    def send(self, tick: Tick) -> None:
        self.sent.append(tick)

    def reject(self, raw: str | bytes, reason: str) -> None:
        self.rejected.append(reason)


def tick(symbol: str, second: int) -> Tick:
    return Tick(symbol, 1_700_000_000_000 + second * 1000, 100.0 + second, 1.0)


def gate_with(
    tmp_path: Path, newest: dict[str, int] | Exception, buffer_seconds: int = 60
) -> tuple[LeaderGate, Recorder, Clock, Elector]:
    clock = Clock()
    elector = Elector(FileLeaseStore(tmp_path / "lease"), "replica-b", monotonic=clock.monotonic, wall_clock=clock.wall)
    sink = Recorder()

    def newest_in_kafka(since_ms: int) -> dict[str, int]:
        if isinstance(newest, Exception):
            raise newest
        return newest

    gate = LeaderGate(sink, elector, buffer_ms=buffer_seconds * 1000, newest_in_kafka=newest_in_kafka)  # type: ignore[arg-type]
    return gate, sink, clock, elector


def test_a_standby_sends_nothing_and_a_takeover_sends_what_kafka_lacks_in_order(tmp_path: Path) -> None:
    gate, sink, _, _ = gate_with(tmp_path, {"BTCUSDT": tick("BTCUSDT", 3).event_time_ms})
    for second in range(1, 6):
        gate.send(tick("BTCUSDT", second))
        gate.send(tick("ETHUSDT", second))
    gate.reject("not json", "not JSON")
    assert sink.sent == [] and sink.rejected == []
    gate.step()  # no lease yet: this candidate takes it
    assert gate.role is Role.LEADER
    # BTC up to second 3 was delivered by the old leader; ETH is not in Kafka at all: all of it goes.
    assert sink.sent == [tick("BTCUSDT", 4), tick("BTCUSDT", 5), *(tick("ETHUSDT", s) for s in range(1, 6))]
    gate.send(tick("BTCUSDT", 6))
    gate.reject("not json", "not JSON")
    assert sink.sent[-1] == tick("BTCUSDT", 6) and sink.rejected == ["not JSON"]


def test_the_buffer_keeps_only_its_window_and_a_hole_before_it_is_reported(tmp_path: Path) -> None:
    gate, sink, _, _ = gate_with(tmp_path, {"BTCUSDT": tick("BTCUSDT", 0).event_time_ms}, buffer_seconds=10)
    for second in range(1, 31):
        gate.send(tick("BTCUSDT", second))
    # The events themselves, whatever an earlier test in this process configured logging to print to.
    with structlog.testing.capture_logs() as events:
        gate.step()
    assert sink.sent == [tick("BTCUSDT", s) for s in range(20, 31)]  # seconds 1..19 were older than the window
    gaps = [event for event in events if event["event"] == "takeover_gap"]
    assert [(gap["symbol"], gap["seconds"]) for gap in gaps] == [("BTCUSDT", 20.0)], events


def test_a_leader_that_cannot_renew_stops_producing_before_its_lease_expires(tmp_path: Path) -> None:
    gate, sink, clock, elector = gate_with(tmp_path, {})
    gate.step()
    gate.send(tick("BTCUSDT", 1))
    assert sink.sent == [tick("BTCUSDT", 1)]
    advance(elector.renew_deadline + 0.1, clock)  # no renewal since: e.g. the API server unreachable
    gate.send(tick("BTCUSDT", 2))
    assert gate.role is Role.STANDBY and sink.sent == [tick("BTCUSDT", 1)]


def test_kafka_unreadable_at_takeover_keeps_the_replica_standing_by(tmp_path: Path) -> None:
    gate, sink, _, _ = gate_with(tmp_path, KafkaException(KafkaError(KafkaError._TRANSPORT)))
    gate.send(tick("BTCUSDT", 1))
    gate.step()
    assert gate.role is Role.STANDBY and sink.sent == []


def test_release_hands_the_lease_over_at_once(tmp_path: Path) -> None:
    gate, _, _, _ = gate_with(tmp_path, {})
    gate.step()
    gate.release()
    other_clock = Clock()
    other = Elector(FileLeaseStore(tmp_path / "lease"), "replica-c", monotonic=other_clock.monotonic)
    assert other.step(), "a released lease is free for the next candidate without waiting for it to expire"
