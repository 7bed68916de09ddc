"""Versioned schema migrations: SQL files applied in order, recorded, safe to run concurrently and to re-run.

Files in the migrations folder are named `NNNN_name.sql`, or `NNNN_name.timescaledb.sql` and
`NNNN_name.postgres.sql` when the TimescaleDB path and the plain PostgreSQL path differ. The migrator detects the
timescaledb extension once and applies the matching variant. A file whose first line is
`-- tickpipe: no-transaction` runs outside a transaction (TimescaleDB continuous aggregates require it).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from tickpipe.config import Settings
from tickpipe.errors import MigrationError
from tickpipe.logs import get_logger

log = get_logger("tickpipe.migrator")

_FILE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+?)(?:\.(?P<variant>timescaledb|postgres))?\.sql$")
# A fixed key for pg_advisory_lock: every migrator of every replica serialises on it.
_LOCK_KEY = 7_463_001
# What the writer role (the MA job) writes; every table is readable by both roles.
WRITTEN_TABLES = ("price_ticks", "candles_1m", "signals")
# The candle job deletes a signal that a late candle's recomputation no longer gives; nothing else deletes rows.
DELETED_TABLES = ("signals",)
NO_TRANSACTION = "-- tickpipe: no-transaction"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    variant: str  # "any", "timescaledb" or "postgres"
    path: Path

    @property
    def text(self) -> str:
        return self.path.read_text()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()[:16]


@dataclass(frozen=True)
class MigrationStatus:
    migration: Migration
    applied: bool


def discover(folder: Path, timescaledb: bool) -> list[Migration]:
    """The migrations for one path (TimescaleDB or plain PostgreSQL), in version order."""
    if not folder.is_dir():
        raise MigrationError(f"migrations folder {folder} not found (set MIGRATIONS_DIR)")
    by_version: dict[int, list[Migration]] = {}
    for path in sorted(folder.glob("*.sql")):
        match = _FILE.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: not a migration file name (expected NNNN_name[.variant].sql)")
        migration = Migration(int(match["version"]), match["name"], match["variant"] or "any", path)
        by_version.setdefault(migration.version, []).append(migration)
    wanted = "timescaledb" if timescaledb else "postgres"
    chosen = []
    for version, candidates in sorted(by_version.items()):
        variants = {m.variant: m for m in candidates}
        if "any" in variants and len(variants) > 1:
            raise MigrationError(f"version {version:04d} has both a plain file and variants")
        pick = variants.get("any") or variants.get(wanted)
        if pick is None:
            raise MigrationError(f"version {version:04d} has no {wanted} variant")
        chosen.append(pick)
    return chosen


def timescaledb_available(conn: psycopg.Connection[tuple[object, ...]]) -> bool:
    row = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
    return row is not None


def _ensure_bookkeeping(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    conn.execute(
        """CREATE TABLE IF NOT EXISTS schema_migrations (
               version    integer PRIMARY KEY,
               name       text        NOT NULL,
               variant    text        NOT NULL,
               checksum   text        NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now()
           )"""
    )


def _applied(conn: psycopg.Connection[tuple[object, ...]]) -> dict[int, tuple[str, str]]:
    rows = conn.execute("SELECT version, variant, checksum FROM schema_migrations").fetchall()
    return {int(str(version)): (str(variant), str(checksum)) for version, variant, checksum in rows}


def _check_unchanged(migrations: list[Migration], applied: dict[int, tuple[str, str]]) -> None:
    for migration in migrations:
        recorded = applied.get(migration.version)
        if recorded and recorded[1] != migration.checksum:
            raise MigrationError(
                f"{migration.path.name} changed after it was applied "
                f"(recorded checksum {recorded[1]}, now {migration.checksum}); "
                f"add a new migration instead of editing an applied one"
            )


def plan(settings: Settings) -> tuple[bool, list[MigrationStatus]]:
    """What `migrate` would do: (TimescaleDB path?, every migration with whether it is applied)."""
    with psycopg.connect(settings.conninfo("owner"), autocommit=True) as conn:
        timescaledb = timescaledb_available(conn)
        migrations = discover(settings.migrations_dir, timescaledb)
        exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
        applied = _applied(conn) if exists and exists[0] else {}
    _check_unchanged(migrations, applied)
    return timescaledb, [MigrationStatus(m, m.version in applied) for m in migrations]


def migrate(settings: Settings) -> list[Migration]:
    """Bring the schema and roles up to date; return the migrations applied now (empty when already current)."""
    with psycopg.connect(settings.conninfo("owner"), autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            return _migrate_locked(conn, settings)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))


def _migrate_locked(conn: psycopg.Connection[tuple[object, ...]], settings: Settings) -> list[Migration]:
    timescaledb = timescaledb_available(conn)
    if timescaledb:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
        log.info("migrate_path", path="timescaledb", timescaledb_version=version[0] if version else None)
    else:
        log.info(
            "migrate_path",
            path="postgres",
            reason="extension timescaledb is not available: plain PostgreSQL schema (no hypertable)",
        )
    _ensure_bookkeeping(conn)
    migrations = discover(settings.migrations_dir, timescaledb)
    applied = _applied(conn)
    _check_unchanged(migrations, applied)
    done = []
    for migration in migrations:
        if migration.version in applied:
            continue
        _apply(conn, migration)
        log.info("migration_applied", version=migration.version, name=migration.name, variant=migration.variant)
        done.append(migration)
    ensure_roles(conn, settings)
    if not done:
        log.info("schema_current", version=max((m.version for m in migrations), default=0))
    return done


def _apply(conn: psycopg.Connection[tuple[object, ...]], migration: Migration) -> None:
    record = (
        "INSERT INTO schema_migrations (version, name, variant, checksum) VALUES (%s, %s, %s, %s)",
        (migration.version, migration.name, migration.variant, migration.checksum),
    )
    text = migration.text
    try:
        if text.lstrip().startswith(NO_TRANSACTION):
            conn.execute(text)  # a trusted file of ours, not user input
            conn.execute(*record)
        else:
            with conn.transaction():
                conn.execute(text)
                conn.execute(*record)
    except psycopg.Error as error:
        first_line = str(error).strip().splitlines()[0]
        raise MigrationError(f"{migration.path.name} failed: {first_line}") from None


def ensure_roles(conn: psycopg.Connection[tuple[object, ...]], settings: Settings) -> None:
    """The writer (the jobs) may insert and update ticks and candles; the reader (Grafana) may only select.

    Passwords come from DATABASE_WRITER_PASSWORD / DATABASE_READER_PASSWORD; without one the role exists but
    cannot log in, which is the safe default.
    """
    database = sql.Identifier(settings.database.dbname)
    for role, password, grants in (
        (settings.database_writer_user, settings.database_writer_password, "SELECT, INSERT, UPDATE"),
        (settings.database_reader_user, settings.database_reader_password, "SELECT"),
    ):
        name = sql.Identifier(role)
        with conn.transaction():
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone():
                conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(name))
            if password is not None:
                conn.execute(
                    sql.SQL("ALTER ROLE {} LOGIN PASSWORD {}").format(name, sql.Literal(password.get_secret_value()))
                )
            else:
                log.warning("role_without_password", role=role, hint="set its *_PASSWORD variable to allow login")
            conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(database, name))
            conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(name))
            for table in WRITTEN_TABLES:
                conn.execute(sql.SQL("GRANT " + grants + " ON {} TO {}").format(sql.Identifier(table), name))
            if role == settings.database_writer_user:
                # The jobs' sink stages each batch in a temporary table. PostgreSQL grants TEMPORARY to PUBLIC by
                # default; a hardened or managed database may have revoked it.
                conn.execute(sql.SQL("GRANT TEMPORARY ON DATABASE {} TO {}").format(database, name))
                for table in DELETED_TABLES:
                    conn.execute(sql.SQL("GRANT DELETE ON {} TO {}").format(sql.Identifier(table), name))
            # Every table the migrations made is readable (schema_migrations, price_alert_levels which Grafana's
            # price alert reads, ...): on a new database the migrations run before the default privileges below exist.
            conn.execute(sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(name))
            # Tables and views added by later migrations (e.g. aggregates) become readable too.
            conn.execute(sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {}").format(name))
