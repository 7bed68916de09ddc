"""The candle job's Kafka and PostgreSQL tables as Flink SQL DDL, from Settings (the same helpers as the MA job's)."""

from __future__ import annotations

from tickpipe.config import Settings
from tickpipe.ma_job.tables import kafka_security_options, postgres_sink_options, raw_source_ddl, table_ddl

CANDLE_JOB_NAME = "tickpipe-candle-job"
CANDLE_STAGE = "candle-job"
CANDLES_1M_COLUMNS = """
  `source` STRING,
  `symbol` STRING,
  `open_time` TIMESTAMP(3),
  `open` DOUBLE,
  `high` DOUBLE,
  `low` DOUBLE,
  `close` DOUBLE,
  `volume` DOUBLE,
  `quote_volume` DOUBLE,
  `trades` BIGINT,
  `rsi_14` DOUBLE,
  `bb_middle` DOUBLE,
  `bb_upper` DOUBLE,
  `bb_lower` DOUBLE,
  `ema_12` DOUBLE,
  `ema_26` DOUBLE,
  `macd` DOUBLE,
  `macd_signal` DOUBLE,
  `macd_hist` DOUBLE,
  PRIMARY KEY (`source`, `symbol`, `open_time`) NOT ENFORCED"""
SIGNALS_COLUMNS = """
  `source` STRING,
  `symbol` STRING,
  `open_time` TIMESTAMP(3),
  `kind` STRING,
  `close` DOUBLE,
  `previous_close` DOUBLE,
  `rsi_14` DOUBLE,
  `previous_rsi_14` DOUBLE,
  `bb_upper` DOUBLE,
  `bb_middle` DOUBLE,
  `bb_lower` DOUBLE,
  `ma_5` DOUBLE,
  `ma_20` DOUBLE,
  `previous_ma_5` DOUBLE,
  `previous_ma_20` DOUBLE,
  PRIMARY KEY (`source`, `symbol`, `open_time`, `kind`) NOT ENFORCED"""


def candle_job_name(settings: Settings) -> str:
    """As the MA job's: one running job per consumer group, the name tells them apart in a shared session cluster."""
    default_group = Settings.model_fields["candle_group_id"].default
    return (
        CANDLE_JOB_NAME
        if settings.candle_group_id == default_group
        else f"{CANDLE_JOB_NAME}.{settings.candle_group_id}"
    )


def candles_source_ddl(settings: Settings) -> str:
    """Candles as raw strings, parsed in the job (tickpipe.candle_schema): a bad one becomes a dead letter."""
    return raw_source_ddl(settings, "candles_raw", settings.kafka_candles_topic, settings.candle_group_id)


def tick_source_ddl(settings: Settings) -> str:
    """The ticks (KAFKA_TOPIC) as raw strings, read in the candle job's own group: the job builds 1m candles from the
    ticks of CANDLES_FROM_TICKS_SOURCES (tick_candles.py). The MA job reads the same topic in its group."""
    return raw_source_ddl(settings, "ticks_raw", settings.kafka_topic, settings.candle_group_id)


def candles_sink_ddl(settings: Settings) -> str:
    """Upsert on (source, symbol, open_time): a candle written again with its indicators replaces the NULL ones, and
    a replay rewrites rows instead of doubling them."""
    return table_ddl("candles_1m", CANDLES_1M_COLUMNS, postgres_sink_options(settings, "candles_1m"))


def signals_sink_ddl(settings: Settings) -> str:
    """Upsert on (source, symbol, open_time, kind); a DELETE row removes a retracted signal."""
    return table_ddl("signals", SIGNALS_COLUMNS, postgres_sink_options(settings, "signals"))


def signal_events_ddl(settings: Settings) -> str:
    """The signals topic: key = source:symbol, value = the event's JSON (tickpipe.ma_job.candle_signals)."""
    options = {
        "connector": "kafka",
        "topic": settings.kafka_signals_topic,
        "properties.bootstrap.servers": settings.kafka_bootstrap_servers,
        "key.format": "raw",
        "key.fields": "key",
        "value.format": "raw",
        "value.fields-include": "EXCEPT_KEY",
        "sink.delivery-guarantee": "at-least-once",
        **kafka_security_options(settings),
    }
    return table_ddl("signal_events", "\n  `key` STRING,\n  `event` STRING", options)
