"""Read one symbol's rows for a chart, downsampled so a long range stays a few thousand points."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg

from tickpipe.config import Settings
from tickpipe.errors import ChartError

MAX_POINTS = 2000
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}

# Last value in each bucket for price and the MAs (what the chart would have shown at that moment), the sum
# for volume. date_bin works on plain PostgreSQL and on TimescaleDB alike.
BUCKETED_SQL = """
SELECT date_bin(%(bucket)s, time, %(since)s) AS bucket,
       (array_agg(price ORDER BY time DESC))[1],
       (array_agg(ma_short ORDER BY time DESC))[1],
       (array_agg(ma_long ORDER BY time DESC))[1],
       sum(volume)
FROM price_ticks
WHERE symbol = %(symbol)s AND time >= %(since)s
GROUP BY bucket ORDER BY bucket
"""
RAW_SQL = """
SELECT time, price, ma_short, ma_long, volume FROM price_ticks
WHERE symbol = %(symbol)s AND time >= %(since)s ORDER BY time
"""


@dataclass(frozen=True)
class Series:
    symbol: str
    times: list[datetime]
    price: list[float]
    ma_short: list[float | None]
    ma_long: list[float | None]
    volume: list[float]


def parse_duration(text: str) -> timedelta:
    match = _DURATION.match(text.strip())
    if not match:
        raise ChartError(f"--since expects a duration like 90s, 15m, 6h or 7d, got {text!r}")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def read_series(settings: Settings, symbol: str, since: timedelta) -> Series:
    with psycopg.connect(settings.conninfo("reader"), connect_timeout=5) as conn:
        newest = conn.execute("SELECT max(time) FROM price_ticks WHERE symbol = %s", (symbol,)).fetchone()
        if not newest or newest[0] is None:
            raise ChartError(f"no rows for symbol {symbol} in price_ticks (symbols are upper case, e.g. BTCUSDT)")
        # Anchor the range at the newest row, not the wall clock: a chart of a stopped pipeline still shows data.
        start = newest[0] - since
        count_row = conn.execute(
            "SELECT count(*) FROM price_ticks WHERE symbol = %s AND time >= %s", (symbol, start)
        ).fetchone()
        count = count_row[0] if count_row else 0
        params = {"symbol": symbol, "since": start, "bucket": since / MAX_POINTS}
        rows = conn.execute(BUCKETED_SQL if count > MAX_POINTS else RAW_SQL, params).fetchall()
    return Series(
        symbol=symbol,
        times=[row[0] for row in rows],
        price=[row[1] for row in rows],
        ma_short=[row[2] for row in rows],
        ma_long=[row[3] for row in rows],
        volume=[row[4] for row in rows],
    )
