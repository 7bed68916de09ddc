"""The ingestor: its message path (normalize → de-duplicate → produce) against a raw producer, and the whole
process fed over WebSocket by the load generator (or the simulator) with 1,000 symbols (rate, CPU, RSS).

`python -m bench.ingest` runs the three on a Kafka of its own (about a minute), and the reader thread's CPU per
message without Kafka; `--before COMMIT` first alternates COMMIT's ingestor and the working tree's over WebSocket."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

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

    first = warm_up(count)
    data = frames(count + first, symbol_count)
    sink = KafkaSink(settings).start()
    router = TickRouter(sink, settings.ingest_gap_after_ms)
    connection = type("Connection", (), {"name": "bench", "shutdown_notice": False})()
    for frame in data[:first]:
        router(connection, frame)  # type: ignore[arg-type]
    sink.producer.flush(60)
    sent_in_warm_up = router.sent
    start = time.perf_counter()
    for frame in data[first:]:
        router(connection, frame)  # type: ignore[arg-type]
    undelivered = sink.close(120)
    seconds = time.perf_counter() - start
    delivered = router.sent - sent_in_warm_up - undelivered
    return Measurement("ingestor message path (normalize+dedup+produce)", delivered, delivered / seconds)


def warm_up(count: int) -> int:
    """Records produced and acknowledged before the clock starts: the producer's connection, its idempotence id and
    the topic's metadata are start-up, not rate (steady state, as the job's rates are measured)."""
    return max(1_000, count // 10)


def reader_cost(count: int, symbol_count: int) -> tuple[float, float]:
    """CPU µs per message on a reader thread, frames in over a socket pair → normalize → de-duplicate → to_json (no
    Kafka): websocket-client's recv() and one router call per message (the reader before 2026-12-02), then the
    connection's FrameReader and one router call per read. Thread CPU time: the least sensitive to other load."""
    import socket
    import threading

    import websocket

    from tickpipe.ingestor.connection import FrameReader, _ChunkedWebSocket
    from tickpipe.ingestor.service import TickRouter

    wire = b"".join(
        websocket.ABNF(1, 0, 0, 0, websocket.ABNF.OPCODE_TEXT, 0, f.encode()).format()
        for f in frames(count, symbol_count)
    )

    class Encoding:  # what KafkaSink.send does before produce()
        def send(self, tick: Any) -> None:
            tick.to_json()
            tick.key.encode()

        def reject(self, raw: str, reason: str) -> None:
            raise AssertionError(reason)

    def per_message(batched: bool) -> float:
        ours, theirs = socket.socketpair()
        ws = _ChunkedWebSocket(skip_utf8_validation=True, enable_multithread=True)
        ws.sock, ws.connected = ours, True
        router = TickRouter(Encoding(), None)  # type: ignore[arg-type]
        connection: Any = type("Connection", (), {"name": "bench", "shutdown_notice": False})()
        sender = threading.Thread(target=theirs.sendall, args=(wire,))
        sender.start()
        read, done, start = FrameReader(ws).read, 0, time.thread_time()
        while done < count:
            if batched:
                texts = read()
                router.batch(connection, texts)
                done += len(texts)
            else:
                router(connection, ws.recv())
                done += 1
        seconds = time.thread_time() - start
        sender.join()
        ours.close()
        theirs.close()
        return 1e6 * seconds / count

    return per_message(False), per_message(True)


def raw_producer(settings: Settings, count: int, symbol_count: int) -> Measurement:
    """The ceiling: the same payloads produced with the same producer settings and nothing else."""
    from tickpipe.ingestor.normalize import normalize
    from tickpipe.schema import Tick

    first = warm_up(count)
    payloads = []
    for frame in frames(count + first, symbol_count):
        tick = normalize(frame)
        if not isinstance(tick, Tick):
            raise TypeError(f"not a tick frame: {frame[:80]}")
        payloads.append((tick.key.encode(), tick.to_json()))
    producer = Producer(producer_config(settings))

    def produce(records: list[tuple[bytes, bytes]]) -> None:
        for key, value in records:
            while True:
                try:
                    producer.produce(settings.kafka_topic, value, key)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
        producer.flush(120)

    produce(payloads[:first])
    start = time.perf_counter()
    produce(payloads[first:])
    return Measurement("raw confluent-kafka producer (same payloads)", count, count / (time.perf_counter() - start))


