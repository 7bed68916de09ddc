"""The ingestor as a process, between the simulated exchange and a real Kafka broker."""

from __future__ import annotations

import json
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO, TestStack
from tests.helpers import consume, topic_messages, wait_for
from tickpipe.config import Settings
from tickpipe.kafka import ensure_topics
from tickpipe.run.stages import StageProcess
from tickpipe.sim.server import SimExchange, SimOptions, SimThread
from tickpipe.stack.manager import LocalStack
from tickpipe.stack.process import free_port

pytestmark = pytest.mark.integration
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
STALE_AFTER = 2.0  # the stale watchdog's limit in these tests (INGEST_STALE_AFTER_SECONDS)


@dataclass
class Running:
    sim: SimExchange
    sim_thread: SimThread
    ingestor: StageProcess
    settings: Settings
    record: Path
    metrics_url: str
    argv: list[str]
    env: dict[str, str]

    def log(self) -> str:
        return self.ingestor.log_path.read_text(errors="replace")

    def restart(self) -> None:
        """A new ingestor process in place of the (stopped or killed) one: same settings, spill dir and port."""
        assert self.ingestor.exit_code() is not None, "stop the ingestor before restarting it"
        log_path = self.ingestor.log_path.with_suffix(".restarted.log")
        self.ingestor = StageProcess("ingestor", self.argv, log_path, env=self.env).start()
        wait_for(lambda: self.logged("connected"), 30, "the restarted ingestor's first connection")

    def events(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.log().splitlines() if line.startswith("{")]

    def logged(self, event: str) -> bool:
        return any(entry.get("event") == event for entry in self.events())

    def metric(self, name: str) -> float:
        with urllib.request.urlopen(f"{self.metrics_url}/metrics", timeout=5) as response:  # noqa: S310
            text = response.read().decode()
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name))

    def recorded(self) -> list[tuple[str, int]]:
        lines = self.record.read_text().splitlines() if self.record.exists() else []
        return [(entry["s"], entry["E"]) for entry in map(json.loads, lines)]

    def stop_ingestor(self) -> dict[str, object]:
        assert self.ingestor.stop(timeout=60), "the ingestor did not stop on SIGTERM"
        assert self.ingestor.exit_code() == 0, self.log()[-2000:]
        return next(e for e in reversed(self.events()) if e.get("event") == "ingestor_stopped")


def kafka_ticks(settings: Settings) -> list[tuple[str, int]]:
    """Every record of the tick topic as (symbol, event ms), in partition order."""
    out: list[tuple[str, int]] = []
    for _, key, value in topic_messages(settings, settings.kafka_topic):
        tick = json.loads(value)
        assert key is not None and key.decode() == tick["symbol"]
        out.append((tick["symbol"], parse_ms(tick["timestamp"])))
    return out


def parse_ms(timestamp: str) -> int:
    from tickpipe.schema import parse_timestamp

    return parse_timestamp(timestamp)


def assert_once_and_in_order(ticks: list[tuple[str, int]]) -> None:
    for symbol in {s for s, _ in ticks}:
        times = [t for s, t in ticks if s == symbol]
        assert times == sorted(set(times)), f"{symbol}: duplicated or out of order in Kafka"


