"""`tickpipe migrate [--status | --dry-run]`."""

from __future__ import annotations

import argparse

from tickpipe.config import Settings
from tickpipe.db import wait_for_database
from tickpipe.migrator.migrate import migrate, plan


def add_arguments(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--status", action="store_true", help="list migrations and whether each is applied")
    mode.add_argument("--dry-run", action="store_true", help="show what would be applied, change nothing")
    parser.add_argument(
        "--wait",
        type=float,
        default=30.0,
        help="seconds to wait for the database to accept connections (default 30)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    address = f"at {settings.database.host}:{settings.database.port}/{settings.database.dbname}"
    wait_for_database(settings.conninfo("owner"), timeout=args.wait, where=address)
    if args.status or args.dry_run:
        timescaledb, statuses = plan(settings)
        print(f"path: {'timescaledb' if timescaledb else 'postgres (timescaledb extension not available)'}")
        pending = [s for s in statuses if not s.applied]
        for status in statuses if args.status else pending:
            state = "applied" if status.applied else "pending"
            print(f"  {status.migration.path.name:<45} {state}")
        if args.dry_run and not pending:
            print("  nothing to apply: schema is current")
        return 0
    applied = migrate(settings)
    print(f"applied {len(applied)} migration(s)" if applied else "schema is current")
    return 0
