"""SYMBOLS=all-usdt: symbols discovered from exchangeInfo, split over connections, listings and delistings applied
live (SUBSCRIBE/UNSUBSCRIBE) without touching the other symbols' streams.

Unit tests: the filter and the plan (pure), the feed's live subscription changes over an in-memory socket. With the
simulated exchange (real WebSocket): its SUBSCRIBE replies and the 5-messages-per-second limit, and a feed's paced
changes staying under it. Integration: the ingestor as a process between the simulator and a real Kafka broker."""

from __future__ import annotations

import gc
import itertools
import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import websocket
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import REPO, TestStack
from tests.helpers import wait_for
from tests.ingestor.test_feed import FakeSocket
from tests.ingestor.test_ingestor import Running, assert_once_and_in_order, kafka_ticks
from tickpipe.config import ALL_USDT, load_settings
from tickpipe.errors import ConfigError
from tickpipe.ingestor.connection import AttemptBudget, Backoff, Connection, OnText
from tickpipe.ingestor.discovery import plan, streams_of, usdt_symbols
from tickpipe.ingestor.feed import CONTROL_SPACING, PARAMS_PER_REQUEST, Feed, FeedPolicy
from tickpipe.kafka import ensure_topics
from tickpipe.run.stages import StageProcess
from tickpipe.sim.server import MAX_INCOMING_PER_SECOND, SimExchange, SimOptions, SimThread
from tickpipe.stack.process import free_port

FAST = FeedPolicy(stale_after=5.0, healthy_after=0.3, connect_timeout=2.0, switch_timeout=1.0, check_interval=0.01)
KINDS = ("ticker", "kline_1m")


# -- the filter and the plan ------------------------------------------------------------------------------------
def describe(symbol: str, quote: str = "USDT", status: str = "TRADING", **extra: object) -> dict[str, object]:
    return {"symbol": symbol, "status": status, "quoteAsset": quote, "isSpotTradingAllowed": True, **extra}


@pytest.mark.unit
def test_only_trading_spot_symbols_quoted_in_usdt_are_discovered() -> None:
    described: list[dict[str, object]] = [
        describe("ETHUSDT"),
        describe("BTCUSDT"),
        describe("ETHBTC", quote="BTC"),
        describe("LUNAUSDT", status="BREAK"),
        describe("OLDUSDT", status="HALT"),
        describe("MARGINUSDT", isSpotTradingAllowed=False),
        describe("BAD-USDT"),
        {"status": "TRADING", "quoteAsset": "USDT"},  # no symbol
    ]
    assert usdt_symbols(described) == ("btcusdt", "ethusdt")


@pytest.mark.unit
def test_the_first_plan_splits_symbols_over_connections_of_at_most_the_capacity() -> None:
    symbols = [f"s{i:03d}usdt" for i in range(250)]
    first = plan({}, symbols, 100)
    assert [len(chunk) for chunk in first.new] == [100, 100, 50]
    assert [s for chunk in first.new for s in chunk] == symbols
    assert first.listed == tuple(symbols) and not first.delisted and not first.subscribe and not first.retire
    # A symbol's streams stay side by side on its connection: 2 kinds x 100 symbols = 200 streams.
    assert streams_of(first.new[0], KINDS)[:2] == ["s000usdt@ticker", "s000usdt@kline_1m"]
    assert len(streams_of(first.new[0], KINDS)) == 200


@pytest.mark.unit
def test_a_listing_fills_a_connection_with_room_and_a_delisting_leaves_the_others_alone() -> None:
    assigned = {"0": ["a", "b", "c"], "1": ["d", "e"], "2": ["f"]}
    change = plan(assigned, ["a", "b", "c", "d", "f", "g", "h", "i"], 3)
    assert change.listed == ("g", "h", "i") and change.delisted == ("e",)
    assert change.unsubscribe == {"1": ("e",)}
    assert change.subscribe == {"1": ("g", "h"), "2": ("i",)}  # first fit, the room freed by "e" included
    assert change.new == () and change.retire == ()


@pytest.mark.unit
def test_more_listings_than_room_open_a_new_connection_and_an_emptied_one_is_closed() -> None:
    change = plan({"0": ["a", "b"], "1": ["c"]}, ["a", "b", "x", "y", "z"], 2)
    assert change.unsubscribe == {"1": ("c",)}
    assert change.subscribe == {"1": ("x", "y")}
    assert change.new == (("z",),)
    assert change.retire == ()
    gone = plan({"0": ["a", "b"], "1": ["c"]}, ["a", "b"], 2)
    assert gone.retire == ("1",) and gone.unsubscribe == {"1": ("c",)}
    assert plan({"0": ["a"]}, ["a"], 2).empty


