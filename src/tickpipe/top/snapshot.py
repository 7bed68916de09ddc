"""What `tickpipe top` shows, read the way Grafana would: from the database and the stages' endpoints."""

from __future__ import annotations

import json
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from confluent_kafka import Consumer, KafkaException, TopicPartition

from tickpipe.config import Settings
from tickpipe.kafka import consumer_config
from tickpipe.stack.manager import LocalStack
from tickpipe.stack.memory import MemoryReport, measure, run_processes

# Newest two rows per series, a series being (source, symbol): the same symbol from two sources is two lines, never
# one (the pair tells whether MA(5) just crossed MA(20)), and the tick rate over the last 10 s. The series list comes
# from a loose index scan of price_ticks' key (source, symbol, time DESC): one index probe per series, not a scan of
# the table. RSI(14) is the one of the series' newest closed 1m candle (NULL until warm): one probe of candles_1m's
# primary key (source, symbol, open_time).
SERIES_SQL = """
WITH RECURSIVE series AS (
    (SELECT source, symbol FROM price_ticks ORDER BY source, symbol LIMIT 1)
    UNION ALL
    SELECT next.source, next.symbol
    FROM series s
    CROSS JOIN LATERAL (SELECT p.source, p.symbol FROM price_ticks p
                        WHERE (p.source, p.symbol) > (s.source, s.symbol)
                        ORDER BY p.source, p.symbol LIMIT 1) next
)
SELECT s.source, s.symbol, last.time, last.price, last.ma_short, last.ma_long, prev.ma_short, prev.ma_long,
       (SELECT count(*) FROM price_ticks r
        WHERE r.source = s.source AND r.symbol = s.symbol AND r.time > last.time - interval '10 seconds'),
       extract(epoch FROM clock_timestamp() - last.time),
       (SELECT c.rsi_14 FROM candles_1m c WHERE c.source = s.source AND c.symbol = s.symbol
        ORDER BY c.open_time DESC LIMIT 1)
FROM series s
CROSS JOIN LATERAL (SELECT time, price, ma_short, ma_long FROM price_ticks p
                    WHERE p.source = s.source AND p.symbol = s.symbol ORDER BY time DESC LIMIT 1) last
LEFT JOIN LATERAL (SELECT ma_short, ma_long FROM price_ticks p
                   WHERE p.source = s.source AND p.symbol = s.symbol AND p.time < last.time
                   ORDER BY time DESC LIMIT 1) prev ON true
ORDER BY s.source, s.symbol
LIMIT %(limit)s
"""


@dataclass(frozen=True)
class SymbolRow:
    """The newest tick of one series: (source, symbol)."""

    source: str
    symbol: str
    price: float
    ma_short: float | None
    ma_long: float | None
    cross: str  # "golden" (MA5 crossed above MA20), "death" (below) or ""
    ticks_per_second: float
    age_seconds: float  # now - the newest tick's event time: end-to-end lag plus the wait for the next tick
    rsi_14: float | None = None  # RSI(14) of the newest closed 1m candle; None until warm or without candles


@dataclass(frozen=True)
class Health:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Snapshot:
    symbols: list[SymbolRow]
    health: list[Health]
    dlq_records: int | None
    taken_at: float
    restarts: dict[str, int] = field(default_factory=dict)  # stage or engine process → restarts by `tickpipe run`
    memory: MemoryReport | None = None  # PSS of the engines and the run's stages on this machine


def cross_of(ma_short: float | None, ma_long: float | None, prev_short: float | None, prev_long: float | None) -> str:
    if None in (ma_short, ma_long, prev_short, prev_long):
        return ""
    now, before = ma_short - ma_long, prev_short - prev_long  # type: ignore[operator]
    if before <= 0 < now:
        return "golden"
    if before >= 0 > now:
        return "death"
    return ""


def read_symbols(settings: Settings, limit: int = 50) -> list[SymbolRow]:
    """One row per (source, symbol) in price_ticks, ordered by source then symbol, at most `limit`."""
    with psycopg.connect(settings.conninfo("reader"), connect_timeout=3) as conn:
        rows = conn.execute(SERIES_SQL, {"limit": limit}).fetchall()
    return [
        SymbolRow(
            source=row[0],
            symbol=row[1],
            price=row[3],
            ma_short=row[4],
            ma_long=row[5],
            cross=cross_of(row[4], row[5], row[6], row[7]),
            ticks_per_second=row[8] / 10.0,
            age_seconds=float(row[9]),
            rsi_14=row[10],
        )
        for row in rows
    ]


def dlq_records(settings: Settings) -> int:
    """Records ever written to the dead-letter topic: the sum of its partitions' high watermarks."""
    consumer = Consumer(consumer_config(settings, "tickpipe-top", log_level=0))
    try:
        topic = consumer.list_topics(settings.kafka_dlq_topic, timeout=3).topics.get(settings.kafka_dlq_topic)
        if topic is None or topic.error is not None:
            return 0
        total = 0
        for partition in topic.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(settings.kafka_dlq_topic, partition), timeout=3)
            total += high - max(low, 0) if low >= 0 else high
        return total
    finally:
        consumer.close()


