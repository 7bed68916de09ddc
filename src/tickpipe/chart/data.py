"""Read what a chart draws: one series' candles (with their indicators) or its ticks, from the database.

A series is (source, symbol): the same symbol quoted by two sources is two series, never mixed."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg

from tickpipe.config import Settings
from tickpipe.errors import ChartError
from tickpipe.schema import SOURCES, SYMBOL_RULES

MAX_POINTS = 2000
MAX_CANDLES = 1500  # beyond this a candle is under a pixel wide: ask for a longer interval instead
INTERVALS = {"1m": timedelta(minutes=1), "1h": timedelta(hours=1), "1d": timedelta(days=1)}
# The default look-back per interval: about 120 candles, a readable chart.
DEFAULT_SINCE = {"1m": "2h", "1h": "5d", "1d": "120d"}
_DURATION = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}

# Last value in each bucket for price and the MAs (what the chart would have shown at that moment). date_bin works
# on plain PostgreSQL and on TimescaleDB alike. No volume: the ticker's is a 24 h rolling total, not trading in a
# bucket (the candles carry the per-interval volume).
BUCKETED_SQL = """
SELECT date_bin(%(bucket)s, time, %(since)s) AS bucket,
       (array_agg(price ORDER BY time DESC))[1],
       (array_agg(ma_short ORDER BY time DESC))[1],
       (array_agg(ma_long ORDER BY time DESC))[1]
FROM price_ticks
WHERE source = %(source)s AND symbol = %(symbol)s AND time >= %(since)s
GROUP BY bucket ORDER BY bucket
"""
RAW_SQL = """
SELECT time, price, ma_short, ma_long FROM price_ticks
WHERE source = %(source)s AND symbol = %(symbol)s AND time >= %(since)s ORDER BY time
"""

# A candle with the indicators of its close. They are computed on 1m closes only, so a 1h or 1d candle takes them
# from the 1m candle that closes it (its last minute): RSI(14) is then the 1m RSI as of the candle's close. The
# Bollinger band is drawn for 1m candles only (a 1m band around hourly candles would mislead).
# candles_1h/candles_1d are fixed relation names picked from INTERVALS, never user text.
CANDLES_SQL = """
SELECT c.open_time, c.open, c.high, c.low, c.close, c.volume, m.rsi_14, m.bb_upper, m.bb_middle, m.bb_lower
FROM {relation} c
LEFT JOIN candles_1m m ON m.source = c.source AND m.symbol = c.symbol
                      AND m.open_time = c.open_time + %(length)s - interval '1 minute'
WHERE c.source = %(source)s AND c.symbol = %(symbol)s AND c.open_time >= %(since)s
ORDER BY c.open_time
"""


@dataclass(frozen=True)
class Series:
    """Ticks of one series, (source, symbol) (downsampled to MAX_POINTS buckets over a long range)."""

    symbol: str
    source: str
    times: list[datetime]
    price: list[float]
    ma_short: list[float | None]
    ma_long: list[float | None]


@dataclass(frozen=True)
class Candles:
    """Closed candles of one symbol and source, oldest first; None where a value is NULL."""

    symbol: str
    source: str
    interval: str
    times: list[datetime]  # open times
    open: list[float]
    high: list[float]
    low: list[float]
    close: list[float]
    volume: list[float | None]  # traded in the candle (NULL for sources without an interval volume)
    rsi: list[float | None]  # RSI(14) of 1m closes at the candle's close
    bb_upper: list[float | None]  # Bollinger(20, 2) of 1m closes: 1m candles only
    bb_middle: list[float | None]
    bb_lower: list[float | None]


def parse_duration(text: str) -> timedelta:
    match = _DURATION.match(text.strip())
    if not match:
        raise ChartError(f"--since expects a duration like 90s, 15m, 6h or 7d, got {text!r}")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def parse_symbol(text: str, source: str) -> str:
    """`text` as `source` stores its symbols (btcusdt → BTCUSDT, Bitcoin/USD → bitcoin/usd); ChartError naming the
    source's rule when it is not one of them (tickpipe.schema.SYMBOL_RULES)."""
    rule = SYMBOL_RULES.get(source)
    if rule is None:
        raise ChartError(f"unknown source {source!r} (expected {', '.join(SOURCES)})")
    symbol = text.strip()
    if not rule.matches(symbol):
        raise ChartError(f"not a {source} symbol: {text!r} (expected {rule.description}, e.g. {example(source)})")
    return rule.stored(symbol)


