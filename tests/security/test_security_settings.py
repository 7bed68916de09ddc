"""Kafka TLS/SASL and PostgreSQL TLS settings: what librdkafka, the job's Java client and libpq/JDBC are given."""

from __future__ import annotations

from pathlib import Path

import pytest

from tickpipe.config import load_settings
from tickpipe.errors import ConfigError
from tickpipe.kafka import client_config, consumer_config, producer_config, security_config
from tickpipe.ma_job.tables import dlq_ddl, kafka_security_options, sink_ddl, source_ddl

pytestmark = pytest.mark.unit
PASSWORD = "s3cret-test-pw"


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    path = tmp_path / "ca.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    return path


def sasl_ssl(ca: Path, password: str = PASSWORD) -> dict[str, object]:
    return {
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "SCRAM-SHA-256",
        "kafka_sasl_username": "ingestor",
        "kafka_sasl_password": password,
        "kafka_ssl_ca_location": str(ca),
    }


def test_plaintext_is_the_default_and_adds_nothing_secret() -> None:
    settings = load_settings()
    assert security_config(settings) == {"security.protocol": "PLAINTEXT"}
    assert kafka_security_options(settings) == {"properties.security.protocol": "PLAINTEXT"}


def test_sasl_ssl_gives_librdkafka_scram_and_the_ca(ca: Path) -> None:
    settings = load_settings(**sasl_ssl(ca))
    assert security_config(settings) == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-256",
        "sasl.username": "ingestor",
        "sasl.password": "s3cret-test-pw",
        "ssl.ca.location": str(ca.resolve()),
    }


def test_every_client_config_carries_the_security_settings(ca: Path) -> None:
    settings = load_settings(**sasl_ssl(ca))
    for config in (client_config(settings), producer_config(settings), consumer_config(settings, "g")):
        assert config["security.protocol"] == "SASL_SSL"
        assert config["sasl.password"] == "s3cret-test-pw"


def test_the_jobs_kafka_tables_use_the_java_clients_names(ca: Path) -> None:
    settings = load_settings(**sasl_ssl(ca))
    options = kafka_security_options(settings)
    assert options["properties.security.protocol"] == "SASL_SSL"
    assert options["properties.sasl.mechanism"] == "SCRAM-SHA-256"
    assert options["properties.sasl.jaas.config"] == (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="ingestor" password="s3cret-test-pw";'
    )
    assert options["properties.ssl.truststore.type"] == "PEM"
    assert options["properties.ssl.truststore.location"] == str(ca.resolve())
    for ddl in (source_ddl(settings), dlq_ddl(settings)):
        assert "'properties.sasl.jaas.config' = 'org.apache.kafka.common.security.scram.ScramLoginModule" in ddl


def test_quotes_in_a_password_stay_inside_the_jaas_string_and_the_sql_literal(ca: Path) -> None:
    settings = load_settings(**sasl_ssl(ca, password="a\"b'c\\d"))
    jaas = kafka_security_options(settings)["properties.sasl.jaas.config"]
    assert jaas.endswith('password="a\\"b\'c\\\\d";')
    assert "password=\"a\\\"b''c\\\\d\";'" in source_ddl(settings)  # SQL doubles the single quote


def test_sasl_without_credentials_is_refused_naming_the_variables() -> None:
    with pytest.raises(ConfigError, match="KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"):
        load_settings(kafka_security_protocol="SASL_SSL")


def test_an_unknown_protocol_or_mechanism_is_refused() -> None:
    with pytest.raises(ConfigError, match="invalid KAFKA_SECURITY_PROTOCOL"):
        load_settings(kafka_security_protocol="TLS")
    with pytest.raises(ConfigError, match="invalid KAFKA_SASL_MECHANISM"):
        load_settings(kafka_sasl_mechanism="PLAIN")


def test_a_missing_ca_file_is_refused_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"invalid KAFKA_SSL_CA_LOCATION: no such file"):
        load_settings(kafka_security_protocol="SSL", kafka_ssl_ca_location=str(tmp_path / "nope.pem"))


def test_a_client_certificate_needs_its_key(ca: Path) -> None:
    with pytest.raises(ConfigError, match="KAFKA_SSL_CERTIFICATE_LOCATION and KAFKA_SSL_KEY_LOCATION"):
        load_settings(kafka_security_protocol="SSL", kafka_ssl_certificate_location=str(ca))


def test_the_sasl_password_is_secret_in_reprs_and_passed_to_children(ca: Path) -> None:
    settings = load_settings(**sasl_ssl(ca))
    assert "s3cret-test-pw" not in repr(settings)
    assert settings.as_env()["KAFKA_SASL_PASSWORD"] == "s3cret-test-pw"
    assert load_settings(**{k.lower(): v for k, v in settings.as_env().items()}) == settings


def test_sslrootcert_in_the_url_reaches_libpq_and_jdbc() -> None:
    settings = load_settings(database_url="postgresql://u@db.example:5433/d?sslmode=verify-full&sslrootcert=/ca.pem")
    assert "sslmode='verify-full'" in settings.conninfo()
    assert "sslrootcert='/ca.pem'" in settings.conninfo()
    assert settings.database.jdbc_url() == "jdbc:postgresql://db.example:5433/d?sslmode=verify-full&sslrootcert=/ca.pem"


def test_database_ssl_root_cert_reaches_libpq_and_the_jobs_sink(ca: Path) -> None:
    settings = load_settings(
        database_url="postgresql://u@db.example/d?sslmode=verify-full",
        database_ssl_root_cert=str(ca),
        database_writer_password="writer-test-pw",
    )
    assert f"sslrootcert='{ca.resolve()}'" in settings.conninfo("writer")
    assert f"'url' = 'jdbc:postgresql://db.example:5432/d?sslmode=verify-full&sslrootcert={ca.resolve()}'" in (
        sink_ddl(settings)
    )


def test_an_unknown_sslmode_is_refused() -> None:
    with pytest.raises(ConfigError, match="invalid DATABASE_URL: sslmode=verify is not one of"):
        load_settings(database_url="postgresql://u@h/d?sslmode=verify")
