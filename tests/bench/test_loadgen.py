"""The benchmark's load generator speaks what the ingestor reads: combined @ticker frames its own normalizer takes,
in the simulator's shape, every offered tick delivered once, pings, live subscriptions, REST server time; @kline_1m
frames the ingestor takes as open and closed candles, consistent with the tickers sent in their minute, and
GET /api/v3/klines answering the same closed candles through the ingestor's own REST client."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import orjson
import pytest
import websocket

from bench import loadgen, senders
from tickpipe.candle_schema import MINUTE_MS, WireCandle
from tickpipe.ingestor.connection import Connection
from tickpipe.ingestor.normalize import Control, normalize, rest_candle
from tickpipe.ingestor.repair import newest_closed
from tickpipe.ingestor.rest import RestClient
from tickpipe.ingestor.service import stream_urls
from tickpipe.schema import Tick
from tickpipe.sim.market import Market, ticker_event
from tickpipe.stack.process import wait_until


class Reader:
    """The ingestor's own connections (as many as it opens for these symbols), every message normalized."""

    def __init__(self, url: str, symbols: list[str], per_connection: int, *, klines: bool = False) -> None:
        self.items: list[object] = []
        self.raw: list[str] = []
        self._lock = threading.Lock()
        self.connections = [
            Connection(u, self._on_text, f"reader-{n}")
            for n, u in enumerate(stream_urls(url, tuple(symbols), per_connection, klines=klines))
        ]

    def _on_text(self, connection: Connection, text: str) -> None:
        item = normalize(text)
        with self._lock:
            self.items.append(item)
            self.raw.append(text)

    def __enter__(self) -> Reader:
        for connection in self.connections:
            connection.open(10)
        return self

    def __exit__(self, *exc: object) -> None:
        for connection in self.connections:
            connection.close()

    @property
    def count(self) -> int:
        return len(self.items)


@pytest.mark.unit
def test_every_offered_tick_arrives_once_as_a_tick_the_ingestor_normalizes() -> None:
    symbols, rounds, rate = [f"sym{i:04d}usdt" for i in range(30)], 20, 50.0
    with loadgen.LoadGen(loadgen.LoadGenOptions(rate=rate, max_rounds=rounds)) as generator:
        with Reader(generator.url, symbols, per_connection=10) as reader:  # 3 connections, as the ingestor opens
            assert len(reader.connections) == 3
            assert wait_until(lambda: reader.count >= rounds * len(symbols), 60)
            assert [client.rounds for client in generator.clients] == [rounds] * 3
        assert generator.sent == rounds * len(symbols)

    assert reader.count == rounds * len(symbols)  # nothing lost, nothing doubled
    assert all(isinstance(item, Tick) and item.source == "binance" for item in reader.items)
    times: dict[str, list[int]] = defaultdict(list)
    for item in reader.items:
        assert isinstance(item, Tick)
        times[item.symbol].append(item.event_time_ms)
    assert sorted(times) == sorted(s.upper() for s in symbols)
    for series in times.values():
        assert len(series) == rounds
        assert series == sorted(set(series))  # strictly increasing per symbol: the ingestor drops none as a duplicate


@pytest.mark.unit
def test_frames_have_the_simulator_s_shape_with_the_send_time_as_event_time() -> None:
    with (
        loadgen.LoadGen(loadgen.LoadGenOptions(rate=20.0, max_rounds=3)) as generator,
        Reader(generator.url, ["btcusdt", "sym0001usdt"], per_connection=200) as reader,
    ):
        assert wait_until(lambda: reader.count >= 6, 30)
    expected = list(ticker_event(Market(["BTCUSDT"]).states["BTCUSDT"]))
    for text in reader.raw:
        frame = orjson.loads(text)
        assert list(frame) == ["stream", "data"]
        data = frame["data"]
        assert frame["stream"] == f"{data['s'].lower()}@ticker"
        assert list(data) == expected  # the same fields in the same order
        assert data["C"] == data["E"] and data["O"] == data["E"] - 86_400_000
        assert all(isinstance(data[k], str) for k in ("p", "c", "v", "q", "b", "a"))


