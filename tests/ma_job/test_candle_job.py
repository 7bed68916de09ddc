"""The candle job: candles (late, repaired, repeated, corrected, malformed) → candles_1m rows with TA-Lib's indicators
of the complete in-order series, signals in a table and on a topic, dead letters with their reason.

Three levels: the per-symbol state as a function (unit), the job's transformation on elements in a local
mini-cluster (integration), and the submitted job on the real Flink session cluster with Kafka and PostgreSQL,
killed and resumed from its checkpoint (integration, slow).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import random
import signal
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
import talib
from confluent_kafka import Consumer, Producer

from tests.conftest import REPO, TestStack
from tests.helpers import consume, wait_for
from tests.ma_job.test_candle_indicators import ATOL, RTOL, reference
from tickpipe.candle_schema import WireCandle
from tickpipe.config import Settings
from tickpipe.kafka import consumer_config, ensure_topics, producer_config
from tickpipe.ma_job.candle_series import MINUTE_MS, Candle, CandleSeries
from tickpipe.ma_job.candle_signals import Change, SignalKind, SymbolCandles
from tickpipe.ma_job.candle_tables import candle_job_name
from tickpipe.ma_job.cli import ResumePoint
from tickpipe.ma_job.flink_rest import FlinkRest
from tickpipe.migrator.migrate import migrate
from tickpipe.schema import Tick

T0 = 1_764_000_000_000 - 1_764_000_000_000 % MINUTE_MS
BEFORE_TICK_CANDLES = "9fcadcd"  # a candle job without the tick branch and fixed SQL operator ids (as up to 0f4485a)
INDICATORS = ("rsi_14", "bb_middle", "bb_upper", "bb_lower", "ema_12", "ema_26", "macd", "macd_signal", "macd_hist")
TALIB = dict(zip(INDICATORS, ("rsi", "bb_middle", "bb_upper", "bb_lower", "ema_fast", "ema_slow", "macd",
                              "macd_signal", "macd_hist"), strict=True))  # fmt: skip
SignalKey = tuple[str, str, int, str]  # source, symbol, open time, kind


# -- golden data: TA-Lib on the complete in-order series, signals from TA-Lib's arrays --------------------------------
def walk(symbol: str, count: int, seed: int, source: str = "binance") -> list[WireCandle]:
    """Trending stretches (so RSI crosses 70 and 30 and closes leave the band), then noise."""
    rng = random.Random(seed)
    price, out = rng.uniform(10, 1000), []
    for i in range(count):
        drift = 0.004 * math.sin(i / 9)
        open_ = price
        price *= math.exp(drift + rng.gauss(0, 0.006))
        high, low = max(open_, price) * 1.001, min(open_, price) * 0.999
        out.append(WireCandle(source, symbol, T0 + i * MINUTE_MS, open_, high, low, price, 1.5 + i, 2.5 * i, 10 + i))
    return out


def expected_candles(series: list[WireCandle]) -> dict[tuple[str, str, int], dict[str, Any]]:
    closes = np.array([c.close for c in series])
    want = reference(closes)
    return {
        (c.source, c.symbol, c.open_time_ms): {
            "open": c.open,
            "high": c.high,
            "low": c.low,
            "close": c.close,
            "volume": c.volume,
            "quote_volume": c.quote_volume,
            "trades": c.trades,
            **{column: _value(want[TALIB[column]][i]) for column in INDICATORS},
        }
        for i, c in enumerate(series)
    }


def _value(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def expected_signals(series: list[WireCandle]) -> set[SignalKey]:
    """The edge-triggered definition (candle_signals.py) applied to TA-Lib's own arrays."""
    closes = np.array([c.close for c in series])
    want = reference(closes)
    rsi, upper, lower = want["rsi"], want["bb_upper"], want["bb_lower"]
    ma5, ma20 = talib.SMA(closes, timeperiod=5), talib.SMA(closes, timeperiod=20)
    out = set()
    for i in range(1, len(series)):
        key = (series[i].source, series[i].symbol, series[i].open_time_ms)
        if not math.isnan(rsi[i - 1]):
            if rsi[i] > 70 >= rsi[i - 1]:
                out.add((*key, "rsi_crossed_above_70"))
            if rsi[i] < 30 <= rsi[i - 1]:
                out.add((*key, "rsi_crossed_below_30"))
        if not math.isnan(upper[i - 1]):
            if closes[i] > upper[i] and closes[i - 1] <= upper[i - 1]:
                out.add((*key, "close_above_upper_band"))
            if closes[i] < lower[i] and closes[i - 1] >= lower[i - 1]:
                out.add((*key, "close_below_lower_band"))
        if not math.isnan(ma20[i - 1]):
            if ma5[i] > ma20[i] and ma5[i - 1] <= ma20[i - 1]:
                out.add((*key, "ma5_crossed_above_ma20"))
            if ma5[i] < ma20[i] and ma5[i - 1] >= ma20[i - 1]:
                out.add((*key, "ma5_crossed_below_ma20"))
    return out


