"""CoinGecko as a source (SOURCE=coingecko): `GET /simple/price` polled within the plan's budget → ticks.

The API (https://docs.coingecko.com/reference/simple-price): one request answers every id and quote currency asked,
`{"bitcoin": {"usd": 97000.5, "usd_24h_vol": 3.1e10, "last_updated_at": 1764590400}, ...}` with
`include_24hr_vol=true&include_last_updated_at=true`. An id CoinGecko does not know is absent from the 200 answer,
not an error: it is named in one error line (`coingecko_unknown_ids`), the others go on.

What a tick is here: symbol `<id>/<currency>` (tickpipe.schema's coingecko rule), price the answer's number as sent,
event time `last_updated_at` (unix seconds → ms; CoinGecko refreshes a price about once a minute on the free tiers, so
between two refreshes every poll returns the same quote: an unchanged `last_updated_at` is not a new tick), and volume
`<currency>_24h_vol`: CoinGecko's rolling 24 h trading volume in the QUOTE currency (Binance's tick volume is 24 h
volume in the base asset, Yahoo's the day's cumulative share volume: each column is what its source says it is).

The budget (https://docs.coingecko.com/docs/errors-and-rate-limits: the Demo plan allows 100 calls/min; the Demo
plan's monthly allowance is 10,000 call credits, https://www.coingecko.com/en/api/pricing; every request counts,
answered or refused): a poller running 24/7 is bound by the monthly number, not the per-minute one (10,000 calls over
a 31-day month is one call every ~268 s). poll_interval() takes the tighter of the two and keeps a share of it
free for retries, restarts and other users of the key; requests (retries included) are never closer than that.
A 429 or 5xx answer (or no answer) waits longer: exponential backoff with jitter, at least `Retry-After` when sent.
A 401/403 (no key, a wrong key, a Pro key on the Demo URL) is one error line naming the fix, repeated only after the
answer changed; the poller keeps trying at the backed-off pace (a key fixed in the Secret is picked up by a restart).
"""

from __future__ import annotations

import contextlib
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlencode

import orjson

from tickpipe.config import Settings
from tickpipe.ingestor import metrics
from tickpipe.ingestor.connection import Backoff
from tickpipe.logs import get_logger
from tickpipe.schema import InvalidTick, Tick, validate_tick

log = get_logger("tickpipe.ingestor")
SOURCE = "coingecko"
MONTH_SECONDS = 31 * 86_400  # the longest month: a budget that holds in it holds in every month
REQUEST_TIMEOUT = 10.0
MAX_BACKOFF = 900.0
KEY_HEADER = "x-cg-demo-api-key"  # the Demo plan's header (https://docs.coingecko.com/reference/authentication)


def poll_interval(calls_per_minute: int, monthly_calls: int, share: float = 1.0) -> float:
    """Seconds between two requests so that a poller running all month stays within `share` of both limits (a
    monthly_calls of 0 means no monthly cap)."""
    per_minute = 60.0 / calls_per_minute
    per_month = MONTH_SECONDS / monthly_calls if monthly_calls else 0.0
    return max(per_minute, per_month) / share


@dataclass(frozen=True)
class Pair:
    coin_id: str
    currency: str

    @property
    def symbol(self) -> str:
        return f"{self.coin_id}/{self.currency}"


def pairs_of(symbols: Iterable[str]) -> list[Pair]:
    """SYMBOLS (already checked against the coingecko rule, lower case) → (id, currency) pairs."""
    return [Pair(*symbol.lower().split("/", 1)) for symbol in symbols]


def price_url(base_url: str, pairs: list[Pair]) -> str:
    """One request for every id and currency (the budget counts requests, not ids)."""
    query = {
        "ids": ",".join(dict.fromkeys(p.coin_id for p in pairs)),
        "vs_currencies": ",".join(dict.fromkeys(p.currency for p in pairs)),
        "include_24hr_vol": "true",
        "include_last_updated_at": "true",
    }
    return f"{base_url}/simple/price?{urlencode(query, safe=',')}"


@dataclass
class Answer:
    """A 200 answer read against the pairs asked for."""

    quotes: list[tuple[Pair, int, Any, Any, str]] = field(default_factory=list)  # pair, updated_at, price, volume, raw
    rejected: list[tuple[str, str]] = field(default_factory=list)  # raw, reason
    unknown_ids: list[str] = field(default_factory=list)
    unquoted: list[str] = field(default_factory=list)  # known ids without a price in a currency asked for


