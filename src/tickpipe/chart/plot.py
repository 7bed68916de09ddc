"""Draw a chart as a PNG: candles with Bollinger, volume and RSI (mplfinance), or ticks with MA(5) and MA(20)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tickpipe.chart.data import Candles, Series

RSI_LINES = (30.0, 70.0)  # oversold, overbought
MAX_WARNING = 10_000  # read_candles caps the count well below this; mplfinance warns from 250 candles on


def plot_candles(candles: Candles, out: Path) -> Path:
    """Candles (green up, red down) with the Bollinger band, volume per candle below, then RSI(14) with its 30/70
    lines. An indicator with no value in the range (not warm yet, or the band of 1h/1d candles) is left out."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed: we only write a file
    import matplotlib.pyplot as plt
    import mplfinance as mpf  # type: ignore[import-untyped]
    import pandas as pd

    index = pd.DatetimeIndex(candles.times).tz_convert("UTC").tz_localize(None)  # mplfinance wants naive times
    frame = pd.DataFrame(
        {
            "Open": candles.open,
            "High": candles.high,
            "Low": candles.low,
            "Close": candles.close,
            "Volume": _nan(candles.volume),
        },
        index=index,
    )
    has_volume = not frame["Volume"].isna().all()
    rsi_panel = 2 if has_volume else 1
    extra: list[dict[str, Any]] = []

    def line(values: list[float], **style: Any) -> dict[str, Any]:
        # On the panel's own axis: mplfinance would give a series of another magnitude (a flat 30 line, a band far
        # from the candles) a second y axis of its own, and the lines would no longer be on the scale they mark.
        added: dict[str, Any] = mpf.make_addplot(values, secondary_y=False, **style)
        return added

    # Bollinger(20, 2) is one of 1m closes: around 1h or 1d candles it would look like a band of those candles.
    if candles.interval == "1m" and _any(candles.bb_middle):
        extra += [
            line(_nan(candles.bb_upper), color="#1f77b4", width=0.9),
            line(_nan(candles.bb_middle), color="#ff7f0e", width=0.9, linestyle="--"),
            line(_nan(candles.bb_lower), color="#1f77b4", width=0.9),
        ]
    if _any(candles.rsi):
        extra.append(
            line(_nan(candles.rsi), panel=rsi_panel, color="#9467bd", width=1.2, ylabel="RSI(14)", ylim=(0, 100))
        )
        for level in RSI_LINES:
            extra.append(
                line([level] * len(frame), panel=rsi_panel, color="#7f7f7f", linestyle="--", width=0.8, ylim=(0, 100))
            )
    band = "Bollinger(20, 2), " if candles.interval == "1m" and _any(candles.bb_middle) else ""
    rsi = "RSI(14)" if candles.interval == "1m" else "RSI(14) of 1m closes at each close"
    title = f"{candles.symbol} ({candles.source}) {candles.interval} candles, {band}{rsi}"
    # Candles built from ticks (CoinGecko, Yahoo) have no volume: no pane, and none of its options (mplfinance
    # rejects them set to None).
    volume: dict[str, Any] = {"volume": False}
    if has_volume:
        volume = {
            "volume": True,
            # From zero: mplfinance would start the axis near the smallest bar, making equal candles look unequal.
            "volume_ylim": (0, 1.1 * float(frame["Volume"].max())),
            "ylabel_lower": "volume",
            **({"panel_ratios": (3, 1, 1.2)} if _any(candles.rsi) else {}),
        }
    figure, _ = mpf.plot(
        frame,
        type="candle",
        style="yahoo",
        addplot=extra,
        figsize=(12, 8),
        title=title,
        ylabel="price",
        **volume,
        datetime_format="%m-%d %H:%M" if candles.interval != "1d" else "%Y-%m-%d",
        xrotation=0,
        warn_too_much_data=MAX_WARNING,
        returnfig=True,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110, bbox_inches="tight")  # mplfinance's figure has wide empty margins
    plt.close(figure)
    return out


def plot(series: Series, out: Path) -> Path:
    """Price with MA(5) and MA(20): the market dashboard's tick panel as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    figure, top = plt.subplots(figsize=(12, 6), constrained_layout=True)
    times: Any = series.times  # matplotlib plots datetimes through its date converter; its stubs say numbers
    top.plot(times, series.price, label="price", color="#1f77b4", linewidth=1.2)
    # None becomes NaN: matplotlib leaves a gap where the window is not full yet, as the data says.
    top.plot(times, _nan(series.ma_short), label="MA(5)", color="#ff7f0e", linewidth=1.0)
    top.plot(times, _nan(series.ma_long), label="MA(20)", color="#2ca02c", linewidth=1.0)
    top.set_title(f"{series.symbol} ({series.source}) — price, MA(5), MA(20)")
    top.set_ylabel("price")
    top.grid(alpha=0.3)
    top.legend(loc="upper left")
    top.ticklabel_format(axis="y", useOffset=False, style="plain")
    top.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))  # type: ignore[no-untyped-call]
    top.set_xlabel("time (UTC)")
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def _nan(values: list[float | None]) -> list[float]:
    return [math.nan if value is None else value for value in values]


def _any(values: list[float | None]) -> bool:
    return any(value is not None for value in values)
