"""The whole local pipeline at one offered rate: delivered rate, backlog growth, latency percentiles, CPU, RSS.

Latency is the time from the tick's exchange event time (the sender stamps it when it sends) to the row being
readable in PostgreSQL, observed by polling a sample of symbols every 10 ms for rows newer than the last seen
(so it includes up to ~10 ms of polling delay; 50 ms before 2026-12-02). Nothing is added to what users see. The
same ticks are also read from Kafka as they are produced (bench/stage_latency.py), which splits each one's latency
into the ingestor's, Kafka's and the job's + sink's part (the report's "Where the latency goes").

The ticks come from the load generator (bench/loadgen.py; `sender="sim"`: the simulator, as `tickpipe run` does).
Either way the sender's CPU is reported apart from the pipeline's stages: in production Binance does the sending.

Three configurations (`features`, a column of the report; FEATURES):
- off: the tick path alone, as the runs before the candle job measured: the ingestor streams tickers only
  (INGEST_KLINES=false: no kline streams, no REST catch-up at start) and no candle job runs
  (`tickpipe run --no-candles`).
- candles: the ingestor also streams every symbol's @kline_1m (2 streams per symbol) and repairs from REST at
  start (the load generator answers GET /api/v3/klines, with HISTORY_MINUTES of candles before its start, so the
  indicators are warm and the signals can fire from the first minute), publishing closed candles to `candles`; the
  candle job stores them in candles_1m with their indicators and derives the signals. No candles built from ticks
  (CANDLES_FROM_TICKS_SOURCES empty: the candle job does not read the ticks).
- on: the default configuration: as `candles`, and the candle job reads every tick for the candles built from ticks
  (CANDLES_FROM_TICKS_SOURCES=coingecko,yahoo: its Python parser sees every Binance tick and drops it).
The candle job's work is per minute: each minute close brings every symbol's candle at once. So a step with the
candle job first waits until candles_1m has rows (the job is up and its Python workers warm), then for the start-up
backlog to drain, and measures over a whole number of minutes: a window of 60 s holds exactly one minute close of
the sender's clock wherever it starts, so the per-minute work is counted once, at its average rate (a shorter
window would hold one close or none, over- or under-counting it). `run_step` rounds such a step's window up to a
multiple of 60 s; compare the configurations at the same offered rate and window, alternated in one run.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import psutil
import psycopg
from psycopg import sql

from bench import senders
from bench.ingest import produced_ticks
from bench.local_stack import discard, fresh_settings
from bench.report import StepResult
from bench.stage_latency import KafkaProbe, breakdown, sample_symbols
from tickpipe.db import price_tick_rows
from tickpipe.run.pipeline import LocalPipeline, RunOptions
from tickpipe.stack.manager import LocalStack
from tickpipe.stack.memory import process_pss

SAMPLE_SYMBOLS = 10
POLL_SECONDS = 0.01
MINUTE_SECONDS = 60.0
FEATURES = ("off", "candles", "on")
HISTORY_MINUTES = 30  # closed candles before the load generator's start: the indicators' longest warm-up is 26+9
# The load generator starts a step at this rate and raises it to the step's once rows arrive, over RAISE_SECONDS:
# started at its full rate, a step near the ceiling measured the catch-up of its start-up backlog (engines cold,
# jobs being submitted), which drains only at the spare capacity (2026-12-02: 50,000 ticks/s still draining after 3
# minutes). A running pipeline whose load rises is what the ramp means to measure.
START_RATE = 1_000.0
RAISE_SECONDS = 20


class LatencySampler(threading.Thread):
    def __init__(self, conninfo: str, symbols: list[str]) -> None:
        super().__init__(name="latency-sampler", daemon=True)
        self.conninfo, self.symbols = conninfo, symbols
        self.latencies_ms: list[float] = []
        self.readable: dict[tuple[str, int], float] = {}  # (symbol, event time ms) → when its row was readable
        self.recording = False
        self.stop_event = threading.Event()

    def run(self) -> None:
        last = dict.fromkeys(self.symbols, datetime(2000, 1, 1, tzinfo=UTC))
        # Planned with each poll's values, never prepared: after five executions psycopg prepares, and PostgreSQL's
        # generic plan for it (no partition pruning, no idea how new `last` is) read whole partitions, up to 60 ms
        # and 60 % of a core per 100 polls/s, slowing the very upserts it measures.
        with psycopg.connect(self.conninfo, autocommit=True, prepare_threshold=None) as conn:
            while not self.stop_event.wait(POLL_SECONDS):
                rows = conn.execute(
                    "SELECT p.symbol, p.time FROM price_ticks p "
                    "JOIN unnest(%s::text[], %s::timestamptz[]) AS l(symbol, last) "
                    # The source too: price_ticks' key (source, symbol, time) is the index that finds the new rows.
                    "ON p.source = 'binance' AND p.symbol = l.symbol AND p.time > l.last",
                    (list(last), list(last.values())),
                ).fetchall()
                seen_at = time.time()
                for symbol, moment in rows:
                    last[symbol] = max(last[symbol], moment)
                    if self.recording:
                        self.latencies_ms.append((seen_at - moment.timestamp()) * 1000)
                        self.readable[(symbol, round(moment.timestamp() * 1000))] = seen_at


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "max": float("nan")}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": ordered[-1]}


def _warm_up(rate: float, conninfo: str, metrics_url: str, check: Callable[[], None], limit: float = 60.0) -> None:
    """At least 10 s (JIT, the first checkpoint, connection pools), then until the start-up backlog is gone (at
    most one second of ticks in flight), for at most `limit` s: the step measures the steady state, not the
    catch-up."""
    start = time.monotonic()
    while time.monotonic() - start < limit:
        time.sleep(1.0)  # the warm-up's pace, under a deadline
        check()
        if time.monotonic() - start >= 10 and produced_ticks(metrics_url) - price_tick_rows(conninfo) < rate:
            return


def _raise_rate(loadgen: senders.Running, rate: float, symbol_count: int, check: Callable[[], None]) -> None:
    """From START_RATE to `rate` in RAISE_SECONDS steps of a second."""
    start = min(rate, START_RATE)
    for step in range(1, RAISE_SECONDS + 1):
        senders.set_rate(loadgen.rest_url, (start + (rate - start) * step / RAISE_SECONDS) / symbol_count)
        time.sleep(1.0)  # the rise's pace
        check()


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
    # The TaskManager's Python workers run the candle job's Python functions (the MA job's sql engine has none):
    # a group of their own, so the candle job's share of the TaskManager shows.
    if "flink TM" in groups:
        workers = [p for p in groups["flink TM"][1:] if _is_python(p)]
        if workers:
            groups["flink TM"] = [p for p in groups["flink TM"] if p not in workers]
            groups["flink TM python"] = workers
    return groups


def _is_python(process: psutil.Process) -> bool:
    try:
        return "python" in process.name().lower() or any("python" in part for part in process.cmdline()[:1])
    except psutil.Error:
        return False


def run_step(
    stack: LocalStack,
    home: Path,
    rate: float,
    symbol_count: int,
    seconds: float,
    *,
    sender: str = "loadgen",
    features: str = "off",
    warm_up_limit: float = 60.0,
) -> StepResult:
    """The pipeline at `rate` ticks/s over `symbol_count` symbols for `seconds` (features on: rounded up to whole
    minutes), fed by `sender` (loadgen or sim), with the features on (klines, the candle job) or off. The window
    starts once the start-up backlog is gone, or after `warm_up_limit` s of warm-up (the report shows what was in
    flight then)."""
    if features not in FEATURES:
        raise ValueError(f"unknown features {features!r}: one of {', '.join(FEATURES)}")
    candles = features != "off"
    tag = uuid.uuid4().hex[:6]
    tick_candles = {} if features == "on" else {"candles_from_ticks_sources": ()}
    settings = fresh_settings(
        kafka_group_id=f"bench-{tag}",
        checkpoint_interval_seconds=10.0,
        ingest_klines=candles,
        **tick_candles,
        # A step's candle job starts afresh: its own group (its savepoints are kept per group), topics of its own.
        candle_group_id=f"bench-candles-{tag}",
        kafka_candles_topic=f"bench-candles-{tag}",
        kafka_signals_topic=f"bench-signals-{tag}",
    )
    if candles:
        seconds = MINUTE_SECONDS * max(1, math.ceil(seconds / MINUTE_SECONDS - 1e-9))
    os.environ.update(settings.as_env())  # the stages are children: they read the same settings
    symbols = tuple(f"sym{i:04d}usdt" for i in range(symbol_count))
    with contextlib.ExitStack() as started:
        started.callback(discard, settings)  # last: after the pipeline and the sender stopped
        loadgen = None
        if sender == "loadgen":
            loadgen = started.enter_context(
                senders.sender(
                    sender,
                    list(symbols),
                    min(rate, START_RATE) / symbol_count,
                    home / "logs",
                    history_minutes=HISTORY_MINUTES,
                )
            )
        elif sender != "sim":
            raise ValueError(f"unknown sender {sender!r}: one of {', '.join(senders.SENDERS)}")
        options = RunOptions(
            symbols=symbols,
            rate=rate / symbol_count,
            external=True,
            seed=1,
            exchange_url=loadgen.url if loadgen else None,
            candles=candles,
        )
        pipeline = LocalPipeline(settings, home, options)
        return _measure(stack, pipeline, rate, seconds, loadgen=loadgen, features=features, warm_up_limit=warm_up_limit)


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


def _pss_mb(group: list[psutil.Process]) -> float:
    """The group's PSS (shared pages divided among the processes mapping them: PostgreSQL's shared buffers once)."""
    return sum(process_pss(process.pid) or 0 for process in group) / 2**20


def _count(conninfo: str, table: str) -> int:
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))).fetchone()
    return int(row[0]) if row else 0


def _wait_for_candles(conninfo: str, check: Callable[[], None], timeout: float = 150.0) -> None:
    """Until the candle job has stored candles (it handled a minute close: its Python workers are up and warm)."""
    deadline = time.monotonic() + timeout
    while _count(conninfo, "candles_1m") == 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no candles_1m rows within {timeout:.0f} s with the features on")
        time.sleep(1.0)  # the wait's pace, under a deadline
        check()


def _measure(
    stack: LocalStack,
    pipeline: LocalPipeline,
    rate: float,
    seconds: float,
    *,
    loadgen: senders.Running | None,
    features: str = "off",
    warm_up_limit: float = 60.0,
) -> StepResult:
    conninfo = pipeline.settings.conninfo("owner")
    sampled = sample_symbols(list(pipeline.symbols), pipeline.settings.kafka_topic_partitions, SAMPLE_SYMBOLS)
    sampler = LatencySampler(conninfo, sampled)
    probe = KafkaProbe(pipeline.settings, sampled)
    try:
        pipeline.start(lambda message: None)
        # Two Flink jobs submitted one after the other take longer to start on a busy machine.
        first_rows = 180 if features == "off" else 420
        deadline = time.monotonic() + first_rows
        while price_tick_rows(conninfo) == 0:
            pipeline.check()
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"no rows within {first_rows} s at {rate:,.0f} ticks/s; see {pipeline.home / 'logs'}"
                )
            time.sleep(0.5)
        sampler.start()
        probe.start()
        if features != "off":  # first: the candle job's start-up (its Python workers) slows the catch-up
            _wait_for_candles(conninfo, pipeline.check)
        if loadgen is not None:
            _raise_rate(loadgen, rate, len(pipeline.symbols), pipeline.check)
        _warm_up(rate, conninfo, pipeline.metrics_urls["ingestor"], pipeline.check, warm_up_limit)
        processes = _stage_processes(pipeline, stack)
        # The sender is not part of the pipeline: its CPU is reported on its own.
        sender = [loadgen.process] if loadgen else processes.pop("sim")
        bench = [psutil.Process()]  # this process: the sampler's and the probe's threads, the scans below
        for group in [sender, bench, *processes.values()]:
            _cpu_percent(group)
        peak: dict[str, float] = dict.fromkeys(processes, 0.0)
        metrics_url = pipeline.metrics_urls["ingestor"]
        candles0, signals0 = _count(conninfo, "candles_1m"), _count(conninfo, "signals")
        rows0, produced0, start = price_tick_rows(conninfo), produced_ticks(metrics_url), time.perf_counter()
        sampler.recording = probe.recording = True
        while time.perf_counter() - start < seconds:
            time.sleep(1.0)
            pipeline.check()
            for name, group in processes.items():
                peak[name] = max(peak[name], _rss_mb(group))
        sampler.recording = probe.recording = False
        elapsed = time.perf_counter() - start
        rows1, produced1 = price_tick_rows(conninfo), produced_ticks(metrics_url)
        cpu = {name: _cpu_percent(group) for name, group in processes.items()}
        sender_cpu, bench_cpu = _cpu_percent(sender), _cpu_percent(bench)
        pss = {name: _pss_mb(group) for name, group in processes.items()}
        candles, signals = _count(conninfo, "candles_1m") - candles0, _count(conninfo, "signals") - signals0
    finally:
        sampler.stop_event.set()
        probe.stop_event.set()
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
        bench_cpu_percent=bench_cpu,
        features=features,
        seconds=elapsed,
        in_flight_at_start=round(produced0 - rows0),
        pss_mb=pss,
        candles=candles,
        signals=signals,
        stage_latency_ms=breakdown(probe, sampler.readable),
    )
