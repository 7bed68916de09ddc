"""Ticks and dead letters into Kafka: idempotent, acks=all, bounded memory, back-pressure when Kafka is away."""

from __future__ import annotations

import threading
import time
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from tickpipe.config import Settings
from tickpipe.ingestor import metrics
from tickpipe.ingestor.normalize import SOURCE, reason_kind
from tickpipe.kafka import producer_config
from tickpipe.logs import get_logger
from tickpipe.schema import Tick, dead_letter

log = get_logger("tickpipe.ingestor")
STAGE = "ingestor"


class KafkaSink:
    def __init__(self, settings: Settings) -> None:
        self.topic, self.dlq_topic = settings.kafka_topic, settings.kafka_dlq_topic
        self.producer = Producer(
            producer_config(
                settings,
                on_delivery=self._delivered,
                # The producer's queue is the only buffer: bounded, so an outage cannot eat the machine's memory.
                **{
                    "queue.buffering.max.messages": settings.ingest_queue_max_messages,
                    "client.id": "tickpipe-ingestor",
                },
            )
        )
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="kafka-delivery", daemon=True)
        self._full_since: float | None = None
        # Bound once: the delivery callback runs for every record.
        self._produced = {"ticks": metrics.PRODUCED.labels("ticks"), "dlq": metrics.PRODUCED.labels("dlq")}

    def start(self) -> KafkaSink:
        self._poller.start()
        return self

    def send(self, tick: Tick) -> None:
        self._produce(self.topic, tick.symbol.encode(), tick.to_json())

    def reject(self, raw: str | bytes, reason: str) -> None:
        metrics.DEAD_LETTERS.labels(reason_kind(reason)).inc()
        log.warning(
            "dead_letter", reason=reason, raw=(raw if isinstance(raw, str) else raw.decode(errors="replace"))[:200]
        )
        self._produce(self.dlq_topic, None, dead_letter(raw, reason, STAGE, source=SOURCE))

    def _produce(self, topic: str, key: bytes | None, value: bytes) -> None:
        while True:
            try:
                self.producer.produce(topic, value=value, key=key)
                break
            except BufferError:
                # Kafka has not acknowledged `queue.buffering.max.messages` records: hold the exchange's reader
                # (back-pressure) rather than drop a tick or grow without bound.
                if self._full_since is None:
                    self._full_since = time.monotonic()
                    metrics.QUEUE_FULL.set(1)
                    log.error("producer_queue_full", queued=len(self.producer), hint="is Kafka reachable?")
                self.producer.poll(0.1)
        if self._full_since is not None:
            log.warning("producer_queue_drained", blocked_seconds=round(time.monotonic() - self._full_since, 1))
            self._full_since = None
            metrics.QUEUE_FULL.set(0)

    @property
    def backpressure(self) -> bool:
        return self._full_since is not None

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        topic = "ticks" if message.topic() == self.topic else "dlq"
        if error is not None:
            metrics.PRODUCE_FAILED.labels(topic).inc()
            log.error("produce_failed", topic=message.topic(), key=message.key(), error=str(error))
            return
        self._produced[topic].inc()
        latency: Any = message.latency()
        if latency is not None:
            metrics.PRODUCE_LATENCY.observe(latency)

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.2)
            metrics.QUEUED.set(len(self.producer))

    def close(self, timeout: float) -> int:
        """Deliver what is queued (up to `timeout` s); return how many records could not be delivered."""
        self._stop.set()
        self._poller.join(5)
        remaining = int(self.producer.flush(timeout))
        metrics.QUEUED.set(remaining)
        return remaining
