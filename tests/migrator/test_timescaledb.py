"""The migrations on a real TimescaleDB engine: the hypertable path, its policies, and a second run."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest
from tests.migrator.upgrade import assert_source_keys_upgrade

from tickpipe.config import Settings
from tickpipe.migrator.migrate import migrate

# No skip when the engine is missing: `make setup` installs it, and a silently skipped test proves nothing.
pytestmark = pytest.mark.integration


def timescaledb_snapshot(settings: Settings) -> list[list[tuple[object, ...]]]:
    with psycopg.connect(settings.conninfo("owner")) as conn:
        return [
            conn.execute(query).fetchall()
            for query in (
                """SELECT table_name, column_name, data_type FROM information_schema.columns
                   WHERE table_schema = 'public' ORDER BY table_name, ordinal_position""",
                "SELECT hypertable_name, compression_enabled FROM timescaledb_information.hypertables ORDER BY 1",
                "SELECT job_id, proc_name, schedule_interval::text, config::text FROM timescaledb_information.jobs "
                "ORDER BY 1",
                "SELECT version, variant, checksum FROM schema_migrations ORDER BY 1",
            )
        ]


def test_the_timescaledb_path_makes_a_hypertable_with_compression_and_retention(fresh_timescaledb: Settings) -> None:
    applied = migrate(fresh_timescaledb)
    assert "0002_time_partitioning.timescaledb.sql" in [m.path.name for m in applied]
    with psycopg.connect(fresh_timescaledb.conninfo("owner")) as conn:
        hypertables = conn.execute(
            "SELECT hypertable_name, compression_enabled FROM timescaledb_information.hypertables"
        ).fetchall()
        jobs = {row[0] for row in conn.execute("SELECT proc_name FROM timescaledb_information.jobs").fetchall()}
        dimension = conn.execute(
            "SELECT column_name, time_interval FROM timescaledb_information.dimensions "
            "WHERE hypertable_name = 'price_ticks'"
        ).fetchone()
        conn.execute(
            "INSERT INTO price_ticks VALUES ('2026-11-24T12:00:00Z', 'BTCUSDT', 97000.5, 1.5, NULL, NULL), "
            "('2026-11-24T12:00:01Z', 'BTCUSDT', 97001.0, 1.0, NULL, NULL)"
        )
        bucket = conn.execute(
            "SELECT time_bucket('1 minute', time) AS t, last(price, time) FROM price_ticks GROUP BY t"
        ).fetchall()
    assert sorted(hypertables) == [("candles_1m", True), ("price_ticks", True)]
    assert {"policy_compression", "policy_retention"} <= jobs
    assert dimension is not None
    assert dimension[0] == "time"
    assert bucket[0][1] == 97001.0
    before = timescaledb_snapshot(fresh_timescaledb)
    assert migrate(fresh_timescaledb) == []  # a second run changes nothing
    assert timescaledb_snapshot(fresh_timescaledb) == before


def test_source_keys_upgrade_keeps_every_row_in_compressed_chunks_too(
    fresh_timescaledb: Settings, tmp_path: Path
) -> None:
    """Migration 0007 on a database that holds Binance rows, a week of them compressed: nothing lost, every row
    is Binance's, the same symbol from another source is a row of its own, and a second run changes nothing."""
    assert_source_keys_upgrade(fresh_timescaledb, tmp_path, compress=True)
