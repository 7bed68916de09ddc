"""The candle job: Kafka `candles` (and, for sources without exchange klines, 1m candles built from their ticks) →
indicators per (source, symbol) → upsert into `candles_1m`, signals → the `signals` table and topic, bad input →
DLQ.

A Flink job of its own (`tickpipe-candle-job`, consumer group CANDLE_GROUP_ID), so the MA job's SQL and savepoints
are untouched by it:

    kafka `candles` ───── parse ──────────────┬──┬─ keyBy(source:symbol) ─ candle indicators ─┬─ candles_1m (upsert)
    kafka `price-ticks` ─ candles from ticks ─┼──┘ (union)                                   ├─ signals (upsert/delete)
                          (tick_candles.py)   │                                              └─ signals topic (JSON)
                                              └─ not a candle, tick too late ── dead letters (Kafka DLQ)

The tick branch (CANDLES_FROM_TICKS_SOURCES, default coingecko and yahoo: the sources without klines) builds each
series' 1m candles in event-time windows with a watermark and an allowed lateness (tick_candles.py defines them),
volume NULL; its candles join the exchange's before the key, so both take one path to the indicators and tables.
A tick-built series has no gap repair: a minute without ticks is no hole to wait for (CandleSeries max_hold_ms 0).

The keyed function holds the symbol's CandleSeries (candle_series.py: late, repaired, corrected and repeated candles
give the indicators of the complete in-order series) and the signals given so far (candle_signals.py), pickled in
one ValueState. Offsets and that state are checkpointed together; candles_1m and signals are written with upserts
on their keys and flushed on every checkpoint, so a restart replays into the same rows. The signals topic is
at-least-once: a replay after a failure can publish an event again (same key, same content).
`main()` is the entry point Flink runs (`-pym tickpipe.ma_job.candle_job`); `tickpipe ma-job --candles` submits it.
"""

from __future__ import annotations

import sys
from typing import Any

from pyflink.common import Row, RowKind, Types
from pyflink.common.job_client import JobClient
from pyflink.datastream import (
    DataStream,
    KeyedProcessFunction,
    OutputTag,
    ProcessFunction,
    RuntimeContext,
    StreamExecutionEnvironment,
)
from pyflink.datastream.state import ValueStateDescriptor
from pyflink.table import StreamTableEnvironment, Table

from tickpipe.candle_schema import InvalidCandle, parse_candle
from tickpipe.config import Settings, load_settings
from tickpipe.ma_job import operator_ids, sql_engine
from tickpipe.ma_job.candle_series import MINUTE_MS, Candle, CandleSeries
from tickpipe.ma_job.candle_signals import Change, SymbolCandles
from tickpipe.ma_job.candle_tables import (
    CANDLE_STAGE,
    candle_job_name,
    candles_sink_ddl,
    candles_source_ddl,
    signal_events_ddl,
    signals_sink_ddl,
    tick_source_ddl,
)
from tickpipe.ma_job.job import job_configuration
from tickpipe.ma_job.tables import dlq_ddl
from tickpipe.ma_job.tick_candles import tick_candles
from tickpipe.schema import dead_letter

DEAD_LETTERS = OutputTag("candle-dead-letters", Types.STRING())
WIRE_CANDLE = Types.ROW_NAMED(
    ["key", "source", "symbol", "open_time_ms", "open", "high", "low", "close", "volume", "quote_volume", "trades"],
    [Types.STRING(), Types.STRING(), Types.STRING(), Types.LONG()] + [Types.DOUBLE()] * 6 + [Types.LONG()],
)
CANDLE_ROW = Types.ROW_NAMED(
    [
        "source",
        "symbol",
        "open_time_ms",
        "open",
        "high",
        "low",
        "close",
        "volume",
        "quote_volume",
        "trades",
        "rsi_14",
        "bb_middle",
        "bb_upper",
        "bb_lower",
        "ema_12",
        "ema_26",
        "macd",
        "macd_signal",
        "macd_hist",
    ],
    [Types.STRING(), Types.STRING(), Types.LONG()] + [Types.DOUBLE()] * 6 + [Types.LONG()] + [Types.DOUBLE()] * 9,
)
SIGNAL_ROW = Types.ROW_NAMED(
    [
        "source",
        "symbol",
        "open_time_ms",
        "kind",
        "close",
        "previous_close",
        "rsi_14",
        "previous_rsi_14",
        "bb_upper",
        "bb_middle",
        "bb_lower",
        "ma_5",
        "ma_20",
        "previous_ma_5",
        "previous_ma_20",
    ],
    [Types.STRING(), Types.STRING(), Types.LONG(), Types.STRING()] + [Types.DOUBLE()] * 11,
)
SIGNAL_EVENT = Types.ROW_NAMED(["key", "event"], [Types.STRING(), Types.STRING()])
SIGNAL_ROWS = OutputTag("signal-rows", SIGNAL_ROW)
SIGNAL_EVENTS = OutputTag("signal-events", SIGNAL_EVENT)
# How long a late candle still recomputes the series, and a hole waits for its minutes: as far back as the ingestor's
# gap repair reaches (INGEST_REPAIR_LOOKBACK_MINUTES), plus an hour for a repair that is itself delayed.
MARGIN_MINUTES = 60


