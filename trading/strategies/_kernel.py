"""Candle kernels: how a candle strategy lets a backtest skip the candles where it cannot act.

A backtest over minute candles calls a strategy hundreds of thousands of times, and on almost
every call nothing happens: the rolling state moves and no condition holds. A strategy whose
decision on a candle depends only on (a) the closes of that symbol up to the candle and (b) its
own position bookkeeping can say *in advance*, from the whole close column at once, on which
candles a signal is possible at all. The backtest's fast path then visits only those candles
and asks the strategy to decide there, with the same decision code ``on_market`` runs.

The contract, which the parity tests check (``tests/test_backtest_kernels.py``: the kernel run
and the per-candle run of the same engine give byte-identical trade logs):

* :meth:`CandleKernel.candidates` returns, for one symbol's close column in integer ticks, two
  row sets: where ``on_market`` *could* return a signal while the strategy does not hold the
  symbol (entries), and while it does (exits); :meth:`CandleKernel.holds` says which applies
  now. A superset is fine (a candidate where nothing happens costs one call); a missing row is
  a bug.
* :meth:`CandleKernel.act` is called on each candidate row, in time order across symbols, with
  the close and a :class:`History` of the series, and returns what ``on_market`` would return
  on that candle had it seen every candle before it.
* Nothing outside the candidates may change what the strategy does later: rolling state must be
  a function of the closes (rebuilt from :class:`History` when needed), and the position
  bookkeeping changes only through fills and order events, which the engine delivers as usual.
* Optionally, after a backtest's breaker latched (``refusals_commute()`` true: every signal is
  refused and changes nothing), ``refused_signals(symbol, positions, history)`` counts
  the signals ``act`` would return over a run of one symbol's candidates at once (momentum and
  mean_reversion, whose candidates are exact: :class:`ExactGate`).

Ticks: ``close = tick / 10**scale`` exactly (``scale`` is the most decimals of the column), in a
NumPy int64 array whose values stay below 2**52, so sums over any realistic window are exact.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from protocol.instruments import PairInfo
from protocol.messages import BookEvent, Signal

from ._base import size_order

if TYPE_CHECKING:
    from ._base import PositionKeeper, QuoteValuer

__all__ = ["BookKernel", "BookTimeline", "CandleKernel", "ExactGate", "History", "LongOnlyGate",
           "TickColumn", "positive_samples", "sample_rows"]

TickColumn = Any  # numpy.ndarray of int64 ticks (NumPy has no precise static type here)


class History(Protocol):
    """What a kernel may read of the data at a candidate (all strictly causal).

    ``ts_recv`` is the receive time the candles carry (0.0 for stored data: a backtest has
    no receive clock), passed on to the signals as ``on_market`` would.
    """

    ts_recv: float

    def closes(self, symbol: str, lo: int, hi: int) -> Sequence[Decimal]:
        """The closes of ``symbol``'s rows ``lo..hi-1`` (Decimals as written)."""
        ...

    def latest_closes(self) -> Sequence[tuple[str, Decimal]]:
        """The latest close at or before the current candle of every symbol that has one, in
        order of each symbol's first candle (what a strategy observing every candle knows)."""
        ...

    def latest_closes_at(self, position: int) -> Sequence[tuple[str, Decimal]]:
        """:meth:`latest_closes` at the candle of merged position ``position``."""
        ...

    def closes_at(self, positions: Sequence[int]) -> Sequence[Decimal]:
        """The closes of the candles at merged positions ``positions``."""
        ...


class CandleKernel(Protocol):
    """A strategy's candle-skipping view (see the module docstring for the contract)."""

    def candidates(self, symbol: str, ticks: TickColumn, scale: int
                   ) -> tuple[TickColumn, TickColumn]:
        """``(entries, exits)``: rows (sorted int64 arrays) of ``symbol`` where a signal is
        possible while the strategy does not hold the symbol, and while it does."""
        ...

    def holds(self, symbol: str) -> bool:
        """Whether the strategy holds ``symbol`` now (which of the two row sets applies); it
        may change only with the strategy's fills."""
        ...

    def act(self, symbol: str, row: int, close: Decimal, history: History) -> Sequence[Signal]:
        """The strategy's decision on candidate ``row`` of ``symbol``, whose close is ``close``
        (the candle itself is not built: the loop visits thousands of candidates)."""
        ...


class BookTimeline(Protocol):
    """The synthetic books of a backtest over its merged timeline (positions ``0..n-1``)."""

    n: int

    def has(self, symbol: str) -> bool:
        """Whether ``symbol`` has data (hence books) in this run."""
        ...

    def latest_tops(self, symbol: str) -> tuple[TickColumn, TickColumn]:
        """``(bid, ask)`` float64 arrays over the timeline: the top of ``symbol``'s latest
        synthetic book at each position (NaN before its first candle). Floats, for screens
        with a margin only."""
        ...

    def is_symbol(self, symbols: Collection[str]) -> TickColumn:
        """Boolean array: the candle at each position is one of ``symbols``."""
        ...