@pytest.mark.unit
def test_all_usdt_is_a_symbols_setting_of_its_own() -> None:
    assert load_settings(symbols="ALL-USDT").symbols == (ALL_USDT,)
    assert load_settings(symbols="all-usdt").discovers_symbols
    assert not load_settings(symbols="btcusdt").discovers_symbols
    with pytest.raises(ConfigError, match="all-usdt stands alone"):
        load_settings(symbols="all-usdt,btcusdt")
    with pytest.raises(ConfigError, match="INGEST_DISCOVERY_INTERVAL_SECONDS"):
        load_settings(ingest_discovery_interval_seconds=0)


# -- a feed's live changes over an in-memory socket -------------------------------------------------------------
class SendingSocket(FakeSocket):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[float, dict[str, object]]] = []

    def send(self, text: str) -> None:
        self.sent.append((time.monotonic(), json.loads(text)))


class MemoryExchange:
    def __init__(self) -> None:
        self.urls: list[str] = []
        self.sockets: list[SendingSocket] = []

    def __call__(self, url: str, on_text: OnText, name: str) -> Connection:
        exchange = self
        self.urls.append(url)

        class Memory(Connection):
            def _dial(self, timeout: float) -> SendingSocket:  # type: ignore[override]
                socket = SendingSocket()
                exchange.sockets.append(socket)
                return socket

        return Memory(url, on_text, name)


@pytest.fixture
def memory_feed() -> Iterator[tuple[Feed, MemoryExchange]]:
    exchange = MemoryExchange()
    feed = Feed(
        "m",
        "ws://memory",
        on_text=lambda c, t: None,
        policy=FAST,
        budget=AttemptBudget(1000),
        stop=threading.Event(),
        connect=exchange,
        backoff=Backoff(base=0.005, cap=0.02),
        streams=["a@ticker", "b@ticker"],
    )
    feed.start()
    wait_for(lambda: feed.current is not None, 5, "the first connection", interval=0.01)
    yield feed, exchange
    feed.stop_event.set()
    feed.join(5)


@pytest.mark.unit
def test_a_change_is_sent_as_few_paced_requests_and_a_reconnect_opens_with_the_current_streams(
    memory_feed: tuple[Feed, MemoryExchange],
) -> None:
    feed, exchange = memory_feed
    assert exchange.urls == ["ws://memory/stream?streams=a@ticker/b@ticker"]
    new = [f"s{i}@ticker" for i in range(PARAMS_PER_REQUEST * 2 + 1)]
    feed.change(subscribe=new, unsubscribe=["a@ticker"])
    feed.change(subscribe=["c@ticker"])
    sent = exchange.sockets[0].sent
    requests = [request for _, request in sent]
    assert [(r["method"], len(r["params"])) for r in requests] == [  # type: ignore[arg-type]
        ("UNSUBSCRIBE", 1),
        ("SUBSCRIBE", PARAMS_PER_REQUEST),
        ("SUBSCRIBE", PARAMS_PER_REQUEST),
        ("SUBSCRIBE", 1),
        ("SUBSCRIBE", 1),
    ]
    assert len({r["id"] for r in requests}) == len(requests)
    times = [t for t, _ in sent]
    assert all(later - earlier >= CONTROL_SPACING * 0.99 for earlier, later in itertools.pairwise(times))
    assert all(sum(1 for u in times if t <= u < t + 1.0) < MAX_INCOMING_PER_SECOND for t in times)
    assert feed.current is not None and feed.current.streams == {"b@ticker", "c@ticker", *new}
    # The connection drops: the next one asks for the feed's streams as they are now, and needs no request.
    feed.current.close()
    wait_for(lambda: len(exchange.urls) == 2, 5, "the reconnect", interval=0.01)
    assert exchange.urls[1] == "ws://memory/stream?streams=" + "/".join(["b@ticker", *new, "c@ticker"])
    wait_for(lambda: len(exchange.sockets) == 2, 5, "the second socket", interval=0.01)
    assert exchange.sockets[1].sent == []


