"""sma_cross: the reference strategy for backtest cross-checks and benchmarks.

Long only. ``fast = SMA(close, fast_window)`` and ``slow = SMA(close, slow_window)`` (defaults
10 and 30) over the candles present (windows count candles; gaps are the data loader's to
report, not ours to fill). Enter when flat and fast crosses above slow: previous fast <
previous slow *and* fast > slow, both strict. Exit the whole position when slow crosses above
fast in the same strict sense. The first possible cross is at candle ``slow_window + 1`` (both
averages need a previous value). These are the semantics of the ``backtesting`` package's
SMA-cross example made long-only; the fill at the next candle's open is the backtest loop's job.

Exactness: the averages are never divided out. The sign of ``fast - slow`` is the sign of
``fast_sum * slow_window - slow_sum * fast_window`` (both factors divided by their gcd, which
keeps the sign), computed on the Decimal closes as written,
so an exact tie is a tie (float averages invent crossings there: it happens on real ETH/BTC
minute data), and a tie on either candle suppresses the cross. Decimal operators use the
current context (28 digits by default), which holds any real price summed over a window
exactly; we use the operators rather than an explicit context because they are twice as fast.

Speed: the backtest target is ~1M candles/s, so the candle path is hand-tuned: one ring buffer
per symbol holding the last ``slow_window`` closes (the fast window's leaving value sits
``fast_window`` slots back in the same ring), running sums, no allocation when nothing crosses.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal

import numpy as np

from protocol.instruments import PairInfo
from protocol.messages import CandleEvent, Fill, MarketEvent, Side, Signal

from ._base import NO_SIGNALS, PositionKeeper, PriceFilter, QuoteValuer, resolve_symbols, size_order
from ._kernel import CandleKernel, History, LongOnlyGate, TickColumn

# enum members bound once: ``Side.BUY`` costs ~60 ns a lookup, a global ~8 (the fill path)
_BUY = Side.BUY

__all__ = ["SmaCross", "SmaCrossConfig"]

_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True, kw_only=True)
class SmaCrossConfig:
    """sma_cross parameters.

    Attributes:
        symbols: symbols to trade; empty means every configured pair.
        fast: candles in the fast average (>= 1).
        slow: candles in the slow average (> fast).
        notional: order size in ``notional_currency``.
        notional_currency: the currency of ``notional``.
        pegs: quote currencies counted 1:1 with ``notional_currency``.
        price_source: ``candle`` (default: closes); any other source averages that price.
        pending_timeout_s: forget an unacknowledged intent after this many seconds (0: never).
    """

    symbols: tuple[str, ...] = ()
    fast: int = 10
    slow: int = 30
    notional: Decimal = Decimal(100)
    notional_currency: str = "USD"
    pegs: tuple[str, ...] = ()
    price_source: str = "candle"
    pending_timeout_s: Decimal = Decimal(0)

    def __post_init__(self) -> None:
        if self.fast < 1 or self.slow <= self.fast:
            raise ValueError("need 1 <= fast < slow")
        if self.notional <= 0:
            raise ValueError("notional must be > 0")


class _Sma:
    # prev: sign of (fast - slow) on the previous candle; 0 = tie or not yet defined.
    __slots__ = ("count", "fsum", "i", "prev", "ring", "ssum")

    def __init__(self, slow: int) -> None:
        self.ring = [_ZERO] * slow
        self.i = 0
        self.count = 0
        self.fsum = _ZERO
        self.ssum = _ZERO
        self.prev = 0


class SmaCross:
    """Exact long-only SMA crossover; see the module docstring."""

    def __init__(
        self, config: SmaCrossConfig, pairs: Mapping[str, PairInfo], *, name: str = "sma_cross"
    ) -> None:
        self.name = name
        self.explain = True
        self.config = config
        self.symbols = resolve_symbols(name, config.symbols, pairs)
        self._pairs = pairs
        self._filter = PriceFilter(config.price_source)
        self._candles_only = config.price_source == "candle"
        self._valuer = QuoteValuer(config.notional_currency, config.pegs)
        self._keeper = PositionKeeper(name, pairs, config.pending_timeout_s)
        self._state = {s: _Sma(config.slow) for s in self.symbols}
        self._fast = config.fast
        self._slow = config.slow
        g = math.gcd(config.fast, config.slow)
        self._left_mult = config.slow // g
        self._right_mult = config.fast // g
        # Sizing a pair quoted in another currency needs that currency's price: only then do we
        # pay for observing every price (the common USD-quoted case stays on the fast path).
        pegged = {config.notional_currency, *config.pegs}
        self._observe = any(pairs[s].quote not in pegged for s in self.symbols)
        self._closes: dict[str, Decimal] = {}

    @property
    def keeper(self) -> PositionKeeper:
        """Positions and in-flight intents (read-only use)."""
        return self._keeper

    def on_market(self, event: MarketEvent) -> Sequence[Signal]:
        close: Decimal
        if self._candles_only:
            if event.__class__ is not CandleEvent:
                return NO_SIGNALS
            close = event.close
        else:
            maybe = self._filter.price(event)
            if maybe is None:
                return NO_SIGNALS
            close = maybe
        symbol = event.symbol
        st = self._state.get(symbol)
        if st is None:
            # Not traded here, but its price may size a pair quoted in another currency. The
            # traded symbols' latest closes are in their rings (read when sizing).
            if self._observe:
                self._closes[symbol] = close
            return NO_SIGNALS
        # Hot path: ring update and running sums. ring[i - fast] wraps through Python's
        # negative indexing onto the close that leaves the fast window.
        ring = st.ring
        i = st.i
        slow = self._slow
        st.fsum = fsum = st.fsum + close - ring[i - self._fast]
        st.ssum = ssum = st.ssum + close - ring[i]
        ring[i] = close
        i += 1
        st.i = 0 if i == slow else i
        if st.count < slow:
            st.count = count = st.count + 1
            if count < slow:
                return NO_SIGNALS
        # sign(fsum * slow - ssum * fast) with the common factor divided out of both windows
        # (10 and 30 -> fsum * 3 against ssum): one exact multiplication instead of two.
        left = fsum * self._left_mult
        right = ssum * self._right_mult if self._right_mult != 1 else ssum
        prev = st.prev
        if left > right:
            st.prev = 1
            if prev == -1:
                return self._enter(symbol, event.ts_recv, close, self._latest_closes)
        elif left < right:
            st.prev = -1
            if prev == 1:
                return self._exit(symbol, event.ts_recv, close)
        else:
            st.prev = 0
        return NO_SIGNALS

    def _latest_closes(self) -> list[tuple[str, Decimal]]:
        out = list(self._closes.items())
        out.extend((sym, st.ring[st.i - 1]) for sym, st in self._state.items() if st.count)
        return out

    def _enter(self, symbol: str, ts_recv: float, close: Decimal,
               latest: Callable[[], Iterable[tuple[str, Decimal]]]) -> Sequence[Signal]:
        """The entry decision on an upward cross (``latest()``: every symbol's latest close,
        read only when the order is sized in a quote that needs converting)."""
        keeper = self._keeper
        keeper.expire(ts_recv)
        if not keeper.is_flat(symbol):
            return NO_SIGNALS
        pair = self._pairs[symbol]
        valuer = self._valuer
        if self._observe and valuer.converts(pair.quote):
            for sym, price in latest():
                valuer.observe(sym, price)
        notional = valuer.notional_in(pair.quote, self.config.notional)
        qty = None if notional is None else size_order(pair, notional, close)
        if qty is None:
            return NO_SIGNALS
        reason = (f"sma_cross entry: SMA{self._fast} crossed above SMA{self._slow} at {close}"
                  if self.explain else "sma_cross entry")
        return (keeper.signal(symbol, _BUY, qty, price=close, reason=reason,
                              ts_recv=ts_recv),)

    def _exit(self, symbol: str, ts_recv: float, close: Decimal) -> Sequence[Signal]:
        """The exit decision on a downward cross."""
        keeper = self._keeper
        keeper.expire(ts_recv)
        if not keeper.is_long(symbol) or keeper.has_pending(symbol):
            return NO_SIGNALS
        reason = (f"sma_cross exit: SMA{self._slow} crossed above SMA{self._fast} at {close}"
                  if self.explain else "sma_cross exit")
        return (keeper.exit_signal(symbol, price=close, reason=reason, ts_recv=ts_recv),)

    # ------------------------------------------------------------------ candle kernel

    def candle_kernel(self) -> CandleKernel | None:
        """The candle-skipping view for backtests (None: this config needs every event)."""
        return _SmaKernel(self) if self._candles_only else None

    def on_fill(self, fill: Fill) -> None:
        self._keeper.on_fill(fill)

    def on_order_closed(self, client_order_id: str, filled_qty: Decimal) -> None:
        self._keeper.on_order_closed(client_order_id, filled_qty)


class _SmaKernel(LongOnlyGate):
    """sma_cross over a whole close column: the crosses, found with exact integer sums.

    The sign of ``fsum * left - ssum * right`` (``on_market``'s comparison) is computed for
    every row at once from prefix sums of the integer ticks (a common factor of 10**scale on
    both sides keeps the sign), and the candidates are exactly the rows where it goes from -1
    to +1 (entry) or +1 to -1 (exit); a 0 (tie) on either row is no cross, as in ``on_market``.
    """

    def __init__(self, strategy: SmaCross) -> None:
        super().__init__(strategy._keeper)
        self._s = strategy
        self._up: dict[str, frozenset[int]] = {}

    def candidates(self, symbol: str, ticks: TickColumn, scale: int
                   ) -> tuple[TickColumn, TickColumn]:
        s = self._s
        fast, slow = s._fast, s._slow
        n = len(ticks)
        if symbol not in s._state or n <= slow:
            self._up[symbol] = frozenset()
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        cs = np.concatenate((np.zeros(1, dtype=np.int64), np.cumsum(ticks, dtype=np.int64)))
        end = np.arange(slow, n + 1)  # prefix index one past each full window's last row
        fsum = cs[end] - cs[end - fast]
        ssum = cs[end] - cs[end - slow]
        diff = fsum * s._left_mult - ssum * s._right_mult
        sign = (diff > 0).astype(np.int8) - (diff < 0).astype(np.int8)
        prev, cur = sign[:-1], sign[1:]
        up = np.flatnonzero((prev == -1) & (cur == 1)) + slow
        down = np.flatnonzero((prev == 1) & (cur == -1)) + slow
        self._up[symbol] = frozenset(up.tolist())
        return up, down

    def never_sized(self, symbol: str, observed: Collection[str]) -> bool:
        """No entry on ``symbol`` can be sized while the valuer sees only ``observed`` (the
        run's symbols; see ``ExactGate.never_sized``): it never enters, so never exits."""
        s = self._s
        return not s._valuer.can_size(s._pairs[symbol].quote, observed)

    def act(self, symbol: str, row: int, close: Decimal, history: History) -> Sequence[Signal]:
        s = self._s
        if row in self._up[symbol]:
            return s._enter(symbol, history.ts_recv, close, history.latest_closes)
        return s._exit(symbol, history.ts_recv, close)
