"""Mean reversion: buy a dip below a rolling band, sell when the price is back at the mean.

Over the last ``window`` samples *including the current one* (default 20), with the rolling
mean ``m`` and the population standard deviation ``sd``:

* enter long when flat and ``price < m - entry_sd * sd`` (default 1.5, strict);
* exit the whole position while long when ``price >= m + exit_sd * sd`` (default ``exit_sd`` 0:
  the price is back at the mean). Exiting at the mean rather than at the upper band is the
  classic reversion target: it takes the move the model predicts and no more, and it keeps
  positions short. Set ``exit_sd=1.5`` for the symmetric band exit.

The comparisons are exact. With ``n = window``, ``S1 = sum(p)``, ``S2 = sum(p*p)``,
``n*sd = sqrt(n*S2 - S1**2)`` and the entry rule becomes ``d = S1 - n*price > 0 and d*d >
entry_sd**2 * (n*S2 - S1**2)``: no square root, no float, and a price exactly on the band does
not trade. The sums are Python integers over the prices scaled by ``10**scale`` (the most
decimals seen), so nothing rounds and the hot path does integer arithmetic only (it used to be
80-digit Decimal context operations, several times slower, with the same decisions).

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
    """The last ``n`` prices as integers scaled by ``10**scale``, with running sums.

    ``s1 = sum(P)`` and ``s2 = sum(P*P)`` are Python ints, so nothing ever rounds; ``scale`` grows
    (and everything is rescaled) when a price with more decimals arrives. ``zero`` is a Decimal
    zero carrying the smallest exponent pushed so far (and 0): the exponent the former Decimal
    running sums had, so :meth:`decimal_sums` rebuilds them digit for digit (display only).
    """

    __slots__ = ("count", "n", "pow10", "s1", "s2", "scale", "ticks", "zero")

    def __init__(self, n: int) -> None:
        self.n = n
        self.ticks: deque[int] = deque(maxlen=n)
        self.count = 0
        self.s1 = 0
        self.s2 = 0
        self.scale = 0
        self.pow10 = 1
        self.zero = Decimal(0)

    def push(self, price: Decimal) -> int:
        """Add ``price`` (> 0, finite); return it scaled to an int."""
        num, den = price.as_integer_ratio()
        pow10 = self.pow10
        if pow10 % den:
            self._rescale(den)
            pow10 = self.pow10
        p = num * (pow10 // den)
        ticks = self.ticks
        if self.count == self.n:
            old = ticks[0]
            self.s1 += p - old
            self.s2 += p * p - old * old
        else:
            self.count += 1
            self.s1 += p
            self.s2 += p * p
        ticks.append(p)
        self.zero = price.fma(0, self.zero)  # 0 with exponent min(exponent(price), before)
        return p

    def _rescale(self, den: int) -> None:
        k = 0
        while (self.pow10 * 10**k) % den:
            k += 1
        f = 10**k
        self.ticks = deque((t * f for t in self.ticks), maxlen=self.n)
        self.s1 *= f
        self.s2 *= f * f
        self.scale += k
        self.pow10 *= f

    def decimal_sums(self) -> tuple[Decimal, Decimal]:
        """``(sum(p), sum(p*p))`` as the exact Decimals the running Decimal sums would hold."""
        ctx = _EXACT
        zero = self.zero
        s1 = ctx.add(Decimal(self.s1).scaleb(-self.scale, ctx), zero)
        s2 = ctx.add(Decimal(self.s2).scaleb(-2 * self.scale, ctx), ctx.multiply(zero, zero))
        return s1, s2


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
        # entry_sd**2 and exit_sd**2 as exact fractions (numerator, denominator)
        self._k2_in = (config.entry_sd * config.entry_sd).as_integer_ratio()
        self._k2_out = (config.exit_sd * config.exit_sd).as_integer_ratio()

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
        p = win.push(price)
        n = self.config.window
        if win.count < n:
            return NO_SIGNALS
        keeper = self._keeper
        keeper.expire(event.ts_recv)
        if keeper.has_pending(symbol):
            return NO_SIGNALS
        # Exact integer form of the module docstring's rule, on prices scaled by 10**scale:
        # both sides of each inequality carry the same factor 10**(2*scale), and k = a/b.
        s1 = win.s1
        np_ = p * n
        spread2 = win.s2 * n - s1 * s1  # (n*sd)**2, scaled
        cfg = self.config
        if keeper.is_long(symbol):
            e = np_ - s1
            a, b = self._k2_out
            if e >= 0 and e * e * b >= a * spread2:
                reason = f"mean reversion exit: {price} >= mean+{cfg.exit_sd}sd {self._band(win)}"
                return (keeper.exit_signal(symbol, price=price, reason=reason,
                                           ts_recv=event.ts_recv),)
            return NO_SIGNALS
        d = s1 - np_
        a, b = self._k2_in
        if d > 0 and d * d * b > a * spread2:
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
        s1, s2 = win.decimal_sums()
        mean = s1 / n
        var = max(s2 / n - mean * mean, Decimal(0))
        return f"(mean {mean:.8g}, sd {var.sqrt():.6g}, n {n})"

    def on_fill(self, fill: Fill) -> None:
        self._keeper.on_fill(fill)

    def on_order_closed(self, client_order_id: str, filled_qty: Decimal) -> None:
        self._keeper.on_order_closed(client_order_id, filled_qty)
