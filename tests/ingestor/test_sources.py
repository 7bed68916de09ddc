"""CoinGecko and Yahoo Finance as sources: the real ingestor process between a simulated provider (speaking the
provider's protocol) and a real Kafka topic. Every quote the provider served reaches Kafka once, with its exact price.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import socket
import threading
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import tickpipe.sim.yahoo as yahoo_sim
from tests.conftest import REPO, TestStack
from tests.helpers import consume, topic_messages, wait_for
from tickpipe.config import Settings
from tickpipe.kafka import ensure_topics
from tickpipe.run.stages import StageProcess
from tickpipe.schema import parse_timestamp, series_key
from tickpipe.sim.coingecko import CoinGeckoOptions, CoinGeckoSim
from tickpipe.sim.yahoo import YahooOptions, YahooSim
from tickpipe.stack.process import free_port
from tickpipe.yahoo_pricing import exact_price

pytestmark = pytest.mark.integration
Quote = tuple[str, int, float]  # symbol, event ms, price


# -- the providers, recording what they served ------------------------------------------------------------------------
class RecordingCoinGecko(CoinGeckoSim):
    """The simulator, noting every quote it answered (price as written in the answer, last_updated_at in ms)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.served: set[Quote] = set()

    def _simple_price(self, query: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        status, body, headers = super()._simple_price(query)
        if status == 200:
            self.served.update((f"{i}/usd", e["last_updated_at"] * 1000, e["usd"]) for i, e in body.items())
        return status, body, headers


class RecordingYahoo(YahooSim):
    """The simulator, counting connections (the ingestor is its only client)."""

    def __init__(self, options: YahooOptions) -> None:
        super().__init__(options)
        self.connections = 0

    async def _handle(self, connection: Any) -> None:
        self.connections += 1
        await super()._handle(connection)


@dataclass
class YahooThread:
    sim: RecordingYahoo
    loop: asyncio.AbstractEventLoop

    def call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)


@pytest.fixture
def yahoo(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., YahooThread]]:
    """A Yahoo streamer simulator on its own event loop; `.published` lists every frame it encoded."""
    published: list[Quote] = []
    encode = yahoo_sim.encode_frame

    def recording_encode(**fields: Any) -> str:
        # The float32 on the wire, written shortest: the exact price a tick must carry.
        published.append((fields["id"], fields["time"], float(exact_price(fields["price"]))))
        return encode(**fields)

    monkeypatch.setattr(yahoo_sim, "encode_frame", recording_encode)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    started: list[YahooThread] = []

    def start(**options: Any) -> YahooThread:
        running = YahooThread(RecordingYahoo(YahooOptions(**options)), loop)
        running.sim.published = published  # type: ignore[attr-defined]
        running.call(running.sim.start())
        started.append(running)
        return running

    yield start
    for running in started:
        running.call(running.sim.close())
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


# -- the ingestor ---------------------------------------------------------------------------------------------------
@dataclass
class Ingestor:
    process: StageProcess
    settings: Settings
    metrics_url: str

    def log(self) -> str:
        return self.process.log_path.read_text(errors="replace")

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        entries = [json.loads(line) for line in self.log().splitlines() if line.startswith("{")]
        return [entry for entry in entries if name is None or entry.get("event") == name]

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"{self.metrics_url}/metrics", timeout=5) as response:  # noqa: S310
            text = response.read().decode()
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))

    def stop(self) -> dict[str, Any]:
        assert self.process.stop(timeout=60), "the ingestor did not stop on SIGTERM"
        assert self.process.exit_code() == 0, self.log()[-2000:]
        return self.events("ingestor_stopped")[-1]


@pytest.fixture
def ingest(kafka: TestStack, unique_topics: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Ingestor]]:
    started: list[Ingestor] = []

    def launch(env: dict[str, str], ready: str) -> Ingestor:
        settings = kafka.settings(**unique_topics)
        ensure_topics(settings)
        port = free_port()
        defaults = {
            "KAFKA_TOPIC": settings.kafka_topic,
            "KAFKA_DLQ_TOPIC": settings.kafka_dlq_topic,
            "METRICS_PORT": str(port),
            "INGEST_SPILL_DIR": str(tmp_path / f"spill-{len(started)}"),
            "LOG_FORMAT": "json",
            "PYTHONPATH": str(REPO),
        }
        log = tmp_path / f"ingestor-{len(started)}.log"
        process = StageProcess("ingestor", ["ingest"], log, env=kafka.env(**{**defaults, **env})).start()
        running = Ingestor(process, settings, f"http://127.0.0.1:{port}")
        started.append(running)
        wait_for(lambda: running.events(ready), 30, f"the ingestor's {ready} line")
        return running

    yield launch
    for running in started:
        running.process.stop(timeout=30)


