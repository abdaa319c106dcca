"""Momentum: follow a trend measured over a fixed number of price samples.

``trend = price / price_lookback_samples_ago - 1``. Enter long when ``trend > entry_threshold``
(default +0.5 %) and the symbol is flat; exit the whole position when ``trend <
-exit_threshold`` (default -0.5 %) while long. Both comparisons are strict and exact: they are
evaluated as ``price > lag * (1 + entry)`` and ``price < lag * (1 - exit)`` in Decimal, so a
trend of exactly 0.5 % does not trade.

Spot only: the strategy is long-only (Kraken spot has no shorting without margin, which this
system does not use). A sample is one price event of the kind chosen by ``price_source``
(``auto``: the first kind seen per symbol), see :class:`~trading.strategies._base.PriceFilter`.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, getcontext

import numpy as np

from protocol.instruments import PairInfo
from protocol.messages import Fill, MarketEvent, Side, Signal

from ._base import NO_SIGNALS, PositionKeeper, PriceFilter, QuoteValuer, resolve_symbols, size_order
from ._kernel import CandleKernel, ExactGate, History, TickColumn, positive_samples, sample_rows

__all__ = ["Momentum", "MomentumConfig"]

_TICK_DIGITS = 16  # digits of the largest integer tick (< 2**52) a kernel column holds


@dataclass(frozen=True, slots=True, kw_only=True)
class MomentumConfig:
    """Momentum parameters (the seed's defaults).

    Attributes:
        symbols: symbols to trade; empty means every configured pair.
        lookback: samples between the two prices of the trend (>= 1).
        entry_threshold: enter when the trend is strictly above this fraction.
        exit_threshold: exit when the trend is strictly below minus this fraction.
        notional: order size in ``notional_currency`` (converted to base, rounded down).
        notional_currency: the currency of ``notional``.
        pegs: quote currencies counted 1:1 with ``notional_currency`` (e.g. ``USDT``).
        price_source: ``auto``, ``book``, ``ticker``, ``trade`` or ``candle``.
        pending_timeout_s: forget an unacknowledged intent after this many seconds (0: never).
    """

    symbols: tuple[str, ...] = ()
    lookback: int = 20
    entry_threshold: Decimal = Decimal("0.005")
    exit_threshold: Decimal = Decimal("0.005")
    notional: Decimal = Decimal(100)
    notional_currency: str = "USD"
    pegs: tuple[str, ...] = ()
    price_source: str = "auto"
    pending_timeout_s: Decimal = Decimal(30)

    def __post_init__(self) -> None:
        if self.lookback < 1:
            raise ValueError("lookback must be >= 1")
        if self.entry_threshold < 0 or self.exit_threshold < 0:
            raise ValueError("thresholds are non-negative fractions")
        if self.exit_threshold >= 1:
            raise ValueError("exit_threshold must be < 1")
        if self.notional <= 0:
            raise ValueError("notional must be > 0")


class Momentum:
    """Long-only trend follower; see the module docstring for the rule."""

    def __init__(
        self, config: MomentumConfig, pairs: Mapping[str, PairInfo], *, name: str = "momentum"
    ) -> None:
        self.name = name
        self.explain = True
        self.config = config
        self.symbols = resolve_symbols(name, config.symbols, pairs)
        self._pairs = pairs
        self._filter = PriceFilter(config.price_source)
        self._valuer = QuoteValuer(config.notional_currency, config.pegs)
        self._keeper = PositionKeeper(name, pairs, config.pending_timeout_s)
        self._hist: dict[str, deque[Decimal]] = {
            s: deque(maxlen=config.lookback + 1) for s in self.symbols
        }
        self._up = 1 + config.entry_threshold
        self._down = 1 - config.exit_threshold

    @property
    def keeper(self) -> PositionKeeper:
        """Positions and in-flight intents (read-only use)."""
        return self._keeper

    def on_market(self, event: MarketEvent) -> Sequence[Signal]:
        price = self._filter.price(event)
        if price is None or price <= 0:
            return NO_SIGNALS
        symbol = event.symbol
        self._valuer.observe(symbol, price)
        hist = self._hist.get(symbol)
        if hist is None:
            return NO_SIGNALS
        hist.append(price)
        if len(hist) <= self.config.lookback:
            return NO_SIGNALS
        lag = hist[0]
        if lag * self._down <= price <= lag * self._up:
            # Neither threshold is crossed, so no decision can trade (the common case, kept
            # cheap); intents still expire on every sample, as the decision would have done.
            self._keeper.expire(event.ts_recv)
            return NO_SIGNALS
        return self._decide(symbol, price, lag, event.ts_recv, None)

    def _decide(self, symbol: str, price: Decimal, lag: Decimal, ts_recv: float,
                latest: Callable[[], Iterable[tuple[str, Decimal]]] | None) -> Sequence[Signal]:
        """The decision on a sample whose price ``lookback`` samples ago was ``lag``.

        ``latest`` (the candle kernel's): every symbol's latest close, read only when the order
        is sized in a quote that needs converting; None when the valuer has observed every
        price itself (``on_market``).
        """
        keeper = self._keeper
        keeper.expire(ts_recv)
        if keeper.has_pending(symbol):
            return NO_SIGNALS
        cfg = self.config
        if keeper.is_long(symbol):
            if price < lag * self._down:
                reason = (
                    f"momentum exit: trend {price / lag - 1:.6f} < -{cfg.exit_threshold} "
                    f"over {cfg.lookback} samples ({lag} -> {price})"
                ) if self.explain else "momentum exit"
                return (keeper.exit_signal(symbol, price=price, reason=reason,
                                           ts_recv=ts_recv),)
            return NO_SIGNALS
        if price > lag * self._up:
            pair = self._pairs[symbol]
            valuer = self._valuer
            if latest is not None and valuer.converts(pair.quote):
                for sym, close in latest():
                    if close > 0:  # what on_market observes
                        valuer.observe(sym, close)
            notional = valuer.notional_in(pair.quote, cfg.notional)
            qty = None if notional is None else size_order(pair, notional, price)
            if qty is None:
                return NO_SIGNALS
            reason = (
                f"momentum entry: trend {price / lag - 1:.6f} > {cfg.entry_threshold} "
                f"over {cfg.lookback} samples ({lag} -> {price})"
            ) if self.explain else "momentum entry"
            return (keeper.signal(symbol, Side.BUY, qty, price=price, reason=reason,
                                  ts_recv=ts_recv),)
        return NO_SIGNALS

    # ------------------------------------------------------------------ candle kernel

    def candle_kernel(self) -> CandleKernel | None:
        """The candle-skipping view for backtests (None: this config needs every event).

        ``auto`` locks every symbol to candles in a candle backtest, so it qualifies. The
        thresholds must multiply any close exactly in the current Decimal context (a close
        has at most 16 digits as integer ticks), or ``on_market``'s rounded products could
        disagree with the kernel's exact integers at a near-tie.
        """
        if self.config.price_source not in ("auto", "candle"):
            return None
        prec = getcontext().prec
        for factor in (self._up, self._down):
            if _TICK_DIGITS + len(factor.as_tuple().digits) > prec:
                return None
        return _MomentumKernel(self)

    def on_fill(self, fill: Fill) -> None:
        self._keeper.on_fill(fill)

    def on_order_closed(self, client_order_id: str, filled_qty: Decimal) -> None:
        self._keeper.on_order_closed(client_order_id, filled_qty)


class _MomentumKernel(ExactGate):
    """momentum over a whole close column: the rows where either threshold is crossed.

    A sample is a row with a positive close (``on_market`` skips the others), so the lag of
    sample ``j`` is sample ``j - lookback``; with every close positive (what the CSV loader
    guarantees) samples are rows. ``price > lag * up`` with ``up = a/b`` is ``P*b > L*a`` on
    the integer ticks (the common factor 10**scale cancels), and likewise for the exit: exact,
    in int64 when the products fit, else in Python ints.
    """

    def __init__(self, strategy: Momentum) -> None:
        super().__init__(strategy._keeper, strategy._pairs, strategy._valuer,
                         strategy.config.notional)
        self._s = strategy
        # symbol -> the rows of its samples, when some close is not positive (None: every row)
        self._rows: dict[str, list[int] | None] = {}

    def candidates(self, symbol: str, ticks: TickColumn, scale: int
                   ) -> tuple[TickColumn, TickColumn]:
        s = self._s
        lookback = s.config.lookback
        seq, rows = positive_samples(ticks)
        self._rows[symbol] = None if rows is None else rows.tolist()
        if symbol not in s._hist or len(seq) <= lookback:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        a, b = s._up.as_integer_ratio()
        c, d = s._down.as_integer_ratio()
        price, lag = seq[lookback:], seq[:-lookback]
        if int(np.abs(seq).max()) * max(a, b, c, d) >= 2**63:
            price, lag = price.astype(object), lag.astype(object)
        entries = np.flatnonzero(price * b > lag * a) + lookback
        exits = np.flatnonzero(price * d < lag * c) + lookback
        return sample_rows(entries, exits, rows)

    def act(self, symbol: str, row: int, close: Decimal, history: History) -> Sequence[Signal]:
        s = self._s
        lookback = s.config.lookback
        rows = self._rows[symbol]
        at = row - lookback if rows is None else rows[bisect_left(rows, row) - lookback]
        lag = history.closes(symbol, at, at + 1)[0]
        return s._decide(symbol, close, lag, history.ts_recv, history.latest_closes)