def over_websocket(
    settings: Settings,
    symbol_count: int,
    seconds: float,
    log_dir: Path,
    *,
    sender: str = "loadgen",
    offered: float = 200_000.0,
    env: dict[str, str] | None = None,
) -> Measurement:
    """A sender process (bench/senders.py: the load generator by default, or the simulator) → ingestor process →
    Kafka for `seconds`, `offered` ticks/s over `symbol_count` symbols (more than the ingestor takes: the figure is
    its ceiling). Messages/s delivered (Kafka's acknowledgements, the ingestor's own counter), the ingestor's CPU
    and messages/s per core of it, the sender's CPU apart. `env` is added to the ingestor's environment."""
    from bench import senders
    from tickpipe.run.stages import StageProcess
    from tickpipe.stack.process import free_port, wait_until

    symbols = [f"SYM{i:04d}USDT" for i in range(symbol_count)]
    port = free_port()
    with senders.sender(sender, [s.lower() for s in symbols], offered / symbol_count, log_dir) as running:
        stage = StageProcess(
            "ingestor",
            ["ingest", "--symbols", ",".join(symbols)],
            log_dir / "bench-ingestor.log",
            env={
                **os.environ,
                **settings.as_env(),
                "BINANCE_WS_URL": running.url,
                "BINANCE_REST_URL": "http" + running.url.removeprefix("ws"),
                "INGEST_KLINES": "false",  # the load generator serves tickers only (the tick path is measured)
                "METRICS_PORT": str(port),
                **(env or {}),
            },
        ).start()
        try:
            url = f"http://127.0.0.1:{port}"
            if not wait_until(lambda: _ingesting(url), 60):
                raise RuntimeError(f"the ingestor produced nothing within 60 s; see {log_dir}/bench-ingestor.log")
            time.sleep(2.0)  # the window starts in the steady state: every connection open and read
            process = psutil.Process(stage.pid)
            cpu0, sender0 = _cpu_seconds(process), _cpu_seconds(running.process)
            first, start = produced_ticks(url), time.perf_counter()
            peak = 0.0
            while time.perf_counter() - start < seconds:
                time.sleep(0.5)
                peak = max(peak, process.memory_info().rss / 2**20)
            produced, elapsed = produced_ticks(url) - first, time.perf_counter() - start
            cpu = 100 * (_cpu_seconds(process) - cpu0) / elapsed
            sender_cpu = 100 * (_cpu_seconds(running.process) - sender0) / elapsed
        finally:
            stage.stop()
    rate = produced / elapsed
    return Measurement(
        f"{senders.NAMES[sender]} → ingestor process → Kafka ({symbol_count:,} symbols)",
        int(produced),
        rate,
        f"ingestor CPU {cpu:.0f} % = {rate / (cpu / 100) if cpu else 0:,.0f} messages/s per core, peak RSS "
        f"{peak:.0f} MB; {senders.NAMES[sender]} CPU {sender_cpu:.0f} % (not the ingestor's)",
    )


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def produced_ticks(metrics_url: str) -> float:
    """Ticks Kafka has acknowledged to the ingestor serving metrics at `metrics_url` (its own counter)."""
    return sample_sum(scrape(f"{metrics_url}/metrics"), "tickpipe_ingest_produced_total", topic="ticks")


def _ingesting(metrics_url: str) -> bool:
    try:
        return produced_ticks(metrics_url) > 0
    except OSError:  # its metrics server is not up yet
        return False


def _sources_of(commit: str, folder: Path) -> str:
    """COMMIT's src/ and services/ingestor/ extracted under `folder`: a PYTHONPATH that puts its ingestor (and the
    shared package it imports) in front of the working tree's."""
    import subprocess

    from bench.local_stack import REPO

    folder.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit, "src", "services/ingestor"], check=True, capture_output=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return os.pathsep.join([str(folder / "services" / "ingestor"), str(folder / "src")])


def main(argv: list[str] | None = None) -> int:
    import argparse
    import tempfile
    import uuid

    from bench.local_stack import REPO, bench_stack
    from bench.senders import SENDERS
    from tickpipe.config import load_settings
    from tickpipe.kafka import ensure_topics
    from tickpipe.logs import configure_logging

    parser = argparse.ArgumentParser(prog="bench.ingest", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000, help="payloads of the message path and the producer")
    parser.add_argument("--seconds", type=float, default=10.0, help="the WebSocket measurement window")
    parser.add_argument("--symbols", type=int, default=1000)
    parser.add_argument("--sender", choices=SENDERS, default="loadgen")
    parser.add_argument("--offered", type=float, default=200_000.0, help="ticks/s the sender offers")
    parser.add_argument(
        "--before",
        metavar="COMMIT",
        help="also run COMMIT's ingestor (its sources first on PYTHONPATH) over WebSocket, alternating with the "
        "working tree's, --rounds times each on the same broker, and print both per round",
    )
    parser.add_argument("--rounds", type=int, default=4, help="rounds of --before")
    args = parser.parse_args(argv)
    configure_logging(level="WARNING")
    with bench_stack(("kafka",)) as (_stack, _home), tempfile.TemporaryDirectory(prefix="tickpipe-ingest-") as logs:
        name = f"bench-ingest-{uuid.uuid4().hex[:8]}"
        settings = load_settings(jars_dir=REPO / ".deps" / "jars", kafka_topic=name, kafka_dlq_topic=f"{name}.dlq")
        ensure_topics(settings)
        if args.before:
            before = _sources_of(args.before, Path(logs) / "before")
            for round_ in range(args.rounds):
                was = over_websocket(
                    settings,
                    args.symbols,
                    args.seconds,
                    Path(logs),
                    sender=args.sender,
                    offered=args.offered,
                    env={"PYTHONPATH": before},
                )
                now = over_websocket(
                    settings, args.symbols, args.seconds, Path(logs), sender=args.sender, offered=args.offered
                )
                print(f"round {round_}: before {was.per_second:,.0f}/s {was.note}", flush=True)
                print(f"round {round_}: after  {now.per_second:,.0f}/s {now.note}", flush=True)
        reader = reader_cost(args.rows, args.symbols)
        raw = raw_producer(settings, args.rows, args.symbols)
        path = message_path(settings, args.rows, args.symbols)
        ws = over_websocket(settings, args.symbols, args.seconds, Path(logs), sender=args.sender, offered=args.offered)
    for row in (raw, path, ws):
        print(f"{row.name:<75} {row.per_second:>9,.0f}/s  {row.note}")
    print(f"message path: {path.per_second / raw.per_second:.0%} of the bare producer's rate")
    print(
        f"reader thread CPU per message without Kafka: websocket-client + a router call per message "
        f"{reader[0]:.1f} µs, FrameReader + a router call per read {reader[1]:.1f} µs"
    )
    return 0


__all__ = ["main", "message_path", "over_websocket", "produced_ticks", "raw_producer", "reader_cost"]


if __name__ == "__main__":
    import sys

    sys.exit(main())
