"""The ingestor: its message path (normalize → de-duplicate → produce) against a raw producer, and the whole
process fed over WebSocket by the simulator with 1,000 symbols (rate, CPU, RSS)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import psutil
from confluent_kafka import Producer

from bench.report import Measurement
from tickpipe.config import Settings
from tickpipe.kafka import producer_config
from tickpipe.metrics import sample_sum, scrape
from tickpipe.sim.market import Market, encode


def frames(count: int, symbol_count: int) -> list[str]:
    """Combined-stream @ticker frames exactly as the exchange (simulator) sends them."""
    market = Market([f"SYM{i:04d}USDT" for i in range(symbol_count)], seed=3)
    names = list(market.states)
    out = []
    for i in range(count):
        symbol = names[i % symbol_count]
        out.append(f'{{"stream":"{symbol.lower()}@ticker","data":{encode(market.tick(symbol))}}}')
    return out


def message_path(settings: Settings, count: int, symbol_count: int) -> Measurement:
    """The ingestor's per-message code on one core, into the real broker (delivery included)."""
    from tickpipe.ingestor.service import TickRouter
    from tickpipe.ingestor.sink import KafkaSink

    data = frames(count, symbol_count)
    sink = KafkaSink(settings).start()
    router = TickRouter(sink, settings.ingest_gap_after_ms)
    connection = type("Connection", (), {"name": "bench", "shutdown_notice": False})()
    start = time.perf_counter()
    for frame in data:
        router(connection, frame)  # type: ignore[arg-type]
    undelivered = sink.close(120)
    seconds = time.perf_counter() - start
    delivered = router.sent - undelivered
    return Measurement("ingestor message path (normalize+dedup+produce)", delivered, delivered / seconds)


def raw_producer(settings: Settings, count: int, symbol_count: int) -> Measurement:
    """The ceiling: the same payloads produced with the same producer settings and nothing else."""
    from tickpipe.ingestor.normalize import normalize
    from tickpipe.schema import Tick

    payloads = []
    for frame in frames(count, symbol_count):
        tick = normalize(frame)
        if not isinstance(tick, Tick):
            raise TypeError(f"not a tick frame: {frame[:80]}")
        payloads.append((tick.key.encode(), tick.to_json()))
    producer = Producer(producer_config(settings))
    start = time.perf_counter()
    for key, value in payloads:
        while True:
            try:
                producer.produce(settings.kafka_topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(120)
    return Measurement("raw confluent-kafka producer (same payloads)", count, count / (time.perf_counter() - start))


def over_websocket(settings: Settings, symbol_count: int, seconds: float, log_dir: Path) -> Measurement:
    """Simulator (own thread) → ingestor process → Kafka for `seconds`: what the process sustains, and its RSS."""
    from tickpipe.run.stages import StageProcess
    from tickpipe.sim.server import SimOptions, SimThread
    from tickpipe.stack.process import free_port, wait_until

    symbols = [f"SYM{i:04d}USDT" for i in range(symbol_count)]
    port = free_port()
    with SimThread(SimOptions(symbols=symbols, rate=1000.0)) as sim:
        stage = StageProcess(
            "ingestor",
            ["ingest", "--symbols", ",".join(symbols)],
            log_dir / "bench-ingestor.log",
            env={
                **os.environ,
                **settings.as_env(),
                "BINANCE_WS_URL": sim.url,
                "BINANCE_REST_URL": sim.rest_url,
                "METRICS_PORT": str(port),
            },
        ).start()
        try:
            url = f"http://127.0.0.1:{port}"
            wait_until(lambda: _ingesting(url), 60)
            process = psutil.Process(stage.pid)
            process.cpu_percent()
            first, start = produced_ticks(url), time.perf_counter()
            peak = 0.0
            while time.perf_counter() - start < seconds:
                time.sleep(0.5)
                peak = max(peak, process.memory_info().rss / 2**20)
            produced, elapsed = produced_ticks(url) - first, time.perf_counter() - start
            cpu = process.cpu_percent()
        finally:
            stage.stop()
    return Measurement(
        f"simulator → ingestor process → Kafka ({symbol_count:,} symbols)",
        int(produced),
        produced / elapsed,
        f"ingestor CPU {cpu:.0f} %, peak RSS {peak:.0f} MB; the simulator shares the other core",
    )


def produced_ticks(metrics_url: str) -> float:
    """Ticks Kafka has acknowledged to the ingestor serving metrics at `metrics_url` (its own counter)."""
    return sample_sum(scrape(f"{metrics_url}/metrics"), "tickpipe_ingest_produced_total", topic="ticks")


def _ingesting(metrics_url: str) -> bool:
    try:
        return produced_ticks(metrics_url) > 0
    except OSError:  # its metrics server is not up yet
        return False


__all__ = ["message_path", "over_websocket", "produced_ticks", "raw_producer"]
