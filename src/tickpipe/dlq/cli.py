"""`tickpipe dlq stats|tail|replay`: what the pipeline rejected, why, and putting back what a fixed bug rejected."""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import threading
from types import FrameType

from tickpipe.config import Settings
from tickpipe.dlq.records import DeadLetter
from tickpipe.errors import CommandError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    since_help = "only records rejected since then: a duration (90s, 15m, 6h, 7d) or a time (2026-12-01T09:00Z)"
    stats = actions.add_parser("stats", help="dead letters counted by stage and reason")
    stats.add_argument("--since", help=since_help)
    stats.add_argument("--json", action="store_true", help="as JSON: [{stage, reason, count}]")
    tail = actions.add_parser("tail", help="the last dead letters, one readable line each")
    tail.add_argument("-n", "--lines", type=int, default=10, metavar="N", help="how many (default 10)")
    tail.add_argument("-f", "--follow", action="store_true", help="then keep printing new ones until Ctrl-C")
    tail.add_argument("--since", help=since_help)
    replay = actions.add_parser(
        "replay",
        help="re-parse dead letters with today's parser and put the ticks into price_ticks with their MAs",
        description="Re-parse the matching dead letters with today's parser (after a parser bug was fixed), insert "
        "the ticks into price_ticks and recompute the MAs whose windows contain them, as if they had arrived on "
        "time. Idempotent. Ticks within the running job's window (fewer than 20 newer rows) are deferred.",
    )
    replay.add_argument("--reason", required=True, help="a reason kind (`tickpipe dlq stats`) or part of the reason")
    replay.add_argument("--since", help=since_help)
    replay.add_argument("--dry-run", action="store_true", help="say what would be replayed, change nothing")
    replay.add_argument(
        "--allow-recent",
        action="store_true",
        help="also write ticks within the job's window (only when the symbol no longer trades; see README)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    from tickpipe.dlq import reader
    from tickpipe.dlq.records import parse_since

    since_ms = parse_since(args.since) if args.since else None
    if args.action == "stats":
        return _stats(settings, since_ms, as_json=args.json)
    if args.action == "tail":
        return _tail(settings, since_ms, args.lines, follow=args.follow)
    return _replay(settings, list(reader.read(settings, since_ms=since_ms)), args)


def _stats(settings: Settings, since_ms: int | None, *, as_json: bool) -> int:
    from tickpipe.dlq import reader
    from tickpipe.dlq.records import count_by_kind, format_stats

    counts = count_by_kind(reader.read(settings, since_ms=since_ms))
    if as_json:
        rows = [{"stage": stage, "reason": kind, "count": n} for (stage, kind), n in sorted(counts.items())]
        print(json.dumps(rows))
        return 0
    print(f"dead letters in {settings.kafka_dlq_topic}:")
    for line in format_stats(counts):
        print(f"  {line}")
    return 0


def _tail(settings: Settings, since_ms: int | None, lines: int, *, follow: bool) -> int:
    from tickpipe.dlq import reader
    from tickpipe.dlq.records import format_line

    width = shutil.get_terminal_size((160, 24)).columns
    records = sorted(
        reader.read(settings, since_ms=since_ms, last=max(lines, 0)),
        key=lambda record: (record.rejected_at_ms or 0, record.partition, record.offset),
    )
    for record in records[-lines:] if lines > 0 else []:
        print(format_line(record, width))
    if not follow:
        if not records:
            print(f"no dead letters in {settings.kafka_dlq_topic}")
        return 0
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, request_stop)

    def show(record: DeadLetter) -> None:
        print(format_line(record, width), flush=True)

    def started() -> None:
        print(f"following {settings.kafka_dlq_topic} (Ctrl-C to stop)", file=sys.stderr, flush=True)

    reader.follow(settings, show, stop.is_set, started)
    return 0


def _replay(settings: Settings, records: list[DeadLetter], args: argparse.Namespace) -> int:
    import psycopg

    from tickpipe.dlq import replay

    plan = replay.plan(records, args.reason)
    if not plan.matched:
        raise CommandError(f"no dead letter matches --reason {args.reason!r} (see `tickpipe dlq stats`)")
    try:
        outcome = replay.apply(settings, plan.ticks, allow_recent=args.allow_recent, dry_run=args.dry_run)
    except psycopg.errors.UndefinedTable:
        raise CommandError("table price_ticks does not exist: run `tickpipe migrate` first") from None
    except psycopg.Error as error:
        raise CommandError(f"database: {str(error).strip().splitlines()[0]}") from None
    print(f"{plan.matched} dead letters match {args.reason!r}; {len(plan.ticks)} are ticks to today's parser")
    for kind, count in sorted(plan.still_rejected.items()):
        print(f"  still rejected: {count} ({kind})")
    for why, count in sorted(plan.not_replayable.items()):
        print(f"  not replayed: {count} ({why})")
    for tick, newer in outcome.deferred:
        print(f"  {replay.describe_deferred(tick, newer)}")
    if outcome.deferred:
        print(f"  run the replay again once {replay.WINDOW} newer ticks are in the table (it is idempotent)")
    symbols = ", ".join(sorted(outcome.symbols)) or "none"
    if args.dry_run:
        print(f"dry run: would write {outcome.planned} ticks (symbols: {symbols}); nothing changed")
    else:
        print(
            f"replayed: {outcome.inserted} rows inserted, {outcome.already_present} already in the table, "
            f"{outcome.updated_rows} rows with recomputed MAs (symbols: {symbols})"
        )
    return 0