def topic_quotes(settings: Settings) -> list[tuple[str, int, float, str]]:
    """Every record of the tick topic as (symbol, event ms, price), its key and source checked."""
    out: list[tuple[str, int, float, str]] = []
    for _, key, value in topic_messages(settings, settings.kafka_topic):
        tick = json.loads(value)
        assert key is not None and key.decode() == series_key(tick["source"], tick["symbol"])
        out.append((tick["symbol"], parse_timestamp(tick["timestamp"]), tick["price"], tick["source"]))
    return out


def once_each(quotes: list[tuple[str, int, float, str]], source: str) -> list[Quote]:
    assert {q[3] for q in quotes} <= {source}
    plain = [(q[0], q[1], q[2]) for q in quotes]
    assert len(plain) == len(set(plain)), "a quote reached Kafka twice"
    assert len({(s, t) for s, t, _ in plain}) == len(plain), "two ticks of one symbol at one event time"
    return plain


# -- CoinGecko ------------------------------------------------------------------------------------------------------
def coingecko_env(sim: CoinGeckoSim, symbols: str, calls_per_minute: int, **extra: str) -> dict[str, str]:
    return {
        "SOURCE": "coingecko",
        "SYMBOLS": symbols,
        "COINGECKO_URL": sim.url,
        "COINGECKO_CALLS_PER_MINUTE": str(calls_per_minute),
        "COINGECKO_MONTHLY_CALLS": "0",  # minutes, not a month: the per-minute budget binds here
        "COINGECKO_BUDGET_SHARE": "1",
        **extra,
    }


def test_coingecko_quotes_reach_kafka_once_each_with_exact_prices(ingest: Callable[..., Ingestor]) -> None:
    with RecordingCoinGecko(CoinGeckoOptions(refresh_seconds=0.5)) as sim:
        run = ingest(coingecko_env(sim, "bitcoin/usd,ethereum/usd,ripple/usd", 300), "coingecko_polling")
        # Polls every 0.2 s, prices change every 0.5 s: most answers repeat the last quote.
        wait_for(lambda: run.metric("tickpipe_ingest_messages_total") >= 15, 30, "five refreshes' ticks")
        wait_for(lambda: run.metric("tickpipe_ingest_unchanged_total") >= 6, 30, "unchanged quotes seen")
        stopped = run.stop()
        served = {q for q in sim.served if q[0] in ("bitcoin/usd", "ethereum/usd", "ripple/usd")}
        polling = run.events("coingecko_polling")[0]
    quotes = once_each(topic_quotes(run.settings), "coingecko")
    assert sorted(quotes) == sorted(served), "every quote served once, unchanged ones not again"
    assert stopped["ticks_sent"] == len(quotes)
    assert polling["interval_s"] == 0.2
    assert "Traceback" not in run.log()


def test_a_429_storm_backs_off_within_the_budget_and_loses_no_quote(ingest: Callable[..., Ingestor]) -> None:
    with RecordingCoinGecko(CoinGeckoOptions(refresh_seconds=0.5, calls_per_minute=1000)) as sim:
        run = ingest(coingecko_env(sim, "bitcoin/usd,ethereum/usd", 240), "coingecko_polling")
        wait_for(lambda: run.metric("tickpipe_ingest_messages_total") >= 6, 30, "ticks flowing")
        with urllib.request.urlopen(sim.url.replace("/api/v3", "/sim/throttle?seconds=3"), timeout=5):  # noqa: S310
            pass
        wait_for(lambda: sim.refused >= 1, 10, "a 429")
        refused_at = run.metric("tickpipe_ingest_messages_total")
        wait_for(lambda: run.metric("tickpipe_ingest_messages_total") >= refused_at + 6, 30, "ticks after the storm")
        stopped = run.stop()
        requests, refused = sim.requests, sim.refused
        served = {q for q in sim.served if q[0] in ("bitcoin/usd", "ethereum/usd")}
    throttled = run.events("coingecko_throttled")
    assert refused <= 2, "Retry-After (3 s) is honoured: not a request per interval during the storm"
    assert throttled and throttled[0]["retry_after"] == "3" and throttled[0]["retry_in_s"] >= 3
    first, last = run.events("coingecko_polling")[0]["timestamp"], stopped["timestamp"]
    seconds = (parse_timestamp(last) - parse_timestamp(first)) / 1000
    assert requests <= seconds / 0.25 + 2, f"{requests} requests in {seconds:.1f} s: over 240/min"
    quotes = once_each(topic_quotes(run.settings), "coingecko")
    assert sorted(quotes) == sorted(served), "a quote lost or doubled across the storm"


