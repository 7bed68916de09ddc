"""The MA job: Kafka `price-ticks` → MA(5)/MA(20) per symbol → upsert into `price_ticks`, bad input → DLQ.

Two engines, one definition, chosen by MA_ENGINE (`--engine`): `sql` (sql_engine.py, the window maths in the
JVM) and `keyed`, the readable reference below:

    kafka source ─ parse (tickpipe.schema) ─┬─ keyBy(series) ─ moving averages ─┬─ price_ticks (upsert)
                                            └─ not a tick ─────────┐           └─ stale tick ─┐
                                                                   └──────── dead letters (Kafka DLQ) ──┘

A series is one symbol of one source (tickpipe.schema.series_key). Exactly-once where it matters: offsets and
per-series windows are checkpointed together, and the sink writes idempotent upserts on (source, symbol, time) and
flushes on every checkpoint, so a restart replays into the same rows.
`main()` is the entry point Flink runs (`-pym tickpipe.ma_job.job`, the FlinkDeployment's PythonDriver);
`tickpipe ma-job` submits it to a running session cluster.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pyflink.common import Configuration, Row, Types
from pyflink.datastream import (
    KeyedProcessFunction,
    OutputTag,
    ProcessFunction,
    RuntimeContext,
    StreamExecutionEnvironment,
)
from pyflink.datastream.state import ValueStateDescriptor
from pyflink.table import StreamTableEnvironment
from pyflink.table.table_result import TableResult

from tickpipe.config import MaEngine, Settings, load_settings
from tickpipe.logs import get_logger
from tickpipe.ma_job import sql_engine
from tickpipe.ma_job.indicators import SymbolWindow, stale_reason
from tickpipe.ma_job.reseed import ReseedPlan
from tickpipe.ma_job.reseed import plan as reseed_plan
from tickpipe.ma_job.tables import STAGE, discard_sink_ddl, dlq_ddl, job_name, sink_ddl, source_ddl
from tickpipe.schema import InvalidTick, Tick, dead_letter, parse_tick

log = get_logger("tickpipe.ma_job")

DEAD_LETTERS = OutputTag("dead-letters", Types.STRING())
TICK = Types.ROW_NAMED(
    ["series", "symbol", "event_time_ms", "price", "volume", "source"],
    [Types.STRING(), Types.STRING(), Types.LONG(), Types.DOUBLE(), Types.DOUBLE(), Types.STRING()],
)
ROW = Types.ROW_NAMED(
    ["event_time_ms", "source", "symbol", "price", "volume", "ma_short", "ma_long"],
    [Types.LONG(), Types.STRING(), Types.STRING(), Types.DOUBLE(), Types.DOUBLE(), Types.DOUBLE(), Types.DOUBLE()],
)


class ParseTicks(ProcessFunction):  # type: ignore[misc]
    """Wire JSON → tick row; anything else → dead-letter record with the reason (never dropped silently)."""

    def open(self, runtime_context: RuntimeContext) -> None:
        self.rejected = runtime_context.get_metrics_group().counter("ticks_rejected")

    def process_element(self, value: str | None, ctx: ProcessFunction.Context) -> Any:
        try:
            tick = parse_tick(value)
        except InvalidTick as error:
            self.rejected.inc()
            yield DEAD_LETTERS, dead_letter(value, str(error), STAGE).decode()
            return
        yield Row(tick.key, tick.symbol, tick.event_time_ms, tick.price, tick.volume, tick.source)


class MovingAverages(KeyedProcessFunction):  # type: ignore[misc]
    """Per series: append the tick to its window and emit the row with MA(5) and MA(20)."""

    def open(self, runtime_context: RuntimeContext) -> None:
        self.window = runtime_context.get_state(ValueStateDescriptor("window", Types.PICKLED_BYTE_ARRAY()))
        self.stale = runtime_context.get_metrics_group().counter("ticks_stale")

    def process_element(self, value: Row, ctx: KeyedProcessFunction.Context) -> Any:
        _, symbol, event_time_ms, price, volume, source = value
        window = SymbolWindow.from_state(self.window.value())
        if not window.accepts(event_time_ms):
            self.stale.inc()
            raw = Tick(symbol, event_time_ms, price, volume, source).to_json()
            yield DEAD_LETTERS, dead_letter(raw, stale_reason(event_time_ms, window.last_event_time_ms), STAGE).decode()
            return
        averages = window.add(event_time_ms, price)
        self.window.update(window.to_state())
        yield Row(event_time_ms, source, symbol, price, volume, averages.ma_short, averages.ma_long)


# Under JARS_DIR, as `make setup` lays them out: the Kafka connector and the PostgreSQL driver (Maven Central; Flink's
# JDBC connector too, which the jobs of earlier commits wrote with), and the job's own Java functions and PostgreSQL
# sink (built from services/ma-job/udf).
JAR_SETS = ("flink-connectors", "ma-job-udf")


def connector_jars(jars_dir: Path) -> list[str]:
    """The jars the job ships with it (pipeline.jars). In the ma-job image JARS_DIR is /opt/flink/usrlib, which an
    application cluster also has on its classpath; a session cluster (compose) gets them from here."""
    return sorted(path.resolve().as_uri() for name in JAR_SETS for path in (jars_dir / name).glob("*.jar"))


def job_configuration(settings: Settings, **extra: str) -> Configuration:
    config = Configuration()
    options = {
        "pipeline.name": job_name(settings),
        "parallelism.default": str(settings.job_parallelism),
        "execution.checkpointing.interval": f"{int(settings.checkpoint_interval_seconds * 1000)} ms",
        "execution.checkpointing.mode": "EXACTLY_ONCE",
        "execution.checkpointing.externalized-checkpoint-retention": "RETAIN_ON_CANCELLATION",
        # A broker or database outage makes the job restart, with growing pauses, for as long as it lasts.
        "restart-strategy.type": "exponential-delay",
        "restart-strategy.exponential-delay.initial-backoff": "1 s",
        "restart-strategy.exponential-delay.max-backoff": "30 s",
        "table.local-time-zone": "UTC",
        "execution.buffer-timeout.interval": f"{settings.flink_buffer_timeout_ms} ms",
        # Chained JVM operators hand records over without a defensive copy (~25 % faster on the sql engine);
        # none of ours keeps a reference to a record after emitting it.
        "pipeline.object-reuse": "true",
        # The TaskManagers' Python workers run the interpreter that built the job: the one with tickpipe in it.
        "python.executable": sys.executable,
        # Small bundles: a tick leaves the Python worker within 50 ms even when only a few symbols trade.
        "python.fn-execution.bundle.time": "50",
        "python.fn-execution.bundle.size": "1000",
    }
    jars = connector_jars(settings.jars_dir)
    if jars:
        options["pipeline.jars"] = ";".join(jars)
    options.update(extra)
    for key, value in options.items():
        config.set_string(key, value)
    return config


def build(
    env: StreamExecutionEnvironment, settings: Settings, *, discard_sink: bool = False, reseed: ReseedPlan | None = None
) -> Any:
    """Add the job's operators to `env`; return the statement set that writes both sinks. With `reseed` (sql engine
    only), a start without state: reading from its start offsets, writing from its first written offsets."""
    t_env = StreamTableEnvironment.create(env)
    t_env.execute_sql(source_ddl(settings, reseed.startup_offsets() if reseed else None))
    t_env.execute_sql(discard_sink_ddl() if discard_sink else sink_ddl(settings))
    t_env.execute_sql(dlq_ddl(settings))
    statements = t_env.create_statement_set()
    if settings.ma_engine is MaEngine.SQL:
        sql_engine.build(t_env, statements, reseed.first_written_map() if reseed else "")
    else:
        _build_keyed(env, t_env, statements)
    return statements


def _build_keyed(env: StreamExecutionEnvironment, t_env: StreamTableEnvironment, statements: Any) -> None:
    # The SQL Kafka source rather than PyFlink's KafkaSource wrapper: that one expects the shaded uber-jar, which
    # Maven Central does not carry for Flink 1.20.
    raw = t_env.to_data_stream(t_env.sql_query("SELECT `raw` FROM ticks_raw")).map(
        lambda row: row[0], output_type=Types.STRING()
    )
    ticks = raw.process(ParseTicks(), output_type=TICK).name("parse ticks").uid("parse-ticks")
    rows = (
        ticks.key_by(lambda tick: tick[0], key_type=Types.STRING())
        .process(MovingAverages(), output_type=ROW)
        .name("moving averages")
        .uid("moving-averages")
    )
    dead = ticks.get_side_output(DEAD_LETTERS).union(rows.get_side_output(DEAD_LETTERS))
    t_env.create_temporary_view("moving_averages", t_env.from_data_stream(rows))
    t_env.create_temporary_view("rejected", t_env.from_data_stream(dead))
    statements.add_insert_sql(
        "INSERT INTO price_ticks SELECT CAST(TO_TIMESTAMP_LTZ(event_time_ms, 3) AS TIMESTAMP(3)), source, symbol, "
        "price, volume, ma_short, ma_long FROM moving_averages"
    )
    statements.add_insert_sql("INSERT INTO dead_letters SELECT f0 FROM rejected")


def execute(settings: Settings, *, discard_sink: bool = False, reseed: str | None = None, **config: str) -> TableResult:
    env = StreamExecutionEnvironment.get_execution_environment(job_configuration(settings, **config))
    plan = None
    if reseed:
        restoring = _savepoint_path(env)
        if restoring:
            # Restored state already holds the windows and the offsets; the committed offsets may be newer than a
            # rolled-back savepoint's, and skipping writes up to them would lose rows.
            log.warning("reseed_ignored", reason="the job restores state", savepoint=restoring)
        elif settings.ma_engine is not MaEngine.SQL:
            raise ValueError("--reseed is for the sql engine; the keyed engine's operators have fixed uids")
        else:
            plan = reseed_plan(settings, reseed)
            log.info(
                "reseed_plan",
                start=plan.startup_offsets(),
                first_written=plan.first_written_map(),
                seed_records=plan.seed_records,
                oldest_needed=plan.oldest_needed.isoformat() if plan.oldest_needed else None,
            )
    return build(env, settings, discard_sink=discard_sink, reseed=plan).execute()


def _savepoint_path(env: StreamExecutionEnvironment) -> str | None:
    # `flink run --fromSavepoint` and the Kubernetes operator pass it in the configuration the client builds in.
    value = env._j_stream_execution_environment.getConfiguration().toMap().get("execution.savepoint.path")
    return str(value) if value else None


def main(argv: list[str] | None = None) -> None:
    """Entry point when Flink runs this module (`flink run -pym`, application mode): submit and return.
    `--reseed <savepoint>`: start without state after the job that took the savepoint (or retained checkpoint),
    from its Kafka offsets, windows re-filled (tickpipe.ma_job.reseed)."""
    args = sys.argv[1:] if argv is None else argv
    overrides = {"ma_engine": args[args.index("--engine") + 1]} if "--engine" in args else {}
    reseed = args[args.index("--reseed") + 1] if "--reseed" in args else None
    execute(load_settings(**overrides), discard_sink="--discard-sink" in args, reseed=reseed)


if __name__ == "__main__":
    main()
