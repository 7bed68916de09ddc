"""One WebSocket connection to the exchange, read on its own thread. websocket-client opens it (the handshake) and
sends on it; its frames are read here (FrameReader), many per socket read, and a handler with a `batch` method
(TickRouter) is given each read's messages at once. Pings are answered as they are read; closing from another
thread (watchdog, rotation, shutdown) shuts the socket, ending the read.

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
from typing import Any

import websocket
from websocket import ABNF, WebSocketProtocolException

OnText = Callable[["Connection", str], None]
# What a Feed opens its connections with: (url, on_text, name) → an unopened Connection. Tests pass a fake's.
ConnectionFactory = Callable[[str, OnText, str], "Connection"]
READ_CHUNK = 8192  # websocket-client's reads (_ChunkedWebSocket: the Yahoo connection's)
# FrameReader's socket reads: one read takes what the kernel holds, up to this (at 100k messages/s of ~300 bytes,
# a few ms' worth). Each read is one trip through the GIL and one batch for the router.
FRAME_READ = 262_144
MAX_MESSAGE = 16 * 2**20  # a message (all its fragments) larger than this ends the connection: bounded memory


class _ChunkedWebSocket(websocket.WebSocket):
    """Reads frames from larger socket reads. websocket-client asks the socket for exactly the bytes it needs next
    (header, length, payload: three recv() calls per message); its frame buffer keeps whatever a read returns beyond
    that, so asking for up to 8 KiB serves several frames per call: ~20 % less CPU at 20k messages/s. recv() returns
    what has arrived, never waits for the whole chunk. Not more: the frame buffer copies its leftover on every
    frame it takes out."""

    def _recv(self, bufsize: int) -> bytes:
        return super()._recv(max(bufsize, READ_CHUNK))  # type: ignore[no-untyped-call,no-any-return]


class FrameReader:
    """Server-to-client WebSocket frames (RFC 6455 5.2) from large socket reads: `read()` waits for data and returns
    the complete text/binary messages in it (maybe none), keeping a partial frame for the next read. What
    websocket-client does per frame (three recv() calls, an ABNF object, a continuation-frame object) costs more
    than the rest of a tick's path; here a frame is a few slices of the read.

    As websocket-client: pings are answered with a pong of the same payload (a ping of 126 bytes or more, or
    fragmented, is a protocol error), a close frame with a close, pongs are ignored, fragments are joined
    (a continuation without a start, or a new message inside one, is a protocol error), reserved bits or an
    unknown opcode are protocol errors, a masked frame is unmasked. Text is decoded as UTF-8 with replacement
    characters for invalid bytes (then dead-lettered as not JSON, not a reason to drop the connection)."""

    def __init__(self, ws: websocket.WebSocket) -> None:
        if ws.sock is None:
            raise websocket.WebSocketConnectionClosedException("not open")
        self.ws, self.sock = ws, ws.sock
        # The reads holding the start of a frame not yet complete, their size, and the size of that frame (0: its
        # header is not complete either): a large frame's reads are joined once, when it is complete.
        self._pending: list[bytes] = []
        self._pending_size = self._need = 0
        self._fragments: list[bytes] | None = None  # a fragmented message's parts so far (text or binary alike)
        self._fragmented_size = 0

    def read(self) -> list[str]:
        data = self.sock.recv(FRAME_READ)
        if not data:
            raise websocket.WebSocketConnectionClosedException("Connection to remote host was lost.")
        if self._pending:
            joined = self._join(data)
            if joined is None:
                return []
            data = joined
        messages: list[str] = []
        size, at, need = len(data), 0, 0
        while size - at >= 2:
            first, second = data[at], data[at + 1]
            length, start = second & 0x7F, at + 2
            extended = 0 if length < 126 else 2 if length == 126 else 8  # a 16- or 64-bit length follows
            if extended:
                if size - start < extended:
                    break
                length, start = int.from_bytes(data[start : start + extended], "big"), start + extended
            if length > MAX_MESSAGE:
                raise WebSocketProtocolException(f"frame of {length} bytes (more than {MAX_MESSAGE})")
            masked = second & 0x80
            end = start + (4 if masked else 0) + length
            if end > size:
                need = end - at
                break
            if first == 0x81 and not masked and self._fragments is None:  # a whole text frame: nearly every one
                messages.append(data[start:end].decode("utf-8", "replace"))
            else:
                self._frame(
                    first,
                    ABNF.mask(data[start : start + 4], data[start + 4 : end]) if masked else data[start:end],
                    messages,
                )
            at = end
        if at < size:
            self._pending, self._pending_size, self._need = [data[at:]], size - at, need
        return messages

    def _join(self, data: bytes) -> bytes | None:
        """The pending reads and this one joined, once the frame they start is complete (None until then)."""
        self._pending.append(data)
        self._pending_size += len(data)
        if self._pending_size < self._need:
            return None
        joined, self._pending = b"".join(self._pending), []
        return joined

    def _frame(self, first: int, payload: bytes, messages: list[str]) -> None:
        fin, opcode = first & 0x80, first & 0x0F
        if first & 0x70:
            raise WebSocketProtocolException("rsv is not implemented, yet")
        if opcode in (ABNF.OPCODE_TEXT, ABNF.OPCODE_BINARY, ABNF.OPCODE_CONT):
            if (opcode == ABNF.OPCODE_CONT) == (self._fragments is None):
                raise WebSocketProtocolException("Illegal frame")
            if self._fragments is None:
                self._fragments, self._fragmented_size = [], 0
            self._fragments.append(payload)
            self._fragmented_size += len(payload)
            if self._fragmented_size > MAX_MESSAGE:
                raise WebSocketProtocolException(f"message of more than {MAX_MESSAGE} bytes")
            if fin:
                whole, self._fragments = b"".join(self._fragments), None
                messages.append(whole.decode("utf-8", "replace"))  # text or binary: the reader decoded both
        elif opcode == ABNF.OPCODE_PING:
            if not fin:
                raise WebSocketProtocolException("Invalid ping frame.")
            if len(payload) >= 126:
                raise WebSocketProtocolException("Ping message is too long")
            self.ws.pong(payload)
        elif opcode == ABNF.OPCODE_CLOSE:
            self.ws.send_close()  # then the exchange ends the TCP connection: the next read says so
        elif opcode != ABNF.OPCODE_PONG:
            raise WebSocketProtocolException(f"Invalid opcode {opcode!r}")


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
        # A handler that takes a read's messages at once (TickRouter.batch) is given them so; others one by one.
        batch: Callable[[Connection, list[str]], None] | None = getattr(self.on_text, "batch", None)
        try:
            read = _reader(ws)
            while not self._closing:
                texts = read()
                if not texts:
                    continue
                self.messages += len(texts)
                self.handling = True
                if batch is not None:
                    batch(self, texts)
                else:
                    for text in texts:
                        self.on_text(self, text)
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


def _reader(ws: Any) -> Callable[[], list[str]]:
    """How a connection's messages are read: FrameReader on websocket-client's socket; an in-memory stand-in
    (tests' `_dial`) by its recv(), one message at a time."""
    if isinstance(ws, websocket.WebSocket):
        return FrameReader(ws).read

    def one() -> list[str]:
        text = ws.recv()
        if not text:
            return []
        return [text if isinstance(text, str) else text.decode("utf-8", errors="replace")]

    return one


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