class BookKernel(Protocol):
    """A book-driven strategy's skipping view over synthetic books (backtests).

    ``candidates`` returns the timeline positions (sorted) where ``on_market`` of that
    candle's synthetic book could return a signal, whatever the state; ``act`` is called there
    with the latest synthetic book of every symbol that has one (``books[symbol]`` is the
    candle's) and returns what ``on_market`` would have returned, had it seen every book.
    """

    def candidates(self, timeline: BookTimeline) -> TickColumn: ...

    def act(self, symbol: str, books: Mapping[str, BookEvent]) -> Sequence[Signal]: ...


class LongOnlyGate:
    """``CandleKernel.holds`` for a long-only strategy: it holds a symbol while its keeper is
    long there (entries apply otherwise, exits then)."""

    def __init__(self, keeper: PositionKeeper) -> None:
        self._keeper = keeper

    def holds(self, symbol: str) -> bool:
        return self._keeper.is_long(symbol)

    def refusals_commute(self) -> bool:
        """True while every signal will be refused and none is in flight (a backtest whose
        breaker latched): a decision then changes nothing but what later sizing re-observes,
        so the loop may take each symbol's candidates in a run, symbol after symbol."""
        return self._keeper.refuses_silently


class ExactGate(LongOnlyGate):
    """A :class:`LongOnlyGate` whose candidates are exact (the rule holds at every one: momentum,
    mean_reversion), which lets it count a run of refusals at once (``refused_signals``).

    Each exit row emits one exit signal while the keeper is long, each entry row one buy of
    ``notional`` (converted by ``valuer``) unless sizing finds it below the pair's minimums,
    nothing while an intent is in flight.
    """

    def __init__(self, keeper: PositionKeeper, pairs: Mapping[str, PairInfo], valuer: QuoteValuer,
                 notional: Decimal) -> None:
        super().__init__(keeper)
        self._pairs = pairs
        self._valuer = valuer
        self._notional = notional

    def never_sized(self, symbol: str, observed: Collection[str]) -> bool:
        """No entry on ``symbol`` can be sized while the valuer sees only ``observed`` (the
        run's symbols: a kernel's decisions observe their latest closes), e.g. ETH/BTC with
        a USD notional and no BTC/USD or USD/BTC in the run: every entry row decides nothing."""
        return not self._valuer.can_size(self._pairs[symbol].quote, observed)

    def refused_signals(self, symbol: str, positions: Sequence[int], history: History) -> int:
        """The signals ``act`` would return at the candidates of ``symbol`` at the merged
        ``positions``, called only while :meth:`refusals_commute`: no signal then
        changes the keeper (a refused one is recorded and released, or not recorded at all),
        so holding and pending stay what they are over the run, and ``ts_recv`` (one value
        per run) expires nothing after its first use.
        """
        pair, valuer, notional = self._pairs[symbol], self._valuer, self._notional
        keeper = self._keeper
        keeper.expire(history.ts_recv)
        if keeper.has_pending(symbol):
            return 0
        if keeper.is_long(symbol):
            return len(positions)
        closes = history.closes_at(positions)  # (only entries are sized)
        if valuer.converts(pair.quote):
            # each decision observes every latest close before sizing, as act() does
            n = 0
            for close, at in zip(closes, positions, strict=True):
                for sym, c in history.latest_closes_at(at):
                    if c > 0:
                        valuer.observe(sym, c)
                in_quote = valuer.notional_in(pair.quote, notional)
                if in_quote is not None and size_order(pair, in_quote, close) is not None:
                    n += 1
            return n
        in_quote = valuer.notional_in(pair.quote, notional)
        if in_quote is None:
            return 0
        sized: dict[Decimal, bool] = {}  # a minute series repeats its closes a lot
        n = 0
        for close in closes:
            ok = sized.get(close)
            if ok is None:
                ok = sized[close] = size_order(pair, in_quote, close) is not None
            n += ok
        return n


def positive_samples(ticks: TickColumn) -> tuple[TickColumn, TickColumn | None]:
    """The ticks a strategy samples (close > 0: ``on_market`` skips the others) and their rows
    (None: every row)."""
    keep = ticks > 0
    if keep.all():
        return ticks, None
    rows = np.flatnonzero(keep)
    return ticks[rows], rows


def sample_rows(entries: TickColumn, exits: TickColumn, rows: TickColumn | None
                ) -> tuple[TickColumn, TickColumn]:
    """Sample indices as rows (``rows`` from :func:`positive_samples`)."""
    if rows is None:
        return entries, exits
    return rows[entries], rows[exits]
