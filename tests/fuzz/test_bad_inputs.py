"""10,000 bad inputs through each real message path: every one a dead letter with its reason, no tick lost.

Ingestor: a WebSocket server sends the Binance corpus (text frames, and binary frames for what is not UTF-8, plus
some that are) to a real `tickpipe ingest` process, which produces to a real broker. MA job: the wire corpus as raw
Kafka records (invalid UTF-8, tombstones, 1 MB records, duplicates and older ticks among them) read by the job on the
real Flink cluster, writing to a real PostgreSQL. Both end with exact counts: the valid ticks once each (rows equal
to pandas' MAs for the job), and the dead letters counted by reason kind equal to the corpus' labels.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from websockets.asyncio.server import ServerConnection, serve

from tests.conftest import TestStack
from tests.fuzz.corpus import Corpus, Item, binance_corpus, wire_corpus
from tests.helpers import assert_same_rows, expected_rows, row_count, table_rows, wait_for
from tests.ma_job.test_ma_job import JobUnderTest, job
from tickpipe.config import Settings
from tickpipe.dlq import reader
from tickpipe.dlq.records import DeadLetter, count_by_kind
from tickpipe.kafka import ensure_topics, producer_config
from tickpipe.ma_job.tables import job_name
from tickpipe.schema import MAX_RAW_LENGTH

pytestmark = [pytest.mark.integration, pytest.mark.slow]

__all__ = ["job"]  # the MA job fixture, used by name


class FrameServer:
    """A WebSocket server that sends its frames, in order, to the first connection and nothing to later ones."""

    def __init__(self, frames: list[str | bytes]) -> None:
        self.frames = frames
        self.connections = 0
        self.sent = threading.Event()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Future[None] | None = None
        self._thread = threading.Thread(target=self._run, name="frame-server", daemon=True)

    async def _handle(self, connection: ServerConnection) -> None:
        self.connections += 1
        if self.connections == 1:
            for frame in self.frames:
                await connection.send(frame)
            self.sent.set()
        await connection.wait_closed()

    async def _serve(self) -> None:
        self._stop = self._loop.create_future()
        async with serve(self._handle, "127.0.0.1", 0, max_size=None, compression=None) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            self._ready.set()
            await self._stop

    def _run(self) -> None:
        self._loop.run_until_complete(self._serve())

    def __enter__(self) -> FrameServer:
        self._thread.start()
        assert self._ready.wait(10), "the frame server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set_result, None)
        self._thread.join(10)


def frames(corpus: Corpus) -> list[str | bytes]:
    """Text frames where the payload is UTF-8 (every 20th as a binary frame anyway), binary frames otherwise."""
    out: list[str | bytes] = []
    for i, item in enumerate(corpus.items):
        payload = item.payload or b""
        try:
            out.append(payload if i % 20 == 0 else payload.decode())
        except UnicodeDecodeError:
            out.append(payload)
    return out


def topic_records(settings: Settings, topic: str) -> list[tuple[bytes | None, bytes | None]]:
    """Every record of `topic` as (key, value), in partition order."""
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": "fuzz-reader", "enable.auto.commit": False}
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        out: list[tuple[bytes | None, bytes | None]] = []
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            if high == low:
                continue
            consumer.assign([TopicPartition(topic, partition, low)])
            while True:
                message = consumer.poll(10)
                assert message is not None, f"{topic}[{partition}] stopped before offset {high}"
                if message.error():
                    continue
                out.append((message.key(), message.value()))
                if (message.offset() or 0) >= high - 1:
                    break
        return out
    finally:
        consumer.close()


def topic_size(settings: Settings, topic: str) -> int:
    consumer = Consumer({"bootstrap.servers": settings.kafka_bootstrap_servers, "group.id": "fuzz-size"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        total = 0
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def assert_dead_letters(letters: list[DeadLetter], corpus: Corpus, stage: str) -> None:
    assert dict(count_by_kind(letters)) == {(stage, kind): n for kind, n in corpus.expected_kinds().items()}
    for letter in letters:
        assert "\n" not in letter.reason and len(letter.reason) <= 200, letter.reason
        assert "Exception" not in letter.reason and "Traceback" not in letter.reason, letter.reason
        assert letter.version == 2
        assert len(letter.raw or "") <= MAX_RAW_LENGTH
        assert letter.raw_truncated == (letter.raw_length > MAX_RAW_LENGTH)


@pytest.fixture
def ingestor_env(kafka: TestStack, unique_topics: dict[str, str], tmp_path: Path) -> Iterator[dict[str, str]]:
    settings = kafka.settings(**unique_topics)
    ensure_topics(settings)
    yield kafka.env(
        KAFKA_TOPIC=settings.kafka_topic,
        KAFKA_DLQ_TOPIC=settings.kafka_dlq_topic,
        METRICS_PORT="0",
        INGEST_STALE_AFTER_SECONDS="600",  # the server goes quiet after the corpus: that is not a failure here
        TICKPIPE_HOME=str(tmp_path),
    )


def test_ten_thousand_bad_messages_through_the_ingestor_are_dead_letters_and_no_tick_is_lost(
    kafka: TestStack, unique_topics: dict[str, str], ingestor_env: dict[str, str], tmp_path: Path
) -> None:
    settings = kafka.settings(**unique_topics)
    corpus = binance_corpus()
    log_path = tmp_path / "ingestor.log"
    with FrameServer(frames(corpus)) as server, log_path.open("w") as log:
        ingestor = subprocess.Popen(
            [sys.executable, "-m", "tickpipe.cli", "ingest", "--symbols", "btcusdt"],
            # A frame server, not an exchange: no REST to repair candles from.
            env={**ingestor_env, "BINANCE_WS_URL": f"ws://127.0.0.1:{server.port}", "INGEST_KLINES": "false"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            assert server.sent.wait(120), "the ingestor did not read every frame"
            total = len(corpus.ticks) + len(corpus.bad)
            wait_for(
                lambda: (
                    topic_size(settings, settings.kafka_topic) + topic_size(settings, settings.kafka_dlq_topic) >= total
                ),
                120,
                f"{total} records in the tick and dead-letter topics",
            )
            assert ingestor.poll() is None, "the ingestor exited"
            assert server.connections == 1, "the ingestor reconnected: its reader failed"
        finally:
            if ingestor.poll() is None:
                os.killpg(ingestor.pid, signal.SIGTERM)
            exit_code = ingestor.wait(60)
    output = log_path.read_text(errors="replace")
    assert exit_code == 0, output[-3000:]
    assert "Traceback" not in output

    ticks = [json.loads(value or b"") for _, value in topic_records(settings, settings.kafka_topic)]
    got = Counter((tick["symbol"], tick["timestamp"]) for tick in ticks)
    want = Counter((tick.symbol, tick.timestamp) for tick in corpus.ticks)
    assert got == want, "every valid tick once, and nothing else"
    letters = list(reader.read(settings))
    assert_dead_letters(letters, corpus, "ingestor")
    # The dead letter holds the frame as received (binary frames decoded as the ingestor reads them).
    sent = Counter(_as_received(item)[:MAX_RAW_LENGTH] for item in corpus.bad)
    assert Counter(letter.raw for letter in letters) == sent


def _as_received(item: Item) -> str:
    return (item.payload or b"").decode("utf-8", errors="replace")


def produce_corpus(settings: Settings, corpus: Corpus) -> None:
    producer = Producer(producer_config(settings, **{"message.max.bytes": 2_000_000, "linger.ms": 20}))
    for item in corpus.items:
        producer.produce(
            settings.kafka_topic,
            key=item.key.encode() if item.key else None,
            value=item.payload,
        )
        producer.poll(0)
    assert producer.flush(60) == 0, "the producer did not deliver the corpus within 60 s"


@pytest.mark.parametrize("job", ["sql", "keyed"], indirect=True)
def test_ten_thousand_bad_records_through_the_ma_job_are_dead_letters_and_every_tick_is_a_row(
    job: JobUnderTest,
) -> None:
    corpus = wire_corpus()
    produce_corpus(job.settings, corpus)
    job_id = job.submit_detached()

    job.wait_for_rows(len(corpus.ticks), f"{len(corpus.ticks)} rows in price_ticks")
    wait_for(
        lambda: topic_size(job.settings, job.settings.kafka_dlq_topic) >= len(corpus.bad),
        180,
        f"{len(corpus.bad)} dead letters",
    )
    assert row_count(job.settings) == len(corpus.ticks)
    assert_same_rows(table_rows(job.settings), expected_rows(corpus.ticks))
    letters = list(reader.read(job.settings))
    assert_dead_letters(letters, corpus, "ma-job")

    # No crash: the job ran through the corpus without a single restart.
    assert [info.job_id for info in job.rest.running(job_name(job.settings))] == [job_id]
    history = job.rest._call("GET", f"/jobs/{job_id}/exceptions")["exceptionHistory"]["entries"]
    assert history == [], history
