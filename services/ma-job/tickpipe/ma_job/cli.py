"""`tickpipe ma-job`: submit the MA job to a Flink session cluster, watch it, stop it with a savepoint.
`tickpipe ma-job --candles` does the same for the candle job (candle_job.py), a job of its own.

Attached (the default, what `make run` uses): the command lives as long as the job; SIGINT/SIGTERM stops the job
with a savepoint, and `--resume-if-possible` on the next start continues from it, or from the newest retained
checkpoint if the launcher itself was killed. In a cluster the Flink Kubernetes Operator does all of this.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

from tickpipe.config import MaEngine, Settings, state_dir
from tickpipe.errors import CommandError, FlinkRestError
from tickpipe.logs import get_logger
from tickpipe.ma_job.candle_tables import CANDLE_STAGE, candle_job_name
from tickpipe.ma_job.flink_rest import TERMINAL_STATES, FlinkRest
from tickpipe.ma_job.tables import job_name

log = get_logger("tickpipe.ma_job")
POLL_SECONDS = 2.0
START_TIMEOUT_SECONDS = 60.0  # a job stopped right after its submission: how long its tasks may take to run


def add_arguments(parser: argparse.ArgumentParser) -> None:
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--resume", metavar="PATH", help="start from this savepoint or retained checkpoint")
    start.add_argument(
        "--resume-if-possible",
        action="store_true",
        help="start from the last savepoint/checkpoint of this consumer group, if there is one; if the job's plan "
        "cannot restore it (a changed SQL plan), start as --reseed does",
    )
    start.add_argument(
        "--reseed",
        metavar="PATH",
        nargs="?",
        const="",
        help="sql engine: start without state after the job that took this savepoint or retained checkpoint (default: "
        "the last one recorded), from its Kafka offsets, the windows re-filled by re-reading the ticks before them "
        "(nothing before those offsets is written again); for a savepoint the new plan cannot restore",
    )
    parser.add_argument(
        "--engine",
        choices=[engine.value for engine in MaEngine],
        help="sql (the fast one, JVM windows) or keyed (Python KeyedProcessFunction); default: MA_ENGINE or sql",
    )
    parser.add_argument(
        "--candles",
        action="store_true",
        help="the candle job instead (candles → candles_1m with RSI/Bollinger/EMA/MACD, signals); its own consumer "
        "group CANDLE_GROUP_ID and resume point",
    )
    parser.add_argument("--detached", action="store_true", help="submit, print the job id and return")
    parser.add_argument("--stop", action="store_true", help="stop the running job with a savepoint and exit")
    parser.add_argument(
        "--discard-sink", action="store_true", help="benchmarks: compute everything, write nothing to the database"
    )


class ResumePoint:
    """Where the job of one consumer group can continue from: `$TICKPIPE_HOME/<job>/<group>.json` (job: ma-job or
    candle-job)."""

    def __init__(self, group_id: str, job: str = "ma-job") -> None:
        self.path = state_dir() / job / f"{group_id}.json"

    def engine(self) -> str | None:
        try:
            return str(json.loads(self.path.read_text()).get("engine")) or None
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def load(self) -> str | None:
        """The recorded savepoint/checkpoint, or the newest checkpoint of the same job if Flink has since
        replaced it (it retains only the latest); None when there is nothing to resume from."""
        try:
            location = json.loads(self.path.read_text()).get("location")
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        if not location:
            return None
        recorded = Path(urlsplit(location).path)
        if (recorded / "_metadata").exists():
            return str(location)
        newer = [chk for chk in recorded.parent.glob("chk-*") if (chk / "_metadata").exists()]
        return str(max(newer, key=lambda chk: int(chk.name.removeprefix("chk-")))) if newer else None

    def save(self, location: str, job_id: str, engine: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps({"location": location, "job_id": job_id, "engine": engine}))


def run(args: argparse.Namespace, settings: Settings) -> int:
    candles = bool(getattr(args, "candles", False))
    if candles and args.engine:
        raise CommandError("--engine chooses the MA job's engine; the candle job (--candles) has one")
    if args.engine:
        settings = settings.model_copy(update={"ma_engine": MaEngine(args.engine)})
    # The candle job records "candles" where the MA job records its engine: its state is only its own.
    engine = "candles" if candles else settings.ma_engine.value
    rest = FlinkRest(settings.flink_rest_url)
    name = candle_job_name(settings) if candles else job_name(settings)
    resume_point = (
        ResumePoint(settings.candle_group_id, CANDLE_STAGE) if candles else ResumePoint(settings.kafka_group_id)
    )
    stop_command = "tickpipe ma-job --candles --stop" if candles else "tickpipe ma-job --stop"
    running = rest.running(name)
    if args.stop:
        for job in running:
            location = rest.stop_with_savepoint(job.job_id, None)
            resume_point.save(location, job.job_id, resume_point.engine() or engine)
            print(f"stopped job {job.job_id}; savepoint {location}")
        return 0
    if running and args.resume_if_possible:
        # A launcher that was killed left its job running: take it over through a savepoint.
        location = rest.stop_with_savepoint(running[0].job_id, None)
        resume_point.save(location, running[0].job_id, resume_point.engine() or engine)
        log.info("job_taken_over", job_id=running[0].job_id, savepoint=location)
    elif running:
        raise CommandError(f"job {name} is already running as {running[0].job_id}; stop it first: {stop_command}")
    resume = args.resume or (resume_point.load() if args.resume_if_possible else None)
    reseed = _reseed_from(getattr(args, "reseed", None), engine, resume_point)
    if resume and not args.resume and resume_point.engine() not in (None, engine):
        raise CommandError(
            f"the last run of this job used the {resume_point.engine()} engine; its state cannot be restored by "
            f"the {engine} engine: start with --engine {resume_point.engine()}, or delete {resume_point.path} "
            "to start over from the committed Kafka offsets"
        )
    # A stop asked for while the job is being submitted (Ctrl-C, `tickpipe run` stopping) is kept until the job
    # exists, then the job is stopped as watch() stops it: never left running behind a launcher that is gone.
    stop = threading.Event() if args.detached else stop_requests()
    refused: str | None = None  # Flink refused the savepoint in the submission: no job exists
    try:
        job_id = submit(settings, resume=resume, reseed=reseed, discard_sink=args.discard_sink, candles=candles)
    except RestoreRefused as error:
        if engine != MaEngine.SQL.value:
            raise
        refused = str(error)
    if resume and engine == MaEngine.SQL.value:
        failure = refused or restore_failure(rest, job_id, stop=stop)
        if failure:
            failed_job = None if refused else job_id
            job_id, reseed = (
                _reseed_instead(rest, failed_job, settings=settings, args=args, resume=resume, failure=failure),
                resume,
            )
            resume = None
    log.info(
        "job_submitted",
        job=name,
        engine=engine,
        job_id=job_id,
        resumed_from=resume,
        reseeded_after=reseed,
        rest=settings.flink_rest_url,
    )
    print(f"SUBMITTED {job_id}", flush=True)
    if args.detached:
        return 0
    return watch(rest, job_id, resume_point, engine, stop)


def stop_requests() -> threading.Event:
    """An event set by SIGINT or SIGTERM from now on (the launcher's stop request)."""
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, request_stop)
    return stop


