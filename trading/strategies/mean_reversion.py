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

from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Context, Decimal
from typing import Any, Protocol

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from protocol.instruments import PairInfo
from protocol.messages import Fill, MarketEvent, Side, Signal

from ._base import NO_SIGNALS, PositionKeeper, PriceFilter, QuoteValuer, resolve_symbols, size_order
from ._kernel import CandleKernel, ExactGate, History, TickColumn, positive_samples, sample_rows

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


class _DecimalSums(Protocol):
    def decimal_sums(self) -> tuple[Decimal, Decimal]: ...


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
        self.explain = True
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
        if win.count < self.config.window:
            return NO_SIGNALS
        return self._decide(symbol, price, p, win.s1, win.s2, event.ts_recv, win, None)

    def _decide(self, symbol: str, price: Decimal, p: int, s1: int, s2: int, ts_recv: float,
                sums: _DecimalSums,
                latest: Callable[[], Iterable[tuple[str, Decimal]]] | None) -> Sequence[Signal]:
        """The decision on a full window ending with ``price``.

        ``p``, ``s1`` and ``s2`` are the price, the window's sum and its sum of squares as
        integers in any common scale, all shifted by any common integer (the rule reads only
        the deviations from the price, so neither changes a decision). ``sums`` gives the
        window's Decimal sums for the reason text; ``latest`` (the candle kernel's): every
        symbol's latest close, read only when the order is sized in a quote that needs
        converting (None: the valuer has observed every price itself, in ``on_market``).
        """
        keeper = self._keeper
        keeper.expire(ts_recv)
        if keeper.has_pending(symbol):
            return NO_SIGNALS
        # Exact integer form of the module docstring's rule: both sides of each inequality
        # carry the same factor (the scale squared), and k = a/b.
        n = self.config.window
        np_ = p * n
        spread2 = s2 * n - s1 * s1  # (n*sd)**2, scaled
        cfg = self.config
        if keeper.is_long(symbol):
            e = np_ - s1
            a, b = self._k2_out
            if e >= 0 and e * e * b >= a * spread2:
                reason = (f"mean reversion exit: {price} >= mean+{cfg.exit_sd}sd "
                          f"{self._band(sums)}" if self.explain else "mean reversion exit")
                return (keeper.exit_signal(symbol, price=price, reason=reason,
                                           ts_recv=ts_recv),)
            return NO_SIGNALS
        d = s1 - np_
        a, b = self._k2_in
        if d > 0 and d * d * b > a * spread2:
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
            reason = (f"mean reversion entry: {price} < mean-{cfg.entry_sd}sd "
                      f"{self._band(sums)}" if self.explain else "mean reversion entry")
            return (keeper.signal(symbol, Side.BUY, qty, price=price, reason=reason,
                                  ts_recv=ts_recv),)
        return NO_SIGNALS

    def _band(self, win: _DecimalSums) -> str:
        # Display only: the decision above never used these rounded figures.
        n = self.config.window
        s1, s2 = win.decimal_sums()
        mean = s1 / n
        var = max(s2 / n - mean * mean, Decimal(0))
        return f"(mean {mean:.8g}, sd {var.sqrt():.6g}, n {n})"

    # ------------------------------------------------------------------ candle kernel

    def candle_kernel(self) -> CandleKernel | None:
        """The candle-skipping view for backtests (None: this config needs every event;
        ``auto`` locks every symbol to candles in a candle backtest, so it qualifies)."""
        if self.config.price_source not in ("auto", "candle"):
            return None
        return _MeanReversionKernel(self)

    def on_fill(self, fill: Fill) -> None:
        self._keeper.on_fill(fill)

    def on_order_closed(self, client_order_id: str, filled_qty: Decimal) -> None:
        self._keeper.on_order_closed(client_order_id, filled_qty)


