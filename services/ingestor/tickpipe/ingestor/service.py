"""The ingestor: feeds of exchange connections → normalize → de-duplicate → Kafka (ticks) or DLQ (the rest).

One source per process (SOURCE): Binance's WebSocket streams (this module, feed.py, normalize.py), CoinGecko's REST
API polled (coingecko.py) or Yahoo Finance's streamer (yahoo.py). Every source hands its ticks to the same TickRouter
(at most once per symbol and event time) and the same sink (Kafka `price-ticks`, the bounded queue, the disk buffer,
the dead-letter topic); only Binance has candles, gap repair and symbol discovery.

The symbols are SYMBOLS, or with SYMBOLS=all-usdt what discovery finds (tickpipe.ingestor.discovery), changed while
running: either way `apply_symbols` plans which connection carries which symbol (at most
INGEST_STREAMS_PER_CONNECTION streams each) and carries the plan out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tickpipe.candle_schema import WireCandle
from tickpipe.config import ALL_USDT, Settings
from tickpipe.ingestor import metrics
from tickpipe.ingestor.coingecko import CoinGeckoPoller
from tickpipe.ingestor.connection import AttemptBudget, Connection, ConnectionFactory
from tickpipe.ingestor.discovery import Discovery, named, plan, streams_of
from tickpipe.ingestor.feed import Feed, FeedPolicy, combined_url
from tickpipe.ingestor.leadership import Elector
from tickpipe.ingestor.normalize import Control, normalize
from tickpipe.ingestor.repair import CandleLedger, CandlePublisher, Repairer
from tickpipe.ingestor.rest import RestClient
from tickpipe.ingestor.sink import KafkaSink
from tickpipe.ingestor.standby import LeaderGate, Role, identity, lease_store, newest_in_topic
from tickpipe.ingestor.yahoo import yahoo_feed
from tickpipe.logs import get_logger
from tickpipe.schema import InvalidTick, Tick

log = get_logger("tickpipe.ingestor")


def stream_urls(base_url: str, symbols: tuple[str, ...], per_connection: int, *, klines: bool = False) -> list[str]:
    """Combined-stream URLs, at most `per_connection` streams each (Binance allows up to 1024): each symbol's @ticker
    and, with `klines`, its @kline_1m, a symbol's streams on one connection (at least one symbol per connection)."""
    kinds = stream_kinds(klines)
    chunks = plan({}, [s.lower() for s in symbols], max(1, per_connection // len(kinds))).new
    return [combined_url(base_url, streams_of(chunk, kinds)) for chunk in chunks]


def stream_kinds(klines: bool) -> tuple[str, ...]:
    return ("ticker", "kline_1m") if klines else ("ticker",)


@dataclass
class TickRouter:
    """Every message from every connection passes here: ticks go on at most once per (symbol, event time)."""

    sink: KafkaSink | LeaderGate
    gap_after_ms: int | None  # None: no gap reports (a polled source, a market that closes: silence is normal)
    last_event_ms: dict[str, int] = field(default_factory=dict)
    last_message_at: float = field(default_factory=time.monotonic)
    sent: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # Each symbol's count of accepted ticks (tickpipe_ingest_messages_total), a plain cell added to under _lock:
    # a Counter child's inc() on every message cost ~10 % of the message path (metrics.CellCounter).
    _accepted: dict[str, list[float]] = field(default_factory=dict)
    candles: Callable[[WireCandle], None] | None = None  # closed klines go here (repair.CandlePublisher)

    def __call__(self, connection: Connection, text: str) -> None:
        self.batch(connection, [text])

    def batch(self, connection: Connection, texts: list[str]) -> None:
        """One socket read's messages (Connection calls this instead of one call per message): each normalized and
        dead-lettered or handed on, then the ticks accepted in their order under one take of the lock, instead of
        five reader threads taking turns at it per message. A bug must not end the connection's reader: its message
        goes to the DLQ with why."""
        self.last_message_at = time.monotonic()
        ticks: list[tuple[Tick, str]] = []
        for text in texts:
            try:
                try:
                    item = normalize(text)
                except InvalidTick as error:
                    self.sink.reject(text, str(error))
                    continue
                if type(item) is Tick:
                    ticks.append((item, text))
                else:
                    self._other(connection, item)  # type: ignore[arg-type]
            except Exception as error:
                self._failed(connection, text, error)
        if not ticks:
            return
        with self._lock:
            for tick, text in ticks:
                try:
                    self._accept_locked(tick)
                except Exception as error:
                    self._failed(connection, text, error)

    def _failed(self, connection: Connection, text: str, error: Exception) -> None:
        log.exception("message_failed", connection=connection.name)
        self.sink.reject(text, f"internal error: {type(error).__name__}: {error}")

    def accept(self, tick: Tick) -> bool:
        """Send `tick` on unless a tick of its symbol at the same or a later event time was sent; True if sent.
        (Sources other than Binance call this directly with the ticks they made.)"""
        self.last_message_at = time.monotonic()
        return self._accept(tick)

    def _accept(self, tick: Tick) -> bool:
        with self._lock:
            return self._accept_locked(tick)

    def _accept_locked(self, tick: Tick) -> bool:
        last = self.last_event_ms.get(tick.symbol)
        if last is not None and tick.event_time_ms <= last:
            metrics.DUPLICATES.inc()  # the same update from the overlap of two connections
            return False
        if last is not None and self.gap_after_ms is not None and tick.event_time_ms - last > self.gap_after_ms:
            gap_s = (tick.event_time_ms - last) / 1000
            metrics.GAPS.labels(tick.source, tick.symbol).inc()
            metrics.GAP_SECONDS.labels(tick.source, tick.symbol).inc(gap_s)
            log.warning("gap", symbol=tick.symbol, after=last, before=tick.event_time_ms, seconds=gap_s)
        self.last_event_ms[tick.symbol] = tick.event_time_ms
        # Under the lock: per-symbol order into Kafka is the exchange's order even with two connections.
        self.sink.send(tick)
        self.sent += 1
        accepted = self._accepted.get(tick.symbol)
        if accepted is None:
            accepted = self._accepted[tick.symbol] = metrics.MESSAGES.cell(tick.source, tick.symbol)
        accepted[0] += 1
        return True

    def forget(self, symbols: tuple[str, ...]) -> None:
        """Delisted symbols: if one trades again later, the pause is not a gap of ours."""
        with self._lock:
            for symbol in symbols:
                self.last_event_ms.pop(symbol.upper(), None)

    def _other(self, connection: Connection, item: WireCandle | Control) -> None:
        if item is Control.OPEN_CANDLE:
            metrics.OPEN_CANDLES.inc()  # not an error: only closed candles are published
        elif item is Control.SERVER_SHUTDOWN:
            log.info("server_shutdown_notice", connection=connection.name)
            connection.shutdown_notice = True
        elif isinstance(item, WireCandle) and self.candles is not None:
            self.candles(item)


class Ingestor:
    def __init__(
        self, settings: Settings, symbols: tuple[str, ...], *, connect: ConnectionFactory = Connection
    ) -> None:
        """`symbols`: the symbols to stream, or (ALL_USDT,) for every USDT pair, discovered while running."""
        self.settings = settings
        self.stop_event = threading.Event()
        discover = tuple(symbols) == (ALL_USDT,)
        symbols = () if discover else symbols
        self.sink = KafkaSink(settings)
        # With replicas, the router's ticks pass the Lease's gate (tickpipe.ingestor.standby); alone, straight to Kafka.
        self.gate: LeaderGate | None = None
        if settings.ingest_leader_election != "off":
            self.gate = LeaderGate(
                self.sink,
                Elector(lease_store(settings), identity(settings)),
                buffer_ms=int(settings.ingest_standby_buffer_seconds * 1000),
                newest_in_kafka=lambda since_ms: newest_in_topic(settings, since_ms),
            )
        else:
            metrics.LEADER.set(1)
        binance = settings.source == "binance"
        self.router = TickRouter(self.gate or self.sink, settings.ingest_gap_after_ms if binance else None)
        # Closed 1m candles, and the repair of the minutes missed (tickpipe.ingestor.repair): the leader's job alone.
        self.repairer: Repairer | None = None
        self.poller: CoinGeckoPoller | None = None
        if settings.ingest_klines and binance:
            gate = self.gate
            leading = (lambda: gate.role is Role.LEADER) if gate is not None else (lambda: True)
            ledger = CandleLedger()
            self.repairer = Repairer(settings, symbols, ledger, self.sink, leading=leading)
            self.router.candles = CandlePublisher(ledger, self.sink, self.repairer, leading)
        self.policy = FeedPolicy(
            stale_after=settings.ingest_stale_after_seconds, rotate_after=settings.ingest_rotate_after_seconds
        )
        self.budget = AttemptBudget(settings.ingest_max_attempts_per_5min)
        self.connect = connect
        self.kinds = stream_kinds(settings.ingest_klines)
        self.capacity = max(1, settings.ingest_streams_per_connection // len(self.kinds))  # symbols per connection
        self.feeds: list[Feed] = []
        self.assigned: dict[str, list[str]] = {}  # feed name → its symbols (lower-case), in feed order
        self._feeds_lock = threading.Lock()
        self._feed_numbers = 0
        self._started = False
        self.discovery: Discovery | None = None
        if settings.source == "coingecko":
            self.poller = CoinGeckoPoller(settings, symbols, self.router.accept, self.router.sink, self.stop_event)
            metrics.SYMBOLS.set(len(symbols))
        elif settings.source == "yahoo":
            self.feeds.append(yahoo_feed(settings, symbols, self.router, self.budget))
            metrics.SYMBOLS.set(len(symbols))
        elif discover:
            weight = settings.ingest_repair_max_weight_per_minute  # the ingestor's REST budget (exchangeInfo: 20)
            client = RestClient(settings.binance_rest_url, weight, self.stop_event)
            self.discovery = Discovery(
                client, settings.ingest_discovery_interval_seconds, self.apply_symbols, self.stop_event
            )
        else:
            self.apply_symbols(tuple(s.lower() for s in symbols))
        metrics.LAST_EVENT_AGE.set_function(lambda: time.monotonic() - self.router.last_message_at)

    def apply_symbols(self, wanted: tuple[str, ...]) -> None:
        """Stream exactly `wanted` (lower-case): unsubscribe the others where they are, subscribe the new ones on
        connections with room, open connections for the rest, close the empty ones. Other streams are untouched."""
        with self._feeds_lock:
            first = not self.assigned
            change = plan(self.assigned, wanted, self.capacity)
            if change.empty:
                return
            feeds = {feed.feed_name: feed for feed in self.feeds}
            for name in [n for n in feeds if n in change.unsubscribe or n in change.subscribe]:
                gone, new = change.unsubscribe.get(name, ()), change.subscribe.get(name, ())
                feeds[name].change(subscribe=streams_of(new, self.kinds), unsubscribe=streams_of(gone, self.kinds))
                self.assigned[name] = [s for s in self.assigned[name] if s not in gone] + list(new)
            for symbols in change.new:
                self._add_feed(symbols)
            for name in change.retire:
                self._retire(feeds[name])
            if change.delisted:
                self.router.forget(change.delisted)
            if self.repairer is not None:
                self.repairer.follow(listed=change.listed, delisted=change.delisted)
            count = sum(len(symbols) for symbols in self.assigned.values())
        metrics.SYMBOLS.set(count)
        metrics.SYMBOL_CHANGES.labels("listed").inc(0 if first else len(change.listed))
        metrics.SYMBOL_CHANGES.labels("delisted").inc(len(change.delisted))
        if self.discovery is None:
            return
        if first:
            log.info("symbols_discovered", symbols=count, connections=len(self.feeds), quote="USDT")
        else:
            log.info(
                "symbols_changed",
                listed=named(change.listed),
                delisted=named(change.delisted),
                listed_count=len(change.listed),
                delisted_count=len(change.delisted),
                symbols=count,
                connections=len(self.feeds),
            )

    def _add_feed(self, symbols: tuple[str, ...]) -> None:
        name = str(self._feed_numbers)
        self._feed_numbers += 1
        feed = Feed(
            name,
            self.settings.binance_ws_url,
            on_text=self.router,
            policy=self.policy,
            budget=self.budget,
            stop=threading.Event(),  # its own: a feed left with no symbol is closed alone
            connect=self.connect,
            streams=streams_of(symbols, self.kinds),
        )
        self.assigned[name] = list(symbols)
        if self._started:
            feed.start()
        self.feeds.append(feed)  # after start: live() never sees it not running

    def _retire(self, feed: Feed) -> None:
        self.feeds.remove(feed)  # before it stops: live() never sees it stopped
        del self.assigned[feed.feed_name]
        feed.stop_event.set()
        if feed.ident is not None:
            feed.join(10)
        metrics.EXCHANGE_CONNECTED.remove(feed.source, feed.feed_name)  # not "disconnected": gone
        log.info("connection_closed_empty", feed=feed.feed_name)

    def start(self) -> None:
        self.sink.start()
        if self.gate is not None:
            gate = self.gate
            threading.Thread(target=gate.run, args=(self.stop_event,), name="election", daemon=True).start()
        if self.repairer is not None:
            self.repairer.start()
        with self._feeds_lock:
            self._started = True
            for feed in self.feeds:
                feed.start()
        if self.discovery is not None:
            self.discovery.start()
        if self.poller is not None:
            self.poller.start()

    def live(self) -> tuple[bool, str]:
        dead = [feed.feed_name for feed in list(self.feeds) if not feed.is_alive()]
        if dead:
            return False, f"feeds stopped: {dead}"
        if self.discovery is not None and self.discovery.ident is not None and not self.discovery.is_alive():
            return False, "symbol discovery stopped"
        if self.poller is not None and self.poller.ident is not None and not self.poller.is_alive():
            return False, "poller stopped"
        if self.sink.fatal:
            return False, f"producer unusable: {self.sink.fatal}"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        """Ready to produce: the producer is usable and the ticks it is given are kept (in memory or on disk).
        Whether the exchange is connected is not readiness (a restart does not fix a refused region): it is the
        gauge tickpipe_ingest_exchange_connected{feed} and the log line `exchange_refused`."""
        return self.sink.ready()

    def stop(self, flush_timeout: float = 30.0) -> int:
        """Close the connections, then deliver what is queued; return the number of undelivered records."""
        self.stop_event.set()
        if self.discovery is not None:
            self.discovery.join(30)  # a plan being carried out ends first: no feed is opened after this
        with self._feeds_lock:
            feeds = list(self.feeds)
        for feed in feeds:
            feed.stop_event.set()
        for feed in feeds:
            feed.join(10)
        if self.poller is not None and self.poller.ident is not None:
            self.poller.join(15)  # a request under way ends within its timeout
        if self.repairer is not None:  # holes found before the stop are repaired now (bounded): not found again later
            self.repairer.finish(min(10.0, flush_timeout / 2))
        undelivered = self.sink.close(flush_timeout)
        if self.gate is not None:
            self.gate.release()  # only now: the standby that takes over finds every tick we sent in Kafka
        return undelivered