def example(source: str) -> str:
    """A symbol of `source` as it is stored: BTCUSDT, bitcoin/usd, AAPL."""
    rule = SYMBOL_RULES[source]
    return rule.stored(rule.example.split(",")[0])


def read_series(settings: Settings, symbol: str, since: timedelta, source: str = "binance") -> Series:
    """The ticks of (source, symbol) in the `since` before its newest one (inclusive)."""
    with psycopg.connect(settings.conninfo("reader"), connect_timeout=5) as conn:
        newest = conn.execute(
            "SELECT max(time) FROM price_ticks WHERE source = %s AND symbol = %s", (source, symbol)
        ).fetchone()
        if not newest or newest[0] is None:
            raise ChartError(
                f"no rows for {symbol} from {source} in price_ticks ({source} symbols are stored like "
                f"{example(source)}; --source picks another source)"
            )
        # Anchor the range at the newest row, not the wall clock: a chart of a stopped pipeline still shows data.
        start = newest[0] - since
        count_row = conn.execute(
            "SELECT count(*) FROM price_ticks WHERE source = %s AND symbol = %s AND time >= %s",
            (source, symbol, start),
        ).fetchone()
        count = count_row[0] if count_row else 0
        params = {"source": source, "symbol": symbol, "since": start, "bucket": since / MAX_POINTS}
        rows = conn.execute(BUCKETED_SQL if count > MAX_POINTS else RAW_SQL, params).fetchall()
    return Series(
        symbol=symbol,
        source=source,
        times=[row[0] for row in rows],
        price=[row[1] for row in rows],
        ma_short=[row[2] for row in rows],
        ma_long=[row[3] for row in rows],
    )


def read_candles(settings: Settings, symbol: str, source: str, interval: str, since: timedelta) -> Candles:
    """The candles of the `since` before the newest one (inclusive)."""
    length = INTERVALS[interval]
    if since / length > MAX_CANDLES:
        longer = "1h" if interval == "1m" else "1d"
        hint = f"use --interval {longer} or a shorter --since" if interval != "1d" else "use a shorter --since"
        raise ChartError(
            f"--since {_text(since)} is {since // length} {interval} candles, at most {MAX_CANDLES}: {hint}"
        )
    relation = f"candles_{interval}"
    with psycopg.connect(settings.conninfo("reader"), connect_timeout=5) as conn:
        newest = conn.execute(
            f"SELECT max(open_time) FROM {relation} WHERE source = %s AND symbol = %s",  # noqa: S608 - fixed name
            (source, symbol),
        ).fetchone()
        if not newest or newest[0] is None:
            raise ChartError(
                f"no candles for {symbol} from {source} in {relation} yet (the ma-job writes 1m candles as they "
                f"close; {source} symbols are stored like {example(source)}): try again in a minute, or --ticks for "
                "the raw prices"
            )
        params = {"source": source, "symbol": symbol, "since": newest[0] - since, "length": length}
        rows = conn.execute(CANDLES_SQL.format(relation=relation), params).fetchall()
    return Candles(
        symbol=symbol,
        source=source,
        interval=interval,
        times=[row[0] for row in rows],
        open=[row[1] for row in rows],
        high=[row[2] for row in rows],
        low=[row[3] for row in rows],
        close=[row[4] for row in rows],
        volume=[row[5] for row in rows],
        rsi=[row[6] for row in rows],
        bb_upper=[row[7] for row in rows],
        bb_middle=[row[8] for row in rows],
        bb_lower=[row[9] for row in rows],
    )


def _text(duration: timedelta) -> str:
    seconds = int(duration.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
