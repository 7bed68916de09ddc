"""`tickpipe top [--interval S] [--once]`."""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from tickpipe.config import Settings, state_dir

if TYPE_CHECKING:
    from rich.console import RenderableType


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--interval", type=float, default=1.0, help="refresh period in seconds (default 1)")
    parser.add_argument("--once", action="store_true", help="print one snapshot and exit")
    parser.add_argument("--limit", type=int, default=50, help="at most this many series, (source, symbol) (default 50)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console

    from tickpipe.top.snapshot import take_snapshot
    from tickpipe.top.view import render

    flink_rest_url = os.environ.get("FLINK_REST_URL")

    def snapshot() -> RenderableType:
        return render(take_snapshot(settings, state_dir(), flink_rest_url, args.limit))

    if args.once:
        Console().print(snapshot())
        return 0
    live_view(snapshot, args.interval)
    return 0


def live_view(
    snapshot: Callable[[], RenderableType], interval: float, still_running: Callable[[], None] = lambda: None
) -> None:
    """Redraw until Ctrl-C; `still_running` may raise to end the view (e.g. a stage died)."""
    from rich.console import Console
    from rich.live import Live

    with Live(snapshot(), console=Console(), refresh_per_second=4, screen=False) as live:
        while True:
            time.sleep(interval)  # a display's refresh period, not synchronisation
            still_running()
            live.update(snapshot())
