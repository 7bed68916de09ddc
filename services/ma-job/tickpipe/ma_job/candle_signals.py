"""One (source, symbol)'s candles with their indicators and the signals derived from them: the candle job's state.

Signals are edge-triggered on consecutive computed candles (the previous one is the candle the indicator state
stepped over just before, so a hole given up by CandleSeries does not hide a cross):

- `rsi_crossed_above_70`: RSI(14) > 70 and the previous RSI <= 70; `rsi_crossed_below_30`: < 30 and previous >= 30.
- `close_above_upper_band`: close > Bollinger upper band and the previous close <= its upper band;
  `close_below_lower_band`: close < lower band and the previous close >= its lower band.
- `ma5_crossed_above_ma20`: MA(5) > MA(20) of the closes and the previous candle's MA(5) <= its MA(20);
  `ma5_crossed_below_ma20`: MA(5) < MA(20) and before >=. MA(n) is the mean of the candle's close and the n - 1
  closes computed before it, summed in order (the MA job's definition, on 1m closes instead of ticks: a tick MA
  crosses back and forth on every tick of noise, a candle's only once a minute, and it can be recomputed exactly when a
  late candle arrives). NULL, and no signal, until 20 closes of the series are computed (21 for a cross).

No signal while the previous candle has no value (warm-up). A late candle that recomputes the indicators (a filled
hole, a correction) recomputes the signals of every candle written again and reports the difference: `new` for a
signal that was not there, `revised` for one whose values changed, `retracted` for one that no longer holds. So the
`signals` table (upserted, rows of retracted signals deleted) always equals the signals of the complete in-order
series, and the topic tells a program every change. A replayed candle (restart, repeat) changes nothing.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field, fields
from enum import StrEnum

from tickpipe.ma_job.candle_indicators import mean_in_order
from tickpipe.ma_job.candle_series import Candle, CandleRow, CandleSeries
from tickpipe.schema import format_timestamp

RSI_HIGH, RSI_LOW = 70.0, 30.0


class SignalKind(StrEnum):
    RSI_CROSSED_ABOVE_70 = "rsi_crossed_above_70"
    RSI_CROSSED_BELOW_30 = "rsi_crossed_below_30"
    CLOSE_ABOVE_UPPER_BAND = "close_above_upper_band"
    CLOSE_BELOW_LOWER_BAND = "close_below_lower_band"
    MA5_CROSSED_ABOVE_MA20 = "ma5_crossed_above_ma20"
    MA5_CROSSED_BELOW_MA20 = "ma5_crossed_below_ma20"


class Change(StrEnum):
    NEW = "new"
    REVISED = "revised"
    RETRACTED = "retracted"


@dataclass(frozen=True, slots=True)
class Signal:
    kind: SignalKind
    open_time_ms: int
    close: float
    previous_close: float
    rsi: float | None
    previous_rsi: float | None
    bb_upper: float | None
    bb_middle: float | None
    bb_lower: float | None
    ma_5: float | None = None
    ma_20: float | None = None
    previous_ma_5: float | None = None
    previous_ma_20: float | None = None

    def __setstate__(self, state: list[object]) -> None:
        """Restore a pickled signal; one pickled before the MA fields existed (a savepoint of an earlier candle job)
        gets None for them."""
        for name, value in itertools.zip_longest(SIGNAL_FIELDS, state):
            object.__setattr__(self, name, value)


SIGNAL_FIELDS = tuple(f.name for f in fields(Signal))
MA_SHORT, MA_LONG = 5, 20


@dataclass(frozen=True, slots=True)
class MovingAverages:
    """MA(5) and MA(20) of a candle's close and the closes before it, and of the candle before (None: not warm)."""

    ma_5: float | None = None
    ma_20: float | None = None
    previous_ma_5: float | None = None
    previous_ma_20: float | None = None

    @classmethod
    def of(cls, closes: list[float]) -> MovingAverages:
        """`closes`: the series' computed closes in order, ending with the candle's own (only the last 21 are read)."""
        now, before = closes[-MA_LONG:], closes[-MA_LONG - 1 : -1]
        return cls(_mean(now, MA_SHORT), _mean(now, MA_LONG), _mean(before, MA_SHORT), _mean(before, MA_LONG))


def _mean(closes: list[float], n: int) -> float | None:
    # In order, as the MA job sums its LAGs: no running sum, so no residue after a jump across magnitudes.
    return mean_in_order(closes[-n:]) if len(closes) >= n else None


