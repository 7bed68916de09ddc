"""Draw price with MA(5) and MA(20) above, volume below — the market dashboard's panel as a PNG."""

from __future__ import annotations

from pathlib import Path

from tickpipe.chart.data import Series


def plot(series: Series, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display needed: we only write a file
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    figure, (top, bottom) = plt.subplots(
        2, 1, figsize=(12, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]}, constrained_layout=True
    )
    top.plot(series.times, series.price, label="price", color="#1f77b4", linewidth=1.2)
    # None becomes NaN: matplotlib leaves a gap where the window is not full yet, as the data says.
    top.plot(series.times, _nan(series.ma_short), label="MA(5)", color="#ff7f0e", linewidth=1.0)
    top.plot(series.times, _nan(series.ma_long), label="MA(20)", color="#2ca02c", linewidth=1.0)
    top.set_title(f"{series.symbol} — price, MA(5), MA(20)")
    top.set_ylabel("price")
    top.grid(alpha=0.3)
    top.legend(loc="upper left")
    top.ticklabel_format(axis="y", useOffset=False, style="plain")
    width = _bar_width(series)
    bottom.bar(series.times, series.volume, width=width, color="#7f7f7f")
    bottom.set_ylabel("volume")
    bottom.grid(alpha=0.3)
    bottom.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))  # type: ignore[no-untyped-call]
    bottom.set_xlabel("time (UTC)")
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def _nan(values: list[float | None]) -> list[float]:
    return [float("nan") if value is None else value for value in values]


def _bar_width(series: Series) -> float:
    if len(series.times) < 2:
        return 1 / 86400
    span_days = (series.times[-1] - series.times[0]).total_seconds() / 86400
    return 0.8 * span_days / (len(series.times) - 1)
