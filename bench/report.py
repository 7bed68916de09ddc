"""BENCHMARKS.md and the latency-vs-rate plot from one benchmark run."""

from __future__ import annotations

import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil


@dataclass(frozen=True)
class Measurement:
    """One row of a throughput table."""

    name: str
    count: int
    per_second: float
    note: str = ""


@dataclass(frozen=True)
class StepResult:
    """One offered rate of the end-to-end ramp."""

    offered_rate: float
    delivered_rate: float  # rows/s that reached price_ticks during the step
    lag_growth: float  # rows/s by which the backlog (sent - written) grew; ~0 when the pipeline keeps up
    latency_ms: dict[str, float]  # p50, p95, p99, max: exchange event time → row readable
    cpu_percent: dict[str, float] = field(default_factory=dict)  # per stage, 100 = one core
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    # What sent the ticks (load generator or simulator) and its CPU: a benchmark artefact (in production Binance
    # sends), not the pipeline's, so not among the stages'.
    sender: str = "simulator"
    sender_cpu_percent: float = float("nan")

    @property
    def sustained(self) -> bool:
        return self.delivered_rate >= 0.95 * self.offered_rate and self.lag_growth < 0.05 * self.offered_rate


def machine() -> str:
    memory = psutil.virtual_memory().total / 2**30
    return f"{platform.machine()}, {psutil.cpu_count()} cores, {memory:.0f} GiB, {platform.platform(terse=True)}"


def commit() -> str:
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    return result.stdout.strip() or "unknown"


def markdown(
    command: str,
    tables: dict[str, list[Measurement]],
    steps: list[StepResult],
    ceilings: list[Measurement],
    notes: list[str],
) -> str:
    lines = [
        f"## Run of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
        f"- command: `{command}`",
        f"- commit: `{commit()}`",
        f"- machine: {machine()}",
        "",
    ]
    for title, rows in tables.items():
        if not rows:
            continue
        lines += [f"### {title}", "", "| measurement | records | per second | note |", "|---|---:|---:|---|"]
        lines += [f"| {m.name} | {m.count:,} | {m.per_second:,.0f} | {m.note} |" for m in rows]
        lines.append("")
    if steps:
        # A step that drains a start-up backlog delivers more than is offered: what it sustains is the offer.
        best = max((min(s.delivered_rate, s.offered_rate) for s in steps if s.sustained), default=0.0)
        lines += [
            f"### End to end ({steps[0].sender} → ingestor → Kafka → ma-job → PostgreSQL)",
            "",
            "| offered ticks/s | delivered rows/s | backlog growth/s | p50 ms | p95 ms | p99 ms | max ms | sustained |"
            " CPU % (stage) | peak RSS MB (stage) | sender CPU % (not the pipeline's) |",
            "|---:|---:|---:|---:|---:|---:|---:|:---:|---|---|---:|",
        ]
        for s in steps:
            cpu = ", ".join(f"{k} {v:.0f}" for k, v in s.cpu_percent.items())
            rss = ", ".join(f"{k} {v:.0f}" for k, v in s.peak_rss_mb.items())
            lat = s.latency_ms
            lines.append(
                f"| {s.offered_rate:,.0f} | {s.delivered_rate:,.0f} | {s.lag_growth:,.0f} | {lat['p50']:.0f} |"
                f" {lat['p95']:.0f} | {lat['p99']:.0f} | {lat['max']:.0f} | {'yes' if s.sustained else 'no'} |"
                f" {cpu} | {rss} | {s.sender} {s.sender_cpu_percent:.1f} |"
            )
        lines += ["", f"Highest sustained end-to-end rate: **{best:,.0f} ticks/s**."]
        lines += [f"- as a share of {c.name}: {best / c.per_second:.0%}" for c in ceilings]
        lines.append("")
    lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def plot_latency(steps: list[StepResult], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(9, 5), constrained_layout=True)
    rates = [s.offered_rate for s in steps]
    for key, style in (("p50", "o-"), ("p95", "s-"), ("p99", "^-"), ("max", "x--")):
        axis.plot(rates, [s.latency_ms[key] for s in steps], style, label=key)
    axis.set_xscale("log")
    axis.set_yscale("log")
    axis.set_xlabel("offered rate (ticks/s, log)")
    axis.set_ylabel("end-to-end latency (ms, log)")
    axis.set_title("tickpipe: event time → row readable in PostgreSQL")
    for s in steps:
        if not s.sustained:  # its latencies describe a pipeline falling behind: say so on the plot
            axis.annotate(
                f"not sustained:\n{s.delivered_rate:,.0f}/s delivered",
                (s.offered_rate, s.latency_ms["p50"]),
                textcoords="offset points",
                xytext=(0, -30),
                ha="right",
                fontsize=8,
            )
    axis.axhline(500, color="red", linewidth=0.8, linestyle=":", label="500 ms target")
    axis.grid(alpha=0.3, which="both")
    axis.legend()
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out
