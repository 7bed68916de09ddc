"""The benchmark's load generator: Binance's combined @ticker streams at a fixed rate, for a fraction of the
simulator's CPU.

What it serves is what the ingestor uses on its hot path, nothing more:

    /stream?streams=<symbol>@ticker/...     combined stream: {"stream": "<symbol>@ticker", "data": <24hrTicker>},
                                            the simulator's payload (tickpipe.sim.market.ticker_event) byte for byte
                                            in shape, `E` (and `C`, `O`) the real send time in ms, `c` a price path
    SUBSCRIBE / UNSUBSCRIBE                  answered {"result": null, "id": n}; other methods refused
    pings                                    every `ping_interval` s; a client silent for `ping_timeout` s is dropped
    GET /api/v3/time, /api/v3/ping           Binance's answers; every other REST path 404

Other streams (`<symbol>@kline_1m`) are accepted and stay silent: the benchmark runs the ingestor with
INGEST_KLINES=false (no kline streams, no REST catch-up), the tick path its earlier runs measured.

Why it is cheap: each connection's frames (one per subscribed symbol) are encoded once, with fixed-width fields;
a round patches the send time and the next price into them in place and writes the whole round with one socket
send per connection. The simulator builds every event in Python (a random walk, candle books, orjson, one
websockets send each). Rounds run at `rate` per second, all symbols in each, as the simulator's; a round's send time
is strictly later than the previous round's, so (symbol, E) stays unique.

The WebSocket handshake, incoming frames (pongs, requests, close) and control frames go through websockets'
sans-I/O ServerProtocol; only the outgoing data frames bypass it (serialized once by its Frame class).

`python -m bench.loadgen --rate 40 [--port 0]` prints `READY ws://host:port http://host:port` and serves until
SIGTERM/SIGINT; `LoadGen` runs it on threads in the caller's process (tests).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import math
import random
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from types import FrameType
from urllib.parse import parse_qs, urlsplit

import numpy as np
import numpy.typing as npt
import orjson
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from tickpipe.sim.market import Market, encode

PRICE_STEPS = 64  # a price path of this many steps, walked forth and back (no jump where it repeats)
SEND_TIMEOUT = 10.0  # a client that takes nothing for this long is dropped (it would stall every other)
READ_SIZE = 65536
DAY_MS = 86_400_000
# The template's send time: it and a day before it have 13 digits, as every ms time from 2001 to 2286 (a patched
# frame keeps its length).
TEMPLATE_MS = 1_100_000_000_000


@dataclass(frozen=True)
class LoadGenOptions:
    rate: float = 1.0  # rounds per second: updates per second of each subscribed symbol (Binance's @ticker: 1)
    host: str = "127.0.0.1"
    port: int = 0
    ping_interval: float = 20.0  # Binance: 20 s
    ping_timeout: float = 60.0  # Binance: a pong within a minute
    max_rounds: int | None = None  # each connection is sent this many rounds, then only pings (tests count on it)
    seed: int = 7


@dataclass
class Template:
    """One symbol's combined-stream frame, serialized, and where its varying fields are."""

    frame: bytes
    stamps: tuple[int, int, int]  # offsets of E, C (send time) and O (send time - 24 h), 13 digits each
    price_at: int  # offset of `c`'s digits
    prices: npt.NDArray[np.uint8]  # the price path: one row per step, each as wide as the template's price


def template(market: Market, symbol: str, rng: random.Random) -> Template:
    """`symbol`'s next ticker event as the simulator encodes it, framed; a price path that keeps the frame's length."""
    event = market.tick(symbol, TEMPLATE_MS)
    state = market.states[symbol]
    payload = f'{{"stream":"{symbol.lower()}@ticker","data":{encode(event)}}}'.encode()
    frame = Frame(Opcode.TEXT, payload).serialize(mask=False)
    header = len(frame) - len(payload)
    stamp, opened = str(TEMPLATE_MS).encode(), str(TEMPLATE_MS - DAY_MS).encode()
    price = f"{state.price:.8f}".encode()
    e, c, o = (
        payload.index(key + digits) + len(key)
        for key, digits in ((b'"E":', stamp), (b'"C":', stamp), (b'"O":', opened))
    )
    price_at = payload.index(b'"c":"' + price + b'"') + 5
    path, value = [price], state.price
    while len(path) < PRICE_STEPS:  # the simulator's random walk; a step that would change the width is not taken
        step = value * math.exp(-0.5 * 0.0005**2 + 0.0005 * rng.gauss(0.0, 1.0))
        if len(f"{step:.8f}") == len(price):
            value = step
        path.append(f"{value:.8f}".encode())
    back_and_forth = path + path[-2:0:-1]
    prices = np.frombuffer(b"".join(back_and_forth), dtype=np.uint8).reshape(len(back_and_forth), len(price))
    return Template(frame, (header + e, header + c, header + o), header + price_at, prices)


