"""The migrations on a real TimescaleDB engine: the hypertable path, its policies, and a second run."""

from __future__ import annotations

import psycopg
import pytest

from tickpipe.config import Settings
from tickpipe.migrator.migrate import migrate

pytestmark = pytest.mark.integration


def test_the_timescaledb_path_makes_a_hypertable_with_compression_and_retention(timescaledb: Settings) -> None:
    applied = migrate(timescaledb)
    assert [m.path.name for m in applied][-1] == "0002_time_partitioning.timescaledb.sql"
    with psycopg.connect(timescaledb.conninfo("owner")) as conn:
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
    assert hypertables == [("price_ticks", True)]
    assert {"policy_compression", "policy_retention"} <= jobs
    assert dimension is not None
    assert dimension[0] == "time"
    assert bucket[0][1] == 97001.0
    assert migrate(timescaledb) == []  # a second run changes nothing
