"""`tickpipe chart` and `tickpipe top` read what the pipeline wrote, through the read-only role."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import psycopg
import pytest

from tests.conftest import REPO, TestStack
from tickpipe.config import Settings
from tickpipe.migrator.migrate import migrate
from tickpipe.top.snapshot import cross_of, read_symbols, take_snapshot

START = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def load_rows(settings: Settings, symbol: str, prices: list[float], start: datetime = START) -> None:
    series = pd.Series(prices)
    ma5, ma20 = series.rolling(5).mean(), series.rolling(20).mean()
    rows = [
        (start + timedelta(seconds=i), symbol, price, 1.0 + i % 7, _none(ma5[i]), _none(ma20[i]))
        for i, price in enumerate(prices)
    ]
    with psycopg.connect(settings.conninfo("owner")) as conn, conn.cursor() as cursor:
        cursor.executemany("INSERT INTO price_ticks VALUES (%s, %s, %s, %s, %s, %s)", rows)


def _none(value: float) -> float | None:
    return None if pd.isna(value) else float(value)


@pytest.mark.unit
@pytest.mark.parametrize(
    ("now", "before", "expected"),
    [((2.0, 1.0), (1.0, 1.5), "golden"), ((1.0, 2.0), (1.5, 1.0), "death"), ((2.0, 1.0), (2.0, 1.5), "")],
)
def test_cross_marks_the_tick_where_ma5_crosses_ma20(
    now: tuple[float, float], before: tuple[float, float], expected: str
) -> None:
    assert cross_of(*now, *before) == expected


@pytest.mark.unit
def test_cross_is_blank_until_both_windows_are_full() -> None:
    assert cross_of(2.0, None, 1.0, 1.5) == ""


@pytest.mark.integration
def test_top_reads_the_newest_row_of_every_symbol_and_detects_a_cross(fresh_database: Settings) -> None:
    migrate(fresh_database)
    # Falls for 20 ticks, then jumps: the last tick takes MA(5) above MA(20).
    load_rows(fresh_database, "BTCUSDT", [100.0 - i for i in range(24)] + [200.0])
    load_rows(fresh_database, "ETHUSDT", [10.0, 11.0, 12.0])
    rows = {row.symbol: row for row in read_symbols(fresh_database)}
    assert set(rows) == {"BTCUSDT", "ETHUSDT"}
    assert rows["BTCUSDT"].price == 200.0
    assert rows["BTCUSDT"].cross == "golden"
    assert rows["ETHUSDT"].ma_short is None and rows["ETHUSDT"].cross == ""


@pytest.mark.integration
def test_top_snapshot_reports_each_engine(fresh_database: Settings, stack: TestStack) -> None:
    stack.require("kafka")
    settings = stack.settings(database_url=fresh_database.database_url)
    migrate(settings)
    snapshot = take_snapshot(settings, stack.home, None)
    health = {item.name: item for item in snapshot.health}
    assert health["kafka"].ok and health["database"].ok
    assert health["database"].detail == "no rows yet"
    assert snapshot.dlq_records == 0


@pytest.mark.integration
def test_chart_draws_a_png_of_price_mas_and_volume(fresh_database: Settings, stack: TestStack, tmp_path: Path) -> None:
    migrate(fresh_database)
    load_rows(fresh_database, "BTCUSDT", [97000 + 50 * ((i * 7919) % 13 - 6) + i for i in range(600)])
    out = tmp_path / "chart.png"
    result = subprocess.run(
        [sys.executable, "-m", "tickpipe.cli", "chart", "--symbol", "btcusdt", "--since", "5m", "--out", str(out)],
        env=stack.env(DATABASE_URL=fresh_database.database_url),
        capture_output=True,
        check=False,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "301 points of BTCUSDT" in result.stdout  # 5 minutes back from the newest row, inclusive
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 20_000


@pytest.mark.integration
def test_chart_of_an_unknown_symbol_says_so_in_one_line(fresh_database: Settings, stack: TestStack) -> None:
    migrate(fresh_database)
    result = subprocess.run(
        [sys.executable, "-m", "tickpipe.cli", "chart", "--symbol", "NOPE"],
        env=stack.env(DATABASE_URL=fresh_database.database_url),
        capture_output=True,
        check=False,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "tickpipe chart: no rows for symbol NOPE in price_ticks (symbols are upper case, e.g. BTCUSDT)"
    )