@pytest.mark.unit
def test_pings_are_sent_and_subscriptions_change_what_is_sent() -> None:
    with loadgen.LoadGen(loadgen.LoadGenOptions(rate=20.0, ping_interval=0.05)) as generator:
        ws = websocket.create_connection(f"{generator.url}/stream?streams=btcusdt@ticker/btcusdt@kline_1m", timeout=10)
        try:
            ws.send(orjson.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@ticker"], "id": 7}).decode())
            seen: set[str] = set()
            replies, klines = [], []
            deadline = time.monotonic() + 60
            # Until the new stream's ticks and a pong came (websocket-client answers each ping as it reads).
            while ("ETHUSDT" not in seen or not generator.pongs) and time.monotonic() < deadline:
                text = ws.recv()
                item = normalize(text)
                if isinstance(item, Tick):
                    seen.add(item.symbol)
                elif item is Control.OPEN_CANDLE or isinstance(item, WireCandle):
                    klines.append(orjson.loads(text)["stream"])
                else:
                    replies.append(orjson.loads(text))
            assert replies == [{"result": None, "id": 7}]
            assert seen == {"BTCUSDT", "ETHUSDT"}
            assert set(klines) <= {"btcusdt@kline_1m"}  # only the subscribed kline stream
            assert generator.pongs >= 1
        finally:
            ws.close()
        assert wait_until(lambda: not generator.clients, 10)  # a client's close ends its connection


@pytest.mark.unit
def test_rest_answers_the_server_time_and_refuses_what_it_does_not_serve() -> None:
    with loadgen.LoadGen(loadgen.LoadGenOptions()) as generator:
        with urllib.request.urlopen(f"{generator.rest_url}/api/v3/time", timeout=10) as response:  # noqa: S310
            assert isinstance(orjson.loads(response.read())["serverTime"], int)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{generator.rest_url}/api/v3/exchangeInfo", timeout=10)  # noqa: S310
        assert refused.value.code == 404
        assert "not served by the load generator" in orjson.loads(refused.value.read())["msg"]


@pytest.mark.integration
def test_the_benchmark_starts_it_as_a_process_and_reads_its_ticks(tmp_path: Path) -> None:
    symbols = [f"sym{i:04d}usdt" for i in range(5)]
    with senders.sender("loadgen", symbols, 10.0, tmp_path) as running:
        with Reader(running.url, symbols, per_connection=200) as reader:
            assert wait_until(lambda: reader.count >= 50, 60)
        process = running.process
    assert all(isinstance(item, Tick) for item in reader.items)
    assert not process.is_running() or process.status() == "zombie"


def _rest_error(url: str) -> tuple[int, int]:
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=10)  # noqa: S310 - the local load generator
    return refused.value.code, orjson.loads(refused.value.read())["code"]