def assert_candles_equal(got: dict[tuple[str, str, int], dict[str, Any]], want: dict[Any, dict[str, Any]]) -> None:
    assert sorted(got) == sorted(want), f"{len(got)} candles, expected {len(want)}"
    for key, expected in want.items():
        for column, value in expected.items():
            actual = got[key][column]
            if value is None or column == "trades":
                assert actual == value, (key, column, actual, value)
            else:
                assert actual == pytest.approx(value, rel=RTOL, abs=ATOL), (key, column, actual, value)


@dataclass
class Scenario:
    """Two symbols' series as the topic gets them: a hole filled later, a repeat, a correction, a bad record."""

    truth: list[WireCandle]
    records: list[bytes]
    split: int  # records[:split] before the restart, records[split:] after

    @property
    def candles(self) -> dict[tuple[str, str, int], dict[str, Any]]:
        out: dict[tuple[str, str, int], dict[str, Any]] = {}
        for symbol in sorted({c.symbol for c in self.truth}):
            out |= expected_candles([c for c in self.truth if c.symbol == symbol])
        return out

    @property
    def signals(self) -> set[SignalKey]:
        out: set[SignalKey] = set()
        for symbol in sorted({c.symbol for c in self.truth}):
            out |= expected_signals([c for c in self.truth if c.symbol == symbol])
        return out


BAD_RECORD = b'{"source":"binance","symbol":"BTCUSDT","interval":"1m","open_time":"2026-12-01T12:00:00.000Z"}'
BAD_REASON = "missing fields: open, high, low, close"


def scenario(count: int = 150) -> Scenario:
    btc, eth = walk("BTCUSDT", count, seed=3), walk("ETHUSDT", count, seed=4)
    hole = btc[60:66]  # lost in a disconnect, repaired after the restart
    wrong = dataclasses.replace(eth[90], close=eth[90].close * 1.05, high=eth[90].high * 1.05)  # corrected later
    first: list[WireCandle] = []
    for i in range(count):
        if not 60 <= i < 66:
            first.append(btc[i])
        first.append(wrong if i == 90 else eth[i])
    first.insert(40, btc[20])  # a repeat: changes nothing
    records = [c.to_json() for c in first]
    records.insert(100, BAD_RECORD)
    repaired = [dataclasses.replace(c, origin="repair") for c in [*hole, eth[90]]]
    return Scenario(btc + eth, records + [c.to_json() for c in repaired], len(records))


# -- unit: the per-symbol state --------------------------------------------------------------------------------------
def candle(wire: WireCandle) -> Candle:
    return Candle(wire.open_time_ms, wire.open, wire.high, wire.low, wire.close, wire.volume, wire.quote_volume,
                  wire.trades)  # fmt: skip


