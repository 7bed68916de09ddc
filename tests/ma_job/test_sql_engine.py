"""The sql engine as a function: `ticks_raw` records from elements → (price_ticks rows, dead letters), collected.

One job in a local mini-cluster for the module (no Kafka, no PostgreSQL): the records of three partitions, with the
Kafka source's columns (`raw`, `partition`, `offset`), go through sql_engine.transform, and both of its outputs are
collected. The reference is independent of the SQL: the keyed engine's per-series state (indicators.SymbolWindow)
decides which ticks enter a window and words the stale reasons, the Python parser (tickpipe.schema) words the
rejections, and MA(n) is the plain sum of the series' last n accepted prices in the order the SQL adds them (newest
first), divided by n. The Kafka source, the JDBC sink and the DLQ topic are the job's wiring: tests/ma_job/
test_ma_job.py runs them on the session cluster.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import pytest

from tests.helpers import local_flink, random_walk
from tickpipe.ma_job.indicators import LONG_WINDOW, SHORT_WINDOW, SymbolWindow, stale_reason
from tickpipe.ma_job.tables import STAGE
from tickpipe.schema import DEAD_LETTER_VERSION, MAX_RAW_LENGTH, InvalidTick, Tick, parse_tick

pytestmark = pytest.mark.integration

T0 = 1_764_000_000_000
SEEDED_PARTITION = 2
FIRST_WRITTEN = 30  # partition 2's first written offset: offsets 0-29 are seeds (reseed.py)
ISO_MS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")

# Records that are not ticks, each with the reason both parsers give (tests/ma_job/test_parse_tick.py compares the
# parsers over many more; these are the kinds a reader of the DLQ meets).
MALFORMED = {
    '{"symbol":"BTCUSDT","timestamp":"2026-11-24T12:00:00.000Z"}': "missing fields: price, volume, source",
    "[1, 2]": "not a JSON object",
    Tick("BTC-USDT", T0, 1.0, 1.0).to_json().decode(): "invalid symbol: 'BTC-USDT'",
    Tick("BTCUSDT", T0, -1.0, 1.0).to_json().decode(): "price must be positive, got -1.0",
    Tick("BTCUSDT", T0, 1.0, -0.5).to_json().decode(): "volume must not be negative, got -0.5",
    '{"symbol":"BTCUSDT","timestamp":"yesterday","price":1,"volume":1,"source":"binance"}': (
        "invalid timestamp: 'yesterday'"
    ),
    Tick("BTCUSDT", T0, 1.0, 1.0, "kraken").to_json().decode(): (
        "unknown source: 'kraken' (expected binance, coingecko, yahoo)"
    ),
}
NOT_JSON = "this is not json"  # the JSON libraries word their syntax errors differently: only the kind is compared
TOO_LONG = '{"symbol":"' + "X" * (MAX_RAW_LENGTH + 100) + '"}'


@dataclass(frozen=True)
class Record:
    raw: str
    partition: int
    offset: int

    @property
    def written(self) -> bool:
        return self.partition != SEEDED_PARTITION or self.offset >= FIRST_WRITTEN


@dataclass(frozen=True)
class Row:
    ms: int
    source: str
    symbol: str
    price: float
    volume: float
    ma_short: float | None
    ma_long: float | None


def records() -> list[Record]:
    """Three partitions, as the Kafka key (the series) spreads them, arriving interleaved:

    0: Binance BTCUSDT and ETHUSDT, one second apart, with a re-sent tick (a duplicate), two older ones (out of
       order) and malformed records;
    1: Yahoo's BTCUSDT, with the same symbol and event times as Binance's (a window shared with Binance's would
       take every one of them for a duplicate), and CoinGecko's bitcoin/usd;
    2: Binance SOLUSDT, its first FIRST_WRITTEN offsets seeds (among them a malformed record and an out-of-order
       tick: nothing is written for either), then a re-sent seed (written: the seeds are in the newest-time check).
    """
    binance = random_walk(["BTCUSDT", "ETHUSDT"], 45, start_ms=T0, seed=11)
    btc = [t for t in binance if t.symbol == "BTCUSDT"]
    other = [
        Tick(t.symbol, t.event_time_ms, t.price, t.volume, "yahoo" if t.symbol == "BTCUSDT" else "coingecko")
        for t in random_walk(["BTCUSDT", "bitcoin/usd"], 30, start_ms=T0, seed=12)
    ]
    sol = [Tick("SOLUSDT", T0 + i * 500, price, 1.0) for i, price in enumerate(jumps(50))]
    partitions = [[t.to_json().decode() for t in ticks] for ticks in (binance, other, sol)]
    # Inserted from the back, so that each index counts the original ticks before it (BTC's k-th tick is at 2k).
    partitions[0][70:70] = [*MALFORMED, NOT_JSON, TOO_LONG]
    partitions[0][41:41] = [Tick("BTCUSDT", btc[20].event_time_ms - 1, 5.0, 1.0).to_json().decode()]
    partitions[0][31:31] = [btc[9].to_json().decode()]  # BTC's newest is btc[15]
    partitions[0][11:11] = [btc[5].to_json().decode()]  # BTC's newest is btc[5]: a duplicate
    partitions[2][40:40] = [sol[20].to_json().decode()]  # offset 42, after the seeds
    partitions[2][10:10] = [sol[4].to_json().decode()]  # offset 10, a seed
    partitions[2][5:5] = ["{}"]  # offset 5, a seed
    out = [[Record(raw, p, offset) for offset, raw in enumerate(part)] for p, part in enumerate(partitions)]
    return [out[p][i] for i in range(max(map(len, out))) for p in range(3) if i < len(out[p])]


def jumps(count: int) -> list[float]:
    """Prices across fourteen orders of magnitude and back (a running sum would keep rounding residue)."""
    return [1e6 if i % 7 < 3 else 1e-8 * (1 + i / 100) for i in range(count)]


def plain_average(prices: list[float], n: int) -> float | None:
    # MOVING_AVERAGES adds the newest price first, then each earlier one, left to right (the LAG sums' order).
    if len(prices) < n:
        return None
    total = 0.0
    for price in reversed(prices[-n:]):
        total += price
    return total / n


def expected(inputs: list[Record]) -> tuple[list[Row], list[tuple[str, str]]]:
    """Rows and (reason, raw) of dead letters the engine must write, from the Python parser and the keyed state."""
    windows: dict[str, SymbolWindow] = {}
    prices: dict[str, list[float]] = {}
    rows, dead = [], []
    for record in inputs:
        try:
            tick = parse_tick(record.raw)
        except InvalidTick as error:
            if record.written:
                dead.append((str(error), record.raw))
            continue
        window = windows.setdefault(tick.key, SymbolWindow())
        if not window.accepts(tick.event_time_ms):
            if record.written:
                dead.append((stale_reason(tick.event_time_ms, window.last_event_time_ms), tick.to_json().decode()))
            continue
        window.add(tick.event_time_ms, tick.price)
        series = prices.setdefault(tick.key, [])
        series.append(tick.price)
        if record.written:
            short, long = plain_average(series, SHORT_WINDOW), plain_average(series, LONG_WINDOW)
            rows.append(Row(tick.event_time_ms, tick.source, tick.symbol, tick.price, tick.volume, short, long))
    return rows, dead


@dataclass
class Output:
    rows: list[Row]
    dead_letters: list[dict[str, Any]]


@pytest.fixture(scope="module")
def output() -> Iterator[Output]:
    from pyflink.table import DataTypes, StreamTableEnvironment

    from tickpipe.ma_job.sql_engine import transform

    env = local_flink(**{"table.local-time-zone": "UTC"})
    t_env = StreamTableEnvironment.create(env)
    schema = DataTypes.ROW(
        [
            DataTypes.FIELD("raw", DataTypes.STRING()),
            DataTypes.FIELD("partition", DataTypes.INT()),
            DataTypes.FIELD("offset", DataTypes.BIGINT()),
        ]
    )
    ticks_raw = t_env.from_elements([(r.raw, r.partition, r.offset) for r in records()], schema)
    rows, dead_letters = transform(t_env, ticks_raw, f"{SEEDED_PARTITION}={FIRST_WRITTEN}")
    t_env.create_temporary_view("engine_rows", rows)
    t_env.create_temporary_view("engine_dead_letters", dead_letters)
    # Both outputs in one job: a mini-cluster start is most of this test's time.
    both = t_env.sql_query(
        "SELECT `time`, source, symbol, price, volume, ma_short, ma_long, CAST(NULL AS STRING) AS record "
        "FROM engine_rows UNION ALL SELECT CAST(NULL AS TIMESTAMP(3)), CAST(NULL AS STRING), CAST(NULL AS STRING), "
        "CAST(NULL AS DOUBLE), CAST(NULL AS DOUBLE), CAST(NULL AS DOUBLE), CAST(NULL AS DOUBLE), record "
        "FROM engine_dead_letters"
    )
    with both.execute().collect() as results:
        collected = [tuple(row) for row in results]
    got_rows = [
        Row(round(ts.replace(tzinfo=UTC).timestamp() * 1000), *values)
        for ts, *values, record in collected
        if record is None
    ]
    got_dead = [json.loads(row[-1]) for row in collected if row[-1] is not None]
    yield Output(got_rows, got_dead)


def by_series(rows: list[Row]) -> dict[tuple[str, str], list[Row]]:
    out: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        out.setdefault((row.source, row.symbol), []).append(row)
    return out


def comparable(dead: list[tuple[str, str]]) -> Counter[tuple[str, str]]:
    """Dead letters as (reason, raw) up to what the two parsers may word or write differently: a JSON syntax error
    is worded by each parser's library (its kind is kept), and a stale tick's record is compared as JSON (the JVM
    writes 1e-08 as 1.0E-8)."""
    out: Counter[tuple[str, str]] = Counter()
    for reason, raw in dead:
        if reason.startswith("not JSON: "):
            out["not JSON", raw] += 1
        elif " tick: event time " in reason:
            out[reason, json.dumps(json.loads(raw))] += 1
        else:
            out[reason, raw] += 1
    return out


def test_every_written_record_is_one_row_or_one_dead_letter_and_no_seed_is_either(output: Output) -> None:
    inputs = records()
    want_rows, want_dead = expected(inputs)
    assert len(output.rows) + len(output.dead_letters) == sum(r.written for r in inputs)
    assert Counter(output.rows) == Counter(want_rows)
    got_dead = [(d["reason"], d["raw"]) for d in output.dead_letters]
    # A truncated record is identified by its first MAX_RAW_LENGTH characters.
    assert comparable(got_dead) == comparable([(reason, raw[:MAX_RAW_LENGTH]) for reason, raw in want_dead])


def test_the_moving_averages_are_the_plain_sums_of_each_series_null_until_warm(output: Output) -> None:
    want_rows, _ = expected(records())
    got, want = by_series(output.rows), by_series(want_rows)
    assert sorted(got) == sorted(want)
    for series, rows in want.items():
        # In arrival order within a series (the windows' order), with exactly the reference's values.
        assert got[series] == rows, series
        if series != ("binance", "SOLUSDT"):  # the seeded series' window starts before its first row
            # The keyed engine's averages (math.fsum over the window), to rounding.
            window = SymbolWindow()
            keyed = [window.add(row.ms, row.price) for row in rows]
            for row, averages in zip(got[series], keyed, strict=True):
                for value, reference in ((row.ma_short, averages.ma_short), (row.ma_long, averages.ma_long)):
                    assert value == (None if reference is None else pytest.approx(reference, rel=1e-12))
    eth = got[("binance", "ETHUSDT")]
    assert [r.ma_short is None for r in eth[:SHORT_WINDOW]] == [True] * (SHORT_WINDOW - 1) + [False]
    assert [r.ma_long is None for r in eth[:LONG_WINDOW]] == [True] * (LONG_WINDOW - 1) + [False]


def test_the_same_symbol_from_two_sources_is_two_series(output: Output) -> None:
    series = by_series(output.rows)
    assert sorted(series) == [
        ("binance", "BTCUSDT"), ("binance", "ETHUSDT"), ("binance", "SOLUSDT"), ("coingecko", "bitcoin/usd"),
        ("yahoo", "BTCUSDT"),
    ]  # fmt: skip
    binance, yahoo = series[("binance", "BTCUSDT")], series[("yahoo", "BTCUSDT")]
    # Yahoo's ticks carry Binance's event times: in one window every one of them would be a duplicate.
    assert [r.ms for r in yahoo] == [T0 + i * 1000 for i in range(30)]
    assert {r.ms for r in yahoo} <= {r.ms for r in binance}
    assert yahoo[LONG_WINDOW - 1].ma_long == plain_average([r.price for r in yahoo[:LONG_WINDOW]], LONG_WINDOW)


def test_duplicates_and_out_of_order_ticks_are_dead_letters_with_the_keyed_engine_s_reasons(output: Output) -> None:
    _, want = expected(records())
    stale = [(d["reason"], json.loads(d["raw"])) for d in output.dead_letters if " tick: event time " in d["reason"]]
    want_stale = [(reason, json.loads(raw)) for reason, raw in want if " tick: event time " in reason]
    assert sorted(stale, key=str) == sorted(want_stale, key=str)
    assert Counter(reason.split(" ", 1)[0] for reason, _ in stale) == {"duplicate": 1, "out-of-order": 3}
    duplicate = next(d for d in output.dead_letters if d["reason"].startswith("duplicate"))
    assert duplicate["reason"] == (
        "duplicate tick: event time 2025-11-24T16:00:05.000Z is not after the symbol's latest 2025-11-24T16:00:05.000Z"
    )


def test_malformed_records_are_dead_letters_with_their_reason(output: Output) -> None:
    by_raw = {d["raw"]: d for d in output.dead_letters if " tick: event time " not in d["reason"]}
    for raw, reason in MALFORMED.items():
        assert by_raw[raw]["reason"] == reason
        with pytest.raises(InvalidTick) as python:
            parse_tick(raw)
        assert str(python.value) == reason
    assert by_raw[NOT_JSON]["reason"].startswith("not JSON: ")
    truncated = by_raw[TOO_LONG[:MAX_RAW_LENGTH]]
    assert truncated["reason"] == "missing fields: timestamp, price, volume, source"
    assert (truncated["raw_length"], truncated["raw_truncated"]) == (len(TOO_LONG), True)


def test_dead_letters_are_records_of_the_stage_in_the_dead_letter_format(output: Output) -> None:
    for record in output.dead_letters:
        assert set(record) == {"v", "reason", "stage", "source", "raw", "raw_length", "raw_truncated", "rejected_at"}
        assert (record["v"], record["stage"], record["source"]) == (DEAD_LETTER_VERSION, STAGE, None)
        assert ISO_MS.fullmatch(record["rejected_at"])
        assert record["raw_truncated"] == (record["raw_length"] > MAX_RAW_LENGTH)
        if not record["raw_truncated"]:
            assert record["raw_length"] == len(record["raw"])


def test_seeds_fill_the_windows_and_only_records_from_the_first_written_offset_are_written(output: Output) -> None:
    sol = by_series(output.rows)[("binance", "SOLUSDT")]
    # Offsets 0-29 hold SOLUSDT's first 28 ticks, a malformed record and a stale tick: none is written, and the
    # first written row (offset 30) has both averages at once, over the seeds.
    assert [r.ms for r in sol] == [T0 + i * 500 for i in range(28, 50)]
    prices = jumps(50)
    assert (sol[0].ma_short, sol[0].ma_long) == (
        plain_average(prices[:29], SHORT_WINDOW),
        plain_average(prices[:29], LONG_WINDOW),
    )
    assert "{}" not in [d["raw"] for d in output.dead_letters]  # offset 5
    stale = [d for d in output.dead_letters if '"SOLUSDT"' in d["raw"]]  # not the one at offset 10
    assert [json.loads(d["raw"])["timestamp"] for d in stale] == ["2025-11-24T16:00:10.000Z"]  # offset 42, sol[20]
