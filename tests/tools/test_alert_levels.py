"""`tickpipe alert-level add|remove|list`: the price alert's levels, kept in price_alert_levels by the owner role."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import REPO, TestStack
from tests.dlq.test_symbol_rule import NOT_SOURCE_SYMBOLS, NOT_SYMBOLS, SOURCE_SYMBOLS, SYMBOLS
from tickpipe.cli import main
from tickpipe.config import Settings
from tickpipe.migrator.migrate import migrate
from tickpipe.schema import SOURCES, SYMBOL_RULES, is_symbol

MIGRATION_0008 = REPO / "storage" / "migrations" / "0008_alert_level_sources.sql"


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
        "added binance BTCUSDT 100000",
        "note: price_ticks has no rows for BTCUSDT from binance yet (is it in SYMBOLS of SOURCE=binance?)",
    ]
    assert alert_level(postgres, fresh_database, "add", "ETHUSDT", "2500.5").returncode == 0
    again = alert_level(postgres, fresh_database, "add", "BTCUSDT", "1e5")
    assert again.stdout.splitlines()[0] == "already set: binance BTCUSDT 100000"  # idempotent; the note stays
    with psycopg.connect(fresh_database.conninfo("owner")) as conn:
        rows = conn.execute("SELECT source, symbol, level, note FROM price_alert_levels ORDER BY symbol").fetchall()
    assert rows == [("binance", "BTCUSDT", 100000.0, "round number"), ("binance", "ETHUSDT", 2500.5, None)]

    listed = alert_level(postgres, fresh_database, "list")
    assert listed.returncode == 0, listed.stderr
    assert [line.split() for line in listed.stdout.splitlines()] == [
        ["binance", "BTCUSDT", "100000", "round", "number"],
        ["binance", "ETHUSDT", "2500.5"],
    ]
    assert alert_level(postgres, fresh_database, "list", "ethusdt").stdout.split() == ["binance", "ETHUSDT", "2500.5"]

    removed = alert_level(postgres, fresh_database, "remove", "BTCUSDT", "100000")
    assert (removed.returncode, removed.stdout) == (0, "removed binance BTCUSDT 100000\n")
    assert alert_level(postgres, fresh_database, "remove", "ETHUSDT", "2500.5").returncode == 0
    assert alert_level(postgres, fresh_database, "list").stdout.startswith("no alert levels")
    with psycopg.connect(fresh_database.conninfo("owner")) as conn:
        assert conn.execute("SELECT count(*) FROM price_alert_levels").fetchone() == (0,)


@pytest.mark.integration
def test_removing_a_level_that_is_not_set_is_a_one_line_error(fresh_database: Settings, postgres: TestStack) -> None:
    migrate(fresh_database)
    result = alert_level(postgres, fresh_database, "remove", "BTCUSDT", "42")
    assert result.returncode == 1
    assert result.stderr == (
        "tickpipe alert-level: no alert level 42 for BTCUSDT from binance (see `tickpipe alert-level list`)\n"
    )


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
        (
            ["add", "BTC/USDT", "1"],
            "not a binance symbol: 'BTC/USDT' (expected 2 to 20 letters and digits, e.g. BTCUSDT)",
        ),
        (
            ["list", "x", "--source", "binance"],
            "not a binance symbol: 'x' (expected 2 to 20 letters and digits, e.g. BTCUSDT)",
        ),
        (["list", "BTC USD"], "not a symbol of any source: 'BTC USD' (e.g. BTCUSDT, bitcoin/usd, AAPL)"),
        (
            ["add", "BTC-USD", "1", "--source", "coingecko"],
            "not a coingecko symbol: 'BTC-USD' (expected <coin id>/<vs currency>: an id of letters, digits and "
            "hyphens, a currency of 2 to 10 letters, e.g. bitcoin/usd)",
        ),
        (
            ["add", "BTCUSDT", "1", "--source", "kraken"],
            "unknown source: 'kraken' (expected binance, coingecko, yahoo)",
        ),
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


# -- levels per (source, symbol) ------------------------------------------------------------------------------------
@pytest.mark.integration
def test_the_same_symbol_has_levels_of_its_own_in_each_source(fresh_database: Settings, postgres: TestStack) -> None:
    migrate(fresh_database)
    with psycopg.connect(fresh_database.conninfo("owner")) as conn:
        conn.execute(
            "INSERT INTO price_ticks (time, source, symbol, price, volume) VALUES (now(), 'yahoo', 'BTCUSDT', 1, 1)"
        )
    # The same symbol and level in two sources are two levels; a third source's symbol is in its stored case.
    assert alert_level(postgres, fresh_database, "add", "BTCUSDT", "100000").returncode == 0
    yahoo = alert_level(postgres, fresh_database, "add", "btcusdt", "100000", "--source", "yahoo", "--note", "y")
    assert yahoo.stdout == "added yahoo BTCUSDT 100000\n"  # Yahoo has ticks of it: no note about SYMBOLS
    coingecko = alert_level(postgres, fresh_database, "add", "Bitcoin/USD", "100000", "--source", "coingecko")
    assert coingecko.stdout.splitlines()[0] == "added coingecko bitcoin/usd 100000"
    assert [line.split() for line in alert_level(postgres, fresh_database, "list").stdout.splitlines()] == [
        ["binance", "BTCUSDT", "100000"],
        ["coingecko", "bitcoin/usd", "100000"],
        ["yahoo", "BTCUSDT", "100000", "y"],
    ]
    # A symbol without --source is every source's that has it; --source narrows.
    assert [
        line.split()[0] for line in alert_level(postgres, fresh_database, "list", "btcusdt").stdout.splitlines()
    ] == [
        "binance",
        "yahoo",
    ]
    assert alert_level(postgres, fresh_database, "list", "--source", "yahoo").stdout.split() == [
        "yahoo",
        "BTCUSDT",
        "100000",
        "y",
    ]
    removed = alert_level(postgres, fresh_database, "remove", "BTCUSDT", "100000", "--source", "yahoo")
    assert removed.stdout == "removed yahoo BTCUSDT 100000\n"
    with psycopg.connect(fresh_database.conninfo("owner")) as conn:
        rows = conn.execute("SELECT source, symbol FROM price_alert_levels ORDER BY source").fetchall()
    assert rows == [("binance", "BTCUSDT"), ("coingecko", "bitcoin/usd")]  # Binance's level is still there


def check_patterns() -> dict[str, tuple[str, int | None]]:
    """Migration 0008's CHECK: {source: (its regular expression, its length bound or None)}."""
    found = re.findall(
        r"WHEN '(\w+)' THEN symbol ~ '([^']+)'(?: AND char_length\(symbol\) <= (\d+))?", MIGRATION_0008.read_text()
    )
    return {source: (pattern, int(bound) if bound else None) for source, pattern, bound in found}


