"""Binance's REST API as the ingestor uses it: `GET /api/v3/time` and `GET /api/v3/klines` (gap repair),
`GET /api/v3/exchangeInfo` (symbol discovery, SYMBOLS=all-usdt), within a request weight.

Binance counts request weight per IP per minute (6000; klines weighs 2, time 1) and reports the IP's use in
`X-MBX-USED-WEIGHT-1M`. Over the limit it answers 429 with `Retry-After` (seconds); a client that keeps calling is
banned with 418 (from 2 minutes up to 3 days for repeat offenders). So this client never relies on the 429: it keeps
its own budget (INGEST_REPAIR_MAX_WEIGHT_PER_MINUTE, well under the limit) and slows down when the IP's reported use
nears the limit (other clients share the IP); a 429 is waited out for its `Retry-After`, and a 418 ends the repair
(RestBanned) rather than prolong the ban.
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections import deque
from typing import Any
from urllib.parse import urlencode

import orjson

from tickpipe.ingestor import metrics
from tickpipe.logs import get_logger

log = get_logger("tickpipe.ingestor")
EXCHANGE_WEIGHT_PER_MINUTE = 6000
# The IP's reported use above which we wait for the next minute: leaves room for the other clients of the IP.
EXCHANGE_WEIGHT_HEADROOM = 1000
KLINES_WEIGHT, TIME_WEIGHT, EXCHANGE_INFO_WEIGHT = 2, 1, 20
KLINES_LIMIT = 1000


class RestError(Exception):
    """A request that failed (network, 5xx, an unexpected answer): the repair retries later."""


class RestBanned(RestError):
    """418: the exchange banned this IP for a while. Calling again would prolong the ban."""

    def __init__(self, message: str, retry_after: float = 0.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after  # seconds, from the answer's Retry-After (0: not said)


class WeightBudget:
    """At most `limit` request weight in any 60 s (a sliding window, shared by every caller)."""

    def __init__(self, limit: int, window: float = 60.0) -> None:
        self.limit, self.window = limit, window
        self._spent: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()

    def wait_time(self, weight: int) -> float:
        """0 and the weight is taken, or the seconds to wait before asking again."""
        with self._lock:
            now = time.monotonic()
            while self._spent and now - self._spent[0][0] >= self.window:
                self._spent.popleft()
            used = sum(w for _, w in self._spent)
            if used + weight <= self.limit or not self._spent:
                self._spent.append((now, weight))
                return 0.0
            return self.window - (now - self._spent[0][0])


class RestClient:
    def __init__(self, base_url: str, max_weight_per_minute: int, stop: threading.Event, timeout: float = 10.0) -> None:
        self.base_url, self.stop, self.timeout = base_url.rstrip("/"), stop, timeout
        self.budget = WeightBudget(max_weight_per_minute)
        self.requests = 0

    def server_time(self) -> int:
        """The exchange's clock (ms): which minutes are closed is the exchange's call, not ours."""
        answer = self._get("/api/v3/time", {}, TIME_WEIGHT)
        if not isinstance(answer, dict) or not isinstance(answer.get("serverTime"), int):
            raise RestError(f"unexpected /api/v3/time answer: {str(answer)[:100]}")
        return int(answer["serverTime"])

    def klines(self, symbol: str, start_ms: int, end_ms: int) -> list[Any]:
        """Up to 1000 1m candles of `symbol` whose open time is in [start_ms, end_ms], oldest first (raw rows)."""
        query = {"symbol": symbol, "interval": "1m", "startTime": start_ms, "endTime": end_ms, "limit": KLINES_LIMIT}
        answer = self._get("/api/v3/klines", query, KLINES_WEIGHT)
        if not isinstance(answer, list):
            raise RestError(f"unexpected /api/v3/klines answer: {str(answer)[:100]}")
        return answer

    def exchange_info(self) -> list[dict[str, Any]]:
        """The spot symbols' descriptions (`symbols` of exchangeInfo). Asks the exchange to leave out what discovery
        does not use (other permissions, halted symbols, permission sets); the caller filters again all the same."""
        query = {"permissions": "SPOT", "symbolStatus": "TRADING", "showPermissionSets": "false"}
        answer = self._get("/api/v3/exchangeInfo", query, EXCHANGE_INFO_WEIGHT)
        symbols = answer.get("symbols") if isinstance(answer, dict) else None
        if not isinstance(symbols, list):
            raise RestError(f"unexpected /api/v3/exchangeInfo answer: {str(answer)[:100]}")
        return [entry for entry in symbols if isinstance(entry, dict)]

    def _get(self, path: str, query: dict[str, Any], weight: int) -> Any:
        url = f"{self.base_url}{path}" + (f"?{urlencode(query)}" if query else "")
        while True:
            self._wait_for_budget(weight)
            self.requests += 1
            try:
                with urllib.request.urlopen(url, timeout=self.timeout) as response:  # noqa: S310 (http/https only: config)
                    body = response.read()
                    used = response.headers.get("X-MBX-USED-WEIGHT-1M")
                metrics.REPAIR_REQUESTS.labels("200").inc()
            except urllib.error.HTTPError as error:
                metrics.REPAIR_REQUESTS.labels(str(error.code)).inc()
                retry_after = _seconds(error.headers.get("Retry-After"))
                if error.code == 418:
                    raise RestBanned(f"banned by the exchange (HTTP 418) for {retry_after} s", retry_after) from None
                if error.code == 429:
                    log.warning("repair_rate_limited", path=path, retry_after_s=retry_after)
                    self._wait("429", retry_after or 60.0)
                    continue
                detail = error.read()[:200].decode(errors="replace")
                raise RestError(f"HTTP {error.code} from {path}: {detail}") from None
            except (urllib.error.URLError, OSError) as error:
                metrics.REPAIR_REQUESTS.labels("error").inc()
                raise RestError(f"{path}: {getattr(error, 'reason', error)}") from None
            try:
                answer = orjson.loads(body)
            except orjson.JSONDecodeError:
                raise RestError(f"{path} answered something that is not JSON: {body[:100]!r}") from None
            if used is not None and _seconds(used) > EXCHANGE_WEIGHT_PER_MINUTE - EXCHANGE_WEIGHT_HEADROOM:
                # Others on this IP spend the weight: let the exchange's minute end before the next request.
                self._wait("used_weight", 60.0 - time.time() % 60.0)
            return answer

    def _wait_for_budget(self, weight: int) -> None:
        while (wait := self.budget.wait_time(weight)) > 0:
            self._wait("budget", wait)

    def _wait(self, reason: str, seconds: float) -> None:
        metrics.REPAIR_WAITS.labels(reason).inc()
        metrics.REPAIR_WAIT_SECONDS.inc(seconds)
        if self.stop.wait(seconds):
            raise RestError("stopping")


def _seconds(value: str | None) -> float:
    try:
        return max(0.0, float(value)) if value is not None else 0.0
    except ValueError:
        return 0.0