@dataclass(frozen=True, slots=True)
class SignalChange:
    change: Change
    signal: Signal

    def to_json(self, source: str, symbol: str) -> str:
        """The event on the signals topic (key = source:symbol): the signal, the values that triggered it, and
        whether it is new, revised by a recomputation, or retracted."""
        s = self.signal
        return json.dumps(
            {
                "source": source,
                "symbol": symbol,
                "kind": s.kind.value,
                "open_time": format_timestamp(s.open_time_ms),
                "change": self.change.value,
                "close": s.close,
                "previous_close": s.previous_close,
                "rsi_14": s.rsi,
                "previous_rsi_14": s.previous_rsi,
                "bb_upper": s.bb_upper,
                "bb_middle": s.bb_middle,
                "bb_lower": s.bb_lower,
                "ma_5": s.ma_5,
                "ma_20": s.ma_20,
                "previous_ma_5": s.previous_ma_5,
                "previous_ma_20": s.previous_ma_20,
            },
            separators=(",", ":"),
        )


def detect(
    previous: CandleRow | None, current: CandleRow, ma: MovingAverages = MovingAverages()
) -> dict[SignalKind, Signal]:
    """The signals of `current` given the candle computed just before it (both with indicators, else none) and the
    moving averages of both."""
    if previous is None or previous.indicators is None or current.indicators is None:
        return {}
    before, now = previous.indicators, current.indicators
    close, previous_close = current.candle.close, previous.candle.close
    kinds = []
    if now.rsi is not None and before.rsi is not None:
        if now.rsi > RSI_HIGH >= before.rsi:
            kinds.append(SignalKind.RSI_CROSSED_ABOVE_70)
        if now.rsi < RSI_LOW <= before.rsi:
            kinds.append(SignalKind.RSI_CROSSED_BELOW_30)
    if None not in (now.bb_upper, now.bb_lower, before.bb_upper, before.bb_lower):
        if close > now.bb_upper and previous_close <= before.bb_upper:  # type: ignore[operator]
            kinds.append(SignalKind.CLOSE_ABOVE_UPPER_BAND)
        if close < now.bb_lower and previous_close >= before.bb_lower:  # type: ignore[operator]
            kinds.append(SignalKind.CLOSE_BELOW_LOWER_BAND)
    if ma.ma_5 is not None and ma.ma_20 is not None and ma.previous_ma_5 is not None and ma.previous_ma_20 is not None:
        if ma.ma_5 > ma.ma_20 and ma.previous_ma_5 <= ma.previous_ma_20:
            kinds.append(SignalKind.MA5_CROSSED_ABOVE_MA20)
        if ma.ma_5 < ma.ma_20 and ma.previous_ma_5 >= ma.previous_ma_20:
            kinds.append(SignalKind.MA5_CROSSED_BELOW_MA20)
    return {
        kind: Signal(
            kind,
            current.candle.open_time_ms,
            close,
            previous_close,
            now.rsi,
            before.rsi,
            now.bb_upper,
            now.bb_middle,
            now.bb_lower,
            ma.ma_5,
            ma.ma_20,
            ma.previous_ma_5,
            ma.previous_ma_20,
        )
        for kind in kinds
    }


@dataclass
class SymbolCandles:
    """CandleSeries plus what is needed to keep the signals right across recomputations: the computed rows and the
    signals given for the look-back (both pruned with the series' candles)."""

    series: CandleSeries
    computed: dict[int, CandleRow] = field(default_factory=dict)  # open time → row with indicators
    fired: dict[int, dict[SignalKind, Signal]] = field(default_factory=dict)  # open time → its signals

    def add(self, candle: Candle) -> tuple[list[CandleRow], list[SignalChange]]:
        """Take one closed candle; return the rows to upsert into candles_1m and the signal changes."""
        rows = self.series.add(candle)
        changes: list[SignalChange] = []
        for row in rows:
            at = row.candle.open_time_ms
            if row.indicators is None:
                # Held (behind a hole): not computed, so no signals; a candle computed before and held again by a
                # correction loses them until it is computed again.
                self.computed.pop(at, None)
                now: dict[SignalKind, Signal] = {}
            else:
                before = sorted(t for t in self.computed if t < at)
                closes = [self.computed[t].candle.close for t in before[-MA_LONG:]] + [row.candle.close]
                now = detect(self.computed[before[-1]] if before else None, row, MovingAverages.of(closes))
                self.computed[at] = row
            old = self.fired.pop(at, {})
            changes += [SignalChange(Change.RETRACTED, signal) for kind, signal in old.items() if kind not in now]
            for kind, signal in now.items():
                if kind not in old:
                    changes.append(SignalChange(Change.NEW, signal))
                elif old[kind] != signal:
                    changes.append(SignalChange(Change.REVISED, signal))
            if now:
                self.fired[at] = now
        self._forget_old()
        return rows, changes

    def _forget_old(self) -> None:
        oldest = min(self.series.candles, default=None)
        if oldest is None:
            return
        self.computed = {t: row for t, row in self.computed.items() if t >= oldest}
        self.fired = {t: signals for t, signals in self.fired.items() if t >= oldest}
