"""`tickpipe dlq replay`: put ticks a since-fixed parser rejected into price_ticks as if they had arrived on time.

A replayed tick is older than what the job has seen since, so sending it through Kafka again would only make the
job dead-letter it as out-of-order. Replay writes the table directly instead:

1. re-parse each matching record's raw payload with today's parser (the stage's own: `normalize` for the
   ingestor, `parse_tick` for the job); what still fails stays a dead letter;
2. insert the tick (`ON CONFLICT (source, symbol, time) DO NOTHING`: a row already there wins, and a second replay
   inserts nothing);
3. recompute MA(5)/MA(20) of the rows whose windows contain it: the tick's row and the 19 rows after it, from the
   19 rows before it, with the job's definition (mean of the last 5/20 prices, NULL until the window is full).
   Rows further on do not contain the tick in any window and keep their values. Only rows whose values change
   are written, so repeating a replay changes nothing.

A tick's series is (source, symbol), as for the job (Tick.key): its neighbours and windows are rows of the same
source and symbol, never of the same symbol quoted by another source.

The running job keeps the last 20 prices of each series in memory. A tick with fewer than 20 newer rows of its
series in the table falls inside that window: the job's next rows would leave it out. Such ticks are deferred
(reported, not written) until 20 newer ticks have arrived; `--allow-recent` writes them anyway, for a symbol that
no longer trades or a job that will not run again from its current state.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg

from tickpipe.candle_schema import WireCandle
from tickpipe.config import Settings
from tickpipe.dlq.records import STALE_KINDS, DeadLetter
from tickpipe.schema import InvalidTick, Tick, format_timestamp, parse_tick

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
WINDOW = 20  # the longest window: MA(20) (tickpipe.ma_job.indicators.LONG_WINDOW)

# The job's MA definition over the stored rows: the mean of the current and previous n-1 prices, NULL until n rows
# of the series exist. `avg` of float8 in PostgreSQL sums each frame anew (no running sum), as the job does.
RECOMPUTE_SQL = """
WITH averaged AS (
    SELECT time,
           CASE WHEN count(*) OVER w5 = 5 THEN avg(price) OVER w5 END AS ma_short,
           CASE WHEN count(*) OVER w20 = 20 THEN avg(price) OVER w20 END AS ma_long
    FROM price_ticks
    WHERE source = %(source)s AND symbol = %(symbol)s AND time >= %(first)s AND time <= %(last)s
    WINDOW w5 AS (ORDER BY time ROWS BETWEEN 4 PRECEDING AND CURRENT ROW),
           w20 AS (ORDER BY time ROWS BETWEEN 19 PRECEDING AND CURRENT ROW)
)
UPDATE price_ticks AS p SET ma_short = a.ma_short, ma_long = a.ma_long
FROM averaged AS a
WHERE p.source = %(source)s AND p.symbol = %(symbol)s AND p.time = a.time AND p.time >= %(tick)s
  AND (p.ma_short IS DISTINCT FROM a.ma_short OR p.ma_long IS DISTINCT FROM a.ma_long)
