"""The simulated exchange's WebSocket server: Binance's URLs, payloads and connection behaviour.

    /ws/<stream>[/<stream>...]      raw events (one stream per path segment)
    /stream?streams=<a>/<b>         combined: each event wrapped as {"stream": ..., "data": ...}
    streams <symbol>@ticker (24hrTicker, every update) and <symbol>@kline_1m (the open candle every ~2 s, the
    closed one when its minute ends); REST /api/v3/... on the same port (sim/rest.py: klines, exchangeInfo)
    SUBSCRIBE / UNSUBSCRIBE / LIST_SUBSCRIPTIONS / SET_PROPERTY / GET_PROPERTY ("combined") on either, answered
    {"result": ..., "id": n} or {"error": {"code", "msg"}, "id": n} with Binance's documented texts; at most 5
    incoming messages per second per connection, else disconnected (Binance counts pings and pongs too; the
    simulator counts requests only: websockets answers control frames before they reach it)

The server pings every `ping_interval` s and drops a client that has not answered within `ping_timeout` s;
it closes every connection after `connection_lifetime` s (Binance: 24 h), optionally announcing it with a
`serverShutdown` event `shutdown_notice` s before. Tests drive drops, shutdown notices and silences directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tickpipe.logs import get_logger
from tickpipe.sim.candles import Candle, CandleBook, kline_event
from tickpipe.sim.market import Market, encode
from tickpipe.sim.rest import RestApi

log = get_logger("tickpipe.sim")
MAX_STREAMS = 1024
MAX_INCOMING_PER_SECOND = 5
# What Binance answers instead of the WebSocket handshake: 451 from a restricted location (its terms' eligibility
# clause), 403 when its web application firewall blocks the client.
REFUSALS = {
    451: "Service unavailable from a restricted location according to 'b. Eligibility' in "
    "https://www.binance.com/en/terms. Please contact customer service if you believe you received this message in "
    "error.",
    403: "Forbidden: the request was blocked by the web application firewall.",
}
MALFORMED = [
    "this is not JSON",
    '{"e":"24hrTicker","E":1,"s":"BTCUSDT","c":"not-a-number","v":"1.0"}',
    '{"e":"24hrTicker","E":1,"s":"BTCUSDT","v":"1.0"}',
    '{"e":"24hrTicker","E":1,"s":"BTCUSDT","c":"-5.0","v":"1.0"}',
    '{"e":"somethingElse","E":1}',
]


@dataclass
class SimOptions:
    symbols: list[str]
    seed: int = 42
    rate: float = 1.0  # updates per second per symbol (Binance's @ticker: 1)
    host: str = "127.0.0.1"
    port: int = 0
    ping_interval: float = 20.0
    ping_timeout: float = 60.0
    connection_lifetime: float | None = None  # seconds; Binance: 24 h
    shutdown_notice: float | None = None  # seconds before the lifetime close; None: no serverShutdown event
    malformed_every: int = 0  # send one malformed frame after every N events (0: never)
    max_ticks: int | None = None  # stop publishing after this many events in total
    record: Path | None = None  # JSON lines of every event sent to at least one client
    refuse_status: int | None = None  # answer every handshake with this HTTP status (451: restricted location)
    clock_speed: float = 1.0  # simulated ms per real ms: 60 makes a candle minute last one real second
    kline_update_interval: float = 2.0  # real seconds between pushes of a symbol's open candle
    rest_weight_limit: int = 6000  # REST request weight per minute before 429 (Binance: 6000 per IP)


@dataclass(eq=False)
class Client:
    connection: ServerConnection
    combined: bool
    streams: set[str] = field(default_factory=set)
    sent: int = 0
    incoming: list[float] = field(default_factory=list)


METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")


def _valid_id(value: object) -> bool:
    """Binance accepts a 64-bit signed integer, an alphanumeric string of at most 36 characters, or null."""
    if value is None:
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    return isinstance(value, str) and len(value) <= 36 and value.isascii() and value.isalnum()


def _invalid(request: object) -> str | None:
    """What is wrong with a live request, in the words of Binance's documented errors; None if nothing."""
    if not isinstance(request, dict):
        return "expected a JSON object"
    method, params = request.get("method"), request.get("params", [])
    checks = (
        ("method" not in request, "missing field `method`"),
        (method not in METHODS, f"unknown variant `{method}`, expected one of {', '.join(f'`{m}`' for m in METHODS)}"),
        # Binance's text, although it takes strings and null too:
        ("id" not in request or not _valid_id(request.get("id")), "request ID must be an unsigned integer"),
        (not isinstance(params, list), "params must be an array"),
        (
            method in ("SUBSCRIBE", "UNSUBSCRIBE")
            and isinstance(params, list)
            and not all(isinstance(p, str) for p in params),
            "stream names must be strings",
        ),
    )
    return next((problem for failed, problem in checks if failed), None)


