"""Ingestor replicas: one leader produces, hot standbys read the same streams and take over without a gap.

Every replica keeps its exchange connections open and routes every message; only the holder of the Lease
(tickpipe.ingestor.leadership) hands ticks to Kafka. A standby keeps each symbol's last INGEST_STANDBY_BUFFER_SECONDS
of ticks instead. When it wins the Lease it reads what is already in the tick topic from the oldest buffered tick's
time on (tickpipe.topic_reader), produces the buffered ticks newer than each symbol's newest one there, and then
produces live: the ticks the old leader read but never delivered are sent once, and those it did deliver are not
sent again. The old leader stops producing when it cannot renew within the renew deadline (10 s), before the Lease
can expire for anyone else (15 s), so two replicas never produce at the same time.

Dead letters are the leader's alone (every replica sees the same bad message). A buffer shorter than the takeover
leaves a hole: it is logged (`takeover_gap`) and counted, as any exchange gap is.
"""

from __future__ import annotations

import os
import socket
import threading
from collections import deque
from collections.abc import Callable
from enum import Enum
from pathlib import Path

from confluent_kafka import KafkaException

from tickpipe.config import Settings, state_dir
from tickpipe.errors import CommandError, ConfigError
from tickpipe.ingestor import metrics
from tickpipe.ingestor.leadership import RETRY_PERIOD, Elector, FileLeaseStore, KubernetesLeaseStore, LeaseStore
from tickpipe.ingestor.sink import KafkaSink
from tickpipe.logs import get_logger
from tickpipe.schema import InvalidTick, Tick, parse_tick
from tickpipe.topic_reader import read_messages

log = get_logger("tickpipe.ingestor")

# How far the takeover looks back before the oldest buffered tick: Kafka's record time is the producer's clock at
# send time, which may lag the exchange's event time by the old leader's queueing.
READ_MARGIN_MS = 60_000


class Role(Enum):
    STANDBY = "standby"
    LEADER = "leader"


def newest_in_topic(settings: Settings, since_ms: int) -> dict[str, int]:
    """Each symbol's newest event time among the tick topic's records written from `since_ms` on."""
    newest: dict[str, int] = {}
    for message in read_messages(settings, settings.kafka_topic, since_ms=since_ms, purpose="ingestor-takeover"):
        try:
            tick = parse_tick(message.value())
        except InvalidTick:
            continue  # not ours to judge here: the job dead-letters it
        if tick.event_time_ms > newest.get(tick.symbol, -1):
            newest[tick.symbol] = tick.event_time_ms
    return newest


