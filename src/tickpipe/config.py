"""Typed configuration for every stage, read from environment variables.

One place for every knob: the ingestor, the MA job, the migrator and the local tools read the same names, so local
mode, docker compose and the Helm values all set the same variables. Defaults work against a local stack; when
`tickpipe stack up` is running, its actual ports are read from `$TICKPIPE_HOME/stack.env` (real environment
variables always win).
"""

from __future__ import annotations

import os
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlencode, urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tickpipe.errors import ConfigError
from tickpipe.schema import SYMBOL_RULE, is_symbol

DEFAULT_SYMBOLS = ("btcusdt", "ethusdt", "bnbusdt", "solusdt", "xrpusdt")
_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")


class LogFormat(StrEnum):
    AUTO = "auto"  # pretty on a terminal, JSON otherwise (containers, files)
    JSON = "json"
    CONSOLE = "console"


class KafkaSecurityProtocol(StrEnum):
    """librdkafka's and the Java client's `security.protocol` values (the same four names in both)."""

    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"


class KafkaSaslMechanism(StrEnum):
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    SCRAM_SHA_512 = "SCRAM-SHA-512"


class MaEngine(StrEnum):
    SQL = "sql"  # the window maths in the JVM (Flink SQL OVER windows): the fast one, the default
    KEYED = "keyed"  # a Python KeyedProcessFunction: the seed's design, kept as the readable reference


def state_dir() -> Path:
    """The one git-ignored folder for local state: data dirs, logs, checkpoints, pid files."""
    return Path(os.environ.get("TICKPIPE_HOME", ".tickpipe")).resolve()


def stack_env_file() -> Path:
    return state_dir() / "stack.env"