@pytest.mark.unit
def test_signals_after_late_and_corrected_candles_equal_those_of_the_in_order_series() -> None:
    case = scenario()
    symbols: dict[str, SymbolCandles] = {}
    table: set[SignalKey] = set()
    changes = []
    from tickpipe.candle_schema import InvalidCandle, parse_candle

    for raw in case.records:
        try:
            wire = parse_candle(raw)
        except InvalidCandle:
            continue
        state = symbols.setdefault(wire.symbol, SymbolCandles(CandleSeries()))
        _, found = state.add(candle(wire))
        for change in found:
            key = (wire.source, wire.symbol, change.signal.open_time_ms, change.signal.kind.value)
            changes.append(change.change)
            if change.change is Change.RETRACTED:
                assert key in table
                table.discard(key)
            else:
                assert (key in table) == (change.change is Change.REVISED)
                table.add(key)
    assert table == case.signals
    assert case.signals, "the scenario must produce signals"
    assert {SignalKind(k[3]) for k in case.signals} >= {
        SignalKind.RSI_CROSSED_ABOVE_70,
        SignalKind.RSI_CROSSED_BELOW_30,
        SignalKind.MA5_CROSSED_ABOVE_MA20,
        SignalKind.MA5_CROSSED_BELOW_MA20,
    }


@pytest.mark.unit
def test_a_retracted_signal_is_reported_when_a_correction_removes_it() -> None:
    series = walk("BTCUSDT", 150, seed=3)
    state = SymbolCandles(CandleSeries())
    fired: list[tuple[Change, int]] = []
    for wire in series:
        fired += [(c.change, c.signal.open_time_ms) for c in state.add(candle(wire))[1]]
    first = next(t for change, t in fired if change is Change.NEW)
    index = (first - T0) // MINUTE_MS
    previous = series[index - 1]
    # The candle before the signal closes where this one does: no cross any more.
    flat = dataclasses.replace(previous, close=series[index].close, high=max(previous.high, series[index].close),
                               low=min(previous.low, series[index].close))  # fmt: skip
    _, changes = state.add(candle(flat))
    assert (Change.RETRACTED, first) in [(c.change, c.signal.open_time_ms) for c in changes]
    assert all(c.to_json("binance", "BTCUSDT").startswith('{"source":"binance"') for c in changes)


@pytest.mark.unit
def test_the_state_pickles_mid_series() -> None:
    import pickle

    series = walk("BTCUSDT", 80, seed=5)
    state = SymbolCandles(CandleSeries())
    for wire in series[:50]:
        state.add(candle(wire))
    restored = pickle.loads(pickle.dumps(state))  # noqa: S301 - our own state
    for wire in series[50:]:
        assert restored.add(candle(wire)) == state.add(candle(wire))


# -- integration: the transformation on elements, in a local mini-cluster ---------------------------------------------
@pytest.mark.integration
def test_the_job_s_transformation_on_elements_gives_talib_s_rows_signals_and_dead_letters() -> None:
    from pyflink.common import Configuration, Types
    from pyflink.datastream import StreamExecutionEnvironment

    from tickpipe.ma_job.candle_job import transform

    case = scenario(120)
    config = Configuration()
    config.set_string("python.executable", sys.executable)
    config.set_string("parallelism.default", "1")
    env = StreamExecutionEnvironment.get_execution_environment(config)
    raw = env.from_collection([r.decode() for r in case.records], type_info=Types.STRING())
    rows, signal_rows, signal_events, dead = transform(raw, Settings())
    tagged = Types.PICKLED_BYTE_ARRAY()
    out = (
        rows.map(lambda r: ("row", tuple(r)), output_type=tagged)
        .union(signal_rows.map(lambda r: ("signal", r.get_row_kind().name, tuple(r)), output_type=tagged))
        .union(signal_events.map(lambda r: ("event", r[0], r[1]), output_type=tagged))
        .union(dead.map(lambda r: ("dead", r), output_type=tagged))
    )
    with out.execute_and_collect() as results:
        collected = list(results)

    candles: dict[tuple[str, str, int], dict[str, Any]] = {}
    table: set[SignalKey] = set()
    events = []
    for item in collected:
        if item[0] == "row":
            source, symbol, open_time, *values = item[1]
            columns = ("open", "high", "low", "close", "volume", "quote_volume", "trades", *INDICATORS)
            candles[(source, symbol, open_time)] = dict(zip(columns, values, strict=True))
        elif item[0] == "signal":
            key = tuple(item[2][:4])
            if item[1] == "DELETE":
                table.discard(key)  # type: ignore[arg-type]
            else:
                table.add(key)  # type: ignore[arg-type]
        elif item[0] == "event":
            events.append((item[1], json.loads(item[2])))
    assert_candles_equal(candles, case.candles)
    assert table == case.signals
    assert [json.loads(item[1])["reason"] for item in collected if item[0] == "dead"] == [BAD_REASON]
    assert all(key == f"{event['source']}:{event['symbol']}" for key, event in events)


