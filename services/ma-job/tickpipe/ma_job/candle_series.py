"""One (source, symbol)'s closed 1m candles as the job sees them: in order, late, repaired or repeated, with the
indicators of every candle equal to what they would be had every candle arrived in order.

- In order: the candle's indicators come from one step of the symbol's indicator state.
- After a hole (a minute missing, e.g. lost in a disconnect until gap repair fetches it): the candle is written at
  once with NULL indicators and held; when the missing minutes arrive, the held candles are computed in order and
  written again. Indicators are never computed over a hole. A hole nobody fills within `max_hold_ms` of event time
  (a minute the source really has no candle for) is given up: the series continues across it, and says so.
- A candle for a minute already computed, with other values (a correction): the state rolls back to the newest
  snapshot before that minute and every candle from there on is recomputed and written again.
- The same candle again (a repair equal to what was streamed, a replay after a restart): nothing is written.

Snapshots of the indicator state are kept every `SNAPSHOT_EVERY` candles for `keep_ms` of event time, so a late
candle within that look-back is recomputed exactly; one older than that is stored with its values and NULL
indicators, and the series is not rewritten.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from tickpipe.ma_job.candle_indicators import CandleIndicators, Indicators

MINUTE_MS = 60_000
SNAPSHOT_EVERY = 60


@dataclass(frozen=True, slots=True)
class Candle:
    open_time_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float | None = None
    quote_volume: float | None = None
    trades: int | None = None


@dataclass(frozen=True, slots=True)
class CandleRow:
    """What the job writes for a candle: the candle and its indicators (None: not computed yet)."""

    candle: Candle
    indicators: Indicators | None


@dataclass
class CandleSeries:
    keep_ms: int = 2 * 24 * 60 * MINUTE_MS  # how far back a late candle is still recomputed exactly
    max_hold_ms: int = 2 * 24 * 60 * MINUTE_MS  # how long a hole may wait for its minutes
    candles: dict[int, Candle] = field(default_factory=dict)  # open time → candle, the look-back and held ones
    computed_through: int | None = None  # open time of the newest candle whose indicators are computed
    state: CandleIndicators = field(default_factory=CandleIndicators)  # after `computed_through`
    snapshots: list[tuple[int, CandleIndicators]] = field(default_factory=list)  # (open time, state after it)
    steps: int = 0
    holes_given_up: int = 0
    forgotten: bool = False  # candles older than the look-back were dropped: the first one is gone

    def add(self, candle: Candle) -> list[CandleRow]:
        """Take one closed candle; return the rows to upsert (possibly none, possibly many)."""
        known = self.candles.get(candle.open_time_ms)
        if known == candle:
            return []
        if self.computed_through is not None and candle.open_time_ms <= self.computed_through:
            return self._correct(candle)
        self.candles[candle.open_time_ms] = candle
        rows = self._drain()
        if candle.open_time_ms > (self.computed_through or candle.open_time_ms):
            rows.append(CandleRow(candle, None))  # held behind a hole: stored now, computed when it is filled
        return rows

    def _drain(self) -> list[CandleRow]:
        """Compute every held candle that directly follows the computed ones (or gives up a stale hole)."""
        rows = []
        while True:
            if self.computed_through is None:
                following = min(self.candles, default=None)
            else:
                following = self.computed_through + MINUTE_MS
                if following not in self.candles:
                    held = [t for t in self.candles if t > self.computed_through]
                    if not held or max(held) - following < self.max_hold_ms:
                        break
                    following = min(held)  # nobody filled this hole in time: continue across it
                    self.holes_given_up += 1
            if following is None:
                break
            rows.append(self._step(self.candles[following]))
        self._forget_old()
        return rows

    def _step(self, candle: Candle) -> CandleRow:
        indicators = self.state.step(candle.close)
        self.computed_through = candle.open_time_ms
        self.steps += 1
        if self.steps % SNAPSHOT_EVERY == 0:
            self.snapshots.append((candle.open_time_ms, copy.deepcopy(self.state)))
        return CandleRow(candle, indicators)

    def _correct(self, candle: Candle) -> list[CandleRow]:
        base = [(t, s) for t, s in self.snapshots if t < candle.open_time_ms]
        if not base and self.forgotten:
            return [CandleRow(candle, None)]  # older than the look-back: stored, the series is not rewritten
        self.candles[candle.open_time_ms] = candle
        through = self.computed_through
        if base:
            self.computed_through, state = base[-1]
            self.state = copy.deepcopy(state)
            self.snapshots = [(t, s) for t, s in self.snapshots if t <= base[-1][0]]
        else:  # no snapshot before it yet, and nothing forgotten: recompute from the first candle
            self.computed_through, self.state, self.snapshots = None, CandleIndicators(), []
        rows = [row for row in self._drain() if row.candle.open_time_ms >= candle.open_time_ms]
        # Computed before, now behind a hole (the correction came before the series' first candle, one minute apart
        # or more): held again.
        rows += [
            CandleRow(c, None)
            for t, c in sorted(self.candles.items())
            if through is not None and (self.computed_through or 0) < t <= through
        ]
        return rows

    def _forget_old(self) -> None:
        if self.computed_through is None:
            return
        horizon = self.computed_through - self.keep_ms
        keep = [(t, s) for t, s in self.snapshots if t >= horizon]
        if len(keep) < len(self.snapshots) and self.snapshots:
            keep.insert(0, next(x for x in reversed(self.snapshots) if x[0] < horizon))  # the base for the horizon
        self.snapshots = keep
        first_needed = min(self.snapshots[0][0] if self.snapshots else horizon, horizon)
        kept = {t: c for t, c in self.candles.items() if t >= first_needed}
        self.forgotten = self.forgotten or len(kept) < len(self.candles)
        self.candles = kept
