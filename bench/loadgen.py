"""The benchmark's load generator: Binance's combined @ticker and @kline_1m streams at a fixed rate, for a fraction
of the simulator's CPU.

What it serves is what the ingestor uses, nothing more:

    /stream?streams=<symbol>@ticker/...     combined stream: {"stream": "<symbol>@ticker", "data": <24hrTicker>},
                                            the simulator's payload (tickpipe.sim.market.ticker_event) byte for byte
                                            in shape, `E` (and `C`, `O`) the real send time in ms, `c` a price path
    <symbol>@kline_1m on the same            {"stream": "<symbol>@kline_1m", "data": <kline event>}, the simulator's
      connections                            shape (tickpipe.sim.candles.kline_event): the open candle every
                                            `kline_interval` s (Binance: ~2 s) and the final one (`"x":true`) when
                                            the minute of the send clock ends, before that round's tickers
    SUBSCRIBE / UNSUBSCRIBE                  answered {"result": null, "id": n}; other methods refused
    pings                                    every `ping_interval` s; a client silent for `ping_timeout` s is dropped
    GET /api/v3/time, /api/v3/ping           Binance's answers; the time is the send clock's (the newest round's)
    GET /api/v3/klines                       symbol, interval=1m, startTime, endTime, limit: the closed candles it
                                            streamed (every minute since it started, the first one partial, and
                                            `history_minutes` before it; none else), equal to the final kline
                                            frames; weight 2
    every REST answer                        `X-MBX-USED-WEIGHT-1M` (weight used this minute); over Binance's 6000 a
                                            429 with `Retry-After` (the seconds to the minute's end). Other paths 404.
    GET /bench/rate?perSymbol=<r>            not Binance's: the benchmark's control. From the next round on, `r`
                                            rounds a second; answers {"perSymbol": r}. A benchmark step raises the
                                            rate on a pipeline started at a low one, so it measures the steady state
                                            at its rate, not the catch-up of a start-up backlog

The candles are the tickers': a minute's candle of a symbol covers the rounds sent in that minute (every round is
one trade per symbol; trade ids are the round numbers): open/close the prices of its first/last round, high/low the
extremes of the prices between, `n` the rounds, `v` `n` times a per-symbol trade quantity (a power of ten near 100
USDT a trade), `q` the sum of price x quantity, `V`/`Q` half of them. Minutes are the send clock's (`clock_speed`
makes them pass faster, for tests).

Why it is cheap: each connection's frames (one per subscribed symbol) are encoded once, with fixed-width fields;
a round patches the send time and the next price into them in place and writes the whole round with one socket
send per connection. The kline frames are patched the same way from numpy arrays: prices are the price path's
pre-encoded digits, the integer and volume fields fixed-width slots right-aligned with JSON whitespace before the
value (`"n":      42`, `"v":    "1.50000000"`). The simulator builds every event in Python (a random walk, candle
books, orjson, one websockets send each). Rounds run at `rate` per second, all symbols in each, as the simulator's;
a round's send time is strictly later than the previous round's, so (symbol, E) stays unique.

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
from collections import deque
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
MINUTE_MS = 60_000
KLINE_INTERVAL = 2.0  # Binance pushes a kline_1m stream's open candle about every 2 s
HISTORY_MINUTES = 7 * 24 * 60  # closed minutes kept for GET /api/v3/klines (gap repair looks back at most a day)
# Binance's REST weights and limit per IP and minute (tickpipe.ingestor.rest, tickpipe.sim.rest).
WEIGHTS = {"/api/v3/ping": 1, "/api/v3/time": 1, "/api/v3/klines": 2}
RATE_PATH = "/bench/rate"
WEIGHT_LIMIT_PER_MINUTE = 6000
KLINES_LIMIT = 1000
# A kline frame's varying fields are fixed-width slots, right-aligned behind JSON whitespace: the integers (f, L, n)
# in INT_SLOT characters, the volumes (v, q, V, Q) as "digits.8 decimals" strings of up to VOLUME_DIGITS digits.
INT_SLOT = 12
DECIMALS = 8
UNIT = 100_000_000  # volumes are integers of 1e-8 (10**DECIMALS)
VOLUME_DIGITS = 10
VOLUME_SLOT = VOLUME_DIGITS + DECIMALS + 3  # with the point and the quotes
_WHOLE_POWERS = 10 ** np.arange(VOLUME_DIGITS - 1, -1, -1, dtype=np.int64)
_FRACTION_POWERS = 10 ** np.arange(DECIMALS - 1, -1, -1, dtype=np.int64)


@dataclass(frozen=True)
class LoadGenOptions:
    rate: float = 1.0  # rounds per second: updates per second of each subscribed symbol (Binance's @ticker: 1)
    host: str = "127.0.0.1"
    port: int = 0
    ping_interval: float = 20.0  # Binance: 20 s
    ping_timeout: float = 60.0  # Binance: a pong within a minute
    max_rounds: int | None = None  # each connection is sent this many rounds, then only pings (tests count on it)
    seed: int = 7
    kline_interval: float = KLINE_INTERVAL  # real seconds between pushes of the open candles
    # Closed minutes before the start that GET /api/v3/klines answers too (as if rounds had been sent at `rate`):
    # the ingestor's start-up repair fetches them, so the candle job's indicators start warm.
    history_minutes: int = 0
    clock_speed: float = 1.0  # the send clock runs this much faster than real time (tests: minutes in seconds)


@dataclass
class Template:
    """One symbol's combined-stream frame, serialized, and where its varying fields are."""

    frame: bytes
    stamps: tuple[int, int, int]  # offsets of E, C (send time) and O (send time - 24 h), 13 digits each
    price_at: int  # offset of `c`'s digits
    prices: npt.NDArray[np.uint8]  # the price path: one row per step, each as wide as the template's price
    values: npt.NDArray[np.float64]  # the same path as numbers (the candles' extremes and quote volume)
    quantity: int  # one trade's base quantity, in 1e-8 units: every round is one trade of it


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
    values = np.array([float(step) for step in back_and_forth])
    return Template(
        frame, (header + e, header + c, header + o), header + price_at, prices, values, trade_quantity(state.price)
    )


