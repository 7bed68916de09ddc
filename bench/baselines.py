"""What this machine can do without the pipeline: the ceilings every pipeline figure is a ratio to.

- Kafka: produce the same tick payloads (idempotent, acks=all, as the ingestor) and consume them back.
- PostgreSQL: write the same rows into `price_ticks` with COPY, and with batched upserts as the job's sink does.
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


def kafka_round_trip(settings: Settings, count: int, symbol_count: int) -> Measurement:
    """Produce `count` ticks and consume them back; the rate is from first produce to last consumed."""
    topic = f"bench-baseline-{uuid.uuid4().hex[:8]}"
    payloads = [(tick.symbol.encode(), tick.to_json()) for tick in ticks(count, symbol_count)]
    consumed = 0
    done = threading.Event()

    def consume() -> None:
        nonlocal consumed
        consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka_bootstrap_servers,
                "group.id": topic,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "topic.metadata.refresh.interval.ms": 500,
            }
        )
        # Direct assignment, not a group subscription: a rebalance would be counted as transport time.
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        deadline = time.monotonic() + 300
        while consumed < count and time.monotonic() < deadline:
            consumed += sum(1 for message in consumer.consume(10_000, timeout=0.5) if not message.error())
        consumer.close()
        done.set()

    ensure_topics(settings.model_copy(update={"kafka_topic": topic}))
    producer = Producer(producer_config(settings, **{"linger.ms": 20, "batch.size": 1_000_000}))
    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    start = time.perf_counter()
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
    return Measurement("kafka produce→consume", consumed, consumed / (time.perf_counter() - start))


def _rows(count: int, symbol_count: int) -> list[tuple[object, ...]]:
    from datetime import UTC, datetime

    return [
        (datetime.fromtimestamp(t.event_time_ms / 1000, UTC), t.symbol, t.price, t.volume, t.price, t.price)
        for t in ticks(count, symbol_count)
    ]


def postgres_copy(settings: Settings, count: int, symbol_count: int) -> Measurement:
    rows = _rows(count, symbol_count)
    with psycopg.connect(settings.conninfo("owner")) as conn:
        conn.execute("TRUNCATE price_ticks")
        start = time.perf_counter()
        with (
            conn.cursor() as cursor,
            cursor.copy("COPY price_ticks (time, symbol, price, volume, ma_short, ma_long) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
        conn.commit()
        seconds = time.perf_counter() - start
        conn.execute("TRUNCATE price_ticks")
    return Measurement("postgres COPY", count, count / seconds)


def postgres_upserts(settings: Settings, count: int, symbol_count: int, batch: int = 500) -> Measurement:
    """Batched INSERT ... ON CONFLICT, one transaction per batch: what the JDBC upsert sink does."""
    rows = _rows(count, symbol_count)
    sql = (
        "INSERT INTO price_ticks (time, symbol, price, volume, ma_short, ma_long) VALUES (%s, %s, %s, %s, %s, %s) "
        "ON CONFLICT (symbol, time) DO UPDATE SET price = EXCLUDED.price, volume = EXCLUDED.volume, "
        "ma_short = EXCLUDED.ma_short, ma_long = EXCLUDED.ma_long"
    )
    with psycopg.connect(settings.conninfo("owner")) as conn:
        conn.execute("TRUNCATE price_ticks")
        conn.commit()
        start = time.perf_counter()
        with conn.cursor() as cursor:
            for offset in range(0, count, batch):
                cursor.executemany(sql, rows[offset : offset + batch])
                conn.commit()
        seconds = time.perf_counter() - start
        conn.execute("TRUNCATE price_ticks")
    return Measurement(f"postgres upsert (batches of {batch})", count, count / seconds)
