"""Starting the sql engine without its state: from the Kafka offsets of its last savepoint, windows re-filled.

A savepoint maps onto a new job only while Flink finds the same operators with compatible state; a SQL edit can
change the plan so that it does not (table.exec.uid.generation pins uids only for compiled plans, and its `<id>`
counts ExecNodes, so it moves with any edit too). Then the job starts fresh, and this module says where:

- writing starts at the offsets the old job's savepoint (or retained checkpoint) holds for its Kafka source, i.e.
  exactly after the last records the old job wrote rows and dead letters for. Not the group's committed offsets:
  Flink commits them asynchronously after a checkpoint, for monitoring only, and a job stopped right after one
  leaves them behind (measured: a job that ran for a minute left the offsets of the job before it). The split
  state is read from the savepoint's files (Flink's KafkaPartitionSplit: topic, partition, offset, stopping
  offset); a partition it does not hold starts at the committed offset, else at its beginning;
- reading starts earlier, far enough back that each series' newest LONG_WINDOW - 1 rows in price_ticks are read
  again. Those records are seeds: they go through the windows and the duplicate check as they did the first time,
  and nothing is written for them (no row, no dead letter), so good MA values are never overwritten. From the
  seed of a series' oldest needed row on, the replay takes the same decisions as the old job did (event times of
  accepted ticks only grow), so the windows hold the same ticks at the committed offset.

The rewind is found by time: a record's Kafka timestamp (when it was produced) is not before its tick's event
time, so the first offset at or after the oldest needed row's event time, less SEED_MARGIN for clock skew, is not
after that row's record. Series without a row within MA_RESEED_LOOKBACK_HOURS of the newest row start cold.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
from confluent_kafka import Consumer, TopicPartition

from tickpipe.config import Settings
from tickpipe.errors import CommandError
from tickpipe.kafka import consumer_config
from tickpipe.ma_job.indicators import LONG_WINDOW

SEED_MARGIN = timedelta(minutes=5)
NO_STOPPING_OFFSET = -(2**63)  # KafkaPartitionSplit's "unbounded"
KAFKA_TIMEOUT_SECONDS = 30.0

# Per series, the oldest of its newest LONG_WINDOW - 1 rows: the first tick the re-filled window needs. Series are
# found among rows near the newest one (not now(): a pipeline that stood still for a day still re-seeds).
OLDEST_NEEDED = """
WITH recent AS (
  SELECT DISTINCT source, symbol FROM price_ticks
  WHERE time > (SELECT max(time) FROM price_ticks) - make_interval(secs => %(lookback)s)
)
SELECT min(needed.time) FROM recent, LATERAL (
  SELECT min(time) AS time FROM (
    SELECT time FROM price_ticks p WHERE p.source = recent.source AND p.symbol = recent.symbol
    ORDER BY time DESC LIMIT %(ticks)s
  ) newest
) needed"""


@dataclass(frozen=True)
class ReseedPlan:
    """Per partition of the tick topic: where reading starts and the first offset that is written again."""

    start: dict[int, int]
    first_written: dict[int, int]
    oldest_needed: datetime | None

    @property
    def seed_records(self) -> int:
        return sum(self.first_written[p] - self.start[p] for p in self.start)

    def startup_offsets(self) -> str:
        """Flink's `scan.startup.specific-offsets` value."""
        return ";".join(f"partition:{p},offset:{offset}" for p, offset in sorted(self.start.items()))

    def first_written_map(self) -> str:
        """`partition=offset,...`: the sql engine reads it with STR_TO_MAP."""
        return ",".join(f"{p}={offset}" for p, offset in sorted(self.first_written.items()))


def oldest_needed(settings: Settings) -> datetime | None:
    with psycopg.connect(settings.conninfo("owner")) as conn:
        row = conn.execute(
            OLDEST_NEEDED, {"lookback": settings.ma_reseed_lookback_hours * 3600, "ticks": LONG_WINDOW - 1}
        ).fetchone()
    return row[0] if row else None


def savepoint_offsets(location: str, topic: str) -> dict[int, int]:
    """The next offset per partition of `topic` in the Kafka source state of a savepoint or checkpoint.

    Flink's KafkaPartitionSplitSerializer writes a split as writeUTF(topic), int partition, long offset, long
    stopping offset; small operator state is inlined in `_metadata` (larger state in files beside it). A split
    whose reader had not fetched yet holds a negative marker and is left out."""
    folder = Path(urlsplit(location).path)
    name = topic.encode()
    needle = struct.pack(">H", len(name)) + name
    offsets: dict[int, int] = {}
    files = [path for path in folder.iterdir() if path.is_file()] if folder.is_dir() else []
    if not any(path.name == "_metadata" for path in files):
        raise CommandError(f"{location} is not a savepoint or checkpoint folder (no _metadata in it)")
    for path in files:
        data = path.read_bytes()
        at = data.find(needle)
        while at >= 0:
            end = at + len(needle) + 20
            if end <= len(data):
                partition, offset, stopping = struct.unpack(">iqq", data[at + len(needle) : end])
                if stopping == NO_STOPPING_OFFSET and partition >= 0 and offset >= 0:
                    offsets[partition] = max(offset, offsets.get(partition, 0))
            at = data.find(needle, at + 1)
    return offsets


def plan(settings: Settings, savepoint: str) -> ReseedPlan:
    """Where the job of settings.kafka_group_id reads and writes from when it starts without state, after the job
    that took `savepoint` (a savepoint or retained checkpoint of an earlier plan)."""
    saved = savepoint_offsets(savepoint, settings.kafka_topic)
    if not saved:
        raise CommandError(f"no Kafka offsets of topic {settings.kafka_topic} in {savepoint}: cannot re-seed from it")
    needed = oldest_needed(settings)
    consumer = Consumer(consumer_config(settings, settings.kafka_group_id, **{"enable.auto.commit": False}))
    try:
        topic = settings.kafka_topic
        metadata = consumer.list_topics(topic, timeout=KAFKA_TIMEOUT_SECONDS).topics[topic]
        partitions = [TopicPartition(topic, p) for p in sorted(metadata.partitions)]
        committed = consumer.committed(partitions, timeout=KAFKA_TIMEOUT_SECONDS)
        start: dict[int, int] = {}
        first_written: dict[int, int] = {}
        for tp in committed:
            low, _high = consumer.get_watermark_offsets(tp, timeout=KAFKA_TIMEOUT_SECONDS)
            # Not in the savepoint (not fetched yet, or new): the committed offset, else everything in it is new.
            written = saved.get(tp.partition, tp.offset if tp.offset >= 0 else low)
            first_written[tp.partition] = written
            start[tp.partition] = written
        if needed is not None:
            since_ms = int((needed - SEED_MARGIN).timestamp() * 1000)
            found = consumer.offsets_for_times(
                [TopicPartition(topic, p, since_ms) for p in start], timeout=KAFKA_TIMEOUT_SECONDS
            )
            for tp in found:
                if tp.offset >= 0:  # -1: no record that late, nothing before the committed offset to re-read
                    start[tp.partition] = min(start[tp.partition], tp.offset)
    finally:
        consumer.close()
    return ReseedPlan(start, first_written, needed)
