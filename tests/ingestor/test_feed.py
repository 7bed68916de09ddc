"""The feed's connection policy in-process, in milliseconds: a fake exchange behind the Connection seam (the real
reader loop, watchdog, rotation and backoff run; only the socket is in memory). The WebSocket tests in
test_ingestor.py drive the same code over a real socket."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import websocket
from prometheus_client import REGISTRY

from tests.helpers import wait_for
from tickpipe.ingestor.connection import AttemptBudget, Backoff, Connection, OnText
from tickpipe.ingestor.feed import Feed, FeedPolicy

pytestmark = pytest.mark.unit
FAST = FeedPolicy(stale_after=0.15, healthy_after=0.3, connect_timeout=1.0, switch_timeout=1.0, check_interval=0.01)
_CLOSED = object()


class FakeSocket:
    """What Connection reads: recv() blocks until the test sends a frame or the connection is closed."""

    def __init__(self) -> None:
        self.frames: queue.Queue[object] = queue.Queue()
        self.sock = self  # Connection.close() shuts the OS socket down: here, the queue

    def shutdown(self, how: int) -> None:
        self.frames.put(_CLOSED)

    def recv(self) -> str:
        frame = self.frames.get()
        if frame is _CLOSED:
            self.frames.put(_CLOSED)
            raise websocket.WebSocketConnectionClosedException("closed")
        return str(frame)

    def settimeout(self, timeout: float | None) -> None:
        pass

    def close(self, timeout: float = 0) -> None:
        self.frames.put(_CLOSED)


class FakeExchange:
    """Hands out fake connections; `refuse` makes the next opens fail like an unreachable host."""

    def __init__(self) -> None:
        self.connections: list[Connection] = []
        self.sockets: list[FakeSocket] = []
        self.refuse = 0

    def __call__(self, url: str, on_text: OnText, name: str) -> Connection:
        exchange = self

        class Fake(Connection):
            def _dial(self, timeout: float) -> FakeSocket:  # type: ignore[override]
                if exchange.refuse:
                    exchange.refuse -= 1
                    raise ConnectionRefusedError("refused")
                socket = FakeSocket()
                exchange.sockets.append(socket)
                return socket

        connection = Fake(url, on_text, name)
        self.connections.append(connection)
        return connection

    def send(self, frame: str = "tick") -> None:
        """One frame on every open connection, as the exchange publishes to every subscriber."""
        for socket in self.sockets:
            socket.frames.put(frame)

    @property
    def opened(self) -> list[Connection]:
        return [c for c in self.connections if c.opened_at]


@pytest.fixture
def feed_of() -> Iterator[object]:
    stop = threading.Event()
    feeds: list[Feed] = []

    def make(on_text: OnText, policy: FeedPolicy = FAST, exchange: FakeExchange | None = None) -> Feed:
        feed = Feed(
            f"t{len(feeds)}",
            "ws://fake/stream?streams=btcusdt@ticker",
            on_text=on_text,
            policy=policy,
            budget=AttemptBudget(1000),
            stop=stop,
            connect=exchange or FakeExchange(),
            backoff=Backoff(base=0.005, cap=0.02),
        )
        feeds.append(feed)
        feed.start()
        return feed

    yield make
    stop.set()
    for feed in feeds:
        feed.join(5)


def connected(feed: Feed) -> float | None:
    return REGISTRY.get_sample_value(
        "tickpipe_ingest_exchange_connected", {"source": feed.source, "feed": feed.feed_name}
    )


def test_a_silent_connection_is_replaced(feed_of: object) -> None:
    exchange = FakeExchange()
    feed: Feed = feed_of(lambda c, t: None, exchange=exchange)  # type: ignore[operator]
    wait_for(
        lambda: len(exchange.opened) >= 2 and feed.current is exchange.opened[1],
        5,
        "a second connection after the silence",
        interval=0.005,
    )
    first = exchange.opened[0]
    assert not first.alive
    assert first.age >= FAST.stale_after * 0.9


def test_time_held_in_the_handler_is_not_silence(feed_of: object) -> None:
    """Defect 2: a full producer queue holds the reader; the exchange is not silent, the ingestor is not reading."""
    exchange = FakeExchange()
    release, held = threading.Event(), threading.Event()
    handled: list[str] = []

    def handler(connection: Connection, text: str) -> None:
        if text == "block":
            held.set()
            release.wait(5)
        handled.append(text)

    feed: Feed = feed_of(handler, exchange=exchange)  # type: ignore[operator]
    wait_for(lambda: feed.current, 5, "connected", interval=0.005)
    exchange.send("block")
    for i in range(5):
        exchange.send(f"queued-{i}")  # frames waiting in the socket while the handler is held
    assert held.wait(5)
    deadline = time.monotonic() + FAST.stale_after * 5  # held five times the stale limit
    while time.monotonic() < deadline:
        assert len(exchange.opened) == 1, "the watchdog replaced a connection whose reader was held"
        assert feed.current is not None
        assert feed.current.silence == 0.0
        time.sleep(0.01)
    release.set()
    wait_for(lambda: len(handled) == 6, 5, "the queued frames read from the same connection", interval=0.005)
    assert handled == ["block"] + [f"queued-{i}" for i in range(5)]
    assert len(exchange.opened) == 1
    # Silence counts again from the end of the handling, not from when the held frame arrived.
    assert feed.current.silence < FAST.stale_after


def test_a_rotation_opens_the_new_connection_before_closing_the_old(feed_of: object) -> None:
    exchange = FakeExchange()
    seen: list[tuple[str, str]] = []
    policy = FeedPolicy(stale_after=5, rotate_after=0.1, switch_timeout=2, check_interval=0.01)
    feed: Feed = feed_of(lambda c, t: seen.append((c.name, t)), policy, exchange)  # type: ignore[operator]
    wait_for(lambda: feed.current, 5, "connected", interval=0.005)
    sent = 0
    while len(exchange.opened) < 2 or feed.current is exchange.opened[0]:
        exchange.send(f"f{sent}")
        sent += 1
        time.sleep(0.005)
        assert sent < 2000, "no rotation"
    old, new = exchange.opened[0], exchange.opened[1]
    wait_for(lambda: not old.alive, 5, "the old connection closed", interval=0.005)
    frames = {t for _, t in seen}
    assert frames >= {f"f{i}" for i in range(sent - 1)}, "a frame fell between the two connections"
    assert any(name == new.name for name, _ in seen)


def test_a_shutdown_notice_rotates_at_once(feed_of: object) -> None:
    exchange = FakeExchange()
    feed: Feed = feed_of(lambda c, t: None, FeedPolicy(stale_after=5, check_interval=0.01), exchange)  # type: ignore[operator]
    wait_for(lambda: feed.current, 5, "connected", interval=0.005)
    first = exchange.opened[0]
    first.shutdown_notice = True
    deadline = time.monotonic() + 5
    while feed.current is first:
        exchange.send()
        time.sleep(0.005)
        assert time.monotonic() < deadline, "no rotation after the notice"
    assert not first.alive or wait_for(lambda: not first.alive, 5, "old closed")


def test_failed_connects_back_off_and_a_healthy_connection_resets_the_backoff(feed_of: object) -> None:
    exchange = FakeExchange()
    exchange.refuse = 4
    feed: Feed = feed_of(
        lambda c, t: None, FeedPolicy(stale_after=0.4, healthy_after=0.2, check_interval=0.01), exchange
    )  # type: ignore[operator]
    wait_for(lambda: feed.current, 5, "connected after four refusals", interval=0.005)
    assert feed.backoff.failures == 4
    assert feed.last_error is None
    assert connected(feed) == 1
    # The connection lives past healthy_after, then goes silent and is replaced: the backoff starts over.
    wait_for(lambda: len(exchange.opened) >= 2, 5, "replaced after the silence", interval=0.005)
    assert feed.backoff.failures == 1


def test_the_exchange_gauge_follows_the_connection(feed_of: object) -> None:
    exchange = FakeExchange()
    feed: Feed = feed_of(lambda c, t: None, FeedPolicy(stale_after=0.1, check_interval=0.01), exchange)  # type: ignore[operator]
    wait_for(lambda: connected(feed) == 1, 5, "gauge 1 once connected", interval=0.005)
    exchange.refuse = 10**6  # from now on the exchange is unreachable
    wait_for(lambda: connected(feed) == 0, 5, "gauge 0 once the connection is gone", interval=0.005)
    wait_for(lambda: feed.last_error == "ConnectionRefusedError: refused", 5, "the refusal", interval=0.005)
    assert connected(feed) == 0


class _Refusing(BaseHTTPRequestHandler):
    status = 451

    def do_GET(self) -> None:
        body = b'{"code":0,"msg":"Service unavailable from a restricted location."}'
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def refusing_server(status: int) -> Iterator[str]:
    handler = type("Handler", (_Refusing,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"ws://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize(("status", "words"), [(451, "restricted region"), (403, "HTTP 403 Forbidden")])
def test_a_refused_handshake_is_named_in_one_line(feed_of: object, status: int, words: str) -> None:
    with refusing_server(status) as url:
        stop = threading.Event()
        feed = Feed(
            "r",
            f"{url}/stream?streams=btcusdt@ticker",
            on_text=lambda c, t: None,
            policy=FAST,
            budget=AttemptBudget(1000),
            stop=stop,
            backoff=Backoff(base=0.01, cap=0.05),
        )
        feed.start()
        try:
            error = wait_for(lambda: feed.last_error, 10, "the refused handshake", interval=0.01)
        finally:
            stop.set()
            feed.join(5)
    assert words in error and "BINANCE_WS_URL" in error and "\n" not in error
    assert connected(feed) == 0