@dataclass(frozen=True)
class Round:
    """One connection's frames (one per symbol) and, as numpy indices, where each round patches them: the send
    time's 13 digits (E and C of every frame; O, a day earlier) and the prices' digits: three indexed assignments
    per round cost about a tenth of a Python statement per frame and field."""

    buffer: bytearray
    view: npt.NDArray[np.uint8]  # over `buffer`
    stamps: npt.NDArray[np.intp]  # (2 x frames, 13)
    opened: npt.NDArray[np.intp]  # (frames, 13)
    price_at: npt.NDArray[np.intp]  # every price digit of the round
    prices: npt.NDArray[np.uint8]  # (steps, len(price_at)): step n's digits

    @classmethod
    def of(cls, templates: list[Template]) -> Round:
        buffer = bytearray(b"".join(t.frame for t in templates))
        bases = np.cumsum([0] + [len(t.frame) for t in templates])[:-1]
        digits = np.arange(13)
        stamps = np.array(
            [base + at for base, t in zip(bases, templates, strict=True) for at in t.stamps[:2]], dtype=np.intp
        )
        opened = np.array([base + t.stamps[2] for base, t in zip(bases, templates, strict=True)], dtype=np.intp)
        price_at = [
            np.arange(base + t.price_at, base + t.price_at + t.prices.shape[1])
            for base, t in zip(bases, templates, strict=True)
        ]
        return cls(
            buffer,
            np.frombuffer(buffer, dtype=np.uint8),
            stamps.reshape(-1, 1) + digits,
            opened.reshape(-1, 1) + digits,
            np.concatenate(price_at) if price_at else np.zeros(0, dtype=np.intp),
            np.concatenate([t.prices for t in templates], axis=1) if templates else np.zeros((1, 0), dtype=np.uint8),
        )

    @property
    def frames(self) -> int:
        return len(self.opened)

    def patch(self, number: int, stamp: npt.NDArray[np.uint8], opened: npt.NDArray[np.uint8]) -> bytearray:
        """The round `number` sent at `stamp` (its digits; `opened` a day earlier)."""
        self.view[self.stamps] = stamp
        self.view[self.opened] = opened
        self.view[self.price_at] = self.prices[number % len(self.prices)]
        return self.buffer


@dataclass(eq=False)
class Client:
    sock: socket.socket
    protocol: ServerProtocol
    symbols: list[str] = field(default_factory=list)  # upper case, in subscription order
    round: Round = field(default_factory=lambda: Round.of([]))
    lock: threading.Lock = field(default_factory=threading.Lock)  # the socket's writes and the protocol's state
    open: bool = True
    ping_sent_at: float = 0.0
    heard_at: float = field(default_factory=time.monotonic)  # anything received (a pong, a request)
    sent: int = 0
    rounds: int = 0


