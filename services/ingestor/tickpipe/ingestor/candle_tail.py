"""Where the start-up repair begins: the newest candle this ingestor published before, read from the candle topic.

Why the topic and not a state file or the database: the topic is what the repair must complete, so what is on it is
the truth (a state file could claim a candle whose produce was lost in a crash, and the database lags behind the job
and is not the ingestor's dependency); it survives a pod moving to another node without a volume; and it needs
nothing but the broker the ingestor needs anyway. Candles still in the disk buffer at start are not on the topic yet:
those minutes are fetched again, which is harmless (a repeated candle is equal and the job drops it).

Each partition is read backwards in growing windows from its end, until every wanted key was seen or the window
reaches the records produced before the look-back: in steady state the last few minutes of records hold every
symbol's newest candle, so a start reads a few records per symbol, not the whole look-back. A key found first among
late repaired candles may have a newer streamed one just before them: the repair then starts earlier than needed,
never later (repeats, no hole).
"""

from __future__ import annotations

import time

import orjson
from confluent_kafka import OFFSET_END, Consumer, KafkaException, TopicPartition

from tickpipe.candle_schema import candle_key
from tickpipe.config import Settings
from tickpipe.kafka import consumer_config
from tickpipe.logs import get_logger
from tickpipe.schema import parse_timestamp

log = get_logger("tickpipe.ingestor")


def newest_candles(
    settings: Settings,
    source: str,
    symbols: tuple[str, ...],
    since_ms: int,
    timeout: float = 60.0,
    *,
    before_ms: int | None = None,
) -> dict[str, int]:
    """Each symbol's newest candle open time (ms) on the candle topic among records produced since `since_ms`
    (wall clock), and before `before_ms` if given; symbols without one are absent. Raises KafkaException if the
    topic cannot be read in time."""
    wanted = {candle_key(source, symbol.upper()): symbol.upper() for symbol in symbols}
    topic = settings.kafka_candles_topic
    deadline = time.monotonic() + timeout
    consumer = Consumer(
        consumer_config(
            settings,
            "tickpipe-ingestor-candle-tail",  # never subscribes or commits: only assign()
            **{"enable.auto.commit": False, "enable.partition.eof": False},
        )
    )
    newest: dict[str, int] = {}
    try:
        metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            return {}
        partitions = sorted(metadata.partitions)
        floors = consumer.offsets_for_times([TopicPartition(topic, p, since_ms) for p in partitions], timeout=timeout)
        bounds: dict[int, tuple[int, int]] = {}  # partition → (oldest offset to read, end)
        for floor in floors:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, floor.partition), timeout=timeout)
            start = high if floor.offset in (OFFSET_END, -1) or floor.offset < 0 else max(low, floor.offset)
            if start < high:
                bounds[floor.partition] = (start, high)
        read_from = {p: end for p, (_, end) in bounds.items()}
        window = 4 * len(wanted) + 64
        while bounds and len(newest) < len(wanted):
            ranges = {}
            for p, (start, _end) in bounds.items():
                begin = max(start, read_from[p] - window)
                if begin < read_from[p]:
                    ranges[p] = (begin, read_from[p])
            if not ranges:
                break
            _read(consumer, topic, ranges=ranges, wanted=wanted, newest=newest, deadline=deadline, before_ms=before_ms)
            read_from.update({p: begin for p, (begin, _) in ranges.items()})
            window *= 4
    finally:
        consumer.close()
    return newest


def _read(
    consumer: Consumer,
    topic: str,
    *,
    ranges: dict[int, tuple[int, int]],
    wanted: dict[bytes, str],
    newest: dict[str, int],
    deadline: float,
    before_ms: int | None,
) -> None:
    """Read offsets [begin, end) of each partition, keeping each wanted key's newest open time (of records produced
    before `before_ms`, if given)."""
    consumer.assign([TopicPartition(topic, p, begin) for p, (begin, _) in ranges.items()])
    left = {p: end for p, (_, end) in ranges.items()}
    while left:
        if time.monotonic() > deadline:
            raise KafkaException(f"timed out reading the tail of {topic}")
        for message in consumer.consume(1000, 0.5):
            if message.error() is not None:
                continue
            partition, offset = message.partition(), message.offset()
            end = left.get(partition) if partition is not None else None
            if partition is None or end is None or offset is None or offset >= end:
                continue
            if offset >= end - 1:
                del left[partition]
            symbol = wanted.get(message.key() or b"")
            if symbol is None or (before_ms is not None and message.timestamp()[1] >= before_ms):
                continue
            try:
                open_ms = parse_timestamp(orjson.loads(message.value() or b"{}")["open_time"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
            if open_ms > newest.get(symbol, -1):
                newest[symbol] = open_ms
    consumer.unassign()
