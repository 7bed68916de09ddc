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
from tickpipe.chart.data import read_series
from tickpipe.cli import main
from tickpipe.config import Settings
from tickpipe.migrator.migrate import migrate
from tickpipe.top.snapshot import SERIES_SQL, Snapshot, SymbolRow, cross_of, read_symbols, take_snapshot
from tickpipe.top.view import render

START = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def load_rows(
    settings: Settings, symbol: str, prices: list[float], start: datetime = START, source: str = "binance"
) -> None:
    """One tick a second of (source, symbol) from `start`, with pandas' MAs (what the job writes)."""
    series = pd.Series(prices)
    ma5, ma20 = series.rolling(5).mean(), series.rolling(20).mean()
    rows = [
        (start + timedelta(seconds=i), source, symbol, price, 1.0 + i % 7, _none(ma5[i]), _none(ma20[i]))
        for i, price in enumerate(prices)
    ]
    with psycopg.connect(settings.conninfo("owner")) as conn, conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO price_ticks (time, source, symbol, price, volume, ma_short, ma_long) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            rows,
        )


def _none(value: float) -> float | None:
    return None if pd.isna(value) else float(value)


def load_candles(
    settings: Settings, symbol: str, closes: list[float], start: datetime = START, source: str = "binance"
) -> None:
    """Closed 1m candles of `source` with volumes 1..7 and the indicators TA-Lib gives (NULL until warm)."""
    series = np.array(closes)
    rsi = talib.RSI(series, 14)
    upper, middle, lower = talib.BBANDS(series, 20, 2.0, 2.0)
    rows = []
    for i, close in enumerate(closes):
        open_ = closes[i - 1] if i else close
        high, low = max(open_, close) * 1.001, min(open_, close) * 0.999
        indicators = (_none(rsi[i]), _none(middle[i]), _none(upper[i]), _none(lower[i]))
        rows.append((source, symbol, start + timedelta(minutes=i), open_, high, low, close, 1.0 + i % 7, *indicators))
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
    assert {row.source for row in rows.values()} == {"binance"}
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
        return SymbolRow("binance", symbol, 1.0, None, None, "", 1.0, 0.5, rsi)

    snapshot = Snapshot([row("AAAUSDT", 75.25), row("BBBUSDT", None), row("CCCUSDT", 21.0)], [], 0, 0.0)
    console = Console(width=140, record=True, color_system="truecolor", file=io.StringIO())
    console.print(render(snapshot))
    text = console.export_text(clear=False)
    assert "RSI(14) 1m" in text
    lines = {line.split("│")[2].strip(): line for line in text.splitlines() if "USDT" in line}
    assert "75.2" in lines["AAAUSDT"] and "21.0" in lines["CCCUSDT"]
    assert "—" in lines["BBBUSDT"].split("│")[7]  # the RSI cell
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
        "they close; binance symbols are stored like BTCUSDT): try again in a minute, or --ticks for the raw prices"
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
    assert "301 points of BTCUSDT from binance" in result.stdout  # 5 minutes back from the newest row, inclusive
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 20_000


@pytest.mark.integration
def test_chart_of_an_unknown_symbol_says_so_in_one_line(fresh_database: Settings, stack: TestStack) -> None:
    migrate(fresh_database)
    result = chart(fresh_database, stack, "--symbol", "NOPE", "--ticks")
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "tickpipe chart: no rows for NOPE from binance in price_ticks (binance symbols are stored like BTCUSDT; "
        "--source picks another source)"
    )


# -- two sources quoting the same symbol: two series, never mixed ---------------------------------------------------
@pytest.mark.integration
def test_top_shows_one_line_per_source_and_symbol_and_never_mixes_them(fresh_database: Settings) -> None:
    migrate(fresh_database)
    # The same symbol at the same times from two sources: Binance's falls then jumps (a golden cross); Yahoo's
    # (a valid Yahoo symbol too) has 3 ticks of another price level and candles of its own.
    load_rows(fresh_database, "BTCUSDT", [100.0 - i for i in range(24)] + [200.0])
    load_rows(fresh_database, "BTCUSDT", [5000.0, 5001.0, 5002.0], source="yahoo")
    load_rows(fresh_database, "ETHUSDT", [10.0, 11.0])
    closes = wave(40)
    load_candles(fresh_database, "BTCUSDT", closes)
    load_candles(fresh_database, "BTCUSDT", [float(i) for i in range(1, 11)], source="yahoo")  # not warm
    rows = read_symbols(fresh_database)
    assert [(row.source, row.symbol) for row in rows] == [
        ("binance", "BTCUSDT"),
        ("binance", "ETHUSDT"),
        ("yahoo", "BTCUSDT"),
    ]
    binance, _, yahoo = rows
    assert (binance.price, binance.cross) == (200.0, "golden")
    assert binance.ma_short == pytest.approx(np.mean([100.0 - i for i in range(20, 24)] + [200.0]))
    assert (yahoo.price, yahoo.ma_short, yahoo.cross) == (5002.0, None, "")
    # The tick rate counts the series' own ticks: 10 of Binance's in its last 10 s, Yahoo's 3 (13 if mixed).
    assert (binance.ticks_per_second, yahoo.ticks_per_second) == (1.0, 0.3)
    assert binance.rsi_14 == pytest.approx(talib.RSI(np.array(closes), 14)[-1])
    assert yahoo.rsi_14 is None  # its own candles are not warm; Binance's RSI is not borrowed
    console = Console(width=160, record=True, file=io.StringIO())
    console.print(render(Snapshot(rows, [], 0, 0.0)))
    cells = [
        [cell.strip() for cell in line.split("│")[1:3]] for line in console.export_text().splitlines() if "USDT" in line
    ]
    assert cells == [["binance", "BTCUSDT"], ["binance", "ETHUSDT"], ["yahoo", "BTCUSDT"]]