class LeaderGate:
    """Stands where the router's sink is: produces while leading, buffers while standing by."""

    def __init__(
        self,
        sink: KafkaSink,
        elector: Elector,
        *,
        buffer_ms: int,
        newest_in_kafka: Callable[[int], dict[str, int]],
    ) -> None:
        self.sink, self.elector, self.buffer_ms = sink, elector, buffer_ms
        self.newest_in_kafka = newest_in_kafka
        self.role = Role.STANDBY
        self._buffer: dict[str, deque[Tick]] = {}
        self._lock = threading.Lock()
        metrics.LEADER.set(0)

    # -- the router's side (under its lock, one message at a time) ---------------------------------------------------
    def send(self, tick: Tick) -> None:
        with self._lock:
            if self.role is Role.LEADER and not self.elector.leading:
                self._step_down("renew deadline passed")
            if self.role is Role.LEADER:
                self.sink.send(tick)
                return
            ticks = self._buffer.setdefault(tick.symbol, deque())
            ticks.append(tick)
            while ticks[0].event_time_ms < tick.event_time_ms - self.buffer_ms:
                ticks.popleft()

    def reject(self, raw: str | bytes, reason: str) -> None:
        if self.role is Role.LEADER:
            self.sink.reject(raw, reason)
        else:
            metrics.STANDBY_DISCARDED.inc()

    # -- the elector's side (its own thread) -------------------------------------------------------------------------
    def step(self) -> None:
        # Before step(), which resets it on winning: how long the Lease had gone unrenewed (none seen yet: no handover).
        silent_for = 0.0 if self.elector.holder is None else self.elector.unchanged_for()
        leading = self.elector.step()
        if leading and self.role is Role.STANDBY:
            self._take_over(silent_for)
        elif not leading and self.role is Role.LEADER:
            with self._lock:
                self._step_down("lease lost")

    def _take_over(self, silent_for: float) -> None:
        with self._lock:
            oldest = min((ticks[0].event_time_ms for ticks in self._buffer.values() if ticks), default=None)
        try:
            # Read outside the lock (it may take a second): ticks keep arriving in the buffer meanwhile.
            newest = {} if oldest is None else self.newest_in_kafka(oldest - READ_MARGIN_MS)
        except (KafkaException, CommandError) as error:
            log.warning("takeover_deferred", error=str(error), hint="Kafka unreadable: still standing by")
            return
        with self._lock:
            if not self.elector.leading:
                return
            replayed, gaps = 0, 0
            for symbol, ticks in self._buffer.items():
                sent_ms = newest.get(symbol)
                if ticks and sent_ms is not None and ticks[0].event_time_ms > sent_ms:
                    gaps += 1  # the old leader's last tick is older than all we kept: a hole between them
                    log.warning(
                        "takeover_gap",
                        symbol=symbol,
                        after=sent_ms,
                        before=ticks[0].event_time_ms,
                        seconds=(ticks[0].event_time_ms - sent_ms) / 1000,
                        hint="raise INGEST_STANDBY_BUFFER_SECONDS",
                    )
                    metrics.GAPS.labels(ticks[0].source, symbol).inc()
                for tick in ticks:
                    if sent_ms is None or tick.event_time_ms > sent_ms:
                        self.sink.send(tick)
                        replayed += 1
            self._buffer.clear()
            self.role = Role.LEADER
        metrics.LEADER.set(1)
        metrics.LEADER_TRANSITIONS.labels("leader").inc()
        metrics.TAKEOVER_REPLAYED.inc(replayed)
        metrics.HANDOVER_SECONDS.set(silent_for)
        log.info(
            "leading",
            identity=self.elector.identity,
            replayed=replayed,
            symbols_with_gap=gaps,
            handover_seconds=round(silent_for, 2),
        )

    def _step_down(self, why: str) -> None:
        self.role = Role.STANDBY
        metrics.LEADER.set(0)
        metrics.LEADER_TRANSITIONS.labels("standby").inc()
        log.warning("standing_by", identity=self.elector.identity, reason=why)

    def run(self, stop: threading.Event) -> None:
        """Acquire/renew every RETRY_PERIOD until `stop` (release() gives the Lease up once the sink is flushed)."""
        while not stop.is_set():
            try:
                self.step()
            except Exception:  # a bug or an unexpected API answer must not end the election: try again next period
                log.exception("election_step_failed")
            stop.wait(RETRY_PERIOD)

    def release(self) -> None:
        """Give the Lease up (after the sink delivered what it was given), so a standby takes over at once and
        finds every tick this replica sent already in Kafka."""
        with self._lock:
            self.role = Role.STANDBY
        metrics.LEADER.set(0)
        self.elector.release()


def lease_store(settings: Settings) -> LeaseStore:
    """The Lease: a `coordination.k8s.io/v1` Lease in the pod's namespace, or a file in the state dir locally."""
    if settings.ingest_leader_election == "kubernetes":
        from kubernetes import config

        try:
            config.load_incluster_config()  # type: ignore[no-untyped-call]  # a pod: its ServiceAccount's token (the chart's Role allows the Lease)
        except config.ConfigException:
            try:
                config.load_kube_config()  # type: ignore[no-untyped-call]  # outside a cluster: the current kubeconfig context
            except (config.ConfigException, OSError) as error:
                raise ConfigError(
                    f"INGEST_LEADER_ELECTION=kubernetes but no cluster to talk to: not in a pod, and no kubeconfig "
                    f"({error})"
                ) from None
        return KubernetesLeaseStore(settings.ingest_lease_name, _namespace(settings))
    path = settings.ingest_lease_file or state_dir() / f"{settings.ingest_lease_name}.lease"
    return FileLeaseStore(path)


def _namespace(settings: Settings) -> str:
    if settings.ingest_lease_namespace:
        return settings.ingest_lease_namespace
    mounted = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
    return mounted.read_text().strip() if mounted.exists() else "default"


def identity(settings: Settings) -> str:
    """The pod's name in Kubernetes (HOSTNAME), the host and pid locally: unique among the candidates."""
    return settings.ingest_identity or f"{socket.gethostname()}-{os.getpid()}"
