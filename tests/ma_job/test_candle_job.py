"""The candle job: candles (late, repaired, repeated, corrected, malformed) → candles_1m rows with TA-Lib's indicators
of the complete in-order series, signals in a table and on a topic, dead letters with their reason.

Three levels: the per-symbol state as a function (unit), the job's transformation on elements in a local
mini-cluster (integration), and the submitted job on the real Flink session cluster with Kafka and PostgreSQL,
killed and resumed from its checkpoint (integration, slow).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
import pytest
import talib
from confluent_kafka import Consumer, Producer

from tests.conftest import TestStack
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

T0 = 1_764_000_000_000 - 1_764_000_000_000 % MINUTE_MS
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