# -- integration: the submitted job on the session cluster -------------------------------------------------------------
@dataclass
class CandleJobUnderTest:
    settings: Settings
    env: dict[str, str]
    rest: FlinkRest

    def command(self, *args: str, **popen: object) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "tickpipe.cli", "ma-job", "--candles", *args],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            **popen,  # type: ignore[call-overload]
        )

    def submit_detached(self, *args: str) -> str:
        process = self.command("--detached", *args)
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, output
        return output.split("SUBMITTED ")[1].split()[0]

    def produce(self, records: list[bytes]) -> None:
        producer = Producer(producer_config(self.settings))
        for record in records:
            try:
                key = json.loads(record)["source"] + ":" + json.loads(record)["symbol"]
            except KeyError:
                key = "binance:BTCUSDT"
            producer.produce(self.settings.kafka_candles_topic, key=key.encode(), value=record)
            producer.poll(0)
        assert producer.flush(30) == 0

    def candles(self) -> dict[tuple[str, str, int], dict[str, Any]]:
        columns = ("open", "high", "low", "close", "volume", "quote_volume", "trades", *INDICATORS)
        with psycopg.connect(self.settings.conninfo("owner")) as conn:
            rows = conn.execute(
                f"SELECT source, symbol, (extract(epoch FROM open_time) * 1000)::bigint, {', '.join(columns)} "  # noqa: S608
                "FROM candles_1m"
            ).fetchall()
        return {(r[0], r[1], int(r[2])): dict(zip(columns, r[3:], strict=True)) for r in rows}

    def signals(self) -> list[SignalKey]:
        with psycopg.connect(self.settings.conninfo("owner")) as conn:
            rows = conn.execute(
                "SELECT source, symbol, (extract(epoch FROM open_time) * 1000)::bigint, kind FROM signals"
            ).fetchall()
        return [(r[0], r[1], int(r[2]), r[3]) for r in rows]

    def cancel_all(self) -> None:
        for job in self.rest.running(candle_job_name(self.settings)):
            self.rest.cancel(job.job_id)


@pytest.fixture
def candle_job(
    flink: TestStack, fresh_database: Settings, unique_topics: dict[str, str]
) -> Iterator[CandleJobUnderTest]:
    suffix = uuid.uuid4().hex[:8]
    group = f"test-candles-{suffix}"
    topics = {**unique_topics, "kafka_candles_topic": f"candles-{suffix}", "kafka_signals_topic": f"signals-{suffix}"}
    settings = flink.settings(
        database_url=fresh_database.database_url, candle_group_id=group, checkpoint_interval_seconds=1.0, **topics
    )
    ensure_topics(settings)
    migrate(settings)
    env = flink.env(
        DATABASE_URL=settings.database_url,
        KAFKA_TOPIC=settings.kafka_topic,
        KAFKA_DLQ_TOPIC=settings.kafka_dlq_topic,
        KAFKA_CANDLES_TOPIC=settings.kafka_candles_topic,
        KAFKA_SIGNALS_TOPIC=settings.kafka_signals_topic,
        CANDLE_GROUP_ID=group,
        CHECKPOINT_INTERVAL_SECONDS="1",
    )
    under_test = CandleJobUnderTest(settings, env, FlinkRest(settings.flink_rest_url))
    try:
        yield under_test
    finally:
        under_test.cancel_all()


