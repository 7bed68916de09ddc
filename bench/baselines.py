"""What this machine can do without the pipeline: the ceilings every pipeline figure is a ratio to.

- Kafka: produce the same tick payloads (idempotent, acks=all, as the ingestor) and consume them back, with the
  settings a tuned client uses (large batches, lz4, big fetches, direct partition assignment: no group join).
- PostgreSQL: write the same rows into `price_ticks` with COPY, and with batched upserts as the job's sink does.

Every rate is a steady-state one, as the job's is: from WARM_UP of the records done to the last, so that connecting,
metadata, the first batches and the broker's and server's caches warming up are not counted.
"""

from __future__ import annotations

import threading
import time
import uuid

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from bench.report import Measurement
from bench.workload import ticks
from tickpipe.config import Settings
from tickpipe.kafka import ensure_topics, producer_config

WARM_UP = 0.2  # the share of records done before the clock starts


class SteadyRate:
    """Records done over time; the rate from WARM_UP of `total` to the last."""

    def __init__(self, total: int) -> None:
        self.total, self.done = total, 0
        self.started: float | None = None
        self.done_at_start = 0
        self.finished = 0.0

    def add(self, count: int) -> None:
        self.done += count
        now = time.perf_counter()
        if self.started is None and self.done >= WARM_UP * self.total:
            self.started, self.done_at_start = now, self.done
        self.finished = now

    @property
    def per_second(self) -> float:
        if self.started is None or self.finished <= self.started:
            return 0.0
        return (self.done - self.done_at_start) / (self.finished - self.started)


def kafka_round_trip(settings: Settings, count: int, symbol_count: int) -> Measurement:
    """Produce `count` ticks and consume them back at the same time; the steady rate of the consumer (SteadyRate)."""
    topic = f"bench-baseline-{uuid.uuid4().hex[:8]}"
    payloads = [(tick.key.encode(), tick.to_json()) for tick in ticks(count, symbol_count)]
    consumed = SteadyRate(count)
    done = threading.Event()

    def consume() -> None:
        consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap_servers,
                "group.id": topic,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "topic.metadata.refresh.interval.ms": 500,
                # A tuned consumer: large fetches, a deep prefetch queue.
                "fetch.min.bytes": 65_536,
                "fetch.wait.max.ms": 50,
                "queued.min.messages": 500_000,
            }
        )
        # Direct assignment, not a group subscription: a rebalance would be counted as transport time.
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        deadline = time.monotonic() + 300
        while consumed.done < count and time.monotonic() < deadline:
            consumed.add(sum(1 for message in consumer.consume(10_000, timeout=0.5) if not message.error()))
        consumer.close()
        done.set()

    ensure_topics(settings.model_copy(update={"kafka_topic": topic}))
    producer = Producer(producer_config(settings, **{"linger.ms": 20, "batch.size": 1_000_000}))
    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    for key, value in payloads:
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(120)
    done.wait(300)
    return Measurement(
        "kafka produce→consume", consumed.done, consumed.per_second, f"steady state (from {WARM_UP:.0%})"
    )


def _rows(count: int, symbol_count: int) -> list[tuple[object, ...]]:
    from datetime import UTC, datetime

    return [
        (datetime.fromtimestamp(t.event_time_ms / 1000, UTC), t.symbol, t.price, t.volume, t.price, t.price)
        for t in ticks(count, symbol_count)
    ]


def postgres_copy(settings: Settings, count: int, symbol_count: int) -> Measurement:
    """COPY in chunks of 10,000 rows, one transaction each (a single COPY would have no steady state to measure)."""
    rows = _rows(count, symbol_count)
    written = SteadyRate(count)
    with psycopg.connect(settings.conninfo("owner")) as conn:
        conn.execute("TRUNCATE price_ticks")
        conn.commit()
        for offset in range(0, count, 10_000):
            chunk = rows[offset : offset + 10_000]
            with (
                conn.cursor() as cursor,
                cursor.copy("COPY price_ticks (time, symbol, price, volume, ma_short, ma_long) FROM STDIN") as copy,
            ):
                for row in chunk:
                    copy.write_row(row)
            conn.commit()
            written.add(len(chunk))
        conn.execute("TRUNCATE price_ticks")
    return Measurement("postgres COPY", count, written.per_second, f"steady state (from {WARM_UP:.0%})")


def postgres_upserts(settings: Settings, count: int, symbol_count: int, batch: int = 500) -> Measurement:
    """Batched INSERT ... ON CONFLICT, one transaction per batch: what the JDBC upsert sink does."""
    rows = _rows(count, symbol_count)
    sql = (
        "INSERT INTO price_ticks (time, symbol, price, volume, ma_short, ma_long) VALUES (%s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (source, symbol, time) DO UPDATE SET price = EXCLUDED.price, volume = EXCLUDED.volume, "
        "ma_short = EXCLUDED.ma_short, ma_long = EXCLUDED.ma_long"
    )
    written = SteadyRate(count)
    with psycopg.connect(settings.conninfo("owner")) as conn:
        conn.execute("TRUNCATE price_ticks")
        conn.commit()
        with conn.cursor() as cursor:
            for offset in range(0, count, batch):
                chunk = rows[offset : offset + batch]
                cursor.executemany(sql, chunk)
                conn.commit()
                written.add(len(chunk))
        conn.execute("TRUNCATE price_ticks")
    return Measurement(
        f"postgres upsert (batches of {batch})", count, written.per_second, f"steady state (from {WARM_UP:.0%})"
    )