class Settings(BaseSettings):
    """Every setting of every stage. Field names are the environment variable names, lower-cased."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", frozen=True)

    kafka_bootstrap_servers: str = "localhost:9092"
    kafka_topic: str = "price-ticks"
    kafka_dlq_topic: str = "price-ticks.dlq"
    kafka_topic_partitions: int = Field(default=6, ge=1, le=1000)
    # TLS and SASL/SCRAM for every Kafka client (ingestor, MA job, tools); tickpipe.kafka maps them to librdkafka's
    # properties and tickpipe.ma_job.tables to the Java client's. The CA is a PEM file; unset = the system's CAs.
    kafka_security_protocol: KafkaSecurityProtocol = KafkaSecurityProtocol.PLAINTEXT
    kafka_sasl_mechanism: KafkaSaslMechanism = KafkaSaslMechanism.SCRAM_SHA_512
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_location: Path | None = None
    # A client certificate and key (PEM), only for brokers that require mutual TLS.
    kafka_ssl_certificate_location: Path | None = None
    kafka_ssl_key_location: Path | None = None

    # The owner role used by the migrator; no password in the URL: it comes from DATABASE_PASSWORD.
    database_url: str = "postgresql://tickpipe@localhost:5432/tickpipe"
    database_password: SecretStr | None = None
    database_writer_user: str = "tickpipe_writer"
    database_writer_password: SecretStr | None = None
    database_reader_user: str = "tickpipe_reader"
    database_reader_password: SecretStr | None = None
    # The CA that signed the server's certificate, for ?sslmode=verify-full (or verify-ca); `sslrootcert=` in
    # DATABASE_URL's query does the same. Read by libpq (stages, tools) and by the JDBC driver (the MA job's sink).
    database_ssl_root_cert: Path | None = None

    binance_ws_url: str = "wss://stream.binance.com:9443"
    symbols: Annotated[tuple[str, ...], NoDecode] = DEFAULT_SYMBOLS

    # The ingestor (services/ingestor). Binance closes every connection after 24 h: rotate 10 min before.
    ingest_streams_per_connection: int = Field(default=200, ge=1, le=1024)
    ingest_stale_after_seconds: float = Field(default=30.0, gt=0)
    ingest_rotate_after_seconds: float = Field(default=86_400.0 - 600.0, gt=0)
    ingest_gap_after_ms: int = Field(default=5000, ge=1)
    ingest_max_attempts_per_5min: int = Field(default=250, ge=1, le=300)  # Binance bans at 300 per IP
    # Bounded memory while Kafka is down (the librdkafka queue); beyond it ticks spill to disk. Small values are for
    # fault tests: a tiny queue reaches the spill in a second instead of minutes.
    ingest_queue_max_messages: int = Field(default=200_000, ge=1)
    # The disk-backed buffer behind the producer queue: an append-only segment log, produced in order once Kafka is
    # back, so an outage of hours loses nothing. Unset dir = $TICKPIPE_HOME/ingest-spill (a PVC in Kubernetes).
    # INGEST_SPILL_MAX_BYTES=0 turns it off: a full queue then holds the exchange's reader (back-pressure).
    ingest_spill_dir: Path | None = None
    ingest_spill_max_bytes: int = Field(default=1 << 30, ge=0)

    metrics_port: int = Field(default=9100, ge=0, le=65535)
    log_format: LogFormat = LogFormat.AUTO
    log_level: str = "INFO"

    # The MA job (services/ma-job). Low-latency sink defaults: a row waits at most 200 ms in the JDBC buffer
    # (Flink's default is 1 s), and batches of up to 1000 rows keep throughput high under load.
    ma_engine: MaEngine = MaEngine.SQL
    kafka_group_id: str = "tickpipe-ma-job"
    flink_rest_url: str = "http://localhost:8081"
    job_parallelism: int = Field(default=1, ge=1, le=256)
    checkpoint_interval_seconds: float = Field(default=10.0, gt=0)
    sink_flush_max_rows: int = Field(default=1000, ge=1)
    sink_flush_interval_ms: int = Field(default=200, ge=0)

    # `tickpipe run` restarts a stage or engine that dies, with backoff; more restarts of one than this within the
    # window stop the run (something is wrong that a restart does not fix).
    run_max_restarts: int = Field(default=5, ge=0)
    run_restart_window_seconds: float = Field(default=300.0, gt=0)

    jars_dir: Path = Path(".deps/jars")
    migrations_dir: Path = Path("storage/migrations")

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _host_port_list(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"expected host:port[,host:port...], got {value!r}")
        return value

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"postgresql", "postgres"} or not parts.hostname:
            raise ValueError("expected postgresql://user@host:port/dbname")
        if parts.password:
            raise ValueError("put the password in DATABASE_PASSWORD, not in the URL (it would be logged)")
        sslmode = parse_qs(parts.query).get("sslmode", [None])[0]
        if sslmode is not None and sslmode not in _SSLMODES:
            raise ValueError(f"sslmode={sslmode} is not one of {', '.join(_SSLMODES)}")
        return value

    @field_validator("kafka_ssl_ca_location", "kafka_ssl_certificate_location", "kafka_ssl_key_location")
    @classmethod
    def _existing_file(cls, value: Path | None) -> Path | None:
        # Checked at start-up: librdkafka would otherwise fail later, once per connection attempt, in its own words.
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value.resolve() if value is not None else None

    @field_validator("database_ssl_root_cert")
    @classmethod
    def _existing_root_cert(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value.resolve() if value is not None else None

    @model_validator(mode="after")
    def _kafka_security(self) -> Settings:
        sasl = self.kafka_security_protocol in {KafkaSecurityProtocol.SASL_SSL, KafkaSecurityProtocol.SASL_PLAINTEXT}
        if sasl and not (self.kafka_sasl_username and self.kafka_sasl_password):
            raise ValueError(
                f"KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} "
                "needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
            )
        if bool(self.kafka_ssl_certificate_location) != bool(self.kafka_ssl_key_location):
            raise ValueError("KAFKA_SSL_CERTIFICATE_LOCATION and KAFKA_SSL_KEY_LOCATION go together (mutual TLS)")
        return self

    @field_validator("binance_ws_url")
    @classmethod
    def _ws_url(cls, value: str) -> str:
        if urlsplit(value).scheme not in {"ws", "wss"}:
            raise ValueError(f"expected a ws:// or wss:// URL, got {value!r}")
        return value.rstrip("/")

    @field_validator("symbols", mode="before")
    @classmethod
    def _symbol_list(cls, value: Any) -> tuple[str, ...]:
        items = value.split(",") if isinstance(value, str) else list(value)
        symbols = tuple(dict.fromkeys(s.strip().lower() for s in items if s.strip()))
        if not symbols:
            raise ValueError("expected a comma-separated list of symbols, e.g. btcusdt,ethusdt")
        bad = [s for s in symbols if not is_symbol(s)]
        if bad:
            raise ValueError(f"not a symbol: {', '.join(bad)} (expected {SYMBOL_RULE}, e.g. btcusdt)")
        return symbols

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError(f"expected DEBUG, INFO, WARNING or ERROR, got {value!r}")
        return level

    def as_env(self) -> dict[str, str]:
        """These settings as the environment variables that produce them: for a child process (secrets included,
        so never log the result)."""
        env = {}
        for name, value in self.model_dump().items():
            if isinstance(value, SecretStr):
                env[name.upper()] = value.get_secret_value()
            elif isinstance(value, tuple):
                env[name.upper()] = ",".join(value)
            elif value is not None:
                env[name.upper()] = str(value)
        return env

    @cached_property
    def database(self) -> DatabaseAddress:
        address = DatabaseAddress.parse(self.database_url)
        if self.database_ssl_root_cert:
            address.sslrootcert = str(self.database_ssl_root_cert)
        return address

    def conninfo(self, role: str = "owner") -> str:
        """A libpq connection string for `owner`, `writer` or `reader`, with that role's password."""
        user, password = {
            "owner": (self.database.user, self.database_password),
            "writer": (self.database_writer_user, self.database_writer_password),
            "reader": (self.database_reader_user, self.database_reader_password),
        }[role]
        return self.database.conninfo(user, password.get_secret_value() if password else None)


