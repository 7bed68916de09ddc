"""Configuration: defaults that work locally, one clear line for a bad value, secrets never shown."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tickpipe.config import DEFAULT_SYMBOLS, Settings, load_settings
from tickpipe.errors import ConfigError

pytestmark = pytest.mark.unit


def test_defaults_point_at_a_local_stack_with_the_spec_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TICKPIPE_HOME", "/nonexistent-tickpipe-home")
    settings = load_settings()
    assert settings.kafka_bootstrap_servers == "localhost:9092"
    assert settings.kafka_topic == "price-ticks"
    assert settings.kafka_dlq_topic == "price-ticks.dlq"
    assert settings.symbols == DEFAULT_SYMBOLS
    assert settings.database.port == 5432


def test_environment_variables_override_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYMBOLS", " BTCUSDT, ethusdt ,btcusdt")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker-a:29092,broker-b:29092")
    settings = load_settings()
    assert settings.symbols == ("btcusdt", "ethusdt")
    assert settings.kafka_bootstrap_servers == "broker-a:29092,broker-b:29092"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("KAFKA_BOOTSTRAP_SERVERS", "localhost", "invalid KAFKA_BOOTSTRAP_SERVERS"),
        ("DATABASE_URL", "mysql://x@h/db", "invalid DATABASE_URL"),
        ("DATABASE_URL", "postgresql://u:secret@h/db", "DATABASE_PASSWORD"),
        ("BINANCE_WS_URL", "http://stream.binance.com", "invalid BINANCE_WS_URL"),
        ("SYMBOLS", "btc-usdt", "invalid SYMBOLS"),
        ("METRICS_PORT", "70000", "invalid METRICS_PORT"),
        ("LOG_FORMAT", "xml", "invalid LOG_FORMAT"),
        ("LOG_LEVEL", "chatty", "invalid LOG_LEVEL"),
    ],
)
def test_invalid_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=expected) as error:
        load_settings()
    assert "\n" not in str(error.value)
    assert "secret" not in str(error.value)


def test_passwords_are_never_rendered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_PASSWORD", "hunter2-owner")
    monkeypatch.setenv("DATABASE_WRITER_PASSWORD", "hunter2-writer")
    settings = load_settings()
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.model_dump())
    assert "password='hunter2-writer'" in settings.conninfo("writer")


def test_conninfo_quotes_awkward_passwords() -> None:
    settings = Settings(database_password="it's a \\ pass")  # type: ignore[arg-type]
    assert "password='it\\'s a \\\\ pass'" in settings.conninfo("owner")


def test_cli_reports_a_bad_variable_in_one_line_with_exit_code_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tickpipe.cli", "migrate", "--status"],
        capture_output=True,
        text=True,
        env={"KAFKA_BOOTSTRAP_SERVERS": "no-port", "PATH": "/usr/bin"},
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "tickpipe: invalid KAFKA_BOOTSTRAP_SERVERS: expected host:port[,host:port...], got 'no-port'"
    ]


def test_cli_help_lists_every_stage_and_tool() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "tickpipe.cli", "--help"], capture_output=True, text=True, check=True
    )
    for command in ("stack", "migrate", "ingest", "ma-job", "sim", "run", "top", "chart"):
        assert f"    {command} " in result.stdout
