"""`tickpipe chart` and `tickpipe top` read what the pipeline wrote, through the read-only role."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg
import pytest
import talib
from rich.console import Console

from tests.conftest import REPO, TestStack
from tickpipe.config import Settings
from tickpipe.migrator.migrate import migrate
from tickpipe.top.snapshot import Snapshot, SymbolRow, cross_of, read_symbols, take_snapshot
from tickpipe.top.view import render

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


def load_candles(settings: Settings, symbol: str, closes: list[float], start: datetime = START) -> None:
    """Closed 1m candles of binance with volumes 1..7 and the indicators TA-Lib gives (NULL until warm)."""
    series = np.array(closes)
    rsi = talib.RSI(series, 14)
    upper, middle, lower = talib.BBANDS(series, 20, 2.0, 2.0)
    rows = []
    for i, close in enumerate(closes):
        open_ = closes[i - 1] if i else close
        high, low = max(open_, close) * 1.001, min(open_, close) * 0.999
        indicators = (_none(rsi[i]), _none(middle[i]), _none(upper[i]), _none(lower[i]))
        rows.append(
            ("binance", symbol, start + timedelta(minutes=i), open_, high, low, close, 1.0 + i % 7, *indicators)
        )
    with psycopg.connect(settings.conninfo("owner")) as conn, conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO candles_1m (source, symbol, open_time, open, high, low, close, volume, rsi_14, bb_middle, "
            "bb_upper, bb_lower) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            rows,
        )


def wave(count: int) -> list[float]:
    """A trending, oscillating 1m close series (RSI visits both zones, closes poke out of the band)."""
    return [97000 + 400 * np.sin(i / 9) + 3 * i + 60 * ((i * 7919) % 13 - 6) / 6 for i in range(count)]


def chart(settings: Settings, stack: TestStack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tickpipe.cli", "chart", *args],
        env=stack.env(DATABASE_URL=settings.database_url),
        capture_output=True,
        check=False,
        text=True,
        cwd=REPO,
        timeout=180,
    )


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
def test_top_shows_the_rsi_of_each_symbols_newest_1m_candle(fresh_database: Settings) -> None:
    migrate(fresh_database)
    load_rows(fresh_database, "BTCUSDT", [100.0, 101.0])
    load_rows(fresh_database, "ETHUSDT", [10.0, 11.0])
    load_rows(fresh_database, "SOLUSDT", [1.0])
    closes = wave(40)
    load_candles(fresh_database, "BTCUSDT", closes)
    load_candles(fresh_database, "ETHUSDT", closes[:10])  # not warm: RSI(14) needs 15 closes
    rows = {row.symbol: row for row in read_symbols(fresh_database)}
    assert rows["BTCUSDT"].rsi_14 == pytest.approx(talib.RSI(np.array(closes), 14)[-1])
    assert rows["ETHUSDT"].rsi_14 is None
    assert rows["SOLUSDT"].rsi_14 is None  # no candles at all


@pytest.mark.unit
def test_top_prints_rsi_with_its_zone_and_a_dash_until_warm() -> None:
    def row(symbol: str, rsi: float | None) -> SymbolRow:
        return SymbolRow(symbol, 1.0, None, None, "", 1.0, 0.5, rsi)

    snapshot = Snapshot([row("AAAUSDT", 75.25), row("BBBUSDT", None), row("CCCUSDT", 21.0)], [], 0, 0.0)
    console = Console(width=140, record=True, color_system="truecolor", file=io.StringIO())
    console.print(render(snapshot))
    text = console.export_text(clear=False)
    assert "RSI(14) 1m" in text
    lines = {line.split("│")[1].strip(): line for line in text.splitlines() if "USDT" in line}
    assert "75.2" in lines["AAAUSDT"] and "21.0" in lines["CCCUSDT"]
    assert "—" in lines["BBBUSDT"].split("│")[6]  # the RSI cell
    styled = console.export_text(styles=True)
    assert re.search(r"\x1b\[1;31m *75\.2", styled)  # overbought: bold red
    assert re.search(r"\x1b\[1;32m *21\.0", styled)  # oversold: bold green


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
def test_chart_draws_1m_candles_with_bollinger_volume_and_rsi(
    fresh_database: Settings, stack: TestStack, tmp_path: Path
) -> None:
    migrate(fresh_database)
    load_candles(fresh_database, "BTCUSDT", wave(180))
    out = tmp_path / "candles.png"
    result = chart(fresh_database, stack, "--symbol", "btcusdt", "--out", str(out))
    assert result.returncode == 0, result.stderr
    # 2 h back from the newest candle, inclusive.
    assert result.stdout.strip() == f"wrote {out} (121 1m candles of BTCUSDT from binance)"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 40_000


@pytest.mark.integration
def test_chart_draws_hourly_candles_rolled_up_from_the_minutes(
    fresh_database: Settings, stack: TestStack, tmp_path: Path
) -> None:
    migrate(fresh_database)
    load_candles(fresh_database, "BTCUSDT", wave(6 * 60))
    out = tmp_path / "hours.png"
    result = chart(fresh_database, stack, "--symbol", "BTCUSDT", "--interval", "1h", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote {out} (6 1h candles of BTCUSDT from binance)"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.integration
def test_chart_without_candles_or_with_too_many_says_so_in_one_line(fresh_database: Settings, stack: TestStack) -> None:
    migrate(fresh_database)
    load_rows(fresh_database, "BTCUSDT", [1.0, 2.0])  # ticks, but no candle has closed yet
    result = chart(fresh_database, stack, "--symbol", "BTCUSDT")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "tickpipe chart: no candles for BTCUSDT from binance in candles_1m yet (the ma-job writes 1m candles as "
        "they close; symbols are upper case, e.g. BTCUSDT): try again in a minute, or --ticks for the raw prices"
    )
    result = chart(fresh_database, stack, "--symbol", "BTCUSDT", "--since", "7d")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "tickpipe chart: --since 7d is 10080 1m candles, at most 1500: use --interval 1h or a shorter --since"
    )


@pytest.mark.integration
def test_chart_with_ticks_draws_a_png_of_price_and_mas(
    fresh_database: Settings, stack: TestStack, tmp_path: Path
) -> None:
    migrate(fresh_database)
    load_rows(fresh_database, "BTCUSDT", [97000 + 50 * ((i * 7919) % 13 - 6) + i for i in range(600)])
    out = tmp_path / "chart.png"
    result = chart(fresh_database, stack, "--symbol", "btcusdt", "--ticks", "--since", "5m", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "301 points of BTCUSDT" in result.stdout  # 5 minutes back from the newest row, inclusive
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 20_000


@pytest.mark.integration
def test_chart_of_an_unknown_symbol_says_so_in_one_line(fresh_database: Settings, stack: TestStack) -> None:
    migrate(fresh_database)
    result = chart(fresh_database, stack, "--symbol", "NOPE", "--ticks")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "tickpipe chart: no rows for symbol NOPE in price_ticks (symbols are upper case, e.g. BTCUSDT)"
    )
