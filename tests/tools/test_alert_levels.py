"""`tickpipe alert-level add|remove|list`: the price alert's levels, kept in price_alert_levels by the owner role."""

from __future__ import annotations

import subprocess
import sys

import psycopg
import pytest

from tests.conftest import REPO, TestStack
from tickpipe.cli import main
from tickpipe.config import Settings
from tickpipe.migrator.migrate import migrate


def alert_level(postgres: TestStack, settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = postgres.env(DATABASE_URL=settings.database_url, MIGRATIONS_DIR=str(REPO / "storage" / "migrations"))
    return subprocess.run(
        [sys.executable, "-m", "tickpipe.cli", "alert-level", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.integration
def test_add_list_and_remove_round_trip_through_the_table(fresh_database: Settings, postgres: TestStack) -> None:
    migrate(fresh_database)
    added = alert_level(postgres, fresh_database, "add", "btcusdt", "100000", "--note", "round number")
    assert added.returncode == 0, added.stderr
    # The symbol is stored as the pipeline writes it; no tick of it yet, which add points out.
    assert added.stdout.splitlines() == [
        "added BTCUSDT 100000",
        "note: price_ticks has no rows for BTCUSDT yet (is it in SYMBOLS?)",
    ]
    assert alert_level(postgres, fresh_database, "add", "ETHUSDT", "2500.5").returncode == 0
    again = alert_level(postgres, fresh_database, "add", "BTCUSDT", "1e5")
    assert again.stdout.splitlines()[0] == "already set: BTCUSDT 100000"  # idempotent; the note stays
    with psycopg.connect(fresh_database.conninfo("owner")) as conn:
        rows = conn.execute("SELECT symbol, level, note FROM price_alert_levels ORDER BY symbol").fetchall()
    assert rows == [("BTCUSDT", 100000.0, "round number"), ("ETHUSDT", 2500.5, None)]

    listed = alert_level(postgres, fresh_database, "list")
    assert listed.returncode == 0, listed.stderr
    assert [line.split() for line in listed.stdout.splitlines()] == [
        ["BTCUSDT", "100000", "round", "number"],
        ["ETHUSDT", "2500.5"],
    ]
    assert alert_level(postgres, fresh_database, "list", "ethusdt").stdout.split() == ["ETHUSDT", "2500.5"]

    removed = alert_level(postgres, fresh_database, "remove", "BTCUSDT", "100000")
    assert (removed.returncode, removed.stdout) == (0, "removed BTCUSDT 100000\n")
    assert alert_level(postgres, fresh_database, "remove", "ETHUSDT", "2500.5").returncode == 0
    assert alert_level(postgres, fresh_database, "list").stdout.startswith("no alert levels")
    with psycopg.connect(fresh_database.conninfo("owner")) as conn:
        assert conn.execute("SELECT count(*) FROM price_alert_levels").fetchone() == (0,)


@pytest.mark.integration
def test_removing_a_level_that_is_not_set_is_a_one_line_error(fresh_database: Settings, postgres: TestStack) -> None:
    migrate(fresh_database)
    result = alert_level(postgres, fresh_database, "remove", "BTCUSDT", "42")
    assert result.returncode == 1
    assert result.stderr == "tickpipe alert-level: no alert level 42 for BTCUSDT (see `tickpipe alert-level list`)\n"


@pytest.mark.integration
def test_before_the_migration_the_error_says_to_migrate(fresh_database: Settings, postgres: TestStack) -> None:
    result = alert_level(postgres, fresh_database, "list")
    assert result.returncode == 1
    assert result.stderr == (
        "tickpipe alert-level: table price_alert_levels does not exist: run `tickpipe migrate` first\n"
    )


@pytest.mark.unit
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["add", "BTCUSDT", "0"], "a price level must be a positive number, got '0'"),
        (["add", "BTCUSDT", "-100"], "a price level must be a positive number, got '-100'"),
        (["add", "BTCUSDT", "nan"], "a price level must be a positive number, got 'nan'"),
        (["remove", "BTCUSDT", "lots"], "not a price level: 'lots' (expected a positive number, e.g. 100000)"),
        (["add", "BTC/USDT", "1"], "not a symbol: 'BTC/USDT' (expected 2 to 20 letters and digits, e.g. BTCUSDT)"),
        (["list", "x"], "not a symbol: 'x' (expected 2 to 20 letters and digits, e.g. BTCUSDT)"),
    ],
)
def test_bad_input_is_a_one_line_error_before_any_connection(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # An address nothing listens on: the input is refused before the database is asked.
    monkeypatch.setenv("DATABASE_URL", "postgresql://tickpipe@127.0.0.1:1/tickpipe")
    assert main(["alert-level", *args]) == 1
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", f"tickpipe alert-level: {message}\n")
