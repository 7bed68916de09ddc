"""The ingestor: feeds of exchange connections → normalize → de-duplicate → Kafka (ticks) or DLQ (the rest)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tickpipe.config import Settings
from tickpipe.ingestor import metrics
from tickpipe.ingestor.connection import AttemptBudget, Connection, ConnectionFactory
from tickpipe.ingestor.feed import Feed, FeedPolicy
from tickpipe.ingestor.normalize import Control, normalize
from tickpipe.ingestor.sink import KafkaSink
from tickpipe.logs import get_logger
from tickpipe.schema import InvalidTick

log = get_logger("tickpipe.ingestor")


def stream_urls(base_url: str, symbols: tuple[str, ...], per_connection: int) -> list[str]:
    """Combined-stream URLs, `per_connection` @ticker streams each (Binance allows up to 1024)."""
    streams = [f"{symbol.lower()}@ticker" for symbol in symbols]
    chunks = [streams[i : i + per_connection] for i in range(0, len(streams), per_connection)]
    return [f"{base_url}/stream?streams={'/'.join(chunk)}" for chunk in chunks]


@dataclass
class TickRouter:
    """Every message from every connection passes here: ticks go on at most once per (symbol, event time)."""

    sink: KafkaSink
    gap_after_ms: int
    last_event_ms: dict[str, int] = field(default_factory=dict)
    last_message_at: float = field(default_factory=time.monotonic)
    sent: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # Each symbol's counter child, looked up once: labels() on every message cost ~10 % of the message path.
    _accepted: dict[str, Any] = field(default_factory=dict)

    def __call__(self, connection: Connection, text: str) -> None:
        self.last_message_at = time.monotonic()
        try:
            self._route(connection, text)
        except Exception as error:  # a bug must not end the connection's reader: the message goes to the DLQ with why
            log.exception("message_failed", connection=connection.name)
            self.sink.reject(text, f"internal error: {type(error).__name__}: {error}")

    def _route(self, connection: Connection, text: str) -> None:
        try:
            item = normalize(text)
        except InvalidTick as error:
            self.sink.reject(text, str(error))
            return
        if item is Control.SERVER_SHUTDOWN:
            log.info("server_shutdown_notice", connection=connection.name)
            connection.shutdown_notice = True
            return
        if item is Control.SUBSCRIPTION_REPLY:
            return
        tick = item
        with self._lock:
            last = self.last_event_ms.get(tick.symbol)
            if last is not None and tick.event_time_ms <= last:
                metrics.DUPLICATES.inc()  # the same update from the overlap of two connections
                return
            if last is not None and tick.event_time_ms - last > self.gap_after_ms:
                gap_s = (tick.event_time_ms - last) / 1000
                metrics.GAPS.labels(tick.symbol).inc()
                metrics.GAP_SECONDS.labels(tick.symbol).inc(gap_s)
                log.warning("gap", symbol=tick.symbol, after=last, before=tick.event_time_ms, seconds=gap_s)
            self.last_event_ms[tick.symbol] = tick.event_time_ms
            # Under the lock: per-symbol order into Kafka is the exchange's order even with two connections.
            self.sink.send(tick)
            self.sent += 1
        counter = self._accepted.get(tick.symbol)
        if counter is None:
            counter = self._accepted[tick.symbol] = metrics.MESSAGES.labels(tick.symbol)
        counter.inc()


class Ingestor:
    def __init__(
        self, settings: Settings, symbols: tuple[str, ...], *, connect: ConnectionFactory = Connection
    ) -> None:
        self.settings = settings
        self.stop_event = threading.Event()
        self.sink = KafkaSink(settings)
        self.router = TickRouter(self.sink, settings.ingest_gap_after_ms)
        policy = FeedPolicy(
            stale_after=settings.ingest_stale_after_seconds, rotate_after=settings.ingest_rotate_after_seconds
        )
        budget = AttemptBudget(settings.ingest_max_attempts_per_5min)
        urls = stream_urls(settings.binance_ws_url, symbols, settings.ingest_streams_per_connection)
        self.feeds = [
            Feed(str(i), url, on_text=self.router, policy=policy, budget=budget, stop=self.stop_event, connect=connect)
            for i, url in enumerate(urls)
        ]
        metrics.LAST_EVENT_AGE.set_function(lambda: time.monotonic() - self.router.last_message_at)

    def start(self) -> None:
        self.sink.start()
        for feed in self.feeds:
            feed.start()

    def live(self) -> tuple[bool, str]:
        dead = [feed.feed_name for feed in self.feeds if not feed.is_alive()]
        if dead:
            return False, f"feeds stopped: {dead}"
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
        for feed in self.feeds:
            feed.join(10)
        return self.sink.close(flush_timeout)