def _reseed_from(reseed: str | None, engine: str, resume_point: ResumePoint) -> str | None:
    """The savepoint or checkpoint a `--reseed [PATH]` start continues after (PATH, or the recorded one)."""
    if reseed is None:
        return None
    if engine != MaEngine.SQL.value:
        raise CommandError("--reseed starts the MA job's sql engine without state; the other jobs have fixed uids")
    found = reseed or resume_point.load()
    if not found:
        raise CommandError(
            f"--reseed needs the savepoint or checkpoint of the job before ({resume_point.path} records none): "
            "give its path, --reseed PATH"
        )
    return found


def _reseed_instead(
    rest: FlinkRest, job_id: str | None, *, settings: Settings, args: argparse.Namespace, resume: str, failure: str
) -> str:
    """The job could not restore `resume` (a plan changed by a SQL edit): start it without state after it. `job_id`
    is the job that failed to restore, None when the submission itself was refused."""
    if job_id is not None and rest.state(job_id) not in TERMINAL_STATES:
        rest.cancel(job_id)
    if args.resume:  # a savepoint asked for by name: say so, do not start something else
        raise CommandError(
            f"the job's plan cannot restore {resume} ({failure}); start with --reseed {resume} to continue from "
            "its Kafka offsets with re-filled windows"
        )
    log.warning(
        "savepoint_not_restorable",
        savepoint=resume,
        reason=failure,
        action="starting without state from the savepoint's Kafka offsets, windows re-filled from the ticks "
        "before them (--reseed)",
    )
    return submit(settings, reseed=resume, discard_sink=args.discard_sink)