def test_a_bad_key_and_an_unknown_id_are_named_in_one_error_line_each(ingest: Callable[..., Ingestor]) -> None:
    with RecordingCoinGecko(CoinGeckoOptions(demo_key="CG-right")) as sim:
        run = ingest(coingecko_env(sim, "bitcoin/usd", 600, COINGECKO_API_KEY="CG-wrong"), "coingecko_refused")
        wait_for(lambda: sim.requests >= 3, 30, "retries after the refusal")
        run.stop()
    refused = run.events("coingecko_refused")
    assert len(refused) == 1, "one line, not one per retry"
    assert refused[0]["level"] == "error" and refused[0]["status"] == 401
    assert "COINGECKO_API_KEY" in refused[0]["hint"] and "10011" in refused[0]["error"]
    assert "CG-wrong" not in run.log(), "the key is a secret"
    assert "Traceback" not in run.log()

    with RecordingCoinGecko(CoinGeckoOptions(refresh_seconds=0.5)) as sim:
        run = ingest(coingecko_env(sim, "bitcoin/usd,no-such-coin/usd", 600), "coingecko_unknown_ids")
        wait_for(lambda: run.metric("tickpipe_ingest_messages_total") >= 3, 30, "bitcoin ticks despite the unknown id")
        run.stop()
    unknown = run.events("coingecko_unknown_ids")
    assert len(unknown) == 1 and unknown[0]["level"] == "error" and unknown[0]["symbols"] == "no-such-coin"
    assert "Traceback" not in run.log()


# -- Yahoo ----------------------------------------------------------------------------------------------------------
def yahoo_env(sim: YahooSim, symbols: str) -> dict[str, str]:
    return {
        "SOURCE": "yahoo",
        "SYMBOLS": symbols,
        "YAHOO_WS_URL": sim.url,
        "YAHOO_HEARTBEAT_SECONDS": "0.5",
        "YAHOO_STALE_AFTER_SECONDS": "3",
    }


def test_yahoo_frames_reach_kafka_once_each_with_the_exact_float32_price(
    yahoo: Callable[..., YahooThread], ingest: Callable[..., Ingestor]
) -> None:
    streamer = yahoo(rate=10.0)
    symbols = ["AAPL", "BRK-B", "^GSPC", "EURUSD=X", "0700.HK"]  # no crypto: closing the market silences them all
    run = ingest(yahoo_env(streamer.sim, ",".join(symbols)), "connected")
    wait_for(lambda: run.metric("tickpipe_ingest_messages_total") >= 80, 30, "ticks flowing")
    market = streamer.sim.url.replace("ws://", "http://").split("?")[0] + "sim/market?open=0"
    with urllib.request.urlopen(market, timeout=5):  # noqa: S310 - the local simulator
        pass
    published = streamer.sim.published  # type: ignore[attr-defined]
    wait_for(lambda: run.metric("tickpipe_ingest_messages_total") == len(published), 30, "every published frame read")
    stopped = run.stop()
    quotes = once_each(topic_quotes(run.settings), "yahoo")
    assert sorted(quotes) == sorted(published)
    assert {s for s, _, _ in quotes} == set(symbols)
    assert stopped["ticks_sent"] == len(quotes)
    assert all(len(repr(price)) <= 12 for _, _, price in quotes), "float32 prices written shortest"


