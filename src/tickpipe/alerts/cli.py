"""`tickpipe alert-level add|remove|list`: the price levels Grafana's price alert watches."""

from __future__ import annotations

import argparse

import psycopg

from tickpipe.config import Settings
from tickpipe.errors import CommandError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="alert when SYMBOL's price crosses LEVEL (up or down)")
    add.add_argument("symbol", help="e.g. BTCUSDT")
    add.add_argument("level", help="price level, e.g. 100000")
    add.add_argument("--note", help="free text shown by `list`, e.g. why this level")
    remove = actions.add_parser("remove", help="stop alerting on SYMBOL at LEVEL")
    remove.add_argument("symbol", help="e.g. BTCUSDT")
    remove.add_argument("level", help="price level, e.g. 100000")
    listing = actions.add_parser("list", help="the configured levels (of one symbol if given)")
    listing.add_argument("symbol", nargs="?", help="only this symbol")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from tickpipe.alerts import levels

    try:
        if args.action == "list":
            rows = levels.list_levels(settings, None if args.symbol is None else levels.parse_symbol(args.symbol))
            for row in rows:
                print(f"{row.symbol:<20} {row.level:>20}  {row.note or ''}".rstrip())
            if not rows:
                print("no alert levels (add one: tickpipe alert-level add BTCUSDT 100000)")
            return 0
        symbol, level = levels.parse_symbol(args.symbol), levels.parse_level(args.level)
        if args.action == "remove":
            removed = levels.remove(settings, symbol, level)
            print(f"removed {removed.symbol} {removed.level}")
            return 0
        added, new = levels.add(settings, symbol, level, args.note)
        print(f"added {added.symbol} {added.level}" if new else f"already set: {added.symbol} {added.level}")
        if not levels.has_ticks(settings, symbol):
            print(f"note: price_ticks has no rows for {symbol} yet (is it in SYMBOLS?)")
        return 0
    except psycopg.errors.UndefinedTable:
        raise CommandError("table price_alert_levels does not exist: run `tickpipe migrate` first") from None
    except psycopg.Error as error:
        raise CommandError(f"database: {str(error).strip().splitlines()[0]}") from None
