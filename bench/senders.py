"""The benchmark's senders: the simulator (`tickpipe sim`) or the load generator (bench/loadgen.py) as a process of its
own, and what each costs per 1,000 ticks/s feeding a reader that discards (the same run, the same reader).

In a real deployment Binance does the sending: what the sender costs is a benchmark artefact, reported apart from
the pipeline's stages. `python -m bench.senders [--rates 5000,20000] [--symbols 500]` prints the comparison.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.local_stack import REPO
from bench.report import Measurement
from tickpipe.run.stages import StageProcess
from tickpipe.stack.process import wait_until

SENDERS = ("loadgen", "sim")
NAMES = {"loadgen": "load generator", "sim": "simulator"}


@dataclass
class LoadGenProcess(StageProcess):
    """`python -m bench.loadgen ...` (bench/ is not part of the installed package: run from the repository)."""

    @property
    def argv(self) -> list[str]:
        return [sys.executable, "-m", "bench.loadgen", *self.args]


@dataclass(frozen=True)
class Running:
    kind: str
    url: str  # ws://host:port: the exchange's endpoint (REST on the same port)
    process: psutil.Process


@contextmanager
def sender(kind: str, symbols: list[str], rate_per_symbol: float, log_dir: Path) -> Iterator[Running]:
    """The sender `kind` (loadgen or sim) serving `symbols`' @ticker streams at `rate_per_symbol` updates/s each."""
    env = {
        **os.environ,
        "LOG_FORMAT": "json",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    log_path = log_dir / f"bench-{kind}.log"
    stage: StageProcess
    if kind == "loadgen":
        stage = LoadGenProcess("loadgen", ["--rate", str(rate_per_symbol), "--port", "0"], log_path, env=env)
    elif kind == "sim":
        args = ["sim", "--exchange", "binance", "--port", "0", "--symbols", ",".join(symbols)]
        stage = StageProcess("sim", [*args, "--rate", str(rate_per_symbol), "--seed", "1"], log_path, env=env)
    else:
        raise ValueError(f"unknown sender {kind!r}: one of {', '.join(SENDERS)}")
    stage.start()
    try:
        url = stage.wait_for_line("READY ", timeout=60).split()[1]
        yield Running(kind, url, psutil.Process(stage.pid))
    finally:
        stage.stop(30)


@dataclass(frozen=True)
class SenderCost:
    kind: str
    offered: float  # ticks/s
    symbol_count: int
    delivered: int  # ticks the reader got in the window
    per_second: float
    cpu_percent: float  # the sender process's, 100 = one core

    @property
    def per_thousand(self) -> float:
        """% of a core per 1,000 ticks/s delivered."""
        return self.cpu_percent / (self.per_second / 1000) if self.per_second else float("nan")

    def measurement(self) -> Measurement:
        return Measurement(
            f"{NAMES[self.kind]} → discarding reader, {self.offered:,.0f} ticks/s offered "
            f"({self.symbol_count:,} symbols)",
            self.delivered,
            self.per_second,
            f"sender CPU {self.cpu_percent:.1f} % = {self.per_thousand:.2f} % of a core per 1,000 ticks/s",
        )


def to_discarding_reader(kind: str, rate: float, symbol_count: int, seconds: float, log_dir: Path) -> SenderCost:
    """`kind` sends `rate` ticks/s over `symbol_count` symbols to a reader that discards them (the ingestor's own
    connections, as many as the ingestor opens): the ticks delivered and the sender's CPU over `seconds`."""
    from tickpipe.ingestor.connection import Connection
    from tickpipe.ingestor.service import stream_urls

    symbols = [f"sym{i:04d}usdt" for i in range(symbol_count)]
    with sender(kind, symbols, rate / symbol_count, log_dir) as running:
        connections = [
            Connection(url, lambda connection, text: None, f"reader-{n}")
            for n, url in enumerate(stream_urls(running.url, tuple(symbols), 200))
        ]
        for connection in connections:
            connection.open(10)
        try:
            if not wait_until(lambda: all(c.messages for c in connections), 30):
                raise RuntimeError(f"the {NAMES[kind]} sent nothing within 30 s; see {log_dir}/bench-{kind}.log")
            time.sleep(2.0)  # the window starts in the steady state: connections and rounds under way
            cpu0, count0, start = running.process.cpu_times(), sum(c.messages for c in connections), time.perf_counter()
            time.sleep(seconds)  # the measurement window
            cpu1, count1 = running.process.cpu_times(), sum(c.messages for c in connections)
            elapsed = time.perf_counter() - start
        finally:
            for connection in connections:
                connection.close()
    cpu = 100 * ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / elapsed
    return SenderCost(kind, rate, symbol_count, count1 - count0, (count1 - count0) / elapsed, cpu)


def compare(
    rates: list[float], symbol_count: int, seconds: float, log_dir: Path
) -> tuple[list[Measurement], list[str]]:
    """Both senders at each rate, one after the other; the notes give the simulator's CPU per 1,000 ticks/s as a
    multiple of the load generator's."""
    rows, notes = [], []
    for rate in rates:
        cost = {kind: to_discarding_reader(kind, rate, symbol_count, seconds, log_dir) for kind in SENDERS}
        rows += [cost[kind].measurement() for kind in SENDERS]
        sim, loadgen = cost["sim"].per_thousand, cost["loadgen"].per_thousand
        notes.append(
            f"senders at {rate:,.0f} ticks/s offered: the simulator costs {sim / loadgen:.0f}x the load generator's "
            f"CPU per 1,000 ticks/s ({sim:.2f} % vs {loadgen:.3f} % of a core)"
        )
    return rows, notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.senders", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="5000,20000", help="offered ticks/s, comma-separated")
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement window per sender and rate")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tickpipe-senders-") as log_dir:
        rows, notes = compare([float(r) for r in args.rates.split(",")], args.symbols, args.seconds, Path(log_dir))
    for row in rows:
        print(f"{row.name:<75} {row.per_second:>9,.0f}/s  {row.note}")
    for note in notes:
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
