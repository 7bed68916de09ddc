"""The sink's spill mode without a broker (nothing is ever acknowledged): what goes to disk, in which order, and what
a stop saves. The outage tests in test_outage.py drive the same code against a real, hung broker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tickpipe.config import load_settings
from tickpipe.errors import ConfigError
from tickpipe.ingestor.sink import KafkaSink
from tickpipe.ingestor.spill import SpillLog, encode
from tickpipe.schema import Tick, parse_timestamp

pytestmark = pytest.mark.unit
NOWHERE = "127.0.0.1:9"  # discard port: no broker, so nothing is ever delivered


_SINKS: list[KafkaSink] = []


@pytest.fixture(autouse=True)
def _producers_end_with_the_test() -> Iterator[None]:
    """A producer pointed at NOWHERE retries its connection for as long as it exists, logging each refusal: one kept
    alive by a reference cycle or a traceback would fill the rest of the session's output. Each ends here."""
    yield
    while _SINKS:
        producer = _SINKS.pop().producer
        producer.purge(in_queue=True, in_flight=True)
        producer.close()


def sink_at(spill: Path | None, queue: int = 3, budget: int = 1 << 20) -> KafkaSink:
    settings = load_settings(
        kafka_bootstrap_servers=NOWHERE,
        ingest_queue_max_messages=queue,
        ingest_spill_max_bytes=budget,
        **({"ingest_spill_dir": spill} if spill else {}),
    )
    sink = KafkaSink(settings)
    _SINKS.append(sink)
    return sink


def ticks(count: int, start: int = 0) -> list[Tick]:
    return [Tick(("BTCUSDT", "ETHUSDT")[i % 2], 1_700_000_000_000 + i, 1.0 + i, 1.0) for i in range(start, count)]


def on_disk(directory: Path) -> list[tuple[str, int]]:
    import orjson

    spill = SpillLog(directory, 1 << 30)
    out = []
    while batch := spill.read(100):
        for _, (_, _, value) in batch:
            record = orjson.loads(value)
            out.append((record["symbol"], parse_timestamp(record["timestamp"])))
    spill.close()
    return out


def test_a_full_queue_sends_this_and_every_later_tick_to_disk(tmp_path: Path) -> None:
    sink = sink_at(tmp_path)
    for tick in ticks(20):
        sink.send(tick)
    assert sink.spilling
    assert sink.spill is not None
    # The queue took three; the fourth found it full and went to disk, and so did every later one.
    assert sink.spill.bytes == sum(len(encode("price-ticks", t.symbol.encode(), t.to_json())) for t in ticks(20)[3:])
    assert sink.ready() == (True, "spilling to disk")
    assert sink.close(0.2) == 0, "what a stop cannot deliver is kept on disk"
    # The three that were in the producer's memory come first: they are older than everything on disk.
    assert on_disk(tmp_path) == [(t.symbol, t.event_time_ms) for t in ticks(20)]


def test_after_a_restart_the_disk_comes_before_newer_ticks(tmp_path: Path) -> None:
    first = sink_at(tmp_path)
    for tick in ticks(10):
        first.send(tick)
    first.close(0.2)
    second = sink_at(tmp_path, queue=1000)
    assert second.spilling, "records on disk from the last run: new ones go behind them"
    assert second.spill is not None
    before = second.spill.bytes
    for tick in ticks(15, start=10):
        second.send(tick)
    newer = sum(len(encode("price-ticks", t.symbol.encode(), t.to_json())) for t in ticks(15, start=10))
    assert second.spill.bytes == before + newer, "nothing produced directly while the disk is not drained"
    second.close(0.2)
    assert on_disk(tmp_path) == [(t.symbol, t.event_time_ms) for t in ticks(15)]


def test_an_exhausted_budget_drops_and_is_not_ready(tmp_path: Path) -> None:
    sink = sink_at(tmp_path, budget=2000)
    for tick in ticks(40):
        sink.send(tick)
    ready, why = sink.ready()
    assert not ready and "disk buffer full" in why
    sink.close(0.2)
    kept = on_disk(tmp_path)
    on_disk_count = len(kept)
    assert 3 < on_disk_count < 40
    assert kept == [(t.symbol, t.event_time_ms) for t in ticks(40)][:on_disk_count]


def test_a_default_spill_dir_that_cannot_be_used_falls_back_to_back_pressure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the state dir should be")
    monkeypatch.setenv("TICKPIPE_HOME", str(blocked))
    sink = sink_at(None)
    assert sink.spill is None
    sink.close(0)


def test_a_configured_spill_dir_that_cannot_be_used_stops_the_start(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(ConfigError, match="invalid INGEST_SPILL_DIR: cannot use"):
        sink_at(blocked / "spill")
    assert blocked.is_file()


def test_queued_records_never_expire(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A record that times out in librdkafka's queue is lost (or, queued again, out of order): the queue and the
    disk bound memory instead, whatever producer_config's defaults become."""
    from tickpipe.ingestor import sink as module

    seen: dict[str, object] = {}
    original = module.producer_config

    def capture(settings: object, **overrides: object) -> dict[str, object]:
        config = original(settings, **overrides)  # type: ignore[arg-type]
        seen.update(config)
        return config

    monkeypatch.setattr(module, "producer_config", lambda s, **o: capture(s, **{"message.timeout.ms": 5000, **o}))
    sink_at(tmp_path).close(0)
    assert seen["message.timeout.ms"] == 0
    assert "retries" not in seen and "message.send.max.retries" not in seen  # librdkafka's default: unbounded
