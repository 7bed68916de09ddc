"""The alternative a user would write instead of Flink: one Python process, Kafka → MA(5)/MA(20) → PostgreSQL.

A confluent-kafka consumer, each symbol's window and de-duplication from the job's own maths
(`tickpipe.ma_job.indicators.SymbolWindow`), bad records to the dead-letter topic, and every batch written with COPY
into a temporary table plus one `INSERT ... ON CONFLICT`, offsets committed after the rows. The benchmarks run it
on the same pre-loaded topic as the MA job, so the job's rate reads against what plain Python does.

What it does not do, and the job does: restore its windows after a restart (it would start them empty, so the MAs of
the first 19 ticks per symbol after a restart would be NULL or wrong), scale past one core, or survive a crash
between the rows and the offsets with exact MAs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

import psycopg
from confluent_kafka import Consumer, Producer

from bench.report import Measurement
from tickpipe.config import Settings
from tickpipe.kafka import producer_config
from tickpipe.ma_job.indicators import SymbolWindow, stale_reason
from tickpipe.schema import InvalidTick, dead_letter, parse_tick

STAGE = "python-baseline"
STAGING = "CREATE TEMPORARY TABLE IF NOT EXISTS staging (LIKE price_ticks INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
UPSERT = (
    "INSERT INTO price_ticks SELECT * FROM staging ON CONFLICT (source, symbol, time) "
    "DO UPDATE SET price = EXCLUDED.price, volume = EXCLUDED.volume, ma_short = EXCLUDED.ma_short, "
    "ma_long = EXCLUDED.ma_long"
)
Row = tuple[datetime, str, float, float, float | None, float | None]


def run(
    settings: Settings,
    *,
    group: str,
    until: Callable[[int], bool],
    batch_rows: int = 5000,
    flush_after: float = 0.1,
    timeout: float = 600.0,
) -> int:
    """Consume `settings.kafka_topic` from the group's offsets (the start for a new group) and write rows until
    `until(rows written)` is true; return the rows written."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka_bootstrap_servers,
            "group.id": group,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.min.bytes": 100_000,
            "fetch.wait.max.ms": 20,
        }
    )
    dlq = Producer(producer_config(settings))
    windows: dict[str, SymbolWindow] = {}
    pending: list[Row] = []
    written = 0
    deadline = time.monotonic() + timeout
    consumer.subscribe([settings.kafka_topic])
    try:
        with psycopg.connect(settings.conninfo("owner")) as conn:
            conn.execute(STAGING)
            conn.commit()
            last_flush = time.monotonic()
            while not until(written) and time.monotonic() < deadline:
                for message in consumer.consume(batch_rows, timeout=flush_after):
                    if message.error():
                        continue
                    row = _row(message.value(), windows, dlq, settings.kafka_dlq_topic)
                    if row is not None:
                        pending.append(row)
                if pending and (len(pending) >= batch_rows or time.monotonic() - last_flush >= flush_after):
                    _write(conn, pending)
                    consumer.commit(asynchronous=False)  # after the rows: a crash replays, upserts absorb it
                    written += len(pending)
                    pending.clear()
                    last_flush = time.monotonic()
                dlq.poll(0)
    finally:
        consumer.close()
        dlq.flush(30)
    return written


def _row(value: bytes | None, windows: dict[str, SymbolWindow], dlq: Producer, dlq_topic: str) -> Row | None:
    try:
        tick = parse_tick(value)
    except InvalidTick as error:
        dlq.produce(dlq_topic, dead_letter(value, str(error), STAGE))
        return None
    window = windows.setdefault(tick.key, SymbolWindow())
    if not window.accepts(tick.event_time_ms):
        reason = stale_reason(tick.event_time_ms, window.last_event_time_ms)
        dlq.produce(dlq_topic, dead_letter(tick.to_json(), reason, STAGE))
        return None
    averages = window.add(tick.event_time_ms, tick.price)
    moment = datetime.fromtimestamp(tick.event_time_ms / 1000, UTC)
    return moment, tick.symbol, tick.price, tick.volume, averages.ma_short, averages.ma_long


def _write(conn: psycopg.Connection[tuple[object, ...]], rows: list[Row]) -> None:
    with conn.cursor() as cursor:
        with cursor.copy("COPY staging (time, symbol, price, volume, ma_short, ma_long) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        cursor.execute(UPSERT)
    conn.commit()


def drain(settings: Settings, count: int) -> Measurement:
    """Its steady rate over the first `count` ticks of the topic with a new group: from 30 % of them written to
    the last, as the job's rate is measured."""
    marks: dict[str, tuple[float, int]] = {}

    def until(written: int) -> bool:
        now = time.perf_counter()
        if "start" not in marks and written >= count * 3 // 10:
            marks["start"] = (now, written)
        if written >= count:
            marks["end"] = (now, written)
            return True
        return False

    with psycopg.connect(settings.conninfo("owner"), autocommit=True) as conn:
        conn.execute("TRUNCATE price_ticks")
    run(settings, group=f"bench-python-{time.monotonic_ns()}", until=until)
    if "end" not in marks:
        raise RuntimeError(f"the Python alternative did not write {count:,} rows in time")
    (t0, n0), (t1, n1) = marks["start"], marks["end"]
    return Measurement("python, one process: Kafka → postgres (COPY + upsert)", n1 - n0, (n1 - n0) / (t1 - t0))
