"""What both backtest engines share step for step: the run's output record, the synthetic
books, the stop probes and the equity samples (``backtest._engine`` re-exports them)."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from protocol.messages import BookEvent, CandleEvent, Fill
from trading import Portfolio, RiskLimits, fast_constructor

from ._result import EquityPoint
from ._synthetic import synthetic_book

__all__ = ["EngineOutput", "close_book", "open_book", "sample_equity", "stop_probe_prices"]

_ZERO = Decimal(0)
_ONE = Decimal(1)
_DEPTH = Decimal("1e18")  # "unlimited" depth of the next-open book (no volume cap)
_new_point = fast_constructor(EquityPoint)  # two per equity sample


class EngineOutput:
    """What the loop produced, before trades and reports are derived."""

    __slots__ = ("benchmark", "candles", "equity", "fills", "last_candles", "order_rejections",
                 "risk_rejections", "warnings")

    def __init__(self) -> None:
        self.fills: list[Fill] = []
        self.equity: list[EquityPoint] = []
        self.benchmark: list[EquityPoint] = []
        self.warnings: list[str] = []
        self.risk_rejections: dict[str, int] = {}
        self.order_rejections: dict[str, int] = {}
        self.last_candles: dict[str, CandleEvent] = {}
        self.candles = 0


# --------------------------------------------------------------------------- shared step logic
# The actor engine (backtest/_actor_engine.py, actors/candle_broker.py) builds the same books,
# probes, groups and samples through these functions, so the two engines cannot drift apart.


def open_book(c: CandleEvent, buy_mult: Decimal, sell_mult: Decimal, slip: bool) -> BookEvent:
    """The one-level, unlimited-depth book a next-open market order fills against."""
    o = c.open
    if slip:
        ask, bid = o * buy_mult, o * sell_mult
    else:
        ask = bid = o
    return synthetic_book(c, bid, ask, _DEPTH)


def close_book(c: CandleEvent, bid_mult: Decimal, ask_mult: Decimal) -> BookEvent:
    """The synthetic book book-driven strategies see: around the close, depth = volume (built
    through the twin classes, as the fast path does: the actor replay builds one per candle)."""
    close = c.close
    return synthetic_book(c, close * bid_mult, close * ask_mult, c.volume)


def stop_probe_prices(pf: Portfolio, limits: RiskLimits | None, c: CandleEvent
                      ) -> tuple[Decimal, Decimal] | None:
    """The candle's (adverse, favourable) extremes when its range reaches a stop/take level.

    None when the symbol is flat or no level is reached. Shown to the risk engine in this order
    (as trade prints), the stop-loss wins when both levels are touched in one candle.
    """
    pos = pf.position_qty(c.symbol)
    if not pos or limits is None:
        return None
    avg = pf.avg_entry(c.symbol)
    if avg is None:
        return None
    lo, hi = c.low, c.high
    if pos > 0:
        hit = lo <= avg * (_ONE - limits.stop_loss_pct) or hi >= avg * (
            _ONE + limits.take_profit_pct)
        return (lo, hi) if hit else None
    hit = hi >= avg * (_ONE + limits.stop_loss_pct) or lo <= avg * (
        _ONE - limits.take_profit_pct)
    return (hi, lo) if hit else None


def sample_equity(out: EngineOutput, pf: Portfolio, ts: int, bench_units: Mapping[str, Decimal],
                  bench_cash: Decimal, first_open: Mapping[str, Decimal],
                  closes: Mapping[str, Decimal] | None = None) -> None:
    """Mark every symbol at its last close and append the equity and benchmark points.

    ``closes``: the last close of every symbol seen so far, in order of first appearance
    (default: those of ``out.last_candles``).
    """
    if closes is None:
        closes = {sym: c.close for sym, c in out.last_candles.items()}
    for sym, close in closes.items():
        if pf.mark_price(sym) != close:
            pf.mark(sym, close)
    out.equity.append(_new_point(ts=ts, equity=pf.equity_usd()))
    # Buy and hold buys each symbol at its first open: until a symbol has traded, its share of
    # the cash is still cash (a symbol whose data starts later must not count as worth 0).
    value = bench_cash
    for sym, units in bench_units.items():
        last = closes.get(sym)
        value += units * (last if last is not None else first_open.get(sym, _ZERO))
    out.benchmark.append(_new_point(ts=ts, equity=value))
