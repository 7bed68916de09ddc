"""Ticks and dead letters into Kafka: idempotent, acks=all, bounded memory, and a disk buffer behind the memory.

Normal path: produce() into librdkafka's bounded queue. A full queue while Kafka keeps acknowledging is flow
control: the caller waits for room (a burst faster than Kafka takes holds the exchange's reader for milliseconds;
sending it to disk and back would cost each record twice the CPU, and a CPU-bound ingestor would then fall further
behind the more it spilled). When the queue is full and Kafka acknowledged nothing for QUEUE_STALL_SECONDS (Kafka
away or hung), or the reader spent most of QUEUE_SLOW_SECONDS waiting for room (Kafka alive but slower than the
exchange: throttled by a quota, a slow disk, a lagging replica under acks=all), the sink switches to spill
mode: this record and every later one are appended to the disk log (spill.py) instead, and a replay thread produces
the log's records, oldest first, whenever the queue has room. Holding the reader behind a slow Kafka for longer
would leave the exchange's pings unanswered and its socket full: the exchange drops the connection, and what it
would have sent meanwhile is lost.
Spill mode ends only when everything on disk was produced *and acknowledged*, so a record produced directly is
always older than every record on disk: each symbol's ticks reach Kafka in the exchange's order (the MA job rejects
a tick older than the newest it has seen). Only when the disk budget is exhausted are records dropped: counted,
logged, and each symbol's hole reported as a gap. With INGEST_SPILL_MAX_BYTES=0 there is no disk: a queue full of
a stalled Kafka holds the caller (back-pressure on the exchange's reader) until it drains.

Records in librdkafka's queue never expire (message.timeout.ms=0, retries unbounded): a timeout would fail them
after minutes of outage and they would be lost, or, re-queued behind newer ones, out of order. The queue and the
disk bound memory instead. What is still in the queue at shutdown is purged and written in front of the disk log,
so the next start produces it first.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import KafkaError, Message, Producer

from tickpipe.candle_schema import WireCandle
from tickpipe.config import Settings, state_dir
from tickpipe.errors import ConfigError
from tickpipe.ingestor import metrics
from tickpipe.ingestor.normalize import reason_kind
from tickpipe.ingestor.spill import SAVE_ACKED_SECONDS, Record, SpillLog, Ticket
from tickpipe.kafka import producer_config
from tickpipe.logs import get_logger
from tickpipe.schema import Tick, dead_letter, parse_timestamp

log = get_logger("tickpipe.ingestor")
STAGE = "ingestor"
REPLAY_BATCH = 500
HOLD_MAX_RECORDS, HOLD_SECONDS = 10_000, 1.0  # the last acknowledgements of a drain are awaited in memory
STOP_STALL_SECONDS = 5.0
QUEUE_STALL_SECONDS = 1.0  # a full queue without an acknowledgement this long is an outage, not a burst
# Waits for room that keep coming (less than QUEUE_FREE_SECONDS apart) for QUEUE_SLOW_SECONDS, and take at least
# half of that time, are a Kafka slower than the exchange; a burst's waits are a few ms now and then.
QUEUE_SLOW_SECONDS, QUEUE_FREE_SECONDS = 5.0, 1.0
MAX_KEYS = 100_000  # encoded Kafka keys kept (a few MB at most, whatever the exchange lists)
_PURGED = {KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT}


def spill_dir(settings: Settings) -> Path:
    return settings.ingest_spill_dir or state_dir() / "ingest-spill"


def open_spill(settings: Settings) -> SpillLog | None:
    """The disk buffer, or None when INGEST_SPILL_MAX_BYTES=0. A folder set in INGEST_SPILL_DIR that cannot be used
    stops the start (ConfigError); the default one (under the state dir, maybe read-only in a container) only
    warns, and the ingestor runs with back-pressure instead."""
    if not settings.ingest_spill_max_bytes:
        return None
    try:
        return SpillLog(spill_dir(settings), settings.ingest_spill_max_bytes)
    except ConfigError as error:
        if settings.ingest_spill_dir is not None:
            raise
        log.warning(
            "spill_unavailable",
            error=str(error),
            hint="set INGEST_SPILL_DIR to a writable folder of this ingestor's own (a PVC in Kubernetes); "
            "until then a full producer queue holds the exchange's reader (back-pressure)",
        )
        return None


class KafkaSink:
    def __init__(self, settings: Settings) -> None:
        self.topic, self.dlq_topic = settings.kafka_topic, settings.kafka_dlq_topic
        self.source = settings.source  # named in dead letters and metrics
        self.candles_topic = settings.kafka_candles_topic
        self.spill = open_spill(settings)
        self.producer = Producer(
            producer_config(
                settings,
                on_delivery=self._delivered,
                error_cb=self._client_error,
                **{
                    # The producer's queue is the in-memory buffer: bounded, so an outage cannot eat the memory.
                    "queue.buffering.max.messages": settings.ingest_queue_max_messages,
                    "client.id": "tickpipe-ingestor",
                    "message.timeout.ms": 0,  # never expire a queued record (module docstring)
                },
            )
        )
        self.fatal: str | None = None
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="kafka-delivery", daemon=True)
        self._replayer = threading.Thread(target=self._replay, name="spill-replay", daemon=True)
        self._full_since: float | None = None
        # The waits for room of the current run of them: since when, how long in all, when the last one ended.
        self._pressure = {"since": 0.0, "waited": 0.0, "ended": -QUEUE_FREE_SECONDS}
        # Bound once: the delivery callback runs for every record. Acknowledgements and their latency are counted in
        # cells (metrics.CellCounter) under _tally: callbacks may run on the poller and on a held reader at once.
        kinds = ("ticks", "candles", "dlq")
        self._tally = threading.Lock()
        self._produced = {kind: metrics.PRODUCED.cell(kind) for kind in kinds}
        self._produced_ticks = self._produced["ticks"]
        self._latency, self._bounds = metrics.PRODUCE_LATENCY.cell(), metrics.PRODUCE_LATENCY.bounds
        self._replayed = {kind: metrics.SPILL_REPLAYED.labels(kind) for kind in kinds}
        self._written = {kind: metrics.SPILL_WRITTEN.labels(kind) for kind in kinds}
        self._keys: dict[str, bytes] = {}  # symbol → its Kafka key, encoded once (the source's own ticks)
        # Spill state, guarded by _lock (the flag is read without it on the hot path: see send()).
        self._lock = threading.Lock()
        self._spilling = self.spill is not None and self.spill.pending
        self._episode: dict[str, float] = {"since": time.monotonic(), "written": 0, "replayed": 0}
        self._drops: dict[str, list[int]] = {}  # symbol → [first event ms, last event ms, count] while dropping
        self._dropped = 0
        self._closing = False
        self._purged: list[Record] = []
        self._held: list[tuple[str, bytes | None, bytes, Tick | None]] | None = None
        self._held_since = 0.0
        if self.spill is not None:
            spill = self.spill
            metrics.SPILL_BYTES.set_function(lambda: spill.bytes)
            metrics.SPILL_ACTIVE.set_function(lambda: 1 if self._spilling else 0)
            if self._spilling:
                log.warning(
                    "spill_found",
                    segments=len(spill.segments),
                    spill_bytes=spill.bytes,
                    hint="records spilled before the last stop are produced first",
                )
        metrics.BLOCKED_SECONDS.set_function(
            lambda: 0.0 if self._full_since is None else time.monotonic() - self._full_since
        )

    def start(self) -> KafkaSink:
        self._poller.start()
        if self.spill is not None:
            self._replayer.start()
        return self

    # -- the hot path ----------------------------------------------------------------------------------------------
    def send(self, tick: Tick) -> None:
        value, key = tick.to_json(), self._keys.get(tick.symbol)
        if key is None or tick.source != self.source:
            key = tick.key.encode()
            if tick.source == self.source and len(self._keys) < MAX_KEYS:
                self._keys[tick.symbol] = key
        # Read without the lock. Ticks come one at a time (TickRouter's lock), so only a dead letter's overflow can
        # set it meanwhile: this tick, produced directly, is then still older than every tick spilled after it. A
        # stale True only costs a trip through _overflow, which re-checks it under the lock.
        if not self._spilling:
            try:
                self.producer.produce(self.topic, value=value, key=key)
                return
            except BufferError:
                pass
        self._overflow(self.topic, key, value, tick)

    def send_candle(self, candle: WireCandle) -> None:
        """A closed candle (streamed or repaired) into the candle topic, through the same queue and disk buffer as
        the ticks. Called from the readers and from the repair thread; candles need no order among themselves (the
        candle job puts each in its minute), so the spill flag is read as for dead letters."""
        value, key = candle.to_json(), candle.key
        if not self._spilling:
            try:
                self.producer.produce(self.candles_topic, value=value, key=key)
                return
            except BufferError:
                pass
        self._overflow(self.candles_topic, key, value, None)

    def kind(self, topic: str | None) -> str:
        """The metric label of a topic: ticks, candles or dlq."""
        return "ticks" if topic == self.topic else "candles" if topic == self.candles_topic else "dlq"

    def reject(self, raw: str | bytes, reason: str) -> None:
        metrics.DEAD_LETTERS.labels(reason_kind(reason)).inc()
        log.warning(
            "dead_letter", reason=reason, raw=(raw if isinstance(raw, str) else raw.decode(errors="replace"))[:200]
        )
        value = dead_letter(raw, reason, STAGE, source=self.source)
        if not self._spilling:
            try:
                self.producer.produce(self.dlq_topic, value=value, key=None)
                return
            except BufferError:
                pass
        self._overflow(self.dlq_topic, None, value, None)

    # -- a full queue ------------------------------------------------------------------------------------------------
    def _overflow(self, topic: str, key: bytes | None, value: bytes, tick: Tick | None) -> None:
        cause = "kafka_behind"  # spilling already: this record goes behind the ones on disk
        if not self._spilling:
            verdict = self._wait_for_room(topic, key, value)
            if verdict is None:
                return
            cause = verdict
        if self.spill is None:
            self._block(topic, key, value)
            return
        with self._lock:
            if not self._spilling:
                try:
                    self.producer.produce(topic, value=value, key=key)  # the backlog drained meanwhile
                    return
                except BufferError:
                    self._start_spill(cause)
            if self._held is not None:
                self._held.append((topic, key, value, tick))
                if len(self._held) >= HOLD_MAX_RECORDS:
                    self._held_to_disk()
                return
            self._append(topic, key, value, tick)

    def _wait_for_room(self, topic: str, key: bytes | None, value: bytes) -> str | None:
        """Produce the record once the queue has room, for as long as Kafka keeps up (module docstring): None. The
        record not produced, why: "kafka_stalled" once nothing was acknowledged for QUEUE_STALL_SECONDS,
        "kafka_slow" once waits for room took half of the last QUEUE_SLOW_SECONDS or more."""
        acked, since = self._acknowledged(), time.monotonic()
        started, pressure = since, self._pressure
        if started - pressure["ended"] > QUEUE_FREE_SECONDS:
            pressure["since"], pressure["waited"] = started, 0.0
        try:
            while True:
                self.producer.poll(0.005)  # serves acknowledgements here too: the waiting thread is free
                try:
                    self.producer.produce(topic, value=value, key=key)
                    return None
                except BufferError:
                    pass
                now = time.monotonic()
                if (count := self._acknowledged()) != acked:
                    acked, since = count, now
                elif now - since >= QUEUE_STALL_SECONDS:
                    return "kafka_stalled"
                run = now - pressure["since"]
                if run >= QUEUE_SLOW_SECONDS and pressure["waited"] + now - started >= run / 2:
                    return "kafka_slow"
        finally:
            ended = time.monotonic()
            pressure["waited"] += ended - started
            pressure["ended"] = ended
            metrics.QUEUE_WAIT_SECONDS.inc(ended - started)

    def _acknowledged(self) -> float:
        """Records Kafka acknowledged so far (read without the lock: a stale count only delays the verdict)."""
        return sum(cell[0] for cell in self._produced.values())

    def _append(self, topic: str, key: bytes | None, value: bytes, tick: Tick | None) -> None:
        kind = self.kind(topic)
        if self.spill is not None and self.spill.append(topic, key, value):
            self._written[kind].inc()
            self._episode["written"] += 1
            if self._drops or self._dropped:
                self._end_drops()
            return
        self._drop(kind, tick)

    def _held_to_disk(self) -> None:
        held, self._held = self._held or [], None
        for record in held:
            self._append(*record)

    def _start_spill(self, cause: str) -> None:
        self._spilling = True
        self._episode = {"since": time.monotonic(), "written": 0, "replayed": 0}
        log.warning(
            "spill_started",
            cause=cause,
            queued=len(self.producer),
            spill_bytes=self.spill.bytes if self.spill else 0,
            hint="producer queue full (is Kafka reachable? throttled?): records go to the disk buffer until it drains",
        )

    def _drop(self, kind: str, tick: Tick | None) -> None:
        metrics.SPILL_DROPPED.labels(kind).inc()
        if not self._drops and not self._dropped:
            log.error(
                "spill_full",
                spill_bytes=self.spill.bytes if self.spill else 0,
                budget_bytes=self.spill.max_bytes if self.spill else 0,
                hint="disk buffer exhausted: records are dropped (counted, reported as gaps) until Kafka drains it",
            )
        self._dropped += 1
        if tick is not None:
            hole = self._drops.get(tick.symbol)
            if hole is None:
                self._drops[tick.symbol] = [tick.event_time_ms, tick.event_time_ms, 1]
            else:
                hole[1], hole[2] = tick.event_time_ms, hole[2] + 1

    def _end_drops(self) -> None:
        for symbol, (first, last, count) in sorted(self._drops.items()):
            seconds = (last - first) / 1000
            metrics.GAPS.labels(self.source, symbol).inc()
            metrics.GAP_SECONDS.labels(self.source, symbol).inc(seconds)
            log.warning(
                "gap", symbol=symbol, first_lost=first, last_lost=last, lost=count, seconds=seconds, cause="spill_full"
            )
        log.warning("spill_drops_ended", dropped=self._dropped)
        self._drops, self._dropped = {}, 0

    def _block(self, topic: str, key: bytes | None, value: bytes) -> None:
        """No disk buffer and Kafka stalled: hold the exchange's reader (back-pressure) rather than drop a tick or
        grow without bound. The reader's connection does not count the wait as silence (Connection.silence)."""
        while True:
            try:
                self.producer.produce(topic, value=value, key=key)
                break
            except BufferError:
                if self._full_since is None:
                    self._full_since = time.monotonic()
                    metrics.QUEUE_FULL.set(1)
                    log.error("producer_queue_full", queued=len(self.producer), hint="is Kafka reachable?")
                self.producer.poll(0.1)
        if self._full_since is not None:
            log.warning("producer_queue_drained", blocked_seconds=round(time.monotonic() - self._full_since, 1))
            self._full_since = None
            metrics.QUEUE_FULL.set(0)

    # -- replaying the disk buffer ------------------------------------------------------------------------------------
    def _replay(self) -> None:
        spill = self.spill
        if spill is None:
            return
        while not self._stop.is_set():
            with self._lock:
                batch = spill.read(REPLAY_BATCH) if self._spilling else []
                if self._spilling and not batch:
                    self._caught_up(spill)
            if not batch:
                self._stop.wait(0.002 if self._held is not None else 0.05)
                continue
            for ticket, (topic, key, value) in batch:
                while True:
                    try:
                        self.producer.produce(topic, value=value, key=key, on_delivery=_ReplayAck(self, ticket))
                        break
                    except BufferError:
                        if self._stop.wait(0.02):
                            return  # unproduced records stay on disk: read again after the restart
                self._episode["replayed"] += 1

    def _caught_up(self, spill: SpillLog) -> None:
        """Everything on disk is in the producer. Spill mode ends once Kafka acknowledged it all; until then new
        records wait in memory (not on disk: with a steady stream the disk would never be seen empty), briefly:
        if the acknowledgements do not come, they go to disk after all and the spill goes on."""
        if spill.drained():
            self._end_spill()
        elif self._held is None:
            self._held, self._held_since = [], time.monotonic()
        elif time.monotonic() - self._held_since > HOLD_SECONDS:
            self._held_to_disk()

    def _end_spill(self) -> None:
        held, self._held = self._held or [], None
        self._spilling = False
        for i, (topic, key, value, _tick) in enumerate(held):
            try:
                self.producer.produce(topic, value=value, key=key)
            except BufferError:  # full again already: the rest goes to disk, in order
                self._start_spill("kafka_behind")
                for record in held[i:]:
                    self._append(*record)
                return
        if self._drops or self._dropped:
            self._end_drops()
        log.warning(
            "spill_drained",
            written=self._episode["written"],
            replayed=self._episode["replayed"],
            seconds=round(time.monotonic() - float(self._episode["since"]), 1),
        )

    def _settle(self, ticket: Ticket) -> None:
        if self.spill is not None:
            with self._lock:
                self.spill.settle(ticket)

    # -- delivery reports ---------------------------------------------------------------------------------------------
    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        # Called for every record (confluent-kafka has no batch of reports): as little as it can be.
        if error is not None:
            if self._closing and error.code() in _PURGED:
                self._purged.append((message.topic() or self.topic, message.key(), message.value() or b""))
                return
            metrics.PRODUCE_FAILED.labels(self.kind(message.topic())).inc()
            log.error("produce_failed", topic=message.topic(), key=message.key(), error=str(error))
            return
        topic = message.topic()
        produced = self._produced_ticks if topic == self.topic else self._produced[self.kind(topic)]
        latency: Any = message.latency()
        with self._tally:
            produced[0] += 1
            if latency is not None:
                cell = self._latency
                cell[bisect_left(self._bounds, latency)] += 1
                cell[-1] += latency

    def _client_error(self, error: KafkaError) -> None:
        if error.fatal():
            self.fatal = str(error)
            log.error("producer_fatal", error=str(error), hint="the ingestor must be restarted")

    @property
    def backpressure(self) -> bool:
        return self._full_since is not None

    @property
    def spilling(self) -> bool:
        return self._spilling

    def ready(self) -> tuple[bool, str]:
        """Ready to take ticks: the producer is usable and neither blocked (no disk) nor dropping (disk full)."""
        if self.fatal:
            return False, f"producer unusable: {self.fatal}"
        if self.backpressure:
            return False, "producer queue full and no disk buffer: Kafka unreachable?"
        if self._drops or self._dropped:
            return False, "disk buffer full: records are being dropped"
        return True, "spilling to disk" if self._spilling else "ok"

    def _poll(self) -> None:
        saved_at = time.monotonic()
        while not self._stop.is_set():
            self.producer.poll(0.2)
            metrics.QUEUED.set(len(self.producer))
            # How far the disk buffer was acknowledged, on disk: a crash produces again at most this much of it.
            if self.spill is not None and time.monotonic() - saved_at >= SAVE_ACKED_SECONDS:
                with self._lock:
                    self.spill.save_acked()
                saved_at = time.monotonic()

    def close(self, timeout: float) -> int:
        """Deliver what is queued (up to `timeout` s); keep the rest on disk if there is a disk buffer. Return how
        many records are neither delivered nor on disk."""
        deadline = time.monotonic() + timeout
        # The exchange is no longer read: let the replay finish the disk (Kafka permitting) before the queue. With
        # a disk to fall back on, waiting for a Kafka that makes no progress is pointless (and a pod's grace period
        # is short): after STOP_STALL_SECONDS without progress the rest goes to disk.
        progress = _Progress(lambda: self.spill.bytes if self.spill is not None else 0)
        while self._spilling and self._replayer.is_alive() and time.monotonic() < deadline and progress.moving():
            self._stop.wait(0.05)
        self._stop.set()
        for thread in (self._poller, self._replayer):
            if thread.is_alive():
                thread.join(5)
        self.producer.poll(0)
        remaining = len(self.producer)
        progress = _Progress(lambda: len(self.producer))
        while remaining and time.monotonic() < deadline and (self.spill is None or progress.moving()):
            remaining = int(self.producer.flush(min(0.5, max(0.0, deadline - time.monotonic()))))
        if remaining and self.spill is not None:
            self._closing = True
            # In flight too: those may have reached the broker, so saving them can repeat them (at-least-once).
            self.producer.purge(in_queue=True, in_flight=True, blocking=True)
            deadline = time.monotonic() + 5
            # The count seen when the purged records' reports were all served: len() also counts librdkafka's
            # events (a refused connection's error, every few ms), so reading it again later can count one.
            while (remaining := len(self.producer)) and time.monotonic() < deadline:
                self.producer.poll(0.1)
            saved = self._order(self._purged)
            self.spill.prepend(saved)
            log.warning("spill_saved_on_stop", records=len(saved), spill_bytes=self.spill.bytes)
        with self._lock:
            if self._held:
                self._held_to_disk()  # newer than everything on disk: behind it
            if self._drops or self._dropped:
                self._end_drops()
        if self.spill is not None:
            self.spill.close()
        metrics.QUEUED.set(remaining)
        return remaining

    def _order(self, records: list[Record]) -> list[Record]:
        """Purged records in produce order per symbol (the purge reports them in no promised order): each symbol's
        ticks by event time, which the router made strictly increasing; dead letters first, their order is free."""

        def event_ms(record: Record, field: str) -> int:
            try:
                return parse_timestamp(orjson.loads(record[2])[field])
            except (ValueError, KeyError, TypeError):
                return 0

        def rank(record: Record) -> tuple[int, int]:
            if record[0] == self.topic:
                return 2, event_ms(record, "timestamp")
            if record[0] == self.candles_topic:  # no order needed; by minute is the natural one
                return 1, event_ms(record, "open_time")
            return 0, 0

        return sorted(records, key=rank)

    @property
    def on_disk(self) -> int:
        return self.spill.bytes if self.spill is not None else 0