def signal_topic_state(settings: Settings, minimum: int) -> set[SignalKey]:
    """Replay the signals topic's events in order (new/revised set a signal, retracted removes it)."""
    consumer = Consumer(
        consumer_config(settings, f"test-signals-{time.monotonic_ns()}", **{"auto.offset.reset": "earliest"})
    )
    consumer.subscribe([settings.kafka_signals_topic])
    events: list[tuple[bytes, dict[str, Any]]] = []
    deadline = time.monotonic() + 60
    quiet_since = time.monotonic()
    try:
        # At least `minimum` events, then until the topic has been quiet for 3 s (retractions come after).
        while time.monotonic() < deadline and (len(events) < minimum or time.monotonic() - quiet_since < 3):
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                events.append((message.key(), json.loads(message.value())))
                quiet_since = time.monotonic()
    finally:
        consumer.close()
    state: set[SignalKey] = set()
    from tickpipe.schema import parse_timestamp

    for key, event in events:
        assert key == f"{event['source']}:{event['symbol']}".encode()
        signal_key = (event["source"], event["symbol"], parse_timestamp(event["open_time"]), event["kind"])
        if event["change"] == "retracted":
            state.discard(signal_key)
        else:
            state.add(signal_key)
    return state


@pytest.mark.integration
@pytest.mark.slow
def test_a_killed_candle_job_resumes_from_its_checkpoint_and_ends_equal_to_talib(
    candle_job: CandleJobUnderTest,
) -> None:
    case = scenario()
    before, after = case.records[: case.split], case.records[case.split :]
    candle_job.produce(before)
    launcher = candle_job.command(start_new_session=True)
    resume_point = ResumePoint(candle_job.settings.candle_group_id, job="candle-job")
    distinct_minutes = len(case.candles)
    try:
        # Every minute but the hole's is in the table (the wrong ETH candle included).
        wait_for(lambda: len(candle_job.candles()) >= distinct_minutes - 6, 240, "the first candles in candles_1m")
        wait_for(resume_point.load, 60, "a completed checkpoint recorded by the launcher")
    except AssertionError as error:
        if launcher.poll() is not None:
            raise AssertionError(f"{error}; the launcher exited: {launcher.communicate()[0][-3000:]}") from None
        raise
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(launcher.pid, signal.SIGKILL)  # the launcher dies without a savepoint...
        launcher.wait(30)
    candle_job.cancel_all()  # ...and so does the job: only its retained checkpoint is left
    held = [k for k, row in candle_job.candles().items() if k[1] == "BTCUSDT" and row["rsi_14"] is None]
    assert len(held) > 80, "the candles after the hole are held with NULL indicators"

    candle_job.produce(after)
    candle_job.submit_detached("--resume-if-possible")

    def settled() -> bool:
        try:
            assert_candles_equal(candle_job.candles(), case.candles)
        except AssertionError:
            return False
        return True

    wait_for(settled, 240, "candles_1m equal to TA-Lib on the complete series")
    assert_candles_equal(candle_job.candles(), case.candles)  # nothing doubled: one row per minute, by key
    wait_for(lambda: set(candle_job.signals()) == case.signals, 60, "the signals table equal to the expected")
    assert len(candle_job.signals()) == len(case.signals)
    assert signal_topic_state(candle_job.settings, len(case.signals)) == case.signals

    dead = [
        r for r in consume(candle_job.settings, candle_job.settings.kafka_dlq_topic, 1) if r["stage"] == "candle-job"
    ]
    assert [(r["reason"], r["raw"]) for r in dead] == [(BAD_REASON, BAD_RECORD.decode())]


# -- integration: 1m candles built from the ticks of sources without klines -------------------------------------------
def tick(source: str, symbol: str, at_ms: int, price: float) -> Tick:
    return Tick(symbol, at_ms, price, 1e9 + at_ms / 1000, source)  # a running 24 h volume: never a candle's


