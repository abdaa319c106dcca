"""Performance metrics of an equity curve and a list of closed trades: pure formulas, no I/O.

Conventions (one place, so every report and test reads them the same way):

* **Money is Decimal and exact.** Fees, turnover, P&L sums and drawdown amounts are summed in
  ``Decimal`` under a wide local context (``_MONEY_PREC`` significant digits), so a total is the
  exact sum of the values as written. Averages of money (average win/loss) are one Decimal
  division, rounded to that precision.
* **Ratios and statistics are float.** Returns, volatility, Sharpe, Sortino, CAGR, Calmar, the
  drawdown fraction, win rate, profit factor and exposure are dimensionless; each return is
  computed in Decimal (``E_i / E_(i-1) - 1``) and only then converted to float, and float sums use
  :func:`math.fsum` so the result does not depend on summation order.
* **Time is int nanoseconds since the Unix epoch, UTC.** Markets trade 24/7, so a year is
  ``365 × 86 400`` seconds (:data:`YEAR_NS`); there is no 252-trading-day convention.
* **Undefined is None.** A metric that has no meaningful value (Sharpe of a flat curve, profit
  factor without a losing trade, CAGR over a zero-length span) is ``None``, never ``inf`` or
  ``nan``, so it serialises to JSON ``null``.
* Risk-free rate and target return are 0 (cash in the quote currency earns nothing here).

Sampling: the equity curve is read as a series sampled at a regular interval (one point per
candle in a backtest). The interval is the **median of the positive gaps** between consecutive
timestamps, which ignores a few missing candles; a gap in the data counts as a single period for
the return series (gaps are reported by the loaders, never filled here).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext
from itertools import pairwise
from typing import Protocol

DAY_NS = 86_400 * 1_000_000_000
"""One day in nanoseconds."""

YEAR_NS = 365 * DAY_NS
"""One 24/7 year (365 days) in nanoseconds: the annualisation base of every metric."""

_MONEY_PREC = 60
_ZERO = Decimal(0)

EquityCurve = Sequence[tuple[int, Decimal]]
"""``(ts_ns, equity)`` pairs in non-decreasing time order."""


class TradeLike(Protocol):
    """What the trade metrics read from a closed round trip (``backtest`` trades satisfy it).

    ``pnl`` is the trade's net profit in the quote currency, after the fees of both legs;
    ``fees`` is the total of those fees.
    """

    @property
    def entry_time(self) -> int: ...
    @property
    def exit_time(self) -> int: ...
    @property
    def entry_price(self) -> Decimal: ...
    @property
    def exit_price(self) -> Decimal: ...
    @property
    def quantity(self) -> Decimal: ...
    @property
    def fees(self) -> Decimal: ...
    @property
    def pnl(self) -> Decimal: ...


def money_sum(values: Iterable[Decimal]) -> Decimal:
    """Exact sum of Decimal amounts (60 significant digits, far beyond any balance)."""
    with localcontext() as ctx:
        ctx.prec = _MONEY_PREC
        total = _ZERO
        for v in values:
            total += v
        return total


# --------------------------------------------------------------------------------------------
# Sampling and returns
# --------------------------------------------------------------------------------------------


def sampling_interval_ns(timestamps: Sequence[int]) -> int | None:
    """The curve's sampling interval: the median of the positive gaps between timestamps.

    The median (the lower middle value for an even count, so the result is always one of the
    observed gaps) is robust to the odd missing candle. ``None`` with fewer than two distinct
    timestamps.
    """
    gaps = sorted(b - a for a, b in pairwise(timestamps) if b > a)
    if not gaps:
        return None
    return gaps[(len(gaps) - 1) // 2]


def periods_per_year(timestamps: Sequence[int]) -> float | None:
    """Sampling periods in a 24/7 year: ``YEAR_NS / sampling_interval_ns`` (525 600 for 1m)."""
    step = sampling_interval_ns(timestamps)
    return None if step is None else YEAR_NS / step


def period_returns(equity: EquityCurve) -> list[float]:
    """Simple returns between consecutive points: ``r_i = E_i / E_(i-1) - 1`` for i = 1..n-1.

    Computed in Decimal, then converted to float. A return out of a non-positive equity is not
    defined; such a step is skipped (a ruined account has no further returns to speak of).
    """
    out: list[float] = []
    with localcontext() as ctx:
        ctx.prec = _MONEY_PREC
        for (_, prev), (_, cur) in pairwise(equity):
            if prev > 0:
                out.append(float(cur / prev - 1))
    return out


def _mean(xs: Sequence[float]) -> float:
    return math.fsum(xs) / len(xs)


def _stdev(xs: Sequence[float]) -> float | None:
    """Sample standard deviation (ddof = 1); ``None`` with fewer than two values."""
    if len(xs) < 2:
        return None
    m = _mean(xs)
    return math.sqrt(math.fsum((x - m) ** 2 for x in xs) / (len(xs) - 1))


# --------------------------------------------------------------------------------------------
# Equity-curve metrics
# --------------------------------------------------------------------------------------------


def total_return(equity: EquityCurve) -> float | None:
    """Total return ``E_last / E_first - 1`` (0.25 = +25 %); ``None`` if empty or E_first <= 0."""
    if not equity or equity[0][1] <= 0:
        return None
    with localcontext() as ctx:
        ctx.prec = _MONEY_PREC
        return float(equity[-1][1] / equity[0][1] - 1)


def cagr(equity: EquityCurve) -> float | None:
    """Compound annual growth rate ``(E_last / E_first) ** (1 / years) - 1``.

    ``years = (t_last - t_first) / YEAR_NS`` (365-day years). ``-1.0`` when the final equity is
    not positive (everything lost); ``None`` over a zero-length span or when E_first <= 0.
    Over spans much shorter than a year the figure extrapolates wildly; that is the definition.
    """
    if len(equity) < 2 or equity[0][1] <= 0:
        return None
    span = equity[-1][0] - equity[0][0]
    if span <= 0:
        return None
    if equity[-1][1] <= 0:
        return -1.0
    with localcontext() as ctx:
        ctx.prec = _MONEY_PREC
        growth = float(equity[-1][1] / equity[0][1])
    try:
        return float(growth ** (YEAR_NS / span) - 1.0)
    except OverflowError:
        return None


def annualized_volatility(equity: EquityCurve) -> float | None:
    """Annualised volatility ``stdev(r, ddof=1) * sqrt(P)`` of the period returns.

    ``r`` is :func:`period_returns`, ``P`` is :func:`periods_per_year`. ``None`` with fewer
    than two returns.
    """
    sd = _stdev(period_returns(equity))
    ppy = periods_per_year([t for t, _ in equity])
    if sd is None or ppy is None:
        return None
    return sd * math.sqrt(ppy)


def sharpe_ratio(equity: EquityCurve) -> float | None:
    """Annualised Sharpe ratio ``mean(r) / stdev(r, ddof=1) * sqrt(P)``, risk-free rate 0.

    ``r`` is :func:`period_returns` (simple, not log), ``P`` is :func:`periods_per_year`.
    ``None`` with fewer than two returns or a zero standard deviation.
    """
    r = period_returns(equity)
    sd = _stdev(r)
    ppy = periods_per_year([t for t, _ in equity])
    if sd is None or sd == 0 or ppy is None:
        return None
    return _mean(r) / sd * math.sqrt(ppy)


def sortino_ratio(equity: EquityCurve) -> float | None:
    """Annualised Sortino ratio ``mean(r) / DD * sqrt(P)``, target return 0.

    The downside deviation is ``DD = sqrt(sum(min(r_i, 0) ** 2) / N)`` over **all** N period
    returns (Sortino & Price's lower partial moment: the positive returns count as zeros, and
    the divisor is N, not N - 1). ``None`` without returns or without any negative return.
    """
    r = period_returns(equity)
    ppy = periods_per_year([t for t, _ in equity])
    if not r or ppy is None:
        return None
    dd = math.sqrt(math.fsum(min(x, 0.0) ** 2 for x in r) / len(r))
    if dd == 0:
        return None
    return _mean(r) / dd * math.sqrt(ppy)


@dataclass(frozen=True, slots=True, kw_only=True)
class Drawdown:
    """The deepest drawdown and the longest time under water of an equity curve.

    Attributes:
        max_drawdown: deepest fall below the running peak as a fraction of that peak,
            ``max_t (1 - E_t / max_{s<=t} E_s)``; 0.0 for a curve that never falls.
        max_drawdown_amount: the same fall in money, ``peak - trough`` (Decimal, exact).
        peak_ts: timestamp of the peak before the deepest drawdown (None if none).
        trough_ts: timestamp of the deepest point (None if none).
        max_duration_ns: longest time under water: from a peak to the first later point at or
            above it, or to the curve's last timestamp if it never recovers.
    """

    max_drawdown: float
    max_drawdown_amount: Decimal
    peak_ts: int | None
    trough_ts: int | None
    max_duration_ns: int


def drawdown_series(equity: EquityCurve) -> list[tuple[int, float]]:
    """``(ts, 1 - E_t / running_peak)`` per point: 0 at a new high, positive below it."""
    out: list[tuple[int, float]] = []
    peak: Decimal | None = None
    with localcontext() as ctx:
        ctx.prec = _MONEY_PREC
        for ts, eq in equity:
            peak = eq if peak is None or eq > peak else peak
            out.append((ts, float(1 - eq / peak) if peak > 0 else 0.0))
    return out


def max_drawdown(equity: EquityCurve) -> Drawdown:
    """Deepest drawdown and longest underwater period; see :class:`Drawdown` for definitions."""
    best = 0.0
    best_amount = _ZERO
    best_peak: int | None = None
    best_trough: int | None = None
    longest = 0
    peak: Decimal | None = None
    peak_ts = 0
    with localcontext() as ctx:
        ctx.prec = _MONEY_PREC
        for ts, eq in equity:
            if peak is None or eq >= peak:
                # Recovered (or a new high): the underwater spell since peak_ts ends here.
                if peak is not None:
                    longest = max(longest, ts - peak_ts)
                peak, peak_ts = eq, ts
                continue
            dd = float(1 - eq / peak) if peak > 0 else 0.0
            if dd > best:
                best, best_amount, best_peak, best_trough = dd, peak - eq, peak_ts, ts
        if equity and peak is not None and equity[-1][1] < peak:
            longest = max(longest, equity[-1][0] - peak_ts)
    return Drawdown(max_drawdown=best, max_drawdown_amount=best_amount, peak_ts=best_peak,
                    trough_ts=best_trough, max_duration_ns=longest)


def calmar_ratio(equity: EquityCurve) -> float | None:
    """Calmar ratio ``CAGR / max_drawdown`` over the whole curve (not a trailing 36 months).

    ``None`` when either is undefined or the curve never drew down.
    """
    growth = cagr(equity)
    dd = max_drawdown(equity).max_drawdown
    if growth is None or dd == 0:
        return None
    return growth / dd


# --------------------------------------------------------------------------------------------
# Trade metrics
# --------------------------------------------------------------------------------------------


def win_rate(trades: Sequence[TradeLike]) -> float | None:
    """Share of trades with ``pnl > 0`` (break-even trades count as not won); None if none."""
    if not trades:
        return None
    return sum(1 for t in trades if t.pnl > 0) / len(trades)


def gross_profit(trades: Iterable[TradeLike]) -> Decimal:
    """Exact sum of the positive trade P&L."""
    return money_sum(t.pnl for t in trades if t.pnl > 0)


def gross_loss(trades: Iterable[TradeLike]) -> Decimal:
    """Exact sum of the negative trade P&L (a negative number or zero)."""
    return money_sum(t.pnl for t in trades if t.pnl < 0)


def profit_factor(trades: Sequence[TradeLike]) -> float | None:
    """``gross_profit / |gross_loss|``; ``None`` when no trade lost (the ratio is unbounded)."""
    loss = gross_loss(trades)
    if loss == 0:
        return None
    with localcontext() as ctx:
        ctx.prec = _MONEY_PREC
        return float(gross_profit(trades) / -loss)


def average_win(trades: Sequence[TradeLike]) -> Decimal | None:
    """Mean P&L of the winning trades (``pnl > 0``); ``None`` without a winner."""
    wins = [t.pnl for t in trades if t.pnl > 0]
    if not wins:
        return None
    with localcontext() as ctx:
        ctx.prec = _MONEY_PREC
        return money_sum(wins) / len(wins)


def average_loss(trades: Sequence[TradeLike]) -> Decimal | None:
    """Mean P&L of the losing trades (``pnl < 0``, so the result is negative); None if none."""
    losses = [t.pnl for t in trades if t.pnl < 0]
    if not losses:
        return None
    with localcontext() as ctx:
        ctx.prec = _MONEY_PREC
        return money_sum(losses) / len(losses)


def total_fees(trades: Iterable[TradeLike]) -> Decimal:
    """Exact sum of the trades' fees (both legs of each round trip)."""
    return money_sum(t.fees for t in trades)


