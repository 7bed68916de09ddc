"""The whole local pipeline at one offered rate: delivered rate, backlog growth, latency percentiles, CPU, RSS.

Latency is the time from the tick's exchange event time (the sender stamps it when it sends) to the row being
readable in PostgreSQL, observed by polling a sample of symbols every 50 ms for rows newer than the last seen
(so it includes up to ~50 ms of polling delay). Nothing is added to what users see.

The ticks come from the load generator (bench/loadgen.py; `sender="sim"`: the simulator, as `tickpipe run` does).
Either way the sender's CPU is reported apart from the pipeline's stages: in production Binance does the sending.
The ingestor streams tickers only (INGEST_KLINES=false: no kline streams, no REST catch-up at start), the tick path
of the earlier runs; the candle job runs, idle.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import psutil
import psycopg

from bench import senders
from bench.ingest import produced_ticks
from bench.local_stack import fresh_settings
from bench.report import StepResult
from tickpipe.db import price_tick_rows
from tickpipe.run.pipeline import LocalPipeline, RunOptions
from tickpipe.stack.manager import LocalStack

SAMPLE_SYMBOLS = 10
POLL_SECONDS = 0.05


class LatencySampler(threading.Thread):
    def __init__(self, conninfo: str, symbols: list[str]) -> None:
        super().__init__(name="latency-sampler", daemon=True)
        self.conninfo, self.symbols = conninfo, symbols
        self.latencies_ms: list[float] = []
        self.recording = False
        self.stop_event = threading.Event()

    def run(self) -> None:
        last = dict.fromkeys(self.symbols, datetime(2000, 1, 1, tzinfo=UTC))
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            while not self.stop_event.wait(POLL_SECONDS):
                rows = conn.execute(
                    "SELECT p.symbol, p.time FROM price_ticks p "
                    "JOIN unnest(%s::text[], %s::timestamptz[]) AS l(symbol, last) "
                    "ON p.symbol = l.symbol AND p.time > l.last",
                    (list(last), list(last.values())),
                ).fetchall()
                seen_at = time.time()
                for symbol, moment in rows:
                    last[symbol] = max(last[symbol], moment)
                    if self.recording:
                        self.latencies_ms.append((seen_at - moment.timestamp()) * 1000)


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "max": float("nan")}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": ordered[-1]}


def _warm_up(rate: float, conninfo: str, metrics_url: str, check: Callable[[], None]) -> None:
    """At least 10 s (JIT, the first checkpoint, connection pools), then until the start-up backlog is gone (at
    most one second of ticks in flight), for at most 60 s: the step measures the steady state, not the catch-up."""
    start = time.monotonic()
    while time.monotonic() - start < 60:
        time.sleep(1.0)  # the warm-up's pace, under a deadline
        check()
        if time.monotonic() - start >= 10 and produced_ticks(metrics_url) - price_tick_rows(conninfo) < rate:
            return


def _stage_processes(pipeline: LocalPipeline, stack: LocalStack) -> dict[str, list[psutil.Process]]:
    groups: dict[str, list[psutil.Process]] = {}
    for name, stage in pipeline.stages.items():
        if stage.pid:
            groups[name] = [psutil.Process(stage.pid)]
    for row in stack.status():
        if row.running and row.pid:
            name = {"flink-taskmanager": "flink TM", "flink-jobmanager": "flink JM"}.get(row.process, row.process)
            groups[name] = [psutil.Process(row.pid)]
    for processes in groups.values():  # children too: Flink's Python workers, PostgreSQL's backends
        processes.extend(processes[0].children(recursive=True))
    return groups


def run_step(
    stack: LocalStack, home: Path, rate: float, symbol_count: int, seconds: float, *, sender: str = "loadgen"
) -> StepResult:
    """The pipeline at `rate` ticks/s over `symbol_count` symbols for `seconds`, fed by `sender` (loadgen or sim)."""
    settings = fresh_settings(
        kafka_group_id=f"bench-{uuid.uuid4().hex[:6]}", checkpoint_interval_seconds=10.0, ingest_klines=False
    )
    os.environ.update(settings.as_env())  # the stages are children: they read the same settings
    symbols = tuple(f"sym{i:04d}usdt" for i in range(symbol_count))
    with contextlib.ExitStack() as started:
        loadgen = None
        if sender == "loadgen":
            loadgen = started.enter_context(senders.sender(sender, list(symbols), rate / symbol_count, home / "logs"))
        elif sender != "sim":
            raise ValueError(f"unknown sender {sender!r}: one of {', '.join(senders.SENDERS)}")
        options = RunOptions(
            symbols=symbols,
            rate=rate / symbol_count,
            external=True,
            seed=1,
            exchange_url=loadgen.url if loadgen else None,
        )
        pipeline = LocalPipeline(settings, home, options)
        return _measure(stack, pipeline, rate, seconds, loadgen=loadgen)


def _cpu_percent(group: list[psutil.Process]) -> float:
    """The group's CPU since the previous call (the first call primes it; 100 = one core)."""
    total = 0.0
    for process in group:
        # A PostgreSQL backend or a Flink Python worker may end between listing and measuring.
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.cpu_percent()
    return total


def _rss_mb(group: list[psutil.Process]) -> float:
    total = 0.0
    for process in group:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += process.memory_info().rss / 2**20
    return total


def _measure(
    stack: LocalStack, pipeline: LocalPipeline, rate: float, seconds: float, *, loadgen: senders.Running | None
) -> StepResult:
    conninfo = pipeline.settings.conninfo("owner")
    sampler = LatencySampler(conninfo, [s.upper() for s in pipeline.symbols[:SAMPLE_SYMBOLS]])
    try:
        pipeline.start(lambda message: None)
        deadline = time.monotonic() + 180
        while price_tick_rows(conninfo) == 0:
            pipeline.check()
            if time.monotonic() > deadline:
                raise RuntimeError(f"no rows within 180 s at {rate:,.0f} ticks/s; see {pipeline.home / 'logs'}")
            time.sleep(0.5)
        sampler.start()
        _warm_up(rate, conninfo, pipeline.metrics_urls["ingestor"], pipeline.check)
        processes = _stage_processes(pipeline, stack)
        # The sender is not part of the pipeline: its CPU is reported on its own.
        sender = [loadgen.process] if loadgen else processes.pop("sim")
        for group in [sender, *processes.values()]:
            _cpu_percent(group)
        peak: dict[str, float] = dict.fromkeys(processes, 0.0)
        metrics_url = pipeline.metrics_urls["ingestor"]
        rows0, produced0, start = price_tick_rows(conninfo), produced_ticks(metrics_url), time.perf_counter()
        sampler.recording = True
        while time.perf_counter() - start < seconds:
            time.sleep(1.0)
            pipeline.check()
            for name, group in processes.items():
                peak[name] = max(peak[name], _rss_mb(group))
        sampler.recording = False
        elapsed = time.perf_counter() - start
        rows1, produced1 = price_tick_rows(conninfo), produced_ticks(metrics_url)
        cpu = {name: _cpu_percent(group) for name, group in processes.items()}
        sender_cpu = _cpu_percent(sender)
    finally:
        sampler.stop_event.set()
        pipeline.stop(lambda message: None)
    delivered = (rows1 - rows0) / elapsed
    backlog_growth = ((produced1 - produced0) - (rows1 - rows0)) / elapsed
    return StepResult(
        rate,
        delivered,
        backlog_growth,
        _percentiles(sampler.latencies_ms),
        cpu,
        peak,
        sender=senders.NAMES["loadgen" if loadgen else "sim"],
        sender_cpu_percent=sender_cpu,
    )
