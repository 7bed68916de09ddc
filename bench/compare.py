"""`python -m bench.compare`: configurations of the whole pipeline against each other at one offered rate.

Each configuration is a set of environment variables (the stages' settings: `SINK_FLUSH_MAX_ROWS=500`,
`FLINK_BUFFER_TIMEOUT_MS=5`, ...; `default` is none), run one after the other on one stack, `--rounds` times in
alternation, so that what the machine does meanwhile falls on all of them alike. Each step is an end-to-end step of
the ramp (bench.pipeline.run_step: fresh topics and database, warm-up, then the window) and prints delivered rows/s,
latency and where it goes (ingestor, Kafka, job + sink), and each stage's CPU.

    .venv/bin/python -m bench.compare --rate 3000 default SINK_FLUSH_MAX_ROWS=500
"""

from __future__ import annotations

import argparse
import os
import sys

from bench.local_stack import bench_stack
from bench.pipeline import run_step


def parse_configuration(text: str) -> dict[str, str]:
    """`default` (no variables) or `NAME=value[,NAME=value...]`."""
    if text == "default":
        return {}
    pairs = [item.partition("=") for item in text.split(",")]
    if any(not name or not sep for name, sep, _ in pairs):
        raise argparse.ArgumentTypeError(f"a configuration is `default` or NAME=value[,NAME=value...], not {text!r}")
    return {name: value for name, _, value in pairs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("configurations", nargs="+", help="`default` or NAME=value[,NAME=value...]")
    parser.add_argument("--rate", type=float, default=3000.0, help="offered ticks/s (default 3000)")
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=30.0, help="each step's window (default 30)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    try:
        configurations = {text: parse_configuration(text) for text in args.configurations}
    except argparse.ArgumentTypeError as error:
        parser.error(str(error))
    names = {name for variables in configurations.values() for name in variables}
    with bench_stack() as (stack, home):
        for round_ in range(args.rounds):
            for text, variables in configurations.items():
                for name in names:
                    os.environ.pop(name, None)
                os.environ.update(variables)
                step = run_step(stack, home, args.rate, args.symbols, args.seconds)
                split = "  ".join(
                    f"{stage} {v['p50']:.0f}/{v['p99']:.0f}" for stage, v in step.stage_latency_ms.items()
                )
                cpu = ", ".join(f"{stage} {percent:.0f}" for stage, percent in step.cpu_percent.items())
                print(
                    f"round {round_} {text}: {step.delivered_rate:,.0f} rows/s (backlog {step.lag_growth:+,.0f}/s), "
                    f"p50 {step.latency_ms['p50']:.0f} p99 {step.latency_ms['p99']:.0f} ms | p50/p99 ms: {split} | "
                    f"CPU %: {cpu}",
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt as stop:  # the stack is already stopped (bench_stack)
        print(f"\ncomparison {stop or 'stopped'}", file=sys.stderr)
        sys.exit(130)