def check_accepts(source: str, text: str) -> bool:
    pattern, bound = check_patterns()[source]
    # PostgreSQL's `$` is the end of the text only (Python's also matches before a final newline): fullmatch.
    return re.fullmatch(pattern.removeprefix("^").removesuffix("$"), text) is not None and (
        bound is None or len(text) <= bound
    )


@pytest.mark.unit
def test_the_check_has_a_pattern_for_every_source() -> None:
    assert set(check_patterns()) == set(SOURCES) == set(SYMBOL_RULES)


SYMBOLISH = st.text(alphabet=st.sampled_from("AZaz09.-=^/ _\nÄ"), max_size=24) | st.text(max_size=24)


@pytest.mark.unit
@pytest.mark.parametrize("source", SOURCES)
@given(text=SYMBOLISH)
def test_the_checks_pattern_accepts_exactly_the_stored_form_of_each_sources_symbols(source: str, text: str) -> None:
    rule = SYMBOL_RULES[source]
    assert check_accepts(source, text) == (is_symbol(text, source) and rule.stored(text) == text), text


@pytest.fixture
def only_up_to(tmp_path: Path) -> Iterator[Path]:
    """The migrations before 0008, as a database had them before this change."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    for path in (REPO / "storage" / "migrations").glob("*.sql"):
        if int(path.name[:4]) < 8:
            shutil.copy(path, folder / path.name)
    yield folder


def stored_cases() -> Iterator[tuple[str, str, bool]]:
    """(source, text, whether the table takes it): each source's symbols in stored form and what is not one."""
    for symbol in SYMBOLS:
        yield "binance", symbol, symbol == symbol.upper()
    for symbol in NOT_SYMBOLS:
        yield "binance", symbol, False
    for source, pairs in SOURCE_SYMBOLS.items():
        for text, stored in pairs:
            yield source, stored, True
            if text != stored:
                yield source, text, False
    for source, texts in NOT_SOURCE_SYMBOLS.items():
        for text in texts:
            yield source, text, False
    yield "yahoo", "BTCUSDT", True
    yield "kraken", "BTCUSDT", False  # an unknown source