def trade_quantity(price: float) -> int:
    """One trade's base quantity in 1e-8 units: the power of ten nearest to 100 USDT at `price`."""
    exponent = min(6, max(-4, round(math.log10(100.0 / price))))
    return round(math.pow(10.0, exponent) * UNIT)


# -- candles --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Minute:
    """A minute of the send clock and the rounds sent in it (so far): every symbol's candle of it."""

    open_ms: int
    first: int  # the number of its first round
    last: int  # of its last round

    @property
    def trades(self) -> int:
        return self.last - self.first + 1


@dataclass(frozen=True)
class CandleNumbers:
    """Candles of several symbols over one minute: price steps (of the path) and volumes in 1e-8 units."""

    open_step: int  # the same for every symbol: all are sent in every round
    close_step: int
    high_steps: npt.NDArray[np.intp]  # per symbol
    low_steps: npt.NDArray[np.intp]
    volume: npt.NDArray[np.int64]
    quote_volume: npt.NDArray[np.int64]


def candle_numbers(values: npt.NDArray[np.float64], quantities: npt.NDArray[np.int64], minute: Minute) -> CandleNumbers:
    """The candles of the symbols whose price paths are `values` (symbols x steps) over `minute`'s rounds: round r
    sent step r % steps (Round.patch)."""
    steps = values.shape[1]
    cycles, rest = divmod(minute.trades, steps)
    # How often each step was sent: every step once per whole cycle, then `rest` steps from the first round's.
    counts = cycles + ((np.arange(steps) - minute.first % steps) % steps < rest)
    sent = counts > 0
    high = np.where(sent, values, -np.inf).argmax(axis=1)
    low = np.where(sent, values, np.inf).argmin(axis=1)
    # Not `values @ counts`: a BLAS call, whose threads cost milliseconds on a busy machine.
    quote = np.rint((values * counts).sum(axis=1) * quantities).astype(np.int64)
    return CandleNumbers(minute.first % steps, minute.last % steps, high, low, quantities * minute.trades, quote)


def decimal(units: int) -> str:
    """A volume in 1e-8 units as Binance writes it: `12.50000000`."""
    return f"{units // UNIT}.{units % UNIT:0{DECIMALS}d}"


