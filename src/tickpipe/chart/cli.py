"""`tickpipe chart --symbol BTCUSDT [--since 15m] [--out chart.png]`."""

from __future__ import annotations

import argparse
from pathlib import Path

import psycopg

from tickpipe.config import Settings
from tickpipe.errors import CommandError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--symbol", required=True, help="e.g. BTCUSDT")
    parser.add_argument("--since", default="15m", help="how far back from the newest row: 90s, 15m, 6h, 7d")
    parser.add_argument("--out", type=Path, default=Path("chart.png"), help="PNG file to write (default chart.png)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from tickpipe.chart.data import parse_duration, read_series
    from tickpipe.chart.plot import plot

    try:
        series = read_series(settings, args.symbol.upper(), parse_duration(args.since))
    except psycopg.Error as error:
        raise CommandError(f"cannot read price_ticks: {str(error).strip().splitlines()[0]}") from None
    out = plot(series, args.out)
    print(f"wrote {out} ({len(series.times)} points of {series.symbol})")
    return 0
