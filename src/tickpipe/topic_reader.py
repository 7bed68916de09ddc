"""Read a topic as it is now: every record up to its current end (from a time on, or the last N of each partition).

A private, never-committing consumer with explicit partition assignment: reading changes no offsets and does not
disturb any consumer group. "Up to now" is the end offsets taken when reading starts, so a read ends even while
records keep arriving. Used by `tickpipe dlq` and by the ingestor (what its previous leader or run already sent).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from confluent_kafka import OFFSET_END, Consumer, KafkaException, Message, TopicPartition

from tickpipe.config import Settings
from tickpipe.errors import CommandError
from tickpipe.kafka import consumer_config


def private_consumer(settings: Settings, purpose: str) -> Consumer:
    config = consumer_config(
        settings,
        f"tickpipe-{purpose}-{os.getpid()}-{time.monotonic_ns()}",
        # librdkafka's own log lines stay quiet: a broker that cannot be reached is reported in one line (CommandError).
        **{
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "socket.connection.setup.timeout.ms": 5000,
            "log_level": 0,
        },
    )
    return Consumer(config)


def partitions(consumer: Consumer, topic: str, missing: str) -> list[int]:
    """The topic's partitions; CommandError(`missing`) if there is no such topic."""
    try:
        metadata = consumer.list_topics(topic, timeout=10)
    except KafkaException as error:
        raise CommandError(f"Kafka: {error.args[0].str()} (is KAFKA_BOOTSTRAP_SERVERS right?)") from None
    described = metadata.topics.get(topic)
    if described is None or described.error is not None or not described.partitions:
        raise CommandError(missing)
    return sorted(described.partitions)


def start_offsets(
    consumer: Consumer, topic: str, partition_ids: list[int], since_ms: int | None, last: int | None
) -> dict[int, tuple[int, int]]:
    """partition → (first offset to read, end offset at start)."""
    bounds = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in partition_ids}
    starts = {p: low for p, (low, _) in bounds.items()}
    if since_ms is not None:
        found = consumer.offsets_for_times([TopicPartition(topic, p, since_ms) for p in partition_ids], timeout=10)
        for tp in found:
            # No record at or after that time: start at the end (nothing to read there).
            starts[tp.partition] = bounds[tp.partition][1] if tp.offset in (OFFSET_END, -1) else tp.offset
    if last is not None:
        starts = {p: max(starts[p], bounds[p][1] - last) for p in partition_ids}
    return {p: (starts[p], bounds[p][1]) for p in partition_ids}


def read_messages(
    settings: Settings,
    topic: str,
    *,
    since_ms: int | None = None,
    last: int | None = None,
    missing: str | None = None,
    purpose: str = "reader",
) -> Iterator[Message]:
    """Every record of `topic` up to its end as it is now (the last `last` of each partition if given), from the
    record timestamp `since_ms` on if given. Records arrive in partition order, not time order."""
    consumer = private_consumer(settings, purpose)
    try:
        where = settings.kafka_bootstrap_servers
        ranges = start_offsets(
            consumer, topic, partitions(consumer, topic, missing or f"no topic {topic!r} at {where}"), since_ms, last
        )
        pending = {p: end for p, (start, end) in ranges.items() if start < end}
        if not pending:
            return
        consumer.assign([TopicPartition(topic, p, ranges[p][0]) for p in pending])
        deadline = time.monotonic() + 60
        while pending:
            message = consumer.poll(1.0)
            if message is None:
                # The end may be a transaction marker no message stands for: the position says we are past it.
                for tp in consumer.position([TopicPartition(topic, p) for p in pending]):
                    if tp.offset >= pending[tp.partition]:
                        del pending[tp.partition]
                if pending and time.monotonic() > deadline:
                    raise CommandError(f"reading {topic} stalled (partitions {sorted(pending)} not at their end)")
                continue
            deadline = time.monotonic() + 60
            if message.error():
                continue
            partition, offset = message.partition() or 0, message.offset() or 0
            if partition in pending and offset >= pending[partition] - 1:
                del pending[partition]
            if offset >= ranges[partition][1]:
                continue
            yield message
    finally:
        consumer.close()