# -- the simulated exchange's live subscriptions ----------------------------------------------------------------
@pytest.fixture
def sim() -> Iterator[tuple[SimThread, SimExchange]]:
    thread = SimThread(SimOptions(symbols=["BTCUSDT", "ETHUSDT"], rate=20.0))
    exchange = thread.__enter__()
    yield thread, exchange
    thread.__exit__(None, None, None)


def sim_streams(exchange: SimExchange) -> list[set[str]]:
    return [set(client.streams) for client in list(exchange.clients)]


@pytest.mark.integration
def test_the_simulator_answers_subscriptions_as_binance_and_disconnects_past_five_messages_a_second(
    sim: tuple[SimThread, SimExchange],
) -> None:
    _, exchange = sim
    ws = websocket.create_connection(f"{exchange.url}/stream?streams=btcusdt@ticker", timeout=5)
    try:

        def reply(request_id: int) -> dict[str, object]:
            while True:  # ticks keep coming meanwhile
                message = json.loads(ws.recv())
                if message.get("id") == request_id:
                    return message  # type: ignore[no-any-return]

        ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["ethusdt@ticker"], "id": 1}))
        assert reply(1) == {"result": None, "id": 1}
        ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}))
        assert reply(2) == {"result": ["btcusdt@ticker", "ethusdt@ticker"], "id": 2}
        ws.send(json.dumps({"method": "UNSUBSCRIBE", "params": ["btcusdt@ticker"], "id": 3}))
        assert reply(3) == {"result": None, "id": 3}
        assert sim_streams(exchange) == [{"ethusdt@ticker"}]
        for i in range(MAX_INCOMING_PER_SECOND + 1):  # the sixth within a second is one too many
            ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 10 + i}))
        with pytest.raises(websocket.WebSocketConnectionClosedException):
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                ws.recv()
    finally:
        ws.close()
    wait_for(lambda: not exchange.clients, 5, "the server to drop the client")


def replies(ws: websocket.WebSocket, count: int) -> list[dict[str, object]]:
    """The next `count` answers to requests (ticks keep coming meanwhile)."""
    out: list[dict[str, object]] = []
    while len(out) < count:
        message = json.loads(ws.recv())
        if "id" in message:
            out.append(message)
    return out


@pytest.mark.integration
def test_the_simulator_refuses_malformed_requests_in_binances_words_and_serves_the_combined_property(
    sim: tuple[SimThread, SimExchange],
) -> None:
    _, exchange = sim
    ws = websocket.create_connection(f"{exchange.url}/ws/btcusdt@ticker", timeout=5)
    try:
        for bad in ("{not json", '{"params": [], "id": 1}', '{"method": "PING", "id": 2}', '{"method": "SUBSCRIBE"}'):
            ws.send(bad)
        answers = replies(ws, 4)
        assert [(a["error"]["code"], a["id"]) for a in answers] == [(3, None), (2, 1), (2, 2), (2, None)]  # type: ignore[index]
        assert "missing field `method`" in answers[1]["error"]["msg"]  # type: ignore[index]
        assert "unknown variant `PING`" in answers[2]["error"]["msg"]  # type: ignore[index]
        assert "request ID" in answers[3]["error"]["msg"]  # type: ignore[index]
    finally:
        ws.close()
    ws = websocket.create_connection(f"{exchange.url}/ws/btcusdt@ticker", timeout=5)
    try:
        ws.send(json.dumps({"method": "GET_PROPERTY", "params": ["combined"], "id": "a1"}))
        ws.send(json.dumps({"method": "SET_PROPERTY", "params": ["combined", True], "id": None}))
        ws.send(json.dumps({"method": "GET_PROPERTY", "params": ["colour"], "id": 3}))
        assert replies(ws, 3) == [
            {"result": False, "id": "a1"},
            {"result": None, "id": None},
            {"error": {"code": 0, "msg": "Unknown property"}, "id": 3},
        ]
        tick = json.loads(ws.recv())  # combined from now on: wrapped with its stream's name
        assert tick["stream"] == "btcusdt@ticker" and tick["data"]["s"] == "BTCUSDT"
    finally:
        ws.close()