@pytest.mark.unit
def test_kline_frames_are_candles_of_the_tickers_and_rest_answers_the_streamed_closed_ones() -> None:
    """A send clock 30x real time: a minute every 2 s. The reader opens the ingestor's own connections with klines
    (INGEST_KLINES=true) and normalizes every frame with the ingestor's normalizer."""
    symbols = [f"sym{i:04d}usdt" for i in range(6)] + ["btcusdt"]
    options = loadgen.LoadGenOptions(rate=20.0, kline_interval=0.2, clock_speed=30.0)
    with loadgen.LoadGen(options) as generator:
        empty = RestClient(generator.rest_url, 1200, threading.Event()).klines("BTCUSDT", 0, 2**42)
        with Reader(generator.url, symbols, per_connection=6, klines=True) as reader:  # 3 symbols a connection
            assert len(reader.connections) == 3

            def closed() -> list[WireCandle]:
                return [item for item in list(reader.items) if isinstance(item, WireCandle)]

            # Three whole minutes after the first tick the reader got (the first minute may be cut).
            assert wait_until(lambda: len({c.open_time_ms for c in closed()}) >= 4, 60)
        client = RestClient(generator.rest_url, 1200, threading.Event())
        # The clock keeps running: a minute may close between these reads (before and after bound what is seen).
        before = [m.open_ms for m in generator.closed_minutes]
        server_ms = client.server_time()
        rest = {
            symbol.upper(): [rest_candle(symbol.upper(), row) for row in client.klines(symbol.upper(), 0, 2**42)]
            for symbol in symbols
        }
        after = [m.open_ms for m in generator.closed_minutes]
    assert empty == []  # no minute had closed yet
    ticks = [item for item in reader.items if isinstance(item, Tick)]
    candles = [item for item in reader.items if isinstance(item, WireCandle)]
    assert reader.items.count(Control.OPEN_CANDLE) >= len(symbols)  # the open candles, pushed between the closes
    assert all(c.origin == "stream" and c.source == "binance" for c in candles)
    per_minute = defaultdict(list)
    for candle in candles:
        per_minute[candle.symbol, candle.open_time_ms].append(candle)
    assert all(len(found) == 1 for found in per_minute.values())  # each minute closed once
    assert {symbol for symbol, _ in per_minute} == {s.upper() for s in symbols}

    first_tick = min(t.event_time_ms for t in ticks)
    checked = 0
    for (symbol, open_ms), (candle,) in per_minute.items():
        assert candle.low <= min(candle.open, candle.close) <= max(candle.open, candle.close) <= candle.high
        assert candle.volume and candle.quote_volume and candle.trades
        assert candle.quote_volume == pytest.approx(
            candle.volume * (candle.low + candle.high) / 2, rel=(candle.high - candle.low) / candle.low + 1e-9
        )
        if open_ms <= first_tick:
            continue  # the reader connected during this minute: it missed its first ticks
        prices = [t.price for t in ticks if t.symbol == symbol and open_ms <= t.event_time_ms < open_ms + MINUTE_MS]
        assert (candle.open, candle.high, candle.low, candle.close) == (
            prices[0],
            max(prices),
            min(prices),
            prices[-1],
        )
        assert candle.trades == len(prices)  # one trade per ticker update
        checked += 1
    assert checked >= 2 * len(symbols)

    # REST: every minute closed since the start (the first one cut at the start), equal to the streamed final
    # candles of the same minutes; the server's clock says no later minute is closed.
    assert after == sorted(set(after)) and after[: len(before)] == before
    assert before[-1] <= newest_closed(server_ms) <= after[-1]
    assert newest_closed(server_ms) in after
    for symbol, repaired in rest.items():
        served = [c.open_time_ms for c in repaired]
        assert served[: len(before)] == before and after[: len(served)] == served
        assert all(c.origin == "repair" for c in repaired)
        by_minute = {c.open_time_ms: replace(c, origin="stream") for c in repaired}
        streamed = [c for c in candles if c.symbol == symbol]
        assert streamed and all(by_minute[c.open_time_ms] == c for c in streamed)


@pytest.mark.unit
def test_rest_klines_select_like_binance_with_its_weight_header_and_errors() -> None:
    options = loadgen.LoadGenOptions(rate=20.0, clock_speed=60.0)  # a minute a second
    with loadgen.LoadGen(options) as generator:
        assert wait_until(lambda: len(generator.closed_minutes) >= 4, 30)
        minutes = [m.open_ms for m in generator.closed_minutes]
        base = f"{generator.rest_url}/api/v3/klines?symbol=ETHUSDT&interval=1m"

        def rows(query: str) -> list[int]:
            with urllib.request.urlopen(base + query, timeout=10) as response:  # noqa: S310 - local
                assert int(response.headers["X-MBX-USED-WEIGHT-1M"]) >= 2
                return [row[0] for row in orjson.loads(response.read())]

        assert rows(f"&startTime={minutes[1]}&endTime={minutes[2]}") == minutes[1:3]
        assert rows(f"&startTime={minutes[0]}&limit=2") == minutes[:2]  # the oldest from startTime
        assert rows("&limit=2")[-1] >= minutes[-1]  # without startTime: the newest
        assert _rest_error(f"{generator.rest_url}/api/v3/klines?interval=1m") == (400, -1102)
        assert _rest_error(f"{base.replace('1m', '5m')}") == (400, -1120)
        assert _rest_error(f"{base}&limit=0") == (400, -1130)
        assert _rest_error(f"{base}&startTime=x") == (400, -1100)


@pytest.mark.unit
def test_the_benchmark_raises_the_rate_of_a_running_generator() -> None:
    """A step starts the pipeline at a low rate and raises it: the new rate applies from the next round."""
    with (
        loadgen.LoadGen(loadgen.LoadGenOptions(rate=0.2)) as generator,  # a round every 5 s
        Reader(generator.url, ["btcusdt"], per_connection=200) as reader,
    ):
        assert wait_until(lambda: reader.count >= 1, 30)
        senders.set_rate(generator.rest_url, 200.0)
        assert wait_until(lambda: reader.count >= 100, 20)  # 500 s at the first rate
        with pytest.raises(urllib.error.HTTPError) as refused:
            senders.set_rate(generator.rest_url, 0.0)
        assert refused.value.code == 400
        assert generator.rate == 200.0
