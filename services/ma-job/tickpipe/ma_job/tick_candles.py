"""1m candles built from ticks, for the sources without exchange klines (CANDLES_FROM_TICKS_SOURCES: CoinGecko and
Yahoo Finance by default; never Binance, whose klines the ingestor publishes). Part of the candle job (candle_job.py):

    kafka `price-ticks` ─ parse (tickpipe.schema.parse_tick), keep the listed sources ─┐ (one branch per source)
      ┌─────────────────────────────────────────────────────────────────────────────────┘
      └─ watermark per source ─ union ─ keyBy(source:symbol) ─ 1m event-time window ─┬─ candle → the candle indicators
                                                                                       └─ too late ─ dead letters

Definitions (event time is the tick's `timestamp`; settings in tickpipe.config):
- Window: the tumbling minute [open_time, open_time + 60 s) of a series, UTC-aligned, as an exchange candle.
- Watermark: per source, the newest event time seen minus CANDLES_FROM_TICKS_OUT_OF_ORDERNESS_SECONDS (60 s: a
  CoinGecko answer carries each coin's `last_updated_at`, up to a refresh period apart across coins; Yahoo's trades
  arrive within seconds). Per source, so a source whose clock runs ahead never makes another one's ticks late (the
  windows close at the slower source's watermark: its candles wait for it, none of its ticks are dropped). A
  source silent for CANDLES_FROM_TICKS_IDLE_SECONDS (a closed market, an ingestor not deployed) is idle: it no
  longer holds the others back. Idleness does not advance a watermark: a series' last minute before a silence
  closes when its source's event time moves on (the next tick of any of its series).
- A minute's candle is emitted when the watermark passes its end: open = the price of the first tick by event time,
  close = the last, high/low = the extremes, trades = the tick count; ticks of the same millisecond are taken in
  arrival order (the series' Kafka partition order, which a replay repeats). volume and quote_volume are NULL:
  neither source gives an interval volume (the tick's volume is a 24 h or day's running total, never differenced).
  A minute without ticks has no candle (never a flat filler: a closed market would flood RSI with them).
- Allowed lateness CANDLES_FROM_TICKS_ALLOWED_LATENESS_SECONDS (300 s, covering the skew between partitions when
  the job catches up on a backlog): a tick that arrives after its minute closed but before the watermark passes
  the minute's end + the lateness fires the window again, a corrected candle that CandleSeries recomputes the
  series from. Later than that, the tick goes to the dead-letter topic (stage `candle-job`, reason `too late for
  its 1m candle`) and is counted (`ticks_too_late`): it is a valid tick, stored in price_ticks by the MA job, but
  its candle is final without it and an operator should see that (`tickpipe dlq stats`; `tickpipe dlq replay`
  does not replay candle-job records). Ticks that are not ticks are the MA job's dead letters, not these: here
  they are only counted (`ticks_unparsed`), so no dead letter is written twice.
Every operator has a fixed uid, so savepoints map onto later versions of the job: the window `tick-candles`, the
watermarks per source; the Python functions PyFlink fuses with their neighbours (losing their uids) are named by
operator_ids.pin at submission.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pyflink.common import Duration, Row, Time, Types, WatermarkStrategy
from pyflink.datastream import DataStream, OutputTag, ProcessFunction, RuntimeContext
from pyflink.datastream.functions import ProcessWindowFunction
from pyflink.datastream.window import TimeWindow, TumblingEventTimeWindows
from pyflink.java_gateway import get_gateway

from tickpipe.candle_schema import candle_key
from tickpipe.config import Settings
from tickpipe.ma_job.candle_series import MINUTE_MS
from tickpipe.ma_job.candle_tables import CANDLE_STAGE
from tickpipe.schema import InvalidTick, Tick, dead_letter, format_timestamp, parse_tick


def _tick_type() -> Any:
    # A new instance each time: a type information caches its JVM object once used, and one that did cannot be
    # pickled with the Python functions that name it (the window's state descriptor, the side-output tags).
    return Types.ROW_NAMED(
        ["series", "source", "symbol", "event_time_ms", "price", "volume"],
        [Types.STRING(), Types.STRING(), Types.STRING(), Types.LONG(), Types.DOUBLE(), Types.DOUBLE()],
    )


LATE_TICKS = OutputTag("ticks-too-late", _tick_type())
TOO_LATE = "too late for its 1m candle"


def source_tag(source: str) -> OutputTag:
    return OutputTag(f"ticks-{source}", Types.TUPLE([_tick_type(), Types.LONG()]))


class ParseTicksForCandles(ProcessFunction):  # type: ignore[misc]
    """Wire JSON → (tick row, event time) on the side output of its source, only for the listed sources."""

    def __init__(self, sources: tuple[str, ...]) -> None:
        self.sources = sources

    def open(self, runtime_context: RuntimeContext) -> None:
        self.tags = {source: source_tag(source) for source in self.sources}
        metrics = runtime_context.get_metrics_group()
        self.unparsed = metrics.counter("ticks_unparsed")
        self.taken = metrics.counter("ticks_for_candles")

    def process_element(self, value: str | None, ctx: ProcessFunction.Context) -> Any:
        try:
            tick = parse_tick(value)
        except InvalidTick:
            self.unparsed.inc()  # the MA job dead-letters it (it reads the same topic)
            return
        tag = self.tags.get(tick.source)
        if tag is None:
            return  # a source with exchange klines (Binance), or one not listed
        self.taken.inc()
        row = Row(tick.key, tick.source, tick.symbol, tick.event_time_ms, tick.price, tick.volume)
        yield tag, (row, tick.event_time_ms)


class MinuteCandle(ProcessWindowFunction):  # type: ignore[misc]
    """A series' ticks of one minute → its candle, as the candle job's wire candle row (candle_job.WIRE_CANDLE)."""

    def process(self, key: str, context: ProcessWindowFunction.Context, elements: Iterable[Row]) -> Iterable[Row]:
        ticks = sorted(elements, key=lambda tick: tick[3])  # stable: equal times keep their arrival order
        window: TimeWindow = context.window()
        _, source, symbol, _, _, _ = ticks[0]
        prices = [tick[4] for tick in ticks]
        yield Row(
            candle_key(source, symbol).decode(), source, symbol, window.start, prices[0], max(prices), min(prices),
            prices[-1], None, None, len(ticks),
        )  # fmt: skip


class DeadLetterLateTicks(ProcessFunction):  # type: ignore[misc]
    """A tick behind its minute's window + the allowed lateness → a dead letter saying so (and a count)."""

    def open(self, runtime_context: RuntimeContext) -> None:
        self.too_late = runtime_context.get_metrics_group().counter("ticks_too_late")

    def process_element(self, value: Row, ctx: ProcessFunction.Context) -> Any:
        _, source, symbol, event_time_ms, price, volume = value
        self.too_late.inc()
        minute = event_time_ms - event_time_ms % MINUTE_MS
        reason = (
            f"{TOO_LATE}: the candle of {format_timestamp(minute)} closed, the watermark is at "
            f"{format_timestamp(ctx.timer_service().current_watermark())}"
        )
        raw = Tick(symbol, event_time_ms, price, volume, source).to_json()
        yield dead_letter(raw, reason, CANDLE_STAGE, source=source).decode()