@pytest.fixture
def start(kafka: TestStack, unique_topics: dict[str, str], tmp_path: Path) -> Iterator[object]:
    started: list[Running] = []

    def launch(
        stack: TestStack | None = None,
        *,
        env: dict[str, str] | None = None,
        args: tuple[str, ...] = (),
        **sim_options: object,
    ) -> Running:
        target = stack or kafka
        settings = target.settings(**unique_topics)
        ensure_topics(settings)
        record = tmp_path / f"sim-{len(started)}.jsonl"
        options = SimOptions(symbols=SYMBOLS, rate=20.0, record=record, **sim_options)  # type: ignore[arg-type]
        sim_thread = SimThread(options)
        sim = sim_thread.__enter__()
        port = free_port()
        argv = ["ingest", "--symbols", ",".join(SYMBOLS), *args]
        defaults = {
            "BINANCE_WS_URL": sim.url,
            "BINANCE_REST_URL": sim.rest_url,  # gap repair (candles) asks the simulator, never the internet
            "KAFKA_TOPIC": settings.kafka_topic,
            "KAFKA_DLQ_TOPIC": settings.kafka_dlq_topic,
            "KAFKA_CANDLES_TOPIC": settings.kafka_candles_topic,
            "METRICS_PORT": str(port),
            "INGEST_STALE_AFTER_SECONDS": str(STALE_AFTER),
            "INGEST_GAP_AFTER_MS": "500",
            # Each ingestor its own disk buffer (the session's state dir is shared by every test).
            "INGEST_SPILL_DIR": str(tmp_path / f"spill-{len(started)}"),
            "PYTHONPATH": str(REPO),
        }
        stage_env = target.env(**{**defaults, **(env or {})})
        ingestor = StageProcess("ingestor", argv, tmp_path / f"ingestor-{len(started)}.log", env=stage_env).start()
        running = Running(sim, sim_thread, ingestor, settings, record, f"http://127.0.0.1:{port}", argv, stage_env)
        started.append(running)
        wait_for(lambda: running.logged("connected"), 30, "the ingestor's first connection")
        return running

    yield launch
    for running in started:
        running.ingestor.stop(timeout=30)
        running.sim_thread.__exit__(None, None, None)


def test_rotation_and_server_shutdown_lose_nothing_and_double_nothing(start: object) -> None:
    run: Running = start(connection_lifetime=4.0, shutdown_notice=2.0)  # type: ignore[operator]
    # Two planned cuts per connection lifetime: serverShutdown first, then (if not yet rotated) the close.
    wait_for(lambda: run.metric('tickpipe_ingest_rotations_total{trigger="server_shutdown"}') >= 2, 60, "two rotations")
    run.sim_thread.call(run.sim.go_silent(3600))
    stopped = run.stop_ingestor()
    ticks = kafka_ticks(run.settings)
    assert_once_and_in_order(ticks)
    assert sorted(ticks) == sorted(run.recorded()), "a tick the exchange sent is missing from Kafka"
    assert stopped["ticks_sent"] == len(ticks)
    assert not run.logged("gap")


def test_drops_and_stale_connections_reconnect_and_report_the_gap(start: object) -> None:
    run: Running = start(ping_interval=0.5, ping_timeout=1.0)  # pings answered: no drop from them
    wait_for(lambda: run.metric("tickpipe_ingest_messages_total") >= 60, 30, "ticks flowing")
    run.sim_thread.call(run.sim.drop_connections())
    wait_for(
        lambda: run.metric('tickpipe_ingest_reconnects_total{reason="dropped"}') >= 1, 30, "a reconnect after the drop"
    )
    run.sim_thread.call(run.sim.go_silent(4))
    wait_for(lambda: run.metric('tickpipe_ingest_reconnects_total{reason="stale"}') >= 1, 30, "the stale watchdog")
    wait_for(lambda: run.metric("tickpipe_ingest_gaps_total") >= 1, 30, "a reported gap")
    before = run.metric("tickpipe_ingest_messages_total")
    wait_for(lambda: run.metric("tickpipe_ingest_messages_total") > before + 30, 30, "ticks flowing again")
    # Exactly the two forced reconnects: the pings every 0.5 s (1 s timeout) were all answered.
    assert run.metric("tickpipe_ingest_reconnects_total") == 2
    run.sim_thread.call(run.sim.go_silent(3600))
    stopped = run.stop_ingestor()
    ticks = kafka_ticks(run.settings)
    assert_once_and_in_order(ticks)
    assert set(ticks) <= set(run.recorded())
    assert stopped["ticks_sent"] == len(ticks)
    gap = next(e for e in run.events() if e.get("event") == "gap")
    assert gap["symbol"] in SYMBOLS
    assert gap["before"] > gap["after"]  # type: ignore[operator]


