"""`tickpipe stack up|down|status`.

While a `tickpipe run` holds the state dir, `up` and `down` refuse: that run starts, supervises (restarts) and
stops its own engines, so a second owner would have its engines stopped under it, or restarted against its will.
`status` always answers.
"""

from __future__ import annotations

import argparse
import shlex

from tickpipe.config import Settings, state_dir
from tickpipe.errors import CommandError
from tickpipe.stack.lock import holder
from tickpipe.stack.manager import COMPONENTS, LocalStack
from tickpipe.stack.memory import measure, megabytes, run_processes
from tickpipe.stack.sizing import EngineSizes, describe


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
    parser.add_argument(
        "--tls",
        action="store_true",
        help="Kafka with TLS + SASL/SCRAM and PostgreSQL with TLS, on a test CA (also TICKPIPE_STACK_TLS=1)",
    )


def run(args: argparse.Namespace, settings: Settings) -> int:
    # STACK_MEMORY=auto is `large` here: an engine started by `stack up` does not know the load it will carry.
    sizes = EngineSizes.named(settings.stack_memory)
    stack = LocalStack(state_dir(), settings.jars_dir.resolve(), tls=True if args.tls else None, sizes=sizes)
    running = holder(stack.home)
    if running and args.action != "status":
        raise CommandError(
            f"tickpipe run ({running.describe()}) is running on {stack.home}; it supervises and stops the engines "
            "it started: stop that run first, or use another TICKPIPE_HOME"
        )
    if args.action == "up":
        only = tuple(name.strip() for name in args.only.split(",") if name.strip())
        exports = stack.up(only, fixed_ports=args.fixed_ports, timeout=args.timeout)
        print(f"stack up; state in {stack.home}; point the stages at it with:")
        for key, value in exports.items():
            print(f"  export {key}={'<in ' + str(stack.env_file) + '>' if 'PASSWORD' in key else shlex.quote(value)}")
        return 0
    if args.action == "down":
        killed = stack.down()
        print("stack down" + (f" (had to kill: {', '.join(killed)})" if killed else ""))
        return 0
    rows = stack.status()
    if running:
        print(f"owned by tickpipe run ({running.describe()})")
    report = measure(run_processes(stack.home, stack.running()))
    memory = {item.name: item for item in report.items}
    for row in rows:
        state = f"running (pid {row.pid})" if row.running else "stopped"
        size = megabytes(memory[row.process].pss) if row.running and row.process in memory else ""
        print(f"{row.process:<18} {state:<22} {size:>9}  log: {row.log}")
    engines = {row.process for row in rows}
    for item in report.items:
        if item.name not in engines:  # the stages of a run
            print(f"{item.name:<18} {'running (pid ' + str(item.pid) + ')':<22} {megabytes(item.pss):>9}")
    if report.items:
        print(f"memory (PSS) of {report.processes} processes: {megabytes(report.total)}")
    running_engines = {row.component for row in rows if row.running}
    for label in sorted({label for name in running_engines if (label := stack.memory(name))}):
        print(f"memory limits (STACK_MEMORY) {describe(EngineSizes.named(label))}")
    return 0 if rows and all(row.running for row in rows) else 3
