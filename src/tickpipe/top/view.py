"""Render a Snapshot with rich: a price table with a line per (source, symbol) and a health line per stage."""

from __future__ import annotations

import time

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from tickpipe.stack.memory import MemoryReport, megabytes
from tickpipe.top.snapshot import Snapshot

CROSS_MARKS = {"golden": Text("▲ golden", style="bold green"), "death": Text("▼ death", style="bold red")}


def _number(value: float | None) -> str:
    if value is None:
        return "—"  # the MA's window is not full yet
    return f"{value:,.8g}"


def _rsi(value: float | None) -> Text:
    """RSI(14) of the newest 1m candle, coloured in the overbought (>= 70) and oversold (<= 30) zones."""
    if value is None:
        return Text("—", style="dim")  # as the MAs: not warm yet (15 closes), or no candles for the symbol
    style = "bold red" if value >= 70 else "bold green" if value <= 30 else ""
    return Text(f"{value:.1f}", style=style)


def memory_detail(report: MemoryReport, largest: int = 4) -> str:
    """The total PSS and its largest parts: `1,012 MB in 15 processes: flink-taskmanager 350 MB, ...`."""
    parts = ", ".join(f"{item.name} {megabytes(item.pss)}" for item in report.largest(largest))
    return f"{megabytes(report.total)} in {report.processes} processes: {parts}"


def render(snapshot: Snapshot) -> RenderableType:
    prices = Table(title="tickpipe — prices", expand=True)
    for column in ("source", "symbol", "last", "MA(5)", "MA(20)", "cross", "RSI(14) 1m", "ticks/s", "age"):
        prices.add_column(column, justify="left" if column in {"source", "symbol", "cross"} else "right")
    for row in snapshot.symbols:
        trend = ""
        if row.ma_short is not None and row.ma_long is not None:
            trend = "MA5 > MA20" if row.ma_short > row.ma_long else "MA5 < MA20"
        prices.add_row(
            row.source,
            row.symbol,
            _number(row.price),
            _number(row.ma_short),
            _number(row.ma_long),
            CROSS_MARKS.get(row.cross, Text(trend, style="dim")),
            _rsi(row.rsi_14),
            f"{row.ticks_per_second:.1f}",
            Text(f"{row.age_seconds:.1f} s", style="red" if row.age_seconds > 10 else ""),
        )
    if not snapshot.symbols:
        prices.add_row("(no rows yet)", "", "", "", "", "", "", "", "")

    health = Table(title="pipeline health", expand=True, show_header=False)
    health.add_column("stage")
    health.add_column("state")
    health.add_column("detail")
    for item in snapshot.health:
        health.add_row(item.name, Text("up", style="green") if item.ok else Text("DOWN", style="bold red"), item.detail)
    dlq = "unknown" if snapshot.dlq_records is None else str(snapshot.dlq_records)
    health.add_row("dead letters", Text("", style="dim"), f"{dlq} record(s) in the DLQ topic")
    if snapshot.restarts:
        restarted = ", ".join(f"{name} {count}x" for name, count in sorted(snapshot.restarts.items()))
        health.add_row("restarts", Text("restarted", style="yellow"), f"{restarted} (see the logs under logs/)")
    if snapshot.memory and snapshot.memory.items:
        health.add_row("memory", Text("PSS", style="dim"), memory_detail(snapshot.memory))
    footer = Text(f"updated {time.strftime('%H:%M:%S', time.localtime(snapshot.taken_at))} · Ctrl-C to stop", "dim")
    return Group(prices, health, footer)
