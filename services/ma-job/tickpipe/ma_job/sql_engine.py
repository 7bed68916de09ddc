"""The `sql` engine: parsing, de-duplication and both moving averages in the JVM, as Flink SQL.

    ticks_raw ─ PARSE_TICK ─┬─ (reason) ──────────────────────────────────────────────── dead_letters
                            └─ MOVING_AVERAGES(ts, price, 5, 20) OVER ─┬─ (not newer) ─── dead_letters
                                                                       └─ (new) ────────── price_ticks

Windows are per series (tickpipe.schema.series_key: the symbol for Binance, `<source>:<symbol>` for the other
sources) and ordered by processing time: the series is also the Kafka key, which keeps each series' ticks in order,
and no watermark means an idle partition cannot stall the job. A Binance series keeps the key (a string) it had
before sources existed, and a savepoint of the plan before series (a1b33e1) restores into this one
(tests/ma_job/test_upgrade.py). Operator ids are Flink's hashes of the plan's shape, not pinned uids
(table.exec.uid.generation pins them for compiled plans only; its `<id>` counts ExecNodes and moves with any edit):
a SQL edit that changes the shape makes a savepoint unrestorable, and then the job starts without state from the
savepoint's Kafka offsets with its windows re-filled (reseed.py; `written` marks the records written again).
MA(n) is the plain sum of the current price and the n-1 before it, newest first (never a running sum with retraction,
which leaves rounding residue after a jump across orders of magnitude), NULL until n new ticks of the series have been
seen. MOVING_AVERAGES, one Java aggregate in one OVER, checks that a tick is newer than the series' newest (else it
is a duplicate or out of order, left out of the averages and sent to the dead letters) and computes both averages
from one ring of the last 20 prices. Until 2026-12-02 it was two OVERs, the check and then the averages, and before
that the averages were sums of 19 LAG aggregates: each aggregate's accumulator is converted out of and into the
window's state for every row, which was a third of the TaskManager's CPU. Parsing (PARSE_TICK) is a small Java
function too (services/ma-job/udf): it follows `tickpipe.schema.parse_tick`, reason texts included, and a test runs
both parsers over the same payloads.

The computation is `transform`, a function from a `ticks_raw` table to its price_ticks rows and dead letters; `build`
feeds it the Kafka source and inserts its outputs into the PostgreSQL and DLQ sinks that job.py declares (tables.py has
the DDL). The job graph and its operator ids are those of the inserts written as SQL text before the split, so earlier
savepoints still restore. tests/ma_job/test_sql_engine.py runs `transform` in-process, on elements in a local
mini-cluster read back with collect: the averages, the stale and malformed records' dead letters, series per source
and the `first_written` seeds. The tests on the running cluster (test_ma_job.py, test_upgrade.py, ...) are for the
Kafka/PostgreSQL wiring, restarts and savepoints.
"""

# The SQL below is assembled from constants of this module only, never from input: S608 does not apply.
# ruff: noqa: S608
from __future__ import annotations

import re
from typing import Any

from pyflink.table import StreamTableEnvironment, Table

from tickpipe.ma_job.indicators import LONG_WINDOW, SHORT_WINDOW
from tickpipe.ma_job.tables import STAGE
from tickpipe.schema import DEAD_LETTER_VERSION, MAX_RAW_LENGTH

ISO_MS = "yyyy-MM-dd''T''HH:mm:ss.SSS''Z''"

# The JVM functions of services/ma-job/udf (one jar, shipped with the connectors): a JSON parse per record in
# the JVM costs ~0.5 µs, where ten JSON_VALUE/JSON_EXISTS calls cost ~30 µs and capped the engine at ~35k ticks/s.
FUNCTIONS = {
    "PARSE_TICK": "dev.tickpipe.flink.ParseTick",
    "MOVING_AVERAGES": "dev.tickpipe.flink.MovingAverages",
}

# One row per record: the tick's fields and its series, or the reason it is not a tick (the rules of
# tickpipe.schema.parse_tick).
PARSED = """
SELECT proc, written, p.symbol, p.ts, p.price, p.volume, p.source, p.reason, p.rejected_raw, p.raw_length,
  CASE WHEN p.source = 'binance' THEN p.symbol ELSE CONCAT(p.source, ':', p.symbol) END AS series
FROM ticks_raw_timed, LATERAL TABLE(PARSE_TICK(payload)) AS p"""

# Each valid tick with the newest event time among its series' earlier ticks (a tick that is not after it is a
# duplicate or out of order, and did not enter the averages) and the averages. The payload stays behind (a stale
# tick's dead letter carries the tick as parsed, as the keyed engine's does): not shipping it through the shuffle
# is ~20 % of the throughput.
CHECKED = f"""
SELECT written, ts, source, symbol, price, volume, w.newest_before, w.ma_short, w.ma_long
FROM (
  SELECT written, ts, source, symbol, price, volume,
    MOVING_AVERAGES(ts, price, {SHORT_WINDOW}, {LONG_WINDOW}) OVER (PARTITION BY series ORDER BY proc) AS w
  FROM parsed WHERE reason IS NULL)"""


