"""Read and change `price_alert_levels` through the owner role.

Each row is one alert instance of Grafana's rule `tickpipe-price-cross`, labelled with the source, the symbol and the
level as PostgreSQL prints it (`level::text`), which is also how these functions report levels. A level belongs to
one series, (source, symbol): a level on Binance's BTCUSDT never fires on another source's BTCUSDT.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import psycopg

from tickpipe.config import Settings
from tickpipe.errors import AlertLevelError
from tickpipe.schema import SOURCES, SYMBOL_RULES


@dataclass(frozen=True)
class AlertLevel:
    symbol: str
    level: str  # as in the alert's `level` label
    note: str | None
    source: str = "binance"


def parse_source(text: str) -> str:
    source = text.strip().lower()
    if source not in SYMBOL_RULES:
        raise AlertLevelError(f"unknown source: {text!r} (expected {', '.join(SOURCES)})")
    return source


def parse_symbol(text: str, source: str = "binance") -> str:
    """`text` in the form `source` stores its symbols (btcusdt → BTCUSDT, Bitcoin/USD → bitcoin/usd): the table's
    CHECK (migration 0008) states the same rules."""
    source = parse_source(source)
    rule = SYMBOL_RULES[source]
    symbol = text.strip()
    if not rule.matches(symbol):
        example = rule.stored(rule.example.split(",")[0])
        raise AlertLevelError(f"not a {source} symbol: {text!r} (expected {rule.description}, e.g. {example})")
    return rule.stored(symbol)


def stored_forms(text: str) -> list[str]:
    """`text` as each source whose rule it matches stores it (BTCUSDT for binance and yahoo, bitcoin/usd for
    coingecko): what a symbol given without a source may be. AlertLevelError when no source has it."""
    symbol = text.strip()
    forms = sorted({rule.stored(symbol) for rule in SYMBOL_RULES.values() if rule.matches(symbol)})
    if not forms:
        raise AlertLevelError(f"not a symbol of any source: {text!r} (e.g. BTCUSDT, bitcoin/usd, AAPL)")
    return forms


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


def _level(row: tuple[object, ...]) -> AlertLevel:
    source, symbol, level, note = row[:4]
    return AlertLevel(str(symbol), str(level), None if note is None else str(note), str(source))


def add(
    settings: Settings, symbol: str, level: float, note: str | None = None, source: str = "binance"
) -> tuple[AlertLevel, bool]:
    """Set a level of (source, symbol) (idempotent; a given note replaces the old one); return it and whether it is
    new."""
    with _connect(settings) as conn:
        row = conn.execute(
            """INSERT INTO price_alert_levels (source, symbol, level, note) VALUES (%s, %s, %s, %s)
               ON CONFLICT (source, symbol, level)
               DO UPDATE SET note = coalesce(EXCLUDED.note, price_alert_levels.note)
               RETURNING source, symbol, level::text, note, xmax = 0""",
            (source, symbol, level, note),
        ).fetchone()
    if row is None:  # INSERT ... ON CONFLICT DO UPDATE ... RETURNING always returns the row
        raise AlertLevelError(f"could not set alert level {level:g} for {symbol} from {source}")
    return _level(row), bool(row[4])


def remove(settings: Settings, symbol: str, level: float, source: str = "binance") -> AlertLevel:
    with _connect(settings) as conn:
        row = conn.execute(
            """DELETE FROM price_alert_levels WHERE source = %s AND symbol = %s AND level = %s
               RETURNING source, symbol, level::text, note""",
            (source, symbol, level),
        ).fetchone()
    if row is None:
        raise AlertLevelError(f"no alert level {level:g} for {symbol} from {source} (see `tickpipe alert-level list`)")
    return _level(row)


def list_levels(settings: Settings, symbols: list[str] | None = None, source: str | None = None) -> list[AlertLevel]:
    """The levels, of one source and/or of the given symbols, ordered by source, symbol and level."""
    with _connect(settings) as conn:
        rows = conn.execute(
            """SELECT source, symbol, level::text, note FROM price_alert_levels
               WHERE (%(source)s::text IS NULL OR source = %(source)s)
                 AND (%(symbols)s::text[] IS NULL OR symbol = ANY(%(symbols)s::text[]))
               ORDER BY source, symbol, level""",
            {"source": source, "symbols": symbols},
        ).fetchall()
    return [_level(row) for row in rows]


def has_ticks(settings: Settings, symbol: str, source: str = "binance") -> bool:
    """Whether price_ticks has any row of (source, symbol) (one index probe): a level of a series without ticks never
    fires."""
    with _connect(settings) as conn:
        row = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM price_ticks WHERE source = %s AND symbol = %s)", (source, symbol)
        ).fetchone()
    return bool(row and row[0])