class LoadGen:
    def __init__(self, options: LoadGenOptions) -> None:
        self.options = options
        self.clients: list[Client] = []
        self.sent = 0  # data frames written
        self.rounds = 0
        self.pongs = 0
        self._market = Market([], seed=options.seed)  # the simulator's start prices for the same symbols
        self._rng = random.Random(options.seed)  # a price path, not a secret
        self._templates: dict[str, Template] = {}
        self._templates_lock = threading.Lock()  # clients subscribe on their own threads
        self._clients_lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.create_server((options.host, options.port), backlog=128)
        self._threads = [
            threading.Thread(target=self._accept, name="loadgen-accept", daemon=True),
            threading.Thread(target=self._send, name="loadgen-send", daemon=True),
        ]
        self._last_stamp = 0

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    @property
    def url(self) -> str:
        return f"ws://{self.options.host}:{self.port}"

    @property
    def rest_url(self) -> str:
        return f"http://{self.options.host}:{self.port}"

    def start(self) -> LoadGen:
        for thread in self._threads:
            thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        for thread in self._threads:
            thread.join(10)
        with self._clients_lock:
            clients = list(self.clients)
        for client in clients:
            self._drop(client, close_code=1001)

    def __enter__(self) -> LoadGen:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- connections --------------------------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(sock,), name="loadgen-client", daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(SEND_TIMEOUT)
        protocol = ServerProtocol(max_size=1 << 16)
        request = self._handshake(sock, protocol)
        if request is None:
            return
        client = Client(sock, protocol)
        self._subscribe(client, parse_qs(urlsplit(request.path).query).get("streams", [""])[0].split("/"))
        with self._clients_lock:
            self.clients.append(client)
        self._read(client)

    def _handshake(self, sock: socket.socket, protocol: ServerProtocol) -> Request | None:
        """The WebSocket handshake of a /stream request (returned), or a REST answer and the socket closed (None)."""
        request: Request | None = None
        with contextlib.suppress(OSError):
            while request is None:
                data = sock.recv(READ_SIZE)
                if not data:
                    break
                protocol.receive_data(data)
                request = next((e for e in protocol.events_received() if isinstance(e, Request)), None)
        if request is None:
            sock.close()
            return None
        path = urlsplit(request.path).path
        if path == "/stream":
            response = protocol.accept(request)
        elif path == "/api/v3/time":
            response = self._json(protocol, 200, {"serverTime": time.time_ns() // 1_000_000})
        elif path == "/api/v3/ping":
            response = self._json(protocol, 200, {})
        else:
            response = self._json(protocol, 404, {"code": -1, "msg": f"not served by the load generator: {path}"})
        protocol.send_response(response)
        with contextlib.suppress(OSError):
            sock.sendall(b"".join(protocol.data_to_send()))
        if protocol.state is State.OPEN:
            return request
        sock.close()
        return None

    @staticmethod
    def _json(protocol: ServerProtocol, status: int, body: object) -> Response:
        response = protocol.reject(status, orjson.dumps(body).decode())
        response.headers["Content-Type"] = "application/json"
        return response

    def _read(self, client: Client) -> None:
        """Incoming frames: pongs, requests, the client's close; until the connection ends."""
        while client.open and not self._stop.is_set():
            try:
                data = client.sock.recv(READ_SIZE)
            except TimeoutError:
                continue
            except OSError:
                break
            with client.lock:
                if data:
                    client.protocol.receive_data(data)
                else:
                    client.protocol.receive_eof()
                client.heard_at = time.monotonic()
                replies = []
                for event in client.protocol.events_received():
                    if isinstance(event, Frame) and event.opcode is Opcode.PONG:
                        self.pongs += 1
                    elif isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                        replies.append(self._request(client, bytes(event.data)))
                for reply in replies:
                    client.protocol.send_text(reply)
                ok = self._flush(client)
                if not data or not ok or client.protocol.state is not State.OPEN:
                    break
        self._drop(client)

    def _request(self, client: Client, text: bytes) -> bytes:
        try:
            request = orjson.loads(text)
            method, params, request_id = request["method"], request.get("params", []), request.get("id")
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            return orjson.dumps({"error": {"code": 3, "msg": "Invalid JSON"}, "id": None})
        if method == "SUBSCRIBE":
            self._subscribe(client, params)
        elif method == "UNSUBSCRIBE":
            gone = {s.split("@")[0].upper() for s in params if s.endswith("@ticker")}
            self._rebuild(client, [s for s in client.symbols if s not in gone])
        else:
            msg = f"Invalid request: the load generator serves SUBSCRIBE and UNSUBSCRIBE, not {method}"
            return orjson.dumps({"error": {"code": 2, "msg": msg}, "id": request_id})
        return orjson.dumps({"result": None, "id": request_id})

    def _subscribe(self, client: Client, streams: list[str]) -> None:
        new = [s.split("@")[0].upper() for s in streams if s.endswith("@ticker")]  # the rest stay silent
        self._rebuild(client, list(dict.fromkeys(client.symbols + new)))

    def _rebuild(self, client: Client, symbols: list[str]) -> None:
        """The client's round for `symbols` (its lock held or not yet shared)."""
        templates = []
        for symbol in symbols:
            with self._templates_lock:
                item = self._templates.get(symbol)
                if item is None:
                    item = self._templates[symbol] = template(self._market, self._market.add(symbol), self._rng)
            templates.append(item)
        client.symbols, client.round = symbols, Round.of(templates)

    def _flush(self, client: Client) -> bool:
        """Write what the protocol has to send (its lock held); False if the socket failed."""
        try:
            for chunk in client.protocol.data_to_send():
                if chunk:
                    client.sock.sendall(chunk)
        except OSError:
            return False
        return True

    def _drop(self, client: Client, close_code: int | None = None) -> None:
        with client.lock:
            if not client.open:
                return
            client.open = False
            if close_code is not None and client.protocol.state is State.OPEN:
                client.protocol.send_close(close_code, "load generator stopping")
                self._flush(client)
        with contextlib.suppress(OSError):
            client.sock.shutdown(socket.SHUT_RDWR)
        client.sock.close()
        with self._clients_lock, contextlib.suppress(ValueError):
            self.clients.remove(client)

    # -- sending ------------------------------------------------------------------------------------------------
    def _send(self) -> None:
        period = 1.0 / self.options.rate
        next_round = time.monotonic()
        for number in itertools.count():
            if self._stop.is_set():
                return
            with self._clients_lock:
                clients = list(self.clients)
            # Strictly later than the previous round: (symbol, E) identifies an update, as on the exchange.
            self._last_stamp = max(time.time_ns() // 1_000_000, self._last_stamp + 1)
            stamp = np.frombuffer(str(self._last_stamp).encode(), dtype=np.uint8)
            opened = np.frombuffer(str(self._last_stamp - DAY_MS).encode(), dtype=np.uint8)
            for client in clients:
                self._send_round(client, number, stamp, opened)
            self.rounds += 1
            self._ping(clients)
            next_round += period
            delay = next_round - time.monotonic()
            if delay < -1.0:  # behind by more than a second (the clients do not keep up): no burst to catch up
                next_round = time.monotonic()
            elif delay > 0:
                self._stop.wait(delay)

    def _send_round(
        self, client: Client, number: int, stamp: npt.NDArray[np.uint8], opened: npt.NDArray[np.uint8]
    ) -> None:
        with client.lock:
            frames = client.round.frames
            if not client.open or not frames or client.rounds == self.options.max_rounds:
                return
            try:
                client.sock.sendall(client.round.patch(number, stamp, opened))
            except OSError:  # gone, or took nothing for SEND_TIMEOUT s (the frame may be cut: the connection is done)
                failed = True
            else:
                failed = False
                client.sent += frames
                client.rounds += 1
                self.sent += frames
        if failed:
            self._drop(client)

    def _ping(self, clients: list[Client]) -> None:
        now = time.monotonic()
        for client in clients:
            if now - client.heard_at > self.options.ping_timeout:
                self._drop(client, close_code=1011)  # Binance: no pong within a minute
                continue
            if now - client.ping_sent_at < self.options.ping_interval:
                continue
            with client.lock:
                if client.open and client.protocol.state is State.OPEN:
                    client.ping_sent_at = now
                    client.protocol.send_ping(b"")
                    self._flush(client)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.loadgen", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1.0, help="updates per second of each subscribed symbol")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free one")
    parser.add_argument("--ping-interval", type=float, default=20.0)
    parser.add_argument("--max-rounds", type=int)
    args = parser.parse_args(argv)
    if args.rate <= 0:
        parser.error("--rate must be above 0")
    options = LoadGenOptions(
        rate=args.rate, host=args.host, port=args.port, ping_interval=args.ping_interval, max_rounds=args.max_rounds
    )
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, request_stop)
    with LoadGen(options) as generator:
        print(f"READY {generator.url} {generator.rest_url}", flush=True)
        stop.wait()
        print(f"STOPPED frames={generator.sent} rounds={generator.rounds}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
