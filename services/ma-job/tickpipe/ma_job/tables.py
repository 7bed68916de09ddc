"""The job's Kafka and PostgreSQL tables as Flink SQL DDL, from Settings: no address, password or jar is hard-coded."""

from __future__ import annotations

from tickpipe.config import KafkaSecurityProtocol, Settings

JOB_NAME = "tickpipe-ma-job"
STAGE = "ma-job"
PRICE_TICKS_COLUMNS = """
  `time` TIMESTAMP(3),
  `source` STRING,
  `symbol` STRING,
  `price` DOUBLE,
  `volume` DOUBLE,
  `ma_short` DOUBLE,
  `ma_long` DOUBLE"""


def job_name(settings: Settings) -> str:
    """One running job per consumer group: the name tells them apart in a shared session cluster."""
    default_group = Settings.model_fields["kafka_group_id"].default
    return JOB_NAME if settings.kafka_group_id == default_group else f"{JOB_NAME}.{settings.kafka_group_id}"


def table_ddl(name: str, columns: str, options: dict[str, str]) -> str:
    quoted = ",\n  ".join(f"'{key}' = '{value.replace(chr(39), chr(39) * 2)}'" for key, value in options.items())
    return f"CREATE TABLE {name} ({columns}\n) WITH (\n  {quoted}\n)"


def kafka_security_options(settings: Settings) -> dict[str, str]:
    """The Java client's TLS and SASL/SCRAM properties (`properties.*` of Flink's Kafka connector) for the same
    settings tickpipe.kafka gives librdkafka. The JAAS line holds the SASL password: the DDL is never logged, and
    Kafka's and Flink's own config dumps mask `sasl.jaas.config`."""
    protocol = settings.kafka_security_protocol
    options = {"properties.security.protocol": protocol.value}
    if protocol in {KafkaSecurityProtocol.SASL_SSL, KafkaSecurityProtocol.SASL_PLAINTEXT}:
        password = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else ""
        options["properties.sasl.mechanism"] = settings.kafka_sasl_mechanism.value
        options["properties.sasl.jaas.config"] = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{_jaas_quote(settings.kafka_sasl_username or "")}" password="{_jaas_quote(password)}";'
        )
    if protocol in {KafkaSecurityProtocol.SASL_SSL, KafkaSecurityProtocol.SSL}:
        # The Java client reads PEM directly (KIP-651): no JKS/PKCS12 conversion, the same files as librdkafka.
        if settings.kafka_ssl_ca_location:
            options["properties.ssl.truststore.type"] = "PEM"
            options["properties.ssl.truststore.location"] = str(settings.kafka_ssl_ca_location)
        if settings.kafka_ssl_certificate_location and settings.kafka_ssl_key_location:
            # Java's PEM key store is one file holding the key and then the certificate chain: the job needs
            # KAFKA_SSL_KEY_LOCATION in that form (librdkafka finds the key in it too). Never inline the key: Flink
            # masks `password` and `jaas.config` options in its messages, not `ssl.keystore.key`.
            options["properties.ssl.keystore.type"] = "PEM"
            options["properties.ssl.keystore.location"] = str(settings.kafka_ssl_key_location)
    return options


def _jaas_quote(value: str) -> str:
    # JAAS values are double-quoted strings with backslash escapes (Kafka parses them with a StreamTokenizer).
    return value.replace("\\", "\\\\").replace('"', '\\"')


def source_ddl(settings: Settings, start_offsets: str | None = None) -> str:
    """Ticks as raw strings: parsing happens in the job with the shared tick schema, so that a bad record becomes
    a dead letter with its reason, never a deserialisation failure that stops the job. With each record its
    partition and offset (a start without state writes nothing before the committed offsets: reseed.py), and,
    given `start_offsets` (`scan.startup.specific-offsets`), reading starts there instead of the committed
    offsets; a restored job reads on from its state either way."""
    columns = "\n  `raw` STRING,\n  `partition` INT METADATA VIRTUAL,\n  `offset` BIGINT METADATA VIRTUAL"
    options = raw_source_options(settings, settings.kafka_topic, settings.kafka_group_id)
    if start_offsets:
        options["scan.startup.mode"] = "specific-offsets"
        options["scan.startup.specific-offsets"] = start_offsets
    return table_ddl("ticks_raw", columns, options)


def raw_source_ddl(settings: Settings, table: str, topic: str, group_id: str) -> str:
    """A Kafka topic read as raw UTF-8 strings, one column `raw`, by the consumer group `group_id`."""
    return table_ddl(table, "\n  `raw` STRING", raw_source_options(settings, topic, group_id))


def raw_source_options(settings: Settings, topic: str, group_id: str) -> dict[str, str]:
    return {
        "connector": "kafka",
        "topic": topic,
        "properties.bootstrap.servers": settings.kafka_bootstrap_servers,
        "properties.group.id": group_id,
        # A new group starts at the beginning of the topic; afterwards the offsets in the checkpoint win.
        "scan.startup.mode": "group-offsets",
        "properties.auto.offset.reset": "earliest",
        "scan.topic-partition-discovery.interval": "60 s",
        "format": "raw",
        "raw.charset": "UTF-8",
        **kafka_security_options(settings),
    }


def dlq_ddl(settings: Settings) -> str:
    options = {
        "connector": "kafka",
        "topic": settings.kafka_dlq_topic,
        "properties.bootstrap.servers": settings.kafka_bootstrap_servers,
        "format": "raw",
        "sink.delivery-guarantee": "at-least-once",
        **kafka_security_options(settings),
    }
    return table_ddl("dead_letters", "\n  `record` STRING", options)


def sink_ddl(settings: Settings) -> str:
    """Upsert into price_ticks on its unique key: a replay after a restart rewrites rows instead of doubling them."""
    options = postgres_sink_options(settings, "price_ticks")
    return table_ddl(
        "price_ticks", PRICE_TICKS_COLUMNS + ",\n  PRIMARY KEY (`source`, `symbol`, `time`) NOT ENFORCED", options
    )


def postgres_sink_options(settings: Settings, table: str) -> dict[str, str]:
    """Our own sink (services/ma-job/udf, `tickpipe-postgres`) writing `table` as the writer role: group commit
    (a row is written as soon as the previous transaction ends, no flush timer; batches grow with the load up to
    SINK_FLUSH_MAX_ROWS), each batch by COPY into a staging table and one upsert on the DDL's primary key."""
    options = {
        "connector": "tickpipe-postgres",
        "url": settings.database.jdbc_url(),
        "table-name": table,
        "username": settings.database_writer_user,
        "sink.buffer-flush.max-rows": str(settings.sink_flush_max_rows),
        "sink.max-retries": "10",
    }
    password = settings.database_writer_password
    if password:
        options["password"] = password.get_secret_value()
    return options


def discard_sink_ddl() -> str:
    """A sink that drops everything: the benchmark's baseline for the job without the database."""
    return table_ddl("price_ticks", PRICE_TICKS_COLUMNS, {"connector": "blackhole"})