@pytest.mark.integration
def test_a_feeds_paced_changes_stay_under_the_simulators_limit(sim: tuple[SimThread, SimExchange]) -> None:
    _, exchange = sim
    feed = Feed(
        "p",
        exchange.url,
        on_text=lambda c, t: None,
        policy=FAST,
        budget=AttemptBudget(1000),
        stop=threading.Event(),
        streams=["btcusdt@ticker"],
    )
    feed.start()
    try:
        wait_for(lambda: feed.current is not None and exchange.clients, 10, "the feed's connection")
        first = feed.current
        for i in range(12):  # twelve changes in a row: twelve requests, ~4 per second
            feed.change(subscribe=[f"x{i}usdt@ticker"], unsubscribe=[f"x{i - 1}usdt@ticker"] if i else [])
        wait_for(lambda: sim_streams(exchange) == [{"btcusdt@ticker", "x11usdt@ticker"}], 10, "the server's view")
        assert feed.current is first and first is not None and first.alive, "the exchange dropped the feed"
    finally:
        feed.stop_event.set()
        feed.join(10)


# -- the ingestor as a process ----------------------------------------------------------------------------------
USDT = [f"SYM{i:04d}USDT" for i in range(600)]  # an exchange's worth: 6 connections of 100 symbols
OTHERS = [f"SYM{i:04d}BTC" for i in range(30)]
HALTED = [f"OLD{i:02d}USDT" for i in range(10)]
LISTED, DELISTED = "NEWCOINUSDT", "SYM0042USDT"
GAP_MS = 5000  # a jump in a symbol's event times beyond this is a gap (INGEST_GAP_AFTER_MS)


def metric_samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as response:  # noqa: S310 (a local test server)
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> float:
    return sum(value for (sample, _), value in samples.items() if sample == name)


def per_symbol(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str) -> dict[str, float]:
    return {dict(labels)["symbol"]: value for (sample, labels), value in samples.items() if sample == name}


def control(exchange: SimExchange, action: str, symbol: str) -> None:
    with urllib.request.urlopen(f"{exchange.rest_url}/sim/{action}?symbol={symbol}", timeout=5) as answer:  # noqa: S310
        assert answer.status == 200


@pytest.fixture
def all_usdt(kafka: TestStack, unique_topics: dict[str, str], tmp_path: Path) -> Iterator[Callable[[], Running]]:
    started: list[Running] = []

    def launch() -> Running:
        topics = {**unique_topics, "kafka_candles_topic": unique_topics["kafka_topic"] + ".candles"}
        settings = kafka.settings(**topics)
        ensure_topics(settings)
        record = tmp_path / "sim.jsonl"
        sim_thread = SimThread(SimOptions(symbols=USDT + OTHERS + HALTED, rate=1.0, record=record))
        sim = sim_thread.__enter__()
        for symbol in HALTED:
            control(sim, "delist", symbol)
        port = free_port()
        argv = ["ingest", "--symbols", "all-usdt"]
        env = kafka.env(
            BINANCE_WS_URL=sim.url,
            BINANCE_REST_URL=sim.rest_url,
            KAFKA_TOPIC=settings.kafka_topic,
            KAFKA_DLQ_TOPIC=settings.kafka_dlq_topic,
            KAFKA_CANDLES_TOPIC=settings.kafka_candles_topic,
            METRICS_PORT=str(port),
            INGEST_STREAMS_PER_CONNECTION="200",  # with klines: 100 symbols per connection
            INGEST_DISCOVERY_INTERVAL_SECONDS="1",
            INGEST_GAP_AFTER_MS=str(GAP_MS),  # each symbol ticks every second: room for a busy machine
            INGEST_STALE_AFTER_SECONDS="10",
            INGEST_SPILL_DIR=str(tmp_path / "spill"),
            PYTHONPATH=str(REPO),
        )
        ingestor = StageProcess("ingestor", argv, tmp_path / "ingestor.log", env=env).start()
        running = Running(sim, sim_thread, ingestor, settings, record, f"http://127.0.0.1:{port}", argv, env)
        started.append(running)
        return running

    yield launch
    for running in started:
        running.ingestor.stop(timeout=30)
        running.sim_thread.__exit__(None, None, None)


