"""`python -m bench.run --quick|--full`: every benchmark in one run, with its baselines; writes BENCHMARKS.md.

baselines   Kafka produce→consume, PostgreSQL COPY and batched upserts of the same rows
ingest      the ingestor's message path vs a raw producer; the ingestor process fed over WebSocket
job         the MA job draining a pre-loaded topic: sql vs keyed, discarding sink vs PostgreSQL, and the same MAs
            computed by one plain Python process (bench/python_pipeline.py)
senders     the load generator and the simulator feeding a reader that discards: each one's CPU per 1,000 ticks/s
pipeline    the whole pipeline at rising offered rates until it cannot keep up (latency, CPU, RSS), fed by the load
            generator (--sender sim: the simulator); the sender's CPU is reported apart from the stages'; features
            off (tickers only, no candle job)
features    the whole pipeline with the features off, with exchange candles (klines, candle job: candles_1m,
            indicators, signals) and on (the default: also candles built from ticks), at the same offered rate(s),
            alternated, 60 s windows (one minute close each): what each feature costs
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from bench import ingest, job, pipeline, python_pipeline, senders
from bench.baselines import kafka_round_trip, postgres_copy, postgres_copy_upserts, postgres_upserts
from bench.local_stack import REPO, bench_stack, fresh_settings
from bench.report import Measurement, StepResult, best_round, markdown, plot_latency
from tickpipe.config import MaEngine
from tickpipe.logs import configure_logging
from tickpipe.stack.manager import LocalStack

PARTS = ("baselines", "ingest", "job", "senders", "pipeline", "features")


@dataclass
class Results:
    tables: dict[str, list[Measurement]] = field(default_factory=dict)
    steps: list[StepResult] = field(default_factory=list)
    pairs: list[StepResult] = field(default_factory=list)  # the features on/off steps
    ceilings: list[Measurement] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, title: str, measurement: Measurement) -> None:
        self.tables.setdefault(title, []).append(measurement)
        print(f"{title}: {measurement.name:<60} {measurement.per_second:>12,.0f}/s  {measurement.note}", flush=True)


BASELINE_ROUNDS = 3


def run_baselines(results: Results, rows: int, symbols: int) -> None:
    """Each baseline BASELINE_ROUNDS times, the four in turn (a slow spell of this shared machine then lowers one
    round of each, not every round of one); the best round is the ceiling: other load only ever lowers it. One
    round alone once put the upsert baseline at 34,687 rows/s in a run whose pipeline then upserted 45,000/s."""
    settings = fresh_settings()
    measures = (kafka_round_trip, postgres_copy, postgres_upserts, postgres_copy_upserts)
    rounds = [[measure(settings, rows, symbols) for measure in measures] for _ in range(BASELINE_ROUNDS)]
    for runs in zip(*rounds, strict=True):
        entry = best_round(runs)
        results.ceilings.append(entry)
        results.add("Baselines", entry)


def run_ingest(results: Results, rows: int, seconds: float, home: Path) -> None:
    settings = fresh_settings()
    for measurement in (
        ingest.raw_producer(settings, rows, 1000),
        ingest.message_path(settings, rows, 1000),
        ingest.over_websocket(settings, 1000, seconds, home),
    ):
        results.add("Ingestor", measurement)


def run_job(results: Results, stack: LocalStack, ticks: int, keyed_ticks: int, symbols: int) -> None:
    """Both engines on the same pre-loaded topic; the keyed one, ~50x slower, drains only its first `keyed_ticks`."""
    settings = fresh_settings()
    job.preload(settings, ticks, symbols)
    first = stack.ports("flink")["metrics"]  # the JobManager's and the TaskManager's reporters
    metrics_urls = [f"http://127.0.0.1:{port}/metrics" for port in (first, first + 1)]
    rates: dict[tuple[MaEngine, bool], float] = {}
    for engine, count in ((MaEngine.SQL, ticks), (MaEngine.KEYED, keyed_ticks)):
        for discard in (True, False):
            measurement = job.drain(settings, engine, discard=discard, count=count, metrics_urls=metrics_urls)
            rates[engine, discard] = measurement.per_second
            if engine is MaEngine.SQL and discard:
                results.ceilings.append(measurement)  # the job without the database bounds the pipeline too
            if engine is MaEngine.KEYED:
                ratio = rates[MaEngine.SQL, discard] / measurement.per_second
                measurement = replace(measurement, note=f"sql engine: {ratio:.0f}x this")
            results.add("MA job (pre-loaded topic)", measurement)
    alternative = python_pipeline.drain(settings, ticks)
    ratio = rates[MaEngine.SQL, False] / alternative.per_second
    results.add("MA job (pre-loaded topic)", replace(alternative, note=f"sql engine into postgres: {ratio:.1f}x this"))


def run_senders(results: Results, rates: list[float], symbols: int, seconds: float, home: Path) -> None:
    rows, notes = senders.compare(rates, symbols, seconds, home)
    for row in rows:
        results.add("Senders (→ a reader that discards; in production Binance sends, at no cost to us)", row)
    results.notes += notes


RAMP_WARM_UP_LIMIT = 180.0


def run_pipeline(
    results: Results, stack: LocalStack, home: Path, *, rates: list[int], symbols: int, seconds: float, sender: str
) -> None:
    for rate in rates:
        # Each step starts the pipeline afresh (at a low rate, raised once rows arrive: bench.pipeline.START_RATE);
        # near the ceiling what backlog the rise leaves drains at only the spare capacity: up to 3 minutes.
        step = pipeline.run_step(stack, home, rate, symbols, seconds, sender=sender, warm_up_limit=RAMP_WARM_UP_LIMIT)
        results.steps.append(step)
        lat = step.latency_ms
        print(
            f"pipeline {rate:>7,} ticks/s offered: {step.delivered_rate:>9,.0f} delivered, backlog "
            f"{step.lag_growth:+,.0f}/s, p50 {lat['p50']:.0f} p99 {lat['p99']:.0f} max {lat['max']:.0f} ms",
            flush=True,
        )
        # Past the p99 bound the ramp goes on while the pipeline keeps up: the report gives both ceilings.
        if not step.keeps_up:
            results.notes.append(f"stopped the ramp at {rate:,} ticks/s: behind")
            break
    if results.steps:
        plot = plot_latency(results.steps, REPO / "bench" / "latency.png")
        results.notes.append(f"latency plot: `{plot.relative_to(REPO)}`")


def _print_step(step: StepResult) -> None:
    lat = step.latency_ms
    cpu = sum(step.cpu_percent.values())
    print(
        f"pipeline {step.offered_rate:>7,.0f} ticks/s offered, features {step.features:<3}: "
        f"{step.delivered_rate:>9,.0f} delivered, backlog {step.lag_growth:+,.0f}/s, p50 {lat['p50']:.0f} "
        f"p99 {lat['p99']:.0f} max {lat['max']:.0f} ms, stages' CPU {cpu:.0f} %",
        flush=True,
    )


def run_features(
    results: Results,
    stack: LocalStack,
    home: Path,
    *,
    rates: list[int],
    symbols: int,
    seconds: float,
    sender: str,
    configurations: tuple[str, ...] = pipeline.FEATURES,
) -> None:
    """Each rate in each configuration (of bench.pipeline.FEATURES), alternated (on, candles, off at the first rate;
    off, candles, on at the next; ...), so a drift of the shared machine's speed during the run does not favour one."""
    ordered = sorted(configurations, key=pipeline.FEATURES.index)
    for index, rate in enumerate(rates):
        for features in ordered[::-1] if index % 2 == 0 else ordered:
            # Up to 4 minutes for the start-up backlog to drain: the candle job's start slows the catch-up.
            step = pipeline.run_step(
                stack, home, rate, symbols, seconds, sender=sender, features=features, warm_up_limit=240.0
            )
            results.pairs.append(step)
            _print_step(step)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bench.run", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="~15 minutes, ~10 of them the features pair (default)")
    size.add_argument(
        "--full",
        action="store_true",
        help="3M-tick job runs, rates up to 60,000 ticks/s, longer steps, features at two rates (~60 minutes)",
    )
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--only", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument(
        "--sender", choices=senders.SENDERS, default="loadgen", help="what feeds the end-to-end steps (default loadgen)"
    )
    parser.add_argument(
        "--features",
        help="part features: the configurations, comma-separated, of off,candles,on (quick: off,on; full: all three)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "BENCHMARKS.md", help="append the results here")
    args = parser.parse_args(argv)
    configure_logging(level="WARNING")
    parts = set(args.only.split(","))
    full = args.full
    rows = 200_000 if full else 50_000
    configurations = tuple((args.features or ("off,candles,on" if full else "off,on")).split(","))
    unknown = set(configurations) - set(pipeline.FEATURES)
    if unknown:
        parser.error(f"--features: unknown {', '.join(sorted(unknown))} (of {', '.join(pipeline.FEATURES)})")
    results = Results()
    with bench_stack() as (stack, home):
        if "baselines" in parts:
            run_baselines(results, rows, args.symbols)
        if "ingest" in parts:
            run_ingest(results, rows, 20.0 if full else 10.0, home)
        if "job" in parts:
            run_job(results, stack, 3_000_000 if full else 1_000_000, 300_000 if full else 100_000, args.symbols)
        if "senders" in parts:
            run_senders(results, [5_000, 20_000], args.symbols, 10.0, home)
        if "pipeline" in parts:
            # 3,000 ticks/s is where the latency target is set (p99 <= 150 ms), 2,000 the earlier one's rate; 15,000
            # parts 10,000 from 20,000, where the ceiling lay on the slow days of this shared machine, and 45,000 and
            # 55,000 part the steps where it lies on the fast ones.
            full_rates = [2_000, 3_000, 5_000, 10_000, 15_000, 20_000, 30_000, 40_000, 45_000, 50_000, 55_000, 60_000]
            rates = full_rates if full else [2_000, 10_000, 20_000]
            seconds = 40.0 if full else 12.0
            run_pipeline(results, stack, home, rates=rates, symbols=args.symbols, seconds=seconds, sender=args.sender)
        if "features" in parts:
            # 3,000 ticks/s is where the latency target of issue 19 is set. 60 s: one minute close per window.
            # Quick: the on/off pair (~6 minutes on a quiet machine); full: the three configurations at two rates.
            rates = [3_000, 10_000] if full else [3_000]
            run_features(
                results,
                stack,
                home,
                rates=rates,
                symbols=args.symbols,
                seconds=60.0,
                sender=args.sender,
                configurations=configurations,
            )
    command = ("make bench-full" if full else "make bench") + (f" (--only {args.only})" if parts != set(PARTS) else "")
    text = markdown(command, results.tables, results.steps, results.ceilings, results.notes, pairs=results.pairs)
    with args.out.open("a") as out:
        out.write("\n" + text)
    print(f"\nresults appended to {args.out}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as stop:  # Ctrl-C, `kill` or a closed terminal: the stack is already stopped
        print(f"\nbenchmark {stop or 'stopped'}; nothing written", file=sys.stderr)
        sys.exit(130)
