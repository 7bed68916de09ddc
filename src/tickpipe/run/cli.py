"""`tickpipe run [--source sim|binance] [--symbols ...]`: what `make run` calls."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

from tickpipe.config import Settings, load_settings, state_dir
from tickpipe.errors import TickpipeError
from tickpipe.logs import get_logger
from tickpipe.run.pipeline import LocalPipeline, Progress, RunOptions

log = get_logger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source",
        choices=["sim", "binance"],
        default="sim",
        help="sim: the simulated exchange, offline (default); binance: live Binance (needs network)",
    )
    parser.add_argument("--symbols", help="comma-separated symbols (default: SYMBOLS)")
    parser.add_argument("--seed", type=int, default=42, help="simulator random seed (default 42)")
    parser.add_argument("--rate", type=float, default=1.0, help="simulator updates/s per symbol (default 1)")
    parser.add_argument("--max-ticks", type=int, help="simulator: stop publishing after N updates in total")
    parser.add_argument("--record", type=Path, help="simulator: append every update it sends to this JSON-lines file")
    parser.add_argument(
        "--external",
        action="store_true",
        help="don't start local engines: use the Kafka, PostgreSQL and Flink given by the environment",
    )
    parser.add_argument(
        "--headless", action="store_true", help="log a status line every few seconds instead of the live view"
    )


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace, settings: Settings) -> int:
    symbols = load_settings(symbols=args.symbols).symbols if args.symbols else ()
    options = RunOptions(
        source=args.source,
        symbols=symbols,
        seed=args.seed,
        rate=args.rate,
        external=args.external,
        record=args.record,
        max_ticks=args.max_ticks,
    )
    pipeline = LocalPipeline(settings, state_dir(), options)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # `kill` and container stops end the run like Ctrl-C
    headless = args.headless or not sys.stdout.isatty()

    def progress(message: str) -> None:
        if headless:
            log.info("run_progress", step=message)
        else:
            print(f"==> {message}", flush=True)

    try:
        settings = pipeline.start(progress)
        progress("pipeline running; Ctrl-C stops it (data is kept in " + str(pipeline.home) + ")")
        if headless:
            _status_lines(pipeline, settings)
        else:
            _live(pipeline, settings)
    except KeyboardInterrupt:
        pass
    except TickpipeError:
        _stop(pipeline, progress)
        raise
    _stop(pipeline, progress)
    return 0


def _stop(pipeline: LocalPipeline, progress: Progress) -> None:
    # A second Ctrl-C while stopping must not leave half the processes behind.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pipeline.stop(progress)


def _live(pipeline: LocalPipeline, settings: Settings) -> None:
    from tickpipe.top.cli import live_view
    from tickpipe.top.snapshot import take_snapshot
    from tickpipe.top.view import render

    flink = os.environ.get("FLINK_REST_URL")
    live_view(lambda: render(take_snapshot(settings, pipeline.home, flink)), 1.0, pipeline.check)


def _status_lines(pipeline: LocalPipeline, settings: Settings, every: float = 5.0) -> None:
    from tickpipe.top.snapshot import take_snapshot

    flink = os.environ.get("FLINK_REST_URL")
    while True:
        pipeline.check()
        snapshot = take_snapshot(settings, pipeline.home, flink)
        log.info(
            "pipeline_status",
            symbols=len(snapshot.symbols),
            newest_row_age_s=min((row.age_seconds for row in snapshot.symbols), default=None),
            down=[item.name for item in snapshot.health if not item.ok],
            dlq_records=snapshot.dlq_records,
        )
        time.sleep(every)  # the status line's period, not synchronisation
