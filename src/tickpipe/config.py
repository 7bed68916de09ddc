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
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, urlencode, urlsplit

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tickpipe.errors import ConfigError
from tickpipe.schema import SOURCES, SYMBOL_RULE, SYMBOL_RULES, is_symbol

DEFAULT_SYMBOLS = ("btcusdt", "ethusdt", "bnbusdt", "solusdt", "xrpusdt")
# SYMBOLS=all-usdt: every TRADING spot pair quoted in USDT, from exchangeInfo, re-discovered while running
# (tickpipe.ingestor.discovery).
ALL_USDT = "all-usdt"
# SYMBOLS when unset, per SOURCE (Binance's are DEFAULT_SYMBOLS): the same assets where the source has them.
SOURCE_DEFAULT_SYMBOLS = {
    "coingecko": ("bitcoin/usd", "ethereum/usd", "binancecoin/usd", "solana/usd", "ripple/usd"),
    "yahoo": ("BTC-USD", "ETH-USD", "AAPL", "^GSPC", "EURUSD=X"),
}
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
    # Closed 1m candles (tickpipe.candle_schema, key = source:symbol) and the events the candle job derives from them
    # (RSI crossing 70/30, closes outside the Bollinger band); their dead letters go to KAFKA_DLQ_TOPIC too.
    kafka_candles_topic: str = "candles"
    kafka_signals_topic: str = "signals"
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

    # Where the ingestor reads prices (one source per process): Binance's WebSocket streams, CoinGecko's REST API
    # (polled) or Yahoo Finance's streamer. SYMBOLS follows the source's symbol rule (tickpipe.schema.SYMBOL_RULES).
    source: Literal["binance", "coingecko", "yahoo"] = "binance"
    binance_ws_url: str = "wss://stream.binance.com:9443"
    # Binance's REST API, where the ingestor's gap repair fetches the closed 1m candles it missed (GET /api/v3/klines).
    binance_rest_url: str = "https://api.binance.com"
    symbols: Annotated[tuple[str, ...], NoDecode] = DEFAULT_SYMBOLS
    # CoinGecko (SOURCE=coingecko; tickpipe.ingestor.coingecko). The Demo plan's key goes in a header; the plan's budget
    # (calls per minute, calls per month; 0 = no monthly cap) sets the poll interval, of which the poller uses
    # COINGECKO_BUDGET_SHARE (retries and restarts count against the same budget).
    coingecko_url: str = "https://api.coingecko.com/api/v3"
    coingecko_api_key: SecretStr | None = None
    coingecko_calls_per_minute: int = Field(default=100, ge=1)
    coingecko_monthly_calls: int = Field(default=10_000, ge=0)
    coingecko_budget_share: float = Field(default=0.9, gt=0, le=1)
    # Yahoo Finance's streamer (SOURCE=yahoo; tickpipe.ingestor.yahoo): the subscription is re-sent (with a WebSocket
    # ping) every YAHOO_HEARTBEAT_SECONDS; a connection that answers nothing, not even the ping, for
    # YAHOO_STALE_AFTER_SECONDS is dead. A closed market's silence is not (its pongs still come).
    yahoo_ws_url: str = "wss://streamer.finance.yahoo.com/?version=2"
    yahoo_heartbeat_seconds: float = Field(default=15.0, gt=0)
    yahoo_stale_after_seconds: float = Field(default=60.0, gt=0)

    # The ingestor (services/ingestor). Binance closes every connection after 24 h: rotate 10 min before.
    ingest_streams_per_connection: int = Field(default=200, ge=1, le=1024)
    ingest_stale_after_seconds: float = Field(default=30.0, gt=0)
    ingest_rotate_after_seconds: float = Field(default=86_400.0 - 600.0, gt=0)
    ingest_gap_after_ms: int = Field(default=5000, ge=1)
    # With SYMBOLS=all-usdt: how often exchangeInfo is asked again for listings and delistings.
    ingest_discovery_interval_seconds: float = Field(default=3600.0, gt=0)
    ingest_max_attempts_per_5min: int = Field(default=250, ge=1, le=300)  # Binance bans at 300 per IP
    # Bounded memory while Kafka is down (the librdkafka queue); beyond it ticks spill to disk. Small values are for
    # fault tests: a tiny queue reaches the spill in a second instead of minutes.
    ingest_queue_max_messages: int = Field(default=200_000, ge=1)
    # The disk-backed buffer behind the producer queue: an append-only segment log, produced in order once Kafka is
    # back, so an outage of hours loses nothing. Unset dir = $TICKPIPE_HOME/ingest-spill (a PVC in Kubernetes).
    # INGEST_SPILL_MAX_BYTES=0 turns it off: a full queue then holds the exchange's reader (back-pressure).
    ingest_spill_dir: Path | None = None
    ingest_spill_max_bytes: int = Field(default=1 << 30, ge=0)
    # Replicas (README, "Ingestor replicas"): `off` = this process always produces; `file` = a Lease in a file of the
    # state dir (local replicas); `kubernetes` = a coordination.k8s.io/v1 Lease in the pod's namespace. The leader
    # produces; standbys keep INGEST_STANDBY_BUFFER_SECONDS of ticks per symbol to take over without a gap.
    ingest_leader_election: Literal["off", "file", "kubernetes"] = "off"
    ingest_lease_name: str = "tickpipe-ingestor"
    ingest_lease_namespace: str | None = None  # unset: the pod's own namespace
    ingest_lease_file: Path | None = None  # unset: $TICKPIPE_HOME/<INGEST_LEASE_NAME>.lease
    ingest_identity: str | None = None  # unset: <host name>-<pid> (the pod's name in Kubernetes)
    ingest_standby_buffer_seconds: float = Field(default=60.0, gt=0)
    # Closed 1m candles from <symbol>@kline_1m (2 streams per symbol), repaired from REST after every gap; at start-up
    # the repair reaches back at most INGEST_REPAIR_LOOKBACK_MINUTES. The REST weight budget stays well under
    # Binance's 6000 per IP per minute (each klines request weighs 2), leaving room for other clients of the IP.
    ingest_klines: bool = True
    ingest_repair_lookback_minutes: int = Field(default=1440, ge=0, le=7 * 24 * 60)
    ingest_repair_max_weight_per_minute: int = Field(default=1200, ge=3, le=6000)

    metrics_port: int = Field(default=9100, ge=0, le=65535)
    log_format: LogFormat = LogFormat.AUTO
    log_level: str = "INFO"

    # The MA job (services/ma-job). Low-latency sink defaults: a row waits at most 50 ms in the JDBC buffer
    # (Flink's default is 1 s), and batches of up to 1000 rows keep throughput high under load.
    ma_engine: MaEngine = MaEngine.SQL
    kafka_group_id: str = "tickpipe-ma-job"
    # A start without state (`tickpipe ma-job --reseed`, or a savepoint the new plan cannot restore) re-reads the
    # ticks of series that have a row within this many hours of the newest row (tickpipe.ma_job.reseed).
    ma_reseed_lookback_hours: float = Field(default=24.0, gt=0)
    # The candle job (candles → candles_1m with indicators, signals): a Flink job of its own, with its own consumer
    # group and savepoints, so the MA job's state and SQL stay untouched by it.
    candle_group_id: str = "tickpipe-candle-job"
    # Sources without exchange klines whose ticks (KAFKA_TOPIC, read in CANDLE_GROUP_ID) the candle job builds 1m
    # candles from (tickpipe.ma_job.tick_candles): event-time windows closed by a watermark that trails the newest
    # tick by the out-of-orderness, a source silent for the idle time no longer holds it back, and a tick up to the
    # allowed lateness behind the watermark still corrects its candle. Empty: none. Binance has klines: never here.
    candles_from_ticks_sources: Annotated[tuple[str, ...], NoDecode] = ("coingecko", "yahoo")
    candles_from_ticks_out_of_orderness_seconds: float = Field(default=60.0, ge=0, le=3600)
    candles_from_ticks_idle_seconds: float = Field(default=60.0, gt=0, le=3600)
    candles_from_ticks_allowed_lateness_seconds: float = Field(default=300.0, ge=0, le=86_400)
    flink_rest_url: str = "http://localhost:8081"
    job_parallelism: int = Field(default=1, ge=1, le=256)
    checkpoint_interval_seconds: float = Field(default=10.0, gt=0)
    sink_flush_max_rows: int = Field(default=1000, ge=1)
    # How long a Flink operator holds a partly filled network buffer before sending it downstream (Flink's
    # execution.buffer-timeout.interval; its default is 100 ms): each shuffle of the job (by series, by the sink's key)
    # can add this much to a tick's latency when the rate is too low to fill buffers.
    flink_buffer_timeout_ms: int = Field(default=10, ge=0, le=10_000)

    # `tickpipe run` restarts a stage or engine that dies, with backoff; more restarts of one than this within the
    # window stop the run (something is wrong that a restart does not fix).
    run_max_restarts: int = Field(default=5, ge=0)
    run_restart_window_seconds: float = Field(default=300.0, gt=0)
    # Memory limits of the local engines (tickpipe.stack.sizing): auto, small, large or a budget in MB. auto = small
    # for `tickpipe run` with a light load (a few symbols), large for `tickpipe stack up` and heavy runs.
    stack_memory: str = "auto"

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

    @field_validator("yahoo_ws_url")
    @classmethod
    def _yahoo_ws_url(cls, value: str) -> str:
        if urlsplit(value).scheme not in {"ws", "wss"}:
            raise ValueError(f"expected a ws:// or wss:// URL, got {value!r}")
        return value

    @field_validator("coingecko_url")
    @classmethod
    def _coingecko_url(cls, value: str) -> str:
        if urlsplit(value).scheme not in {"http", "https"}:
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value.rstrip("/")

    @field_validator("binance_rest_url")
    @classmethod
    def _rest_url(cls, value: str) -> str:
        if urlsplit(value).scheme not in {"http", "https"}:
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        return value.rstrip("/")

    @field_validator("candles_from_ticks_sources", mode="before")
    @classmethod
    def _tick_candle_sources(cls, value: Any) -> tuple[str, ...]:
        items = value.split(",") if isinstance(value, str) else list(value)
        sources = tuple(dict.fromkeys(str(s).strip().lower() for s in items if str(s).strip()))
        if "binance" in sources:
            raise ValueError("binance has exchange klines (the ingestor publishes them): not a tick-built source")
        unknown = [s for s in sources if s not in SOURCES]
        if unknown:
            raise ValueError(f"unknown source: {', '.join(unknown)} (expected coingecko, yahoo)")
        return sources

    @field_validator("symbols", mode="before")
    @classmethod
    def _symbol_list(cls, value: Any, info: ValidationInfo) -> tuple[str, ...]:
        items = value.split(",") if isinstance(value, str) else list(value)
        source = info.data.get("source", "binance")  # declared before SYMBOLS: already validated
        if source != "binance":
            if value is DEFAULT_SYMBOLS:  # SYMBOLS unset: Binance's default is not this source's
                return SOURCE_DEFAULT_SYMBOLS[source]
            rule = SYMBOL_RULES[source]
            named = [s.strip() for s in items if isinstance(s, str) and s.strip()]
            if not named:
                raise ValueError(f"expected a comma-separated list of symbols, e.g. {rule.example}")
            if ALL_USDT in (s.lower() for s in named):
                raise ValueError(f"{ALL_USDT} (every USDT pair, discovered) is for SOURCE=binance only")
            bad = [s for s in named if not rule.matches(s)]
            if bad:
                raise ValueError(
                    f"not a {source} symbol: {', '.join(bad)} (expected {rule.description}, e.g. {rule.example})"
                )
            return tuple(dict.fromkeys(rule.stored(s) for s in named))
        symbols = tuple(dict.fromkeys(s.strip().lower() for s in items if s.strip()))
        if not symbols:
            raise ValueError("expected a comma-separated list of symbols, e.g. btcusdt,ethusdt")
        if ALL_USDT in symbols:
            if len(symbols) > 1:
                raise ValueError(f"{ALL_USDT} stands alone (it means every USDT pair), not in a list of symbols")
            return symbols
        bad = [s for s in symbols if not is_symbol(s)]
        if bad:
            raise ValueError(f"not a symbol: {', '.join(bad)} (expected {SYMBOL_RULE}, e.g. btcusdt)")
        return symbols

    @field_validator("stack_memory")
    @classmethod
    def _stack_memory(cls, value: str) -> str:
        from tickpipe.stack.sizing import check_setting  # the sizes live with the stack that uses them

        return check_setting(value)

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

    @property
    def discovers_symbols(self) -> bool:
        """SYMBOLS=all-usdt: the symbols come from the exchange (exchangeInfo), not from this setting."""
        return self.symbols == (ALL_USDT,)

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