def tick_scenario() -> tuple[list[Tick], list[Tick]]:
    """(the ticks in topic order, the ticks that make candles): CoinGecko and Yahoo series, out of order within
    seconds, a tick two minutes behind its series (late, within the allowed lateness), two ticks of the same
    millisecond, minutes without ticks; Binance ticks in between (it has klines: no tick-built candles)."""
    rng = random.Random(7)
    ordered: list[Tick] = []
    for source, symbol, start in (("coingecko", "bitcoin/usd", 97000.0), ("yahoo", "AAPL", 230.0)):
        price = start
        for minute in range(40):
            if minute in {12, 13}:
                continue  # no ticks: no candle, and nothing waits for one
            for second in sorted(rng.sample(range(60), 3)):
                price *= math.exp(rng.gauss(0, 0.002))
                ordered.append(tick(source, symbol, T0 + minute * MINUTE_MS + second * 1000 + 5, price))
    twin = next(t for t in ordered if t.source == "yahoo" and t.event_time_ms >= T0 + 20 * MINUTE_MS)
    ordered.append(dataclasses.replace(twin, price=twin.price * 1.001))  # a second trade in the same millisecond
    ordered.sort(key=lambda t: t.event_time_ms)
    arrived = list(ordered)
    for i in range(0, len(arrived) - 1, 5):  # neighbours swapped: out of order by seconds
        arrived[i], arrived[i + 1] = arrived[i + 1], arrived[i]
    late = next(t for t in arrived if t.source == "coingecko" and t.event_time_ms >= T0 + 20 * MINUTE_MS)
    arrived.remove(late)
    arrived.insert(
        next(i for i, t in enumerate(arrived) if t.event_time_ms >= late.event_time_ms + 2 * MINUTE_MS), late
    )
    binance = [tick("binance", "BTCUSDT", T0 + i * 7_000, 97000.0 + i) for i in range(300)]
    mixed = [t for pair in zip(arrived, binance, strict=False) for t in pair] + arrived[len(binance) :]
    return mixed, arrived


def resample(ticks: list[Tick]) -> dict[tuple[str, str, int], dict[str, Any]]:
    """The definition in plain Python: per series and minute, the ticks in event-time order (equal times in
    arrival order); open first, close last, high/low, trades the count, no volume."""
    out: dict[tuple[str, str, int], list[Tick]] = {}
    for t in sorted(ticks, key=lambda t: t.event_time_ms):  # stable
        out.setdefault((t.source, t.symbol, t.event_time_ms - t.event_time_ms % MINUTE_MS), []).append(t)
    return {
        key: {
            "open": group[0].price,
            "high": max(t.price for t in group),
            "low": min(t.price for t in group),
            "close": group[-1].price,
            "volume": None,
            "quote_volume": None,
            "trades": len(group),
        }
        for key, group in out.items()
    }


@pytest.mark.unit
def test_the_tick_built_sources_are_a_list_without_binance() -> None:
    from pydantic import ValidationError

    assert Settings().candles_from_ticks_sources == ("coingecko", "yahoo")
    assert Settings(candles_from_ticks_sources=" Yahoo,coingecko,yahoo").candles_from_ticks_sources == (
        "yahoo",
        "coingecko",
    )
    assert Settings(candles_from_ticks_sources="").candles_from_ticks_sources == ()
    with pytest.raises(ValidationError, match="binance has exchange klines"):
        Settings(candles_from_ticks_sources="coingecko,binance")
    with pytest.raises(ValidationError, match="unknown source: kraken"):
        Settings(candles_from_ticks_sources="kraken")


