"""What this machine can do without the pipeline: the ceilings every pipeline figure is a ratio to.

- Kafka: produce the same tick payloads (idempotent, acks=all, as the ingestor) and consume them back, with the
  settings a tuned client uses (large batches, lz4, big fetches, direct partition assignment: no group join).
- PostgreSQL: write the same rows into `price_ticks` with COPY, with multi-row upserts as the job's sink does, and
  with COPY into a staging table plus one upsert from it; the rows are encoded before the clock starts, so these are
  the server's rates, not the client's.

Every rate is a steady-state one, as the job's is: from WARM_UP of the records done to the last, so that connecting,
metadata, the first batches and the broker's and server's caches warming up are not counted.
"""

# The SQL here is built from this module's constants and the benchmark's own generated rows, never from input.
# ruff: noqa: S608
from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

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


# One write of the job's sink: the rows of a flush, as many as SINK_FLUSH_MAX_ROWS allows.
BATCH = 1_000
COLUMNS = "source, time, symbol, price, volume, ma_short, ma_long"
UPSERT_SET = (
    "ON CONFLICT (source, symbol, time) DO UPDATE SET price = EXCLUDED.price, volume = EXCLUDED.volume, "
    "ma_short = EXCLUDED.ma_short, ma_long = EXCLUDED.ma_long"
)


def _batches(count: int, symbol_count: int, size: int) -> list[list[tuple[str, ...]]]:
    """The benchmark's ticks as rows of text (ISO time, floats as repr), `size` rows a batch."""
    from datetime import UTC, datetime

    rows: list[tuple[str, ...]] = [
        (
            t.source,
            datetime.fromtimestamp(t.event_time_ms / 1000, UTC).isoformat(),
            t.symbol,
            repr(t.price),
            repr(t.volume),
            repr(t.price),
            repr(t.price),
        )
        for t in ticks(count, symbol_count)
    ]
    return [rows[offset : offset + size] for offset in range(0, count, size)]


def _copy_text(batch: list[tuple[str, ...]]) -> bytes:
    return "".join("\t".join(row) + "\n" for row in batch).encode()


def _values_text(batch: list[tuple[str, ...]]) -> str:
    # Every field is a plain token (source and symbol alphanumeric, ISO time, a float's repr): quoting is enough.
    return ",".join("(" + ",".join(f"'{field}'" for field in row) + ")" for row in batch)


def _write_batches(
    settings: Settings,
    name: str,
    batches: list[tuple[int, Any]],
    write: Callable[[psycopg.Connection[Any], Any], None],
    setup: str | None = None,
) -> Measurement:
    """Each batch (rows, what `write` sends) written and committed (one transaction each, as the sink's flushes),
    after the session's `setup` statement; the steady rate."""
    count = sum(rows for rows, _ in batches)
    written = SteadyRate(count)
    with psycopg.connect(settings.conninfo("owner")) as conn:
        conn.execute("TRUNCATE price_ticks")
        if setup:
            conn.execute(setup)
        conn.commit()
        for rows, batch in batches:
            write(conn, batch)
            conn.commit()
            written.add(rows)
        stored = conn.execute("SELECT count(*) FROM price_ticks").fetchone()
        if not stored or stored[0] != count:
            raise RuntimeError(f"{name}: {count:,} rows written, {stored[0] if stored else 0:,} in price_ticks")
        conn.execute("TRUNCATE price_ticks")
        conn.commit()
    return Measurement(name, count, written.per_second, f"steady state (from {WARM_UP:.0%})")


def postgres_copy(settings: Settings, count: int, symbol_count: int) -> Measurement:
    """COPY in chunks of 10,000 rows, one transaction each (a single COPY would have no steady state to measure).
    The rows are COPY text before the clock starts: the server's rate, not the client's encoding."""
    chunks = [(len(batch), _copy_text(batch)) for batch in _batches(count, symbol_count, 10_000)]

    return _write_batches(settings, "postgres COPY", chunks, lambda conn, chunk: _copy(conn, "price_ticks", chunk))


def _copy(conn: psycopg.Connection[Any], table: str, chunk: bytes) -> None:
    with conn.cursor() as cursor, cursor.copy(f"COPY {table} ({COLUMNS}) FROM STDIN") as copy:
        copy.write(chunk)


def postgres_upserts(settings: Settings, count: int, symbol_count: int) -> Measurement:
    """Multi-row INSERT ... ON CONFLICT DO UPDATE, BATCH rows per statement and transaction: the JDBC upsert sink's
    writes (its driver rewrites a batch into multi-row INSERTs). The statements' text is built before the clock."""
    statements = [
        (len(batch), f"INSERT INTO price_ticks ({COLUMNS}) VALUES {_values_text(batch)} {UPSERT_SET}")
        for batch in _batches(count, symbol_count, BATCH)
    ]

    def write(conn: psycopg.Connection[Any], statement: str) -> None:
        conn.execute(statement.encode())

    return _write_batches(settings, f"postgres upsert (batches of {BATCH:,})", statements, write)


def postgres_copy_upserts(settings: Settings, count: int, symbol_count: int) -> Measurement:
    """COPY a batch into a temporary staging table, then one INSERT ... SELECT ... ON CONFLICT DO UPDATE from it,
    BATCH rows per transaction: the other way a client upserts in bulk."""
    chunks = [(len(batch), _copy_text(batch)) for batch in _batches(count, symbol_count, BATCH)]

    def write(conn: psycopg.Connection[Any], chunk: bytes) -> None:
        _copy(conn, "staging_ticks", chunk)
        conn.execute(f"INSERT INTO price_ticks ({COLUMNS}) SELECT {COLUMNS} FROM staging_ticks {UPSERT_SET}")

    return _write_batches(
        settings,
        f"postgres COPY to staging + upsert (batches of {BATCH:,})",
        chunks,
        write,
        setup="CREATE TEMPORARY TABLE staging_ticks (LIKE price_ticks INCLUDING DEFAULTS) ON COMMIT DELETE ROWS",
    )
