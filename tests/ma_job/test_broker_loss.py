"""A three-node Kafka (STACK_KAFKA_NODES=3: replication factor 3, min.insync.replicas 2) loses a broker to kill -9
while ticks are produced and the MA job reads them, and gets it back later: nothing lost, nothing doubled, the MAs
exact. The producer is configured as the ingestor's (idempotent, acks=all); the job's Kafka source follows the
partitions' new leaders."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import ConfigResource

from tests.conftest import REPO, TestStack
from tests.helpers import assert_same_rows, expected_rows, produce, random_walk, row_count, table_rows, wait_for
from tests.ma_job.test_ma_job import JobUnderTest, job_under_test, keyed
from tickpipe.config import Settings
from tickpipe.kafka import admin_client
from tickpipe.ma_job.tables import job_name
from tickpipe.stack.manager import LocalStack

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
def three_brokers(stack_home: Path) -> Iterator[LocalStack]:
    cluster = LocalStack(stack_home, (REPO / ".deps" / "jars").resolve(), kafka_nodes=3)
    cluster.up(("kafka",), timeout=240)
    yield cluster
    # Clean-up, not a check: SIGKILL. Stopped one by one (stack_home's down()), the last node's controlled shutdown
    # waits for a quorum that is gone, until the 30 s stop deadline kills it anyway.
    cluster.kill("kafka")


@pytest.fixture
def job(
    flink: TestStack, fresh_database: Settings, unique_topics: dict[str, str], three_brokers: LocalStack
) -> Iterator[JobUnderTest]:
    bootstrap = ",".join(f"127.0.0.1:{port}" for role, port in three_brokers.ports("kafka").items() if "broker" in role)
    under_test = job_under_test(
        flink,
        kafka_bootstrap_servers=bootstrap,
        database_url=fresh_database.database_url,
        kafka_group_id=f"test-brokers-{uuid.uuid4().hex[:8]}",
        **unique_topics,
    )
    try:
        yield under_test
    finally:
        # Cancelled before its brokers go away, and gone from the shared cluster before the next test starts.
        under_test.cancel_all()
        wait_for(lambda: not under_test.rest.running(job_name(under_test.settings)), 120, "the job cancelled")


def test_losing_a_broker_mid_stream_loses_and_doubles_nothing(job: JobUnderTest, three_brokers: LocalStack) -> None:
    admin = admin_client(job.settings)
    topic = admin.list_topics(job.settings.kafka_topic, timeout=10).topics[job.settings.kafka_topic]
    assert {len(p.replicas) for p in topic.partitions.values()} == {3}, "every partition on all three brokers"
    resource = ConfigResource(ConfigResource.Type.TOPIC, job.settings.kafka_topic)
    config = admin.describe_configs([resource])[resource].result(timeout=10)
    assert config["min.insync.replicas"].value == "2"

    symbols = [f"SYM{i}USDT" for i in range(8)]
    ticks = random_walk(symbols, 80, seed=33)
    first, second, third = ticks[:200], ticks[200:440], ticks[440:]
    produce(job.settings, keyed(first))
    job.submit_detached()
    wait_for(lambda: row_count(job.settings) >= len(first), 300, "the first ticks written")
    three_brokers.kill_process("kafka", "kafka-2")  # a node lost: the partitions it led get new leaders
    produce(job.settings, keyed(second))  # acks=all still succeeds: two in-sync replicas are left
    wait_for(lambda: row_count(job.settings) >= len(first) + len(second), 300, "ticks written with a broker down")
    three_brokers.restart_process("kafka", "kafka-2")
    produce(job.settings, keyed(third))
    try:
        wait_for(lambda: row_count(job.settings) >= len(ticks), 300, f"all {len(ticks)} ticks written")
    except AssertionError as error:
        raise AssertionError(f"{error}; {job.diagnose()}") from None
    assert_same_rows(table_rows(job.settings), expected_rows(ticks))
