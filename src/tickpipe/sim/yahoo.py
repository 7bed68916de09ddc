"""A simulated Yahoo Finance streamer: `/?version=2`, JSON subscribe messages, base64 protobuf PricingData frames.

A client sends `{"subscribe": ["AAPL", "BTC-USD"]}` (and again every ~15 s as a heartbeat, as yfinance does; a
repeat changes nothing) or `{"unsubscribe": [...]}`; the server sends `{"type": "pricing", "message": <base64>}` for
each update of a subscribed symbol. Stocks are quiet while their market is closed; crypto pairs (`*-USD`) trade
around the clock. Test controls (the simulator's own, over HTTP on the same port): `/sim/market?open=0|1`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from tickpipe.sim.market import START_PRICES
from tickpipe.yahoo_pricing import REGULAR_MARKET, encode_frame

QUOTE_TYPES = {"equity": 8, "index": 9, "currency": 14, "crypto": 41}


def quote_type(symbol: str) -> int:
    if symbol.startswith("^"):
        return QUOTE_TYPES["index"]
    if symbol.endswith("=X"):
        return QUOTE_TYPES["currency"]
    if symbol.endswith("-USD"):
        return QUOTE_TYPES["crypto"]
    return QUOTE_TYPES["equity"]


@dataclass
class YahooOptions:
    rate: float = 1.0  # updates per second per subscribed symbol while its market is open
    seed: int = 42
    market_open: bool = True
    malformed_every: int = 0  # a frame that is not a PricingData after every N updates (0: never)
    host: str = "127.0.0.1"
    port: int = 0


@dataclass(eq=False)
class _Client:
    connection: ServerConnection
    symbols: set[str] = field(default_factory=set)
    subscribe_messages: int = 0


class YahooSim:
    def __init__(self, options: YahooOptions) -> None:
        self.options = options
        self.clients: set[_Client] = set()
        self.prices: dict[str, float] = {}
        self.day_volume: dict[str, int] = {}
        self.sent = 0
        self._rng = random.Random(options.seed)  # noqa: S311 - a reproducible price path
        self._server: Server | None = None
        self._publisher: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        assert self._server is not None  # noqa: S101 - started first
        port = self._server.sockets[0].getsockname()[1]
        return f"ws://{self.options.host}:{port}/?version=2"

    async def start(self) -> None:
        self._server = await serve(self._handle, self.options.host, self.options.port, process_request=self._control)
        self._publisher = asyncio.create_task(self._publish_loop())

    async def close(self) -> None:
        if self._publisher:
            self._publisher.cancel()
        if self._server:
            self._server.close()
            await self._server.wait_closed()

    def _control(self, connection: ServerConnection, request: Request) -> Response | None:
        if not request.path.startswith("/sim/market"):
            return None
        self.options.market_open = "open=1" in request.path
        return connection.respond(200, "{}")

    async def _handle(self, connection: ServerConnection) -> None:
        client = _Client(connection)
        self.clients.add(client)
        try:
            async for message in connection:
                self._on_message(client, message)
        except ConnectionClosed:
            pass
        finally:
            self.clients.discard(client)

    def _on_message(self, client: _Client, message: str | bytes) -> None:
        try:
            request: Any = json.loads(message)
        except ValueError:
            return  # the streamer ignores what it does not understand
        if not isinstance(request, dict):
            return
        for symbol in request.get("subscribe") or []:
            client.symbols.add(str(symbol))
        for symbol in request.get("unsubscribe") or []:
            client.symbols.discard(str(symbol))
        client.subscribe_messages += 1

    def _trading(self, symbol: str) -> bool:
        return self.options.market_open or quote_type(symbol) == QUOTE_TYPES["crypto"]

    async def _publish_loop(self) -> None:
        period = 1.0 / self.options.rate
        while True:
            for symbol in sorted({s for client in self.clients for s in client.symbols}):
                if self._trading(symbol):
                    await self._publish(symbol)
            await asyncio.sleep(period)

    async def _publish(self, symbol: str) -> None:
        base = symbol.split("-", maxsplit=1)[0] + "USDT"
        price = self.prices.get(symbol) or START_PRICES.get(base) or round(10 ** self._rng.uniform(0, 3), 2)
        price *= math.exp(self._rng.gauss(0.0, 0.0005))
        self.prices[symbol] = price
        self.day_volume[symbol] = self.day_volume.get(symbol, 0) + self._rng.randint(1, 500)
        frame = encode_frame(
            id=symbol,
            price=price,
            time=time.time_ns() // 1_000_000,
            exchange="NMS",
            quote_type=quote_type(symbol),
            market_hours=REGULAR_MARKET,
            day_volume=self.day_volume[symbol],
            price_hint=2,
        )
        for client in list(self.clients):
            if symbol not in client.symbols:
                continue
            with contextlib.suppress(ConnectionClosed):
                await client.connection.send(frame)
                self.sent += 1
                every = self.options.malformed_every
                if every and self.sent % every == 0:
                    await client.connection.send(json.dumps({"type": "pricing", "message": "bm90IHByb3RvYnVm!"}))
