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

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

from protocol.instruments import PairInfo
from protocol.messages import Fill, MarketEvent, Side, Signal

from ._base import NO_SIGNALS, PositionKeeper, PriceFilter, QuoteValuer, resolve_symbols, size_order

__all__ = ["Momentum", "MomentumConfig"]


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
        keeper = self._keeper
        keeper.expire(event.ts_recv)
        if keeper.has_pending(symbol):
            return NO_SIGNALS
        cfg = self.config
        if keeper.is_long(symbol):
            if price < lag * self._down:
                trend = price / lag - 1
                reason = (
                    f"momentum exit: trend {trend:.6f} < -{cfg.exit_threshold} "
                    f"over {cfg.lookback} samples ({lag} -> {price})"
                )
                return (keeper.exit_signal(symbol, price=price, reason=reason,
                                           ts_recv=event.ts_recv),)
            return NO_SIGNALS
        if price > lag * self._up:
            pair = self._pairs[symbol]
            notional = self._valuer.notional_in(pair.quote, cfg.notional)
            qty = None if notional is None else size_order(pair, notional, price)
            if qty is None:
                return NO_SIGNALS
            trend = price / lag - 1
            reason = (
                f"momentum entry: trend {trend:.6f} > {cfg.entry_threshold} "
                f"over {cfg.lookback} samples ({lag} -> {price})"
            )
            return (keeper.signal(symbol, Side.BUY, qty, price=price, reason=reason,
                                  ts_recv=event.ts_recv),)
        return NO_SIGNALS

    def on_fill(self, fill: Fill) -> None:
        self._keeper.on_fill(fill)

    def on_order_closed(self, client_order_id: str, filled_qty: Decimal) -> None:
        self._keeper.on_order_closed(client_order_id, filled_qty)
