"""`tickpipe run [--source binance|coingecko|yahoo] [--live] [--symbols ...]`: what `make run` calls."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from tickpipe.config import Settings, load_settings, state_dir
from tickpipe.errors import TickpipeError
from tickpipe.logs import get_logger
from tickpipe.run.pipeline import LocalPipeline, Progress, RunOptions
from tickpipe.schema import SOURCES

log = get_logger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--source",
        choices=list(SOURCES),
        help="where prices come from: binance, coingecko or yahoo (default: SOURCE, else binance); offline on the "
        "source's simulator unless --live",
    )
    parser.add_argument("--live", action="store_true", help="the real service instead of its simulator (network)")
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
    parser.add_argument(
        "--no-candles",
        dest="candles",
        action="store_false",
        help="the MA job alone: no candle job (candles_1m, indicators, signals) and no klines streamed by the ingestor",
    )


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _hung_up(log_path: Path) -> Callable[[int, FrameType | None], None]:
    """SIGHUP (the terminal was closed) stops the run like SIGTERM. The terminal is gone, so from here on the
    run's output goes to `log_path`: a write to the closed terminal would fail and cut the clean stop short."""

    def handler(signum: int, frame: FrameType | None) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        for target in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                target.flush()
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        raise KeyboardInterrupt

    return handler


def run_options(args: argparse.Namespace, settings: Settings) -> RunOptions:
    source = args.source or settings.source
    symbols = load_settings(source=source, symbols=args.symbols).symbols if args.symbols else ()
    return RunOptions(
        source=source,
        live=args.live,
        symbols=symbols,
        seed=args.seed,
        rate=args.rate,
        external=args.external,
        record=args.record,
        max_ticks=args.max_ticks,
        candles=args.candles,
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    options = run_options(args, settings)
    pipeline = LocalPipeline(settings, state_dir(), options)
    signal.signal(signal.SIGTERM, _raise_interrupt)  # `kill` and container stops end the run like Ctrl-C
    signal.signal(signal.SIGHUP, _hung_up(pipeline.home / "logs" / "run.log"))
    headless = args.headless or not sys.stdout.isatty()

    def progress(message: str) -> None:
        if headless:
            log.info("run_progress", step=message)
        else:
            with contextlib.suppress(OSError):  # a closed terminal must not stop the stop
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
    except BaseException:
        _stop(pipeline, progress)  # a bug: still stop what was started, then show the traceback
        raise
    _stop(pipeline, progress)
    return 0


def _stop(pipeline: LocalPipeline, progress: Progress) -> None:
    # A second Ctrl-C (or the SIGHUP that follows a SIGTERM) while stopping must not leave half the processes behind.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    try:
        pipeline.stop(progress)
    finally:
        pipeline.release()


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
        status_due = time.monotonic() + every
        while time.monotonic() < status_due:
            pipeline.check()  # supervision: a dead stage is seen (and restarted) within a second
            time.sleep(1.0)  # the supervision period, not synchronisation
        snapshot = take_snapshot(settings, pipeline.home, flink)
        log.info(
            "pipeline_status",
            symbols=len(snapshot.symbols),
            newest_row_age_s=min((row.age_seconds for row in snapshot.symbols), default=None),
            down=[item.name for item in snapshot.health if not item.ok],
            dlq_records=snapshot.dlq_records,
            restarts=snapshot.restarts,
        )
