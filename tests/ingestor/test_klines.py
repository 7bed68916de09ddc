"""Closed 1m candles from the simulated exchange into a real Kafka topic, and the repair of the minutes missed.

The simulator runs its clock 60 times as fast (an exchange minute per real second), so minutes of outage pass in
seconds. The expected candles come from the exchange's own REST answer, read by the test over HTTP and parsed here.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, TestStack
from tests.helpers import consume, topic_messages, wait_for
from tests.ingestor.test_ingestor import Running
from tickpipe.kafka import ensure_topics
from tickpipe.run.stages import StageProcess
from tickpipe.schema import parse_timestamp
from tickpipe.sim.server import SimOptions, SimThread
from tickpipe.stack.process import free_port

pytestmark = pytest.mark.integration
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
MINUTE = 60_000
CLOCK_SPEED = 60.0  # one exchange minute per real second


@pytest.fixture
def start(kafka: TestStack, unique_topics: dict[str, str], tmp_path: Path) -> Iterator[Callable[..., Running]]:
    started: list[Running] = []

    def launch(*, env: dict[str, str] | None = None, **sim_options: Any) -> Running:
        topics = {**unique_topics, "kafka_candles_topic": f"candles-{uuid.uuid4().hex[:10]}"}
        settings = kafka.settings(**topics)
        ensure_topics(settings)
        record = tmp_path / f"sim-{len(started)}.jsonl"
        options = SimOptions(symbols=SYMBOLS, rate=5.0, clock_speed=CLOCK_SPEED, record=record, **sim_options)
        sim_thread = SimThread(options)
        sim = sim_thread.__enter__()
        port = free_port()
        argv = ["ingest", "--symbols", ",".join(SYMBOLS)]
        defaults = {
            "BINANCE_WS_URL": sim.url,
            "BINANCE_REST_URL": sim.rest_url,
            "KAFKA_TOPIC": settings.kafka_topic,
            "KAFKA_DLQ_TOPIC": settings.kafka_dlq_topic,
            "KAFKA_CANDLES_TOPIC": settings.kafka_candles_topic,
            "METRICS_PORT": str(port),
            "INGEST_STALE_AFTER_SECONDS": "3",
            "INGEST_GAP_AFTER_MS": str(3_600_000),  # ticks 12 exchange-seconds apart are no gap here
            # The default look-back, a day, is 24 s of this clock: an ingestor starting later than that on a loaded
            # machine rightly never fetches the exchange's first minutes, which the tests expect. A week is 168 s.
            "INGEST_REPAIR_LOOKBACK_MINUTES": str(7 * 24 * 60),
            "INGEST_SPILL_DIR": str(tmp_path / f"spill-{len(started)}"),
            "PYTHONPATH": str(REPO),
        }
        stage_env = kafka.env(**{**defaults, **(env or {})})
        ingestor = StageProcess("ingestor", argv, tmp_path / f"ingestor-{len(started)}.log", env=stage_env).start()
        running = Running(sim, sim_thread, ingestor, settings, record, f"http://127.0.0.1:{port}", argv, stage_env)
        started.append(running)
        wait_for(lambda: running.logged("connected"), 30, "the ingestor's first connection")
        return running

    yield launch
    for running in started:
        running.ingestor.stop(timeout=30)
        running.sim_thread.__exit__(None, None, None)


def topic_candles(run: Running) -> list[dict[str, Any]]:
    """Every record of the candle topic (its key checked), in partition order."""
    out: list[dict[str, Any]] = []
    for partition, key, value in topic_messages(run.settings, run.settings.kafka_candles_topic):
        candle = json.loads(value)
        assert key == f"binance:{candle['symbol']}".encode()
        out.append({**candle, "_partition": partition, "open_ms": parse_timestamp(candle["open_time"])})
    return out


def exchange_candles(run: Running, symbol: str, first_ms: int, last_ms: int) -> dict[int, dict[str, Any]]:
    """The exchange's candles for [first, last] from its REST endpoint, parsed here (not by the ingestor's code)."""
    rows: list[list[Any]] = []
    start = first_ms
    while start <= last_ms:
        url = f"{run.sim.rest_url}/api/v3/klines?symbol={symbol}&interval=1m&startTime={start}&endTime={last_ms}"
        with urllib.request.urlopen(url + "&limit=1000", timeout=10) as response:  # noqa: S310
            page = json.loads(response.read())
        if not page:
            break
        rows += page
        start = page[-1][0] + MINUTE
    fields = ("open", "high", "low", "close", "volume")
    return {
        row[0]: {
            **{name: float(row[i]) for i, name in enumerate(fields, start=1)},
            "quote_volume": float(row[7]),
            "trades": row[8],
        }
        for row in rows
    }


def assert_every_minute_is_the_exchanges(run: Running, candles: list[dict[str, Any]], first_ms: int) -> int:
    """For each symbol: one candle per minute from `first_ms` to its newest on the topic, no minute missing, each
    equal to the exchange's; a minute on the topic twice only if both are equal. Returns the number of repeats."""
    repeats = 0
    for symbol in SYMBOLS:
        mine = [c for c in candles if c["symbol"] == symbol]
        by_minute: dict[int, dict[str, Any]] = {}
        for candle in mine:
            values = {k: candle[k] for k in ("open", "high", "low", "close", "volume", "quote_volume", "trades")}
            if candle["open_ms"] in by_minute:
                repeats += 1
                assert by_minute[candle["open_ms"]] == values, f"{symbol}: two different candles for one minute"
            by_minute[candle["open_ms"]] = values
        last = max(by_minute)
        minutes = set(range(first_ms, last + MINUTE, MINUTE))
        missing = sorted(minutes - set(by_minute))
        assert not missing, f"{symbol}: {len(missing)} minutes missing, first {missing[:3]}"
        expected = exchange_candles(run, symbol, first_ms, last)
        assert set(expected) == minutes
        for minute in sorted(minutes):
            assert by_minute[minute] == pytest.approx(expected[minute], rel=1e-12), f"{symbol} at {minute}"
    return repeats


