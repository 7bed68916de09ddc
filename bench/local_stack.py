"""A private local stack for one benchmark run (free ports, its own state folder, stopped afterwards)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from confluent_kafka import KafkaException

from tickpipe.config import Settings, load_settings
from tickpipe.kafka import admin_client, ensure_topics
from tickpipe.migrator.migrate import migrate
from tickpipe.stack.manager import LocalStack
from tickpipe.stack.sizing import EngineSizes

REPO = Path(__file__).resolve().parent.parent


@contextmanager
def bench_stack(components: tuple[str, ...] = ("kafka", "postgres", "flink")) -> Iterator[tuple[LocalStack, Path]]:
    home = Path(tempfile.mkdtemp(prefix="tickpipe-bench-"))
    home.chmod(0o755)  # PostgreSQL's unprivileged user must be able to enter it
    os.environ["TICKPIPE_HOME"] = str(home)
    # The sizes the benchmark's figures were measured with, whatever STACK_MEMORY says (tickpipe.stack.sizing).
    stack = LocalStack(home, REPO / ".deps" / "jars", sizes=EngineSizes.named("large"))
    # `kill` or a closed terminal stops a benchmark like Ctrl-C: through the `finally` below, not leaving its engines
    # running (a background job's SIGINT is ignored, so SIGTERM is how such a run is stopped).
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        os.environ.update(stack.up(components, timeout=180))
        yield stack, home
    finally:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)  # a second signal must not cut the stop short
        stack.down()
        shutil.rmtree(home, ignore_errors=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"stopped by signal {signal.Signals(signum).name}")


def fresh_settings(**overrides: object) -> Settings:
    """Settings pointing at a new, migrated database and new topics on the running bench stack."""
    base = load_settings(jars_dir=REPO / ".deps" / "jars", migrations_dir=REPO / "storage" / "migrations")
    name = f"bench_{uuid.uuid4().hex[:8]}"
    # Through the maintenance database: the environment may name a previous step's, dropped since (discard).
    with psycopg.connect(base.conninfo("owner"), dbname="postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    settings = load_settings(
        jars_dir=base.jars_dir,
        migrations_dir=base.migrations_dir,
        database_url=base.database_url.rsplit("/", 1)[0] + f"/{name}",
        kafka_topic=f"bench-ticks-{name}",
        kafka_dlq_topic=f"bench-ticks-{name}.dlq",
        **overrides,
    )
    migrate(settings)
    ensure_topics(settings)
    return settings


def discard(settings: Settings) -> None:
    """Drop what fresh_settings made (its database, its topics) once a step is measured: the next step must not
    share the machine with a dead step's millions of rows (autovacuum and checkpoints of them ran during the next
    step's window) nor its disk."""
    with psycopg.connect(settings.conninfo("owner"), dbname="postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{settings.database.dbname}" WITH (FORCE)')
    named = (settings.kafka_topic, settings.kafka_dlq_topic, settings.kafka_candles_topic, settings.kafka_signals_topic)
    topics = [topic for topic in named if topic.startswith("bench-")]  # a default name is not the step's own
    admin = admin_client(settings)  # held until the results: a client collected first fails them (_DESTROY)
    for future in admin.delete_topics(topics, operation_timeout=30).values():
        with contextlib.suppress(KafkaException):  # a topic this step never made
            future.result(timeout=60)
