"""Read and change `price_alert_levels` through the owner role.

Each row is one alert instance of Grafana's rule `tickpipe-price-cross`, labelled with the symbol and the level as
PostgreSQL prints it (`level::text`), which is also how these functions report levels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import psycopg

from tickpipe.config import Settings
from tickpipe.errors import AlertLevelError
from tickpipe.schema import SYMBOL_RULE, is_symbol


@dataclass(frozen=True)
class AlertLevel:
    symbol: str
    level: str  # as in the alert's `level` label
    note: str | None


def parse_symbol(text: str) -> str:
    symbol = text.strip().upper()
    if not is_symbol(symbol):  # the table's CHECK states the same rule
        raise AlertLevelError(f"not a symbol: {text!r} (expected {SYMBOL_RULE}, e.g. BTCUSDT)")
    return symbol


def parse_level(text: str) -> float:
    try:
        level = float(text)
    except ValueError:
        raise AlertLevelError(f"not a price level: {text!r} (expected a positive number, e.g. 100000)") from None
    if not math.isfinite(level) or level <= 0:
        raise AlertLevelError(f"a price level must be a positive number, got {text!r}")
    return level


def _connect(settings: Settings) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(settings.conninfo("owner"), connect_timeout=5)


def add(settings: Settings, symbol: str, level: float, note: str | None = None) -> tuple[AlertLevel, bool]:
    """Set a level (idempotent; a given note replaces the old one); return it and whether it is new."""
    with _connect(settings) as conn:
        row = conn.execute(
            """INSERT INTO price_alert_levels (symbol, level, note) VALUES (%s, %s, %s)
               ON CONFLICT (symbol, level) DO UPDATE SET note = coalesce(EXCLUDED.note, price_alert_levels.note)
               RETURNING symbol, level::text, note, xmax = 0""",
            (symbol, level, note),
        ).fetchone()
    if row is None:  # INSERT ... ON CONFLICT DO UPDATE ... RETURNING always returns the row
        raise AlertLevelError(f"could not set alert level {level:g} for {symbol}")
    return AlertLevel(str(row[0]), str(row[1]), None if row[2] is None else str(row[2])), bool(row[3])


def remove(settings: Settings, symbol: str, level: float) -> AlertLevel:
    with _connect(settings) as conn:
        row = conn.execute(
            "DELETE FROM price_alert_levels WHERE symbol = %s AND level = %s RETURNING symbol, level::text, note",
            (symbol, level),
        ).fetchone()
    if row is None:
        raise AlertLevelError(f"no alert level {level:g} for {symbol} (see `tickpipe alert-level list`)")
    return AlertLevel(str(row[0]), str(row[1]), None if row[2] is None else str(row[2]))


def list_levels(settings: Settings, symbol: str | None = None) -> list[AlertLevel]:
    with _connect(settings) as conn:
        rows = conn.execute(
            """SELECT symbol, level::text, note FROM price_alert_levels
               WHERE %(symbol)s::text IS NULL OR symbol = %(symbol)s ORDER BY symbol, level""",
            {"symbol": symbol},
        ).fetchall()
    return [AlertLevel(str(s), str(level), None if note is None else str(note)) for s, level, note in rows]


def has_ticks(settings: Settings, symbol: str) -> bool:
    """Whether price_ticks has any row of `symbol` (one index probe): a level for an unknown symbol never fires."""
    with _connect(settings) as conn:
        row = conn.execute("SELECT EXISTS (SELECT 1 FROM price_ticks WHERE symbol = %s)", (symbol,)).fetchone()
    return bool(row and row[0])
