"""Grafana's provisioning: every file well-formed, and every panel, variable, annotation and alert query run
against real databases (PostgreSQL and the TimescaleDB engine) with Grafana's macros expanded."""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
import talib
import yaml

from tests.conftest import REPO
from tests.grafana.grafana_sql import expand, interval_seconds
from tests.helpers import expected_rows
from tickpipe.config import Settings
from tickpipe.ma_job.candle_series import Candle, CandleSeries
from tickpipe.ma_job.candle_signals import Change, SymbolCandles
from tickpipe.migrator.migrate import migrate
from tickpipe.schema import Tick

GRAFANA = REPO / "grafana"
DATASOURCE_UIDS = {"tickpipe-db", "tickpipe-prometheus"}
PANEL_TYPES = {"timeseries", "stat", "table", "gauge", "barchart", "candlestick"}
SCHEMA_CHECK = REPO / "setup/grafana/check-dashboards.mjs"  # @grafana/schema + TypeScript, installed by make setup
# Grafana's syntax for the environment in provisioning files: $NAME or ${NAME}, and $$ for a literal $.
ENV_REFERENCE = re.compile(r"(?<!\$)\$(\{[A-Za-z_]\w*\}|[A-Za-z_]\w*)")


def load_yaml(relative: str) -> Any:
    return yaml.safe_load((GRAFANA / relative).read_text())


def dashboards() -> dict[str, Any]:
    return {path.stem: json.loads(path.read_text()) for path in sorted((GRAFANA / "dashboards").glob("*.json"))}


def alert_rules() -> list[dict[str, Any]]:
    # Parsed as written: Grafana reads the YAML first and expands the environment in some values afterwards.
    return [rule for group in load_yaml("provisioning/alerting/rules.yaml")["groups"] for rule in group["rules"]]


def variable_values(name: str) -> dict[str, list[str]]:
    """Every value of the custom and constant variables of a dashboard: a query runs once per combination."""
    return {
        variable["name"]: [option["value"] for option in variable.get("options") or []] or [variable["query"]]
        for variable in dashboards()[name]["templating"]["list"]
        if variable["type"] in {"custom", "constant"}
    }


def panel(board: str, title_part: str) -> dict[str, Any]:
    return next(panel for panel in dashboards()[board]["panels"] if title_part in panel["title"])


def sql_queries() -> Iterator[tuple[str, str, str]]:
    """(where, format, SQL) of every PostgreSQL query in the dashboards."""
    for name, board in dashboards().items():
        for panel in board["panels"]:
            for target in panel["targets"]:
                if target["datasource"]["uid"] == "tickpipe-db":
                    yield f"{name}: {panel['title']} ({target['refId']})", target["format"], target["rawSql"]
        for variable in board["templating"]["list"]:
            if variable["type"] == "query":  # custom and constant variables are lists of values, not SQL
                yield f"{name}: variable {variable['name']}", "table", variable["query"]
        for annotation in board["annotations"]["list"]:
            yield f"{name}: annotation {annotation['name']}", "table", annotation["target"]["rawSql"]


# -- the files ----------------------------------------------------------------------------------------------------
@pytest.mark.unit
def test_datasources_take_secrets_and_addresses_from_the_environment() -> None:
    sources = {
        source["uid"]: source for source in load_yaml("provisioning/datasources/datasources.yaml")["datasources"]
    }
    assert set(sources) == DATASOURCE_UIDS
    database = sources["tickpipe-db"]
    assert database["type"] == "grafana-postgresql-datasource"
    assert database["jsonData"]["timescaledb"] is True
    assert database["secureJsonData"]["password"] == "${DATABASE_READER_PASSWORD}"
    assert database["user"] == "${DATABASE_READER_USER}"  # the read-only role
    assert database["jsonData"]["sslmode"].startswith("${")
    for source in sources.values():
        assert {"name", "type", "access", "url"} <= set(source)
        assert source["url"].startswith("${")


@pytest.mark.unit
def test_dashboard_provider_and_dashboards_are_well_formed() -> None:
    provider = load_yaml("provisioning/dashboards/dashboards.yaml")["providers"][0]
    assert provider["type"] == "file"
    assert provider["options"]["path"]
    boards = dashboards()
    assert set(boards) == {"market", "pipeline-health"}
    assert len({board["uid"] for board in boards.values()}) == len(boards)
    for board in boards.values():
        assert {"uid", "title", "schemaVersion", "panels", "time", "templating", "annotations"} <= set(board)
        ids = [panel["id"] for panel in board["panels"]]
        assert len(ids) == len(set(ids))
        for panel in board["panels"]:
            assert panel["type"] in PANEL_TYPES
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24 and grid["w"] > 0 and grid["h"] > 0
            refs = [target["refId"] for target in panel["targets"]]
            assert len(refs) == len(set(refs)) and refs
            for target in panel["targets"]:
                assert target["datasource"]["uid"] in DATASOURCE_UIDS
                assert target.get("rawSql") or target.get("expr")


def check_schema(*paths: str) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    assert node and (SCHEMA_CHECK.parent / "node_modules/@grafana/schema").is_dir(), "run `make setup` (node, npm)"
    return subprocess.run([node, str(SCHEMA_CHECK), *paths], capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.unit
def test_dashboards_satisfy_grafanas_dashboard_and_panel_schema() -> None:
    paths = sorted(str(path) for path in (GRAFANA / "dashboards").glob("*.json"))
    result = check_schema(*paths)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == [word for path in paths for word in ("ok", path)]


@pytest.mark.unit
def test_the_schema_check_rejects_unknown_keys_wrong_types_and_values_outside_an_enum(tmp_path: Path) -> None:
    board = dashboards()["pipeline-health"]
    board["refreshEvery"] = "5s"  # not a dashboard field
    board["panels"][1]["gridPos"]["w"] = "12"  # a number
    board["panels"][2]["fieldConfig"]["defaults"]["thresholds"] = {"mode": "relative", "steps": []}  # an enum
    panel = board["panels"][0]
    panel["options"] = {"legend": {"displayMode": "sideways"}}  # list, table or hidden
    panel["fieldConfig"]["defaults"]["custom"] = {"lineWidth": "thick"}  # timeseries field config: a number
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(board))
    result = check_schema(str(broken))
    assert result.returncode == 1
    for problem in ("refreshEvery", '"w"', "relative", "sideways", "lineWidth"):
        assert problem in result.stdout, (problem, result.stdout)


