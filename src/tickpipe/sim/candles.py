"""1-minute candles of the simulated exchange, built from its own trades, in Binance's kline formats.

Binance's kline stream (`<symbol>@kline_1m`) pushes the open candle every ~2 s and the closed one (`k.x = true`)
when its minute ends; REST `GET /api/v3/klines` returns the same candles as arrays. A minute without trades still
has a candle on the exchange: flat at the previous close, zero volume, zero trades. Both formats here come from one
`Candle`, so a streamed closed candle equals the REST answer for its minute.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, replace
from typing import Any

MINUTE_MS = 60_000
HISTORY_MINUTES = 7 * 24 * 60  # how far back the REST endpoint answers (gap repair looks back less)


def _fmt(value: float) -> str:
    return f"{value:.8f}"


@dataclass(frozen=True)
class Candle:
    symbol: str
    open_time_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float = 0.0  # base asset traded in the minute
    quote_volume: float = 0.0
    trades: int = 0
    first_trade_id: int = -1
    last_trade_id: int = -1

    @property
    def close_time_ms(self) -> int:
        return self.open_time_ms + MINUTE_MS - 1

    def with_trade(self, price: float, quantity: float, trade_id: int) -> Candle:
        return replace(
            self,
            high=max(self.high, price),
            low=min(self.low, price),
            close=price,
            volume=self.volume + quantity,
            quote_volume=self.quote_volume + quantity * price,
            trades=self.trades + 1,
            first_trade_id=self.first_trade_id if self.trades else trade_id,
            last_trade_id=trade_id,
        )

    def kline(self, closed: bool) -> dict[str, Any]:
        """The `k` object of a kline stream event."""
        return {
            "t": self.open_time_ms,
            "T": self.close_time_ms,
            "s": self.symbol,
            "i": "1m",
            "f": self.first_trade_id,
            "L": self.last_trade_id,
            "o": _fmt(self.open),
            "c": _fmt(self.close),
            "h": _fmt(self.high),
            "l": _fmt(self.low),
            "v": _fmt(self.volume),
            "n": self.trades,
            "x": closed,
            "q": _fmt(self.quote_volume),
            "V": _fmt(self.volume / 2),  # taker buy volumes: half of the trades, as good as any simulated split
            "Q": _fmt(self.quote_volume / 2),
            "B": "0",
        }

    def rest_row(self) -> list[Any]:
        """One row of `GET /api/v3/klines`."""
        return [
            self.open_time_ms,
            _fmt(self.open),
            _fmt(self.high),
            _fmt(self.low),
            _fmt(self.close),
            _fmt(self.volume),
            self.close_time_ms,
            _fmt(self.quote_volume),
            self.trades,
            _fmt(self.volume / 2),
            _fmt(self.quote_volume / 2),
            "0",
        ]


def kline_event(candle: Candle, closed: bool, event_time_ms: int) -> dict[str, Any]:
    return {"e": "kline", "E": event_time_ms, "s": candle.symbol, "k": candle.kline(closed)}


class CandleBook:
    """One symbol's candles: the open one and the closed history, every minute present."""

    def __init__(self, symbol: str, history_minutes: int = HISTORY_MINUTES) -> None:
        self.symbol = symbol
        self.current: Candle | None = None
        self.closed: deque[Candle] = deque(maxlen=history_minutes)

    def trade(self, event_time_ms: int, price: float, quantity: float, trade_id: int) -> list[Candle]:
        """Add a trade; return the candles it closed (several if minutes passed without trades)."""
        minute = event_time_ms - event_time_ms % MINUTE_MS
        closed = self._close_until(minute)
        if self.current is None:
            self.current = Candle(self.symbol, minute, price, price, price, price)
        self.current = self.current.with_trade(price, quantity, trade_id)
        return closed

    def _due(self, minute: int) -> list[Candle]:
        """The candles over by `minute`: the open one and a flat one for each later minute without trades."""
        due: list[Candle] = []
        candle = self.current
        while candle is not None and candle.open_time_ms < minute:
            due.append(candle)
            nxt = candle.open_time_ms + MINUTE_MS
            flat = candle.close
            candle = Candle(self.symbol, nxt, flat, flat, flat, flat) if nxt < minute else None
        return due

    def _close_until(self, minute: int) -> list[Candle]:
        closed = self._due(minute)
        self.closed.extend(closed)
        if closed:
            self.current = None
        return closed

    def klines(self, start_ms: int | None, end_ms: int | None, limit: int, now_ms: int) -> list[Candle]:
        """What `GET /api/v3/klines` answers: candles whose open time is in [start, end], the open one included,
        the oldest `limit` of them from `start`, or the newest `limit` without one. Reading changes nothing: the
        candles a minute closed are still streamed (closed) with the next trade, as the exchange streams every one."""
        due = self._due(now_ms - now_ms % MINUTE_MS)
        candles = [*self.closed, *due, *([self.current] if self.current and not due else [])]
        selected = [
            c
            for c in candles
            if (start_ms is None or c.open_time_ms >= start_ms) and (end_ms is None or c.open_time_ms <= end_ms)
        ]
        return selected[:limit] if start_ms is not None else selected[-limit:]