@pytest.mark.integration
def test_the_job_builds_1m_candles_from_coingecko_and_yahoo_ticks_and_none_from_binance() -> None:
    from pyflink.common import Configuration, Types
    from pyflink.datastream import StreamExecutionEnvironment

    from tickpipe.ma_job.candle_job import transform

    mixed, candle_ticks = tick_scenario()
    exchange = walk("BTCUSDT", 3, seed=9)  # Binance's own candles still flow through the same job
    config = Configuration()
    config.set_string("python.executable", sys.executable)
    config.set_string("parallelism.default", "1")
    env = StreamExecutionEnvironment.get_execution_environment(config)
    raw = env.from_collection([c.to_json().decode() for c in exchange], type_info=Types.STRING())
    records = [t.to_json().decode() for t in mixed] + ['{"symbol":"AAPL","source":"yahoo"}']  # not a tick
    raw_ticks = env.from_collection(records, type_info=Types.STRING())
    rows, _, _, dead = transform(raw, Settings(), raw_ticks)
    tagged = Types.PICKLED_BYTE_ARRAY()
    out = rows.map(lambda r: ("row", tuple(r)), output_type=tagged).union(
        dead.map(lambda r: ("dead", r), output_type=tagged)
    )
    with out.execute_and_collect() as results:
        collected = list(results)

    columns = ("open", "high", "low", "close", "volume", "quote_volume", "trades", *INDICATORS)
    latest: dict[tuple[str, str, int], dict[str, Any]] = {}
    for item in collected:
        if item[0] == "row":  # a candle written again (a late tick, its indicators) replaces the earlier row
            source, symbol, open_time, *values = item[1]
            latest[(source, symbol, open_time)] = dict(zip(columns, values, strict=True))
    want = resample(candle_ticks)
    built = {key: row for key, row in latest.items() if key[0] != "binance"}
    assert sorted(built) == sorted(want)
    for key, expected in want.items():
        assert {column: built[key][column] for column in expected} == expected, key
    assert {key for key in latest if key[0] == "binance"} == {("binance", c.symbol, c.open_time_ms) for c in exchange}
    # Indicators over the candles that exist (the minutes without ticks are no hole): TA-Lib's on their closes.
    for source, symbol in (("coingecko", "bitcoin/usd"), ("yahoo", "AAPL")):
        series = sorted((key, row) for key, row in built.items() if key[:2] == (source, symbol))
        reference_values = reference(np.array([row["close"] for _, row in series]))
        for i, (key, row) in enumerate(series):
            for column in INDICATORS:
                value = _value(reference_values[TALIB[column]][i])
                if value is None:
                    assert row[column] is None, (key, column)
                else:
                    assert row[column] == pytest.approx(value, rel=RTOL, abs=ATOL), (key, column)
    assert [item for item in collected if item[0] == "dead"] == []  # not a tick: the MA job's dead letter, not ours


