"""A simulated CoinGecko API: `GET /api/v3/simple/price` with the Demo plan's key, rate limit and refresh cadence.

What it follows (https://docs.coingecko.com/reference/simple-price and /docs/errors-and-rate-limits):
- `ids` are CoinGecko ids (`bitcoin`), `vs_currencies` quote currencies (`usd`); an id it does not know is simply
  absent from a 200 answer, never an error. `include_24hr_vol=true` adds `<vs>_24h_vol` (24 h volume in the quote
  currency), `include_last_updated_at=true` adds `last_updated_at` (unix seconds).
- Prices are refreshed about once a minute on the free tiers: between two refreshes every call returns the same
  price and the same `last_updated_at`.
- The Demo key comes in the `x-cg-demo-api-key` header (or `x_cg_demo_api_key` in the query); a missing one is 401
  with error_code 10002, a wrong one 401 with 10011. Over the per-minute limit: 429 with `Retry-After`.
Test controls (the simulator's own, under /sim/): `/sim/throttle?seconds=N` answers 429 to everything for N seconds.
"""

from __future__ import annotations

import json
import math
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

# Ids the simulator quotes, with plausible starting USD prices; any other id is unknown (absent from answers).
START_PRICES = {"bitcoin": 97000.0, "ethereum": 3600.0, "solana": 240.0, "ripple": 1.4, "binancecoin": 650.0}
RATE_LIMITED = (
    "You've exceeded the Rate Limit. Please visit https://www.coingecko.com/en/api/pricing to subscribe to our API "
    "plans for higher rate limits."
)


@dataclass
class CoinGeckoOptions:
    ids: tuple[str, ...] = tuple(START_PRICES)
    seed: int = 42
    refresh_seconds: float = 60.0  # how often prices (and last_updated_at) change
    calls_per_minute: int = 100  # the Demo plan
    demo_key: str | None = None  # None: keyless use, no key checked
    host: str = "127.0.0.1"
    port: int = 0


@dataclass
class _Coin:
    price: float
    volume: float
    updated_at: int


@dataclass
class CoinGeckoSim:
    options: CoinGeckoOptions
    requests: int = 0  # every request, answered or refused: the plan's budget counts them all
    refused: int = 0
    coins: dict[str, _Coin] = field(default_factory=dict)
    _calls: deque[float] = field(default_factory=deque)
    _throttled_until: float = 0.0
    _refreshed_at: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.options.seed)  # noqa: S311 - a reproducible price path
        now = int(time.time())
        for coin_id in self.options.ids:
            price = START_PRICES.get(coin_id) or round(10 ** self._rng.uniform(-2, 3), 6)
            self.coins[coin_id] = _Coin(price, price * 1e6, now)
        self._refreshed_at = time.monotonic()
        sim = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body, headers = sim.answer(self.path, dict(self.headers))
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer((self.options.host, self.options.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="coingecko-sim", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.options.host}:{self._server.server_address[1]}/api/v3"

    def __enter__(self) -> CoinGeckoSim:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, target: str, headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        parts = urlsplit(target)
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        if parts.path == "/sim/throttle":
            self._throttled_until = time.monotonic() + float(query.get("seconds", "60"))
            return 200, {}, {}
        with self._lock:
            self.requests += 1
            refusal = self._refusal(headers, query)
            if refusal:
                self.refused += 1
                return refusal
            self._refresh()
            if parts.path == "/api/v3/ping":
                return 200, {"gecko_says": "(V3) To the Moon!"}, {}
            if parts.path == "/api/v3/simple/price":
                return self._simple_price(query)
            return 404, {"error": "Not Found"}, {}

    def _refusal(self, headers: dict[str, str], query: dict[str, str]) -> tuple[int, Any, dict[str, str]] | None:
        now = time.monotonic()
        key = next((v for k, v in headers.items() if k.lower() == "x-cg-demo-api-key"), query.get("x_cg_demo_api_key"))
        if self.options.demo_key is not None and key is None:
            return 401, {"status": {"error_code": 10002, "error_message": "API Key Missing"}}, {}
        if self.options.demo_key is not None and key != self.options.demo_key:
            message = (
                "If you are using Demo API key, please change your root URL from pro-api.coingecko.com to "
                "api.coingecko.com"
            )
            return 401, {"status": {"error_code": 10011, "error_message": message}}, {}
        while self._calls and now - self._calls[0] >= 60.0:
            self._calls.popleft()
        waits = []  # Retry-After: until the throttle ends and, over the limit, until the oldest call leaves the minute
        if now < self._throttled_until:
            waits.append(self._throttled_until - now)
        if self._calls and len(self._calls) >= self.options.calls_per_minute:
            waits.append(60.0 - (now - self._calls[0]))
        if waits:
            wait = max(waits)
            body = {"status": {"error_code": 429, "error_message": RATE_LIMITED}}
            return 429, body, {"Retry-After": str(max(1, math.ceil(wait)))}
        self._calls.append(now)
        return None

    def _refresh(self) -> None:
        """A new price per coin once per refresh period (the free tiers' cadence), stamped with that moment."""
        now = time.monotonic()
        if now - self._refreshed_at < self.options.refresh_seconds:
            return
        self._refreshed_at = now
        stamp = int(time.time())
        for coin in self.coins.values():
            coin.price *= math.exp(self._rng.gauss(0.0, 0.001))
            coin.volume *= math.exp(self._rng.gauss(0.0, 0.01))
            coin.updated_at = max(stamp, coin.updated_at + 1)

    def _simple_price(self, query: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        ids = [i.strip() for i in query.get("ids", "").split(",") if i.strip()]
        currencies = [c.strip().lower() for c in query.get("vs_currencies", "").split(",") if c.strip()]
        if not ids or not currencies:
            missing = "ids" if not ids else "vs_currencies"
            return 400, {"error": f"Missing parameter {missing}"}, {}
        volume = query.get("include_24hr_vol") == "true"
        updated = query.get("include_last_updated_at") == "true"
        answer: dict[str, dict[str, Any]] = {}
        for coin_id in ids:
            coin = self.coins.get(coin_id)
            if coin is None:
                continue  # unknown ids are absent, not an error
            entry: dict[str, Any] = {}
            for currency in currencies:
                if currency != "usd":
                    continue  # the simulator quotes USD only; other currencies are absent, as unknown ones are
                entry["usd"] = round(coin.price, 2 if coin.price >= 1 else 8)
                if volume:
                    entry["usd_24h_vol"] = coin.volume
            if updated:
                entry["last_updated_at"] = coin.updated_at
            answer[coin_id] = entry
        return 200, answer, {}
