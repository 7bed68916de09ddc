"""Helpers shared by the integration and end-to-end tests: produce, read back, wait on a condition."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import pandas as pd
import psycopg
from confluent_kafka import Consumer, Producer, TopicPartition

from tickpipe.config import Settings
from tickpipe.db import price_tick_rows
from tickpipe.kafka import consumer_config, producer_config
from tickpipe.schema import Tick

if TYPE_CHECKING:
    from pyflink.datastream import StreamExecutionEnvironment

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float, what: str, interval: float = 0.2) -> T:
    """Poll `condition` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last: T = condition()
    while not last:
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last value: {last!r})")
        time.sleep(interval)
        last = condition()
    return last


def produce(settings: Settings, records: Iterable[tuple[str, bytes]]) -> None:
    producer = Producer(producer_config(settings))
    for key, value in records:
        producer.produce(settings.kafka_topic, key=key.encode(), value=value)
        producer.poll(0)
    assert producer.flush(30) == 0, "producer did not deliver everything within 30 s"


def random_walk(symbols: Iterable[str], count: int, start_ms: int = 1_700_000_000_000, seed: int = 7) -> list[Tick]:
    """Ticks in round-robin order, one second apart per symbol, geometric random-walk prices."""
    import random

    rng = random.Random(seed)
    prices = {symbol: rng.uniform(1, 1000) for symbol in symbols}
    ticks = []
    for i in range(count):
        for symbol in list(prices):
            prices[symbol] *= 1 + rng.gauss(0, 0.01)
            ticks.append(Tick(symbol, start_ms + i * 1000, prices[symbol], rng.uniform(0, 100)))
    return ticks


def expected_rows(ticks: Iterable[Tick]) -> pd.DataFrame:
    """What price_ticks must hold: the reference is pandas' rolling mean per series (source, symbol)."""
    frame = pd.DataFrame(
        [(t.source, t.symbol, t.event_time_ms, t.price, t.volume) for t in ticks],
        columns=["source", "symbol", "ms", "price", "volume"],
    ).sort_values(["source", "symbol", "ms"])
    grouped = frame.groupby(["source", "symbol"])["price"]
    frame["ma_short"] = grouped.transform(lambda s: s.rolling(5).mean())
    frame["ma_long"] = grouped.transform(lambda s: s.rolling(20).mean())
    return frame.reset_index(drop=True)


def table_rows(settings: Settings) -> pd.DataFrame:
    with psycopg.connect(settings.conninfo("owner")) as conn:
        rows = conn.execute(
            "SELECT source, symbol, (extract(epoch FROM time) * 1000)::bigint, price, volume, ma_short, ma_long "
            "FROM price_ticks ORDER BY source, symbol, time"
        ).fetchall()
    return pd.DataFrame(rows, columns=["source", "symbol", "ms", "price", "volume", "ma_short", "ma_long"])


def row_count(settings: Settings) -> int:
    return price_tick_rows(settings.conninfo("owner"))


def assert_same_rows(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert len(actual) == len(expected), f"{len(actual)} rows in price_ticks, expected {len(expected)}"
    pd.testing.assert_frame_equal(actual, expected, check_dtype=False, rtol=1e-9, atol=0)


def consume(settings: Settings, topic: str, count: int, timeout: float = 60.0) -> list[Any]:
    """Read `count` JSON records from the start of `topic` (fails at the deadline with what it got)."""
    consumer = Consumer(
        consumer_config(
            settings,
            f"test-reader-{time.monotonic_ns()}",
            **{"auto.offset.reset": "earliest", "enable.auto.commit": False},
        )
    )
    consumer.subscribe([topic])
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(records) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                records.append(json.loads(message.value()))
    finally:
        consumer.close()
    assert len(records) >= count, f"{len(records)} records in {topic} within {timeout:.0f} s, expected {count}"
    return records


def topic_messages(settings: Settings, topic: str) -> list[tuple[int, bytes | None, bytes]]:
    """Every record now in `topic` as (partition, key, value), in partition order (fails if one cannot be read)."""
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": "t", "enable.auto.commit": False}
    )
    out: list[tuple[int, bytes | None, bytes]] = []
    for partition in consumer.list_topics(topic, timeout=10).topics[topic].partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        if high == low:
            continue
        consumer.assign([TopicPartition(topic, partition, low)])
        read = 0
        while read < high - low:
            message = consumer.poll(5)
            assert message is not None, f"timed out reading back the topic {topic}"
            if message.error():
                continue
            out.append((partition, message.key(), message.value()))
            read += 1
    consumer.close()
    return out


def local_flink(**options: str) -> StreamExecutionEnvironment:
    """An in-process Flink (a mini cluster) with the job's jars (the connectors and services/ma-job/udf), the Python
    that runs the tests, and one subtask: the elements arrive in the order of their list, as a partition's do."""
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment

    from tests.conftest import REPO
    from tickpipe.ma_job.job import connector_jars

    jars = connector_jars(REPO / ".deps" / "jars")
    assert any("ma-job-udf" in jar for jar in jars), "the MA job's Java parts are not built: run `make setup`"
    config = Configuration()
    for key, value in {
        "pipeline.jars": ";".join(jars),
        "python.executable": sys.executable,
        "parallelism.default": "1",
        **options,
    }.items():
        config.set_string(key, value)
    return StreamExecutionEnvironment.get_execution_environment(config)
