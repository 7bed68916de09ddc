"""The benchmarks' plain-Python alternative to the MA job computes the same rows: held to the job's own test."""

from __future__ import annotations

import uuid

import pytest

from bench import python_pipeline
from tests.conftest import TestStack
from tests.helpers import assert_same_rows, consume, expected_rows, produce, random_walk, table_rows
from tests.ma_job.test_ma_job import keyed
from tickpipe.config import Settings
from tickpipe.kafka import ensure_topics
from tickpipe.migrator.migrate import migrate
from tickpipe.schema import Tick

pytestmark = pytest.mark.integration


def test_the_python_alternative_writes_the_job_s_rows_and_dead_letters(
    kafka: TestStack, fresh_database: Settings, unique_topics: dict[str, str]
) -> None:
    settings = kafka.settings(database_url=fresh_database.database_url, **unique_topics)
    ensure_topics(settings)
    migrate(settings)
    ticks = random_walk(["BTCUSDT", "ETHUSDT", "SOLUSDT"], 45)
    ticks += [Tick("DOGEUSDT", 1_700_000_000_000 + i, p, 1.0) for i, p in enumerate([1e6] * 20 + [1e-8] * 5)]
    bad = [("X", b"this is not json"), ("BTCUSDT", ticks[57].to_json()), ("BTCUSDT", ticks[0].to_json())]
    produce(settings, keyed(ticks[:60]) + bad + keyed(ticks[60:]))

    written = python_pipeline.run(settings, group=f"test-{uuid.uuid4().hex[:8]}", until=lambda n: n >= len(ticks))

    assert written == len(ticks)
    assert_same_rows(table_rows(settings), expected_rows(ticks))
    reasons = sorted(r["reason"].split(":")[0] for r in consume(settings, settings.kafka_dlq_topic, len(bad)))
    assert reasons == ["duplicate tick", "not JSON", "out-of-order tick"]
