"""The TimescaleDB chart's backup and restore scripts (charts/timescaledb/files), run here against the local
PostgreSQL with the server's own pg_dump/pg_restore, as the backup CronJob runs them against TimescaleDB: a backup of
a migrated database with ticks restores into a fresh database with identical rows."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import REPO
from tests.helpers import random_walk
from tickpipe.config import Settings
from tickpipe.migrator.migrate import migrate
from tickpipe.stack.components import _postgres_bin

pytestmark = pytest.mark.integration
SCRIPTS = REPO / "charts" / "timescaledb" / "files"


def libpq_env(settings: Settings, database: str | None = None) -> dict[str, str]:
    """What the CronJob sets (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE), pointed at the local server; its
    client programs first on PATH, as in the TimescaleDB image."""
    address = settings.database
    password = settings.database_password.get_secret_value() if settings.database_password else ""
    env = dict(os.environ)
    env.update(PGHOST=address.host, PGPORT=str(address.port), PGUSER=address.user, PGPASSWORD=password,
               PGDATABASE=database or address.dbname, PATH=f"{_postgres_bin()}:{os.environ['PATH']}")  # fmt: skip
    if address.sslmode:
        env["PGSSLMODE"] = address.sslmode
    if address.sslrootcert:
        env["PGSSLROOTCERT"] = address.sslrootcert
    return env


def run_script(name: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sh", str(SCRIPTS / name), *args], env=env, capture_output=True, text=True, timeout=120,
                          check=False)  # fmt: skip


def rows(settings: Settings, database: str | None = None) -> list[tuple[Any, ...]]:
    """Every row of the tables the pipeline writes and the migrator keeps, in a fixed order."""
    conninfo = settings.conninfo("owner")
    if database:
        conninfo += f" dbname='{database}'"
    with psycopg.connect(conninfo) as conn:
        ticks = conn.execute("SELECT * FROM price_ticks ORDER BY symbol, time").fetchall()
        migrations = conn.execute("SELECT * FROM schema_migrations ORDER BY 1").fetchall()
    return [("price_ticks", len(ticks)), *ticks, ("schema_migrations", len(migrations)), *migrations]


@pytest.fixture
def database_with_ticks(fresh_database: Settings) -> Settings:
    """A migrated database with 600 ticks (200 of each of three symbols), with MAs and some NULL MAs."""
    migrate(fresh_database)
    ticks = random_walk(["BTCUSDT", "ETHUSDT", "SOLUSDT"], 200)
    with psycopg.connect(fresh_database.conninfo("owner")) as conn, conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO price_ticks (time, symbol, price, volume, ma_short, ma_long)"
            " VALUES (to_timestamp(%s / 1000.0), %s, %s, %s, %s, %s)",
            [
                (t.event_time_ms, t.symbol, t.price, t.volume, t.price if i % 7 else None, t.price if i % 11 else None)
                for i, t in enumerate(ticks)
            ],
        )
    return fresh_database


@pytest.fixture
def restored_name(database_with_ticks: Settings) -> Iterator[str]:
    name = f"restored_{uuid.uuid4().hex[:10]}"
    yield name
    with psycopg.connect(database_with_ticks.conninfo("owner"), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_backup_restores_into_a_fresh_database_with_identical_rows(
    database_with_ticks: Settings, restored_name: str, tmp_path: Path
) -> None:
    settings = database_with_ticks
    backup = run_script("backup.sh", str(tmp_path), env=libpq_env(settings))
    assert backup.returncode == 0, backup.stdout + backup.stderr
    [dump] = tmp_path.glob("*.dump")
    assert dump.name.startswith(f"{settings.database.dbname}-") and not list(tmp_path.glob("*.partial"))

    restore = run_script("restore.sh", str(dump), restored_name, env=libpq_env(settings))
    assert restore.returncode == 0, restore.stdout + restore.stderr
    assert "TimescaleDB: no" in restore.stdout  # plain PostgreSQL here; the chart's database takes the other branch

    original, restored = rows(settings), rows(settings, restored_name)
    assert original[0] == ("price_ticks", 600)
    assert restored == original


def test_restore_refuses_a_database_that_exists(database_with_ticks: Settings, tmp_path: Path) -> None:
    settings = database_with_ticks
    assert run_script("backup.sh", str(tmp_path), env=libpq_env(settings)).returncode == 0
    [dump] = tmp_path.glob("*.dump")
    refused = run_script("restore.sh", str(dump), settings.database.dbname, env=libpq_env(settings))
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        f"restore: database {settings.database.dbname} exists; restore into a new one (then swap the names)"
    )
    assert rows(settings)[0] == ("price_ticks", 600)  # untouched


def test_backup_keeps_the_newest_dumps_it_is_told_to(database_with_ticks: Settings, tmp_path: Path) -> None:
    settings = database_with_ticks
    name = settings.database.dbname
    older = [tmp_path / f"{name}-2020010{day}T030000Z.dump" for day in (1, 2, 3)]
    for path in older:
        path.write_bytes(b"an older backup")
    result = run_script("backup.sh", str(tmp_path), env={**libpq_env(settings), "BACKUP_RETAIN": "2"})
    assert result.returncode == 0, result.stderr
    kept = sorted(path.name for path in tmp_path.glob("*.dump"))
    assert len(kept) == 2 and kept[0] == older[-1].name and kept[1] > older[-1].name


def test_backup_of_an_unreachable_database_fails_and_leaves_no_dump(fresh_database: Settings, tmp_path: Path) -> None:
    env = {**libpq_env(fresh_database), "PGDATABASE": f"missing_{uuid.uuid4().hex[:8]}"}
    result = run_script("backup.sh", str(tmp_path), env=env)
    assert result.returncode != 0
    assert not list(tmp_path.iterdir())
