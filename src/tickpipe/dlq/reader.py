"""Read the dead-letter topic: everything up to now, the last N, or follow new records (tickpipe.topic_reader:
a private consumer that commits nothing and disturbs no consumer group)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from confluent_kafka import Message, TopicPartition

from tickpipe.config import Settings
from tickpipe.dlq.records import DeadLetter, parse_record
from tickpipe.topic_reader import partitions, private_consumer, read_messages, start_offsets


def read(settings: Settings, *, since_ms: int | None = None, last: int | None = None) -> Iterator[DeadLetter]:
    """Every dead letter up to the end of the topic as it is now (the last `last` of each partition if given),
    from `since_ms` on if given. Records arrive in partition order, not time order."""
    topic = settings.kafka_dlq_topic
    missing = f"no dead-letter topic {topic!r} (KAFKA_DLQ_TOPIC) at {settings.kafka_bootstrap_servers}"
    for message in read_messages(settings, topic, since_ms=since_ms, last=last, missing=missing, purpose="dlq-reader"):
        record = _record(message)
        if since_ms is None or record.rejected_at_ms is None or record.rejected_at_ms >= since_ms:
            yield record


def follow(
    settings: Settings,
    on_record: Callable[[DeadLetter], None],
    stop: Callable[[], bool],
    on_start: Callable[[], None] = lambda: None,
) -> None:
    """Call `on_record` for each dead letter written from now on, until `stop()` is true. `on_start` is called
    once "now" is fixed: every record written after it is seen."""
    consumer = private_consumer(settings, "dlq-reader")
    try:
        topic = settings.kafka_dlq_topic
        missing = f"no dead-letter topic {topic!r} (KAFKA_DLQ_TOPIC) at {settings.kafka_bootstrap_servers}"
        ranges = start_offsets(consumer, topic, partitions(consumer, topic, missing), None, 0)
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
