"""`tickpipe stack up|down|status`."""

from __future__ import annotations

import argparse

from tickpipe.config import Settings, state_dir
from tickpipe.stack.manager import COMPONENTS, LocalStack


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument(
        "--only",
        default=",".join(COMPONENTS),
        help=f"comma-separated subset of {','.join(COMPONENTS)} (default: all)",
    )
    parser.add_argument(
        "--fixed-ports",
        action="store_true",
        help="use the spec ports (Kafka 9092, PostgreSQL 5432, Flink 8081) instead of free ones",
    )
    parser.add_argument("--timeout", type=float, default=120.0, help="readiness deadline in seconds")


def run(args: argparse.Namespace, settings: Settings) -> int:
    stack = LocalStack(state_dir(), settings.jars_dir.resolve())
    if args.action == "up":
        only = tuple(name.strip() for name in args.only.split(",") if name.strip())
        exports = stack.up(only, fixed_ports=args.fixed_ports, timeout=args.timeout)
        print(f"stack up; state in {stack.home}; point the stages at it with:")
        for key, value in exports.items():
            print(f"  export {key}={'<in ' + str(stack.env_file) + '>' if 'PASSWORD' in key else value}")
        return 0
    if args.action == "down":
        killed = stack.down()
        print("stack down" + (f" (had to kill: {', '.join(killed)})" if killed else ""))
        return 0
    rows = stack.status()
    for row in rows:
        state = f"running (pid {row.pid})" if row.running else "stopped"
        print(f"{row.process:<18} {state:<22} log: {row.log}")
    return 0 if rows and all(row.running for row in rows) else 3
