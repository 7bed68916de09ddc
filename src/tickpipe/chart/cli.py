"""`tickpipe chart --symbol BTCUSDT [--interval 1m|1h|1d] [--since 2h] [--source S] [--ticks] [--out chart.png]`."""

from __future__ import annotations

import argparse
from pathlib import Path

import psycopg

from tickpipe.config import Settings
from tickpipe.errors import CommandError
from tickpipe.schema import SOURCES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--symbol", required=True, help="e.g. BTCUSDT (binance), bitcoin/usd (coingecko), AAPL (yahoo)")
    parser.add_argument(
        "--interval", choices=("1m", "1h", "1d"), default="1m", help="candle length (default 1m; ignored with --ticks)"
    )
    parser.add_argument(
        "--since",
        default=None,
        help="how far back from the newest candle or tick: 90s, 15m, 6h, 7d "
        "(default: 2h of 1m, 5d of 1h, 120d of 1d candles; 15m of ticks)",
    )
    parser.add_argument(
        "--source",
        choices=SOURCES,
        default="binance",
        help="the source of the ticks or candles: a series is (source, symbol) (default binance)",
    )
    parser.add_argument(
        "--ticks", action="store_true", help="draw the ticks' price with MA(5) and MA(20) instead of candles"
    )
    parser.add_argument("--out", type=Path, default=Path("chart.png"), help="PNG file to write (default chart.png)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from tickpipe.chart.data import DEFAULT_SINCE, parse_duration, parse_symbol, read_candles, read_series
    from tickpipe.chart.plot import plot, plot_candles

    symbol = parse_symbol(args.symbol, args.source)
    relation = "price_ticks" if args.ticks else f"candles_{args.interval}"
    try:
        if args.ticks:
            series = read_series(settings, symbol, parse_duration(args.since or "15m"), args.source)
        else:
            since = parse_duration(args.since or DEFAULT_SINCE[args.interval])
            candles = read_candles(settings, symbol, args.source, args.interval, since)
    except psycopg.Error as error:
        raise CommandError(f"cannot read {relation}: {str(error).strip().splitlines()[0]}") from None
    if args.ticks:
        out = plot(series, args.out)
        print(f"wrote {out} ({len(series.times)} points of {series.symbol} from {series.source})")
    else:
        out = plot_candles(candles, args.out)
        print(f"wrote {out} ({len(candles.times)} {args.interval} candles of {symbol} from {args.source})")
    return 0
