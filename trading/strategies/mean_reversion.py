"""Mean reversion: buy a dip below a rolling band, sell when the price is back at the mean.

Over the last ``window`` samples *including the current one* (default 20), with the rolling
mean ``m`` and the population standard deviation ``sd``:

* enter long when flat and ``price < m - entry_sd * sd`` (default 1.5, strict);
* exit the whole position while long when ``price >= m + exit_sd * sd`` (default ``exit_sd`` 0:
  the price is back at the mean). Exiting at the mean rather than at the upper band is the
  classic reversion target: it takes the move the model predicts and no more, and it keeps
  positions short. Set ``exit_sd=1.5`` for the symmetric band exit.

The comparisons are exact. With ``n = window``, ``S1 = sum(p)``, ``S2 = sum(p*p)`` (Decimal
running sums at 80 digits, so nothing rounds), ``n*sd = sqrt(n*S2 - S1**2)`` and the entry rule
becomes ``d = S1 - n*price > 0 and d*d > entry_sd**2 * (n*S2 - S1**2)``: no square root, no
float, and a price exactly on the band does not trade.

Spot: long-only, like momentum.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Context, Decimal

from protocol.instruments import PairInfo
from protocol.messages import Fill, MarketEvent, Side, Signal

from ._base import NO_SIGNALS, PositionKeeper, PriceFilter, QuoteValuer, resolve_symbols, size_order

__all__ = ["MeanReversion", "MeanReversionConfig"]

_EXACT = Context(prec=80)


@dataclass(frozen=True, slots=True, kw_only=True)
class MeanReversionConfig:
    """Mean-reversion parameters (the seed's defaults).

    Attributes:
        symbols: symbols to trade; empty means every configured pair.
        window: samples in the rolling mean and standard deviation (>= 2).
        entry_sd: enter when the price is strictly below ``mean - entry_sd * sd``.
        exit_sd: exit when the price is at or above ``mean + exit_sd * sd``.
        notional: order size in ``notional_currency``.
        notional_currency: the currency of ``notional``.
        pegs: quote currencies counted 1:1 with ``notional_currency``.
        price_source: ``auto``, ``book``, ``ticker``, ``trade`` or ``candle``.
        pending_timeout_s: forget an unacknowledged intent after this many seconds (0: never).
    """

    symbols: tuple[str, ...] = ()
    window: int = 20
    entry_sd: Decimal = Decimal("1.5")
    exit_sd: Decimal = Decimal(0)
    notional: Decimal = Decimal(100)
    notional_currency: str = "USD"
    pegs: tuple[str, ...] = ()
    price_source: str = "auto"
    pending_timeout_s: Decimal = Decimal(30)

    def __post_init__(self) -> None:
        if self.window < 2:
            raise ValueError("window must be >= 2")
        if self.entry_sd < 0 or self.exit_sd < 0:
            raise ValueError("entry_sd and exit_sd are non-negative")
        if self.notional <= 0:
            raise ValueError("notional must be > 0")


class _Window:
    __slots__ = ("prices", "s1", "s2")

    def __init__(self, n: int) -> None:
        self.prices: deque[Decimal] = deque(maxlen=n)
        self.s1 = Decimal(0)
        self.s2 = Decimal(0)

    def push(self, price: Decimal) -> None:
        ctx = _EXACT
        prices = self.prices
        if len(prices) == prices.maxlen:
            old = prices[0]
            self.s1 = ctx.subtract(self.s1, old)
            self.s2 = ctx.subtract(self.s2, ctx.multiply(old, old))
        prices.append(price)
        self.s1 = ctx.add(self.s1, price)
        self.s2 = ctx.add(self.s2, ctx.multiply(price, price))


class MeanReversion:
    """Long-only band reversion; see the module docstring for the exact rule."""

    def __init__(
        self,
        config: MeanReversionConfig,
        pairs: Mapping[str, PairInfo],
        *,
        name: str = "mean_reversion",
    ) -> None:
        self.name = name
        self.config = config
        self.symbols = resolve_symbols(name, config.symbols, pairs)
        self._pairs = pairs
        self._filter = PriceFilter(config.price_source)
        self._valuer = QuoteValuer(config.notional_currency, config.pegs)
        self._keeper = PositionKeeper(name, pairs, config.pending_timeout_s)
        self._windows = {s: _Window(config.window) for s in self.symbols}
        self._k2_in = config.entry_sd * config.entry_sd
        self._k2_out = config.exit_sd * config.exit_sd

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
        win = self._windows.get(symbol)
        if win is None:
            return NO_SIGNALS
        win.push(price)
        n = self.config.window
        if len(win.prices) < n:
            return NO_SIGNALS
        keeper = self._keeper
        keeper.expire(event.ts_recv)
        if keeper.has_pending(symbol):
            return NO_SIGNALS
        ctx = _EXACT
        s1 = win.s1
        np_ = ctx.multiply(price, n)
        spread2 = ctx.subtract(ctx.multiply(win.s2, n), ctx.multiply(s1, s1))  # (n*sd)**2
        cfg = self.config
        if keeper.is_long(symbol):
            e = ctx.subtract(np_, s1)
            if e >= 0 and ctx.multiply(e, e) >= ctx.multiply(self._k2_out, spread2):
                reason = f"mean reversion exit: {price} >= mean+{cfg.exit_sd}sd {self._band(win)}"
                return (keeper.exit_signal(symbol, price=price, reason=reason,
                                           ts_recv=event.ts_recv),)
            return NO_SIGNALS
        d = ctx.subtract(s1, np_)
        if d > 0 and ctx.multiply(d, d) > ctx.multiply(self._k2_in, spread2):
            pair = self._pairs[symbol]
            notional = self._valuer.notional_in(pair.quote, cfg.notional)
            qty = None if notional is None else size_order(pair, notional, price)
            if qty is None:
                return NO_SIGNALS
            reason = f"mean reversion entry: {price} < mean-{cfg.entry_sd}sd {self._band(win)}"
            return (keeper.signal(symbol, Side.BUY, qty, price=price, reason=reason,
                                  ts_recv=event.ts_recv),)
        return NO_SIGNALS

    def _band(self, win: _Window) -> str:
        # Display only: the decision above never used these rounded figures.
        n = self.config.window
        mean = win.s1 / n
        var = max(win.s2 / n - mean * mean, Decimal(0))
        return f"(mean {mean:.8g}, sd {var.sqrt():.6g}, n {n})"

    def on_fill(self, fill: Fill) -> None:
        self._keeper.on_fill(fill)

    def on_order_closed(self, client_order_id: str, filled_qty: Decimal) -> None:
        self._keeper.on_order_closed(client_order_id, filled_qty)
