"""The benchmark's load generator speaks what the ingestor reads: combined @ticker frames its own normalizer takes,
in the simulator's shape, every offered tick delivered once, pings, live subscriptions, REST server time."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections import defaultdict
from pathlib import Path

import orjson
import pytest
import websocket

from bench import loadgen, senders
from tickpipe.ingestor.connection import Connection
from tickpipe.ingestor.normalize import normalize
from tickpipe.ingestor.service import stream_urls
from tickpipe.schema import Tick
from tickpipe.sim.market import Market, ticker_event
from tickpipe.stack.process import wait_until


class Reader:
    """The ingestor's own connections (as many as it opens for these symbols), every message normalized."""

    def __init__(self, url: str, symbols: list[str], per_connection: int) -> None:
        self.items: list[object] = []
        self.raw: list[str] = []
        self._lock = threading.Lock()
        self.connections = [
            Connection(u, self._on_text, f"reader-{n}")
            for n, u in enumerate(stream_urls(url, tuple(symbols), per_connection))
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
            replies = []
            deadline = time.monotonic() + 60
            # Until the new stream's ticks and a pong came (websocket-client answers each ping as it reads).
            while ("ETHUSDT" not in seen or not generator.pongs) and time.monotonic() < deadline:
                text = ws.recv()
                item = normalize(text)
                if isinstance(item, Tick):
                    seen.add(item.symbol)
                else:
                    replies.append(orjson.loads(text))
            assert replies == [{"result": None, "id": 7}]
            assert seen == {"BTCUSDT", "ETHUSDT"}  # the kline stream stays silent
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
            urllib.request.urlopen(f"{generator.rest_url}/api/v3/klines?symbol=BTCUSDT", timeout=10)  # noqa: S310
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
