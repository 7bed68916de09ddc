"""RSI(14), Bollinger(20, 2), EMA(12), EMA(26) and MACD(12, 26, 9) of a symbol's 1m closes, equal to TA-Lib.

Streaming: one close in, that candle's indicators out, so the job keeps a small state per symbol instead of the
series. Each value equals what TA-Lib's own batch function (`talib.RSI`, `BBANDS`, `EMA`, `MACD`, default
compatibility, no unstable period, TA-Lib 0.8) gives for the same close on the complete series, within 1e-9
relative + 1e-12 absolute (TA-Lib's own bound for its fused multiply-adds): the arithmetic is TA-Lib's, step for step
in the same order on IEEE doubles, except the Bollinger deviation (below):

- EMA(n): seeded with the simple mean of the first n closes (summed in order), then `(close - prev) * k + prev` with
  k = 2 / (n + 1). NULL for the first n - 1 closes.
- MACD(12, 26, 9): TA-Lib seeds the EMAs of its MACD differently from its EMA function: both start at close 26, the
  slow one from the mean of closes 1..26, the fast one from the mean of closes 15..26 (the tail of the slow window);
  the signal is seeded with the mean of the first 9 MACD values. NULL for the first 33 closes; so its fast EMA is not
  EMA(12).
- RSI(14), Wilder: average gain and loss over the first 14 changes, then `(prev * 13 + change) / 14`; RSI = 100 *
  gain / (gain + loss), and 0 when gain + loss is within TA-Lib's fixed epsilon 1e-8 of zero — so a flat series has
  RSI 0, and so has a coin priced near 1e-8 whose moves are that small. NULL for the first 14 closes.
- Bollinger(20, 2): middle = SMA(20) from a running sum (add the new close, divide, retract the oldest), as TA-Lib;
  the population standard deviation of the 20 closes around their mean (TA-Lib 0.8's is cancellation-free and
  agrees with this one to ~1e-13); upper/lower = middle +/- 2 * stddev. NULL for the first 19 closes. The running
  sum keeps rounding residue after a jump across many orders of magnitude (1e6 → 1e-8): TA-Lib's middle band does
  too, and this one equals it.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

EPSILON = 1e-8  # TA-Lib's TA_IS_ZERO: an RSI denominator within it of zero gives RSI 0
RSI_PERIOD = 14
BB_PERIOD, BB_DEVIATIONS = 20, 2.0
EMA_FAST, EMA_SLOW, MACD_SIGNAL = 12, 26, 9


def _k(period: int) -> float:
    return 2.0 / float(period + 1)


def mean_in_order(values: list[float]) -> float:
    total = 0.0
    for value in values:  # left to right, as TA-Lib sums: never math.fsum or a compensated sum
        total += value
    return total / len(values)


@dataclass(frozen=True, slots=True)
class Indicators:
    rsi: float | None = None
    bb_middle: float | None = None
    bb_upper: float | None = None
    bb_lower: float | None = None
    ema_fast: float | None = None  # EMA(12)
    ema_slow: float | None = None  # EMA(26)
    macd: float | None = None
    macd_signal: float | None = None
    macd_hist: float | None = None


@dataclass(slots=True)
class Ema:
    """TA_EMA: seeded with the mean of the first `period` values."""

    period: int
    value: float | None = None
    seed: list[float] = field(default_factory=list)

    def step(self, close: float) -> float | None:
        if self.value is None:
            self.seed.append(close)
            if len(self.seed) < self.period:
                return None
            self.value, self.seed = mean_in_order(self.seed), []
            return self.value
        self.value = (close - self.value) * _k(self.period) + self.value
        return self.value


@dataclass(slots=True)
class Rsi:
    """TA_RSI, Wilder's smoothing."""

    period: int = RSI_PERIOD
    previous: float | None = None
    changes: int = 0
    gain: float = 0.0
    loss: float = 0.0

    def step(self, close: float) -> float | None:
        previous, self.previous = self.previous, close
        if previous is None:
            return None
        change = close - previous
        self.changes += 1
        if self.changes <= self.period:
            if change < 0.0:
                self.loss -= change
            else:
                self.gain += change
            if self.changes < self.period:
                return None
            self.loss /= float(self.period)
            self.gain /= float(self.period)
        else:
            self.loss *= float(self.period - 1)
            self.gain *= float(self.period - 1)
            if change < 0.0:
                self.loss -= change
            else:
                self.gain += change
            self.loss /= float(self.period)
            self.gain /= float(self.period)
        total = self.gain + self.loss
        return 100.0 * (self.gain / total) if not -EPSILON < total < EPSILON else 0.0