@pytest.mark.integration
@pytest.mark.slow
def test_all_usdt_streams_every_pair_and_applies_a_listing_and_a_delisting_live(
    all_usdt: Callable[[], Running],
) -> None:
    run = all_usdt()
    expected = sorted(s.lower() for s in USDT)
    discovered = wait_for(
        lambda: next((e for e in run.events() if e.get("event") == "symbols_discovered"), None),
        60,
        "the first discovery",
    )
    assert discovered is not None and discovered["symbols"] == len(USDT) and discovered["connections"] == 6
    wanted = {f"{s}@{kind}" for s in expected for kind in KINDS}
    wait_for(lambda: len(run.sim.clients) == 6, 60, "six connections at the simulator")
    carried = sim_streams(run.sim)
    assert set().union(*carried) == wanted and sum(map(len, carried)) == len(wanted)
    assert all(len(streams) <= 200 for streams in carried)
    wait_for(
        lambda: len(per_symbol(metric_samples(run.metrics_url), "tickpipe_ingest_messages_total")) == len(USDT),
        120,
        "ticks of every USDT symbol",
    )
    assert total(metric_samples(run.metrics_url), "tickpipe_ingest_symbols") == len(USDT)

    control(run.sim, "list", LISTED)
    control(run.sim, "delist", DELISTED)

    def changes() -> list[dict[str, object]]:
        return [e for e in run.events() if e.get("event") == "symbols_changed"]

    # One line per change (one or two: a discovery may fall between the two control calls).
    wait_for(
        lambda: sum(int(str(e["listed_count"])) + int(str(e["delisted_count"])) for e in changes()) == 2,
        60,
        "the change",
    )
    assert {e["listed"] for e in changes()} - {""} == {LISTED.lower()}
    assert {e["delisted"] for e in changes()} - {""} == {DELISTED.lower()}
    assert changes()[-1]["symbols"] == len(USDT) and changes()[-1]["connections"] == 6
    wait_for(
        lambda: per_symbol(metric_samples(run.metrics_url), "tickpipe_ingest_messages_total").get(LISTED, 0) >= 10,
        60,
        "ticks of the listed symbol",
    )
    after: set[str] = set().union(*sim_streams(run.sim))
    assert {f"{LISTED.lower()}@{kind}" for kind in KINDS} <= after
    assert not {f"{DELISTED.lower()}@{kind}" for kind in KINDS} & after
    # The listed symbol gets the start-up repair treatment (from the topic's newest candle, or the look-back) on
    # the repairer's thread, which reads the candle topic first: its line may come after the symbol's ticks.
    wait_for(
        lambda: any(e.get("event") == "repair_start_point" and e.get("symbols") == 1 for e in run.events()),
        60,
        "the listed symbol's repair start point",
    )

    samples = metric_samples(run.metrics_url)
    assert total(samples, "tickpipe_ingest_reconnects_total") == 0, "a connection was interrupted"
    assert total(samples, "tickpipe_ingest_gaps_total") == 0, "a symbol's ticks had a hole"
    assert total(samples, "tickpipe_ingest_rotations_total") == 0
    assert total(samples, "tickpipe_ingest_subscription_requests_total") >= 2  # SUBSCRIBE and UNSUBSCRIBE, live
    assert not run.logged("gap") and not run.logged("connection_lost")

    run.sim_thread.call(run.sim.go_silent(3600))
    stopped = run.stop_ingestor()
    ticks = kafka_ticks(run.settings)
    assert_once_and_in_order(ticks)
    assert sorted(ticks) == sorted(run.recorded()), "a tick the exchange sent is missing from Kafka (or extra)"
    assert stopped["ticks_sent"] == len(ticks)
    symbols = {s for s, _ in ticks}
    assert symbols == {*USDT, LISTED}, "a symbol other than the TRADING USDT pairs reached Kafka"
    for symbol in symbols - {DELISTED}:  # every other symbol streamed without a hole through the change
        times = sorted(t for s, t in ticks if s == symbol)
        assert max(b - a for a, b in itertools.pairwise(times)) < GAP_MS, symbol


