"""Kafka helpers shared by the stages and the local stack: client config, readiness, topics."""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from tickpipe.config import KafkaSecurityProtocol, Settings
from tickpipe.errors import KafkaNotReady

_SASL = {KafkaSecurityProtocol.SASL_SSL, KafkaSecurityProtocol.SASL_PLAINTEXT}
_TLS = {KafkaSecurityProtocol.SASL_SSL, KafkaSecurityProtocol.SSL}


def security_config(settings: Settings) -> dict[str, Any]:
    """librdkafka's TLS and SASL properties for KAFKA_SECURITY_PROTOCOL & co. Holds the SASL password: never log it."""
    protocol = settings.kafka_security_protocol
    config: dict[str, Any] = {"security.protocol": protocol.value}
    if protocol in _SASL and settings.kafka_sasl_password is not None:
        config["sasl.mechanism"] = settings.kafka_sasl_mechanism.value
        config["sasl.username"] = settings.kafka_sasl_username
        config["sasl.password"] = settings.kafka_sasl_password.get_secret_value()
    if protocol in _TLS:
        # librdkafka verifies the broker's certificate and host name by default; only the trust anchors vary.
        if settings.kafka_ssl_ca_location:
            config["ssl.ca.location"] = str(settings.kafka_ssl_ca_location)
        if settings.kafka_ssl_certificate_location and settings.kafka_ssl_key_location:
            config["ssl.certificate.location"] = str(settings.kafka_ssl_certificate_location)
            config["ssl.key.location"] = str(settings.kafka_ssl_key_location)
    return config


def client_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """Address, socket options and security of the configured cluster: the base of every client's configuration."""
    return {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        # librdkafka leaves Nagle's algorithm on (Kafka's Java clients turn it off): a small produce or fetch request
        # then waits for the ACK of the previous segment, which the peer may delay by up to 40 ms.
        "socket.nagle.disable": True,
        **security_config(settings),
        **overrides,
    }


def consumer_config(settings: Settings, group_id: str, **overrides: Any) -> dict[str, Any]:
    """A consumer of the configured cluster (tools and tests: the MA job's consumer is Flink's)."""
    return client_config(settings, **{"group.id": group_id, **overrides})


def admin_client(target: str | Settings, **overrides: Any) -> AdminClient:
    """An admin client for a bootstrap address (no security) or for the cluster the settings describe."""
    base = {"bootstrap.servers": target} if isinstance(target, str) else client_config(target)
    return AdminClient({**base, "socket.connection.setup.timeout.ms": 3000, **overrides})


def wait_for_broker(target: str | Settings, timeout: float = 30.0, **overrides: Any) -> int:
    """Block until a metadata request succeeds; return the number of brokers. Raise KafkaNotReady at the deadline."""
    # Refused connections are expected while the broker starts: the deadline error says it all, not librdkafka.
    # A wrong password or CA is reported through the error callback; keep the words that name it.
    auth_errors: list[str] = []

    def on_error(error: KafkaError) -> None:
        if error.code() in {KafkaError._AUTHENTICATION, KafkaError._SSL}:
            auth_errors.append(error.str())

    admin = admin_client(target, log_level=0, error_cb=on_error, **overrides)
    bootstrap_servers = target if isinstance(target, str) else target.kafka_bootstrap_servers
    deadline = time.monotonic() + timeout
    last_error: Exception | str | None = None
    while time.monotonic() < deadline:
        try:
            metadata = admin.list_topics(timeout=min(2.0, max(0.1, deadline - time.monotonic())))
            if metadata.brokers:
                return len(metadata.brokers)
        except KafkaException as error:
            admin.poll(0)  # serves the error callback
            last_error = auth_errors[-1] if auth_errors else error
            if len(auth_errors) >= 2:  # the same refusal twice is configuration, not a broker still starting
                raise KafkaNotReady(
                    f"Kafka at {bootstrap_servers} refused the connection: {auth_errors[-1]}; check "
                    "KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_USERNAME/KAFKA_SASL_PASSWORD and KAFKA_SSL_CA_LOCATION"
                ) from None
        time.sleep(0.2)
    raise KafkaNotReady(
        f"no Kafka broker answered a metadata request at {bootstrap_servers} "
        f"within {timeout:.0f} s ({last_error or 'no brokers in metadata'})"
    )


def ensure_topics(settings: Settings, timeout: float = 30.0) -> None:
    """Create the tick, candle and signal topics and the dead-letter topic if missing (idempotent)."""
    admin = admin_client(settings)
    existing = set(admin.list_topics(timeout=timeout).topics)
    wanted = [
        NewTopic(settings.kafka_topic, num_partitions=settings.kafka_topic_partitions, replication_factor=-1),
        NewTopic(settings.kafka_dlq_topic, num_partitions=1, replication_factor=-1),
        NewTopic(settings.kafka_candles_topic, num_partitions=settings.kafka_topic_partitions, replication_factor=-1),
        NewTopic(settings.kafka_signals_topic, num_partitions=settings.kafka_topic_partitions, replication_factor=-1),
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
        **client_config(settings),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": "lz4",
        "message.timeout.ms": 0,  # never give up on a tick: back-pressure instead (bounded by the local queue)
    }
    config.update(overrides)
    return config
