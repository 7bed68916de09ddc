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
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.loadgen import RATE_PATH
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

    @property
    def rest_url(self) -> str:
        return "http" + self.url.removeprefix("ws")


def set_rate(rest_url: str, rate_per_symbol: float) -> None:
    """The load generator's rate from its next round on (GET /bench/rate; the simulator has no such control)."""
    query = urllib.parse.urlencode({"perSymbol": rate_per_symbol})
    with urllib.request.urlopen(f"{rest_url}{RATE_PATH}?{query}", timeout=10):  # noqa: S310 - our own loopback URL
        pass


@contextmanager
def sender(
    kind: str, symbols: list[str], rate_per_symbol: float, log_dir: Path, *, history_minutes: int = 0
) -> Iterator[Running]:
    """The sender `kind` (loadgen or sim) serving `symbols`' @ticker streams at `rate_per_symbol` updates/s each
    (the load generator: `history_minutes` closed candles before its start on REST)."""
    env = {
        **os.environ,
        "LOG_FORMAT": "json",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    log_path = log_dir / f"bench-{kind}.log"
    stage: StageProcess
    if kind == "loadgen":
        args = ["--rate", str(rate_per_symbol), "--port", "0", "--history-minutes", str(history_minutes)]
        stage = LoadGenProcess("loadgen", args, log_path, env=env)
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
    klines: int = -1  # kline frames the reader got in the window (-1: it subscribed none)

    @property
    def per_thousand(self) -> float:
        """% of a core per 1,000 ticks/s delivered."""
        return self.cpu_percent / (self.per_second / 1000) if self.per_second else float("nan")

    def measurement(self) -> Measurement:
        streams = "" if self.klines < 0 else f", + @kline_1m: {self.klines:,} kline frames"
        return Measurement(
            f"{NAMES[self.kind]} → discarding reader, {self.offered:,.0f} ticks/s offered "
            f"({self.symbol_count:,} symbols{streams})",
            self.delivered,
            self.per_second,
            f"sender CPU {self.cpu_percent:.1f} % = {self.per_thousand:.2f} % of a core per 1,000 ticks/s",
        )


def to_discarding_reader(
    kind: str, rate: float, symbol_count: int, seconds: float, log_dir: Path, *, klines: bool = False
) -> SenderCost:
    """`kind` sends `rate` ticks/s over `symbol_count` symbols to a reader that discards them (the ingestor's own
    connections, as many as the ingestor opens; `klines`: each symbol's @kline_1m too, as INGEST_KLINES=true): the
    ticks delivered and the sender's CPU over `seconds`."""
    from tickpipe.ingestor.connection import Connection
    from tickpipe.ingestor.service import stream_urls

    symbols = [f"sym{i:04d}usdt" for i in range(symbol_count)]
    kline_frames = [0]  # the reader threads count into it (a lost increment is a count off by one, no more)

    def discard(connection: Connection, text: str) -> None:
        if "@kline" in text[:40]:
            kline_frames[0] += 1

    with sender(kind, symbols, rate / symbol_count, log_dir) as running:
        connections = [
            Connection(url, discard, f"reader-{n}")
            for n, url in enumerate(stream_urls(running.url, tuple(symbols), 200, klines=klines))
        ]
        for connection in connections:
            connection.open(10)
        try:
            if not wait_until(lambda: all(c.messages for c in connections), 30):
                raise RuntimeError(f"the {NAMES[kind]} sent nothing within 30 s; see {log_dir}/bench-{kind}.log")
            time.sleep(2.0)  # the window starts in the steady state: connections and rounds under way
            cpu0, start = running.process.cpu_times(), time.perf_counter()
            count0, klines0 = sum(c.messages for c in connections) - kline_frames[0], kline_frames[0]
            time.sleep(seconds)  # the measurement window
            cpu1 = running.process.cpu_times()
            count1, klines1 = sum(c.messages for c in connections) - kline_frames[0], kline_frames[0]
            elapsed = time.perf_counter() - start
        finally:
            for connection in connections:
                connection.close()
    cpu = 100 * ((cpu1.user + cpu1.system) - (cpu0.user + cpu0.system)) / elapsed
    ticks = count1 - count0
    return SenderCost(kind, rate, symbol_count, ticks, ticks / elapsed, cpu, klines1 - klines0 if klines else -1)


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


def kline_cost(
    rates: list[float], symbol_count: int, seconds: float, log_dir: Path
) -> tuple[list[Measurement], list[str]]:
    """The load generator without and with the symbols' @kline_1m streams at each rate: its CPU per 1,000 ticks/s."""
    rows, notes = [], []
    for rate in rates:
        cost = {
            klines: to_discarding_reader("loadgen", rate, symbol_count, seconds, log_dir, klines=klines)
            for klines in (False, True)
        }
        rows += [cost[klines].measurement() for klines in (False, True)]
        notes.append(
            f"load generator at {rate:,.0f} ticks/s offered, {symbol_count:,} symbols: "
            f"{cost[False].per_thousand:.3f} % of a core per 1,000 ticks/s with tickers only, "
            f"{cost[True].per_thousand:.3f} % with @kline_1m too"
        )
    return rows, notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.senders", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="5000,20000", help="offered ticks/s, comma-separated")
    parser.add_argument("--symbols", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement window per sender and rate")
    parser.add_argument(
        "--klines",
        action="store_true",
        help="the load generator alone, without and with the @kline_1m streams, alternated (--seconds >= 60: a "
        "minute close in each window)",
    )
    args = parser.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",")]
    with tempfile.TemporaryDirectory(prefix="tickpipe-senders-") as log_dir:
        if args.klines:
            rows, notes = kline_cost(rates, args.symbols, args.seconds, Path(log_dir))
        else:
            rows, notes = compare(rates, args.symbols, args.seconds, Path(log_dir))
    for row in rows:
        print(f"{row.name:<75} {row.per_second:>9,.0f}/s  {row.note}")
    for note in notes:
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