class _Progress:
    """Whether a shrinking amount (bytes on disk, records queued) went down in the last STOP_STALL_SECONDS."""

    def __init__(self, amount: Callable[[], int]) -> None:
        self.amount, self.last, self.at = amount, amount(), time.monotonic()

    def moving(self) -> bool:
        now, current = time.monotonic(), self.amount()
        if current < self.last:
            self.last, self.at = current, now
        return now - self.at < STOP_STALL_SECONDS


class _ReplayAck:
    """The delivery callback of a record replayed from disk: settles it, so that its segment can be deleted (and a
    restart does not produce it again)."""

    __slots__ = ("sink", "ticket")

    def __init__(self, sink: KafkaSink, ticket: Ticket) -> None:
        self.sink, self.ticket = sink, ticket

    def __call__(self, error: KafkaError | None, message: Message) -> None:
        sink = self.sink
        kind = sink.kind(message.topic())
        if error is not None:
            if error.code() in _PURGED:
                return  # still on disk, not settled: produced again after the restart
            metrics.PRODUCE_FAILED.labels(kind).inc()
            log.error("produce_failed", topic=message.topic(), key=message.key(), error=str(error), replayed=True)
        else:
            with sink._tally:
                sink._produced[kind][0] += 1
            sink._replayed[kind].inc()
        sink._settle(self.ticket)