@pytest.mark.integration
def test_top_finds_every_series_with_one_index_probe_each(fresh_database: Settings) -> None:
    """The loose index scan over (source, symbol): the plan reads price_ticks' key, never the whole table."""
    migrate(fresh_database)
    load_rows(fresh_database, "BTCUSDT", [1.0] * 30)
    load_rows(fresh_database, "BTCUSDT", [2.0] * 30, source="yahoo")
    with psycopg.connect(fresh_database.conninfo("owner")) as conn:
        conn.execute("SET enable_seqscan = off")  # a table this small would be read whole: ask for the real plan
        plan = "\n".join(str(row[0]) for row in conn.execute("EXPLAIN " + SERIES_SQL, {"limit": 50}).fetchall())
    assert "price_ticks_source_symbol_time" in plan, plan
    assert "Seq Scan on price_ticks" not in plan, plan


@pytest.mark.integration
def test_chart_of_ticks_reads_the_chosen_sources_series_only(
    fresh_database: Settings, stack: TestStack, tmp_path: Path
) -> None:
    migrate(fresh_database)
    load_rows(fresh_database, "BTCUSDT", [97000 + 50 * ((i * 7919) % 13 - 6) + i for i in range(600)])
    yahoo_prices = [50_000.0 + i for i in range(50)]  # at the same times as Binance's first 50
    load_rows(fresh_database, "BTCUSDT", yahoo_prices, source="yahoo")
    series = read_series(fresh_database, "BTCUSDT", timedelta(minutes=5), "yahoo")
    assert (series.source, series.price) == ("yahoo", yahoo_prices)
    assert series.ma_short[4] == pytest.approx(np.mean(yahoo_prices[:5]))
    binance = read_series(fresh_database, "BTCUSDT", timedelta(minutes=5))
    assert len(binance.price) == 301 and min(binance.price) > 90_000  # no Yahoo price among them
    out = tmp_path / "yahoo.png"
    result = chart(fresh_database, stack, "--symbol", "btcusdt", "--source", "yahoo", "--ticks", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote {out} (50 points of BTCUSDT from yahoo)"


@pytest.mark.integration
def test_chart_takes_each_sources_symbols_in_its_stored_case(
    fresh_database: Settings, stack: TestStack, tmp_path: Path
) -> None:
    migrate(fresh_database)
    load_rows(fresh_database, "bitcoin/usd", [97000.0 + i for i in range(30)], source="coingecko")
    load_candles(fresh_database, "bitcoin/usd", wave(30), source="coingecko")
    out = tmp_path / "coingecko.png"
    ticks = chart(
        fresh_database, stack, "--symbol", "Bitcoin/USD", "--source", "coingecko", "--ticks", "--out", str(out)
    )
    assert ticks.returncode == 0, ticks.stderr
    assert ticks.stdout.strip() == f"wrote {out} (30 points of bitcoin/usd from coingecko)"
    candles = chart(fresh_database, stack, "--symbol", "bitcoin/usd", "--source", "coingecko", "--out", str(out))
    assert candles.returncode == 0, candles.stderr
    assert candles.stdout.strip() == f"wrote {out} (30 1m candles of bitcoin/usd from coingecko)"
    # Binance has no such series; its candles of the symbol are not Coingecko's.
    assert chart(fresh_database, stack, "--symbol", "BTCUSDT", "--source", "coingecko").stderr.strip() == (
        "tickpipe chart: not a coingecko symbol: 'BTCUSDT' (expected <coin id>/<vs currency>: an id of letters, "
        "digits and hyphens, a currency of 2 to 10 letters, e.g. bitcoin/usd)"
    )


@pytest.mark.integration
def test_chart_of_candles_built_from_ticks_draws_no_volume_bars(
    fresh_database: Settings, stack: TestStack, tmp_path: Path
) -> None:
    """CoinGecko's and Yahoo's candles (built from ticks by the candle job) have volume NULL: no volume pane, in 1m
    candles and in their roll-ups, never a zero bar."""
    migrate(fresh_database)
    load_candles(fresh_database, "bitcoin/usd", wave(3 * 60), source="coingecko")
    with psycopg.connect(fresh_database.conninfo("owner")) as conn:
        conn.execute("UPDATE candles_1m SET volume = NULL, quote_volume = NULL WHERE source = 'coingecko'")
        hourly = conn.execute("SELECT volume FROM candles_1h WHERE source = 'coingecko'").fetchall()
    assert hourly and all(volume is None for (volume,) in hourly)
    for interval, count in (("1m", 121), ("1h", 3)):
        out = tmp_path / f"{interval}.png"
        args = ("--symbol", "bitcoin/usd", "--source", "coingecko", "--interval", interval, "--out", str(out))
        result = chart(fresh_database, stack, *args)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"wrote {out} ({count} {interval} candles of bitcoin/usd from coingecko)"
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.unit
def test_a_symbol_that_is_not_the_sources_is_a_one_line_error_before_any_connection(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://tickpipe@127.0.0.1:1/tickpipe")
    assert main(["chart", "--symbol", "BTC-USD", "--ticks"]) == 1
    assert capsys.readouterr().err == (
        "tickpipe chart: not a binance symbol: 'BTC-USD' (expected 2 to 20 letters and digits, e.g. BTCUSDT)\n"
    )
    # A Yahoo symbol passes (and the database, which is not there, is asked next).
    assert main(["chart", "--symbol", "^gspc", "--source", "yahoo", "--ticks"]) == 1
    assert capsys.readouterr().err.startswith("tickpipe chart: cannot read price_ticks: ")
