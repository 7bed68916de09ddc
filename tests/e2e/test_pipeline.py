"""The whole pipeline as `make run` starts it: simulator → ingestor → Kafka → MA job → PostgreSQL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import REPO, TestStack, traversable_tmpdir
from tests.helpers import assert_same_rows, expected_rows, row_count, table_rows, wait_for
from tickpipe.config import Settings
from tickpipe.schema import Tick

pytestmark = pytest.mark.e2e
SYMBOLS = "btcusdt,ethusdt,solusdt,bnbusdt"


def recorded_ticks(*paths: Path) -> list[Tick]:
    ticks = []
    for path in paths:
        for line in path.read_text().splitlines():
            event = json.loads(line)
            ticks.append(Tick(event["s"], event["E"], float(event["c"]), float(event["v"])))
    return ticks


def diagnose(home: Path, settings: Settings) -> str:
    tails = []
    for log in sorted((home / "logs").glob("*.log")):
        lines = log.read_text(errors="replace").splitlines()
        tails.append(f"--- {log.name}\n" + "\n".join(line[:300] for line in lines[-8:]))
    return f"rows: {row_count(settings)}\n" + "\n".join(tails)


def start_run(env: dict[str, str], *args: str, symbols: str = SYMBOLS) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tickpipe.cli", "run", "--external", "--headless", "--symbols", symbols, *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def interrupt(process: subprocess.Popen[str]) -> str:
    """Ctrl-C as a terminal sends it (to the process group); the run must end cleanly."""
    os.killpg(process.pid, signal.SIGINT)
    output, _ = process.communicate(timeout=180)
    assert process.returncode == 0, output[-3000:]
    return output


def test_every_simulated_tick_lands_once_with_exact_averages_across_a_restart(
    flink: TestStack, fresh_database: Settings, unique_topics: dict[str, str], tmp_path: Path
) -> None:
    home = traversable_tmpdir("tickpipe-e2e-")
    env = flink.env(
        TICKPIPE_HOME=str(home),
        DATABASE_URL=fresh_database.database_url,
        KAFKA_TOPIC=unique_topics["kafka_topic"],
        KAFKA_DLQ_TOPIC=unique_topics["kafka_dlq_topic"],
        KAFKA_CANDLES_TOPIC=unique_topics["kafka_candles_topic"],
        KAFKA_SIGNALS_TOPIC=unique_topics["kafka_signals_topic"],
        KAFKA_GROUP_ID=f"e2e-{uuid.uuid4().hex[:8]}",
        CANDLE_GROUP_ID=f"e2e-candles-{uuid.uuid4().hex[:8]}",
        CHECKPOINT_INTERVAL_SECONDS="2",
    )
    env.pop("FLINK_CONF_DIR", None)
    first, second = tmp_path / "run1.jsonl", tmp_path / "run2.jsonl"

    # Run 1, stopped mid-stream: the exchange is still publishing when Ctrl-C arrives.
    run = start_run(env, "--seed", "7", "--rate", "10", "--record", str(first))
    try:
        wait_for(lambda: row_count(fresh_database) >= 200 or run.poll() is not None, 240, "200 rows from run 1")
        assert run.poll() is None, run.communicate()[0][-3000:]
    finally:
        output = interrupt(run)
    assert "stopping sim" in output

    # Run 2 resumes (savepoint, offsets) and publishes a fixed number of updates, so the end state is known.
    run = start_run(env, "--seed", "8", "--rate", "10", "--record", str(second), "--max-ticks", "300")
    try:
        total = len(recorded_ticks(first)) + 300
        try:
            wait_for(lambda: row_count(fresh_database) >= total or run.poll() is not None, 240, f"{total} rows")
        except AssertionError as error:
            raise AssertionError(f"{error}\n{diagnose(home, fresh_database)}") from None
        assert run.poll() is None, run.communicate()[0][-3000:]
    finally:
        interrupt(run)

    ticks = recorded_ticks(first, second)
    assert len(ticks) == total
    # Every tick sent exactly once, and every MA as pandas computes it over the symbol's whole series: MA(20)
    # right after the restart needs the job's restored windows.
    assert_same_rows(table_rows(fresh_database), expected_rows(ticks))


# CoinGecko's case runs in test_tick_candles.py, on the run whose candles that test checks: one run fewer.
@pytest.mark.parametrize(("source", "symbols"), [("yahoo", "AAPL,BTC-USD,^GSPC")])
def test_another_source_runs_offline_into_its_own_series(
    flink: TestStack, fresh_database: Settings, unique_topics: dict[str, str], source: str, symbols: str
) -> None:
    """`make run SOURCE=<source>`: the source's simulator → its ingestor → the MA job → rows of that source, each
    series with MAs over its own prices only."""
    home = traversable_tmpdir("tickpipe-e2e-")
    env = flink.env(
        TICKPIPE_HOME=str(home),
        DATABASE_URL=fresh_database.database_url,
        **{key.upper(): value for key, value in unique_topics.items()},
        KAFKA_GROUP_ID=f"e2e-{uuid.uuid4().hex[:8]}",
        CANDLE_GROUP_ID=f"e2e-candles-{uuid.uuid4().hex[:8]}",
    )
    env.pop("FLINK_CONF_DIR", None)
    series = len(symbols.split(","))
    run = start_run(env, "--source", source, "--rate", "4", symbols=symbols)
    try:
        try:
            wait_for(
                lambda: shortest_series(fresh_database, source, series) >= 21 or run.poll() is not None,
                240,
                f"21 rows in each of the {series} series",
            )
        except AssertionError as error:
            raise AssertionError(f"{error}\n{diagnose(home, fresh_database)}") from None
        assert run.poll() is None, run.communicate()[0][-3000:]
    finally:
        interrupt(run)
    rows = table_rows(fresh_database)
    assert set(rows["source"]) == {source}
    assert rows.groupby("symbol").ngroups == series
    # Every row's MAs are those of its own series' prices as stored: nothing of another series in its windows.
    ticks = [Tick(r.symbol, r.ms, r.price, r.volume, r.source) for r in rows.itertuples()]
    assert_same_rows(rows, expected_rows(ticks))


def shortest_series(settings: Settings, source: str, series: int) -> int:
    """The row count of the source's shortest series; 0 until each of its `series` series has a row."""
    import psycopg

    try:
        with psycopg.connect(settings.conninfo("owner")) as conn:
            counts = conn.execute(
                "SELECT count(*) FROM price_ticks WHERE source = %s GROUP BY symbol", (source,)
            ).fetchall()
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn):
        return 0  # the run is still applying the schema
    return min(int(n) for (n,) in counts) if len(counts) == series else 0


def test_live_binance_without_network_fails_fast_with_a_clear_message(stack: TestStack) -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "tickpipe.cli", "run", "--live", "--headless"],
        cwd=REPO,
        env={**os.environ, "BINANCE_WS_URL": "wss://stream.binance.com:9443"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert result.returncode != 0
    assert elapsed < 15, f"took {elapsed:.1f} s"
    assert "cannot reach binance at wss://stream.binance.com:9443" in result.stderr
    assert "make run" in result.stderr  # how to run offline
    assert "Traceback" not in result.stderr + result.stdout