@dataclass(slots=True)
class Bollinger:
    """TA_BBANDS with an SMA middle band (TA_INT_SMA's running sum) and a population standard deviation taken around
    the window's own mean (TA-Lib 0.8 dropped the cancelling E[x^2] - mean^2 form for one that is free of it)."""

    period: int = BB_PERIOD
    deviations: float = BB_DEVIATIONS
    window: deque[float] = field(default_factory=deque)
    total: float = 0.0

    def step(self, close: float) -> tuple[float, float, float] | None:
        self.window.append(close)
        self.total += close
        if len(self.window) < self.period:
            return None
        middle = self.total / float(self.period)
        mean = math.fsum(self.window) / self.period
        stddev = math.sqrt(math.fsum((x - mean) * (x - mean) for x in self.window) / self.period)
        self.total -= self.window.popleft()
        width = stddev * self.deviations
        return middle, middle + width, middle - width


@dataclass(slots=True)
class Macd:
    """TA_MACD: its own EMA seeding (see the module docstring)."""

    fast: int = EMA_FAST
    slow: int = EMA_SLOW
    signal_period: int = MACD_SIGNAL
    closes: list[float] = field(default_factory=list)  # the first `slow` closes, until the EMAs are seeded
    fast_value: float = 0.0
    slow_value: float = 0.0
    signal_seed: list[float] = field(default_factory=list)
    signal: float | None = None
    seeded: bool = False

    def step(self, close: float) -> tuple[float, float, float] | None:
        if not self.seeded:
            self.closes.append(close)
            if len(self.closes) < self.slow:
                return None
            total = 0.0
            for value in self.closes[: self.slow - self.fast]:
                total += value
            fast_total = 0.0
            for value in self.closes[self.slow - self.fast :]:
                fast_total += value
                total += value
            self.slow_value, self.fast_value = total / float(self.slow), fast_total / float(self.fast)
            self.closes, self.seeded = [], True
        else:
            self.fast_value = (close - self.fast_value) * _k(self.fast) + self.fast_value
            self.slow_value = (close - self.slow_value) * _k(self.slow) + self.slow_value
        macd = self.fast_value - self.slow_value
        if self.signal is None:
            self.signal_seed.append(macd)
            if len(self.signal_seed) < self.signal_period:
                return None
            self.signal = 0.0
            for value in self.signal_seed:
                self.signal += value
            self.signal /= float(self.signal_period)
            self.signal_seed = []
        else:
            self.signal = (macd - self.signal) * _k(self.signal_period) + self.signal
        return macd, self.signal, macd - self.signal


@dataclass(slots=True)
class CandleIndicators:
    """Everything the job keeps per symbol for the candle indicators (its keyed state)."""

    rsi: Rsi = field(default_factory=Rsi)
    bollinger: Bollinger = field(default_factory=Bollinger)
    ema_fast: Ema = field(default_factory=lambda: Ema(EMA_FAST))
    ema_slow: Ema = field(default_factory=lambda: Ema(EMA_SLOW))
    macd: Macd = field(default_factory=Macd)

    def step(self, close: float) -> Indicators:
        middle, upper, lower = self.bollinger.step(close) or (None, None, None)
        macd, signal, hist = self.macd.step(close) or (None, None, None)
        return Indicators(
            rsi=self.rsi.step(close),
            bb_middle=middle,
            bb_upper=upper,
            bb_lower=lower,
            ema_fast=self.ema_fast.step(close),
            ema_slow=self.ema_slow.step(close),
            macd=macd,
            macd_signal=signal,
            macd_hist=hist,
        )