@pytest.mark.integration
@pytest.mark.slow
def test_the_job_restores_a_savepoint_taken_before_tick_candles_and_builds_them_with_late_ticks(
    candle_job: CandleJobUnderTest, tmp_path: Path
) -> None:
    """The job as it was before candles from ticks (commit BEFORE_TICK_CANDLES, its graph built by that commit's
    code) stops with a savepoint; this job starts from it with allowNonRestoredState false (`flink run
    --fromSavepoint`, no `-n`), carries on the exchange series' indicators, and builds CoinGecko's candles from its
    ticks on the session cluster: a late tick within the allowed lateness corrects its candle, a tick behind it is a
    dead letter with its reason."""
    from tickpipe.ma_job.cli import restore_failure

    # Flat first: that commit's graph carries fewer signal columns than today's code (which its Python workers run)
    # gives, so nothing may fire before the upgrade; the walk after it does.
    walked = walk("BTCUSDT", 60, seed=11)
    flat = [dataclasses.replace(c, open=100.0, high=100.0, low=100.0, close=100.0) for c in walked[:40]]
    exchange = flat + walked[40:]
    candle_job.produce([c.to_json() for c in flat])
    data = subprocess.run(
        ["git", "-C", str(REPO), "archive", BEFORE_TICK_CANDLES, "src", "services/ma-job/tickpipe"],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(tmp_path, filter="data")
    before = subprocess.run(
        [sys.executable, "-m", "tickpipe.cli", "ma-job", "--candles", "--detached"],
        env={**candle_job.env, "PYTHONPATH": f"{tmp_path / 'src'}:{tmp_path / 'services' / 'ma-job'}"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert before.returncode == 0, before.stdout + before.stderr
    old_id = before.stdout.split("SUBMITTED ")[1].split()[0]
    wait_for(lambda: len(candle_job.candles()) >= 40, 240, "the exchange's first 40 candles in candles_1m")
    savepoint = candle_job.rest.stop_with_savepoint(old_id, None)

    candle_job.env["CANDLES_FROM_TICKS_IDLE_SECONDS"] = "5"  # Yahoo has no ticks here: idle after 5 s, not 60
    new_id = candle_job.submit_detached("--resume", savepoint)
    assert restore_failure(candle_job.rest, new_id) is None
    assert candle_job.rest.state(new_id) == "RUNNING"
    candle_job.produce([c.to_json() for c in walked[40:]])
    rng = random.Random(5)
    ticks = [
        tick("coingecko", "bitcoin/usd", T0 + second * 1000, 97000.0 * math.exp(rng.gauss(0, 0.001)))
        for second in sorted(rng.sample(range(8 * 60), 60))
    ]
    ticks += [tick("binance", "BTCUSDT", T0 + second * 1000, 97000.0) for second in range(0, 8 * 60, 5)]
    produce_ticks(candle_job, ticks)
    built = [t for t in ticks if t.source == "coingecko"]
    # The watermark trails the newest tick by the out-of-orderness: the minutes that ended before it are closed.
    watermark = max(t.event_time_ms for t in built) - 60_000
    closed = [t for t in built if t.event_time_ms - t.event_time_ms % MINUTE_MS + MINUTE_MS <= watermark]

    def tick_candles() -> dict[tuple[str, str, int], dict[str, Any]]:
        return {key: row for key, row in candle_job.candles().items() if key[0] != "binance"}

    def equal(want: dict[tuple[str, str, int], dict[str, Any]]) -> bool:
        got = tick_candles()
        return sorted(got) == sorted(want) and all(
            {column: got[key][column] for column in row} == row for key, row in want.items()
        )

    wait_for(lambda: equal(resample(closed)), 240, "candles_1m equal to a resample of the closed minutes' ticks")
    # Its state came through the savepoint: the exchange series' indicators continue (TA-Lib on the whole series).
    wait_for(lambda: len(candle_job.candles()) - len(tick_candles()) == 60, 120, "the exchange's 60 candles")
    exchange_rows = {k: row for k, row in candle_job.candles().items() if k[0] == "binance"}
    assert_candles_equal(exchange_rows, expected_candles(exchange))

    # Late: the candle of minute 2 closed; a tick for it within the allowed lateness (300 s) corrects it. Too late: a
    # tick 20 minutes behind the watermark.
    late = tick("coingecko", "bitcoin/usd", T0 + 2 * MINUTE_MS + 59_999, 99000.0)
    too_late = tick("coingecko", "bitcoin/usd", T0 - 20 * MINUTE_MS, 98000.0)
    produce_ticks(candle_job, [late, too_late])
    wait_for(lambda: equal(resample([*closed, late])), 120, "the late tick's minute corrected in candles_1m")
    dead = [
        r for r in consume(candle_job.settings, candle_job.settings.kafka_dlq_topic, 1) if r["stage"] == "candle-job"
    ]
    assert [(r["reason"].split(":")[0], json.loads(r["raw"])["timestamp"]) for r in dead] == [
        ("too late for its 1m candle", too_late.timestamp)
    ]
    assert dead[0]["source"] == "coingecko"


def produce_ticks(job: CandleJobUnderTest, ticks: list[Tick]) -> None:
    producer = Producer(producer_config(job.settings))
    for t in ticks:
        producer.produce(job.settings.kafka_topic, key=t.key.encode(), value=t.to_json())
        producer.poll(0)
    assert producer.flush(30) == 0