"""
# The window's first row: 19 rows before the tick (or the series' first row).
FIRST_SQL = """
SELECT coalesce(min(time), %(tick)s) FROM (
    SELECT time FROM price_ticks
    WHERE source = %(source)s AND symbol = %(symbol)s AND time < %(tick)s ORDER BY time DESC LIMIT 19
) AS earlier
"""
# The last row whose window holds the tick: 19 rows after it (or the series' newest); and how many newer rows exist
# (up to WINDOW).
LAST_SQL = """
SELECT coalesce(max(time) FILTER (WHERE n <= 19), %(tick)s), count(*) FROM (
    SELECT time, row_number() OVER (ORDER BY time) AS n FROM (
        SELECT time FROM price_ticks
        WHERE source = %(source)s AND symbol = %(symbol)s AND time > %(tick)s ORDER BY time LIMIT 20
    ) AS later
) AS numbered
"""
INSERT_SQL = """
INSERT INTO price_ticks (time, source, symbol, price, volume)
VALUES (%(tick)s, %(source)s, %(symbol)s, %(price)s, %(volume)s)
ON CONFLICT (source, symbol, time) DO NOTHING
"""


@dataclass
class Plan:
    """What the matching dead letters are now: ticks to replay, and why the others are not."""

    ticks: list[Tick] = field(default_factory=list)
    still_rejected: Counter[str] = field(default_factory=Counter)  # reason kind today
    not_replayable: Counter[str] = field(default_factory=Counter)  # why: truncated, by design, not a tick
    matched: int = 0


@dataclass
class Outcome:
    inserted: int = 0
    already_present: int = 0
    updated_rows: int = 0
    planned: int = 0  # with dry_run: the ticks that would be written
    deferred: list[tuple[Tick, int]] = field(default_factory=list)  # the tick, its newer rows in the table
    symbols: set[str] = field(default_factory=set)  # the series written, by key (BTCUSDT, yahoo:BTC-USD)


# A candle's minute is fetched again from the exchange by the ingestor's gap repair; replaying its payload here would
# bypass the candle job's ordering of late candles.
CANDLE_NOT_REPLAYED = "a candle (the ingestor's gap repair fetches its minute again)"


class NotATick(Exception):
    """A payload that is valid but not a tick: not replayable into price_ticks, for the reason given."""


def reparse(record: DeadLetter) -> Tick | None:
    """The record's payload through today's parser of the stage that rejected it: a tick, or None (a control
    message); InvalidTick if it is still not a tick."""
    if record.stage == "ingestor":
        if record.source not in (None, "binance"):
            # The ingestor's dead letters hold the exchange's own payload: only Binance's is re-parsed here.
            raise NotATick(f"an ingestor payload of {record.source} (only Binance's are re-parsed)")
        from tickpipe.ingestor.normalize import normalize

        item = normalize(record.raw or "")
        if isinstance(item, WireCandle):
            raise NotATick(CANDLE_NOT_REPLAYED)
        return item if isinstance(item, Tick) else None
    return parse_tick(record.raw)


def plan(records: list[DeadLetter], reason: str) -> Plan:
    result = Plan()
    seen: set[tuple[str, str, int]] = set()
    for record in records:
        if not record.matches(reason):
            continue
        result.matched += 1
        if record.kind in STALE_KINDS:
            result.not_replayable[f"{record.kind} (rejected by design)"] += 1
            continue
        if record.raw_truncated:
            result.not_replayable["payload truncated in the dead letter"] += 1
            continue
        if record.stage == "candle-job":
            result.not_replayable[CANDLE_NOT_REPLAYED] += 1
            continue
        if record.stage not in {"ingestor", "ma-job"}:
            result.not_replayable[f"unknown stage {record.stage!r}"] += 1
            continue
        try:
            tick = reparse(record)
        except NotATick as why:
            result.not_replayable[str(why)] += 1
            continue
        except InvalidTick as error:
            result.still_rejected[str(error).split(":", 1)[0].split(",", 1)[0]] += 1
            continue
        if tick is None:
            result.not_replayable["not a tick (exchange control message)"] += 1
        elif (tick.source, tick.symbol, tick.event_time_ms) not in seen:  # dead-lettered twice: replayed once
            seen.add((tick.source, tick.symbol, tick.event_time_ms))
            result.ticks.append(tick)
    result.ticks.sort(key=lambda tick: (tick.source, tick.symbol, tick.event_time_ms))
    return result


def _moment(event_time_ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=event_time_ms)  # exact: no float seconds in between


def apply(settings: Settings, ticks: list[Tick], *, allow_recent: bool = False, dry_run: bool = False) -> Outcome:
    """Insert `ticks` and recompute the MAs around each, one transaction per series (source, symbol), as the writer
    role."""
    outcome = Outcome()
    by_series: dict[tuple[str, str], list[Tick]] = {}
    for tick in ticks:
        by_series.setdefault((tick.source, tick.symbol), []).append(tick)
    with psycopg.connect(settings.conninfo("writer"), connect_timeout=10, autocommit=True) as conn:
        for (source, symbol), series_ticks in by_series.items():
            key = series_ticks[0].key
            with conn.transaction():
                # One replay of a series at a time: two would each recompute without the other's tick.
                conn.execute("SELECT pg_advisory_xact_lock(hashtext('tickpipe dlq replay'), hashtext(%s))", (key,))
                written = []
                for tick in series_ticks:
                    at = {"source": source, "symbol": symbol, "tick": _moment(tick.event_time_ms)}
                    row = conn.execute(LAST_SQL, at).fetchone()
                    newer = int(row[1]) if row else 0
                    if newer < WINDOW and not allow_recent:
                        outcome.deferred.append((tick, newer))
                        continue
                    if dry_run:
                        outcome.planned += 1
                        written.append(tick)
                        continue
                    inserted = conn.execute(INSERT_SQL, {**at, "price": tick.price, "volume": tick.volume}).rowcount
                    outcome.inserted += inserted
                    outcome.already_present += 1 - inserted
                    written.append(tick)
                if not dry_run:
                    for tick in written:
                        outcome.updated_rows += _recompute(conn, source, symbol, _moment(tick.event_time_ms))
                if written:
                    outcome.symbols.add(key)
    return outcome


def _recompute(conn: psycopg.Connection[tuple[object, ...]], source: str, symbol: str, tick: datetime) -> int:
    at = {"source": source, "symbol": symbol, "tick": tick}
    first = conn.execute(FIRST_SQL, at).fetchone()
    last = conn.execute(LAST_SQL, at).fetchone()
    bounds = {**at, "first": first[0] if first else tick, "last": last[0] if last else tick}
    return conn.execute(RECOMPUTE_SQL, bounds).rowcount


def describe_deferred(tick: Tick, newer: int) -> str:
    return (
        f"deferred {tick.key} {format_timestamp(tick.event_time_ms)}: only {newer} newer rows of {tick.key}; "
        f"the running job's window (its last {WINDOW} prices) would leave it out of the next MAs"
    )
