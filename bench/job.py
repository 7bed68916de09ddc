"""The MA job alone: a pre-loaded topic drained by each engine into a discarding sink and into PostgreSQL.

The rate is measured from the first record reaching the job's sink to the last one (submission and start-up
excluded): for the discarding sink on Flink's own counter of records into it, read live from the TaskManager's
Prometheus reporter every 200 ms (the REST API's copy is refreshed only every 10 s); for PostgreSQL on the table.
"""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Producer

from bench.report import Measurement
from bench.workload import ticks
from tickpipe.config import MaEngine, Settings
from tickpipe.db import price_tick_rows
from tickpipe.kafka import producer_config
from tickpipe.ma_job.cli import submit
from tickpipe.ma_job.flink_rest import FlinkRest
from tickpipe.metrics import scrape
from tickpipe.schema import parse_tick


def preload(settings: Settings, count: int, symbol_count: int) -> None:
    # Ticks the job would reject all go to its dead letters, and the drain would wait for rows that never come.
    parse_tick(next(ticks(1, symbol_count)).to_json())
    producer = Producer(producer_config(settings, **{"linger.ms": 20, "batch.size": 1_000_000}))
    for tick in ticks(count, symbol_count):
        while True:
            try:
                producer.produce(settings.kafka_topic, tick.to_json(), tick.key.encode())
                break
            except BufferError:
                producer.poll(0.05)
    producer.flush(300)


def _sink_records(metrics_urls: list[str], job_id: str) -> int:
    """Records into the price_ticks sink of `job_id`, summed over its subtasks (Prometheus text format)."""
    total = 0.0
    for url in metrics_urls:
        try:
            samples = scrape(url)
        except OSError:
            continue  # the JobManager's port, or a reporter not up yet
        total += sum(
            s.value
            for s in samples
            if s.name == "flink_taskmanager_job_task_operator_numRecordsIn"
            and s.labels.get("job_id") == job_id
            and s.labels.get("operator_name", "").startswith("price_ticks")
            and s.labels.get("operator_name", "").endswith("Writer")
        )
    return int(total)


def drain(
    settings: Settings,
    engine: MaEngine,
    *,
    discard: bool,
    count: int,
    metrics_urls: list[str],
    timeout: float = 900,
) -> Measurement:
    """Run one engine over the first `count` ticks of the pre-loaded topic with a new consumer group; return its
    steady rate: from 30 % of them reaching the sink to the last. Start-up is behind by then, and most of the JIT
    warm-up (Flink SQL compiles each job's operators anew; in the first seconds the C2 compiler takes ~60 % of a
    core here)."""
    run = settings.model_copy(update={"ma_engine": engine, "kafka_group_id": f"bench-{engine}-{uuid.uuid4().hex[:6]}"})
    if not discard:
        import psycopg

        with psycopg.connect(run.conninfo("owner"), autocommit=True) as conn:
            conn.execute("TRUNCATE price_ticks")
    job_id = submit(run, discard_sink=discard)
    conninfo = run.conninfo("owner")
    progress = (lambda: _sink_records(metrics_urls, job_id)) if discard else (lambda: price_tick_rows(conninfo))
    started: float | None = None
    first = 0
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            done = progress()
            now = time.perf_counter()
            if started is None and done >= count * 3 // 10:
                started, first = now, done
            if done >= count:
                break
            time.sleep(0.2)  # each read makes the TaskManager render all its metrics: not too often
        else:
            raise RuntimeError(f"{engine} job processed {done:,} of {count:,} ticks within {timeout:.0f} s")
    finally:
        FlinkRest(run.flink_rest_url).cancel(job_id)
    sink = "discard" if discard else "postgres"
    return Measurement(f"{engine.value} engine, Kafka → {sink}", count - first, (count - first) / (now - started))
