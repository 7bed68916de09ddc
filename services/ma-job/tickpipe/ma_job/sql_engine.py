"""The `sql` engine: parsing, de-duplication and both moving averages as Flink SQL, all in the JVM.

    ticks_raw ─ parse + validate ─┬─ (invalid) ─────────────────────────────────────────── dead_letters
                                  └─ running MAX(time) ─ LAG(max) ─┬─ (not newer) ─────── dead_letters
                                                                   └─ LAG(price, 1..19) ─ price_ticks

Windows are ordered by processing time: Kafka's key = symbol keeps each symbol's ticks in order, and no
watermark means an idle partition cannot stall the job. MA(n) is the plain sum of the current price and n-1 LAGs
(never a running sum with retraction, which leaves rounding residue after a jump across orders of magnitude),
NULL until n ticks of the symbol have been seen. The rules mirror `tickpipe.schema.parse_tick`, reason texts
included; the timestamp must be in the canonical form the ingestor writes (`2026-11-24T12:00:00.123Z`).
"""

# The SQL below is assembled from constants of this module only, never from input: S608 does not apply.
# ruff: noqa: S608
from __future__ import annotations

from typing import Any

from pyflink.table import DataTypes, Schema, StreamTableEnvironment

from tickpipe.ma_job.indicators import LONG_WINDOW, SHORT_WINDOW
from tickpipe.ma_job.tables import STAGE

ISO_MS = "yyyy-MM-dd''T''HH:mm:ss.SSS''Z''"

PARSED = f"""
SELECT payload, proc, symbol, ts, price, volume,
  CASE
    WHEN payload IS NULL OR NOT (payload IS JSON OBJECT) THEN 'not JSON'
    WHEN missing <> '' THEN CONCAT('missing fields: ', missing)
    WHEN symbol IS NULL OR NOT REGEXP(symbol, '^[A-Za-z0-9]+$')
      THEN CONCAT('invalid symbol: ', COALESCE(symbol, 'null'))
    WHEN ts IS NULL THEN CONCAT('invalid timestamp: ', COALESCE(ts_text, 'null'))
    WHEN price IS NULL THEN 'price is not a number'
    WHEN price - price <> 0 THEN 'price is not finite'
    WHEN price <= 0 THEN CONCAT('price must be positive, got ', CAST(price AS STRING))
    WHEN volume IS NULL THEN 'volume is not a number'
    WHEN volume - volume <> 0 THEN 'volume is not finite'
    WHEN volume < 0 THEN CONCAT('volume must not be negative, got ', CAST(volume AS STRING))
  END AS reason
FROM (
  SELECT payload, proc,
    UPPER(JSON_VALUE(payload, '$.symbol')) AS symbol,
    JSON_VALUE(payload, '$.timestamp') AS ts_text,
    TO_TIMESTAMP(JSON_VALUE(payload, '$.timestamp'), '{ISO_MS}') AS ts,
    -- As text, then cast: JSON_VALUE ... RETURNING DOUBLE hands an integer literal (-1) over as an Integer, and
    -- the generated code fails with a ClassCastException.
    TRY_CAST(JSON_VALUE(payload, '$.price') AS DOUBLE) AS price,
    TRY_CAST(JSON_VALUE(payload, '$.volume') AS DOUBLE) AS volume,
    CONCAT_WS(', ',
      CASE WHEN NOT JSON_EXISTS(payload, '$.symbol') THEN 'symbol' END,
      CASE WHEN NOT JSON_EXISTS(payload, '$.timestamp') THEN 'timestamp' END,
      CASE WHEN NOT JSON_EXISTS(payload, '$.price') THEN 'price' END,
      CASE WHEN NOT JSON_EXISTS(payload, '$.volume') THEN 'volume' END,
      CASE WHEN NOT JSON_EXISTS(payload, '$.source') THEN 'source' END) AS missing
  FROM ticks_raw_timed
)"""

# Running max of the symbol's event times, including the current row...
RUNNING_MAX = """
SELECT payload, symbol, ts, price, volume,
  MAX(ts) OVER (PARTITION BY symbol ORDER BY proc ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS max_ts
FROM parsed WHERE reason IS NULL"""

# ...so the previous row's running max is the newest time seen before this tick.
NEWEST_BEFORE = """
SELECT payload, symbol, ts, price, volume, proc,
  LAG(max_ts, 1) OVER (PARTITION BY symbol ORDER BY proc) AS newest_before
FROM with_max"""


def _dead_letter(reason: str) -> str:
    return (
        f"JSON_OBJECT(KEY 'reason' VALUE {reason}, KEY 'stage' VALUE '{STAGE}', "
        f"KEY 'source' VALUE CAST(NULL AS STRING), KEY 'raw' VALUE payload, "
        f"KEY 'rejected_at' VALUE DATE_FORMAT(CURRENT_TIMESTAMP, '{ISO_MS}'))"
    )


STALE_REASON = (
    "CONCAT(CASE WHEN ts = newest_before THEN 'duplicate' ELSE 'out-of-order' END, ' tick: event time ', "
    f"DATE_FORMAT(ts, '{ISO_MS}'), ' is not after the symbol''s latest ', DATE_FORMAT(newest_before, '{ISO_MS}'))"
)


def _moving_average(n: int) -> str:
    terms = " + ".join(["price", *(f"LAG(price, {k}) OVER w" for k in range(1, n))])
    return f"CASE WHEN LAG(price, {n - 1}) OVER w IS NULL THEN NULL ELSE ({terms}) / {n} END"


AVERAGES = f"""
SELECT ts, symbol, price, volume,
  {_moving_average(SHORT_WINDOW)} AS ma_short,
  {_moving_average(LONG_WINDOW)} AS ma_long
FROM checked WHERE newest_before IS NULL OR ts > newest_before
WINDOW w AS (PARTITION BY symbol ORDER BY proc)"""


def build(t_env: StreamTableEnvironment, statements: Any) -> None:
    """Add the engine's inserts into `price_ticks` and `dead_letters` (declared by the caller) to `statements`."""
    t_env.create_temporary_view(
        "ticks_raw_timed", t_env.sql_query("SELECT `raw` AS payload, PROCTIME() AS proc FROM ticks_raw")
    )
    t_env.create_temporary_view("parsed", t_env.sql_query(PARSED))
    with_max = t_env.sql_query(RUNNING_MAX)
    # Through a (JVM-only) DataStream hop with a fresh processing-time column: Flink 1.20's planner rejects an
    # OVER aggregate stacked directly on a ROWS-framed one ("Field names must be unique: w0$o0", FLINK-35976).
    schema = (
        Schema.new_builder()
        .column("payload", DataTypes.STRING())
        .column("symbol", DataTypes.STRING())
        .column("ts", DataTypes.TIMESTAMP(3))
        .column("price", DataTypes.DOUBLE())
        .column("volume", DataTypes.DOUBLE())
        .column("max_ts", DataTypes.TIMESTAMP(3))
        .column_by_expression("proc", "PROCTIME()")
        .build()
    )
    t_env.create_temporary_view("with_max", t_env.from_data_stream(t_env.to_data_stream(with_max), schema))
    t_env.create_temporary_view("checked", t_env.sql_query(NEWEST_BEFORE))
    statements.add_insert_sql(f"INSERT INTO price_ticks {AVERAGES}")
    statements.add_insert_sql(
        f"INSERT INTO dead_letters SELECT {_dead_letter('reason')} FROM parsed WHERE reason IS NOT NULL "
        f"UNION ALL SELECT {_dead_letter(STALE_REASON)} FROM checked WHERE ts <= newest_before"
    )
