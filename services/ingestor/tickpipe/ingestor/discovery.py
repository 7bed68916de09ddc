"""SYMBOLS=all-usdt: which symbols to stream, asked of the exchange, and how they are spread over connections.

Discovery reads `GET /api/v3/exchangeInfo` (weight 20) at start and every INGEST_DISCOVERY_INTERVAL_SECONDS: the
spot symbols whose status is TRADING and whose quote asset is USDT. Each run's answer becomes a plan (`plan`, pure):
the symbols gone are unsubscribed from the connection that carries them, the symbols new go to connections with
room first (live SUBSCRIBE, tickpipe.ingestor.feed), then to new connections; a connection left with no symbol is
closed. No other symbol's connection is touched, so no other stream is interrupted.

A failed run (REST down, a 429 waited out and still failing, a 418 ban) keeps the current set and retries with
backoff (a ban: after its Retry-After). At start, before any answer, nothing is streamed: each failure is one
`discovery_failed` error line naming the fix, and the ingestor keeps retrying rather than exiting, because what
fails is the exchange or the network, which a restart does not fix (and `tickpipe run` would stop the whole run
after a few restarts). An answer with no USDT symbol at all is treated as a failure too: an exchange does not
delist every pair at once, an endpoint that is not the exchange's does that.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tickpipe.ingestor import metrics
from tickpipe.ingestor.connection import Backoff
from tickpipe.ingestor.rest import RestBanned, RestClient, RestError
from tickpipe.logs import get_logger
from tickpipe.schema import is_symbol

log = get_logger("tickpipe.ingestor")
QUOTE = "USDT"
LOGGED_NAMES = 50  # a change line names at most this many symbols (the count is always there)


def usdt_symbols(described: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    """exchangeInfo's `symbols` → the TRADING spot symbols quoted in USDT, lower-case (as streams name them), sorted."""
    found = {
        str(entry["symbol"]).lower()
        for entry in described
        if entry.get("status") == "TRADING"
        and entry.get("quoteAsset") == QUOTE
        and entry.get("isSpotTradingAllowed", True) is True
        and is_symbol(entry.get("symbol"))
    }
    return tuple(sorted(found))


def streams_of(symbols: Sequence[str], kinds: Sequence[str]) -> list[str]:
    """Each symbol's streams, a symbol's kinds side by side: ["btcusdt@ticker", "btcusdt@kline_1m", ...]."""
    return [f"{symbol}@{kind}" for symbol in symbols for kind in kinds]


@dataclass(frozen=True)
class Plan:
    """What to do to go from the connections' symbols to the wanted ones."""

    listed: tuple[str, ...]
    delisted: tuple[str, ...]
    unsubscribe: dict[str, tuple[str, ...]] = field(default_factory=dict)  # connection → its symbols to drop
    subscribe: dict[str, tuple[str, ...]] = field(default_factory=dict)  # connection → symbols it takes on
    new: tuple[tuple[str, ...], ...] = ()  # the symbols of each new connection
    retire: tuple[str, ...] = ()  # connections left with no symbol: closed

    @property
    def empty(self) -> bool:
        return not (self.listed or self.delisted)


def plan(assigned: Mapping[str, Collection[str]], wanted: Sequence[str], capacity: int) -> Plan:
    """From `assigned` (connection → its symbols, in connection order) to `wanted`, at most `capacity` symbols per
    connection: drop what is no longer wanted where it is, fill connections with room first-fit (in order), open new
    connections for the rest, close those left empty. Symbols already carried stay where they are."""
    if capacity < 1:
        raise ValueError("capacity must be at least 1 symbol per connection")
    wanted_set = set(wanted)
    carried = {symbol for symbols in assigned.values() for symbol in symbols}
    listed = tuple(dict.fromkeys(s for s in wanted if s not in carried))
    delisted = tuple(sorted(carried - wanted_set))
    unsubscribe, subscribe, kept = {}, {}, {}
    for name, symbols in assigned.items():
        gone = tuple(sorted(s for s in symbols if s not in wanted_set))
        if gone:
            unsubscribe[name] = gone
        kept[name] = len(symbols) - len(gone)
    waiting = list(listed)
    for name in assigned:
        room = capacity - kept[name]
        if room > 0 and waiting:
            subscribe[name], waiting = tuple(waiting[:room]), waiting[room:]
            kept[name] += len(subscribe[name])
    new = tuple(tuple(waiting[i : i + capacity]) for i in range(0, len(waiting), capacity))
    retire = tuple(name for name in assigned if kept[name] == 0)
    return Plan(listed, delisted, unsubscribe, subscribe, new, retire)


def named(symbols: Sequence[str]) -> str:
    """Symbols for a log line: all of them up to LOGGED_NAMES, then how many more."""
    shown = ",".join(symbols[:LOGGED_NAMES])
    return shown + (f",… (+{len(symbols) - LOGGED_NAMES})" if len(symbols) > LOGGED_NAMES else "")


class Discovery(threading.Thread):
    """Asks exchangeInfo now and every `interval` s; hands each answer's symbols to `apply` (the ingestor's plan)."""

    def __init__(
        self,
        client: RestClient,
        interval: float,
        apply: Callable[[tuple[str, ...]], None],
        stop: threading.Event,
        backoff: Backoff | None = None,
    ) -> None:
        super().__init__(name="symbol-discovery", daemon=True)
        self.client, self.interval, self.apply, self.stop_event = client, interval, apply, stop
        self.backoff = backoff or Backoff(base=2.0, cap=min(300.0, interval))
        self.runs = 0  # answers applied
        self.known: tuple[str, ...] | None = None  # the last answer applied

    def run(self) -> None:
        while not self.stop_event.is_set():
            delay = self.interval
            try:
                symbols = self.discover()
            except RestError as error:
                if self.stop_event.is_set():
                    break
                delay = self.backoff.next_delay()
                if isinstance(error, RestBanned):
                    delay = max(delay, error.retry_after)
                self._failed(str(error), delay)
            else:
                self.backoff.reset()
                try:
                    self.apply(symbols)
                except Exception:  # a bug must not end discovery: said in full, tried again at the next run
                    log.exception("discovery_apply_failed", symbols=len(symbols))
                    delay = self.backoff.next_delay()
                else:
                    self.known = symbols
                    self.runs += 1
            self.stop_event.wait(delay)

    def discover(self) -> tuple[str, ...]:
        """One look-up: the USDT symbols trading now (RestError if the exchange did not say)."""
        symbols = usdt_symbols(self.client.exchange_info())
        if not symbols:
            raise RestError("exchangeInfo lists no TRADING spot symbol quoted in USDT")
        metrics.DISCOVERY_RUNS.labels("ok").inc()
        return symbols

    def _failed(self, error: str, delay: float) -> None:
        metrics.DISCOVERY_RUNS.labels("failed").inc()
        if self.known is None:  # nothing streams until an answer comes: an error, with the fix
            log.error(
                "discovery_failed",
                error=error,
                retry_in_s=round(delay, 1),
                hint="SYMBOLS=all-usdt streams nothing until GET /api/v3/exchangeInfo answers: check BINANCE_REST_URL "
                "and that the exchange is reachable from here (or set SYMBOLS to a list)",
            )
        else:
            log.warning(
                "discovery_failed",
                error=error,
                retry_in_s=round(delay, 1),
                hint=f"keeping the {len(self.known)} symbols subscribed",
            )
