"""PNG charts of a backtest: equity (with the buy-and-hold benchmark), drawdown, trade markers.

Drawn with matplotlib's object API (``Figure`` + ``FigureCanvasAgg``), never ``pyplot``: no
global figure registry, no backend selection, no GUI, so it works headless and in worker
processes. Every chart returns PNG bytes; the report writes them to files and embeds the same
bytes in the HTML.

Long curves (a year of 1-minute candles is 525 600 points) are reduced to at most
``MAX_POINTS`` points before drawing, keeping each bucket's minimum and maximum so that a spike
or the deepest drawdown is never smoothed away. PNGs are written without the ``Software``
metadata chunk, so the same inputs give the same bytes with a given matplotlib version.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from decimal import Decimal

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
from matplotlib.figure import Figure

from trading.performance import drawdown_series

MAX_POINTS = 4000
"""Most points drawn per line; finer detail than this is invisible at report resolution."""

_SIZE = (10.0, 4.0)
_DPI = 100
_MARKERS_MAX = 2000  # beyond this, trade markers become a solid smear; thin them evenly


def _times(ts_ns: Sequence[int]) -> np.ndarray:
    return np.asarray(ts_ns, dtype="int64").astype("datetime64[ns]")


def _reduce(ts: Sequence[int], ys: Sequence[float],
            max_points: int = MAX_POINTS) -> tuple[list[int], list[float]]:
    """Keep the first/last point and each bucket's min and max (in time order)."""
    n = len(ts)
    if n <= max_points:
        return list(ts), list(ys)
    buckets = max_points // 2
    out_t: list[int] = []
    out_y: list[float] = []
    for b in range(buckets):
        lo = b * n // buckets
        hi = max((b + 1) * n // buckets, lo + 1)
        seg = range(lo, hi)
        i_min = min(seg, key=ys.__getitem__)
        i_max = max(seg, key=ys.__getitem__)
        for i in sorted({i_min, i_max}):
            out_t.append(ts[i])
            out_y.append(ys[i])
    if out_t[-1] != ts[-1]:
        out_t.append(ts[-1])
        out_y.append(ys[-1])
    return out_t, out_y


def _figure(title: str) -> tuple[Figure, Axes]:
    fig = Figure(figsize=_SIZE, dpi=_DPI, layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=11)
    ax.grid(True, alpha=0.3)
    locator = AutoDateLocator()  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    return fig, ax


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()


def equity_png(equity: Sequence[tuple[int, Decimal]],
               benchmark: Sequence[tuple[int, Decimal]] = (), *,
               title: str = "Equity", currency: str = "") -> bytes:
    """The equity curve, with the buy-and-hold benchmark dashed when given."""
    fig, ax = _figure(title)
    for curve, label, style in ((equity, "strategy", "-"), (benchmark, "buy & hold", "--")):
        if not curve:
            continue
        t, y = _reduce([p[0] for p in curve], [float(p[1]) for p in curve])
        ax.plot(_times(t), y, style, linewidth=1.1, label=label)
    ax.set_ylabel(f"equity {currency}".strip())
    if equity and benchmark:
        ax.legend(loc="best", fontsize=9)
    return _png(fig)


def drawdown_png(equity: Sequence[tuple[int, Decimal]], *, title: str = "Drawdown") -> bytes:
    """Drawdown from the running peak, in percent, as a filled area below zero."""
    fig, ax = _figure(title)
    series = drawdown_series(equity)
    if series:
        t, y = _reduce([p[0] for p in series], [-100.0 * p[1] for p in series])
        x = _times(t)
        ax.fill_between(x, y, 0.0, color="tab:red", alpha=0.35,
                        linewidth=0)
        ax.plot(x, y, color="tab:red", linewidth=0.8)
    ax.set_ylabel("drawdown %")
    return _png(fig)


def trades_png(prices: Sequence[tuple[int, Decimal]],
               entries: Sequence[tuple[int, Decimal, bool]],
               exits: Sequence[tuple[int, Decimal, bool]], *, title: str) -> bytes:
    """A price line with a marker per trade leg.

    Args:
        prices: ``(ts_ns, price)`` of the symbol (closes); may be empty, then only markers.
        entries: ``(ts_ns, price, is_buy)`` per entry fill.
        exits: ``(ts_ns, price, is_buy)`` per exit fill.
        title: chart title (the symbol).
    """
    fig, ax = _figure(title)
    if prices:
        t, y = _reduce([p[0] for p in prices], [float(p[1]) for p in prices])
        ax.plot(_times(t), y, color="0.35", linewidth=0.8,
                label="price")
    for legs, kind in ((entries, "entry"), (exits, "exit")):
        step = max(1, len(legs) // _MARKERS_MAX)
        for is_buy in (True, False):
            pts = [leg for leg in legs[::step] if leg[2] is is_buy]
            if not pts:
                continue
            ax.scatter(
                _times([p[0] for p in pts]), [float(p[1]) for p in pts],
                marker="^" if is_buy else "v",
                color="tab:green" if is_buy else "tab:red",
                edgecolors="black" if kind == "entry" else "none",
                s=28, zorder=3, linewidths=0.5,
                label=f"{kind} {'buy' if is_buy else 'sell'}")
    if entries or exits:
        ax.legend(loc="best", fontsize=8)
    ax.set_ylabel("price")
    return _png(fig)
