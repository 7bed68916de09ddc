"""The simulated exchange's REST API: the parts of Binance's `/api/v3` the pipeline calls, with its request weights.

    GET /api/v3/ping                                  {}
    GET /api/v3/time                                  {"serverTime": ms}
    GET /api/v3/exchangeInfo[?symbolStatus=]          symbols with status, base and quote asset (weight 20)
    GET /api/v3/klines?symbol=&interval=1m&startTime=&endTime=&limit=   candles as arrays (weight 2)

Binance counts request weight per IP per minute (6000) and says so in `X-MBX-USED-WEIGHT-1M` on every answer;
over the limit it answers 429 with `Retry-After` (seconds), and a client that keeps calling while limited is banned
with 418. Errors are `{"code": -11xx, "msg": ...}` with 400, as on the exchange.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tickpipe.sim.candles import MINUTE_MS, CandleBook

WEIGHTS = {"/api/v3/ping": 1, "/api/v3/time": 1, "/api/v3/exchangeInfo": 20, "/api/v3/klines": 2}
WEIGHT_LIMIT_PER_MINUTE = 6000
BAN_AFTER_429S = 3  # calls answered 429 before the ban (Binance does not publish its number)
BAN_SECONDS = 120


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> bytes:
        return json.dumps(self.body, separators=(",", ":")).encode()


def _error(status: int, code: int, msg: str) -> Answer:
    return Answer(status, {"code": code, "msg": msg})


@dataclass
class RestApi:
    books: Mapping[str, CandleBook]
    now_ms: Callable[[], int]
    statuses: Mapping[str, str]  # symbol → TRADING or BREAK (delisted)
    weight_limit: int = WEIGHT_LIMIT_PER_MINUTE
    clock_speed: float = 1.0  # the exchange's minutes pass this much faster: Retry-After is in real seconds
    calls: dict[str, int] = field(default_factory=dict)  # path → requests served (tests count them)
    _window: int = -1
    _used: int = 0
    _refused: int = 0
    _banned_until_ms: int = 0

    def handle(self, target: str) -> Answer:
        parts = urlsplit(target)
        weight = WEIGHTS.get(parts.path)
        if weight is None:
            return _error(404, -1000, f"unknown path {parts.path}")
        now = self.now_ms()
        if now < self._banned_until_ms:
            return self._limited(418, self._real_seconds(self._banned_until_ms - now))
        window = now // MINUTE_MS
        if window != self._window:
            self._window, self._used, self._refused = window, 0, 0
        if self._used + weight > self.weight_limit:
            self._refused += 1
            if self._refused > BAN_AFTER_429S:
                self._banned_until_ms = now + BAN_SECONDS * 1000
                return self._limited(418, self._real_seconds(BAN_SECONDS * 1000))
            return self._limited(429, self._real_seconds(MINUTE_MS - now % MINUTE_MS))
        self._used += weight
        self.calls[parts.path] = self.calls.get(parts.path, 0) + 1
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        answer = self._route(parts.path, query, now)
        answer.headers["X-MBX-USED-WEIGHT-1M"] = str(self._used)
        return answer

    def _real_seconds(self, exchange_ms: int) -> int:
        """Whole real seconds (rounded up) until `exchange_ms` of the exchange's clock have passed."""
        return max(1, int(-(-exchange_ms // (1000 * self.clock_speed))))

    def _limited(self, status: int, retry_after_s: int) -> Answer:
        msg = "Way too much request weight used; IP banned" if status == 418 else "Too much request weight used"
        answer = _error(status, -1003, msg)
        answer.headers.update({"Retry-After": str(retry_after_s), "X-MBX-USED-WEIGHT-1M": str(self._used)})
        return answer

    def _route(self, path: str, query: dict[str, str], now: int) -> Answer:
        if path == "/api/v3/ping":
            return Answer(200, {})
        if path == "/api/v3/time":
            return Answer(200, {"serverTime": now})
        if path == "/api/v3/exchangeInfo":
            return Answer(200, self._exchange_info(now, query.get("symbolStatus")))
        return self._klines(query, now)

    def _exchange_info(self, now: int, status: str | None = None) -> dict[str, Any]:
        symbols = []
        for symbol in self.books:
            if status is not None and self.statuses.get(symbol, "TRADING") != status:
                continue  # symbolStatus=: only the symbols with that status, as Binance filters
            quote = next((q for q in ("USDT", "USDC", "BTC", "ETH", "BNB") if symbol.endswith(q)), symbol[-4:])
            symbols.append(
                {
                    "symbol": symbol,
                    "status": self.statuses.get(symbol, "TRADING"),
                    "baseAsset": symbol[: -len(quote)],
                    "quoteAsset": quote,
                    "isSpotTradingAllowed": True,
                    "permissionSets": [["SPOT"]],
                }
            )
        limits = [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": self.weight_limit}
        ]
        return {"timezone": "UTC", "serverTime": now, "rateLimits": limits, "exchangeFilters": [], "symbols": symbols}

    def _klines(self, query: dict[str, str], now: int) -> Answer:
        symbol = query.get("symbol")
        if not symbol:
            return _error(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        book = self.books.get(symbol)
        if book is None:
            return _error(400, -1121, "Invalid symbol.")
        if query.get("interval") != "1m":
            return _error(400, -1120, "Invalid interval.")
        try:
            start = int(query["startTime"]) if "startTime" in query else None
            end = int(query["endTime"]) if "endTime" in query else None
            limit = int(query.get("limit", "500"))
        except ValueError:
            return _error(400, -1100, "Illegal characters found in a parameter.")
        if not 1 <= limit <= 1000:
            return _error(400, -1130, "Invalid data sent for a parameter: limit must be 1..1000.")
        return Answer(200, [candle.rest_row() for candle in book.klines(start, end, limit, now)])
