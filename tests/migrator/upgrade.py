"""The upgrade to source-aware keys (migration 0007), run from the schema before it, with rows in the table."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg
from tests.conftest import REPO

from tickpipe.config import Settings
from tickpipe.migrator.migrate import migrate

SOURCE_KEYS_VERSION = 7
HOURS = 24 * 10  # ten days of hourly rows: older than the compression policy's week


def assert_source_keys_upgrade(settings: Settings, tmp_path: Path, *, compress: bool) -> None:
    before = tmp_path / "migrations-before"
    before.mkdir()
    for path in (REPO / "storage" / "migrations").glob("*.sql"):
        if int(path.name[:4]) < SOURCE_KEYS_VERSION:
            shutil.copy(path, before / path.name)
    migrate(settings.model_copy(update={"migrations_dir": before}))
    with psycopg.connect(settings.conninfo("owner"), autocommit=True) as conn:
        conn.execute(
            "INSERT INTO price_ticks SELECT now() - make_interval(hours => i), s, i, 1, NULL, NULL "
            "FROM generate_series(1, %s) i, unnest(ARRAY['BTCUSDT', 'ETHUSDT']) s",
            (HOURS,),
        )
        if compress:
            compressed = conn.execute(
                "SELECT count(compress_chunk(c)) FROM show_chunks('price_ticks', older_than => interval '8 days') c"
            ).fetchone()
            assert compressed is not None and compressed[0] > 0
        want = conn.execute("SELECT symbol, time, price FROM price_ticks ORDER BY 1, 2").fetchall()

    applied = migrate(settings)
    assert [m.version for m in applied if m.version == SOURCE_KEYS_VERSION] == [SOURCE_KEYS_VERSION]
    with psycopg.connect(settings.conninfo("owner"), autocommit=True) as conn:
        assert conn.execute("SELECT symbol, time, price FROM price_ticks ORDER BY 1, 2").fetchall() == want
        assert conn.execute("SELECT DISTINCT source FROM price_ticks").fetchall() == [("binance",)]
        if compress:  # compressed again, as the policy would have them
            still = conn.execute(
                "SELECT count(*) FROM timescaledb_information.chunks WHERE hypertable_name = 'price_ticks' "
                "AND is_compressed"
            ).fetchone()
            assert still is not None and still[0] > 0
        oldest = conn.execute("SELECT min(time) FROM price_ticks").fetchone()
        assert oldest is not None
        # Another source's BTCUSDT at the very same instant is a row of its own; the job's upsert key works.
        for source, price in (("yahoo", 1.5), ("yahoo", 2.5), ("binance", 7.0)):
            conn.execute(
                "INSERT INTO price_ticks (time, source, symbol, price, volume) VALUES (%s, %s, 'BTCUSDT', %s, 1) "
                "ON CONFLICT (source, symbol, time) DO UPDATE SET price = EXCLUDED.price",
                (oldest[0], source, price),
            )
        rows = conn.execute(
            "SELECT source, price FROM price_ticks WHERE symbol = 'BTCUSDT' AND time = %s ORDER BY 1", oldest
        ).fetchall()
        assert rows == [("binance", 7.0), ("yahoo", 2.5)]
        assert conn.execute("SELECT count(*) FROM price_ticks").fetchone() == (len(want) + 1,)
        kinds = conn.execute("SELECT source FROM tick_sources ORDER BY 1").fetchall()
        assert kinds == [("binance",), ("coingecko",), ("yahoo",)]
    assert migrate(settings) == []  # a second run changes nothing