@pytest.mark.integration
def test_a_connection_emptied_by_delistings_is_closed_and_listings_without_room_open_new_ones(
    kafka: TestStack, unique_topics: dict[str, str], tmp_path: Path
) -> None:
    """In-process, against the simulator and the session's Kafka: 10 symbols per connection (tickers only)."""
    from tickpipe.ingestor import metrics
    from tickpipe.ingestor.service import Ingestor

    symbols = [f"T{i:03d}USDT" for i in range(25)]
    thread = SimThread(SimOptions(symbols=symbols, rate=5.0))
    exchange = thread.__enter__()
    settings = kafka.settings(
        **unique_topics,
        binance_ws_url=exchange.url,
        binance_rest_url=exchange.rest_url,
        symbols=ALL_USDT,
        ingest_discovery_interval_seconds=0.2,
        ingest_klines=False,
        ingest_streams_per_connection=10,
        ingest_spill_dir=tmp_path / "spill",
    )
    ensure_topics(settings)
    ingestor = Ingestor(settings, settings.symbols)
    reconnects = total_reconnects()  # the registry is the test process's: count from here
    ingestor.start()
    try:
        delist_a_connection_then_list_beyond_the_room(ingestor.assigned, exchange)
        assert ingestor.live() == (True, "ok")
    finally:
        assert ingestor.stop(10) == 0
        thread.__exit__(None, None, None)
        # The gauges' callbacks hold the ingestor and its sink, and with them a producer that would retry the
        # session's broker after it stops: let them go.
        for gauge in (metrics.LAST_EVENT_AGE, metrics.SPILL_BYTES, metrics.SPILL_ACTIVE, metrics.BLOCKED_SECONDS):
            gauge.set_function(lambda: 0.0)
        del ingestor
        gc.collect()
    assert total_reconnects() == reconnects


def delist_a_connection_then_list_beyond_the_room(assigned: dict[str, list[str]], exchange: SimExchange) -> None:
    wait_for(lambda: len(exchange.clients) == 3, 30, "three connections (10, 10 and 5 symbols)")
    assert [len(assigned[name]) for name in ("0", "1", "2")] == [10, 10, 5]
    for symbol in assigned["2"]:
        control(exchange, "delist", symbol)
    wait_for(lambda: "2" not in assigned, 30, "the emptied connection closed")
    wait_for(lambda: len(exchange.clients) == 2, 30, "the simulator to see it go")
    assert (
        REGISTRY.get_sample_value("tickpipe_ingest_exchange_connected", {"source": "binance", "feed": "2"}) is None
    )  # gone, not 0
    for i in range(12):
        control(exchange, "list", f"NEW{i:02d}USDT")
    wait_for(lambda: sum(map(len, assigned.values())) == 32, 30, "the listings subscribed")
    assert {name: len(s) for name, s in assigned.items()} == {"0": 10, "1": 10, "3": 10, "4": 2}
    wait_for(lambda: len(exchange.clients) == 4, 30, "two new connections")


def total_reconnects() -> float:
    return sum(
        sample.value
        for family in REGISTRY.collect()
        if family.name == "tickpipe_ingest_reconnects"
        for sample in family.samples
        if sample.name.endswith("_total")
    )


@pytest.mark.integration
def test_all_usdt_without_an_answer_says_why_in_one_line_and_keeps_trying(
    kafka: TestStack, unique_topics: dict[str, str], tmp_path: Path
) -> None:
    settings = kafka.settings(**unique_topics)
    port, dead_rest = free_port(), free_port()  # nothing listens on dead_rest
    env = kafka.env(
        BINANCE_WS_URL="ws://127.0.0.1:9",
        BINANCE_REST_URL=f"http://127.0.0.1:{dead_rest}",
        KAFKA_TOPIC=settings.kafka_topic,
        KAFKA_DLQ_TOPIC=settings.kafka_dlq_topic,
        METRICS_PORT=str(port),
        INGEST_SPILL_DIR=str(tmp_path / "spill"),
        INGEST_KLINES="false",
        PYTHONPATH=str(REPO),
    )
    ingestor = StageProcess("ingestor", ["ingest", "--symbols", "all-usdt"], tmp_path / "i.log", env=env).start()
    try:

        def failures() -> list[dict[str, object]]:
            lines = ingestor.log_path.read_text(errors="replace").splitlines()
            events = [json.loads(line) for line in lines if line.startswith("{")]
            return [e for e in events if e.get("event") == "discovery_failed"]

        wait_for(lambda: len(failures()) >= 2, 60, "two failed discoveries")
        failed = failures()
        assert failed[0]["level"] == "error" and "BINANCE_REST_URL" in str(failed[0]["hint"])
        assert ingestor.exit_code() is None, "the ingestor gave up instead of retrying"
        samples = metric_samples(f"http://127.0.0.1:{port}")
        assert samples[("tickpipe_ingest_discovery_runs_total", (("result", "failed"),))] >= 2
        assert "Traceback" not in ingestor.log_path.read_text(errors="replace")
    finally:
        assert ingestor.stop(timeout=30)
    assert ingestor.exit_code() == 0