def first_minute(run: Running) -> int:
    """The exchange's first candle (it opened mid-minute: that minute's candle is its first)."""
    return min(book.closed[0].open_time_ms for book in run.sim.books.values())


def streamed(run: Running) -> float:
    return run.metric('tickpipe_ingest_candles_total{origin="stream"}')


def test_streamed_closed_candles_equal_the_exchanges_rest_candles(start: Callable[..., Running]) -> None:
    run = start()
    wait_for(lambda: streamed(run) >= 5 * len(SYMBOLS), 60, "five streamed candles per symbol")
    assert run.metric("tickpipe_ingest_open_candles_total") > 0
    run.stop_ingestor()
    candles = topic_candles(run)
    assert {c["origin"] for c in candles} <= {"stream", "repair"}
    assert len([c for c in candles if c["origin"] == "stream"]) >= 5 * len(SYMBOLS)
    assert assert_every_minute_is_the_exchanges(run, candles, first_minute(run)) == 0
    assert all(c["interval"] == "1m" and c["source"] == "binance" for c in candles)


def test_minutes_missed_while_the_connection_was_down_are_repaired(start: Callable[..., Running]) -> None:
    run = start()
    wait_for(lambda: streamed(run) >= 2 * len(SYMBOLS), 60, "candles streaming")
    run.sim.options.refuse_status = 503  # no new connection for a while: the exchange is unreachable
    run.sim_thread.call(run.sim.drop_connections())
    down_at = run.sim.now_ms()
    wait_for(lambda: run.sim.now_ms() - down_at >= 5 * MINUTE, 30, "five exchange minutes of outage")
    run.sim.options.refuse_status = None
    wait_for(lambda: run.metric('tickpipe_ingest_reconnects_total{reason="dropped"}') >= 1, 30, "the reconnect")

    def outage_repairs() -> list[dict[str, Any]]:
        return [
            e
            for e in run.events()
            if e.get("event") == "candles_repaired" and e["cause"] == "stream_gap" and e["minutes"] >= 4
        ]

    wait_for(lambda: {e["symbol"] for e in outage_repairs()} == set(SYMBOLS), 60, "the repair of each symbol's hole")
    repairs = [e for e in run.events() if e.get("event") == "candles_repaired"]
    assert all(e["candles"] == e["minutes"] for e in repairs if e["cause"] == "stream_gap"), repairs
    before = streamed(run)
    wait_for(lambda: streamed(run) >= before + 2 * len(SYMBOLS), 60, "candles streaming again")
    assert run.metric('tickpipe_ingest_repairs_total{result="abandoned"}') == 0
    run.stop_ingestor()
    candles = topic_candles(run)
    assert assert_every_minute_is_the_exchanges(run, candles, first_minute(run)) == 0