def turnover(trades: Iterable[TradeLike]) -> Decimal:
    """Traded notional, exact: ``sum(quantity * (entry_price + exit_price))``.

    Both legs count, in the quote currency; divide by the average equity for a turnover ratio.
    """
    with localcontext() as ctx:
        ctx.prec = _MONEY_PREC
        return money_sum(t.quantity * (t.entry_price + t.exit_price) for t in trades)


def notional(executions: Iterable[tuple[Decimal, Decimal]]) -> Decimal:
    """Exact traded value ``sum(price * qty)`` of ``(price, qty)`` executions (each fill once)."""
    with localcontext() as ctx:
        ctx.prec = _MONEY_PREC
        return money_sum(price * qty for price, qty in executions)


def exposure_time(trades: Iterable[TradeLike], start_ns: int, end_ns: int) -> float | None:
    """Fraction of ``[start_ns, end_ns]`` with at least one position open.

    The length of the union of the trades' ``[entry_time, exit_time]`` intervals (overlapping
    trades are not double counted), clipped to the span, divided by ``end_ns - start_ns``.
    ``None`` over an empty span.
    """
    span = end_ns - start_ns
    if span <= 0:
        return None
    spans = sorted((max(t.entry_time, start_ns), min(t.exit_time, end_ns)) for t in trades)
    covered = 0
    cur_a: int | None = None
    cur_b = 0
    for a, b in spans:
        if b <= a:
            continue
        if cur_a is None or a > cur_b:
            if cur_a is not None:
                covered += cur_b - cur_a
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    if cur_a is not None:
        covered += cur_b - cur_a
    return covered / span


