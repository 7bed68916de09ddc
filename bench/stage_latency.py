"""Where a tick's latency goes: exchange → ingestor → Kafka → MA job + sink → readable row, per sampled tick.

Three clocks, all this machine's (the sender stamps `E` with it too):
- the tick's event time `E` (the load generator's send time),
- its Kafka record's CreateTime, which librdkafka stamps when the ingestor calls `produce()`,
- the moment a consumer of `price-ticks` (its own group, reading from the end, fetches answered at once) has it,
- the moment the row is readable in PostgreSQL (bench.pipeline.LatencySampler, polling the same symbols).

Per tick the stages are then: ingestor = CreateTime - E (WebSocket read, parse, de-duplicate), Kafka = consumed -
CreateTime (linger, acks=all, the fetch), job + sink = readable - consumed (Flink's source, its shuffles, the JDBC
flush, and up to one poll of the sampler). The sampled symbols are chosen in one partition of the topic
(`sample_symbols`) and the probe reads only that one: a sixth of the traffic in the benchmark's process, which shares
the 2 cores with the pipeline it measures.
"""

from __future__ import annotations

import threading
import time
import zlib

import orjson
from confluent_kafka import OFFSET_END, Consumer, TopicPartition

from tickpipe.config import Settings
from tickpipe.kafka import consumer_config
from tickpipe.schema import parse_timestamp


def partition_of(key: bytes, partitions: int) -> int:
    """The partition librdkafka's default partitioner (`consistent_random`: CRC-32 of the key) puts `key` in."""
    return zlib.crc32(key) % partitions


def sample_symbols(symbols: list[str], partitions: int, count: int) -> list[str]:
    """The first `count` of `symbols` (upper case, as the Kafka keys of Binance ticks) that share one partition."""
    keys = [s.upper() for s in symbols]
    first = partition_of(keys[0].encode(), partitions)
    return [key for key in keys if partition_of(key.encode(), partitions) == first][:count]


class KafkaProbe(threading.Thread):
    """Consumes `price-ticks` from its end and records, per sampled (symbol, event time), when it was produced
    and when it could be consumed (epoch seconds)."""

    def __init__(self, settings: Settings, symbols: list[str]) -> None:
        super().__init__(name="kafka-latency-probe", daemon=True)
        self.settings, self.symbols = settings, {s.upper().encode() for s in symbols}
        self.seen: dict[tuple[str, int], tuple[float, float]] = {}
        self.recording = False  # only while the step measures: the warm-up's backlog is not the steady state
        self.stop_event = threading.Event()

    def run(self) -> None:
        config = consumer_config(
            self.settings,
            f"latency-probe-{time.monotonic_ns()}",
            **{"fetch.wait.max.ms": 5, "enable.auto.commit": False},
        )
        consumer = Consumer(config)
        try:
            topic = self.settings.kafka_topic
            count = len(consumer.list_topics(topic, timeout=30).topics[topic].partitions)
            wanted = {partition_of(symbol, count) for symbol in self.symbols}
            consumer.assign([TopicPartition(topic, p, OFFSET_END) for p in sorted(wanted)])
            while not self.stop_event.is_set():
                # consume() returns when it has 1,000 messages or the timeout passed: a short timeout, or a message
                # would wait for the batch to fill (50 ms: the whole of a 3,000 ticks/s step's Kafka part).
                for message in consumer.consume(1000, timeout=0.001):
                    consumed = time.time()
                    key = message.key()
                    if not self.recording or message.error() or key is None or key.upper() not in self.symbols:
                        continue
                    tick = orjson.loads(message.value() or b"{}")
                    event_ms = parse_timestamp(tick["timestamp"])
                    self.seen[(str(tick["symbol"]).upper(), event_ms)] = (message.timestamp()[1] / 1000, consumed)
        finally:
            consumer.close()


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def breakdown(probe: KafkaProbe, readable: dict[tuple[str, int], float]) -> dict[str, dict[str, float]]:
    """p50/p99 ms of each stage over the ticks both the probe and the row sampler saw."""
    stages: dict[str, list[float]] = {"ingestor": [], "kafka": [], "job + sink": [], "total": []}
    for key, seen_at in readable.items():
        if key not in probe.seen:
            continue
        produced, consumed = probe.seen[key]
        event = key[1] / 1000
        stages["ingestor"].append((produced - event) * 1000)
        stages["kafka"].append((consumed - produced) * 1000)
        stages["job + sink"].append((seen_at - consumed) * 1000)
        stages["total"].append((seen_at - event) * 1000)
    return {name: {"p50": _percentile(v, 0.5), "p99": _percentile(v, 0.99), "n": len(v)} for name, v in stages.items()}