def volume_slots(units: npt.NDArray[np.int64]) -> npt.NDArray[np.uint8]:
    """Each volume as its slot's bytes: blanks, then `"` + decimal(units) + `"` (one row per value)."""
    whole, fraction = np.divmod(units, UNIT)
    if whole.size and int(whole.max()) >= 10**VOLUME_DIGITS:
        raise ValueError(f"a volume above {VOLUME_DIGITS} digits: {int(whole.max())}")
    digits = 1 + (whole[:, None] >= _WHOLE_POWERS[:-1]).sum(axis=1)  # of the whole part
    quote_at = VOLUME_DIGITS - digits  # the opening quote's column; the digits follow it
    columns = np.arange(VOLUME_DIGITS + 1)
    whole_digits = np.zeros((len(units), VOLUME_DIGITS + 1), dtype=np.int64)
    whole_digits[:, 1:] = (whole[:, None] // _WHOLE_POWERS) % 10 + 48
    out = np.empty((len(units), VOLUME_SLOT), dtype=np.uint8)
    out[:, : VOLUME_DIGITS + 1] = np.where(
        columns > quote_at[:, None], whole_digits, np.where(columns == quote_at[:, None], 34, 32)
    )
    out[:, VOLUME_DIGITS + 1] = 46  # .
    out[:, VOLUME_DIGITS + 2 : -1] = (fraction[:, None] // _FRACTION_POWERS) % 10 + 48
    out[:, -1] = 34  # "
    return out


def int_slot(value: int) -> npt.NDArray[np.uint8]:
    return np.frombuffer(f"{value:>{INT_SLOT}}".encode(), dtype=np.uint8)


def rest_row(ticker: Template, minute: Minute) -> list[object]:
    """The symbol's closed candle of `minute` as a row of GET /api/v3/klines (tickpipe.sim.candles.Candle.rest_row)."""
    numbers = candle_numbers(ticker.values[None, :], np.array([ticker.quantity], dtype=np.int64), minute)

    def price(step: int) -> str:
        return bytes(ticker.prices[step]).decode()

    volume, quote = int(numbers.volume[0]), int(numbers.quote_volume[0])
    return [
        minute.open_ms,
        price(numbers.open_step),
        price(int(numbers.high_steps[0])),
        price(int(numbers.low_steps[0])),
        price(numbers.close_step),
        decimal(volume),
        minute.open_ms + MINUTE_MS - 1,
        decimal(quote),
        minute.trades,
        decimal(volume // 2),
        decimal(quote // 2),
        "0",
    ]


@dataclass(frozen=True)
class KlineTemplate:
    """One symbol's combined-stream kline frame, serialized, and where its varying fields are."""

    frame: bytes
    ticker: Template  # the symbol's price path and trade quantity
    stamps: tuple[int, int, int]  # offsets of E, t and T, 13 digits each
    ints: tuple[int, int, int]  # of the f, L and n slots
    closed_at: int  # of x: `false` or ` true`
    prices: tuple[int, int, int, int]  # of o, c, h and l's digits
    volumes: tuple[int, int, int, int]  # of the v, q, V and Q slots


def kline_template(ticker: Template, symbol: str) -> KlineTemplate:
    """`symbol`'s kline frame in the simulator's shape (tickpipe.sim.candles.kline_event), fields fixed-width."""
    stamp, price = str(TEMPLATE_MS), bytes(ticker.prices[0]).decode()
    number, volume = int_slot(0).tobytes().decode(), volume_slots(np.zeros(1, dtype=np.int64))[0].tobytes().decode()
    payload = (
        f'{{"stream":"{symbol.lower()}@kline_1m","data":{{"e":"kline","E":{stamp},"s":"{symbol}","k":{{'
        f'"t":{stamp},"T":{stamp},"s":"{symbol}","i":"1m","f":{number},"L":{number},"o":"{price}","c":"{price}",'
        f'"h":"{price}","l":"{price}","v":{volume},"n":{number},"x":false,"q":{volume},"V":{volume},"Q":{volume},'
        f'"B":"0"}}}}}}'
    ).encode()
    frame = Frame(Opcode.TEXT, payload).serialize(mask=False)
    header = len(frame) - len(payload)

    def at(key: str, skip: int = 0) -> int:
        return header + payload.index(f'"{key}":'.encode()) + len(key) + 3 + skip

    return KlineTemplate(
        frame,
        ticker,
        (at("E"), at("t"), at("T")),
        (at("f"), at("L"), at("n")),
        at("x"),
        (at("o", 1), at("c", 1), at("h", 1), at("l", 1)),
        (at("v"), at("q"), at("V"), at("Q")),
    )


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


@dataclass(frozen=True)
class KlineRound:
    """One connection's kline frames (one per symbol) and, as numpy indices, where a push patches them."""

    buffer: bytearray
    view: npt.NDArray[np.uint8]
    stamps: npt.NDArray[np.intp]  # (3, frames, 13): E, t, T
    ints: npt.NDArray[np.intp]  # (3, frames, INT_SLOT): f, L, n
    closed: npt.NDArray[np.intp]  # (frames, 5)
    prices: npt.NDArray[np.intp]  # (4, digits): o, c, h, l, every price digit of the round
    widths: npt.NDArray[np.intp]  # (frames,): each symbol's price width
    digits: npt.NDArray[np.uint8]  # (steps, digits): step n's price digits of every symbol
    values: npt.NDArray[np.float64]  # (frames, steps)
    quantities: npt.NDArray[np.int64]  # (frames,)
    volumes: npt.NDArray[np.intp]  # (4, frames, VOLUME_SLOT): v, q, V, Q

    @classmethod
    def of(cls, templates: list[KlineTemplate]) -> KlineRound:
        buffer = bytearray(b"".join(t.frame for t in templates))
        bases = np.cumsum([0] + [len(t.frame) for t in templates])[:-1].astype(np.intp)
        frames = len(templates)

        def slots(offsets: list[tuple[int, ...]], fields: int, width: int) -> npt.NDArray[np.intp]:
            starts = np.array(offsets, dtype=np.intp).reshape(frames, fields).T + bases  # (fields, frames)
            return starts[:, :, None] + np.arange(width)

        widths = np.array([t.ticker.prices.shape[1] for t in templates], dtype=np.intp)
        prices = [
            np.concatenate([np.arange(base + t.prices[field], base + t.prices[field] + width)
                            for base, t, width in zip(bases, templates, widths, strict=True)])
            if templates else np.zeros(0, dtype=np.intp)
            for field in range(4)
        ]  # fmt: skip
        steps = len(templates[0].ticker.prices) if templates else 1
        return cls(
            buffer,
            np.frombuffer(buffer, dtype=np.uint8),
            slots([t.stamps for t in templates], 3, 13),
            slots([t.ints for t in templates], 3, INT_SLOT),
            slots([(t.closed_at,) for t in templates], 1, 5)[0],
            np.stack(prices),
            widths,
            np.concatenate([t.ticker.prices for t in templates], axis=1)
            if templates
            else np.zeros((1, 0), dtype=np.uint8),
            np.stack([t.ticker.values for t in templates]) if templates else np.zeros((0, steps)),
            np.array([t.ticker.quantity for t in templates], dtype=np.int64),
            slots([t.volumes for t in templates], 4, VOLUME_SLOT),
        )

    @property
    def frames(self) -> int:
        return len(self.quantities)

    def patch(self, minute: Minute, stamp: npt.NDArray[np.uint8], closed: bool) -> bytearray:
        """The candles of `minute` so far (`closed`: its final update), sent at `stamp` (its digits)."""
        view = self.view
        if not self.frames:
            return self.buffer
        view[self.stamps[0]] = stamp
        view[self.stamps[1]] = np.frombuffer(str(minute.open_ms).encode(), dtype=np.uint8)
        view[self.stamps[2]] = np.frombuffer(str(minute.open_ms + MINUTE_MS - 1).encode(), dtype=np.uint8)
        for slot, value in zip(self.ints, (minute.first, minute.last, minute.trades), strict=True):
            view[slot] = int_slot(value)
        view[self.closed] = np.frombuffer(b" true" if closed else b"false", dtype=np.uint8)
        numbers = candle_numbers(self.values, self.quantities, minute)
        columns = np.arange(self.digits.shape[1])
        view[self.prices[0]] = self.digits[numbers.open_step]
        view[self.prices[1]] = self.digits[numbers.close_step]
        view[self.prices[2]] = self.digits[np.repeat(numbers.high_steps, self.widths), columns]
        view[self.prices[3]] = self.digits[np.repeat(numbers.low_steps, self.widths), columns]
        volume, quote = numbers.volume, numbers.quote_volume
        units = np.concatenate([volume, quote, volume // 2, quote // 2])  # v, q, V, Q: formatted in one go
        view[self.volumes] = volume_slots(units).reshape(self.volumes.shape)
        return self.buffer


@dataclass(eq=False)
class Client:
    sock: socket.socket
    protocol: ServerProtocol
    symbols: list[str] = field(default_factory=list)  # upper case, in subscription order
    round: Round = field(default_factory=lambda: Round.of([]))
    kline_symbols: list[str] = field(default_factory=list)  # of its @kline_1m streams
    klines: KlineRound = field(default_factory=lambda: KlineRound.of([]))
    lock: threading.Lock = field(default_factory=threading.Lock)  # the socket's writes and the protocol's state
    open: bool = True
    ping_sent_at: float = 0.0
    heard_at: float = field(default_factory=time.monotonic)  # anything received (a pong, a request)
    sent: int = 0
    rounds: int = 0
    klines_sent: int = 0


class LoadGen:
    def __init__(self, options: LoadGenOptions) -> None:
        self.options = options
        self.clients: list[Client] = []
        self.sent = 0  # ticker frames written
        self.klines_sent = 0  # kline frames written
        self.rounds = 0
        self.pongs = 0
        self.rate = options.rate  # rounds per second from the next round on (GET /bench/rate changes it)
        self._market = Market([], seed=options.seed)  # the simulator's start prices for the same symbols
        self._rng = random.Random(options.seed)  # a price path, not a secret
        self._templates: dict[str, Template] = {}
        self._kline_templates: dict[str, KlineTemplate] = {}
        self._templates_lock = threading.Lock()  # clients subscribe on their own threads
        # The minute being sent and the closed ones (GET /api/v3/klines reads them on a client's thread).
        self._minute: Minute | None = None
        self._closed: deque[Minute] = deque(maxlen=HISTORY_MINUTES)
        self._closed_lock = threading.Lock()
        self._kline_pushed_at = 0.0
        self._weight = (0, 0)  # (minute, weight used in it) of the REST requests
        self._weight_lock = threading.Lock()
        self._origin = (time.time_ns() // 1_000_000, time.monotonic())  # the send clock's start
        started = self._origin[0] - self._origin[0] % MINUTE_MS
        per_minute = max(1, round(options.rate * 60))  # rounds before the start: numbered below 0
        self._closed.extend(
            Minute(started - k * MINUTE_MS, -k * per_minute, -(k - 1) * per_minute - 1)
            for k in range(options.history_minutes, 0, -1)
        )
        self._clients_lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = socket.create_server((options.host, options.port), backlog=128)
        self._threads = [
            threading.Thread(target=self._accept, name="loadgen-accept", daemon=True),
            threading.Thread(target=self._send, name="loadgen-send", daemon=True),
        ]
        self._last_stamp = 0

    def now_ms(self) -> int:
        """The send clock: the wall clock, or one running `clock_speed` times faster from the start."""
        if self.options.clock_speed == 1.0:
            return time.time_ns() // 1_000_000
        wall, monotonic = self._origin
        return wall + int((time.monotonic() - monotonic) * 1000 * self.options.clock_speed)

    @property
    def closed_minutes(self) -> list[Minute]:
        with self._closed_lock:
            return list(self._closed)

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
        target = urlsplit(request.path)
        if target.path == "/stream":
            response = protocol.accept(request)
        elif target.path in WEIGHTS:
            response = self._rest(protocol, target.path, {k: v[-1] for k, v in parse_qs(target.query).items()})
        elif target.path == RATE_PATH:
            response = self._set_rate(protocol, parse_qs(target.query).get("perSymbol", [""])[-1])
        else:
            msg = f"not served by the load generator: {target.path}"
            response = self._json(protocol, 404, {"code": -1, "msg": msg})
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

    def _set_rate(self, protocol: ServerProtocol, value: str) -> Response:
        try:
            rate = float(value)
        except ValueError:
            rate = math.nan
        if not rate > 0 or math.isinf(rate):
            return self._json(protocol, 400, {"code": -1100, "msg": f"perSymbol must be a number above 0: {value!r}"})
        self.rate = rate
        return self._json(protocol, 200, {"perSymbol": rate})

    def _rest(self, protocol: ServerProtocol, path: str, query: dict[str, str]) -> Response:
        """A REST request within Binance's weight per minute (of the send clock), with the headers it sends."""
        now = self.now_ms()
        with self._weight_lock:
            minute, used = self._weight
            used = (used if minute == now // MINUTE_MS else 0) + WEIGHTS[path]
            self._weight = (now // MINUTE_MS, used)
        if used > WEIGHT_LIMIT_PER_MINUTE:
            wait = math.ceil((MINUTE_MS - now % MINUTE_MS) / 1000 / self.options.clock_speed)
            response = self._json(protocol, 429, {"code": -1003, "msg": "Too much request weight used"})
            response.headers["Retry-After"] = str(wait)
        elif path == "/api/v3/time":
            # The newest round's send time: a minute it shows as over has been closed (and streamed) already.
            response = self._json(protocol, 200, {"serverTime": self._last_stamp or now})
        elif path == "/api/v3/ping":
            response = self._json(protocol, 200, {})
        else:
            status, body = self._klines(query)
            response = self._json(protocol, status, body)
        response.headers["X-MBX-USED-WEIGHT-1M"] = str(used)
        return response

    def _klines(self, query: dict[str, str]) -> tuple[int, object]:
        """GET /api/v3/klines: the closed candles whose open time is in [startTime, endTime], the oldest `limit` from
        startTime (without it the newest), as Binance's arrays; Binance's error codes for bad parameters."""
        symbol = query.get("symbol", "")
        if not symbol:
            return 400, {
                "code": -1102,
                "msg": "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
            }
        if query.get("interval") != "1m":
            return 400, {"code": -1120, "msg": "Invalid interval."}
        try:
            start = int(query["startTime"]) if "startTime" in query else None
            end = int(query["endTime"]) if "endTime" in query else None
            limit = int(query.get("limit", "500"))
        except ValueError:
            return 400, {"code": -1100, "msg": "Illegal characters found in a parameter."}
        if not 1 <= limit <= KLINES_LIMIT:
            return 400, {"code": -1130, "msg": "Invalid data sent for a parameter: limit must be 1..1000."}
        selected = [
            m
            for m in self.closed_minutes
            if (start is None or m.open_ms >= start) and (end is None or m.open_ms <= end)
        ]
        selected = selected[:limit] if start is not None else selected[-limit:]
        ticker = self._template(symbol.upper())
        return 200, [rest_row(ticker, minute) for minute in selected]

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
            gone, klines_gone = _symbols(params, "@ticker"), _symbols(params, "@kline_1m")
            self._rebuild(
                client,
                [s for s in client.symbols if s not in gone],
                [s for s in client.kline_symbols if s not in klines_gone],
            )
        else:
            msg = f"Invalid request: the load generator serves SUBSCRIBE and UNSUBSCRIBE, not {method}"
            return orjson.dumps({"error": {"code": 2, "msg": msg}, "id": request_id})
        return orjson.dumps({"result": None, "id": request_id})

    def _subscribe(self, client: Client, streams: list[str]) -> None:
        # Other streams stay silent.
        tickers, klines = _symbols(streams, "@ticker"), _symbols(streams, "@kline_1m")
        self._rebuild(
            client, list(dict.fromkeys(client.symbols + tickers)), list(dict.fromkeys(client.kline_symbols + klines))
        )

    def _template(self, symbol: str) -> Template:
        with self._templates_lock:
            item = self._templates.get(symbol)
            if item is None:
                item = self._templates[symbol] = template(self._market, self._market.add(symbol), self._rng)
            return item

    def _kline_template(self, symbol: str) -> KlineTemplate:
        ticker = self._template(symbol)
        with self._templates_lock:
            item = self._kline_templates.get(symbol)
            if item is None:
                item = self._kline_templates[symbol] = kline_template(ticker, symbol)
            return item

    def _rebuild(self, client: Client, symbols: list[str], kline_symbols: list[str]) -> None:
        """The client's rounds for `symbols`' tickers and `kline_symbols`' klines (its lock held or not yet shared)."""
        client.symbols, client.round = symbols, Round.of([self._template(s) for s in symbols])
        client.kline_symbols = kline_symbols
        client.klines = KlineRound.of([self._kline_template(s) for s in kline_symbols])

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
        next_round = time.monotonic()
        for number in itertools.count():
            if self._stop.is_set():
                return
            with self._clients_lock:
                clients = list(self.clients)
            # Strictly later than the previous round: (symbol, E) identifies an update, as on the exchange.
            now_ms = max(self.now_ms(), self._last_stamp + 1)
            closing, current = self._next_minute(number, now_ms)
            self._last_stamp = now_ms  # after the closed minute is recorded: /api/v3/time never runs ahead of it
            stamp = np.frombuffer(str(now_ms).encode(), dtype=np.uint8)
            opened = np.frombuffer(str(now_ms - DAY_MS).encode(), dtype=np.uint8)
            pushed = time.monotonic()
            push = current if pushed - self._kline_pushed_at >= self.options.kline_interval else None
            if push is not None:
                self._kline_pushed_at = pushed
            for client in clients:
                self._send_round(client, number, stamp, opened, closing=closing, push=push)
            self.rounds += 1
            self._ping(clients)
            next_round += 1.0 / self.rate
            delay = next_round - time.monotonic()
            if delay < -1.0:  # behind by more than a second (the clients do not keep up): no burst to catch up
                next_round = time.monotonic()
            elif delay > 0:
                self._stop.wait(delay)

    def _next_minute(self, number: int, now_ms: int) -> tuple[Minute | None, Minute]:
        """Round `number`, sent at `now_ms`, in its minute: (the minute it closed, if it began a new one; its own)."""
        open_ms = now_ms - now_ms % MINUTE_MS
        previous = self._minute
        if previous is not None and previous.open_ms == open_ms:
            self._minute = Minute(open_ms, previous.first, number)
            return None, self._minute
        self._minute = Minute(open_ms, number, number)
        if previous is not None:
            with self._closed_lock:
                self._closed.append(previous)
        return previous, self._minute

    def _send_round(
        self,
        client: Client,
        number: int,
        stamp: npt.NDArray[np.uint8],
        opened: npt.NDArray[np.uint8],
        *,
        closing: Minute | None,
        push: Minute | None,
    ) -> None:
        """The round's tickers; before them the closed minute's final klines and the open candles' update if due."""
        with client.lock:
            frames, klines = client.round.frames, client.klines.frames
            if not client.open or not (frames or klines) or client.rounds == self.options.max_rounds:
                return
            try:
                for minute, closed in ((closing, True), (push, False)):
                    if minute is not None and klines:
                        client.sock.sendall(client.klines.patch(minute, stamp, closed))
                        client.klines_sent += klines
                        self.klines_sent += klines
                if frames:
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


def _symbols(streams: list[str], kind: str) -> list[str]:
    """The symbols (upper case) of `streams` of `kind` (`@ticker`, `@kline_1m`)."""
    return [s.split("@")[0].upper() for s in streams if isinstance(s, str) and s.endswith(kind)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.loadgen", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=1.0, help="updates per second of each subscribed symbol")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free one")
    parser.add_argument("--ping-interval", type=float, default=20.0)
    parser.add_argument("--max-rounds", type=int)
    parser.add_argument(
        "--history-minutes", type=int, default=0, help="closed 1m candles before the start that REST klines answers"
    )
    args = parser.parse_args(argv)
    if args.rate <= 0:
        parser.error("--rate must be above 0")
    options = LoadGenOptions(
        rate=args.rate,
        host=args.host,
        port=args.port,
        ping_interval=args.ping_interval,
        max_rounds=args.max_rounds,
        history_minutes=args.history_minutes,
    )
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, request_stop)
    with LoadGen(options) as generator:
        print(f"READY {generator.url} {generator.rest_url}", flush=True)
        stop.wait()
        print(f"STOPPED frames={generator.sent} klines={generator.klines_sent} rounds={generator.rounds}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