def test_malformed_frames_go_to_the_dead_letter_topic_with_a_reason(start: object) -> None:
    run: Running = start(malformed_every=10)
    wait_for(lambda: run.metric("tickpipe_ingest_dlq_total") >= 5, 30, "five dead letters")
    run.sim_thread.call(run.sim.go_silent(3600))
    run.stop_ingestor()
    dead = consume(run.settings, run.settings.kafka_dlq_topic, 5)
    reasons = {record["reason"].split(":")[0].split(",")[0] for record in dead}
    assert reasons >= {"not JSON", "price is not a number", "missing fields", "price must be positive"}
    assert all(record["stage"] == "ingestor" and record["raw"] for record in dead)
    assert_once_and_in_order(kafka_ticks(run.settings))


def test_sigterm_mid_stream_delivers_everything_it_received(start: object) -> None:
    run: Running = start()
    wait_for(lambda: run.metric("tickpipe_ingest_messages_total") >= 100, 30, "ticks flowing")
    stopped = run.stop_ingestor()  # the exchange is still publishing
    ticks = kafka_ticks(run.settings)
    assert stopped["ticks_sent"] == len(ticks) > 0
    assert_once_and_in_order(ticks)
    assert set(ticks) <= set(run.recorded())


def test_a_broker_outage_is_buffered_and_delivered_once(start: object, stack_home: Path) -> None:
    broker = LocalStack(stack_home, (REPO / ".deps" / "jars").resolve())
    private = TestStack(stack_home)
    private.local = broker
    private.require("kafka")
    run: Running = start(private)
    wait_for(lambda: run.metric("tickpipe_ingest_produced_total") >= 40, 30, "ticks acknowledged")
    broker.kill("kafka")
    queued_before = run.sim.published
    wait_for(lambda: run.sim.published >= queued_before + 100, 30, "ticks sent during the outage")
    broker.up(("kafka",), timeout=120)
    wait_for(lambda: run.metric("tickpipe_ingest_producer_queue_messages") == 0, 90, "the backlog delivered")
    run.sim_thread.call(run.sim.go_silent(3600))
    stopped = run.stop_ingestor()
    ticks = kafka_ticks(run.settings)
    assert_once_and_in_order(ticks)
    assert sorted(ticks) == sorted(run.recorded())
    assert stopped["ticks_sent"] == len(ticks)


def test_python_is_the_one_the_stage_runs_with() -> None:
    assert StageProcess("x", [], Path("x")).argv[0] == sys.executable


@pytest.mark.parametrize("status", [451, 403])
def test_an_exchange_refusing_the_connection_is_named_in_one_line_and_the_ingestor_stays_ready(
    kafka: TestStack, unique_topics: dict[str, str], tmp_path: Path, status: int
) -> None:
    from tests.ingestor.test_feed import refusing_server

    port = free_port()
    with refusing_server(status) as url:
        ingestor = StageProcess(
            "ingestor",
            ["ingest", "--symbols", "btcusdt"],
            tmp_path / "ingestor.log",
            env=kafka.env(
                BINANCE_WS_URL=url,
                INGEST_KLINES="false",
                METRICS_PORT=str(port),
                INGEST_SPILL_DIR=str(tmp_path / "spill"),
                KAFKA_TOPIC=unique_topics["kafka_topic"],
                PYTHONPATH=str(REPO),
            ),
        ).start()
        try:
            wait_for(lambda: '"exchange_refused"' in ingestor.log_path.read_text(), 30, "the refusal logged")
            refused = next(
                json.loads(entry)
                for entry in ingestor.log_path.read_text().splitlines()
                if '"exchange_refused"' in entry
            )
            metrics_url = f"http://127.0.0.1:{port}"
            with urllib.request.urlopen(f"{metrics_url}/readyz", timeout=5) as response:  # noqa: S310
                assert response.status == 200, "ready to produce: the exchange's state is a gauge, not readiness"
            with urllib.request.urlopen(f"{metrics_url}/metrics", timeout=5) as response:  # noqa: S310
                text = response.read().decode()
        finally:
            assert ingestor.stop(timeout=60)
    assert refused["status"] == status and refused["level"] == "error"
    assert "BINANCE_WS_URL" in refused["error"]
    if status == 451:
        assert "restricted region" in refused["error"]
    assert 'tickpipe_ingest_exchange_connected{feed="0",source="binance"} 0.0' in text
    assert "Traceback" not in ingestor.log_path.read_text()
