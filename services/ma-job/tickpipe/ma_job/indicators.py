"""The per-symbol indicator state: the last 20 prices, and the newest event time seen.

Plain Python with no Flink import, so the maths is unit-tested directly and the Flink operator stays a thin
wrapper. MA(n) is the mean of the symbol's last n prices, NULL until n ticks have been seen (pandas'
`rolling(n).mean()`). Sums are `math.fsum` over the window itself, never a running sum with retraction, so a
price series that jumps across twelve orders of magnitude does not leave rounding residue in later averages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tickpipe.schema import format_timestamp

SHORT_WINDOW = 5
LONG_WINDOW = 20


@dataclass(frozen=True, slots=True)
class Averages:
    ma_short: float | None
    ma_long: float | None


def moving_average(prices: list[float], n: int) -> float | None:
    return math.fsum(prices[-n:]) / n if len(prices) >= n else None


@dataclass(slots=True)
class SymbolWindow:
    """What the job keeps per symbol (its keyed state)."""

    last_event_time_ms: int = 0
    prices: list[float] = field(default_factory=list)

    def accepts(self, event_time_ms: int) -> bool:
        """A tick extends the series only if it is newer than the last one: a re-sent or late tick would
        otherwise be counted twice, or out of order, in every window it falls into."""
        return event_time_ms > self.last_event_time_ms

    def add(self, event_time_ms: int, price: float) -> Averages:
        self.last_event_time_ms = event_time_ms
        self.prices.append(price)
        del self.prices[:-LONG_WINDOW]
        return Averages(moving_average(self.prices, SHORT_WINDOW), moving_average(self.prices, LONG_WINDOW))

    def to_state(self) -> tuple[int, list[float]]:
        return self.last_event_time_ms, self.prices

    @classmethod
    def from_state(cls, state: tuple[int, list[float]] | None) -> SymbolWindow:
        return cls(*state) if state else cls()


def stale_reason(event_time_ms: int, last_event_time_ms: int) -> str:
    """The dead-letter reason for a tick that is not newer than its symbol's latest (same text in both engines)."""
    kind = "duplicate" if event_time_ms == last_event_time_ms else "out-of-order"
    return (
        f"{kind} tick: event time {format_timestamp(event_time_ms)} is not after the symbol's latest "
        f"{format_timestamp(last_event_time_ms)}"
    )
