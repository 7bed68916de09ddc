"""Read the dead-letter topic: everything up to now, the last N, or follow new records.

A private, never-committing consumer with explicit partition assignment: reading the DLQ changes no offsets and
does not disturb any consumer group. "Up to now" is the end offsets taken when reading starts, so a command ends
even while dead letters keep arriving.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator

from confluent_kafka import OFFSET_END, Consumer, KafkaException, Message, TopicPartition

from tickpipe.config import Settings
from tickpipe.dlq.records import DeadLetter, parse_record
from tickpipe.errors import CommandError
from tickpipe.kafka import consumer_config


def _consumer(settings: Settings) -> Consumer:
    config = consumer_config(
        settings,
        f"tickpipe-dlq-reader-{os.getpid()}-{time.monotonic_ns()}",
        # librdkafka's own log lines stay quiet: a broker that cannot be reached is reported in one line (CommandError).
        **{
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "socket.connection.setup.timeout.ms": 5000,
            "log_level": 0,
        },
    )
    return Consumer(config)


def _partitions(consumer: Consumer, topic: str, where: str) -> list[int]:
    try:
        metadata = consumer.list_topics(topic, timeout=10)
    except KafkaException as error:
        raise CommandError(f"Kafka: {error.args[0].str()} (is KAFKA_BOOTSTRAP_SERVERS right?)") from None
    described = metadata.topics.get(topic)
    if described is None or described.error is not None or not described.partitions:
        raise CommandError(f"no dead-letter topic {topic!r} (KAFKA_DLQ_TOPIC) at {where}")
    return sorted(described.partitions)


def _start_offsets(
    consumer: Consumer, topic: str, partitions: list[int], since_ms: int | None, last: int | None
) -> dict[int, tuple[int, int]]:
    """partition → (first offset to read, end offset at start)."""
    bounds = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in partitions}
    starts = {p: low for p, (low, _) in bounds.items()}
    if since_ms is not None:
        found = consumer.offsets_for_times([TopicPartition(topic, p, since_ms) for p in partitions], timeout=10)
        for tp in found:
            # No record at or after that time: start at the end (nothing to read there).
            starts[tp.partition] = bounds[tp.partition][1] if tp.offset in (OFFSET_END, -1) else tp.offset
    if last is not None:
        starts = {p: max(starts[p], bounds[p][1] - last) for p in partitions}
    return {p: (starts[p], bounds[p][1]) for p in partitions}


def read(settings: Settings, *, since_ms: int | None = None, last: int | None = None) -> Iterator[DeadLetter]:
    """Every dead letter up to the end of the topic as it is now (the last `last` of each partition if given),
    from `since_ms` on if given. Records arrive in partition order, not time order."""
    consumer = _consumer(settings)
    try:
        topic = settings.kafka_dlq_topic
        ranges = _start_offsets(
            consumer, topic, _partitions(consumer, topic, settings.kafka_bootstrap_servers), since_ms, last
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
            record = _record(message)
            if since_ms is None or record.rejected_at_ms is None or record.rejected_at_ms >= since_ms:
                yield record
    finally:
        consumer.close()


def follow(
    settings: Settings,
    on_record: Callable[[DeadLetter], None],
    stop: Callable[[], bool],
    on_start: Callable[[], None] = lambda: None,
) -> None:
    """Call `on_record` for each dead letter written from now on, until `stop()` is true. `on_start` is called
    once "now" is fixed: every record written after it is seen."""
    consumer = _consumer(settings)
    try:
        topic = settings.kafka_dlq_topic
        ranges = _start_offsets(
            consumer, topic, _partitions(consumer, topic, settings.kafka_bootstrap_servers), None, 0
        )
        consumer.assign([TopicPartition(topic, p, end) for p, (_, end) in ranges.items()])
        on_start()
        while not stop():
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                on_record(_record(message))
    finally:
        consumer.close()


def _record(message: Message) -> DeadLetter:
    kind, timestamp = message.timestamp()
    value = message.value()
    return parse_record(
        value if isinstance(value, bytes) or value is None else str(value).encode(),
        timestamp_ms=timestamp if kind else None,
        partition=message.partition() or 0,
        offset=message.offset() or 0,
    )