def submit(
    settings: Settings,
    *,
    resume: str | None = None,
    reseed: str | None = None,
    discard_sink: bool = False,
    candles: bool = False,
) -> str:
    """Submit the job to the session cluster at FLINK_REST_URL with Flink's own client; return the job id.

    `flink run -pym` runs `tickpipe.ma_job.job` (or `tickpipe.ma_job.candle_job`) in a Python client that builds
    the job graph and uploads it with the connector jars: the same entry point the Flink Kubernetes Operator runs
    in a cluster.
    """
    job_args = (
        ["tickpipe.ma_job.candle_job"]
        if candles
        else [
            "tickpipe.ma_job.job",
            "--engine",
            settings.ma_engine.value,
            *(["--discard-sink"] if discard_sink else []),
            *(["--reseed", reseed] if reseed else []),
        ]
    )
    from tickpipe.stack.components import flink_home, java  # the Flink distribution inside PyFlink
    from tickpipe.stack.process import die_with_parent

    rest = urlsplit(settings.flink_rest_url)
    command = [
        "bash",
        str(flink_home() / "bin" / "flink"),
        "run",
        "--detached",
        "--jobmanager",
        f"{rest.hostname or 'localhost'}:{rest.port or 8081}",
        "--pyClientExecutable",
        sys.executable,
        *(["--fromSavepoint", resume] if resume else []),
        "--pyModule",
        *job_args,
    ]
    # The client runs with the distribution's own configuration (its Java 17 flags); the cluster's address comes
    # from --jobmanager and the job's settings from job.py, never from a local stack's config.yaml.
    env = {key: value for key, value in os.environ.items() if key != "FLINK_CONF_DIR"}
    env.update(settings.as_env())  # the job is built from exactly these settings
    env["FLINK_HOME"] = str(flink_home())
    env.setdefault("JAVA_HOME", str(Path(java()).resolve().parent.parent))
    # The client runs in a session of its own, so a Ctrl-C meant for the launcher does not kill it halfway through
    # a submission (the launcher stops the job once it exists), and it dies with the launcher if that is killed.
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
        start_new_session=True,
        preexec_fn=die_with_parent(signal.SIGKILL),
    )
    found = re.search(r"JobID ([0-9a-f]{32})", result.stdout)
    if result.returncode != 0 or not found:
        output = (result.stdout + result.stderr).strip().splitlines()
        refused = restore_failure_line(output)
        if resume and refused:
            # A savepoint holding an operator the plan no longer has fails the job at its start, in the submission.
            raise RestoreRefused(refused[:500])
        # The job's own failure (a planner or connector exception), not the client's wrappers around it.
        reasons = [
            line.strip(": \t")
            for line in output
            if "Exception: " in line and "ProgramAbortException" not in line and "Python process exits" not in line
        ]
        raise CommandError(
            f"submitting the job to Flink at {settings.flink_rest_url} failed (exit {result.returncode}): "
            + (reasons[0] if reasons else " | ".join(output[-5:]))
        )
    return found.group(1)


