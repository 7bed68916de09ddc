"""Yahoo Finance as a source (SOURCE=yahoo): the streamer WebSocket → ticks.

The protocol (what the `yfinance` library's WebSocket client does): connect to `wss://streamer.finance.yahoo.com/
?version=2` (YAHOO_WS_URL), send `{"subscribe": ["AAPL", "BTC-USD", ...]}`, and send it again about every 15 s as a
heartbeat (YAHOO_HEARTBEAT_SECONDS); the streamer answers with JSON frames whose `message` is a base64-encoded
protobuf PricingData, decoded by tickpipe.yahoo_pricing (the streamer's schema; never by hand). A frame that is not
one (not JSON, not base64, not a PricingData) goes to the dead-letter topic with the reason.

What a tick is here: symbol the message's `id` (AAPL, ^GSPC: tickpipe.schema's yahoo rule), event time its `time`
(ms), price the float32 `price` exactly: its shortest decimal (yahoo_pricing.exact_price: 189.95, not
189.9499969482422), volume `day_volume`: the trading day's cumulative volume (shares for a stock; 0 for indices and
currencies, which have none) — not Binance's 24 h base volume nor CoinGecko's 24 h quote volume.

Staleness: stocks are silent while their market is closed (nights, weekends), so silence is not a dead connection
here. A connection is dead when it answers nothing at all: with every heartbeat the client also sends a WebSocket
ping, which a live server answers with a pong whatever the market does; the feed's stale watchdog counts pongs as
traffic and replaces only a connection that answered nothing for YAHOO_STALE_AFTER_SECONDS. A quiet weekend keeps
one connection, not a reconnect every minute. Drops reconnect with backoff (Feed) and every connection subscribes
on open. There is no planned rotation (the streamer announces no connection lifetime).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Iterable
from typing import Protocol

import orjson
import websocket
from websocket import ABNF

from tickpipe.config import Settings
from tickpipe.ingestor.connection import AttemptBudget, Connection, ConnectionFactory, OnText
from tickpipe.ingestor.feed import Feed, FeedPolicy
from tickpipe.ingestor.sink import KafkaSink
from tickpipe.ingestor.standby import LeaderGate
from tickpipe.logs import get_logger
from tickpipe.schema import InvalidTick, Tick, validate_tick
from tickpipe.yahoo_pricing import InvalidFrame, decode_frame, exact_price

log = get_logger("tickpipe.ingestor")
SOURCE = "yahoo"


class _Router(Protocol):
    """What this module needs of the ingestor's TickRouter (tickpipe.ingestor.service)."""

    last_message_at: float
    sink: KafkaSink | LeaderGate

    def accept(self, tick: Tick) -> bool: ...


def to_tick(frame: str) -> Tick:
    """One streamer frame → a tick; InvalidTick (and nothing else) with the reason otherwise."""
    try:
        message = decode_frame(frame)
    except InvalidFrame as error:
        raise InvalidTick(str(error)) from None
    return validate_tick(message.id, message.time, exact_price(message.price), message.day_volume, SOURCE)


def subscribe_message(symbols: Iterable[str]) -> str:
    return orjson.dumps({"subscribe": list(symbols)}).decode()


class YahooConnection(Connection):
    """A streamer connection: subscribes when opened, re-subscribes and pings every `heartbeat` seconds, and counts
    any frame it reads (a pong too) as a sign of life."""

    def __init__(self, url: str, on_text: OnText, name: str, *, symbols: tuple[str, ...], heartbeat: float) -> None:
        super().__init__(url, on_text, name)
        self.subscription = subscribe_message(symbols)
        self.heartbeat = heartbeat
        self.subscriptions_sent = 0
        self._closed = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, name=f"ws-{name}-heartbeat", daemon=True)

    def open(self, timeout: float) -> None:
        super().open(timeout)
        self._subscribe()  # a failure here (the socket went at once) ends the reader: the feed reconnects
        self._beat.start()

    def _subscribe(self) -> bool:
        try:
            self.send(self.subscription)
            ws = self._ws
            if ws is not None:
                ws.ping()
        except (websocket.WebSocketException, OSError) as error:
            log.warning("subscription_failed", connection=self.name, error=str(error))
            return False
        self.subscriptions_sent += 1
        return True

    def _heartbeat(self) -> None:
        while not self._closed.wait(self.heartbeat):
            if not self.alive or not self._subscribe():
                return

    def _read(self) -> None:
        ws = self._ws
        if ws is None:
            return
        try:
            while not self._closing:
                opcode, data = ws.recv_data(control_frame=True)
                self.last_read_at = time.monotonic()  # a ping or pong is life too (module docstring)
                if opcode == ABNF.OPCODE_CLOSE:
                    break
                if opcode not in (ABNF.OPCODE_TEXT, ABNF.OPCODE_BINARY) or not data:
                    continue
                self.messages += 1
                self.handling = True
                self.on_text(self, data.decode("utf-8", errors="replace"))
                self.last_read_at = time.monotonic()
                self.handling = False
        except (websocket.WebSocketException, OSError) as error:
            if not self._closing:
                self.error = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        if not self.error and not self._closing:
            self.error = "closed by the exchange"
        if not self._closing:  # the server waits for our end of the TCP connection after its close frame
            with contextlib.suppress(websocket.WebSocketException, OSError):
                ws.shutdown()  # type: ignore[no-untyped-call]

    def close(self) -> None:
        self._closed.set()
        super().close()


class YahooRouter:
    """A feed's message handler: frames → ticks into the ingestor's TickRouter, the rest to the dead-letter topic."""

    def __init__(self, router: _Router) -> None:
        self.router = router

    def __call__(self, connection: Connection, text: str) -> None:
        try:
            tick = to_tick(text)
        except InvalidTick as error:
            self.router.last_message_at = time.monotonic()
            self.router.sink.reject(text, str(error))
            return
        except Exception as error:  # a bug must not end the reader: the frame goes to the DLQ with why
            log.exception("message_failed", connection=connection.name)
            self.router.sink.reject(text, f"internal error: {type(error).__name__}: {error}")
            return
        self.router.accept(tick)


def yahoo_feed(
    settings: Settings,
    symbols: Iterable[str],
    router: _Router,
    budget: AttemptBudget,
    *,
    connect: ConnectionFactory | None = None,
) -> Feed:
    """The one feed of a Yahoo ingestor (a connection carries every symbol)."""
    wanted = tuple(symbols)
    heartbeat = settings.yahoo_heartbeat_seconds

    def open_connection(url: str, on_text: OnText, name: str) -> Connection:
        return YahooConnection(url, on_text, name, symbols=wanted, heartbeat=heartbeat)

    policy = FeedPolicy(stale_after=settings.yahoo_stale_after_seconds, rotate_after=math.inf)
    return Feed(
        "0",
        settings.yahoo_ws_url,
        on_text=YahooRouter(router),
        policy=policy,
        budget=budget,
        stop=threading.Event(),
        connect=connect or open_connection,
        source=SOURCE,
    )