def read_answer(body: bytes, pairs: list[Pair]) -> Answer:
    """The quotes of a `/simple/price` answer; what is not one is rejected with a reason (never raised)."""
    answer = Answer()
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        answer.rejected.append((body.decode("utf-8", errors="replace"), "not JSON"))
        return answer
    if not isinstance(data, dict):
        answer.rejected.append((body.decode("utf-8", errors="replace"), "not a JSON object"))
        return answer
    bad_entries: set[str] = set()
    for pair in pairs:
        if pair.coin_id not in data:
            if pair.coin_id not in answer.unknown_ids:
                answer.unknown_ids.append(pair.coin_id)
            continue
        entry = data[pair.coin_id]
        raw = orjson.dumps({pair.coin_id: entry}).decode()
        if not isinstance(entry, dict):
            if pair.coin_id not in bad_entries:
                bad_entries.add(pair.coin_id)
                answer.rejected.append((raw, f"quote of {pair.coin_id} is not a JSON object"))
            continue
        if pair.currency not in entry:
            answer.unquoted.append(pair.symbol)
            continue
        missing = [name for name in (f"{pair.currency}_24h_vol", "last_updated_at") if name not in entry]
        if missing:
            answer.rejected.append((raw, f"missing fields: {', '.join(missing)}"))
            continue
        updated = entry["last_updated_at"]
        if isinstance(updated, bool) or not isinstance(updated, int) or updated <= 0:
            answer.rejected.append((raw, f"invalid last_updated_at: {updated!r}"[:120]))
            continue
        answer.quotes.append((pair, updated, entry[pair.currency], entry[f"{pair.currency}_24h_vol"], raw))
    return answer


class Rejecter(Protocol):
    def reject(self, raw: str | bytes, reason: str) -> None: ...