def is_duration(text: str) -> bool:
    return re.fullmatch(r"(\d+(ms|s|m|h|d|w|y))+", text) is not None


@pytest.mark.unit
def test_alert_rules_have_what_grafana_requires_to_load_them() -> None:
    # The checks of Grafana's alert-rule provisioning (a group: name, folder, interval; a rule: title, uid,
    # condition, data; states and durations that parse), plus references that resolve.
    groups = load_yaml("provisioning/alerting/rules.yaml")["groups"]
    for group in groups:
        assert group["name"] and group["folder"] and is_duration(group["interval"])
    rules = alert_rules()
    assert {rule["uid"] for rule in rules} == {
        "tickpipe-price-cross",
        "tickpipe-ma-cross",
        "tickpipe-rsi-cross",
        "tickpipe-bollinger-break",
        "tickpipe-no-ticks",
        "tickpipe-dead-letters",
    }
    for rule in rules:
        assert rule["title"] and is_duration(rule["for"])
        assert rule["noDataState"] in {"Alerting", "NoData", "OK", "KeepLast"}
        assert rule["execErrState"] in {"Alerting", "Error", "OK", "KeepLast"}
        refs = {query["refId"] for query in rule["data"]}
        assert rule["condition"] in refs
        for query in rule["data"]:
            assert query["model"]["refId"] == query["refId"]
            assert query["datasourceUid"] in DATASOURCE_UIDS | {"__expr__"}
            if query["datasourceUid"] == "__expr__":
                assert query["model"]["expression"] in refs
            else:
                assert query["relativeTimeRange"]["from"] > query["relativeTimeRange"]["to"] >= 0


@pytest.mark.unit
def test_the_contact_point_and_policy_route_every_alert_to_the_webhook() -> None:
    notifications = load_yaml("provisioning/alerting/notifications.yaml")
    point = notifications["contactPoints"][0]
    receiver = point["receivers"][0]
    assert point["orgId"] == 1 and receiver["uid"] and receiver["type"] == "webhook"
    assert receiver["settings"]["url"] == "${ALERT_WEBHOOK_URL}"
    assert notifications["policies"][0]["receiver"] == point["name"]
    for key in ("group_wait", "group_interval", "repeat_interval"):
        assert is_duration(notifications["policies"][0][key])


def strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(path, text) of every string in a parsed YAML document."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from strings(item, f"{path}.{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from strings(item, f"{path}[{index}]")
    elif isinstance(value, str):
        yield path, value


@pytest.mark.unit
def test_environment_variables_appear_only_where_grafana_expands_them() -> None:
    # Grafana expands the environment in datasource and contact-point values, but takes an alert rule's queries
    # as written and its annotations without $NAME: there a ${...} would reach the database or the message as is.
    for path, text in strings(load_yaml("provisioning/alerting/rules.yaml")):
        outside_templates = re.sub(r"\{\{.*?\}\}", "", text)
        assert not ENV_REFERENCE.search(outside_templates), f"rules.yaml{path}: {text}"
    expanded = {
        match.strip("{}")
        for relative in ("provisioning/datasources/datasources.yaml", "provisioning/alerting/notifications.yaml")
        for _, text in strings(load_yaml(relative))
        for match in ENV_REFERENCE.findall(text)
    }
    assert expanded == {
        "DATABASE_HOST",
        "DATABASE_PORT",
        "DATABASE_NAME",
        "DATABASE_SSLMODE",
        "DATABASE_READER_USER",
        "DATABASE_READER_PASSWORD",
        "PROMETHEUS_URL",
        "ALERT_WEBHOOK_URL",
    }


# -- the queries, on real databases --------------------------------------------------------------------------------
def yahoo_price(i: int) -> float:
    """Yahoo's UPDOWNUSDT, the same symbol as Binance's at the same times: a steady rise from 1000 (no MA cross),
    through 1032 about 3 minutes before the data ends."""
    return 1000 + i * 0.02


def crafted_rows(now: datetime) -> list[tuple[object, ...]]:
    """30 minutes at 1 Hz: Binance's UPDOWN rises then falls (MA crosses), its STEADY only rises (none); Yahoo quotes
    UPDOWNUSDT too, at other prices that only rise. Rows are (time, symbol, price, volume, MA(5), MA(20), source)."""
    start_ms = int((now - timedelta(minutes=30)).timestamp() * 1000)
    rows: list[tuple[object, ...]] = []
    for source, symbols in (("binance", ("UPDOWNUSDT", "STEADYUSDT")), ("yahoo", ("UPDOWNUSDT",))):
        ticks = []
        for i in range(1800):
            updown = 100 + i * 0.05 if i < 1750 else 100 + 1750 * 0.05 - (i - 1750) * 1.0
            price = {"UPDOWNUSDT": updown, "STEADYUSDT": 50 + i * 0.01}
            if source == "yahoo":
                price["UPDOWNUSDT"] = yahoo_price(i)
            ticks += [Tick(symbol, start_ms + i * 1000, price[symbol], 5.0 + i, source) for symbol in symbols]
        frame = expected_rows(ticks)
        rows += [
            (
                datetime.fromtimestamp(row.ms / 1000, UTC),
                row.symbol,
                row.price,
                row.volume,
                None if math.isnan(row.ma_short) else row.ma_short,
                None if math.isnan(row.ma_long) else row.ma_long,
                row.source,
            )
            for row in frame.itertuples()
        ]
    return rows


CANDLE_COLUMNS = (
    "source, symbol, open_time, open, high, low, close, volume, quote_volume, trades, rsi_14, bb_middle, bb_upper, "
    "bb_lower, ema_12, ema_26, macd, macd_signal, macd_hist"
)
CANDLE_SYMBOLS = ("UPDOWNUSDT", "STEADYUSDT", "DROPUSDT")


def crafted_closes(symbol: str, count: int = 60) -> list[float]:
    """1m closes: STEADY zig-zags around 100 (RSI near 50, every close inside the band); UPDOWN and DROP zig-zag
    then jump 5 a minute for the last 3 minutes, up and down: RSI crosses 70 (30) at the second jump, the first
    jump closes outside the Bollinger band."""
    closes = [100 + (0.5 if i % 2 else -0.5) for i in range(count)]
    step = {"UPDOWNUSDT": 5.0, "DROPUSDT": -5.0, "STEADYUSDT": 0.0}[symbol]
    for i in range(count - 3, count):
        closes[i] = closes[i - 1] + step
    return closes


def crafted_candles(now: datetime) -> list[tuple[object, ...]]:
    """The last hour of closed 1m candles of each symbol, with indicators from TA-Lib (the reference the job's
    indicators equal) and NULL where TA-Lib has none yet, as the job writes them."""
    newest = now.replace(second=0, microsecond=0) - timedelta(minutes=1)
    rows: list[tuple[object, ...]] = []
    for symbol in CANDLE_SYMBOLS:
        closes = crafted_closes(symbol)
        series = np.array(closes)
        upper, middle, lower = talib.BBANDS(series, 20, 2.0, 2.0)
        macd, signal, hist = talib.MACD(series, 12, 26, 9)
        indicators = zip(
            talib.RSI(series, 14),
            middle,
            upper,
            lower,
            talib.EMA(series, 12),
            talib.EMA(series, 26),
            macd,
            signal,
            hist,
            strict=True,
        )
        for i, (close, values) in enumerate(zip(closes, indicators, strict=True)):
            open_ = closes[i - 1] if i else close
            volume = 10.0 + i
            rows.append(
                (
                    "binance",
                    symbol,
                    newest - timedelta(minutes=len(closes) - 1 - i),
                    open_,
                    max(open_, close) + 0.1,
                    min(open_, close) - 0.1,
                    close,
                    volume,
                    volume * close,
                    100 + i,
                    *(None if math.isnan(value) else float(value) for value in values),
                )
            )
    return rows


SIGNAL_COLUMNS = (
    "source, symbol, open_time, kind, close, previous_close, rsi_14, previous_rsi_14, bb_upper, bb_middle, bb_lower, "
    "ma_5, ma_20, previous_ma_5, previous_ma_20"
)


def crafted_signals(candles: list[tuple[Any, ...]]) -> list[tuple[object, ...]]:
    """The signals the candle job gives for these candles (candle_signals.SymbolCandles, the job's own state; its
    signals equal TA-Lib's arrays in tests/ma_job), as rows of the signals table."""
    states: dict[tuple[str, str], SymbolCandles] = {}
    rows: list[tuple[object, ...]] = []
    for source, symbol, open_time, open_, high, low, close, volume, quote_volume, trades, *_ in candles:
        state = states.setdefault((source, symbol), SymbolCandles(CandleSeries()))
        ms = int(open_time.timestamp() * 1000)
        for change in state.add(Candle(ms, open_, high, low, close, volume, quote_volume, trades))[1]:
            assert change.change is Change.NEW  # candles in order: nothing revised or retracted
            g = change.signal
            values = (g.close, g.previous_close, g.rsi, g.previous_rsi, g.bb_upper, g.bb_middle, g.bb_lower, g.ma_5,
                      g.ma_20, g.previous_ma_5, g.previous_ma_20)  # fmt: skip
            rows.append((source, symbol, open_time, g.kind.value, *values))
    return rows


def insert(conn: psycopg.Connection[Any], table: str, columns: str, rows: list[tuple[Any, ...]]) -> None:
    """Statements of 100 rows: executemany's pipelining and very large messages crash the WebAssembly engine."""
    placeholders = "(" + ", ".join(["%s"] * len(rows[0])) + ")"
    for offset in range(0, len(rows), 100):
        batch = rows[offset : offset + 100]
        conn.execute(
            # Fixed table and column names and placeholders only; the values are parameters.
            f"INSERT INTO {table} ({columns}) VALUES " + ", ".join([placeholders] * len(batch)),  # noqa: S608
            [value for row in batch for value in row],
        )


def load(settings: Settings, now: datetime) -> None:
    migrate(settings)
    with psycopg.connect(settings.conninfo("owner"), prepare_threshold=None) as conn:
        conn.execute("DELETE FROM price_ticks WHERE symbol IN ('UPDOWNUSDT', 'STEADYUSDT')")
        # Statements of 100 rows: executemany's pipelining and very large messages crash the WebAssembly engine.
        rows = crafted_rows(now)
        for offset in range(0, len(rows), 100):
            columns = list(zip(*rows[offset : offset + 100], strict=True))
            conn.execute(
                "INSERT INTO price_ticks (time, symbol, price, volume, ma_short, ma_long, source) "
                "SELECT * FROM unnest(%s::timestamptz[], %s::text[], %s::float8[], %s::float8[], %s::float8[], "
                "%s::float8[], %s::text[])",
                [list(column) for column in columns],
            )
        # Binance's and Yahoo's UPDOWNUSDT are one instrument here (the overlay and spread panels).
        conn.execute(
            "INSERT INTO instruments (instrument, source, symbol) VALUES ('UPDOWN/USD', 'binance', 'UPDOWNUSDT'), "
            "('UPDOWN/USD', 'yahoo', 'UPDOWNUSDT') ON CONFLICT DO NOTHING"
        )
        conn.execute("DELETE FROM candles_1m WHERE symbol = ANY(%s)", [list(CANDLE_SYMBOLS)])
        conn.execute("DELETE FROM signals WHERE symbol = ANY(%s)", [list(CANDLE_SYMBOLS)])
        candles = crafted_candles(now)
        insert(conn, "candles_1m", CANDLE_COLUMNS, candles)
        insert(conn, "signals", SIGNAL_COLUMNS, crafted_signals(candles))
        # No refresh of candles_1h/candles_1d on TimescaleDB: they are real-time, so they include these minutes.


@pytest.fixture(params=["postgres", "timescaledb"])
def database(request: pytest.FixtureRequest) -> Iterator[tuple[Settings, bool]]:
    """Each query runs on plain PostgreSQL and on TimescaleDB (with the datasource's matching macro expansion)."""
    settings: Settings = request.getfixturevalue("fresh_database" if request.param == "postgres" else "timescaledb")
    load(settings, datetime.now(UTC))
    yield settings, request.param == "timescaledb"


def run(settings: Settings, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    # No server-side prepared statements: the TimescaleDB engine is one backend shared by every connection.
    role = "reader" if settings.database_reader_password else "owner"
    with psycopg.connect(settings.conninfo(role), prepare_threshold=None) as conn:
        cursor = conn.execute(sql)
        return [column.name for column in cursor.description or []], cursor.fetchall()


def expanded_queries() -> Iterator[tuple[str, str, str, dict[str, str]]]:
    """sql_queries() with each combination of the custom/constant variables a query uses (e.g. once per candle
    interval for `candles_$interval`). The query variables ($source, $symbol) are the caller's."""
    for where, fmt, sql in sql_queries():
        board = where.split(":")[0]
        used = {
            name: values
            for name, values in variable_values(board).items()
            if f"${name}" in sql.replace(f"${{{name}}}", f"${name}")
        }
        combinations: list[dict[str, str]] = [{}]
        for name, values in used.items():
            combinations = [{**combination, name: value} for combination in combinations for value in values]
        for combination in combinations:
            yield where, fmt, sql, combination


@pytest.mark.unit
def test_candle_queries_run_once_per_candle_interval() -> None:
    runs = [variables for where, _, _, variables in expanded_queries() if "candles" in where]
    assert {run.get("interval") for run in runs} == {"1m", "1h", "1d"}
    assert variable_values("market") == {"interval": ["1m", "1h", "1d"]}


@pytest.mark.unit
def test_every_price_ticks_query_of_the_market_board_reads_one_series_of_the_chosen_source() -> None:
    """A series is (source, symbol): the same symbol from two sources must never meet in one panel."""
    names = [variable["name"] for variable in dashboards()["market"]["templating"]["list"]]
    assert names.index("source") < names.index("symbol")  # Grafana refreshes symbol after the source it depends on
    queries = [(where, sql) for where, _, sql in sql_queries() if where.startswith("market") and "price_ticks" in sql]
    assert len(queries) >= 5
    for where, sql in queries:
        if "variable source" in where:
            continue
        # Each read of price_ticks: `FROM price_ticks [alias]` and its WHERE clause's first line.
        reads = re.findall(r"FROM price_ticks(?: \w+)?\s+WHERE ([^\n]*)", sql)
        assert len(reads) == sql.count("FROM price_ticks"), where
        for clause in reads:
            assert re.search(r"\b(\w+\.)?source = '\$source'", clause), (where, clause)


@pytest.mark.integration
@pytest.mark.parametrize("span", [timedelta(minutes=15), timedelta(days=7)])
def test_every_dashboard_sql_query_runs_and_has_the_shape_its_panel_needs(
    database: tuple[Settings, bool], span: timedelta
) -> None:
    settings, timescaledb = database
    now = datetime.now(UTC)
    # Grafana's $__interval: the range over the panel's ~1000 points, as the dashboard would get it.
    interval = f"{max(1, int(span.total_seconds() / 1000))}s"
    for where, fmt, sql, variables in expanded_queries():
        expanded = expand(
            sql,
            time_from=now - span,
            time_to=now,
            interval=interval,
            variables={"symbol": "UPDOWNUSDT", "source": "binance", **variables},
            timescaledb=timescaledb,
        )
        columns, rows = run(settings, expanded)
        where = f"{where} {variables}"  # noqa: PLW2901 - the same query, named with its variables
        assert rows, f"{where}: no rows"
        if "variable source" in where:
            assert {row[0] for row in rows} >= {"binance", "yahoo"}, where
            continue
        if "variable symbol" in where:
            assert {row[0] for row in rows} >= {"UPDOWNUSDT", "STEADYUSDT"}, where
            continue
        if "annotation" in where:
            assert columns == ["time", "text"], where
            assert any("cross" in row[1] for row in rows), where
            continue
        assert columns[0] == "time", f"{where}: first column is {columns[0]}"
        for row in rows:  # numbers, but for the name of a series in the column Grafana calls `metric`
            values = [value for column, value in zip(columns, row, strict=True) if column not in {"time", "metric"}]
            assert all(isinstance(value, int | float) or value is None for value in values), where
        if fmt == "time_series" and "$__timeGroupAlias(time, $__interval)" in sql:
            # Downsampled: at most one row per bucket, so a 7-day view of 1 Hz ticks stays small.
            assert len(rows) <= span.total_seconds() / interval_seconds(interval) + 1, where


@pytest.mark.integration
def test_the_price_panel_reads_the_last_value_of_each_bucket(database: tuple[Settings, bool]) -> None:
    settings, timescaledb = database
    now = datetime.now(UTC)
    sql = next(sql for where, _, sql in sql_queries() if "price, MA(5)" in where)
    columns, rows = run(
        settings,
        expand(
            sql,
            time_from=now - timedelta(hours=1),
            time_to=now,
            interval="60s",
            variables={"symbol": "STEADYUSDT", "source": "binance"},
            timescaledb=timescaledb,
        ),
    )
    assert columns == ["time", "price", "MA(5)", "MA(20)"]
    with psycopg.connect(settings.conninfo("owner"), prepare_threshold=None) as conn:
        newest = conn.execute(
            "SELECT price FROM price_ticks WHERE symbol = 'STEADYUSDT' ORDER BY time DESC LIMIT 1"
        ).fetchone()
    assert newest is not None
    assert rows[-1][1] == pytest.approx(newest[0])


@pytest.mark.integration
def test_alert_queries_fire_on_a_cross_and_stay_quiet_otherwise(database: tuple[Settings, bool]) -> None:
    settings, _ = database
    rules = {rule["uid"]: rule for rule in alert_rules()}

    def values(uid: str) -> dict[str, float]:
        columns, rows = run(settings, rules[uid]["data"][0]["model"]["rawSql"])
        assert columns[-1] == "value"
        return {":".join(map(str, row[:-1])) or "all": float(row[-1]) for row in rows}

    crosses = values("tickpipe-ma-cross")
    # One instance per (source, symbol): the fall of Binance's UPDOWN crossed MA(5) under MA(20); Yahoo's UPDOWN and
    # Binance's STEADY, steady rises, never cross (mixed, the two UPDOWN series would cross over and over).
    assert crosses == {
        "binance:UPDOWNUSDT": crosses["binance:UPDOWNUSDT"],
        "binance:STEADYUSDT": 0,
        "yahoo:UPDOWNUSDT": 0,
    }
    assert crosses["binance:UPDOWNUSDT"] > 0
    assert values("tickpipe-no-ticks") == {}  # fresh data in every series: no series is late


@pytest.mark.integration
def test_the_instrument_panels_overlay_every_source_and_give_their_spread(database: tuple[Settings, bool]) -> None:
    settings, timescaledb = database
    _, overlay = market_query(settings, timescaledb, "from every source")
    assert {row[1] for row in overlay} == {"binance UPDOWNUSDT", "yahoo UPDOWNUSDT"}
    _, spread = market_query(settings, timescaledb, "Spread between sources")
    newest = {metric: price for time, metric, price in overlay if time == overlay[-1][0]}
    low, high = min(newest.values()), max(newest.values())
    assert spread[-1][1] == pytest.approx(10_000 * (high - low) / ((high + low) / 2))


# (source, symbol, instant, open): New York is UTC-5 in December, UTC-4 in July.
MARKET_HOURS = [
    ("binance", "BTCUSDT", "2026-12-05T12:00:00Z", True),  # a Saturday: crypto never closes
    ("coingecko", "bitcoin/usd", "2026-12-06T03:00:00Z", True),
    ("yahoo", "BTC-USD", "2026-12-05T12:00:00Z", True),
    ("yahoo", "AAPL", "2026-12-07T14:29:00Z", False),  # Monday 09:29 in New York
    ("yahoo", "AAPL", "2026-12-07T14:31:00Z", True),
    ("yahoo", "^GSPC", "2026-12-07T20:59:00Z", True),  # 15:59
    ("yahoo", "^GSPC", "2026-12-07T21:01:00Z", False),
    ("yahoo", "AAPL", "2026-07-06T13:45:00Z", True),  # July: 09:45 in New York
    ("yahoo", "AAPL", "2026-12-05T15:00:00Z", False),  # Saturday
    ("yahoo", "EURUSD=X", "2026-12-04T21:59:00Z", True),  # Friday 16:59
    ("yahoo", "EURUSD=X", "2026-12-04T22:01:00Z", False),
    ("yahoo", "ES=F", "2026-12-05T15:00:00Z", False),
    ("yahoo", "EURUSD=X", "2026-12-06T22:01:00Z", True),  # Sunday 17:01
]


@pytest.mark.integration
def test_market_hours_and_late_series_at_fixed_instants(database: tuple[Settings, bool]) -> None:
    settings, _ = database
    with psycopg.connect(settings.conninfo("owner"), prepare_threshold=None) as conn:
        for source, symbol, at, expected in MARKET_HOURS:
            row = conn.execute("SELECT market_open(%s, %s, %s::timestamptz)", (source, symbol, at)).fetchone()
            assert row == (expected,), (source, symbol, at)
        # Yahoo's AAPL last traded at Friday's close. Late on Monday at 10:00 in New York (10 min limit, half an
        # hour into the session); not at 09:35 (the market opened 5 minutes ago), nor all weekend.
        conn.execute(
            "INSERT INTO price_ticks (time, source, symbol, price, volume) VALUES "
            "('2026-12-04T20:59:59Z', 'yahoo', 'AAPL', 280, 1), ('2026-12-04T20:59:59Z', 'binance', 'LATEUSDT', 1, 1)"
        )

        def late(at: str) -> dict[tuple[str, str], float]:
            rows = conn.execute("SELECT * FROM stale_series(%s::timestamptz)", (at,)).fetchall()
            return {(source, symbol): seconds for source, symbol, seconds in rows if symbol in {"AAPL", "LATEUSDT"}}

        saturday = late("2026-12-05T18:00:00Z")
        assert saturday == {("binance", "LATEUSDT"): pytest.approx(21 * 3600 + 1 - 120)}  # crypto: late all weekend
        assert ("yahoo", "AAPL") not in late("2026-12-07T14:35:00Z")
        assert late("2026-12-07T15:00:00Z")[("yahoo", "AAPL")] == pytest.approx(
            (datetime(2026, 12, 7, 15, tzinfo=UTC) - datetime(2026, 12, 4, 20, 59, 59, tzinfo=UTC)).total_seconds()
            - 600
        )
        conn.rollback()


def market_query(
    settings: Settings, timescaledb: bool, title_part: str, **variables: str
) -> tuple[list[str], list[Any]]:
    now = datetime.now(UTC)
    sql = panel("market", title_part)["targets"][0]["rawSql"]
    expanded = expand(
        sql,
        time_from=now - timedelta(hours=2),
        time_to=now,
        interval="10s",
        variables={"symbol": "UPDOWNUSDT", "source": "binance", "interval": "1m", **variables},
        timescaledb=timescaledb,
    )
    return run(settings, expanded)


@pytest.mark.integration
def test_the_candlestick_panel_maps_ohlc_and_draws_bollinger_on_1m_candles_only(
    database: tuple[Settings, bool],
) -> None:
    settings, timescaledb = database
    candles = panel("market", "candles")
    assert candles["type"] == "candlestick" and candles["targets"][0]["format"] == "table"
    bands = ["BB upper", "BB middle", "BB lower"]
    for interval in ("1m", "1h", "1d"):
        columns, rows = market_query(settings, timescaledb, "candles", interval=interval)
        assert columns == ["time", "open", "high", "low", "close", *bands], interval
        # The panel's field map names the query's columns (Grafana leaves a dimension empty otherwise).
        assert set(candles["options"]["fields"].values()) <= set(columns)
        by_time = {row[0]: row for row in rows}
        assert len(by_time) == len(rows), interval  # one row per candle
        if interval == "1m":
            assert len(rows) == 60
            expected = [c for c in crafted_candles(rows[-1][0] + timedelta(minutes=1)) if c[1] == "UPDOWNUSDT"]
            assert [row[1:5] for row in rows] == [pytest.approx(c[3:7]) for c in expected]
            # crafted_candles' columns 11-13: bb_middle, bb_upper, bb_lower; NULL for the first 19 minutes.
            assert [row[5:] for row in rows[:19]] == [(None, None, None)] * 19
            assert [row[5:] for row in rows[19:]] == [pytest.approx((c[12], c[11], c[13])) for c in expected[19:]]
        else:
            assert all(row[5:] == (None, None, None) for row in rows), interval  # no band for rolled-up candles
            assert rows[-1][4] == crafted_closes("UPDOWNUSDT")[-1]  # the rollup closes with the newest minute


@pytest.mark.integration
def test_the_volume_panel_shows_each_candles_own_volume_not_the_tickers_rolling_24h_volume(
    database: tuple[Settings, bool],
) -> None:
    settings, timescaledb = database
    assert "price_ticks" not in panel("market", "volume")["targets"][0]["rawSql"]
    minutes = [float(10 + i) for i in range(60)]  # crafted_candles: 10 + i in minute i
    _, rows = market_query(settings, timescaledb, "volume", interval="1m")
    assert [row[1] for row in rows] == minutes
    _, rows = market_query(settings, timescaledb, "volume", interval="1h")
    assert sum(row[1] for row in rows) == sum(minutes)  # the hours of the last hour add up to its minutes


@pytest.mark.integration
def test_the_rsi_and_macd_panels_read_the_1m_indicators(database: tuple[Settings, bool]) -> None:
    settings, timescaledb = database
    rsi = panel("market", "RSI(14)")
    steps = rsi["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [step["value"] for step in steps[1:]] == [30, 70]  # the lines drawn by thresholdsStyle
    assert rsi["fieldConfig"]["defaults"]["custom"]["thresholdsStyle"]["mode"] != "off"
    closes = np.array(crafted_closes("UPDOWNUSDT"))
    columns, rows = market_query(settings, timescaledb, "RSI(14)")
    assert columns == ["time", "RSI(14)"]
    assert [row[1] for row in rows[14:]] == pytest.approx(list(talib.RSI(closes, 14)[14:]))
    assert all(row[1] is None for row in rows[:14])  # NULL until warm
    columns, rows = market_query(settings, timescaledb, "MACD")
    assert columns == ["time", "MACD", "signal", "histogram"]
    macd, signal, hist = talib.MACD(closes, 12, 26, 9)
    assert [row[1:] for row in rows[33:]] == [
        pytest.approx(v) for v in zip(macd[33:], signal[33:], hist[33:], strict=True)
    ]


def candle_alert(settings: Settings, uid: str, label: str) -> dict[tuple[str, str], float]:
    """A candle rule's query as Grafana runs it: {(symbol, direction label): value} of the binance source."""
    rule = next(rule for rule in alert_rules() if rule["uid"] == uid)
    columns, rows = run(settings, rule["data"][0]["model"]["rawSql"])
    assert columns == ["source", "symbol", label, "value"]
    return {(symbol, direction): float(value) for source, symbol, direction, value in rows if source == "binance"}


@pytest.mark.integration
def test_the_rsi_alert_fires_on_a_cross_of_70_or_30_and_stays_quiet_otherwise(database: tuple[Settings, bool]) -> None:
    settings, _ = database
    # UPDOWN's RSI rose through 70 and DROP's fell through 30 in the next-to-newest candle; STEADY's stays near 50.
    assert candle_alert(settings, "tickpipe-rsi-cross", "crossing") == {
        ("DROPUSDT", "above 70"): 0,
        ("DROPUSDT", "below 30"): 1,
        ("STEADYUSDT", "above 70"): 0,
        ("STEADYUSDT", "below 30"): 0,
        ("UPDOWNUSDT", "above 70"): 1,
        ("UPDOWNUSDT", "below 30"): 0,
    }


@pytest.mark.integration
def test_the_candle_alerts_forget_a_cross_older_than_5_minutes(database: tuple[Settings, bool]) -> None:
    settings, _ = database
    # UPDOWN's candles again as OLDUSDT, ending 10 minutes ago: its crosses and break are out of the window.
    old = [
        ("binance", "OLDUSDT", *row[2:])
        for row in crafted_candles(datetime.now(UTC) - timedelta(minutes=10))
        if row[1] == "UPDOWNUSDT"
    ]
    with psycopg.connect(settings.conninfo("owner"), prepare_threshold=None) as conn:
        insert(conn, "candles_1m", CANDLE_COLUMNS, old)
        insert(conn, "signals", SIGNAL_COLUMNS, crafted_signals(old))
    try:
        rsi = candle_alert(settings, "tickpipe-rsi-cross", "crossing")
        band = candle_alert(settings, "tickpipe-bollinger-break", "side")
        assert rsi[("OLDUSDT", "above 70")] == rsi[("OLDUSDT", "below 30")] == 0
        assert band[("OLDUSDT", "above the upper band")] == band[("OLDUSDT", "below the lower band")] == 0
    finally:
        with psycopg.connect(settings.conninfo("owner"), prepare_threshold=None) as conn:
            conn.execute("DELETE FROM candles_1m WHERE symbol = 'OLDUSDT'")
            conn.execute("DELETE FROM signals WHERE symbol = 'OLDUSDT'")


@pytest.mark.integration
def test_the_bollinger_alert_fires_on_a_close_outside_the_band_and_stays_quiet_otherwise(
    database: tuple[Settings, bool],
) -> None:
    settings, _ = database
    # The first jump breaks out of the band; the next two closes stay outside: one break each, not three.
    assert candle_alert(settings, "tickpipe-bollinger-break", "side") == {
        ("DROPUSDT", "above the upper band"): 0,
        ("DROPUSDT", "below the lower band"): 1,
        ("STEADYUSDT", "above the upper band"): 0,
        ("STEADYUSDT", "below the lower band"): 0,
        ("UPDOWNUSDT", "above the upper band"): 1,
        ("UPDOWNUSDT", "below the lower band"): 0,
    }


# -- the price alert: one instance per row of price_alert_levels ------------------------------------------------
@pytest.fixture
def alert_levels(database: tuple[Settings, bool]) -> Iterator[Callable[..., None]]:
    """Sets the rows of price_alert_levels (as `tickpipe alert-level add` would); empties it afterwards, since the
    TimescaleDB engine is shared by the session."""
    settings, _ = database

    def set_levels(*levels: tuple[str, float] | tuple[str, float, str]) -> None:
        """(symbol, level) of binance, or (symbol, level, source)."""
        with psycopg.connect(settings.conninfo("owner"), prepare_threshold=None) as conn:
            conn.execute("DELETE FROM price_alert_levels")
            for symbol, level, *source in levels:
                conn.execute(
                    "INSERT INTO price_alert_levels (source, symbol, level) VALUES (%s, %s, %s)",
                    (source[0] if source else "binance", symbol, level),
                )

    yield set_levels
    set_levels()


def price_alert(settings: Settings, source: str = "binance") -> dict[tuple[str, str], float]:
    """The price rule's query as Grafana runs it (reader role): {(symbol label, level label): value} of `source`."""
    rule = next(rule for rule in alert_rules() if rule["uid"] == "tickpipe-price-cross")
    columns, rows = run(settings, rule["data"][0]["model"]["rawSql"])
    # Grafana makes one series per row of a table: string columns become its labels, the numeric one its value.
    assert columns == ["source", "symbol", "level", "value"]
    assert all(isinstance(label, str) for row in rows for label in row[:3])
    return {(symbol, level): float(value) for row_source, symbol, level, value in rows if row_source == source}


@pytest.mark.integration
def test_the_price_alert_fires_for_a_crossed_level_and_not_for_others_or_symbols_without_levels(
    database: tuple[Settings, bool], alert_levels: Callable[..., None]
) -> None:
    settings, _ = database
    assert price_alert(settings) == {}  # no levels: no series, which the rule treats as OK
    # In the last 5 minutes UPDOWN rose from 175 to 187.5 and fell to 138.5, through 150 a few seconds before the
    # data ends; it passed 120 twenty minutes earlier and never reached 200. STEADY has ticks but no level.
    alert_levels(("UPDOWNUSDT", 150), ("UPDOWNUSDT", 200), ("UPDOWNUSDT", 120))
    assert price_alert(settings) == {
        ("UPDOWNUSDT", "120"): 0,
        ("UPDOWNUSDT", "150"): 1,
        ("UPDOWNUSDT", "200"): 0,
    }


@pytest.mark.integration
def test_the_price_alert_counts_crosses_both_ways_a_touch_once_and_one_at_the_window_edge(
    database: tuple[Settings, bool], alert_levels: Callable[..., None]
) -> None:
    settings, _ = database
    now = datetime.now(UTC)
    # 120 ten minutes ago (before the 5-minute window), then 95, 100, 99, 101 in the last minute.
    ticks = [
        (timedelta(minutes=10), 120.0),
        *((timedelta(seconds=s), p) for s, p in [(40, 95.0), (30, 100.0), (20, 99.0), (10, 101.0)]),
    ]
    with psycopg.connect(settings.conninfo("owner"), prepare_threshold=None) as conn:
        conn.execute("DELETE FROM price_ticks WHERE symbol = 'EDGEUSDT'")
        for ago, price in ticks:
            conn.execute("INSERT INTO price_ticks VALUES (%s, 'EDGEUSDT', %s, 1, NULL, NULL)", (now - ago, price))
    try:
        alert_levels(("EDGEUSDT", 110), ("EDGEUSDT", 100), ("EDGEUSDT", 130), ("NOTICKSUSDT", 1.5))
        assert price_alert(settings) == {
            # 120 → 95 crossed 110 inside the window, though the tick before it is older than the window.
            ("EDGEUSDT", "110"): 1,
            # 120 → 95 down, 95 → 100 up (reaching the level counts), 100 → 99 (from the level: no), 99 → 101 up.
            ("EDGEUSDT", "100"): 3,
            ("EDGEUSDT", "130"): 0,
            ("NOTICKSUSDT", "1.5"): 0,  # a level of a symbol without ticks is a quiet instance, not an error
        }
    finally:
        with psycopg.connect(settings.conninfo("owner"), prepare_threshold=None) as conn:
            conn.execute("DELETE FROM price_ticks WHERE symbol = 'EDGEUSDT'")


# -- two sources quoting the same symbol ------------------------------------------------------------------------------
@pytest.mark.integration
def test_the_symbol_variable_lists_the_chosen_sources_symbols_only(database: tuple[Settings, bool]) -> None:
    settings, _ = database
    now = datetime.now(UTC)
    variables = {v["name"]: v for v in dashboards()["market"]["templating"]["list"]}
    _, sources = run(settings, variables["source"]["query"])
    assert {row[0] for row in sources} >= {"binance", "yahoo"}
    assert "coingecko" not in {row[0] for row in sources}  # in tick_sources, but no ticks here

    def symbols(source: str) -> set[str]:
        sql = expand(variables["symbol"]["query"], time_from=now, time_to=now, variables={"source": source})
        return {row[0] for row in run(settings, sql)[1]}

    assert symbols("binance") >= {"UPDOWNUSDT", "STEADYUSDT"}
    assert "UPDOWNUSDT" in symbols("yahoo") and "STEADYUSDT" not in symbols("yahoo")
    assert symbols("coingecko") == set()


@pytest.mark.integration
def test_the_price_panels_of_one_symbol_show_each_sources_own_ticks(database: tuple[Settings, bool]) -> None:
    settings, timescaledb = database
    now = datetime.now(UTC)
    crafted = crafted_rows(now)
    sql = panel("market", "price, MA(5)")["targets"][0]["rawSql"]
    # 1 s buckets: one per tick of the series. Both sources have a tick at every one of these times, so a bucket that
    # mixed them would show the other source's price or MA (whichever it picked): every value must be the source's.
    for source in ("binance", "yahoo"):
        expanded = expand(
            sql,
            time_from=now - timedelta(hours=1),
            time_to=now,
            interval="1s",
            variables={"symbol": "UPDOWNUSDT", "source": source},
            timescaledb=timescaledb,
        )
        columns, rows = run(settings, expanded)
        assert columns == ["time", "price", "MA(5)", "MA(20)"]
        expected = [(row[2], row[4], row[5]) for row in crafted if row[6] == source and row[1] == "UPDOWNUSDT"]
        assert len(rows) == len(expected) == 1800, source
        assert [row[1:] for row in rows] == [pytest.approx(values) for values in expected], source
    _, rows = market_query(settings, timescaledb, "Last price", source="yahoo")
    assert rows[0][1] == pytest.approx(yahoo_price(1799))
    _, rows = market_query(settings, timescaledb, "Last price", source="binance")
    assert rows[0][1] == pytest.approx(100 + 1750 * 0.05 - 49)
    _, rows = market_query(settings, timescaledb, "24 h change", source="yahoo")
    assert rows[0][1] == pytest.approx(100 * (yahoo_price(1799) / yahoo_price(0) - 1))


@pytest.mark.integration
def test_the_ma_cross_annotation_reads_the_chosen_sources_series(database: tuple[Settings, bool]) -> None:
    settings, timescaledb = database
    now = datetime.now(UTC)
    sql = dashboards()["market"]["annotations"]["list"][0]["target"]["rawSql"]

    def crosses(source: str) -> int:
        expanded = expand(
            sql,
            time_from=now - timedelta(hours=1),
            time_to=now,
            variables={"symbol": "UPDOWNUSDT", "source": source},
            timescaledb=timescaledb,
        )
        return len(run(settings, expanded)[1])

    assert crosses("binance") > 0
    assert crosses("yahoo") == 0


@pytest.mark.integration
def test_the_price_alert_compares_a_level_with_its_own_sources_ticks(
    database: tuple[Settings, bool], alert_levels: Callable[..., None]
) -> None:
    settings, _ = database
    # 150: Binance's UPDOWN fell through it, Yahoo's never came near. 1032: Yahoo's rose through it ~3 minutes ago,
    # Binance's never came near. Each instance is labelled with its source.
    alert_levels(("UPDOWNUSDT", 150), ("UPDOWNUSDT", 1032), ("UPDOWNUSDT", 150, "yahoo"), ("UPDOWNUSDT", 1032, "yahoo"))
    assert price_alert(settings, "binance") == {("UPDOWNUSDT", "150"): 1, ("UPDOWNUSDT", "1032"): 0}
    assert price_alert(settings, "yahoo") == {("UPDOWNUSDT", "150"): 0, ("UPDOWNUSDT", "1032"): 1}