class RestoreRefused(CommandError):
    """Flink refused the savepoint a job was submitted from: the reason, Flink's line."""


# What Flink says when a savepoint's state does not fit the job: an operator it cannot find (a changed plan), or
# state of an operator it finds that its serializers cannot read.
RESTORE_FAILURES = (
    "Failed to rollback to checkpoint/savepoint",
    "Cannot map checkpoint/savepoint state",
    "StateMigrationException",
    "Failed to restore",
    "is incompatible",
)
RESTORE_TIMEOUT_SECONDS = 180.0


def restore_failure_line(lines: list[str]) -> str:
    """The first of Flink's `lines` that says a savepoint's state does not fit the job, stripped; "" if none."""
    return next((line.strip() for line in lines if any(m in line for m in RESTORE_FAILURES)), "")


def restore_failure(
    rest: FlinkRest, job_id: str, timeout: float = RESTORE_TIMEOUT_SECONDS, stop: threading.Event | None = None
) -> str | None:
    """Why the job could not restore its savepoint, or None once every task runs (state is restored before a task
    runs), the job ended for another reason (watch() reports that), or a stop was asked for."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not (stop is not None and stop.is_set()):
        try:
            cause = rest.root_exception(job_id)
            reason = restore_failure_line(cause.splitlines())
            if reason:
                return reason[:500]
            if _running_or_ended(rest, job_id):
                return None
        except FlinkRestError as error:
            log.warning("flink_unreachable", job_id=job_id, error=str(error))
        time.sleep(POLL_SECONDS)  # polling an external system, not synchronising our own threads
    return None


def _running_or_ended(rest: FlinkRest, job_id: str) -> bool:
    """Every task of the job runs (so its state is restored and a savepoint can be taken), or the job has ended."""
    states = rest.vertex_states(job_id)
    return (bool(states) and all(s == "RUNNING" for s in states)) or rest.state(job_id) in TERMINAL_STATES


def watch(rest: FlinkRest, job_id: str, resume_point: ResumePoint, engine: str, stop: threading.Event) -> int:
    """Follow the job until it ends or we are told to stop (then stop it with a savepoint)."""
    last_state, last_checkpoint = "", None
    while not stop.wait(POLL_SECONDS):
        try:
            state = rest.state(job_id)
            checkpoint = rest.latest_checkpoint(job_id)
        except FlinkRestError as error:
            log.warning("flink_unreachable", job_id=job_id, error=str(error))
            continue
        if state != last_state:
            log.info("job_state", job_id=job_id, state=state)
            last_state = state
        if checkpoint and checkpoint != last_checkpoint:
            resume_point.save(checkpoint, job_id, engine)
            last_checkpoint = checkpoint
        if state in TERMINAL_STATES:
            log.error("job_ended", job_id=job_id, state=state, hint="see the Flink logs under $TICKPIPE_HOME/flink/log")
            return 1
    log.info("job_stopping", job_id=job_id, how="stop-with-savepoint")
    # A savepoint needs every task running: a job stopped right after its submission may still be deploying.
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        with contextlib.suppress(FlinkRestError):
            if _running_or_ended(rest, job_id):
                break
        time.sleep(0.5)  # polling an external system, not synchronising our own threads
    try:
        location = rest.stop_with_savepoint(job_id, None)
    except FlinkRestError as error:
        # The job keeps its retained checkpoints: cancel it, the next start resumes from the newest of them.
        log.warning("savepoint_failed", job_id=job_id, error=str(error))
        rest.cancel(job_id)
        return 1
    resume_point.save(location, job_id, engine)
    log.info("job_stopped", job_id=job_id, savepoint=location)
    return 0
