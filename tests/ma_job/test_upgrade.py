"""Upgrading the MA job: a savepoint of the previous commit's job, this commit's job started from it.

The previous job is BASE_COMMIT's code (git archive of its tree, run with its own launcher), the sql engine before
06121ca made the source part of the key: a real SQL change and a schema migration between the two, as a
`helm upgrade` meets them. Whichever way this commit's launcher starts (the savepoint restored, or the plan could
not restore it and it re-seeds from the savepoint's offsets), every tick must be in price_ticks once with the
moving averages of the full series, and every dead letter once. Then this commit's job with a deliberately
changed plan (another window key: state Flink cannot restore) is started from the new savepoint, so that the
path a future SQL change takes is tested whatever this commit's plan restores: the launcher says so in one line
and re-seeds. A clone without BASE_COMMIT (shallow) starts from this commit's own job instead.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tarfile
import time
import uuid
import warnings
from dataclasses import replace
from pathlib import Path

import pytest
from confluent_kafka import Producer

from tests.conftest import REPO, TestStack
from tests.helpers import assert_same_rows, expected_rows, random_walk, table_rows, topic_messages, wait_for
from tests.ma_job.test_ma_job import JobUnderTest, job_under_test
from tickpipe.config import Settings
from tickpipe.kafka import producer_config
from tickpipe.ma_job.cli import ResumePoint
from tickpipe.ma_job.reseed import plan
from tickpipe.migrator.migrate import migrate
from tickpipe.schema import Tick

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BASE_COMMIT = "a1b33e1"  # the commit before 06121ca (series keys in the sql engine, source in price_ticks' key)
# Per series: before the savepoint, after the upgrade, after the re-seeded start of a changed plan.
PHASES = (30, 8, 8)
TICK_SPACING_MS = 60_000  # a minute apart, so the re-seed's rewind by time starts inside the topic


def previous_tree(target: Path) -> Path | None:
    """BASE_COMMIT's job, launcher and migrations, from this clone's history (None in a clone without it)."""
    present = subprocess.run(
        ["git", "-C", str(REPO), "cat-file", "-e", f"{BASE_COMMIT}^{{commit}}"], capture_output=True, check=False
    )
    if present.returncode != 0:
        warnings.warn(f"{BASE_COMMIT} is not in this clone (shallow?): upgrading from this commit's job", stacklevel=1)
        return None
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", BASE_COMMIT, "src", "services/ma-job/tickpipe", "storage/migrations"],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target


def ticks_of_phase(phase: int) -> list[Tick]:
    """The phase's ticks of both series: one walk over all phases, a minute apart, ending near now."""
    total = sum(PHASES)
    start_ms = int(time.time() * 1000) - (total + 10) * TICK_SPACING_MS
    walk = random_walk(["BTCUSDT", "ETHUSDT"], total, start_ms=0, seed=23)
    spaced = [replace(t, event_time_ms=start_ms + t.event_time_ms // 1000 * TICK_SPACING_MS) for t in walk]
    first = sum(PHASES[:phase]) * 2
    return spaced[first : first + PHASES[phase] * 2]


def produce_at_event_time(settings: Settings, ticks: list[Tick], bad: list[tuple[str, bytes]]) -> None:
    """Records stamped with their tick's event time, as a producer right at the exchange would stamp them (the
    re-seed finds its rewind by record time), the bad ones in the middle."""
    producer = Producer(producer_config(settings))
    half = len(ticks) // 2
    for tick in ticks[:half]:
        producer.produce(settings.kafka_topic, key=tick.key, value=tick.to_json(), timestamp=tick.event_time_ms)
    for key, raw in bad:
        producer.produce(settings.kafka_topic, key=key, value=raw, timestamp=ticks[half].event_time_ms)
    for tick in ticks[half:]:
        producer.produce(settings.kafka_topic, key=tick.key, value=tick.to_json(), timestamp=tick.event_time_ms)
    assert producer.flush(30) == 0, "producer did not deliver everything within 30 s"


def launcher(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "tickpipe.cli", "ma-job", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    return output


def assert_everything_once(job: JobUnderTest, ticks: list[Tick], dead_letters: int) -> None:
    job.wait_for_rows(len(ticks), f"{len(ticks)} rows in price_ticks", timeout=240)
    # Every tick once, MA(5)/MA(20) of the full series (NULL only where fewer ticks came before).
    assert_same_rows(table_rows(job.settings), expected_rows(ticks))
    dlq = job.settings.kafka_dlq_topic
    wait_for(lambda: len(topic_messages(job.settings, dlq)) >= dead_letters, 60, f"{dead_letters} dead letters")
    # Dead letters are flushed with the checkpoints that also commit the offsets: one more checkpoint, and a
    # dead letter written twice would be there.
    running = job.rest.running(job_name_of(job))
    if running:
        done = job.rest.completed_checkpoints(running[0].job_id)
        wait_for(lambda: job.rest.completed_checkpoints(running[0].job_id) > done, 60, "one more checkpoint")
    assert len(topic_messages(job.settings, dlq)) == dead_letters


def job_name_of(job: JobUnderTest) -> str:
    from tickpipe.ma_job.tables import job_name

    return job_name(job.settings)


def job_on_private_topics(flink: TestStack, fresh_database: Settings, unique_topics: dict[str, str]) -> JobUnderTest:
    """The sql engine's job on the test's topics and database (not migrated: the test chooses the schema)."""
    return job_under_test(
        flink,
        migrated=False,
        database_url=fresh_database.database_url,
        kafka_group_id=f"test-upgrade-{uuid.uuid4().hex[:8]}",
        **unique_topics,
    )


def changed_plan_tree(target: Path) -> Path:
    """This commit's job with a deliberate SQL change whose savepoint the current plan cannot restore: the moving
    averages' window keyed by (series, source) instead of series (the same rows; another key type in the state)."""
    shutil.copytree(REPO / "services" / "ma-job" / "tickpipe", target / "tickpipe")
    engine = target / "tickpipe" / "ma_job" / "sql_engine.py"
    text = engine.read_text()
    edits = {"OVER (PARTITION BY series ORDER BY proc)": "OVER (PARTITION BY series, source ORDER BY proc)"}
    for old, new in edits.items():
        assert text.count(old) == 1, f"the sql engine changed: update this test's deliberate edit of {old!r}"
        text = text.replace(old, new)
    engine.write_text(text)
    return target


def test_a_savepoint_of_the_previous_commit_continues_in_this_one_and_one_it_cannot_restore_is_re_seeded(
    flink: TestStack, fresh_database: Settings, unique_topics: dict[str, str], tmp_path: Path
) -> None:
    previous = previous_tree(tmp_path / "previous")
    job = job_on_private_topics(flink, fresh_database, unique_topics)
    settings, env = job.settings, job.env
    if previous:  # the previous code shadows this commit's modules (tickpipe is a namespace package)
        previous_env = {**env, "PYTHONPATH": f"{previous / 'src'}:{previous / 'services' / 'ma-job'}"}
        migrate(settings.model_copy(update={"migrations_dir": previous / "storage" / "migrations"}))
    else:  # a clone without the base commit: this commit's job is the one before the changed plan below
        previous_env = env
        migrate(settings)
    changed_env = {**env, "PYTHONPATH": str(changed_plan_tree(tmp_path / "changed"))}
    ticks = ticks_of_phase(0)
    produce_at_event_time(settings, ticks, [("X", b"not json"), (ticks[3].key, ticks[3].to_json())])  # bad, repeated
    try:
        launcher(previous_env, "--detached")
        job.wait_for_rows(len(ticks), "the previous job's rows", timeout=240)
        stopped = launcher(previous_env, "--stop")
        assert "savepoint" in stopped, stopped

        # The upgrade: this commit's schema, then this commit's launcher as `make run` starts it.
        migrate(settings)
        phase = ticks_of_phase(1)
        produce_at_event_time(settings, phase, [("X", b"{}")])
        ticks += phase
        upgraded = launcher(env, "--resume-if-possible", "--detached")
        assert "job_submitted" in upgraded, upgraded  # restored, or (a plan that cannot) re-seeded: both count
        assert_everything_once(job, ticks, dead_letters=3)

        # A plan that cannot restore this savepoint: said in one line, then a start without state from the
        # savepoint's offsets that reads back only what the windows need.
        launcher(env, "--stop")
        saved = ResumePoint(settings.kafka_group_id).load()
        assert saved is not None
        reseed = plan(settings, saved)
        assert 0 < reseed.seed_records < len(ticks), reseed
        phase = ticks_of_phase(2)
        produce_at_event_time(settings, phase, [("X", b"[]")])
        ticks += phase
        started = launcher(changed_env, "--resume-if-possible", "--detached")
        said = [line for line in started.splitlines() if "savepoint_not_restorable" in line]
        assert len(said) == 1, started[-3000:]
        assert "StateMigrationException" in said[0], said[0]  # Flink's reason, in the one line
        assert_everything_once(job, ticks, dead_letters=4)
    finally:
        job.cancel_all()