def _get_json(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - local stage endpoints
        return json.load(response)


def probe_http(name: str, url: str) -> Health:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - local stage endpoints
            return Health(name, response.status == 200, response.read().decode().strip() or "ok")
    except OSError as error:
        return Health(name, False, str(getattr(error, "reason", error)))


# The Flink jobs of a run and the names they run under (tickpipe.ma_job.tables / candle_tables: a job started for
# another consumer group has ".<group>" after the name).
FLINK_JOBS = {"ma-job": "tickpipe-ma-job", "candle-job": "tickpipe-candle-job"}


def probe_flink(rest_url: str, stage: str = "ma-job") -> Health:
    name = FLINK_JOBS[stage]
    try:
        jobs = _get_json(f"{rest_url}/jobs/overview")["jobs"]
    except (OSError, KeyError, ValueError) as error:
        return Health(stage, False, f"Flink REST at {rest_url}: {error}")
    jobs = [job for job in jobs if str(job.get("name", "")).split(".")[0] == name]
    running = [job for job in jobs if job.get("state") == "RUNNING"]
    if not running:
        states = ", ".join(sorted({job.get("state", "?") for job in jobs})) or "no jobs"
        return Health(stage, False, states)
    job = running[0]
    detail = "RUNNING"
    try:
        # Restarts mean a failing dependency (database or broker away): Flink retries from its last checkpoint.
        metric = _get_json(f"{rest_url}/jobs/{job['jid']}/metrics?get=numRestarts")
        restarts = int(metric[0]["value"]) if metric else 0
        if restarts:
            detail += f", {restarts} restart{'s' if restarts > 1 else ''}"
        checkpoints = _get_json(f"{rest_url}/jobs/{job['jid']}/checkpoints")
        completed = (checkpoints.get("latest") or {}).get("completed") or {}
        if completed:
            age = time.time() - completed["latest_ack_timestamp"] / 1000
            detail += f", checkpoint {age:.0f} s ago"
    except (OSError, KeyError, ValueError, IndexError):
        pass
    return Health(stage, True, detail)


def probe_database(settings: Settings) -> Health:
    try:
        with psycopg.connect(settings.conninfo("reader"), connect_timeout=3) as conn:
            row = conn.execute("SELECT extract(epoch FROM clock_timestamp() - max(time)) FROM price_ticks").fetchone()
    except psycopg.Error as error:
        return Health("database", False, str(error).strip().splitlines()[0])
    age = row[0] if row else None
    return Health("database", True, "no rows yet" if age is None else f"newest row {float(age):.1f} s old")


def probe_kafka(settings: Settings) -> Health:
    consumer = Consumer(consumer_config(settings, "tickpipe-top", log_level=0))
    try:
        metadata = consumer.list_topics(timeout=3)
        return Health("kafka", True, f"{len(metadata.brokers)} broker(s)")
    except KafkaException as error:
        return Health("kafka", False, str(error))
    finally:
        consumer.close()


def run_state(home: Path) -> dict[str, Any]:
    """What `tickpipe run` started (stages, their metrics URLs); empty when it is not running."""
    try:
        state: dict[str, Any] = json.loads((home / "run.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return state


# Reading PSS walks the page tables of every process (the JVMs' take milliseconds each): every few seconds is enough.
MEMORY_EVERY_SECONDS = 5.0
_memory_reports: dict[Path, tuple[float, MemoryReport]] = {}


def memory_report(home: Path, settings: Settings) -> MemoryReport:
    """PSS of the engines and the run's stages on state dir `home`, measured at most every MEMORY_EVERY_SECONDS."""
    now = time.monotonic()
    taken = _memory_reports.get(home)
    if taken and now - taken[0] < MEMORY_EVERY_SECONDS:
        return taken[1]
    report = measure(run_processes(home, LocalStack(home, settings.jars_dir).running()))
    _memory_reports[home] = (now, report)
    return report


def take_snapshot(settings: Settings, home: Path, flink_rest_url: str | None, limit: int = 50) -> Snapshot:
    health = [probe_kafka(settings), probe_database(settings)]
    state = run_state(home)
    stages = state.get("stages", {})
    if stages.get("ingestor", {}).get("metrics_url"):
        health.append(probe_http("ingestor", stages["ingestor"]["metrics_url"] + "/healthz"))
    if flink_rest_url:
        # The jobs the run started (`tickpipe run --no-candles` starts no candle job); every one without a run.
        health.extend(probe_flink(flink_rest_url, stage) for stage in FLINK_JOBS if not stages or stage in stages)
    try:
        symbols = read_symbols(settings, limit)
    except psycopg.Error:
        symbols = []
    try:
        dlq: int | None = dlq_records(settings)
    except KafkaException:
        dlq = None
    memory = memory_report(home, settings)
    return Snapshot(symbols, health, dlq, time.time(), dict(state.get("restarts") or {}), memory)
