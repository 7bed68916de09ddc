"""`tickpipe alert-level add|remove|list [--source S]`: the price levels Grafana's price alert watches."""

from __future__ import annotations

import argparse

import psycopg

from tickpipe.config import Settings
from tickpipe.errors import CommandError

SYMBOL_HELP = "e.g. BTCUSDT (binance), bitcoin/usd (coingecko), AAPL (yahoo)"


def _source(parser: argparse.ArgumentParser, default: str | None = "binance") -> None:
    # A level belongs to one series, (source, symbol): the same symbol quoted by two sources has levels of its own.
    parser.add_argument(
        "--source",
        default=default,
        help="the source quoting SYMBOL: binance, coingecko or yahoo"
        + (f" (default {default})" if default else " (default: every source)"),
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="alert when SYMBOL's price crosses LEVEL (up or down)")
    add.add_argument("symbol", help=SYMBOL_HELP)
    add.add_argument("level", help="price level, e.g. 100000")
    add.add_argument("--note", help="free text shown by `list`, e.g. why this level")
    _source(add)
    remove = actions.add_parser("remove", help="stop alerting on SYMBOL at LEVEL")
    remove.add_argument("symbol", help=SYMBOL_HELP)
    remove.add_argument("level", help="price level, e.g. 100000")
    _source(remove)
    listing = actions.add_parser("list", help="the configured levels (of one source or symbol if given)")
    listing.add_argument("symbol", nargs="?", help="only this symbol")
    _source(listing, default=None)


def run(args: argparse.Namespace, settings: Settings) -> int:
    from tickpipe.alerts import levels

    try:
        if args.action == "list":
            source = None if args.source is None else levels.parse_source(args.source)
            symbols = None
            if args.symbol is not None:
                # Without --source a symbol may be any source's (BTCUSDT is Binance's and Yahoo's).
                symbols = [levels.parse_symbol(args.symbol, source)] if source else levels.stored_forms(args.symbol)
            rows = levels.list_levels(settings, symbols, source)
            for row in rows:
                print(f"{row.source:<10} {row.symbol:<20} {row.level:>20}  {row.note or ''}".rstrip())
            if not rows:
                print("no alert levels (add one: tickpipe alert-level add BTCUSDT 100000)")
            return 0
        source = levels.parse_source(args.source)
        symbol, level = levels.parse_symbol(args.symbol, source), levels.parse_level(args.level)
        if args.action == "remove":
            removed = levels.remove(settings, symbol, level, source)
            print(f"removed {removed.source} {removed.symbol} {removed.level}")
            return 0
        added, new = levels.add(settings, symbol, level, args.note, source)
        shown = f"{added.source} {added.symbol} {added.level}"
        print(f"added {shown}" if new else f"already set: {shown}")
        if not levels.has_ticks(settings, symbol, source):
            print(
                f"note: price_ticks has no rows for {symbol} from {source} yet (is it in SYMBOLS of SOURCE={source}?)"
            )
        return 0
    except psycopg.errors.UndefinedTable:
        raise CommandError("table price_alert_levels does not exist: run `tickpipe migrate` first") from None
    except psycopg.errors.UndefinedColumn:
        raise CommandError("table price_alert_levels has no source yet: run `tickpipe migrate` first") from None
    except psycopg.Error as error:
        raise CommandError(f"database: {str(error).strip().splitlines()[0]}") from None