class ParseCandles(ProcessFunction):  # type: ignore[misc]
    """Wire JSON → candle row; anything else → dead-letter record with the reason (never dropped silently)."""

    def open(self, runtime_context: RuntimeContext) -> None:
        self.rejected = runtime_context.get_metrics_group().counter("candles_rejected")

    def process_element(self, value: str | None, ctx: ProcessFunction.Context) -> Any:
        try:
            c = parse_candle(value)
        except InvalidCandle as error:
            self.rejected.inc()
            yield DEAD_LETTERS, dead_letter(value, str(error), CANDLE_STAGE).decode()
            return
        yield Row(
            c.key.decode(), c.source, c.symbol, c.open_time_ms, c.open, c.high, c.low, c.close, c.volume,
            c.quote_volume, c.trades,
        )  # fmt: skip


class CandleIndicatorsFunction(KeyedProcessFunction):  # type: ignore[misc]
    """Per (source, symbol): add the candle to its series; emit every row to upsert and every signal change."""

    tick_sources: tuple[str, ...] = ()  # sources whose candles the job builds from ticks (tick_candles.py)

    def __init__(self, lookback_minutes: int, tick_sources: tuple[str, ...] = ()) -> None:
        self.look_back_ms = (lookback_minutes + MARGIN_MINUTES) * MINUTE_MS
        self.tick_sources = tick_sources

    def open(self, runtime_context: RuntimeContext) -> None:
        self.state = runtime_context.get_state(ValueStateDescriptor("candles", Types.PICKLED_BYTE_ARRAY()))
        metrics = runtime_context.get_metrics_group()
        self.unchanged = metrics.counter("candles_unchanged")
        self.signals = metrics.counter("signal_changes")

    def process_element(self, value: Row, ctx: KeyedProcessFunction.Context) -> Any:
        key, source, symbol, open_time_ms, open_, high, low, close, volume, quote_volume, trades = value
        symbol_candles: SymbolCandles | None = self.state.value()
        if symbol_candles is None:
            # A tick-built series' missing minute had no ticks: nobody will fill it, so nothing waits for it.
            hold_ms = 0 if source in self.tick_sources else self.look_back_ms
            symbol_candles = SymbolCandles(CandleSeries(keep_ms=self.look_back_ms, max_hold_ms=hold_ms))
        candle = Candle(open_time_ms, open_, high, low, close, volume, quote_volume, trades)
        rows, changes = symbol_candles.add(candle)
        if not rows:
            self.unchanged.inc()
            return
        self.state.update(symbol_candles)
        for row in rows:
            c, i = row.candle, row.indicators
            values = (
                (i.rsi, i.bb_middle, i.bb_upper, i.bb_lower, i.ema_fast, i.ema_slow, i.macd, i.macd_signal, i.macd_hist)
                if i is not None
                else (None,) * 9
            )
            yield Row(source, symbol, c.open_time_ms, c.open, c.high, c.low, c.close, c.volume, c.quote_volume,
                      c.trades, *values)  # fmt: skip
        for change in changes:
            self.signals.inc()
            s = change.signal
            signal_row = Row(
                source, symbol, s.open_time_ms, s.kind.value, s.close, s.previous_close, s.rsi, s.previous_rsi,
                s.bb_upper, s.bb_middle, s.bb_lower, s.ma_5, s.ma_20, s.previous_ma_5, s.previous_ma_20,
            )  # fmt: skip
            if change.change is Change.RETRACTED:
                signal_row.set_row_kind(RowKind.DELETE)
            yield SIGNAL_ROWS, signal_row
            yield SIGNAL_EVENTS, Row(key, change.to_json(source, symbol))


def transform(
    raw: DataStream, settings: Settings, raw_ticks: DataStream | None = None
) -> tuple[DataStream, DataStream, DataStream, DataStream]:
    """The job as a function of its input: raw candle strings (and raw tick strings, for the candles built from the
    ticks of CANDLES_FROM_TICKS_SOURCES) → (candles_1m rows, signal rows with their row kind, signal events (key,
    JSON), dead letters). Sources and sinks are elsewhere, so tests feed it elements."""
    # Without the tick branch the operators are created in the order they had before it existed: Flink derives the
    # ids of operators without a uid (the SQL sources and sinks) from the graph's shape and that order.
    parsed = raw.process(ParseCandles(), output_type=WIRE_CANDLE).name("parse candles").uid("parse-candles")
    candles, too_late = parsed, None
    tick_sources = settings.candles_from_ticks_sources if raw_ticks is not None else ()
    if raw_ticks is not None and tick_sources:
        from_ticks, too_late = tick_candles(raw_ticks, settings, WIRE_CANDLE)
        candles = parsed.union(from_ticks)
    rows = (
        candles.key_by(lambda candle: candle[0], key_type=Types.STRING())
        .process(
            CandleIndicatorsFunction(settings.ingest_repair_lookback_minutes, tick_sources), output_type=CANDLE_ROW
        )
        .name("candle indicators")
        .uid("candle-indicators")
    )
    signal_rows, signal_events = rows.get_side_output(SIGNAL_ROWS), rows.get_side_output(SIGNAL_EVENTS)
    dead = parsed.get_side_output(DEAD_LETTERS)
    return rows, signal_rows, signal_events, dead if too_late is None else dead.union(too_late)