# A valid tick as JSON text (the raw record of a duplicate or out-of-order tick's dead letter). Assembled from JSON
# pieces: JSON_OBJECT as a whole would be nested as an object where every dead letter has a string. The symbol is
# alphanumeric (PARSE_TICK checked it), a DOUBLE as text (`97000.5`, `1.0E-8`) is a JSON number, and the source
# is quoted and escaped by JSON_ARRAY.
TICK_JSON = (
    f"""CONCAT('{{"symbol":"', symbol, '","timestamp":"', DATE_FORMAT(ts, '{ISO_MS}'), '","price":', """
    """CAST(price AS STRING), ',"volume":', CAST(volume AS STRING), ',"source":', """
    """REGEXP_EXTRACT(JSON_ARRAY(source), '^\\[(.*)\\]$', 1), '}')"""
)


def _dead_letter(reason: str, raw: str, raw_length: str) -> str:
    # tickpipe.schema.dead_letter's record (version DEAD_LETTER_VERSION). A payload longer than MAX_RAW_LENGTH comes
    # cut from PARSE_TICK, so that a 1 MB record still makes a dead letter Kafka accepts instead of a sink failure
    # that restarts the job forever.
    return (
        f"JSON_OBJECT(KEY 'v' VALUE {DEAD_LETTER_VERSION}, KEY 'reason' VALUE {reason}, KEY 'stage' VALUE '{STAGE}', "
        f"KEY 'source' VALUE CAST(NULL AS STRING), KEY 'raw' VALUE {raw}, KEY 'raw_length' VALUE {raw_length}, "
        f"KEY 'raw_truncated' VALUE COALESCE({raw_length} > {MAX_RAW_LENGTH}, FALSE), "
        f"KEY 'rejected_at' VALUE DATE_FORMAT(CURRENT_TIMESTAMP, '{ISO_MS}'))"
    )


STALE_REASON = (
    "CONCAT(CASE WHEN ts = newest_before THEN 'duplicate' ELSE 'out-of-order' END, ' tick: event time ', "
    f"DATE_FORMAT(ts, '{ISO_MS}'), ' is not after the symbol''s latest ', DATE_FORMAT(newest_before, '{ISO_MS}'))"
)


def _written(first_written: str) -> str:
    # A record is written (a row or a dead letter) from its partition's first written offset on; the records
    # before it are seeds that only re-fill the windows (reseed.py). The offsets are data of one expression, the
    # same expression with or without them (`0=120,1=96` or ''), so a seeded start and a plain one have one plan.
    if not re.fullmatch(r"(\d+=\d+(,\d+=\d+)*)?", first_written):
        raise ValueError(f"first written offsets must look like 0=120,1=96, not {first_written!r}")
    first = f"STR_TO_MAP('{first_written}', ',', '=')[CAST(`partition` AS STRING)]"
    return f"`offset` >= CAST(COALESCE({first}, '0') AS BIGINT)"


def register_functions(t_env: StreamTableEnvironment) -> None:
    """PARSE_TICK and MOVING_AVERAGES, for SQL in `t_env` (the jar comes with the job's pipeline.jars)."""
    for name, java_class in FUNCTIONS.items():
        t_env.execute_sql(f"CREATE TEMPORARY SYSTEM FUNCTION IF NOT EXISTS {name} AS '{java_class}' LANGUAGE JAVA")


def transform(t_env: StreamTableEnvironment, ticks_raw: Table, first_written: str = "") -> tuple[Table, Table]:
    """The engine as a function of its input: `ticks_raw` (`raw` STRING, `partition` INT, `offset` BIGINT: the
    Kafka source's record and metadata columns) → (price_ticks rows: time, source, symbol, price, volume, ma_short,
    ma_long; dead-letter records: one JSON string each). Records before their partition's `first_written` offset
    (`partition=offset,...`) only re-fill the windows: no row and no dead letter comes out for them. Registers the
    Java functions and the steps' views in `t_env` (once per environment)."""
    register_functions(t_env)
    t_env.create_temporary_view("ticks_raw_input", ticks_raw)
    t_env.create_temporary_view(
        "ticks_raw_timed",
        t_env.sql_query(
            f"SELECT `raw` AS payload, PROCTIME() AS proc, {_written(first_written)} AS written FROM ticks_raw_input"
        ),
    )
    t_env.create_temporary_view("parsed", t_env.sql_query(PARSED))
    t_env.create_temporary_view("checked", t_env.sql_query(CHECKED))
    rows = t_env.sql_query(
        "SELECT ts AS `time`, source, symbol, price, volume, ma_short, ma_long FROM checked "
        "WHERE (newest_before IS NULL OR ts > newest_before) AND written"
    )
    rejected = _dead_letter("reason", "rejected_raw", "raw_length")
    stale = _dead_letter(STALE_REASON, TICK_JSON, f"CHAR_LENGTH({TICK_JSON})")
    dead_letters = t_env.sql_query(
        f"SELECT {rejected} AS record FROM parsed WHERE reason IS NOT NULL AND written "
        f"UNION ALL SELECT {stale} FROM checked WHERE ts <= newest_before AND written"
    )
    return rows, dead_letters


def build(t_env: StreamTableEnvironment, statements: Any, first_written: str = "") -> None:
    """Add the engine's inserts into `price_ticks` and `dead_letters` (declared by the caller, with the source
    `ticks_raw`) to `statements`; nothing is written for records before `first_written` (`partition=offset,...`)."""
    rows, dead_letters = transform(t_env, t_env.from_path("ticks_raw"), first_written)
    statements.add_insert("price_ticks", rows)
    statements.add_insert("dead_letters", dead_letters)
