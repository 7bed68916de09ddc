"""`python -m bench.run --quick|--full`: pipeline benchmark plus same-run baselines; writes BENCHMARKS.md."""

from __future__ import annotations

import argparse
import sys

from bench.baselines import Baseline, kafka_round_trip, postgres_copy, postgres_upserts
from bench.local_stack import bench_stack, fresh_settings
from tickpipe.logs import configure_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.run", description=__doc__)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a few minutes (default)")
    size.add_argument("--full", action="store_true", help="more rates, longer steps")
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--only", choices=["baselines", "pipeline", "all"], default="all")
    args = parser.parse_args(argv)
    configure_logging()
    rows = 200_000 if args.full else 100_000
    baselines: list[Baseline] = []
    with bench_stack():
        settings = fresh_settings()
        if args.only in {"baselines", "all"}:
            for measure in (kafka_round_trip, postgres_copy, postgres_upserts):
                result = measure(settings, rows, args.symbols)
                baselines.append(result)
                print(f"{result.name:<40} {result.rate:>12,.0f} rows/s  ({result.rows:,} in {result.seconds:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