def build(env: StreamExecutionEnvironment, settings: Settings) -> Any:
    """Add the job's sources, operators and sinks to `env`; return the statement set that writes every sink."""
    t_env = StreamTableEnvironment.create(env)
    # Signals arrive as inserts and deletes keyed like the table: no upsert materializer (it would keep every
    # signal ever written in state) between them and the sink, which writes each key's last change.
    t_env.get_config().set("table.exec.sink.upsert-materialize", "NONE")
    for ddl in (
        candles_source_ddl(settings),
        candles_sink_ddl(settings),
        signals_sink_ddl(settings),
        signal_events_ddl(settings),
        dlq_ddl(settings),
    ):
        t_env.execute_sql(ddl)
    # The SQL Kafka source rather than PyFlink's KafkaSource wrapper (see job.py).
    raw = t_env.to_data_stream(t_env.from_path("candles_raw")).map(lambda row: row[0], output_type=Types.STRING())
    raw_ticks = None
    if settings.candles_from_ticks_sources:
        # Created after the candles source: the sources' order is part of Flink's generated operator ids.
        t_env.execute_sql(tick_source_ddl(settings))
        raw_ticks = t_env.to_data_stream(_ticks_of(t_env, settings.candles_from_ticks_sources)).map(
            lambda row: row[0], output_type=Types.STRING()
        )
    rows, signal_rows, signal_events, dead = transform(raw, settings, raw_ticks)
    t_env.create_temporary_view("candle_rows", t_env.from_data_stream(rows))
    t_env.create_temporary_view("signal_changes", t_env.from_changelog_stream(signal_rows))
    t_env.create_temporary_view("signal_events_out", t_env.from_data_stream(signal_events))
    t_env.create_temporary_view("candles_rejected", t_env.from_data_stream(dead))
    # Backquoted: `open`, `close`, `source` are keywords of Flink SQL.
    open_time = "CAST(TO_TIMESTAMP_LTZ(`open_time_ms`, 3) AS TIMESTAMP(3))"
    candle_columns = _quoted("source", "symbol") + f", {open_time}, " + _quoted(*CANDLE_ROW.get_field_names()[3:])
    signal_columns = _quoted("source", "symbol") + f", {open_time}, " + _quoted(*SIGNAL_ROW.get_field_names()[3:])
    statements = t_env.create_statement_set()
    statements.add_insert_sql(f"INSERT INTO candles_1m SELECT {candle_columns} FROM candle_rows")  # noqa: S608
    statements.add_insert_sql(f"INSERT INTO signals SELECT {signal_columns} FROM signal_changes")  # noqa: S608
    statements.add_insert_sql("INSERT INTO signal_events SELECT `key`, `event` FROM signal_events_out")
    statements.add_insert_sql("INSERT INTO dead_letters SELECT f0 FROM candles_rejected")
    return statements


def _ticks_of(t_env: StreamTableEnvironment, sources: tuple[str, ...]) -> Table:
    """The raw ticks of `sources` (and the records that are no tick, which the Python parser counts), chosen in the
    JVM: every other tick (all of Binance's) would otherwise cross into the Python worker only to be dropped there,
    ~70-100 µs each, as much CPU again as the whole tick path at 3,000 ticks/s (BENCHMARKS.md, "Features on/off")."""
    sql_engine.register_functions(t_env)
    listed = ", ".join(f"'{source}'" for source in sources)  # validated names (Settings): coingecko, yahoo
    return t_env.sql_query(
        "SELECT `raw` FROM ticks_raw, LATERAL TABLE(PARSE_TICK(`raw`)) AS p "  # noqa: S608
        f"WHERE p.reason IS NOT NULL OR p.source IN ({listed})"
    )


def _quoted(*names: str) -> str:
    return ", ".join(f"`{name}`" for name in names)


def execute(settings: Settings, **config: str) -> JobClient:
    """Submit the job. Its stream graph goes through operator_ids.pin first: the SQL operators get fixed uids (and
    the ids they had before), so savepoints restore across changes of the graph."""
    options = {"pipeline.name": candle_job_name(settings), **config}
    env = StreamExecutionEnvironment.get_execution_environment(job_configuration(settings, **options))
    build(env, settings).attach_as_datastream()
    # What env.execute_async does, with the graph in hand between building and submitting it.
    graph = env._generate_stream_graph(clear_transformations=True, job_name=options["pipeline.name"])
    operator_ids.pin(graph)
    return JobClient(env._j_stream_execution_environment.executeAsync(graph))


def main(argv: list[str] | None = None) -> None:
    """Entry point when Flink runs this module (`flink run -pym`, application mode): submit and return."""
    del argv
    execute(load_settings())


if __name__ == "__main__":
    main(sys.argv[1:])
