"""The `tickpipe` command: one entry point for every stage and tool.

Each subcommand lives in a small `cli` module next to its code with `add_arguments(parser)` and
`run(args, settings) -> exit code`; heavy imports (PyFlink, rich, matplotlib) happen inside `run`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Protocol

from tickpipe.config import Settings, load_settings
from tickpipe.errors import ConfigError, TickpipeError
from tickpipe.logs import configure_logging


class Subcommand(Protocol):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...
    def run(self, args: argparse.Namespace, settings: Settings) -> int: ...


# name → (module, one-line help). The order is the order of `tickpipe --help`.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "stack": (
        "tickpipe.stack.cli",
        "local stack of real engines (Kafka KRaft, PostgreSQL, Flink): up|down|status",
    ),
    "migrate": (
        "tickpipe.migrator.cli",
        "stage migrator: apply the versioned SQL schema in storage/migrations",
    ),
    "ingest": ("tickpipe.ingestor.cli", "stage ingestor: Binance WebSocket → Kafka topic price-ticks"),
    "ma-job": (
        "tickpipe.ma_job.cli",
        "stage ma-job: PyFlink MA(5)/MA(20) per symbol, Kafka → price_ticks; --candles: the candle job "
        "(candles → candles_1m with indicators, signals)",
    ),
    "sim": ("tickpipe.sim.cli", "tool: Binance-compatible simulated exchange (WebSocket server)"),
    "run": ("tickpipe.run.cli", "tool: run the whole pipeline locally (what `make run` calls)"),
    "top": ("tickpipe.top.cli", "tool: live terminal view of prices, MAs and pipeline health"),
    "chart": ("tickpipe.chart.cli", "tool: candles + Bollinger + volume + RSI (or --ticks: price + MAs) chart, as PNG"),
    "alert-level": (
        "tickpipe.alerts.cli",
        "tool: price levels the Grafana price alert watches per symbol: add|remove|list",
    ),
    "k8s": (
        "tickpipe.k8s.cli",
        "tool: health of a cluster deployment (FlinkDeployment, Kafka, pods, Grafana)",
    ),
    "dlq": ("tickpipe.dlq.cli", "tool: dead letters (rejected input): stats|tail|replay"),
}


def _available() -> dict[str, Subcommand]:
    modules: dict[str, Subcommand] = {}
    for name, (module, _) in SUBCOMMANDS.items():
        try:
            modules[name] = importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name and not module.startswith(error.name):
                raise  # a real missing dependency inside an existing module must not be hidden
    return modules


def _needed(argv: Sequence[str]) -> dict[str, Subcommand]:
    """Only the subcommand that runs, when the command line names one: every stage of a run is a `tickpipe`
    process, and importing every other subcommand's modules costs each of them about 12 MB of memory."""
    if argv and argv[0] in SUBCOMMANDS:
        try:
            return {argv[0]: importlib.import_module(SUBCOMMANDS[argv[0]][0])}
        except ModuleNotFoundError:
            pass  # not installed: the full parser says which commands there are
    return _available()


def build_parser(modules: dict[str, Subcommand]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tickpipe",
        description="Real-time price pipeline: Binance → Kafka → Flink MA → TimescaleDB → Grafana.",
        epilog="Configuration comes from environment variables (see README: Configuration).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in modules.items():
        help_text = SUBCOMMANDS[name][1]
        subparser = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(subparser)
        subparser.set_defaults(module=module)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    modules = _needed(argv)
    args = build_parser(modules).parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as error:
        print(f"tickpipe: {error}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format, settings.log_level)
    try:
        return int(args.module.run(args, settings))
    except ConfigError as error:
        print(f"tickpipe: {error}", file=sys.stderr)
        return 2
    except TickpipeError as error:
        print(f"tickpipe {args.command}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
