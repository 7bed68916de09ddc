"""The migrator on a real PostgreSQL: ordered, recorded, idempotent, safe when run concurrently."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from tests.conftest import REPO, TestStack
from tests.migrator.upgrade import assert_source_keys_upgrade

from tickpipe.config import Settings
from tickpipe.errors import MigrationError
from tickpipe.migrator.migrate import discover, migrate, plan

pytestmark = pytest.mark.integration
MIGRATIONS = REPO / "storage" / "migrations"


def schema_snapshot(settings: Settings) -> list[tuple[object, ...]]:
    with psycopg.connect(settings.conninfo("owner")) as conn:
        return conn.execute(
            """SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns
               WHERE table_schema = 'public' ORDER BY table_name, ordinal_position"""
        ).fetchall()


def test_migrate_creates_the_price_ticks_schema_and_records_it(fresh_database: Settings) -> None:
    applied = migrate(fresh_database)
    assert [m.version for m in applied] == [m.version for m in discover(MIGRATIONS, timescaledb=False)]
    with psycopg.connect(fresh_database.conninfo("owner")) as conn:
        columns = conn.execute("""SELECT column_name, data_type FROM information_schema.columns
                                  WHERE table_name = 'price_ticks' ORDER BY ordinal_position""").fetchall()
        assert columns == [
            ("time", "timestamp with time zone"),
            ("symbol", "text"),
            ("price", "double precision"),
            ("volume", "double precision"),
            ("ma_short", "double precision"),
            ("ma_long", "double precision"),
            ("source", "text"),
        ]
        index = conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'price_ticks_source_symbol_time'")
        assert "UNIQUE INDEX" in index.fetchone()[0]  # type: ignore[index]
        assert conn.execute("SELECT variant FROM schema_migrations WHERE version = 2").fetchone() == ("postgres",)
        # The unique key makes a replayed write an upsert, not a duplicate.
        for price in (1.0, 2.0):
            conn.execute(
                """INSERT INTO price_ticks VALUES ('2026-01-01Z', 'BTCUSDT', %s, 1, NULL, NULL)
                            ON CONFLICT (source, symbol, time) DO UPDATE SET price = EXCLUDED.price""",
                (price,),
            )
        assert conn.execute("SELECT count(*), max(price) FROM price_ticks").fetchone() == (1, 2.0)


def test_a_second_run_changes_nothing(fresh_database: Settings) -> None:
    migrate(fresh_database)
    before = schema_snapshot(fresh_database)
    assert migrate(fresh_database) == []
    assert schema_snapshot(fresh_database) == before
    _, statuses = plan(fresh_database)
    assert all(status.applied for status in statuses)


def test_two_migrators_at_once_leave_one_correct_schema(fresh_database: Settings, postgres: TestStack) -> None:
    env = postgres.env(DATABASE_URL=fresh_database.database_url, MIGRATIONS_DIR=str(MIGRATIONS))
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "tickpipe.cli", "migrate"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=60) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    count = len(discover(MIGRATIONS, timescaledb=False))
    assert sorted(out for out, _ in outputs) == [f"applied {count} migration(s)\n", "schema is current\n"]
    with psycopg.connect(fresh_database.conninfo("owner")) as conn:
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (count,)


def test_status_and_dry_run_change_nothing(fresh_database: Settings, postgres: TestStack) -> None:
    env = postgres.env(DATABASE_URL=fresh_database.database_url, MIGRATIONS_DIR=str(MIGRATIONS))
    for flag in ("--status", "--dry-run"):
        result = subprocess.run(
            [sys.executable, "-m", "tickpipe.cli", "migrate", flag],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        assert "0001_price_ticks.sql" in result.stdout and "pending" in result.stdout
    with psycopg.connect(fresh_database.conninfo("owner")) as conn:
        assert conn.execute("SELECT to_regclass('price_ticks')").fetchone() == (None,)


def test_reader_may_only_read_and_writer_may_upsert(fresh_database: Settings) -> None:
    migrate(fresh_database)
    with psycopg.connect(fresh_database.conninfo("writer")) as conn:
        conn.execute("""INSERT INTO price_ticks VALUES ('2026-01-01Z', 'ETHUSDT', 1, 1, NULL, NULL)
                        ON CONFLICT (source, symbol, time) DO UPDATE SET price = EXCLUDED.price""")
    with psycopg.connect(fresh_database.conninfo("reader")) as conn:
        assert conn.execute("SELECT count(*) FROM price_ticks").fetchone() == (1,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM price_ticks")


def test_the_writer_may_stage_in_a_temporary_table_where_public_may_not(fresh_database: Settings) -> None:
    # The jobs' sink COPYs each batch into a temporary table; a hardened database revokes TEMPORARY from PUBLIC.
    with psycopg.connect(fresh_database.conninfo("owner"), autocommit=True) as conn:
        conn.execute(
            sql.SQL("REVOKE TEMPORARY ON DATABASE {} FROM PUBLIC").format(
                sql.Identifier(fresh_database.database.dbname)
            )
        )
    migrate(fresh_database)
    with psycopg.connect(fresh_database.conninfo("writer")) as conn:
        conn.execute("CREATE TEMPORARY TABLE staging (LIKE price_ticks) ON COMMIT DROP")
    with (
        psycopg.connect(fresh_database.conninfo("reader")) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("CREATE TEMPORARY TABLE staging (x int)")


def test_reader_may_read_the_alert_levels_that_only_the_owner_changes(fresh_database: Settings) -> None:
    # Grafana's price alert reads price_alert_levels as the reader, right after the first migration of a database.
    migrate(fresh_database)
    with psycopg.connect(fresh_database.conninfo("owner")) as conn:
        conn.execute("INSERT INTO price_alert_levels (symbol, level, note) VALUES ('BTCUSDT', 100000, 'round')")
    for role in ("reader", "writer"):
        with psycopg.connect(fresh_database.conninfo(role)) as conn:
            assert conn.execute("SELECT symbol, level, note FROM price_alert_levels").fetchall() == [
                ("BTCUSDT", 100000.0, "round")
            ]
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("INSERT INTO price_alert_levels (symbol, level) VALUES ('ETHUSDT', 1)")


def test_alert_levels_refuse_a_malformed_symbol_and_a_non_positive_or_infinite_level(
    fresh_database: Settings,
) -> None:
    migrate(fresh_database)
    with psycopg.connect(fresh_database.conninfo("owner"), autocommit=True) as conn:
        for symbol, level in [("btcusdt", 1.0), ("BTC-USDT", 1.0), ("BTCUSDT", 0.0), ("BTCUSDT", float("inf"))]:
            with pytest.raises(psycopg.errors.CheckViolation):
                conn.execute("INSERT INTO price_alert_levels (symbol, level) VALUES (%s, %s)", (symbol, level))


def test_editing_an_applied_migration_is_refused(fresh_database: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, folder)
    settings = fresh_database.model_copy(update={"migrations_dir": folder})
    migrate(settings)
    (folder / "0001_price_ticks.sql").write_text((folder / "0001_price_ticks.sql").read_text() + "\n-- edit\n")
    with pytest.raises(MigrationError, match=r"0001_price_ticks\.sql changed after it was applied"):
        migrate(settings)


def test_a_failing_migration_is_rolled_back_and_named(fresh_database: Settings, tmp_path: Path) -> None:
    folder = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, folder)
    (folder / "0099_broken.sql").write_text("CREATE TABLE half_done (x int);\nSELECT no_such_function();\n")
    settings = fresh_database.model_copy(update={"migrations_dir": folder})
    with pytest.raises(MigrationError, match=r"0099_broken.sql failed: function no_such_function\(\) does not"):
        migrate(settings)
    with psycopg.connect(settings.conninfo("owner")) as conn:
        assert conn.execute("SELECT to_regclass('half_done')").fetchone() == (None,)
        newest = max(m.version for m in discover(MIGRATIONS, timescaledb=False))
        assert conn.execute("SELECT max(version) FROM schema_migrations").fetchone() == (newest,)


@pytest.mark.unit
def test_each_version_has_a_variant_for_both_paths() -> None:
    for timescaledb in (True, False):
        versions = [m.version for m in discover(MIGRATIONS, timescaledb)]
        assert versions == sorted(set(versions)) and versions[0] == 1


def test_source_keys_upgrade_keeps_every_row(fresh_database: Settings, tmp_path: Path) -> None:
    """Migration 0007 on a database that already holds Binance rows: nothing lost, every row is Binance's, the same
    symbol from another source is a row of its own, and a second run changes nothing."""
    assert_source_keys_upgrade(fresh_database, tmp_path, compress=False)