class SimExchange:
    def __init__(self, options: SimOptions) -> None:
        self.options = options
        self.market = Market(options.symbols, seed=options.seed)
        self.books = {symbol: CandleBook(symbol) for symbol in self.market.states}
        self.statuses = dict.fromkeys(self.market.states, "TRADING")
        self.rest = RestApi(
            self.books, self.now_ms, self.statuses, options.rest_weight_limit, clock_speed=options.clock_speed
        )
        self._origin = (time.time_ns() // 1_000_000, time.monotonic())
        self._kline_pushed_at: dict[str, float] = {}
        self.clients: set[Client] = set()
        self.by_stream: dict[str, set[Client]] = defaultdict(set)
        self.published = 0
        self.silent_until = 0.0
        self._server: Server | None = None
        self._record: IO[str] | None = None
        self._publisher: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the exchange is not started")
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        return f"ws://{self.options.host}:{self.port}"

    @property
    def rest_url(self) -> str:
        return f"http://{self.options.host}:{self.port}"

    def now_ms(self) -> int:
        """The exchange's clock: wall time, running `clock_speed` times as fast since the start."""
        origin_ms, origin_monotonic = self._origin
        return origin_ms + int((time.monotonic() - origin_monotonic) * 1000 * self.options.clock_speed)

    async def start(self) -> None:
        if self.options.record:
            self._record = self.options.record.open("a", buffering=1 << 16)
        self._server = await serve(
            self._handle,
            self.options.host,
            self.options.port,
            ping_interval=self.options.ping_interval,
            ping_timeout=self.options.ping_timeout,
            max_queue=64,
            process_request=self._process_request,
        )
        self._publisher = asyncio.create_task(self._publish_loop())

    async def close(self) -> None:
        if self._publisher:
            self._publisher.cancel()
        if self._server:
            self._server.close()
            await self._server.wait_closed()
        if self._record:
            self._record.close()

    def list_symbol(self, symbol: str) -> None:
        """A listing: the symbol starts trading (and appears in exchangeInfo as TRADING)."""
        upper = self.market.add(symbol)
        self.books.setdefault(upper, CandleBook(upper))
        self.statuses[upper] = "TRADING"

    def delist_symbol(self, symbol: str) -> None:
        """A delisting: the symbol stops trading; exchangeInfo shows it as BREAK, as Binance does."""
        self.statuses[symbol.upper()] = "BREAK"

    def _control(self, target: str) -> int:
        parts = urlsplit(target)
        symbol = parse_qs(parts.query).get("symbol", [""])[0]
        if not symbol:
            return 400
        if parts.path == "/sim/list":
            self.list_symbol(symbol)
        elif parts.path == "/sim/delist":
            self.delist_symbol(symbol)
        else:
            return 404
        return 200

    # -- connections --------------------------------------------------------------------------------------------
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """REST calls and refusals answered over HTTP; everything else goes on to the WebSocket handshake."""
        if request.path.startswith("/api/"):
            answer = self.rest.handle(request.path)
            status, body, headers = answer.status, answer.encoded().decode(), answer.headers
        elif request.path.startswith("/sim/"):  # the simulator's own controls, for tests (not Binance's)
            status, body, headers = self._control(request.path), "{}", {}
        elif self.options.refuse_status:
            status = self.options.refuse_status
            body, headers = json.dumps({"code": 0, "msg": REFUSALS.get(status, "refused")}), {}
        else:
            return None
        response = connection.respond(status, body)
        response.headers["Content-Type"] = "application/json"
        for name, value in headers.items():
            response.headers[name] = value
        return response

    async def _handle(self, connection: ServerConnection) -> None:
        request = connection.request
        path = urlsplit(request.path if request else "/")
        if path.path.startswith("/stream"):
            client = Client(connection, combined=True)
            requested = parse_qs(path.query).get("streams", [""])[0].split("/")
        elif path.path.startswith("/ws"):
            client = Client(connection, combined=False)
            requested = path.path.removeprefix("/ws").strip("/").split("/")
        else:
            await connection.close(1008, "unknown path: use /ws/<stream> or /stream?streams=...")
            return
        streams = [s for s in requested if s]
        if len(streams) > MAX_STREAMS:
            await connection.close(1008, f"too many streams: {len(streams)} > {MAX_STREAMS}")
            return
        self._subscribe(client, streams)
        self.clients.add(client)
        lifetime = asyncio.create_task(self._lifetime(client)) if self.options.connection_lifetime else None
        log.info("client_connected", streams=len(streams), combined=client.combined, clients=len(self.clients))
        try:
            async for message in connection:
                await self._on_message(client, message)
        except ConnectionClosed:
            pass
        finally:
            if lifetime:
                lifetime.cancel()
            self.clients.discard(client)
            for stream in client.streams:
                self.by_stream[stream].discard(client)
            log.info("client_disconnected", sent=client.sent, clients=len(self.clients))

    def _subscribe(self, client: Client, streams: list[str]) -> None:
        for stream in streams:
            client.streams.add(stream)
            self.by_stream[stream].add(client)

    async def _on_message(self, client: Client, message: str | bytes) -> None:
        now = time.monotonic()
        client.incoming = [t for t in client.incoming if now - t < 1.0] + [now]
        if len(client.incoming) > MAX_INCOMING_PER_SECOND:
            await client.connection.close(1008, "too many messages: at most 5 per second")
            return
        try:
            request = json.loads(message)
        except ValueError as error:
            await self._refuse(client, None, 3, f"Invalid JSON: {error}")
            return
        problem = _invalid(request)
        request_id = request.get("id") if isinstance(request, dict) else None
        if problem:
            await self._refuse(client, request_id if _valid_id(request_id) else None, 2, f"Invalid request: {problem}")
            return
        method, params = request["method"], request.get("params", [])
        result: Any = None
        if method == "SUBSCRIBE":
            if len(client.streams | set(params)) > MAX_STREAMS:
                await self._refuse(client, request_id, 2, f"Invalid request: too many streams (at most {MAX_STREAMS})")
                return
            self._subscribe(client, params)
        elif method == "UNSUBSCRIBE":
            for stream in params:
                client.streams.discard(stream)
                self.by_stream[stream].discard(client)
        elif method == "LIST_SUBSCRIPTIONS":
            result = sorted(client.streams)
        elif params[:1] != ["combined"]:  # SET_PROPERTY / GET_PROPERTY: `combined` is the only property
            await self._refuse(client, request_id, 0, "Unknown property")
            return
        elif method == "GET_PROPERTY":
            result = client.combined
        elif len(params) != 2 or not isinstance(params[1], bool):
            await self._refuse(client, request_id, 1, "Invalid value type: expected Boolean")
            return
        else:
            client.combined = params[1]
        await client.connection.send(json.dumps({"result": result, "id": request_id}))

    async def _refuse(self, client: Client, request_id: object, code: int, msg: str) -> None:
        with contextlib.suppress(ConnectionClosed):
            await client.connection.send(json.dumps({"error": {"code": code, "msg": msg}, "id": request_id}))

    async def _lifetime(self, client: Client) -> None:
        lifetime = self.options.connection_lifetime or 0.0
        notice = self.options.shutdown_notice
        if notice is not None and notice < lifetime:
            await asyncio.sleep(lifetime - notice)
            await self._send_shutdown(client)
            await asyncio.sleep(notice)
        else:
            await asyncio.sleep(lifetime)
        await client.connection.close(1000, "connection lifetime reached")

    async def _send_shutdown(self, client: Client) -> None:
        # Binance sends the notice on raw streams as the event itself and on combined streams wrapped like any
        # event, under the stream name `!serverShutdown`.
        event = encode({"e": "serverShutdown", "E": time.time_ns() // 1_000_000})
        frame = f'{{"stream":"!serverShutdown","data":{event}}}' if client.combined else event
        with contextlib.suppress(ConnectionClosed):
            await client.connection.send(frame)

    # -- publishing ---------------------------------------------------------------------------------------------
    async def _publish_loop(self) -> None:
        period = 1.0 / self.options.rate
        next_round = time.monotonic()
        while self.options.max_ticks is None or self.published < self.options.max_ticks:
            if time.monotonic() >= self.silent_until:
                for symbol in [s for s, status in self.statuses.items() if status == "TRADING"]:
                    await self._publish(symbol)
                    if self.options.max_ticks is not None and self.published >= self.options.max_ticks:
                        break
            if self._record:
                self._record.flush()
            next_round += period
            delay = next_round - time.monotonic()
            if delay < -1.0:  # fell behind (more symbols x rate than one core can send): don't burst to catch up
                next_round = time.monotonic()
            await asyncio.sleep(max(0.0, delay))

    async def _publish(self, symbol: str) -> None:
        # The market trades whether anyone listens or not: a client that was away finds the minutes it missed in
        # the REST klines.
        event = self.market.tick(symbol, self.now_ms())
        state = self.market.states[symbol]
        closed = self.books[symbol].trade(state.last_event_ms, state.price, state.last_quantity, state.trades)
        await self._publish_klines(symbol, closed)
        stream = f"{symbol.lower()}@ticker"
        clients = list(self.by_stream.get(stream, ()))
        if not clients:
            return  # like the exchange: an update nobody subscribed to is not recorded as sent
        raw, combined = encode(event), None
        delivered = False
        for client in clients:
            if client.combined:
                combined = combined or f'{{"stream":"{stream}","data":{raw}}}'
            try:
                await client.connection.send(combined if client.combined else raw)  # type: ignore[arg-type]
            except ConnectionClosed:
                continue
            delivered = True
            client.sent += 1
            every = self.options.malformed_every
            if every and client.sent % every == 0:
                with contextlib.suppress(ConnectionClosed):
                    await client.connection.send(MALFORMED[(client.sent // every) % len(MALFORMED)])
        if delivered:
            self.published += 1
            if self._record:
                self._record.write(f'{{"s":"{symbol}","E":{event["E"]},"c":"{event["c"]}","v":"{event["v"]}"}}\n')

    async def _publish_klines(self, symbol: str, closed: list[Candle]) -> None:
        stream = f"{symbol.lower()}@kline_1m"
        clients = list(self.by_stream.get(stream, ()))
        if not clients:
            return
        now = time.monotonic()
        events = [kline_event(candle, True, self.now_ms()) for candle in closed]
        current = self.books[symbol].current
        if current is not None and now - self._kline_pushed_at.get(symbol, 0.0) >= self.options.kline_update_interval:
            events.append(kline_event(current, False, self.now_ms()))
            self._kline_pushed_at[symbol] = now
        for event in events:
            raw = encode(event)
            for client in clients:
                with contextlib.suppress(ConnectionClosed):
                    await client.connection.send(f'{{"stream":"{stream}","data":{raw}}}' if client.combined else raw)

    # -- test controls ------------------------------------------------------------------------------------------
    async def drop_connections(self) -> None:
        """Close every connection abruptly (no close frame): as a network failure looks to the client."""
        for client in list(self.clients):
            client.connection.transport.abort()

    async def announce_shutdown(self) -> None:
        for client in list(self.clients):
            await self._send_shutdown(client)

    async def go_silent(self, seconds: float) -> None:
        """Keep connections open but publish nothing (a stale connection)."""
        self.silent_until = time.monotonic() + seconds


class SimThread:
    """The exchange on its own event loop in a background thread: for tests and benchmarks in one process."""

    def __init__(self, options: SimOptions) -> None:
        self.exchange = SimExchange(options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="sim-exchange", daemon=True)

    def __enter__(self) -> SimExchange:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.exchange.start(), self._loop).result(10)
        return self.exchange

    def call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.exchange.close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