# --------------------------------------------------------------------------------------------
# All of it at once
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Performance:
    """Every metric of one equity curve and its closed trades (see each function's definition).

    Money fields are Decimal (exact); ratios are float; undefined values are None.
    """

    start_ns: int | None
    end_ns: int | None
    initial_equity: Decimal | None
    final_equity: Decimal | None
    net_pnl: Decimal | None
    total_return: float | None
    cagr: float | None
    annualized_volatility: float | None
    sharpe: float | None
    sortino: float | None
    max_drawdown: float
    max_drawdown_amount: Decimal
    max_drawdown_duration_ns: int
    calmar: float | None
    periods_per_year: float | None
    trades: int
    wins: int
    losses: int
    win_rate: float | None
    profit_factor: float | None
    gross_profit: Decimal
    gross_loss: Decimal
    average_win: Decimal | None
    average_loss: Decimal | None
    trade_pnl: Decimal
    exposure_time: float | None
    fees: Decimal
    turnover: Decimal


def compute_performance(equity: EquityCurve, trades: Sequence[TradeLike] = (), *,
                        start_ns: int | None = None, end_ns: int | None = None) -> Performance:
    """Compute every metric of ``equity`` and ``trades``.

    Args:
        equity: ``(ts_ns, equity)`` points in time order (may be empty for trade-only stats).
        trades: the closed round trips behind the curve.
        start_ns: start of the exposure window; defaults to the curve's first timestamp.
        end_ns: end of the exposure window; defaults to the curve's last timestamp.
    """
    if start_ns is None and equity:
        start_ns = equity[0][0]
    if end_ns is None and equity:
        end_ns = equity[-1][0]
    dd = max_drawdown(equity)
    first = equity[0][1] if equity else None
    last = equity[-1][1] if equity else None
    return Performance(
        start_ns=start_ns,
        end_ns=end_ns,
        initial_equity=first,
        final_equity=last,
        net_pnl=None if first is None or last is None else money_sum((last, -first)),
        total_return=total_return(equity),
        cagr=cagr(equity),
        annualized_volatility=annualized_volatility(equity),
        sharpe=sharpe_ratio(equity),
        sortino=sortino_ratio(equity),
        max_drawdown=dd.max_drawdown,
        max_drawdown_amount=dd.max_drawdown_amount,
        max_drawdown_duration_ns=dd.max_duration_ns,
        calmar=calmar_ratio(equity),
        periods_per_year=periods_per_year([t for t, _ in equity]),
        trades=len(trades),
        wins=sum(1 for t in trades if t.pnl > 0),
        losses=sum(1 for t in trades if t.pnl < 0),
        win_rate=win_rate(trades),
        profit_factor=profit_factor(trades),
        gross_profit=gross_profit(trades),
        gross_loss=gross_loss(trades),
        average_win=average_win(trades),
        average_loss=average_loss(trades),
        trade_pnl=money_sum(t.pnl for t in trades),
        exposure_time=(None if start_ns is None or end_ns is None
                       else exposure_time(trades, start_ns, end_ns)),
        fees=total_fees(trades),
        turnover=turnover(trades),
    )
