"""Kafka outages against the ingestor process, scaled in time: a tiny producer queue and disk budget instead of a
ten-minute outage. The broker is a private one (SIGSTOP'ed to hang it), never the session's; every tick the
simulated exchange sent (its --record) is counted in Kafka afterwards."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import EXTERNAL, REPO, TestStack, traversable_tmpdir
from tests.helpers import wait_for
from tests.ingestor.test_ingestor import STALE_AFTER, Running, kafka_ticks, start
from tickpipe.stack.manager import LocalStack

pytestmark = pytest.mark.integration
__all__ = ["start"]  # the fixture, shared with test_ingestor.py
TINY_QUEUE = "5"  # INGEST_QUEUE_MAX_MESSAGES: full within a tenth of a second at these rates


@pytest.fixture(scope="module")
def private_kafka() -> Iterator[TestStack]:
    """A broker of this module's own, so hanging it never touches the session's."""
    if EXTERNAL:
        pytest.skip("hangs a broker of its own: not with TICKPIPE_TEST_EXTERNAL=1")
    home = traversable_tmpdir("tickpipe-test-outage-")
    stack = TestStack(home)
    stack.local = LocalStack(home, (REPO / ".deps" / "jars").resolve())
    try:
        stack.require("kafka")
        yield stack
    finally:
        resume(stack)
        stack.local.down()
        shutil.rmtree(home, ignore_errors=True)


def broker_pids(stack: TestStack) -> list[int]:
    return [row.pid for row in stack.local.status() if row.component == "kafka" and row.pid and row.running]


def hang(stack: TestStack) -> None:
    """The broker stops answering but keeps its connections open: the worst kind of outage for a client."""
    for pid in broker_pids(stack):
        os.killpg(pid, signal.SIGSTOP)


def resume(stack: TestStack) -> None:
    for pid in broker_pids(stack):
        os.killpg(pid, signal.SIGCONT)


@pytest.fixture
def hung(private_kafka: TestStack) -> Iterator[TestStack]:
    try:
        yield private_kafka
    finally:
        resume(private_kafka)


def readyz(run: Running) -> int:
    try:
        with urllib.request.urlopen(f"{run.metrics_url}/readyz", timeout=5) as response:  # noqa: S310
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def read_everything(run: Running, already: float = 0) -> None:
    """Silence the exchange, then wait until the ingestor has taken every tick it sent: none left in a socket."""
    run.sim_thread.call(run.sim.go_silent(3600))
    wait_for(
        lambda: already + run.metric("tickpipe_ingest_messages_total") >= run.sim.published,
        60,
        "every sent tick read by the ingestor",
    )


def drained(run: Running) -> bool:
    return (
        run.metric("tickpipe_ingest_spill_active") == 0
        and run.metric("tickpipe_ingest_spill_bytes") == 0
        and run.metric("tickpipe_ingest_producer_queue_messages") == 0
    )


def first_occurrences_in_order(ticks: list[tuple[str, int]]) -> None:
    """Per symbol, each tick's first arrival is newer than every earlier one (repeats of a tick are allowed: the
    MA job drops them by (symbol, event time))."""
    for symbol in {s for s, _ in ticks}:
        seen: list[int] = []
        for s, t in ticks:
            if s == symbol and t not in seen:
                assert not seen or t > seen[-1], f"{symbol}: {t} arrived after the newer {seen[-1]}"
                seen.append(t)


def exactly_once_in_order(ticks: list[tuple[str, int]]) -> None:
    for symbol in {s for s, _ in ticks}:
        times = [t for s, t in ticks if s == symbol]
        assert times == sorted(set(times)), f"{symbol}: duplicated or out of order in Kafka"


def test_a_queue_full_while_kafka_acknowledges_is_flow_control_not_an_outage(
    start: object, private_kafka: TestStack
) -> None:
    """Five records fill the queue faster than the broker acknowledges them (linger, acks=all), many times a second:
    the reader waits for room instead of sending ticks to disk and back, and the readiness stays up."""
    run: Running = start(private_kafka, env={"INGEST_QUEUE_MAX_MESSAGES": TINY_QUEUE})  # type: ignore[operator]
    wait_for(lambda: run.metric("tickpipe_ingest_queue_wait_seconds_total") > 0, 30, "a wait for room in the queue")
    wait_for(lambda: run.metric("tickpipe_ingest_produced_total") >= 200, 30, "ticks acknowledged")
    assert readyz(run) == 200
    read_everything(run)
    wait_for(lambda: drained(run), 60, "the last ticks delivered")
    assert run.metric("tickpipe_ingest_spill_written_total") == 0, "a healthy broker sent ticks to the disk buffer"
    run.stop_ingestor()
    assert not run.logged("spill_started"), "a healthy broker sent ticks to the disk buffer"
    assert not run.logged("producer_queue_full")
    ticks = kafka_ticks(run.settings)
    exactly_once_in_order(ticks)
    assert sorted(ticks) == sorted(run.recorded()), "a tick the exchange sent is missing from Kafka"


@contextlib.contextmanager
def slowed(stack: TestStack, stopped: float = 0.5, running: float = 0.1) -> Iterator[None]:
    """A broker alive but slower than the exchange: stopped for `stopped` s of every `stopped + running`, so it
    acknowledges a few records at a time, always within QUEUE_STALL_SECONDS of the last (never a hang)."""
    done = threading.Event()

    def duty_cycle() -> None:
        while not done.is_set():
            hang(stack)
            done.wait(stopped)
            resume(stack)
            done.wait(running)

    thread = threading.Thread(target=duty_cycle, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        resume(stack)


def test_a_slow_broker_spills_instead_of_holding_the_exchange_reader(start: object, hung: TestStack) -> None:
    """Kafka acknowledges, but fewer records than the exchange sends: the reader keeps reading the exchange (a held
    reader answers no pings and the exchange would drop it), the ticks go to disk, and all arrive once in order."""
    run: Running = start(hung, env={"INGEST_QUEUE_MAX_MESSAGES": TINY_QUEUE})  # type: ignore[operator]
    wait_for(lambda: run.metric("tickpipe_ingest_produced_total") >= 40, 30, "ticks acknowledged")
    with slowed(hung):
        wait_for(lambda: run.logged("spill_started"), 60, "the disk buffer taking over from a slow broker")
        started = next(e for e in run.events() if e.get("event") == "spill_started")
        assert started["cause"] == "kafka_slow", started
        read_everything(run)  # while Kafka is still slow: the exchange's socket is not left to fill
        assert readyz(run) == 200
    wait_for(lambda: drained(run), 90, "the disk buffer drained")
    stopped = run.stop_ingestor()
    assert not run.logged("connection_stale")
    ticks = kafka_ticks(run.settings)
    exactly_once_in_order(ticks)
    assert sorted(ticks) == sorted(run.recorded()), "a tick the exchange sent is missing from Kafka"
    assert stopped["ticks_sent"] == len(ticks)


def test_a_hung_broker_with_a_tiny_queue_and_no_disk_loses_nothing(start: object, hung: TestStack) -> None:
    """Defect 2: the full queue holds the reader (back-pressure); that is not silence, so the watchdog keeps the
    connection and the frames waiting in its socket are read once Kafka is back."""
    run: Running = start(hung, env={"INGEST_QUEUE_MAX_MESSAGES": TINY_QUEUE, "INGEST_SPILL_MAX_BYTES": "0"})  # type: ignore[operator]
    wait_for(lambda: run.metric("tickpipe_ingest_produced_total") >= 40, 30, "ticks acknowledged")
    hang(hung)
    wait_for(lambda: run.logged("producer_queue_full"), 30, "the queue full")
    blocked_at = time.monotonic()
    # The fault lasts three stale periods (the watchdog would have replaced the connection after one).
    wait_for(lambda: time.monotonic() - blocked_at > 3 * STALE_AFTER, 30, "a hang of three stale periods")
    resume(hung)
    read_everything(run)
    wait_for(lambda: run.metric("tickpipe_ingest_producer_queue_messages") == 0, 60, "the queue delivered")
    stopped = run.stop_ingestor()
    assert not run.logged("connection_stale"), "the watchdog replaced a connection the ingestor itself held"
    ticks = kafka_ticks(run.settings)
    exactly_once_in_order(ticks)
    assert sorted(ticks) == sorted(run.recorded()), "a tick the exchange sent is missing from Kafka"
    assert stopped["ticks_sent"] == len(ticks)


def test_a_hung_broker_spills_to_disk_and_everything_arrives_once_in_order(start: object, hung: TestStack) -> None:
    run: Running = start(hung, env={"INGEST_QUEUE_MAX_MESSAGES": TINY_QUEUE})  # type: ignore[operator]
    wait_for(lambda: run.metric("tickpipe_ingest_produced_total") >= 40, 30, "ticks acknowledged")
    hang(hung)
    wait_for(lambda: run.metric("tickpipe_ingest_spill_written_total") >= 200, 60, "ticks spilled to disk")
    assert run.metric("tickpipe_ingest_spill_bytes") > 0
    assert readyz(run) == 200, "spilling to disk is still ready to take ticks"
    resume(hung)
    wait_for(lambda: drained(run), 60, "the disk buffer drained")
    read_everything(run)
    wait_for(lambda: drained(run), 60, "the last ticks delivered")
    spilled = run.metric("tickpipe_ingest_spill_written_total")
    assert run.metric("tickpipe_ingest_spill_replayed_total") == spilled
    stopped = run.stop_ingestor()
    ticks = kafka_ticks(run.settings)
    exactly_once_in_order(ticks)
    assert sorted(ticks) == sorted(run.recorded()), "a tick the exchange sent is missing from Kafka"
    assert stopped["ticks_sent"] == len(ticks)
    started = [e for e in run.events() if e.get("event") == "spill_started"]
    ended = [e for e in run.events() if e.get("event") == "spill_drained"]
    assert len(started) == len(ended) >= 1
    assert all(e["queued"] <= int(TINY_QUEUE) for e in started)
    assert sum(e["written"] for e in ended) == sum(e["replayed"] for e in ended) == spilled  # type: ignore[misc]
    assert not run.logged("connection_stale")
    assert not list(Path(run.env["INGEST_SPILL_DIR"]).glob("*.seg")), "acknowledged segments are deleted"


@pytest.mark.slow
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_spilled_ticks_survive_a_restart_and_go_before_newer_ones(
    start: object, hung: TestStack, stop_signal: signal.Signals
) -> None:
    run: Running = start(hung, env={"INGEST_QUEUE_MAX_MESSAGES": TINY_QUEUE})  # type: ignore[operator]
    wait_for(lambda: run.metric("tickpipe_ingest_produced_total") >= 40, 30, "ticks acknowledged")
    hang(hung)
    wait_for(lambda: run.metric("tickpipe_ingest_spill_written_total") >= 100, 60, "ticks spilled to disk")
    read_everything(run)  # nothing left in the socket: what the first process read is all it can save
    first_read = run.metric("tickpipe_ingest_messages_total")
    run.ingestor.stop_signal = stop_signal
    stopping = time.monotonic()
    run.ingestor.stop(timeout=60)
    saved = [e for e in run.events() if e.get("event") == "spill_saved_on_stop"]
    if stop_signal is signal.SIGTERM:
        assert run.ingestor.exit_code() == 0, run.log()[-2000:]
        assert saved and saved[0]["records"] <= int(TINY_QUEUE), "the queue's records go to disk on SIGTERM"
        # Not the whole --flush-timeout (30 s, a pod's default grace period): a Kafka that makes no progress
        # for a few seconds is given up on, and the rest goes to disk.
        assert time.monotonic() - stopping < 25
    run.restart()
    assert run.logged("spill_found")
    run.sim_thread.call(run.sim.go_silent(0))  # newer ticks, while Kafka is still away: behind the old ones
    wait_for(lambda: run.metric("tickpipe_ingest_spill_written_total") >= 60, 60, "newer ticks spilled")
    resume(hung)
    wait_for(lambda: drained(run), 90, "the disk buffer drained after the restart")
    read_everything(run, already=first_read)
    sent = set(run.recorded())
    # In Kafka, not just out of the ingestor's metrics: a stop now would keep on disk what a slow, just resumed
    # broker has not acknowledged within STOP_STALL_SECONDS (not lost, but not in the topic this test reads).
    lost_to_kill = int(TINY_QUEUE) if stop_signal is signal.SIGKILL else 0
    wait_for(
        lambda: drained(run) and len(sent - set(kafka_ticks(run.settings))) <= lost_to_kill,
        90,
        "every sent tick in Kafka (but what a kill may lose)",
    )
    run.stop_ingestor()
    ticks = kafka_ticks(run.settings)
    first_occurrences_in_order(ticks)
    missing = sent - set(ticks)
    repeats = len(ticks) - len(set(ticks))
    if stop_signal is signal.SIGTERM:
        assert not missing, f"{len(missing)} ticks lost across the restart"
    else:
        # A hard kill loses the producer's memory (at most the queue) but nothing that reached the disk.
        assert len(missing) <= int(TINY_QUEUE), f"{len(missing)} ticks lost, more than the in-memory queue"
    # Only what was in the producer when the broker hung (at most its queue) can come twice: saved on stop or left
    # unacknowledged on disk, and maybe written by the broker after all. What it acknowledged is not sent again.
    assert repeats <= int(TINY_QUEUE), f"{repeats} ticks twice in Kafka"
    assert set(ticks) <= sent


def test_an_exhausted_disk_budget_drops_counts_and_reports_the_gap(start: object, hung: TestStack) -> None:
    run: Running = start(  # type: ignore[operator]
        hung, env={"INGEST_QUEUE_MAX_MESSAGES": TINY_QUEUE, "INGEST_SPILL_MAX_BYTES": "20000"}
    )
    wait_for(lambda: run.metric("tickpipe_ingest_produced_total") >= 40, 30, "ticks acknowledged")
    hang(hung)
    wait_for(lambda: run.metric("tickpipe_ingest_spill_dropped_total") >= 60, 60, "ticks dropped once the disk is full")
    assert run.metric("tickpipe_ingest_spill_bytes") <= 20000
    assert readyz(run) == 503, "dropping ticks is not ready"
    assert run.logged("spill_full")
    resume(hung)
    wait_for(lambda: drained(run), 60, "the disk buffer drained")
    read_everything(run)
    wait_for(lambda: drained(run), 60, "the last ticks delivered")
    assert readyz(run) == 200
    dropped = run.metric('tickpipe_ingest_spill_dropped_total{topic="ticks"}')
    gaps_counted = run.metric("tickpipe_ingest_gaps_total")
    run.stop_ingestor()
    ticks = kafka_ticks(run.settings)
    exactly_once_in_order(ticks)
    lost = set(run.recorded()) - set(ticks)
    assert len(lost) == dropped > 0, "every tick not in Kafka is a counted drop"
    gaps = [e for e in run.events() if e.get("event") == "gap" and e.get("cause") == "spill_full"]
    assert sum(int(g["lost"]) for g in gaps) == dropped  # type: ignore[call-overload]
    assert {g["symbol"] for g in gaps} == {s for s, _ in lost}
    for gap in gaps:
        assert all(
            gap["first_lost"] <= t <= gap["last_lost"]
            for s, t in lost
            if s == gap["symbol"]  # type: ignore[operator]
        )
    assert gaps_counted >= len(gaps)
