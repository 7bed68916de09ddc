"""Ingestor replicas as processes: one exchange, a real Kafka broker, replicas electing a leader through a Lease —
the local file, or a coordination.k8s.io/v1 Lease through the real kubernetes client and a kubeconfig (served by
tests/ingestor/fake_kube_api.py). Stopping the leader hands over at once; killing it (-9) hands over when its Lease
expires; either way every tick the exchange sent is in Kafka exactly once, in order."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, TestStack
from tests.helpers import wait_for
from tests.ingestor.fake_kube_api import FakeKubeApi
from tests.ingestor.test_ingestor import SYMBOLS, Running, assert_once_and_in_order, kafka_ticks
from tickpipe.kafka import ensure_topics
from tickpipe.run.stages import StageProcess
from tickpipe.sim.server import SimOptions, SimThread
from tickpipe.stack.process import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: fake, cluster: {server: "URL"}}]
users: [{name: fake, user: {token: not-checked}}]
contexts: [{name: fake, context: {cluster: fake, user: fake, namespace: tickpipe}}]
current-context: fake
"""


class Replicas:
    def __init__(self, kafka: TestStack, topics: dict[str, str], tmp_path: Path, election: dict[str, str]) -> None:
        self.settings = kafka.settings(**topics)
        ensure_topics(self.settings)
        self.kafka, self.tmp_path = kafka, tmp_path
        self.record = tmp_path / "sim.jsonl"
        self.sim_thread = SimThread(SimOptions(symbols=SYMBOLS, rate=20.0, record=self.record))
        self.sim = self.sim_thread.__enter__()
        self.running: dict[str, Running] = {}
        self.election = election

    def start(self, name: str) -> Running:
        port = free_port()
        env = self.kafka.env(
            BINANCE_WS_URL=self.sim.url,
            BINANCE_REST_URL=self.sim.rest_url,
            KAFKA_TOPIC=self.settings.kafka_topic,
            KAFKA_DLQ_TOPIC=self.settings.kafka_dlq_topic,
            KAFKA_CANDLES_TOPIC=self.settings.kafka_candles_topic,
            METRICS_PORT=str(port),
            INGEST_SPILL_DIR=str(self.tmp_path / f"spill-{name}"),
            INGEST_IDENTITY=name,
            **self.election,
            PYTHONPATH=str(REPO),
        )
        argv = ["ingest", "--symbols", ",".join(SYMBOLS)]
        process = StageProcess(f"ingestor-{name}", argv, self.tmp_path / f"{name}.log", env=env).start()
        replica = Running(
            self.sim, self.sim_thread, process, self.settings, self.record, f"http://127.0.0.1:{port}", argv, env
        )
        self.running[name] = replica
        wait_for(lambda: replica.logged("connected"), 30, f"replica {name} connected")
        return replica

    def leader(self) -> str | None:
        leading = [name for name, r in self.running.items() if r.ingestor.exit_code() is None and _leads(r)]
        assert len(leading) <= 1, f"two leaders at once: {leading}"
        return leading[0] if leading else None

    def close(self) -> None:
        for replica in self.running.values():
            replica.ingestor.stop(timeout=30)
        self.sim_thread.__exit__(None, None, None)


def _leads(replica: Running) -> bool:
    try:
        return replica.metric("tickpipe_ingest_leader ") == 1.0
    except OSError:
        return False


@pytest.fixture(params=["file", "kubernetes"])
def replicas(
    request: pytest.FixtureRequest, kafka: TestStack, unique_topics: dict[str, str], tmp_path: Path
) -> Iterator[Replicas]:
    with contextlib.ExitStack() as stack:
        if request.param == "file":
            election = {"INGEST_LEADER_ELECTION": "file", "INGEST_LEASE_FILE": str(tmp_path / "ingestor.lease")}
        else:
            api = stack.enter_context(FakeKubeApi())
            kubeconfig = tmp_path / "kubeconfig"
            kubeconfig.write_text(KUBECONFIG.replace("URL", api.url))
            election = {"INGEST_LEADER_ELECTION": "kubernetes", "KUBECONFIG": str(kubeconfig)}
        group = Replicas(kafka, unique_topics, tmp_path, election)
        stack.callback(group.close)
        yield group


def produced(replicas: Replicas) -> int:
    return len(kafka_ticks(replicas.settings))


def test_stopping_or_killing_the_leader_hands_over_without_losing_or_doubling_a_tick(replicas: Replicas) -> None:
    a, b = replicas.start("a"), replicas.start("b")
    first = wait_for(replicas.leader, 30, "a leader")
    standby = b if first == "a" else a
    assert standby.metric("tickpipe_ingest_leader ") == 0.0
    wait_for(lambda: produced(replicas) >= 60, 30, "ticks from the first leader")

    # A clean stop releases the Lease after the last delivery: the standby takes over on its next step.
    replicas.running[first].stop_ingestor()
    second = wait_for(replicas.leader, 10, "the standby leading after the leader's clean stop")
    count = produced(replicas)
    wait_for(lambda: produced(replicas) >= count + 60, 30, "ticks from the second leader")

    # A third replica stands by; kill -9 the leader: no release, so the Lease expires (15 s) before the takeover.
    replicas.start("c")
    wait_for(lambda: replicas.running["c"].metric("tickpipe_ingest_leader ") == 0.0, 10, "c standing by")
    replicas.running[second].ingestor.kill_group()
    wait_for(lambda: replicas.leader() == "c", 40, "c leading after the leader was killed")
    count = produced(replicas)
    wait_for(lambda: produced(replicas) >= count + 60, 30, "ticks from the third leader")
    replicas.sim_thread.call(replicas.sim.go_silent(3600))
    replicas.running["c"].stop_ingestor()

    ticks = kafka_ticks(replicas.settings)
    assert_once_and_in_order(ticks)
    sent = replicas.running["c"].recorded()
    missing = set(sent) - set(ticks)
    assert not missing, f"{len(missing)} ticks the exchange sent are not in Kafka, e.g. {sorted(missing)[:3]}"
    assert sorted(ticks) == sorted(sent)
    took_over = [e for e in replicas.running["c"].events() if e.get("event") == "leading"]
    assert took_over and took_over[0]["replayed"] > 0, "the killed leader's last ticks came from c's buffer"
    # The handover: a killed leader's Lease is taken once it expired (15 s unrenewed, judged on c's own clock, plus
    # a retry period, generous bounds for a loaded machine); a stopped one releases it: its successor takes it at
    # its next step, never waiting for an expiry.
    assert 15 <= took_over[0]["handover_seconds"] <= 25, took_over[0]
    handed = [e for e in replicas.running[second].events() if e.get("event") == "leading"]
    assert handed[0]["handover_seconds"] < 15, handed[0]