class CoinGeckoPoller(threading.Thread):
    """Polls every `interval` seconds (start to start) until `stop` is set; ticks to `accept`, the rest to
    `sink.reject`."""

    def __init__(
        self,
        settings: Settings,
        symbols: Iterable[str],
        accept: Callable[[Tick], bool],
        sink: Rejecter,
        stop: threading.Event,
    ) -> None:
        super().__init__(name="coingecko-poller", daemon=True)
        self.pairs = pairs_of(symbols)
        self.url = price_url(settings.coingecko_url, self.pairs)
        key = settings.coingecko_api_key
        self.headers = {"Accept": "application/json", "User-Agent": "tickpipe-ingestor"}
        if key is not None:
            self.headers[KEY_HEADER] = key.get_secret_value()
        self.interval = poll_interval(
            settings.coingecko_calls_per_minute, settings.coingecko_monthly_calls, settings.coingecko_budget_share
        )
        self.settings = settings
        self.accept, self.sink, self.stop_event = accept, sink, stop
        self.backoff = Backoff(base=max(2.0, self.interval), cap=max(MAX_BACKOFF, self.interval))
        self.last_updated: dict[str, int] = {}  # symbol → last_updated_at of its last tick
        self.requests = 0
        self._reported: dict[str, object] = {}  # what was last logged as an error, per kind: said once
        self._connected = metrics.EXCHANGE_CONNECTED.labels(SOURCE, "0")
        self._connected.set(0)
        self._statuses: dict[str, Any] = {}
        metrics.POLL_INTERVAL.labels(SOURCE).set(self.interval)
        self._unchanged = metrics.UNCHANGED.labels(SOURCE)

    def run(self) -> None:
        settings = self.settings
        log.info(
            "coingecko_polling",
            interval_s=round(self.interval, 3),
            calls_per_minute=settings.coingecko_calls_per_minute,
            monthly_calls=settings.coingecko_monthly_calls or None,
            budget_share=settings.coingecko_budget_share,
            ids=len({p.coin_id for p in self.pairs}),
            symbols=len(self.pairs),
            url=settings.coingecko_url,
            api_key="set" if KEY_HEADER in self.headers else "none (keyless: shared per-IP limit)",
        )
        next_at = time.monotonic()
        while not self.stop_event.wait(max(0.0, next_at - time.monotonic())):
            started = time.monotonic()
            wait = self.poll()
            next_at = started + max(self.interval, wait)

    def poll(self) -> float:
        """One request; return how long to wait before the next one at least (0: the interval)."""
        self.requests += 1
        request = urllib.request.Request(self.url, headers=self.headers)  # noqa: S310 - COINGECKO_URL: http(s) checked
        retry_after: str | None = None
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as response:  # noqa: S310
                status, body = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, body, retry_after = error.code, error.read(), error.headers.get("Retry-After")
        except (OSError, ValueError) as error:  # refused, reset, timed out, DNS: no answer
            self._count("error")
            return self._back_off("coingecko_unreachable", f"{type(error).__name__}: {error}", None)
        self._count(str(status))
        if status == 200:
            self._connected.set(1)
            self.backoff.reset()
            if self._reported.pop("refused", None) is not None:
                log.info("coingecko_accepted", hint="the API answers again")
            self._publish(read_answer(body, self.pairs))
            return 0.0
        self._connected.set(0)
        detail = _error_message(body)
        if status in (401, 403):
            if self._reported.get("refused") != (status, detail):
                self._reported["refused"] = (status, detail)
                log.error(
                    "coingecko_refused",
                    status=status,
                    error=detail,
                    hint="set COINGECKO_API_KEY to a valid Demo API key (sent as x-cg-demo-api-key) for "
                    "COINGECKO_URL=https://api.coingecko.com/api/v3; polling goes on, slowly",
                )
            return self.backoff.next_delay()
        if status == 429 or status >= 500:
            return self._back_off(
                "coingecko_throttled" if status == 429 else "coingecko_unavailable", detail, retry_after, status
            )
        # Another 4xx: a request this poller makes wrong. Said once; retried at the backed-off pace.
        if self._reported.get("bad_request") != (status, detail):
            self._reported["bad_request"] = (status, detail)
            log.error("coingecko_request_refused", status=status, error=detail, url=self.url)
        return self.backoff.next_delay()

    def _back_off(self, event: str, detail: str, retry_after: str | None, status: int | None = None) -> float:
        delay = self.backoff.next_delay()
        if retry_after is not None:
            with contextlib.suppress(ValueError):  # an HTTP date (CoinGecko sends seconds): the backoff alone
                delay = max(delay, float(retry_after))
        self._connected.set(0)
        log.warning(
            event, status=status, error=detail, retry_after=retry_after, retry_in_s=round(max(delay, self.interval), 1)
        )
        return delay

    def _count(self, status: str) -> None:
        counter = self._statuses.get(status)
        if counter is None:
            counter = self._statuses[status] = metrics.POLL_REQUESTS.labels(SOURCE, status)
        counter.inc()

    def _publish(self, answer: Answer) -> None:
        for raw, reason in answer.rejected:
            self.sink.reject(raw, reason)
        for pair, updated, price, volume, raw in answer.quotes:
            if updated <= self.last_updated.get(pair.symbol, 0):
                self._unchanged.inc()  # the same quote as at the last poll (no refresh since): not a new tick
                continue
            # Remembered even if invalid: the same bad quote is dead-lettered once, not at every poll.
            self.last_updated[pair.symbol] = updated
            try:
                tick = validate_tick(pair.symbol, updated * 1000, price, volume, SOURCE)
            except InvalidTick as error:
                self.sink.reject(raw, str(error))
                continue
            self.accept(tick)
        self._say_once(
            "unknown_ids",
            answer.unknown_ids,
            "coingecko_unknown_ids",
            "not CoinGecko ids (absent from "
            "its answer): see GET /coins/list for ids (bitcoin, not BTC); the other symbols go on",
        )
        self._say_once(
            "unquoted",
            answer.unquoted,
            "coingecko_unquoted",
            "CoinGecko has no price of these ids in "
            "these currencies (see GET /simple/supported_vs_currencies); the other symbols go on",
        )

    def _say_once(self, kind: str, names: list[str], event: str, hint: str) -> None:
        if names and self._reported.get(kind) != names:
            log.error(event, symbols=",".join(names), hint=hint)
        if names:
            self._reported[kind] = names
        else:
            self._reported.pop(kind, None)


def _error_message(body: bytes) -> str:
    """CoinGecko's error text ({"status": {"error_code", "error_message"}} or {"error": ...}), one line, bounded."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body[:200].decode("utf-8", errors="replace").replace("\n", " ")
    if isinstance(data, dict):
        status = data.get("status")
        if isinstance(status, dict):
            return f"{status.get('error_code')}: {status.get('error_message')}"[:200]
        if "error" in data:
            return str(data["error"])[:200]
    return str(data)[:200]
