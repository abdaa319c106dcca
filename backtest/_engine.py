"""The fast backtest path: one synchronous loop over merged candles, calling ``trading/`` directly.

No trio, no channels: the loop calls the same strategy, risk (:class:`~trading.RiskEngine`),
fill model (:class:`~trading.PaperMatcher`) and ledger (:class:`~trading.Portfolio`) code as
paper and live trading, in this order for every candle (candles are merged by (open time,
input order), so the candles of one minute are processed file by file):

1. **Orders waiting for this symbol's next open** execute now: market orders against a
   synthetic one-level book at ``open * (1 + slippage)`` (buys) or ``open * (1 - slippage)``
   (sells), with unlimited depth and the pair's **taker** fee; the fill time is this candle's
   open time. A decision taken on a closed candle therefore fills at the *next* candle's open.
2. **Resting limit orders** fill (whole remainder, at the limit, **maker** fee) when this
   candle's range goes strictly beyond the limit (low < buy limit, high > sell limit):
   ``PaperMatcher.on_candle``.
3. **Stop-loss / take-profit** (risk on): when the symbol has a position and the candle's range
   reaches a level (``avg entry * (1 -/+ stop_loss/take_profit)``), the risk engine is shown
   the candle's *adverse* extreme first (low for a long, high for a short), then the favourable
   one, as trade prints; so when both levels are touched in one candle the **stop-loss wins**
   (the conservative rule). Then the candle close is the mark. The exit is a market order that
   fills at the next open, like any other decision on a closed candle.
4. **Strategies** see the candle; their signals go through ``RiskEngine.evaluate`` (or straight
   to orders with ``--no-risk-limits``) and wait for the symbol's next open.
5. **Book-driven strategies** (arbitrage) see a synthetic ``BookEvent`` built around the close:
   bid/ask at ``close * (1 -/+ spread_bps / 2 / 10_000)``, depth = the candle's volume, marked
   ``synthetic=True``. Their signals execute *immediately* against the latest synthetic books
   of their symbols, leg after leg (as the paper broker walks a book), and a group with a
   failed leg is unwound with :func:`~trading.strategies.plan_unwind`.

Orders still waiting when the data ends never fill (a warning says so). The risk halt check
(daily loss, drawdown) runs at every equity sample; a trip latches the breaker for the rest of
the run (a risk trip needs a person to reset it). Equity is sampled every
``equity_interval_s`` at the marks of the candles before the sample time.

Determinism: no wall clock, no set iteration, ids from counters; the same inputs give the same
fills, so the same trade log bytes.

Speed (issue 8 targets ~1M candles/s for one strategy): the loop runs in segments between
equity samples (found by bisection on the time-sorted input), so no candle pays a timestamp
check or a "last candle" store (the marks of a sample are found by looking back from the
segment's end); the common shape (one candle strategy, no risk, no books) has its own inner
loop; the synthetic books are built through twin classes (``trading.twin_of``) rather than the
frozen dataclass constructors, which cost more than a strategy step. The input may be the lazy
column-store sequence of ``backtest._data`` (a year of minute data stays small in memory).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from itertools import islice
from operator import attrgetter

from protocol.instruments import PairInfo
from protocol.messages import (
    BookEvent,
    CandleEvent,
    Fill,
    OrderCancelled,
    OrderRejected,
    OrderRequest,
    OrderType,
    RiskRejection,
    Side,
    Signal,
    TradeEvent,
    signal_groups,
)
from trading import (
    ClientOrderIds,
    PaperMatcher,
    Portfolio,
    RiskEngine,
    RiskLimits,
    fast_constructor,
)
from trading.risk import RISK_STRATEGY, refused_by_open_breaker
from trading.strategies import (
    Arbitrage,
    BookKernel,
    CandleKernel,
    PositionKeeper,
    Strategy,
    plan_unwind,
    quiet,
)

from ._engine_steps import _DEPTH as _DEPTH
from ._engine_steps import EngineOutput, close_book, open_book, sample_equity, stop_probe_prices
from ._kernel_input import kernel_input
from ._kernel_loop import run_kernels
from ._synthetic import synthetic_book as _synthetic_book

# enum members bound once: ``Side.BUY`` costs ~60 ns a lookup, a global ~8 (the fill path)
_BUY = Side.BUY
_MARKET = OrderType.MARKET
_LIMIT = OrderType.LIMIT

__all__ = ["EngineOutput", "FastEngine", "close_book", "open_book", "sample_equity",
           "stop_probe_prices"]

_NS = 1_000_000_000
_ZERO = Decimal(0)
_ONE = Decimal(1)
_BPS = Decimal(10_000)
_TS = attrgetter("ts_event_ns")
_CLOSED = (OrderRejected, OrderCancelled)
_new_order = fast_constructor(OrderRequest)


class FastEngine:
    """One backtest run over preloaded candles; see the module docstring for the rules.

    Args:
        strategies: the strategies, in call order. Their ``explain``, where they have one, is
            turned off: a backtest reads no signal's reason.
        pairs: pair metadata by symbol.
        portfolio: the ledger, holding the initial balances. Its drawdown tracking is
            stopped when nothing in the run reads it (no risk limits; a latched breaker).
        risk_limits: the limits, or None to bypass the risk engine (``--no-risk-limits``).
        slippage_bps: slippage applied to next-open fills.
        spread_bps: full spread of the synthetic books for book-driven strategies.
        equity_interval_s: equity sampling period.
        benchmark_units: base units per symbol held by the buy-and-hold benchmark.
        benchmark_cash: cash the benchmark keeps (not invested).
        kernels: allow the candle-skipping loop (``backtest._kernel_loop``) when every
            strategy offers a candle kernel; False always runs the per-candle loop (the
            parity tests compare the two).
    """

    def __init__(
        self,
        strategies: Sequence[Strategy],
        pairs: Mapping[str, PairInfo],
        portfolio: Portfolio,
        *,
        risk_limits: RiskLimits | None,
        slippage_bps: Decimal = _ZERO,
        spread_bps: Decimal = Decimal(2),
        equity_interval_s: int = 3600,
        benchmark_units: Mapping[str, Decimal] | None = None,
        benchmark_cash: Decimal = _ZERO,
        kernels: bool = True,
    ) -> None:
        self._pairs = dict(pairs)
        self._use_kernels = kernels
        self._pf = portfolio
        self._ids = ClientOrderIds("bt")
        self._matcher = PaperMatcher(pairs, fill_id_prefix="bt")
        self._risk = (RiskEngine(risk_limits, portfolio, pairs, self._ids)
                      if risk_limits is not None else None)
        if self._risk is None:
            # no drawdown limit reads it, and the reports measure drawdown on the samples
            portfolio.stop_drawdown_tracking()
        self._limits = risk_limits
        self._by_name: dict[str, Strategy] = {s.name: s for s in strategies}
        quiet(strategies)
        self._candle_strats = [s for s in strategies if not isinstance(s, Arbitrage)]
        self._book_strats = [s for s in strategies if isinstance(s, Arbitrage)]
        slip = slippage_bps / _BPS
        self._buy_mult = _ONE + slip
        self._sell_mult = _ONE - slip
        self._slip = bool(slip)
        half = spread_bps / 2 / _BPS
        self._bid_mult = _ONE - half
        self._ask_mult = _ONE + half
        self._interval_ns = equity_interval_s * _NS
        self._bench_units = dict(benchmark_units or {})
        self._bench_cash = benchmark_cash
        self._pending: dict[str, list[OrderRequest]] = {}
        self._books: dict[str, BookEvent] = {}
        self._resting = False
        self._breaker: str | None = None
        self._first_open: dict[str, Decimal] = {}
        self.out = EngineOutput()

    # ------------------------------------------------------------------ the loop

    def run(self, candles: Sequence[CandleEvent],
            progress: Callable[[int], None] | None = None,
            progress_every: int = 32_768) -> EngineOutput:
        """Process time-ordered ``candles`` (ties in input order) and return the output.

        Args:
            candles: the merged candles (a list, or any sequence that iterates them in order).
            progress: called with the number of candles done, at most every
                ``progress_every`` candles and at the end (a progress bar; never trading logic).
            progress_every: candles between two ``progress`` calls.
        """
        out = self.out
        n = len(candles)
        if not n:
            return out
        kernels = self._kernels()
        if kernels is not None:
            inp = kernel_input(candles)
            if inp is not None:
                run_kernels(self, inp, kernels[0],
                            [frozenset(s.symbols) for s in self._candle_strats], kernels[1],
                            progress, progress_every)
                return out
        step = self._interval_ns
        first_ts = candles[0].ts_event_ns
        self._sample(first_ts)
        # The loop runs in segments between equity samples, so no candle pays a timestamp check:
        # a segment ends at the first candle at or after the next sample time (found by
        # bisection on the time-sorted sequence), and the marks of a sample are the last candle
        # of each symbol before it (found by looking back from the segment end).
        ts_of = _TS
        it = iter(candles)
        done = 0
        next_report = progress_every if progress is not None else n + 1
        next_sample = first_ts - first_ts % step + step
        while done < n:
            end = bisect_left(candles, next_sample, lo=done, key=ts_of)
            if progress is not None and end - done > progress_every:
                end = done + progress_every
            if end > done:
                self._segment(islice(it, end - done))
                self._mark_last(candles, done, end)
                done = end
                if done >= next_report:
                    progress(done)  # type: ignore[misc]
                    next_report = done + progress_every
            if done < n:
                ts = candles[done].ts_event_ns
                if ts >= next_sample:
                    self._sample(ts - ts % step)
                    next_sample = ts - ts % step + step
        out.candles = n
        if progress is not None:
            progress(n)
        end_ts = candles[-1].ts_event_ns + candles[-1].interval_s * _NS
        for sym, orders in self._pending.items():
            out.warnings.append(f"{len(orders)} order(s) on {sym} decided on the last candle "
                                "never filled (no next candle)")
        self._sample(end_ts)
        return out

    def _kernels(self) -> tuple[list[CandleKernel], list[BookKernel]] | None:
        """Every strategy's kernel (candle strategies, then book strategies), or None when
        the per-candle loop must run (one strategy has none, or kernels are off)."""
        if not self._use_kernels:
            return None
        candle: list[CandleKernel] = []
        for s in self._candle_strats:
            make = getattr(s, "candle_kernel", None)
            kernel = make() if make is not None else None
            if kernel is None:
                return None
            candle.append(kernel)
        book: list[BookKernel] = []
        for s in self._book_strats:
            make_book = getattr(s, "book_kernel", None)
            bk = make_book() if make_book is not None else None
            if bk is None:
                return None
            book.append(bk)
        return candle, book

    def _mark_last(self, candles: Sequence[CandleEvent], lo: int, hi: int) -> None:
        """Update ``out.last_candles`` to the last candle of each symbol in ``[lo, hi)``."""
        last = self.out.last_candles
        found: dict[str, CandleEvent] = {}
        want = len(self._pairs)  # every symbol with data has pair metadata
        for k in range(hi - 1, lo - 1, -1):
            c = candles[k]
            if c.symbol not in found:
                found[c.symbol] = c
                if len(found) == want:
                    break
        if any(sym not in last for sym in found):
            # New symbols join the dict in order of first appearance (the marking order of
            # every later sample, which the high-water mark could observe).
            for k in range(lo, hi):
                sym = candles[k].symbol
                if sym not in last:
                    last[sym] = found[sym]
        for sym, c in found.items():
            last[sym] = c

    def _segment(self, seg: Iterable[CandleEvent]) -> None:
        """The per-candle steps 1-5 over ``seg`` (no sample falls inside it)."""
        pending = self._pending
        risk = self._risk
        calls = [s.on_market for s in self._candle_strats]
        single = calls[0] if len(calls) == 1 else None
        books = bool(self._book_strats)
        on_signals = self._on_signals
        execute = self._execute_at_open
        if risk is None and not books and single is not None:
            # The common cross-check shape (one candle strategy, no risk, no books).
            for c in seg:
                if pending and c.symbol in pending:
                    execute(c, pending.pop(c.symbol))
                if self._resting:
                    self._on_resting(c)
                sigs = single(c)
                if sigs:
                    on_signals(sigs, c)
            return
        risk_candle = self._risk_candle
        on_book = self._on_book
        for c in seg:
            if pending and c.symbol in pending:
                execute(c, pending.pop(c.symbol))
            if self._resting:
                self._on_resting(c)
            if risk is not None:
                risk_candle(risk, c)
            for call in calls:
                sigs = call(c)
                if sigs:
                    on_signals(sigs, c)
            if books:
                on_book(c)

    # ------------------------------------------------------------------ sampling

    def _sample(self, ts: int, closes: Mapping[str, Decimal] | None = None) -> None:
        out = self.out
        sample_equity(out, self._pf, ts, self._bench_units, self._bench_cash, self._first_open,
                      closes)
        if self._risk is not None and self._breaker is None:
            reason = self._risk.check_halt(utc_day=ts // (86400 * _NS))
            if reason is not None:
                self._breaker = reason
                # latched for the rest of the run: nothing reads the drawdown any more, and
                # every strategy signal will be refused
                self._pf.stop_drawdown_tracking()
                for strat in self._by_name.values():
                    keeper = getattr(strat, "keeper", None)
                    if isinstance(keeper, PositionKeeper):
                        keeper.refuse_everything()
                out.warnings.append(f"circuit breaker tripped ({reason}) at sample {ts}: no new "
                                    "orders for the rest of the run")
                self._apply_events(self._matcher.cancel_all(now=ts / _NS, reason=reason))

    def set_first_opens(self, opens: Mapping[str, Decimal]) -> None:
        """The first open of each symbol (the benchmark's value before the first close)."""
        self._first_open = dict(opens)

    # ------------------------------------------------------------------ risk

    def _risk_candle(self, risk: RiskEngine, c: CandleEvent) -> None:
        probes = stop_probe_prices(self._pf, self._limits, c)
        if probes is not None:
            for price in probes:
                sigs = risk.on_market(TradeEvent(symbol=c.symbol, side=_BUY, price=price,
                                                 qty=_ZERO, ts_event_ns=c.ts_event_ns))
                if sigs:
                    self._on_signals(sigs, c)
        sigs = risk.on_market(c)
        if sigs:
            self._on_signals(sigs, c)

    def _approve(self, group: Sequence[Signal], now: float) -> list[OrderRequest] | None:
        risk = self._risk
        if risk is None:
            if self._breaker is not None:
                return None
            return [_new_order(
                client_order_id=self._ids.next(), strategy=s.strategy, symbol=s.symbol,
                side=s.side, qty=s.qty, order_type=s.order_type, limit_price=s.limit_price,
                ts_recv=s.ts_recv, group_id=s.group_id, group_size=s.group_size,
                reduce_only=s.reduce_only) for s in group]
        if self._breaker is not None and refused_by_open_breaker(group):
            # evaluate()'s answer, without its exception and rejection record: after a trip
            # this is most of what a backtest's strategies hear for the rest of the run
            self._refused(group, "breaker_open")
            return None
        res = risk.evaluate(group, now=now, breaker_open=self._breaker is not None)
        if isinstance(res, RiskRejection):
            self._refused(group, res.reason)
            return None
        return res

    def _refused(self, group: Sequence[Signal], reason: str) -> None:
        rej = self.out.risk_rejections
        rej[reason] = rej.get(reason, 0) + 1
        closed = f"risk-rejected:{reason}"
        for s in group:
            strat = self._by_name.get(s.strategy)
            if strat is not None:
                strat.on_order_closed(closed, _ZERO)

    _groups = staticmethod(signal_groups)

    # ------------------------------------------------------------------ candle-driven orders

    def _on_signals(self, sigs: Sequence[Signal], c: CandleEvent) -> None:
        self._queue(sigs, c.ts_event_ns / _NS)

    def _queue(self, sigs: Sequence[Signal], now: float) -> None:
        """Approve ``sigs`` (decided at ``now``) and queue them for their symbol's next open."""
        for group in self._groups(sigs):
            orders = self._approve(group, now)
            if orders:
                for o in orders:
                    self._pending.setdefault(o.symbol, []).append(o)

    def _execute_at_open(self, c: CandleEvent, orders: list[OrderRequest]) -> None:
        self._execute_open(c.open, c.ts_event_ns, orders, lambda: c)

    def _execute_open(self, o: Decimal, ts_ns: int, orders: list[OrderRequest],
                      candle: Callable[[], CandleEvent]) -> None:
        """Fill ``orders`` (one symbol's) at the open ``o`` of its candle opening at ``ts_ns``.

        That is open_book(candle, buy_mult, sell_mult, slip); market orders fill through
        PaperMatcher.fill_at (the same result as submit() on that book, without building it,
        nor the candle: ``candle()`` is called only for a limit order).
        """
        if self._slip:
            ask_p, bid_p = o * self._buy_mult, o * self._sell_mult
        else:
            ask_p = bid_p = o
        now = ts_ns / _NS
        book: BookEvent | None = None
        for order in orders:
            if order.order_type is _MARKET and (self._breaker is None or order.reduce_only):
                self._apply_events(self._matcher.fill_at(
                    order, ask_p if order.side is _BUY else bid_p,
                    available=self._pf.balance, now=now, ts_event_ns=ts_ns))
                continue
            if book is None:
                book = _synthetic_book(candle(), bid_p, ask_p, _DEPTH)
            self._submit(order, book, now)

    def _submit(self, order: OrderRequest, book: BookEvent | None, now: float) -> list[Fill]:
        if self._breaker is not None and not order.reduce_only:
            self._apply_events([OrderRejected(client_order_id=order.client_order_id,
                                              strategy=order.strategy, symbol=order.symbol,
                                              reason="breaker_open", ts=now)])
            return []
        events = self._matcher.submit(order, book, available=self._pf.balance, now=now)
        fills = self._apply_events(events)
        if order.order_type is _LIMIT:
            self._resting = bool(self._matcher.open_orders())
        return fills

    def _apply_events(self, events: Sequence[object]) -> list[Fill]:
        fills: list[Fill] = []
        risk = self._risk
        for ev in events:
            if type(ev) is Fill:
                fills.append(ev)
                self.out.fills.append(ev)
                if risk is not None:
                    risk.on_fill(ev)
                else:
                    self._pf.apply_fill(ev, self._pairs[ev.symbol])
                if ev.strategy == RISK_STRATEGY:  # risk's exits concern every strategy
                    for each in self._by_name.values():
                        each.on_fill(ev)
                else:
                    owner = self._by_name.get(ev.strategy)
                    if owner is not None:
                        owner.on_fill(ev)
            elif isinstance(ev, _CLOSED):
                if isinstance(ev, OrderRejected):
                    rej = self.out.order_rejections
                    rej[ev.reason] = rej.get(ev.reason, 0) + 1
                if risk is not None:
                    risk.on_order_event(ev)
                name = ev.strategy if isinstance(ev, OrderRejected) else self._owner(ev)
                strat = self._by_name.get(name)
                if strat is not None:
                    # what this batch filled of the order before it closed
                    done = sum((f.qty for f in fills if f.client_order_id == ev.client_order_id),
                               _ZERO)
                    strat.on_order_closed(ev.client_order_id, done)
        return fills

    def _owner(self, ev: OrderCancelled) -> str:
        for f in reversed(self.out.fills):
            if f.client_order_id == ev.client_order_id:
                return f.strategy
        for oo in self._matcher.open_orders():
            if oo.order.client_order_id == ev.client_order_id:
                return oo.order.strategy
        return ""

    def _on_resting(self, c: CandleEvent) -> None:
        fills = self._matcher.on_candle(c, now=c.ts_event_ns / _NS)
        if fills:
            self._apply_events(fills)
            self._resting = bool(self._matcher.open_orders())

    # ------------------------------------------------------------------ book-driven orders

    def _on_book(self, c: CandleEvent) -> None:
        # close_book(c, bid_mult, ask_mult): one book per candle, so the frozen-dataclass
        # constructors were a third of this step (see _synthetic_book).
        close = c.close
        book = _synthetic_book(c, close * self._bid_mult, close * self._ask_mult, c.volume)
        self._books[c.symbol] = book
        now = c.ts_event_ns / _NS
        for strat in self._book_strats:
            sigs = strat.on_market(book)
            if sigs:
                self._book_signals(sigs, now)

    def _book_signals(self, sigs: Sequence[Signal], now: float) -> None:
        """Approve a book strategy's signals and execute them at once, group by group."""
        for group in self._groups(sigs):
            orders = self._approve(group, now)
            if orders:
                self._execute_group(orders, now)

    def _execute_group(self, orders: list[OrderRequest], now: float) -> None:
        got: list[Fill] = []
        broken = False
        for order in orders:
            fills = self._submit(order, self._books.get(order.symbol), now)
            got.extend(fills)
            if sum((f.qty for f in fills), _ZERO) < order.qty:
                broken = True
        if not broken or not got or len(orders) < 2:
            return
        prices = {s: b.mid for s, b in self._books.items() if b.mid is not None}
        unwind = plan_unwind(orders, got, pairs=self._pairs, prices=prices)
        for sig in unwind:
            approved = self._approve([sig], now)
            if not approved:
                self.out.warnings.append(f"unwind of {orders[0].group_id} refused: "
                                         f"{sig.reason}")
                continue
            for order in approved:
                self._submit(order, self._books.get(order.symbol), now)

