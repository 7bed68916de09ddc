"""Kafka helpers shared by the stages and the local stack: client config, readiness, topics."""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from tickpipe.config import Settings
from tickpipe.errors import KafkaNotReady


def admin_client(bootstrap_servers: str, **overrides: Any) -> AdminClient:
    return AdminClient(
        {"bootstrap.servers": bootstrap_servers, "socket.connection.setup.timeout.ms": 3000, **overrides}
    )


def wait_for_broker(bootstrap_servers: str, timeout: float = 30.0) -> int:
    """Block until a metadata request succeeds; return the number of brokers. Raise KafkaNotReady at the deadline."""
    # Refused connections are expected while the broker starts: the deadline error says it all, not librdkafka.
    admin = admin_client(bootstrap_servers, log_level=0)
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            metadata = admin.list_topics(timeout=min(2.0, max(0.1, deadline - time.monotonic())))
            if metadata.brokers:
                return len(metadata.brokers)
        except KafkaException as error:
            last_error = error
        time.sleep(0.2)
    raise KafkaNotReady(
        f"no Kafka broker answered a metadata request at {bootstrap_servers} "
        f"within {timeout:.0f} s ({last_error or 'no brokers in metadata'})"
    )


def ensure_topics(settings: Settings, timeout: float = 30.0) -> None:
    """Create the tick topic and its dead-letter topic if missing (idempotent)."""
    admin = admin_client(settings.kafka_bootstrap_servers)
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [
        NewTopic(settings.kafka_topic, num_partitions=settings.kafka_topic_partitions, replication_factor=-1),
        NewTopic(settings.kafka_dlq_topic, num_partitions=1, replication_factor=-1),
    ]
    missing = [topic for topic in wanted if topic.topic not in existing]
    if not missing:
        return
    for name, future in admin.create_topics(missing, operation_timeout=timeout).items():
        try:
            future.result(timeout)
        except KafkaException as error:
            if error.args[0].name() != "TOPIC_ALREADY_EXISTS":  # another process won the race: fine
                raise RuntimeError(f"could not create topic {name}: {error}") from None


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """Idempotent, acks=all: a retry after a broker hiccup can neither lose nor duplicate a tick."""
    config: dict[str, Any] = {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        "message.timeout.ms": 0,  # never give up on a tick: back-pressure instead (bounded by the local queue)
    }
    config.update(overrides)
    return config