class _MeanReversionKernel(ExactGate):
    """mean_reversion over a whole close column: the rows where either band rule holds.

    A sample is a row with a positive close (``on_market`` skips the others); with every
    close positive (what the CSV loader guarantees) samples are rows. The rule reads only the
    deviations ``t - p`` of the window's ticks from the current tick ``p``: ``d = sum(t - p)``
    and ``n*S2 - S1**2 = n*sum((t-p)**2) - d**2``. Those are computed exactly for every row at
    once (in int64 when the window's price range keeps every product below 2**62, else in
    Python ints), and kept, so :meth:`act` hands ``on_market``'s decision code the window's
    sums shifted by ``p`` without touching a Decimal. The candidates are exactly the rows where
    the entry or the exit rule holds (with the default ``exit_sd`` 0 the exit holds whenever
    the price is at or above the mean: about half the rows).
    """

    _BLOCK = 1 << 20  # window elements per NumPy block (bounds the memory of the deviations)

    def __init__(self, strategy: MeanReversion) -> None:
        super().__init__(strategy._keeper, strategy._pairs, strategy._valuer,
                         strategy.config.notional)
        self._s = strategy
        # symbol -> the rows of its samples, when some close is not positive (None: every row)
        self._rows: dict[str, list[int] | None] = {}
        # symbol -> sum(t - p) and sum((t - p)**2) of the window ending at each full sample
        self._dev: dict[str, tuple[Any, Any]] = {}  # (arrays; see candidates())
        self._ticks: dict[str, tuple[Any, int]] = {}  # symbol -> (samples' ticks, scale)
        self._floor: dict[str, int] = {}  # symbol -> the least exponent a close has (<= 0)
        self._zero: dict[str, tuple[int, int]] = {}  # symbol -> (rows scanned, least exponent)

    def candidates(self, symbol: str, ticks: TickColumn, scale: int
                   ) -> tuple[TickColumn, TickColumn]:
        s = self._s
        n = s.config.window
        seq, rows = positive_samples(ticks)
        self._rows[symbol] = None if rows is None else rows.tolist()
        self._ticks[symbol] = (seq, scale)
        self._floor[symbol] = -scale
        self._zero[symbol] = (0, 0)
        if symbol not in s._windows or len(seq) < n:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        a, b = s._k2_in
        c, d = s._k2_out
        big = max(a, b, c, d, 1)
        fast = _prefix_deviations(seq, n, big)
        if fast is not None:
            q1, q2 = fast
            spread2 = n * q2 - q1 * q1
            sq = q1 * q1
            self._dev[symbol] = (q1, q2)
            entries = np.flatnonzero((q1 > 0) & (sq * b > a * spread2)) + (n - 1)
            exits = np.flatnonzero((q1 <= 0) & (sq * d >= c * spread2)) + (n - 1)
            return sample_rows(entries, exits, rows)
        step = max(1, self._BLOCK // n)
        q1s, q2s, ins, outs = [], [], [], []
        for start in range(n - 1, len(seq), step):
            block = seq[start - n + 1:start + step]
            spread = int(block.max()) - int(block.min())
            if n * n * spread * spread * big >= 2**62:
                block = block.astype(object)
            dev = sliding_window_view(block, n) - block[n - 1:, None]
            q1 = dev.sum(axis=1)
            q2 = (dev * dev).sum(axis=1)
            spread2 = n * q2 - q1 * q1
            sq = q1 * q1
            ins.append((q1 > 0) & (sq * b > a * spread2))
            outs.append((q1 <= 0) & (sq * d >= c * spread2))
            q1s.append(q1)
            q2s.append(q2)
        # kept as arrays (int64, or Python ints in object blocks): act() reads one row each
        self._dev[symbol] = (np.concatenate(q1s), np.concatenate(q2s))
        entries = np.flatnonzero(np.concatenate(ins)) + (n - 1)
        exits = np.flatnonzero(np.concatenate(outs)) + (n - 1)
        return sample_rows(entries, exits, rows)

    def act(self, symbol: str, row: int, close: Decimal, history: History) -> Sequence[Signal]:
        s = self._s
        n = s.config.window
        k = self.sample_of(symbol, row) - (n - 1)
        q1, q2 = self._dev[symbol]
        return s._decide(symbol, close, 0, int(q1[k]), int(q2[k]), history.ts_recv,
                         _RebuiltSums(self, symbol, row, history), history.latest_closes)

    def sample_of(self, symbol: str, row: int) -> int:
        """The sample index of ``row`` (a row with a positive close)."""
        rows = self._rows[symbol]
        return row if rows is None else bisect_left(rows, row)

    def zero_at(self, symbol: str, row: int, history: History) -> Decimal:
        """``_Window.zero`` as ``on_market`` holds it at ``row``: a zero with the least exponent
        of the samples so far (and 0). Scanned lazily (only reasons need it) and no further
        than the column's least exponent, which the first close written with it reaches."""
        done, least = self._zero[symbol]
        if done > row + 1:  # asked out of time order: the scan went past ``row``
            done, least = 0, 0
        floor = self._floor[symbol]
        if least > floor and done <= row:
            for c in history.closes(symbol, done, row + 1):
                if c > 0:
                    exp = c.as_tuple().exponent
                    if isinstance(exp, int) and exp < least:
                        least = exp
                        if least <= floor:
                            break
            self._zero[symbol] = (row + 1, least)
        return Decimal((0, (0,), least))


def _prefix_deviations(seq: TickColumn, n: int, big: int) -> tuple[TickColumn, TickColumn] | None:
    """``sum(t - p)`` and ``sum((t - p)**2)`` over the window of ``n`` ticks ending at each
    full sample (``p`` its last tick), from prefix sums of the ticks less their minimum, in
    int64: exact when every prefix sum of squares and every product the band rules form stay
    below 2**62 (checked on the column's range; None: they might not, use the blocks)."""
    if len(seq) < n:
        return None
    low = int(seq.min())
    span = int(seq.max()) - low
    if (len(seq) + 4 * n) * span * span >= 2**62 or n * n * span * span * big >= 2**62:
        return None
    u = seq - low
    c1 = np.concatenate((np.zeros(1, dtype=np.int64), np.cumsum(u)))
    c2 = np.concatenate((np.zeros(1, dtype=np.int64), np.cumsum(u * u)))
    s1 = c1[n:] - c1[:-n]
    s2 = c2[n:] - c2[:-n]
    p = u[n - 1:]
    return s1 - n * p, s2 - 2 * p * s1 + n * p * p


class _RebuiltSums:
    """The window's Decimal sums at a kernel candidate, rebuilt only if a reason needs them.

    Digit for digit ``on_market``'s: ``_Window``'s sums are the exact values with the
    exponent of its ``zero`` (squared for ``s2``), which depends on every sample so far,
    hence :meth:`_MeanReversionKernel.zero_at`; every tick so far is a multiple of
    ``10**(scale + that exponent)``, so the divisions below are exact.
    """

    __slots__ = ("history", "kernel", "row", "symbol")

    def __init__(self, kernel: _MeanReversionKernel, symbol: str, row: int,
                 history: History) -> None:
        self.kernel = kernel
        self.symbol = symbol
        self.row = row
        self.history = history

    def decimal_sums(self) -> tuple[Decimal, Decimal]:
        kernel, symbol, row = self.kernel, self.symbol, self.row
        ticks, scale = kernel._ticks[symbol]
        end = kernel.sample_of(symbol, row) + 1
        window = ticks[end - kernel._s.config.window:end].tolist()
        exp = kernel.zero_at(symbol, row, self.history).as_tuple().exponent
        assert isinstance(exp, int)
        unit = 10 ** (scale + exp)
        s1 = sum(window) // unit
        s2 = sum(t * t for t in window) // (unit * unit)
        return (Decimal(s1).scaleb(exp, _EXACT), Decimal(s2).scaleb(2 * exp, _EXACT))