def test_minutes_missed_while_the_ingestor_was_stopped_are_repaired_at_its_start(
    start: Callable[..., Running],
) -> None:
    run = start()
    wait_for(lambda: streamed(run) >= 2 * len(SYMBOLS), 60, "candles streaming")
    run.stop_ingestor()
    stopped_at = run.sim.now_ms()
    wait_for(lambda: run.sim.now_ms() - stopped_at >= 5 * MINUTE, 30, "five exchange minutes without the ingestor")
    run.restart()
    wait_for(
        lambda: len([e for e in run.events() if e.get("event") == "candles_repaired"]) >= len(SYMBOLS),
        60,
        "the start-up repair of every symbol",
    )
    start_point = next(e for e in run.events() if e.get("event") == "repair_start_point")
    assert start_point["found"] == len(SYMBOLS), "the newest candles published before were found on the topic"
    wait_for(lambda: streamed(run) >= 2 * len(SYMBOLS), 60, "candles streaming after the restart")
    run.stop_ingestor()
    candles = topic_candles(run)
    repaired = [c for c in candles if c["origin"] == "repair"]
    assert len(repaired) >= 4 * len(SYMBOLS)
    # Repeats are harmless (the job keeps one per minute), and the start-up claim keeps them to nearly none.
    assert assert_every_minute_is_the_exchanges(run, candles, first_minute(run)) <= len(SYMBOLS)


def test_a_bad_kline_goes_to_the_dead_letter_topic_with_its_reason(start: Callable[..., Running]) -> None:
    run = start()
    bad = {"e": "kline", "E": 1, "s": "BTCUSDT", "k": {"t": 60_000, "s": "BTCUSDT", "i": "1m", "x": True, "o": "1"}}
    frame = json.dumps({"stream": "btcusdt@kline_1m", "data": bad})

    async def send_bad() -> None:
        for client in list(run.sim.clients):
            await client.connection.send(frame)

    run.sim_thread.call(send_bad())
    wait_for(lambda: run.metric("tickpipe_ingest_dlq_total") >= 1, 30, "the dead letter")
    run.stop_ingestor()
    dead = consume(run.settings, run.settings.kafka_dlq_topic, 1)
    assert dead[0]["reason"] == "missing kline fields: h, l, c, v"
    assert dead[0]["stage"] == "ingestor" and json.loads(dead[0]["raw"])["data"] == bad


def test_the_exchanges_429_is_waited_out_and_the_repair_completes(start: Callable[..., Running]) -> None:
    # 4 weight per exchange minute: the start-up repair of three symbols (time 1 + klines 2 each) runs into 429.
    run = start(rest_weight_limit=4)
    wait_for(
        lambda: run.metric('tickpipe_ingest_repair_rate_limit_waits_total{reason="429"}') >= 1, 60, "a 429 waited out"
    )
    wait_for(
        lambda: len([e for e in run.events() if e.get("event") == "candles_repaired"]) >= len(SYMBOLS),
        60,
        "every symbol's start-up repair",
    )
    wait_for(lambda: streamed(run) >= 2 * len(SYMBOLS), 60, "candles streaming")
    run.stop_ingestor()
    assert not run.logged("repair_banned"), "the client kept calling while limited"
    run.sim.rest.weight_limit = 6000  # the test's own reading
    candles = topic_candles(run)
    assert_every_minute_is_the_exchanges(run, candles, first_minute(run))


def test_a_ban_ends_the_rest_client_instead_of_prolonging_it() -> None:
    import threading

    from tickpipe.ingestor.rest import RestBanned, RestClient

    with SimThread(SimOptions(symbols=SYMBOLS, rest_weight_limit=2)) as sim:
        status = []
        for _ in range(6):  # another client of the IP keeps calling while limited: the exchange bans the IP
            try:
                urllib.request.urlopen(f"{sim.rest_url}/api/v3/time", timeout=5).close()  # noqa: S310
                status.append(200)
            except urllib.error.HTTPError as error:
                status.append(error.code)
        assert status[-1] == 418
        client = RestClient(sim.rest_url, 1200, threading.Event())
        with pytest.raises(RestBanned, match="HTTP 418"):
            client.klines("BTCUSDT", 0, 60_000)
        assert client.requests == 1, "one request, then it stops"