class DatabaseAddress:
    """Host, port, database, owner user and TLS (`?sslmode=`, `&sslrootcert=`) parsed from DATABASE_URL."""

    def __init__(
        self,
        host: str,
        port: int,
        dbname: str,
        user: str,
        sslmode: str | None = None,
        *,
        sslrootcert: str | None = None,
    ) -> None:
        self.host, self.port, self.dbname, self.user, self.sslmode = host, port, dbname, user, sslmode
        self.sslrootcert = sslrootcert

    @classmethod
    def parse(cls, url: str) -> DatabaseAddress:
        parts = urlsplit(url)
        return cls(
            host=parts.hostname or "localhost",
            port=parts.port or 5432,
            dbname=parts.path.lstrip("/") or "tickpipe",
            user=parts.username or "tickpipe",
            sslmode=parse_qs(parts.query).get("sslmode", [None])[0],
            sslrootcert=parse_qs(parts.query).get("sslrootcert", [None])[0],
        )

    def conninfo(self, user: str, password: str | None) -> str:
        fields = {"host": self.host, "port": str(self.port), "dbname": self.dbname, "user": user}
        if password:
            fields["password"] = password
        if self.sslmode:
            fields["sslmode"] = self.sslmode
        if self.sslrootcert:
            fields["sslrootcert"] = self.sslrootcert
        return " ".join(f"{key}='{_libpq_quote(value)}'" for key, value in fields.items())

    def jdbc_url(self) -> str:
        # pgjdbc takes libpq's names (sslmode, sslrootcert: a PEM file) and checks the host name for verify-full.
        tls = {key: value for key, value in (("sslmode", self.sslmode), ("sslrootcert", self.sslrootcert)) if value}
        query = f"?{urlencode(tls, safe='/')}" if tls else ""
        return f"jdbc:postgresql://{self.host}:{self.port}/{self.dbname}{query}"


def _libpq_quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment (and the local stack's env file); raise ConfigError on bad values."""
    env_file = stack_env_file()
    try:
        return Settings(_env_file=env_file if env_file.is_file() else None, **overrides)  # type: ignore[call-arg]
    except ValidationError as error:
        first = error.errors()[0]
        variable = str(first["loc"][0]).upper() if first["loc"] else "configuration"
        message = str(first["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"invalid {variable}: {message}") from None