def watermark_strategy(settings: Settings) -> WatermarkStrategy:
    return WatermarkStrategy.for_bounded_out_of_orderness(
        Duration.of_millis(round(settings.candles_from_ticks_out_of_orderness_seconds * 1000))
    ).with_idleness(Duration.of_millis(round(settings.candles_from_ticks_idle_seconds * 1000)))


def _with_watermarks(timestamped: DataStream, strategy: WatermarkStrategy, source: str) -> DataStream:
    """(tick, event time) → tick with its event time and the source's watermarks. What PyFlink's
    assign_timestamps_and_watermarks does with a Python timestamp assigner, minus its extra Python operator (the
    parser already gives the time), and with a uid on each of its two JVM operators."""
    eventtime = get_gateway().jvm.org.apache.flink.streaming.api.functions.python.eventtime
    j_stream = timestamped._j_data_stream.assignTimestampsAndWatermarks(
        strategy._j_watermark_strategy.withTimestampAssigner(eventtime.CustomTimestampAssigner())
    )
    j_stream.name(f"watermarks {source}").uid(f"tick-watermarks-{source}")
    j_ticks = j_stream.map(eventtime.RemoveTimestampMapFunction(), _tick_type().get_java_type_info())
    return DataStream(j_ticks).name(f"ticks {source}").uid(f"tick-timestamps-{source}")


def tick_candles(raw_ticks: DataStream, settings: Settings, candle_type: Any) -> tuple[DataStream, DataStream]:
    """Raw tick strings → (candle rows of type `candle_type` (candle_job.WIRE_CANDLE) of the listed sources' series,
    dead letters of too-late ticks)."""
    sources = settings.candles_from_ticks_sources
    parsed = (
        raw_ticks.process(ParseTicksForCandles(sources), output_type=Types.STRING())
        .name("parse ticks for candles")
        .uid("parse-ticks-for-candles")
    )
    strategy = watermark_strategy(settings)
    branches = [_with_watermarks(parsed.get_side_output(source_tag(s)), strategy, s) for s in sources]
    ticks = branches[0].union(*branches[1:]) if len(branches) > 1 else branches[0]
    candles = (
        ticks.key_by(lambda tick: tick[0], key_type=Types.STRING())
        .window(TumblingEventTimeWindows.of(Time.minutes(1)))
        .allowed_lateness(round(settings.candles_from_ticks_allowed_lateness_seconds * 1000))
        .side_output_late_data(LATE_TICKS)
        .process(MinuteCandle(), output_type=candle_type)
        .name("candles from ticks")
        .uid("tick-candles")
    )
    late = (
        candles.get_side_output(LATE_TICKS)
        .process(DeadLetterLateTicks(), output_type=Types.STRING())
        .name("ticks too late")
        .uid("ticks-too-late")
    )
    return candles, late
