"""One WebSocket connection to the exchange, read on its own thread. Pings are answered by websocket-client as
they are read; closing from another thread (watchdog, rotation, shutdown) shuts the socket, ending the read.

Silence (what the stale watchdog acts on) is time spent waiting on the socket, never time spent handling a message:
when the handler is held (a full producer queue without a disk buffer), the exchange is not silent, the ingestor
stopped reading, and replacing the connection would throw away the frames already in its socket buffer."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections import deque
from collections.abc import Callable

import websocket

OnText = Callable[["Connection", str], None]
# What a Feed opens its connections with: (url, on_text, name) → an unopened Connection. Tests pass a fake's.
ConnectionFactory = Callable[[str, OnText, str], "Connection"]
READ_CHUNK = 8192


class _ChunkedWebSocket(websocket.WebSocket):
    """Reads frames from larger socket reads. websocket-client asks the socket for exactly the bytes it needs next
    (header, length, payload: three recv() calls per message); its frame buffer keeps whatever a read returns beyond
    that, so asking for up to 8 KiB serves several frames per call: ~20 % less CPU at 20k messages/s. recv() returns
    what has arrived, never waits for the whole chunk. Not more: the frame buffer copies its leftover on every
    frame it takes out."""

    def _recv(self, bufsize: int) -> bytes:
        return super()._recv(max(bufsize, READ_CHUNK))  # type: ignore[no-untyped-call,no-any-return]


class Connection:
    def __init__(self, url: str, on_text: OnText, name: str) -> None:
        self.url, self.on_text, self.name = url, on_text, name
        self.opened_at = 0.0
        self.last_read_at = 0.0  # when the reader last went back to the socket
        self.handling = False  # True while a message is in on_text: not silence
        self.messages = 0
        self.shutdown_notice = False  # set when the exchange announced it will close us (serverShutdown)
        self.error: str | None = None
        # The streams this connection carries (its URL's, then live SUBSCRIBE/UNSUBSCRIBE: Feed keeps it) and when it
        # last sent such a message (the exchange allows 5 incoming messages per second per connection).
        self.streams: set[str] = set()
        self.control_sent_at = 0.0
        self._ws: websocket.WebSocket | None = None
        self._closing = False
        self._reader = threading.Thread(target=self._read, name=f"ws-{name}", daemon=True)

    def open(self, timeout: float) -> None:
        """Connect (raises OSError / WebSocketException on failure) and start reading."""
        self._ws = self._dial(timeout)
        self._ws.settimeout(None)
        self.opened_at = self.last_read_at = time.monotonic()
        self._reader.start()

    def _dial(self, timeout: float) -> websocket.WebSocket:
        """The opened socket (the seam tests replace with an in-memory one)."""
        return websocket.create_connection(
            self.url, timeout=timeout, enable_multithread=True, skip_utf8_validation=True, class_=_ChunkedWebSocket
        )

    @property
    def alive(self) -> bool:
        return self._reader.is_alive()

    @property
    def age(self) -> float:
        return time.monotonic() - self.opened_at

    @property
    def silence(self) -> float:
        """Seconds the reader has waited on the socket for nothing; 0 while it is handling a message."""
        return 0.0 if self.handling else time.monotonic() - self.last_read_at

    def _read(self) -> None:
        ws = self._ws
        if ws is None:
            return
        try:
            while not self._closing:
                text = ws.recv()
                if not text:
                    continue
                self.messages += 1
                self.handling = True
                self.on_text(self, text if isinstance(text, str) else text.decode("utf-8", errors="replace"))
                self.last_read_at = time.monotonic()  # before clearing the flag: silence never sees a stale time
                self.handling = False
        except (websocket.WebSocketException, OSError) as error:
            if not self._closing:
                self.error = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        if not self.error and not self._closing:
            self.error = "closed by the exchange"

    def send(self, text: str) -> None:
        """Send a text frame (a SUBSCRIBE/UNSUBSCRIBE request); raises WebSocketException/OSError if the connection
        is gone. Safe beside the reader thread: the socket is opened with enable_multithread (a send lock)."""
        ws = self._ws
        if ws is None:
            raise websocket.WebSocketConnectionClosedException("not open")
        ws.send(text)

    def close(self) -> None:
        self._closing = True
        ws = self._ws
        if ws is not None and ws.sock is not None:
            with contextlib.suppress(OSError):
                ws.sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(websocket.WebSocketException, OSError):
                ws.close(timeout=1)
        if self._reader.is_alive() and self._reader is not threading.current_thread():
            self._reader.join(5)


class Backoff:
    """Exponential with jitter (half fixed, half random), reset after a healthy connection."""

    def __init__(self, base: float = 0.5, cap: float = 30.0, rng: Callable[[], float] | None = None) -> None:
        import random

        self.base, self.cap, self.failures = base, cap, 0
        self._random = rng or random.random

    def next_delay(self) -> float:
        delay = min(self.cap, self.base * 2**self.failures)
        self.failures += 1
        return float(delay / 2 + self._random() * delay / 2)

    def reset(self) -> None:
        self.failures = 0


class AttemptBudget:
    """At most `limit` connection attempts per `window` s, across all connections (Binance bans at 300/5 min/IP)."""

    def __init__(self, limit: int, window: float = 300.0) -> None:
        self.limit, self.window = limit, window
        self._attempts: deque[float] = deque()
        self._lock = threading.Lock()

    def wait_time(self) -> float:
        """0 and an attempt is taken, or the seconds to wait before asking again."""
        with self._lock:
            now = time.monotonic()
            while self._attempts and now - self._attempts[0] >= self.window:
                self._attempts.popleft()
            if len(self._attempts) < self.limit:
                self._attempts.append(now)
                return 0.0
            return self.window - (now - self._attempts[0])