def test_yahoo_reconnects_and_subscribes_again_after_a_drop(
    yahoo: Callable[..., YahooThread], ingest: Callable[..., Ingestor]
) -> None:
    streamer = yahoo(rate=10.0)
    run = ingest(yahoo_env(streamer.sim, "AAPL,BTC-USD"), "connected")
    wait_for(lambda: run.metric("tickpipe_ingest_messages_total") >= 20, 30, "ticks flowing")

    async def drop() -> None:
        for client in list(streamer.sim.clients):
            await client.connection.close()

    streamer.call(drop())
    wait_for(lambda: streamer.sim.connections == 2, 30, "a new connection")
    wait_for(
        lambda: [c.subscribe_messages for c in streamer.sim.clients if c.subscribe_messages >= 3],
        30,
        "the new connection subscribed, then heartbeats",
    )
    before = run.metric("tickpipe_ingest_messages_total")
    wait_for(lambda: run.metric("tickpipe_ingest_messages_total") >= before + 20, 30, "ticks flowing again")
    streamer.call(streamer.sim.close())
    run.stop()
    quotes = once_each(topic_quotes(run.settings), "yahoo")
    assert set(quotes) <= set(streamer.sim.published)  # type: ignore[attr-defined]
    assert [e["reason"] for e in run.events("connection_lost")] == ["dropped"]


def test_malformed_yahoo_frames_go_to_the_dead_letter_topic_with_a_reason(
    yahoo: Callable[..., YahooThread], ingest: Callable[..., Ingestor]
) -> None:
    streamer = yahoo(rate=10.0, malformed_every=10)
    run = ingest(yahoo_env(streamer.sim, "AAPL,BTC-USD"), "connected")
    wait_for(lambda: run.metric("tickpipe_ingest_dlq_total") >= 3, 30, "three dead letters")
    run.stop()
    dead = consume(run.settings, run.settings.kafka_dlq_topic, 3)
    assert {record["reason"] for record in dead} == {"'message' is not base64"}
    assert all(r["stage"] == "ingestor" and r["source"] == "yahoo" and "bm90IHByb3RvYnVm!" in r["raw"] for r in dead)
    once_each(topic_quotes(run.settings), "yahoo")


def test_a_closed_market_keeps_one_connection(
    yahoo: Callable[..., YahooThread], ingest: Callable[..., Ingestor]
) -> None:
    streamer = yahoo(rate=10.0, market_open=False)
    run = ingest(yahoo_env(streamer.sim, "AAPL,^GSPC"), "connected")
    # Silent for well over the stale limit (3 s): heartbeats every 0.5 s, each answered by a pong.
    wait_for(lambda: [c for c in streamer.sim.clients if c.subscribe_messages >= 16], 30, "8 s of heartbeats")
    assert streamer.sim.connections == 1, "a quiet market is not a dead connection"
    assert run.metric("tickpipe_ingest_reconnects_total") == 0
    assert run.metric("tickpipe_ingest_messages_total") == 0
    run.stop()
    assert not run.events("connection_stale")


class MuteStreamer:
    """A WebSocket server that completes the handshake, then neither reads nor answers: a dead connection that
    TCP still calls open (no pong, no close)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.server.getsockname()[1]}/?version=2"

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.server.accept()
                request = client.recv(4096).decode()
                key = next(
                    line.split(":", 1)[1].strip()
                    for line in request.split("\r\n")
                    if line.lower().startswith("sec-websocket-key")
                )
                accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()  # noqa: S324 - the protocol's
                client.sendall(
                    f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
                )
                self.connections.append(client)

    def close(self) -> None:
        self.server.close()
        for client in self.connections:
            client.close()


WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC11B85"


def test_a_connection_that_answers_not_even_a_ping_is_replaced() -> None:
    from tickpipe.config import load_settings
    from tickpipe.ingestor.connection import AttemptBudget
    from tickpipe.ingestor.yahoo import yahoo_feed

    class Router:
        last_message_at = 0.0
        sink: Any = None

        def accept(self, tick: Any) -> bool:
            return True

    mute = MuteStreamer()
    settings = load_settings(
        source="yahoo", symbols="AAPL", yahoo_ws_url=mute.url, yahoo_heartbeat_seconds=0.3, yahoo_stale_after_seconds=1
    )
    feed = yahoo_feed(settings, settings.symbols, Router(), AttemptBudget(100))
    feed.start()
    try:
        wait_for(lambda: len(mute.connections) >= 2, 30, "a second connection after the first went stale")
    finally:
        feed.stop_event.set()
        feed.join(10)
        mute.close()
