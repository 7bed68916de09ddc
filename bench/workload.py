"""The benchmark's ticks: many symbols, interleaved, strictly increasing event time per symbol."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator

from tickpipe.schema import SOURCES, Tick

# The exchange the ticks are from: the job reads only the sources it knows (tickpipe.schema.SOURCES).
SOURCE = SOURCES[0]


def symbols(count: int) -> list[str]:
    return [f"SYM{i:04d}USDT" for i in range(count)]


def ticks(count: int, symbol_count: int, seed: int = 7, start_ms: int | None = None) -> Iterator[Tick]:
    """`count` ticks, round-robin over the symbols, 1 ms apart per round so (symbol, time) is unique."""
    rng = random.Random(seed)
    names = symbols(symbol_count)
    prices = [rng.uniform(1, 1000) for _ in names]
    base = start_ms if start_ms is not None else time.time_ns() // 1_000_000
    for i in range(count):
        index = i % symbol_count
        prices[index] *= 1 + rng.gauss(0, 0.0005)
        yield Tick(names[index], base + i // symbol_count, prices[index], rng.uniform(0, 10), SOURCE)