@pytest.mark.integration
@pytest.mark.parametrize("engine", ["postgres", "timescaledb"])
def test_the_migration_keeps_the_levels_and_moves_the_key_and_check_to_the_source(
    engine: str, only_up_to: Path, request: pytest.FixtureRequest
) -> None:
    database: Settings = request.getfixturevalue("fresh_database" if engine == "postgres" else "fresh_timescaledb")
    before = database.model_copy(update={"migrations_dir": only_up_to})
    migrate(before)
    levels = [("BTCUSDT", 100000.0, "round"), ("BTCUSDT", 90000.0, None), ("ETHUSDT", 2500.5, None)]
    with psycopg.connect(database.conninfo("owner"), prepare_threshold=None) as conn:
        for symbol, level, note in levels:
            conn.execute(
                "INSERT INTO price_alert_levels (symbol, level, note) VALUES (%s, %s, %s)", (symbol, level, note)
            )
        created = conn.execute("SELECT array_agg(created_at ORDER BY symbol, level) FROM price_alert_levels").fetchone()

    assert 8 in [m.version for m in migrate(database)]
    assert migrate(database) == []  # a second run changes nothing
    with psycopg.connect(database.conninfo("owner"), prepare_threshold=None, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT source, symbol, level, note FROM price_alert_levels ORDER BY symbol, level"
        ).fetchall()
        assert rows == [("binance", symbol, level, note) for symbol, level, note in sorted(levels)]
        again = conn.execute("SELECT array_agg(created_at ORDER BY symbol, level) FROM price_alert_levels").fetchone()
        assert again == created
        key = conn.execute(
            "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = 'price_alert_levels_pkey'"
        ).fetchone()
        assert key == ("PRIMARY KEY (source, symbol, level)",)
        # The same symbol and level from another source is another row; the same one again is refused.
        conn.execute("INSERT INTO price_alert_levels (source, symbol, level) VALUES ('yahoo', 'BTCUSDT', 100000)")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO price_alert_levels (source, symbol, level) VALUES ('yahoo', 'BTCUSDT', 100000)")
        wrong = []
        for source, text, accepted in stored_cases():
            try:
                with conn.transaction():
                    conn.execute(
                        "INSERT INTO price_alert_levels (source, symbol, level) VALUES (%s, %s, 1)", (source, text)
                    )
                    raise _Rollback
            except psycopg.errors.CheckViolation:
                taken = False
            except _Rollback:
                taken = True
            if taken != accepted or taken != (check_accepts(source, text) if source in SOURCES else False):
                wrong.append((source, text, taken))
        assert wrong == []


class _Rollback(Exception):
    """Leaves a transaction after a row was taken: the test only asks the CHECK."""
